import { setImmediate as nextTurn } from 'node:timers/promises';
import { BrokerError } from '../errors.js';
import { silentLogger, type Logger } from '../logger.js';
import { PAUSE, type RetainedIndex, type RetainedMatch } from '../routing/retained-index.js';
import { type Matched, mergeShared, qosOf, type SharedGroup, type TopicTree } from '../routing/topic-tree.js';
import type { Delivery, Message, OutboundEntry, PublishResult, PublishTransition, QoS, QueueLimits, RetainedEntry, SessionRepository } from '../store/repository.js';
import { isExpired } from './outbound-flow.js';
import type { Session } from './session.js';

/**
 * Retained messages for a new subscription are read from the store this many at a time, or this
 * many payload bytes (at least one message): what sending them holds in memory at once.
 */
const RETAINED_READ_MESSAGES = 100;
const RETAINED_READ_BYTES = 1024 * 1024;

export interface PublishOptions {
  /** RETAIN=1 on the incoming PUBLISH (or will). */
  retain: boolean;
  /** An inbound QoS2 PUBLISH: its packet id is stored as received in the same atomic batch. */
  inbound?: { session: Session; packetId: number };
  /**
   * The client id of the session the message came from (a client's, or a bridge's for what came
   * in over it): a subscription of that session with No Local does not match it [MQTT-3.8.3-3].
   */
  origin?: string;
}

/**
 * How one subscriber's messages are queued, when it is not as for every session. Today only a
 * bridge's session has any (see DistributorOptions.subscriberOptions). No Local and Retain As
 * Published are options of each subscription (MQTT 5's, and a bridge's out subscriptions carry them).
 */
export interface SubscriberOptions {
  /** Queue limits of its own in place of the broker's (Delivery.limits). */
  queueLimits?: QueueLimits;
}

/**
 * What a publication came to, for MQTT 5's PUBACK and PUBREC reason codes: 'no-subscribers'
 * (0x10), 'quota-exceeded' when a queue limit refused it for every subscriber (0x97).
 */
export type PublicationOutcome = 'delivered' | 'no-subscribers' | 'quota-exceeded';

export interface DistributorOptions {
  /** The session of a client id, as the session manager holds it. */
  lookup(clientId: string): Session | undefined;
  /** The routing table (written by the session manager). */
  subscriptions: TopicTree;
  /** The index of retained messages (payloads in the store); the distributor is its one writer, after the store. */
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
  /** Hears of retained messages refused at the retained limits, and of damaged ones not sent. */
  log?: Logger;
  /**
   * Only when some subscriber has options of its own (a bridge is configured): its options, or
   * undefined. Without it routing pays nothing for them.
   */
  subscriberOptions?: (clientId: string) => SubscriberOptions | undefined;
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
  /** An outcome at once when nothing had to be written for clean subscribers (the usual case), else a promise of it. */
  deliver(): PublicationOutcome | Promise<PublicationOutcome>;
}

/** Fans published messages out to the sessions whose subscriptions match them (write-ahead). */
export class Distributor {
  readonly #lookup: (clientId: string) => Session | undefined;
  readonly #subscriptions: TopicTree;
  readonly #retained: RetainedIndex;
  readonly #durable: SessionRepository;
  readonly #volatile: SessionRepository;
  readonly #canRead: ((session: Session, topic: string) => boolean) | undefined;
  readonly #log: Logger;
  /** Retained messages refused at the limits since the last one that was kept (logged once per episode). */
  #retainedRefused = 0;
  /**
   * Store writes under way that set or clear a retained message. Until one lands, the index does
   * not show it: a subscription routed meanwhile would miss a message routed before it (not live,
   * and not retained yet), so a new subscription's retained messages wait for them (sendRetained).
   */
  readonly #retainedWrites = new Set<Promise<unknown>>();
  /** Topics whose damaged retained record was reported already: once each is enough. */
  readonly #damageReported = new Set<string>();
  readonly #subscriberOptions: ((clientId: string) => SubscriberOptions | undefined) | undefined;

  constructor(options: DistributorOptions) {
    this.#lookup = options.lookup;
    this.#subscriptions = options.subscriptions;
    this.#retained = options.retained;
    this.#durable = options.durable;
    this.#volatile = options.volatile;
    this.#canRead = options.canRead;
    this.#log = options.log ?? silentLogger;
    this.#subscriberOptions = options.subscriberOptions;
  }

