import type { RetainedIndex } from '../routing/retained-index.js';
import type { TopicTree } from '../routing/topic-tree.js';
import type { Delivery, Message, PublishTransition, QoS, RetainedMessage, SessionRepository } from '../store/repository.js';
import type { Session } from './session.js';

export interface PublishOptions {
  /** RETAIN=1 on the incoming PUBLISH (or will). */
  retain: boolean;
  /** An inbound QoS2 PUBLISH: its packet id is stored as received in the same atomic batch. */
  inbound?: { session: Session; packetId: number };
}

export interface DistributorOptions {
  /** The session of a client id, as the session manager holds it. */
  lookup(clientId: string): Session | undefined;
  /** The routing table (written by the session manager). */
  subscriptions: TopicTree;
  /** Retained messages in memory; the distributor is their one writer, after the store. */
  retained: RetainedIndex;
  /** Persistent sessions' queues and the retained messages. */
  durable: SessionRepository;
  /** CleanSession=1 sessions' queues. */
  volatile: SessionRepository;
  /**
   * Only when an ACL is in force: whether a session (by its owner) may receive a message on a
   * topic, checked per delivery. Without an ACL routing pays nothing for it.
   */
  canRead?: (session: Session, topic: string) => boolean;
}

interface Target {
  session: Session;
  delivery: Delivery;
}

/**
 * A message on its way out, in two phases. `stored` resolves once the message sits in the queue
 * of every matching persistent session (and in the retained store for RETAIN=1), all in one
 * atomic batch: only then may the publisher be acknowledged. `deliver` then hands it to clean and
 * QoS 0 subscribers; the publishing connection calls it in the order its PUBLISHes arrived, so a
 * message that needed no disk write cannot overtake an earlier one that did [MQTT-4.6.0-6].
 */
export interface Publication {
  stored: Promise<void>;
  deliver(): Promise<void>;
}

/** Fans published messages out to the sessions whose subscriptions match them (write-ahead). */
export class Distributor {
  readonly #lookup: (clientId: string) => Session | undefined;
  readonly #subscriptions: TopicTree;
  readonly #retained: RetainedIndex;
  readonly #durable: SessionRepository;
  readonly #volatile: SessionRepository;
  readonly #canRead: ((session: Session, topic: string) => boolean) | undefined;

  constructor(options: DistributorOptions) {
    this.#lookup = options.lookup;
    this.#subscriptions = options.subscriptions;
    this.#retained = options.retained;
    this.#durable = options.durable;
    this.#volatile = options.volatile;
    this.#canRead = options.canRead;
  }

  /** The retained messages read from the store at start. */
  restoreRetained(messages: RetainedMessage[]): void {
    for (const message of messages) this.#retained.set(message);
  }

  /** Removes a retained message: from the store first, then from memory (broker-admin). */
  async clearRetained(topic: string): Promise<void> {
    await this.#durable.clearRetained(topic);
    this.#retained.delete(topic);
  }

  /** Both phases at once, for messages with no ordering to keep (wills). */
  async publish(message: Message, options: PublishOptions): Promise<void> {
    const publication = this.route(message, options);
    await publication.stored;
    await publication.deliver();
  }

  /**
   * Matches subscriptions and submits the durable write, synchronously: routing follows arrival
   * order, and a session discarded after this call has its state deleted by a transition ordered
   * after this one.
   */
  route(message: Message, options: PublishOptions): Publication {
    const durableTargets: Target[] = [];
    const volatileTargets: Target[] = [];
    const direct: Session[] = [];
    const canRead = this.#canRead;
    for (const [clientId, granted] of this.#subscriptions.match(message.topic)) {
      const session = this.#lookup(clientId);
      if (!session) continue;
      if (canRead !== undefined && !canRead(session, message.topic)) continue;
      // Delivered at the lower of the published QoS and the granted QoS [MQTT-3.8.4-6].
      const qos = Math.min(message.qos, granted) as QoS;
      if (qos === 0) {
        // QoS 0 is not queued for a disconnected session: the spec makes it optional.
        direct.push(session);
      } else if (session.clean) {
        // In memory: no write to spare by raising the DUP mark with it (see Session.delivery).
        volatileTargets.push({ session, delivery: { clientId, qos, retain: false } });
      } else {
        durableTargets.push({ session, delivery: session.delivery(qos, false) });
      }
    }

    const inbound = options.inbound;
    const durable: PublishTransition = { message, deliveries: durableTargets.map(({ delivery }) => delivery) };
    if (options.retain) {
      // A zero-length retained payload clears the topic's retained message and is not itself
      // retained [MQTT-3.3.1-10] [MQTT-3.3.1-11]; it is still delivered as usual.
      durable.retained = message.payload.length === 0 ? 'clear' : 'set';
    }
    if (inbound && !inbound.session.clean) durable.inbound = { clientId: inbound.session.clientId, packetId: inbound.packetId };

    const needsDurableWrite = durable.deliveries.length > 0 || durable.retained !== undefined || durable.inbound;
    const stored = needsDurableWrite ? this.#store(durable, durableTargets) : Promise.resolve();

    const deliver = async () => {
      const stillVolatile = volatileTargets.filter(({ session }) => this.#isCurrent(session));
      const volatileInbound = inbound?.session.clean && this.#isCurrent(inbound.session);
      if (stillVolatile.length > 0 || volatileInbound) {
        const seqs = await this.#volatile.publish({
          message,
          deliveries: stillVolatile.map(({ delivery }) => delivery),
          ...(volatileInbound ? { inbound: { clientId: inbound.session.clientId, packetId: inbound.packetId } } : {}),
        });
        notify(stillVolatile, seqs, message);
      }
      for (const session of direct) session.sendDirect(message, false);
    };
    return { stored, deliver };
  }

  /**
   * Queues retained messages for a new subscription, with RETAIN=1 [MQTT-3.3.1-8]. Called after
   * the subscription is stored.
   */
  async sendRetained(session: Session, filter: string, granted: QoS): Promise<void> {
    for (const retained of this.#retained.match(filter)) {
      // A clean session discarded (its connection taken over) while this ran has no queue left.
      if (!this.#isCurrent(session)) return;
      if (this.#canRead !== undefined && !this.#canRead(session, retained.topic)) continue;
      const message: Message = { topic: retained.topic, payload: retained.payload, qos: retained.qos };
      const qos = Math.min(retained.qos, granted) as QoS;
      if (qos === 0) session.sendDirect(message, true);
      else await session.enqueue(message, qos, true);
    }
  }

  async #store(durable: PublishTransition, targets: Target[]): Promise<void> {
    const seqs = await this.#durable.publish(durable);
    // Notified before anything else is awaited: batches resolve in seq order, and a session must
    // learn of its entries in that order to keep them in order.
    notify(targets, seqs, durable.message);
    const { retained, message } = durable;
    if (retained === 'clear') this.#retained.delete(message.topic);
    else if (retained === 'set') this.#retained.set({ topic: message.topic, payload: message.payload, qos: message.qos });
  }

  /** Clean sessions may have ended while the durable batch was written. */
  #isCurrent(session: Session): boolean {
    return this.#lookup(session.clientId) === session;
  }
}

function notify(targets: Target[], seqs: Map<string, number>, message: Message): void {
  for (const { session, delivery } of targets) {
    const seq = seqs.get(session.clientId);
    if (seq === undefined) session.dropped();
    else session.enqueued(seq, message, delivery);
  }
}
