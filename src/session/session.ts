import type { Logger } from '../logger.js';
import type { Route } from '../routing/topic-tree.js';
import type { Completion, Delivery, Message, OutboundEntry, QoS, QueueStats, Release, SessionRepository, Subscription } from '../store/repository.js';
import { InboundFlow, type InboundStore } from './inbound-flow.js';
import { OutboundFlow, type OutboundChannel, type OutboundOptions, type OutboundStore } from './outbound-flow.js';

export type { EndCause, OutboundChannel, OutgoingPublish } from './outbound-flow.js';

/** The limits of every link's outbound flow (the ACL's check comes from the policy). */
export type SessionLimits = Omit<OutboundOptions, 'mayReceive'>;

/** What every session of a broker is given: the same limits, and the ACL's read check when there is one. */
export interface SessionPolicy {
  limits: SessionLimits;
  /** Only with an ACL: whether `session` (by its owner) may receive a message on `topic` now. */
  canRead?: (session: Session, topic: string) => boolean;
}

/**
 * What a connection holds of its session while it is linked: the session and the two flows made
 * for this connection. After unlink the flows are closed, so anything of that connection still
 * under way acts for nobody.
 */
export interface SessionLink {
  readonly session: Session;
  readonly outbound: OutboundFlow;
  readonly inbound: InboundFlow;
}

/**
 * One client's session (spec 4.1): who it is, its subscriptions, and the one door to its stored
 * state. Every store transition of the session goes through here, bound to its client id and
 * tracked, so a connection that links next waits for the writes of the one before it. The delivery
 * engine of the current connection lives in its flows (OutboundFlow, InboundFlow), made at link
 * and dropped at unlink.
 *
 * A disconnected persistent session keeps nothing in memory but its subscriptions.
 */
export class Session implements OutboundStore, InboundStore {
  readonly clientId: string;
  /** CleanSession=1: lives as long as its connection, in the volatile repository. */
  readonly clean: boolean;
  /** Filter → what routing holds for it (a bare QoS, or the MQTT 5 options). */
  readonly subscriptions = new Map<string, Route>();
  /**
   * Seconds the session outlives its connection: 0, it ends with it; undefined, a 3.1.1 persistent
   * session, kept as long as the broker's persistent_session_expiry says. Set by each CONNECT.
   */
  expiry: number | undefined;
  /** The user name of the client that created the session (undefined: anonymous); ACL read checks use it. */
  readonly owner: string | undefined;
  readonly #store: SessionRepository;
  readonly #policy: SessionPolicy;
  readonly #log: Logger;
  #link: SessionLink | undefined;
  readonly #pendingWrites = new Set<Promise<unknown>>();
  /** Messages are being refused for this session because its queue is full. */
  #dropping = false;

  constructor(clientId: string, clean: boolean, store: SessionRepository, policy: SessionPolicy, log: Logger, owner?: string) {
    this.clientId = clientId;
    this.clean = clean;
    this.expiry = clean ? 0 : undefined;
    this.owner = owner;
    this.#store = store;
    this.#policy = policy;
    this.#log = log;
  }

  get connected(): boolean {
    return this.#link !== undefined;
  }

  get channel(): OutboundChannel | undefined {
    return this.#link?.outbound.channel;
  }

  // --- Links: one connection at a time ---------------------------------------------------------