  /** The index of the retained messages, read from the store at start (their payloads stay there). */
  restoreRetained(entries: RetainedEntry[]): void {
    for (const { topic, qos, size } of entries) this.#retained.setStored(topic, qos, size);
  }

  /** Removes a retained message: from the store first, then from memory (broker-admin). */
  async clearRetained(topic: string): Promise<void> {
    await this.#durable.clearRetained(topic);
    this.#retained.deleteStored(topic);
  }

  /**
   * A message of the broker's own (its $SYS topics, a bridge's state): handed to the connected
   * subscribers at QoS 0 and, with `retain`, kept in memory as the topic's retained message for
   * new subscriptions (an empty payload clears it), where it shadows one a client may have stored
   * on that topic. Never written to the store, never counted against the retained limits, gone at
   * a restart, so its payloads must stay few and small.
   */
  publishEphemeral(topic: string, payload: Buffer, retain: boolean): void {
    if (retain) {
      if (payload.length === 0) this.#retained.deleteEphemeral(topic);
      else this.#retained.setEphemeral(topic, payload);
    }
    const message: Message = { topic, payload, qos: 0 };
    // A shared group's member is chosen as for any message: QoS 0, so a connected one.
    for (const [clientId] of this.#match(message)) {
      const session = this.#lookup(clientId);
      if (!session) continue;
      if (this.#canRead !== undefined && !this.#canRead(session, topic)) continue;
      session.sendDirect(message, false);
    }
  }

  /** Both phases at once, for messages with no ordering to keep (wills). */
  async publish(message: Message, options: PublishOptions): Promise<PublicationOutcome> {
    const publication = this.route(message, options);
    await publication.stored;
    return publication.deliver();
  }

  /**
   * Matches subscriptions and submits the durable write, synchronously: routing follows arrival
   * order, and a session discarded after this call has its state deleted by a transition ordered
   * after this one.
   */
  route(message: Message, options: PublishOptions): Publication {
    const durableTargets: Target[] = [];
    const volatileTargets: Target[] = [];
    const direct: { session: Session; retain: boolean; subscriptionIds: number[] | undefined }[] = [];
    const canRead = this.#canRead;
    const subscriberOptions = this.#subscriberOptions;
    for (const [clientId, matched] of this.#match(message, options.origin)) {
      const session = this.#lookup(clientId);
      if (!session) continue;
      if (canRead !== undefined && !canRead(session, message.topic)) continue;
      let granted: QoS;
      let retain = false;
      let subscriptionIds: number[] | undefined;
      let shared: string[] | undefined;
      if (typeof matched === 'number') {
        granted = matched;
      } else {
        granted = matched.qos;
        // RETAIN is 0 towards subscriptions that existed when it was published [MQTT-3.3.1-9],
        // unless one of them asked for it as published (MQTT 5 Retain As Published) [MQTT-3.3.1-12] [MQTT-3.3.1-13].
        retain = matched.retainAsPublished && options.retain;
        subscriptionIds = matched.identifiers;
        shared = matched.shared;
      }
      // Delivered at the lower of the published QoS and the granted QoS [MQTT-3.8.4-6].
      const qos = Math.min(message.qos, granted) as QoS;
      if (qos === 0) {
        // QoS 0 is not queued for a disconnected session: the spec makes it optional.
        direct.push({ session, retain, subscriptionIds });
      } else if (session.clean) {
        // In memory: no write to spare by raising the DUP mark with it (see Session.delivery).
        const delivery: Delivery = { clientId, qos, retain };
        if (subscriptionIds) delivery.subscriptionIds = subscriptionIds;
        if (shared) delivery.shared = shared;
        volatileTargets.push({ session, delivery });
      } else {
        const delivery = session.delivery(qos, retain);
        if (subscriptionIds) delivery.subscriptionIds = subscriptionIds;
        if (shared) delivery.shared = shared;
        const own = subscriberOptions?.(clientId);
        if (own?.queueLimits) delivery.limits = own.queueLimits;
        durableTargets.push({ session, delivery });
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
    let queued = 0;
    const stored = needsDurableWrite
      ? this.#durable.publish(durable).then((result) => {
          queued += this.#stored(durable, durableTargets, result);
        })
      : Promise.resolve();
    if (durable.retained !== undefined) {
      this.#retainedWrites.add(stored);
      const settled = () => this.#retainedWrites.delete(stored);
      stored.then(settled, settled);
    }

    /** Last: QoS 0 to the subscribers still connected, and what became of the message. */
    const finish = (volatileSubscribers: number, handedOn: number): PublicationOutcome => {
      let connected = 0;
      for (const { session, retain, subscriptionIds } of direct) {
        if (!this.#isCurrent(session)) continue;
        session.sendDirect(message, retain, subscriptionIds);
        connected++;
      }
      // A discarded session is no subscriber any more: a message that only it matched had none (not a full queue).
      const subscribers = durableTargets.length + volatileSubscribers + handedOn + connected;
      if (subscribers === 0) return 'no-subscribers';
      return connected === 0 && queued === 0 ? 'quota-exceeded' : 'delivered';
    };
    const deliver = (): PublicationOutcome | Promise<PublicationOutcome> => {
      // Without clean targets, nothing is written here: the outcome comes at once, with no promise.
      if (volatileTargets.length === 0 && !inbound?.session.clean) return finish(0, 0);
      return this.#deliverClean(message, volatileTargets, inbound, (count) => (queued += count), finish);
    };
    return { stored, deliver };
  }

  /**
   * The subscribers of a message, and for each shared subscription whose filter matches it the one
   * member chosen to get it (MQTT 5.0 4.8.2), merged with what that session matched otherwise.
   */
  #match(message: Message, origin?: string): ReadonlyMap<string, Matched> {
    if (this.#subscriptions.groups === 0) return this.#subscriptions.subscribers(message.topic, origin);
    const groups: SharedGroup[] = [];
    const matched = this.#subscriptions.match(message.topic, origin, groups);
    for (const group of groups) {
      const chosen = this.#choose(group, message);
      if (chosen) mergeShared(matched, chosen.clientId, group.route(chosen.clientId)!, group.key);
    }
    return matched;
  }

  /**
   * The member of a shared group that gets a message: the next connected member in round robin
   * that may read it; with none connected, the next persistent one, whose queue keeps it until
   * its client returns (not for QoS 0, which is never queued for a disconnected session).
   */
  #choose(group: SharedGroup, message: Message): Session | undefined {
    let waiting: Session | undefined;
    for (const clientId of group.candidates()) {
      const session = this.#lookup(clientId);
      if (!session) continue;
      if (this.#canRead !== undefined && !this.#canRead(session, message.topic)) continue;
      if (session.connected) {
        group.chose(clientId);
        return session;
      }
      if (waiting === undefined && !session.clean && message.qos > 0) waiting = session;
    }
    if (waiting) group.chose(waiting.clientId);
    return waiting;
  }

  /**
   * A session whose shared subscriptions were `filters` has ended (destroyed, expired, or a clean
   * session whose connection closed) and is unrouted: every message queued for it through one of
   * its shared subscriptions and not yet delivered is handed to another member of that group, by
   * transitions that remove it from this session's queue and queue it for the new member in one
   * batch, so it is in one queue or the other whatever happens (MQTT 5.0 4.8.2). Not yet delivered:
   * QoS 1 whether sent or not (it may have arrived; QoS 1 allows the duplicate); QoS 2 only if never
   * sent, since a QoS 2 message whose delivery began must not go to another client [MQTT-4.8.2-5].
   * Called before the session's state is deleted, which deletes whatever was not handed over.
   */
  async handOver(session: Session, filters: readonly string[]): Promise<void> {
    const groups = new Set(filters);
    // Messages routed to it before it was unrouted and still on their way to its queue.
    await session.settled();
    const moves: Promise<number>[] = [];
    for (let after = 0; ; ) {
      const entries = await session.readQueue(after, HAND_OVER_READ);
      if (entries.length === 0) break;
      after = entries[entries.length - 1]!.seq;
      for (const entry of entries) {
        const tags = entry.shared?.filter((filter) => groups.has(filter));
        if (!tags || tags.length === 0 || !mayHandOver(entry)) continue;
        moves.push(this.#handTo(entry.message, entry.retain, tags, { session, seq: entry.seq }));
      }
    }
    const handed = (await Promise.all(moves)).reduce((sum, count) => sum + count, 0);
    if (handed > 0) this.#log.info(`session ${JSON.stringify(session.clientId)} ended: ${handed} messages of its shared subscriptions handed to other members`);
  }

  /**
   * Queues `message` for one member of each of the shared groups `filters` (any QoS 0 delivery
   * sent at once), taking it from `from`'s queue entry in the same transition when given. That
   * transition goes last, in the store that holds `from`'s entry (without `from`, the durable one);
   * the other store's part goes first: its targets are clean sessions (or the source is), which a
   * crash ends anyway. Resolves to how many sessions got it.
   *
   * A member chosen for the last transition may be discarded while the first part is written: it
   * gets nothing, and its groups choose again, so the last transition names only sessions that
   * exist as it is submitted, and the entry still leaves `from` in one transition with its new
   * places (MQTT 5.0 4.8.2: another member SHOULD get it).
   */
  async #handTo(message: Message, retain: boolean, filters: readonly string[], from?: { session: Session; seq: number }): Promise<number> {
    const sourceIsClean = from?.session.clean ?? false;
    const [firstStore, lastStore] = sourceIsClean ? [this.#durable, this.#volatile] : [this.#volatile, this.#durable];
    const last = new Map<string, Choice>();
    const direct: Session[] = [];
    let chosen = false;
    let queued = 0;
    for (let groups = filters; groups.length > 0; ) {
      const first: Target[] = [];
      for (const choice of this.#chooseMembers(message, groups)) {
        chosen = true;
        if (choice.qos === 0) direct.push(choice.session);
        else if (choice.session.clean === sourceIsClean) mergeChoice(last, choice);
        else first.push(this.#target(choice, retain));
      }
      if (first.length === 0) break;
      queued += notify(first, await firstStore.publish({ message, deliveries: first.map(({ delivery }) => delivery) }), message);
      // While that part was written, a member chosen for the last one may have been discarded.
      groups = [];
      for (const [clientId, choice] of last) {
        if (this.#isCurrent(choice.session)) continue;
        last.delete(clientId);
        groups = [...groups, ...choice.shared];
      }
    }
    // No other member (or none that may read it): it ends with the session, as any other entry.
    if (!chosen) return 0;
    if (last.size > 0 || from) {
      const targets = [...last.values()].map((choice) => this.#target(choice, retain));
      const transition: PublishTransition = { message, deliveries: targets.map(({ delivery }) => delivery) };
      if (from) transition.handOver = { clientId: from.session.clientId, seq: from.seq };
      queued += notify(targets, await lastStore.publish(transition), message);
    }
    for (const session of direct) session.sendDirect(message, false);
    return queued + direct.length;
  }

  /**
   * One member of each of the shared groups `filters` that has one (see #choose), each session
   * once, with what its subscriptions in those groups make of the message.
   */
  #chooseMembers(message: Message, filters: readonly string[]): IterableIterator<Choice> {
    const chosen = new Map<string, Choice>();
    for (const filter of filters) {
      const group = this.#subscriptions.group(filter);
      const session = group && this.#choose(group, message);
      if (!session) continue;
      const route = group.route(session.clientId)!;
      const identifier = typeof route === 'number' ? undefined : route.identifier;
      const qos = Math.min(message.qos, qosOf(route)) as QoS;
      mergeChoice(chosen, { session, qos, subscriptionIds: identifier === undefined ? undefined : [identifier], shared: [filter] });
    }
    return chosen.values();
  }

  /** The delivery a shared group's chosen member gets of a handed-on message. */
  #target({ session, qos, subscriptionIds, shared }: Choice, retain: boolean): Target {
    const delivery = session.clean ? { clientId: session.clientId, qos, retain } : session.delivery(qos, retain);
    if (subscriptionIds) delivery.subscriptionIds = subscriptionIds;
    delivery.shared = shared;
    return { session, delivery };
  }

  /**
   * Publication.deliver's part for clean subscribers (and a clean publisher's QoS 2 packet id),
   * in the memory store; `queued` hears how many got an entry, `finish` ends it.
   */
  async #deliverClean(
    message: Message,
    volatileTargets: Target[],
    inbound: PublishOptions['inbound'],
    queued: (count: number) => void,
    finish: (volatileSubscribers: number, handedOn: number) => PublicationOutcome,
  ): Promise<PublicationOutcome> {
    // The clean targets are looked up again here, as their write is submitted (nothing awaited in
    // between), not as they were at routing: one discarded since (its connection closed, or was
    // taken over) has no queue left and gets nothing [MQTT-3.1.2-6]; the others get the message.
    const [stillVolatile, discarded] = this.#stillCurrent(volatileTargets);
    const volatileInbound = inbound?.session.clean && this.#isCurrent(inbound.session);
    if (stillVolatile.length > 0 || volatileInbound) {
      const seqs = await this.#volatile.publish({
        message,
        deliveries: stillVolatile.map(({ delivery }) => delivery),
        ...(volatileInbound ? { inbound: { clientId: inbound.session.clientId, packetId: inbound.packetId } } : {}),
      });
      queued(notify(stillVolatile, seqs, message));
    }
    // A clean member chosen for a shared subscription whose session ended meanwhile: its session's
    // hand-over found nothing of this message yet, so it goes to another member now.
    let handedOn = 0;
    for (const { delivery } of discarded) {
      if (!delivery.shared) continue;
      const count = await this.#handTo(message, delivery.retain, delivery.shared);
      queued(count);
      if (count > 0) handedOn++;
    }
    return finish(stillVolatile.length, handedOn);
  }

  /** Targets whose session is still the one routing knows, and those discarded since they were chosen. */
  #stillCurrent(targets: Target[]): [current: Target[], discarded: Target[]] {
    const current: Target[] = [];
    const discarded: Target[] = [];
    for (const target of targets) (this.#isCurrent(target.session) ? current : discarded).push(target);
    return [current, discarded];
  }

  /**
   * Queues retained messages for a new subscription, with RETAIN=1 [MQTT-3.3.1-8]. Called after
   * the subscription is stored. The index is walked in slices, with other work let in between,
   * and payloads are read from the store a few at a time: a filter that reaches many retained
   * messages costs this subscriber time, not every other client, and memory stays bounded.
   */
  async sendRetained(session: Session, filter: string, granted: QoS, identifier?: number): Promise<void> {
    // Retained messages routed before the subscription and still on their way to the store.
    if (this.#retainedWrites.size > 0) await Promise.allSettled([...this.#retainedWrites]);
    let batch: RetainedMatch[] = [];
    let bytes = 0;
    for (const match of this.#retained.matches(filter)) {
      if (match === PAUSE) {
        await nextTurn();
        // A clean session discarded (its connection taken over) while this ran has no queue left.
        if (!this.#isCurrent(session)) return;
        continue;
      }
      if (this.#canRead !== undefined && !this.#canRead(session, match.topic)) continue;
      batch.push(match);
      bytes += match.size;
      if (batch.length < RETAINED_READ_MESSAGES && bytes < RETAINED_READ_BYTES) continue;
      if (!(await this.#sendRetainedBatch(session, batch, granted, identifier))) return;
      batch = [];
      bytes = 0;
    }
    if (batch.length > 0) await this.#sendRetainedBatch(session, batch, granted, identifier);
  }

  /** Reads the payloads of `matches` and sends them; false: the session is gone. */
  async #sendRetainedBatch(session: Session, matches: RetainedMatch[], granted: QoS, identifier: number | undefined): Promise<boolean> {
    const inStore = matches.filter(({ payload }) => payload === undefined).map(({ topic }) => topic);
    const read = inStore.length > 0 ? await this.#durable.readRetained(inStore) : [];
    const enqueues: Promise<void>[] = [];
    let current = true;
    let next = 0;
    for (const match of matches) {
      let message: Message;
      if (match.payload !== undefined) {
        message = { topic: match.topic, payload: match.payload, qos: 0 };
      } else {
        const stored = read[next++];
        // Cleared or replaced by an empty payload since it was matched.
        if (stored === undefined) continue;
        if (stored instanceof BrokerError) {
          this.#reportDamage(match.topic, stored);
          continue;
        }
        message = stored;
      }
      if (!this.#isCurrent(session)) {
        current = false;
        break;
      }
      // A retained message past its expiry is not sent [MQTT-3.3.2-5]; it stays stored until its topic is set again.
      if (isExpired(message)) continue;
      const qos = Math.min(message.qos, granted) as QoS;
      const subscriptionIds = identifier === undefined ? undefined : [identifier];
      if (qos === 0) session.sendDirect(message, true, subscriptionIds);
      // Submitted together, stored in one batch: one fsync for the read, not one per message,
      // which held a wide subscription's SUBSCRIBE (and the client's acknowledgements behind
      // it) for as many fsyncs as it matched retained messages. They commit, and the session
      // learns of them, in submission order.
      else enqueues.push(session.enqueue(message, qos, true, subscriptionIds));
    }
    await Promise.all(enqueues);
    return current;
  }

  /** A damaged retained record is never sent: the operator hears of it, once per topic. */
  #reportDamage(topic: string, error: BrokerError): void {
    if (this.#damageReported.has(topic)) return;
    this.#damageReported.add(topic);
    this.#log.error(
      `the retained message on ${JSON.stringify(topic)} is damaged and is not sent: ${error.message} (${error.code}); ` +
        'broker-admin verify lists damaged records, broker-admin retained clear removes this one',
    );
  }

  /**
   * The durable write of a publication is done: its sessions hear of their entries, and the
   * retained index follows. Run in the write's own continuation, before anything else is awaited:
   * batches resolve in seq order, and a session must learn of its entries in that order to keep
   * them in order. Returns how many sessions queued it.
   */
  #stored(durable: PublishTransition, targets: Target[], result: PublishResult): number {
    const queued = notify(targets, result, durable.message);
    const { retained, message } = durable;
    if (retained === 'clear') this.#retained.deleteStored(message.topic);
    else if (retained === 'set') this.#afterRetainedSet(message, result);
    return queued;
  }

  /** Memory follows what the store decided: kept, or refused at the limits (and the previous one gone). */
  #afterRetainedSet(message: Message, result: PublishResult): void {
    const { topic, qos, payload } = message;
    if (result.retainedRefused) {
      this.#retained.deleteStored(topic);
      if (this.#retainedRefused++ === 0) {
        this.#log.warn(
          `retained message on ${JSON.stringify(topic)} not kept: the retained limits (max_retained_messages, max_retained_bytes) are reached. ` +
            'It was delivered to the current subscribers; the topic keeps no retained message. Further refusals are counted in the store, ' +
            'not logged, until a retained message fits again',
        );
      }
      return;
    }
    this.#retained.setStored(topic, qos, payload.length);
    if (this.#retainedRefused > 0) {
      this.#log.info(`retained messages are kept again; ${this.#retainedRefused} were refused at the retained limits meanwhile`);
      this.#retainedRefused = 0;
    }
  }

  /** Clean sessions may have ended while the durable batch was written. */
  #isCurrent(session: Session): boolean {
    return this.#lookup(session.clientId) === session;
  }
}

