import type { Delivery, Message, PublishTransition, QoS, SessionRepository } from '../store/repository.js';
import type { Session } from './session.js';
import type { SessionManager } from './session-manager.js';

export interface PublishOptions {
  /** RETAIN=1 on the incoming PUBLISH (or will). */
  retain: boolean;
  /** An inbound QoS2 PUBLISH: its packet id is stored as received in the same atomic batch. */
  inbound?: { session: Session; packetId: number };
}

interface Target {
  session: Session;
  qos: QoS;
}

/**
 * Fans a published message out to the sessions whose subscriptions match it. Write-ahead: the
 * returned promise resolves only once the message sits in the queue of every matching persistent
 * session and, for RETAIN=1, in the retained store, all in one atomic batch; only then may the
 * publisher be acknowledged and are connected subscribers sent anything.
 */
export class Distributor {
  readonly #sessions: SessionManager;

  constructor(sessions: SessionManager) {
    this.#sessions = sessions;
  }

  async publish(message: Message, options: PublishOptions): Promise<void> {
    const durableTargets: Target[] = [];
    const volatileTargets: Target[] = [];
    const direct: Session[] = [];
    for (const [clientId, granted] of this.#sessions.topics.match(message.topic)) {
      const session = this.#sessions.lookup(clientId);
      if (!session) continue;
      // Delivered at the lower of the published QoS and the granted QoS [MQTT-3.8.4-6].
      const qos = Math.min(message.qos, granted) as QoS;
      if (qos === 0) {
        // QoS 0 is not queued for a disconnected session: the spec makes it optional.
        if (session.connected) direct.push(session);
      } else {
        (session.clean ? volatileTargets : durableTargets).push({ session, qos });
      }
    }

    const inbound = options.inbound;
    const durable: PublishTransition = { message, deliveries: durableTargets.map(deliveryOf) };
    if (options.retain) {
      // A zero-length retained payload clears the topic's retained message and is not itself
      // retained [MQTT-3.3.1-10] [MQTT-3.3.1-11]; it is still delivered as usual.
      durable.retained = message.payload.length === 0 ? 'clear' : 'set';
    }
    if (inbound && !inbound.session.clean) durable.inbound = { clientId: inbound.session.clientId, packetId: inbound.packetId };

    // Submitted in the same tick as the match above: a session discarded after this point has
    // its state deleted by a transition ordered after this one.
    const needsDurableWrite = durable.deliveries.length > 0 || durable.retained !== undefined || durable.inbound;
    if (needsDurableWrite) {
      const durableSeqs = await this.#sessions.durable.publish(durable);
      // Notified before anything else is awaited: batches resolve in seq order, and a session
      // must learn of its entries in that order to keep them in order.
      notify(durableTargets, durableSeqs, message);
    }

    if (options.retain) {
      if (durable.retained === 'clear') this.#sessions.retained.delete(message.topic);
      else this.#sessions.retained.set({ topic: message.topic, payload: message.payload, qos: message.qos });
    }

    // Clean sessions may have ended while the durable batch was written; skip those.
    const stillVolatile = volatileTargets.filter(({ session }) => this.#sessions.lookup(session.clientId) === session);
    const volatileInbound = inbound?.session.clean && this.#sessions.lookup(inbound.session.clientId) === inbound.session;
    let volatileSeqs = new Map<string, number>();
    if (stillVolatile.length > 0 || volatileInbound) {
      volatileSeqs = await this.#sessions.volatile.publish({
        message,
        deliveries: stillVolatile.map(deliveryOf),
        ...(volatileInbound ? { inbound: { clientId: inbound.session.clientId, packetId: inbound.packetId } } : {}),
      });
    }

    notify(stillVolatile, volatileSeqs, message);
    for (const session of direct) session.sendDirect(message, false);
  }

  /**
   * Queues retained messages for a new subscription, with RETAIN=1 [MQTT-3.3.1-8]. Called after
   * the subscription is stored and before SUBACK.
   */
  async sendRetained(session: Session, filter: string, granted: QoS): Promise<void> {
    for (const retained of this.#sessions.retained.match(filter)) {
      const message: Message = { topic: retained.topic, payload: retained.payload, qos: retained.qos };
      const qos = Math.min(retained.qos, granted) as QoS;
      if (qos === 0) {
        session.sendDirect(message, true);
        continue;
      }
      const repository: SessionRepository = session.repository;
      const seqs = await repository.publish({
        message,
        deliveries: [{ clientId: session.clientId, qos, retain: true }],
      });
      notify([{ session, qos }], seqs, message, true);
    }
  }
}

function deliveryOf({ session, qos }: Target): Delivery {
  return { clientId: session.clientId, qos, retain: false };
}

function notify(targets: Target[], seqs: Map<string, number>, message: Message, retain = false): void {
  for (const { session, qos } of targets) {
    const seq = seqs.get(session.clientId);
    if (seq !== undefined) session.enqueued(seq, message, qos, retain);
  }
}