  /** Links a connection; nothing is sent until `resume`, so CONNACK can go first. */
  link(channel: OutboundChannel): SessionLink {
    const { canRead } = this.#policy;
    let limits = this.#policy.limits;
    // What an MQTT 5 client takes in flight at once bounds this link's flow too [MQTT-3.3.4-9].
    const receiveMaximum = channel.receiveMaximum;
    if (receiveMaximum !== undefined && receiveMaximum < limits.maxInflight) limits = { ...limits, maxInflight: receiveMaximum };
    const options = canRead ? { ...limits, mayReceive: (topic: string) => canRead(this, topic) } : limits;
    const link: SessionLink = {
      session: this,
      outbound: new OutboundFlow(this, channel, options, this.#log),
      inbound: new InboundFlow(this),
    };
    this.#link = link;
    return link;
  }

  /** Unlinks the connection, closing its flows; false if it is not the one linked. */
  unlink(channel: OutboundChannel): boolean {
    const link = this.#link;
    if (link?.outbound.channel !== channel) return false;
    this.#link = undefined;
    link.outbound.close();
    return true;
  }

  /** Starts the flows of `link` once every transition of earlier connections has landed. */
  async resume(link: SessionLink): Promise<void> {
    // Transitions of the previous connection must land before the store is read back.
    await Promise.allSettled([...this.#pendingWrites]);
    await link.inbound.start();
    await link.outbound.start();
  }

  // --- Deliveries, from the distributor ----------------------------------------------------------

  /** How a message at `qos` is to be stored for this session (see OutboundFlow.readyToSend). */
  delivery(qos: QoS, retain: boolean): Delivery {
    const delivery: Delivery = { clientId: this.clientId, qos, retain };
    if (this.#link?.outbound.readyToSend) delivery.raiseDupMark = true;
    return delivery;
  }

  /** A stored transition queued `message` for this session, as `delivery` said. */
  enqueued(seq: number, message: Message, delivery: Delivery): void {
    this.#dropping = false;
    this.#link?.outbound.enqueued(seq, message, delivery);
  }

  /** The store refused a message for this session: its queue is full. Logged once per episode. */
  dropped(): void {
    if (this.#dropping) return;
    this.#dropping = true;
    this.#log.warn(
      `session ${JSON.stringify(this.clientId)}: queue full, new messages for it are dropped and counted (broker-admin shows the count)`,
    );
  }

  /** A QoS 0 delivery: nothing to store, sent only if connected [MQTT-4.3.1]. */
  sendDirect(message: Message, retain: boolean, subscriptionIds?: number[]): void {
    this.#link?.outbound.sendDirect(message, retain, subscriptionIds);
  }

  /** Stores `message` in this session's queue alone (a retained message for a new subscription) and hands it on. */
  async enqueue(message: Message, qos: QoS, retain: boolean, subscriptionIds?: number[]): Promise<void> {
    const delivery: Delivery = { clientId: this.clientId, qos, retain };
    if (subscriptionIds) delivery.subscriptionIds = subscriptionIds;
    const seqs = await this.#track(this.#store.publish({ message, deliveries: [delivery] }));
    const seq = seqs.get(this.clientId);
    if (seq === undefined) this.dropped();
    else this.enqueued(seq, message, delivery);
  }

  /**
   * Registers a transition of this session that someone else submitted (an inbound QoS2 PUBLISH),
   * so the next link waits for it before reading the store back.
   */
  track<T>(write: Promise<T>): Promise<T> {
    return this.#track(write);
  }

  // --- The stored state: the one door ---------------------------------------------------------

  /** Stores the session if it is new (owned by `owner`); keeps a stored one as it is. */
  create(): Promise<void> {
    return this.#track(this.#store.createSession(this.clientId, this.owner, this.expiry));
  }

  /** Its client connected or disconnected now; its expiry is stored as it is now. */
  touch(): Promise<void> {
    return this.#track(this.#store.touchSession(this.clientId, this.expiry));
  }

  /** Discards everything stored of the session. */
  destroy(): Promise<void> {
    return this.#track(this.#store.destroySession(this.clientId));
  }

  storeSubscriptions(subscriptions: Subscription[]): Promise<void> {
    return this.#track(this.#store.subscribe(this.clientId, subscriptions));
  }

  removeSubscriptions(filters: string[]): Promise<void> {
    return this.#track(this.#store.unsubscribe(this.clientId, filters));
  }

  /** Queue entries after `afterSeq` in seq order, at most `limit` of them and about `maxBytes` of payload. */
  readQueue(afterSeq: number, limit: number, maxBytes?: number): Promise<OutboundEntry[]> {
    return this.#store.readOutbound(this.clientId, afterSeq, limit, maxBytes);
  }

  /** Resolves once every transition submitted for any session of its repository has landed. */
  settled(): Promise<void> {
    return this.#store.settled();
  }

  inboundPacketIds(): Promise<number[]> {
    return this.#store.loadInbound(this.clientId);
  }

  queueStats(): Promise<QueueStats | undefined> {
    return this.#store.queueStats(this.clientId);
  }

  raiseDupMark(throughSeq: number): Promise<void> {
    return this.#track(this.#store.raiseDupMark(this.clientId, throughSeq));
  }

  setDupMark(throughSeq: number): Promise<void> {
    return this.#track(this.#store.setDupMark(this.clientId, throughSeq));
  }

  markReleased(releases: Release[], releasedThrough?: number): Promise<void> {
    return this.#track(this.#store.markReleased(this.clientId, releases, releasedThrough));
  }

  complete(entries: Completion[]): Promise<void> {
    return this.#track(this.#store.complete(this.clientId, ...entries));
  }

  releaseInbound(packetId: number): Promise<void> {
    return this.#track(this.#store.releaseInbound(this.clientId, packetId));
  }

  #track<T>(write: Promise<T>): Promise<T> {
    this.#pendingWrites.add(write);
    const untrack = () => this.#pendingWrites.delete(write);
    write.then(untrack, untrack);
    return write;
  }
}