/** A shared group's member chosen for a handed-on message, with what its subscriptions in the chosen groups ask. */
interface Choice {
  session: Session;
  qos: QoS;
  subscriptionIds: number[] | undefined;
  shared: string[];
}

/** Adds `choice` to `chosen`, merged with what its session was chosen for already: one delivery per session. */
function mergeChoice(chosen: Map<string, Choice>, choice: Choice): void {
  const known = chosen.get(choice.session.clientId);
  if (!known) {
    chosen.set(choice.session.clientId, { ...choice, shared: [...choice.shared], subscriptionIds: choice.subscriptionIds && [...choice.subscriptionIds] });
    return;
  }
  known.qos = Math.max(known.qos, choice.qos) as QoS;
  known.shared.push(...choice.shared);
  if (choice.subscriptionIds) (known.subscriptionIds ??= []).push(...choice.subscriptionIds);
}

/** Queue entries read at a time when a session's messages are handed over. */
const HAND_OVER_READ = 1000;

/** Whether a queued message may go to another member: see Distributor.handOver. */
function mayHandOver(entry: OutboundEntry): boolean {
  return entry.qos === 1 || entry.state === 'queued';
}

/** Tells each target session of its entry (or of its drop); returns how many got one. */
function notify(targets: Target[], seqs: Map<string, number>, message: Message): number {
  let queued = 0;
  for (const { session, delivery } of targets) {
    const seq = seqs.get(session.clientId);
    if (seq === undefined) {
      session.dropped();
    } else {
      queued++;
      session.enqueued(seq, message, delivery);
    }
  }
  return queued;
}
