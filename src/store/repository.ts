/**
 * The session repository: the only door between the session layer and storage.
 *
 * Its methods are session state transitions, not key/value operations. Every transition is
 * atomic (it lands whole or not at all) and its promise resolves only once the transition is
 * durable in the backend's terms; callers act on a transition (send an ack, write a packet)
 * only after that. Transitions submitted without awaiting in between are applied in submission
 * order, which lets a backend commit many of them in one batch (group commit).
 */

export type { Message, MessageProperties, OutboundState, QoS, RetainedEntry, RetainHandling, RetainedMessage, Subscription } from './model.js';
import type { BrokerError } from '../errors.js';
import type { Message, OutboundState, QoS, RetainedEntry, RetainedMessage, Subscription } from './model.js';

/** One message on its way to one session, in the session's outbound order. */
export interface OutboundEntry {
  /**
   * Position in the session's outbound order. Each enqueue gets a seq above every seq given before
   * in this run and above every entry still stored; after a restart the seq of an entry already
   * completed may be given again (keeping a high-water mark would cost a write per message).
   */
  seq: number;
  message: Message;
  /** QoS of this delivery: the lower of the message QoS and the subscription's granted QoS. */
  qos: QoS;
  /** RETAIN flag of this delivery: true only for retained messages sent because of a new subscription. */
  retain: boolean;
  /** MQTT 5 Subscription Identifiers of the session's subscriptions that matched [MQTT-3.3.4-3]. */
  subscriptionIds?: number[];
  /** The shared subscriptions (`$share/...` filters) the session was chosen for (see Delivery.shared). */
  shared?: string[];
  state: OutboundState;
  /**
   * The packet id stored with a 'released' entry that has a record of its own (see markReleased).
   * Packet ids of 'dup' entries, and of entries released under a released-through mark, are not
   * stored: the session layer derives them from seq, so they are the same on every redelivery
   * [MQTT-4.4.0-1].
   */
  packetId?: number;
  /**
   * What the repository that read the entry stored for it, when that spares it a read to complete
   * the entry; opaque to callers, who hand the entry back to `complete` as they got it.
   */
  stored?: unknown;
}

/**
 * What `complete` and `markReleased` take: a seq, or an entry as `readOutbound` (or the session's
 * enqueue) returned it. A seq may be completed any number of times; an entry (with its `stored`)
 * only once, as the session does, and not after it was completed: the repository may trust it to
 * be still queued instead of reading the entry back. An entry handed out before its session was
 * destroyed names nothing in a session its client has later, whose seqs may start again.
 */
export type Completion = number | Pick<OutboundEntry, 'seq' | 'stored'>;

/** What `markReleased` takes for each PUBREC: the entry (as for `complete`) and the packet id PUBREL is sent with. */
export interface Release {
  entry: Completion;
  packetId: number;
}

export interface StoredSession {
  clientId: string;
  subscriptions: Subscription[];
  /** The user name of the client that created the session; undefined: an anonymous client (or a record from before owners were stored). */
  owner?: string;
  /** When its client last connected or disconnected (ms since the epoch), for its expiry. */
  lastSeen?: number;
  /** MQTT 5 Session Expiry Interval, seconds; undefined: none stored (a 3.1.1 session). */
  expiry?: number;
}

/** When a stored session was created and when its client was last seen, in ms since the epoch. */
export interface SessionInfo {
  createdAt: number;
  /** The last connect or disconnect of its client; createdAt until then. */
  lastSeen: number;
  /** The user name that created the session (see StoredSession.owner). */
  owner?: string;
  /** Session Expiry Interval, seconds (see StoredSession.expiry). */
  expiry?: number;
}

export interface Delivery {
  clientId: string;
  qos: QoS;
  retain: boolean;
  /** Subscription Identifiers of the matching subscriptions: they belong to the delivery, not the message. */
  subscriptionIds?: number[];
  /**
   * The shared subscriptions (their `$share/...` filters) the session was chosen for as the one
   * member to get the message: if the session ends before the message is delivered, it is handed
   * to another member of each (see PublishTransition.handOver).
   */
  shared?: string[];
  /**
   * Raise the session's DUP mark over this entry in the same batch: the session sends it as soon
   * as it is stored, and is spared a write (and an fsync) of its own before it does.
   */
  raiseDupMark?: boolean;
  /**
   * Set by the repository once the entry is stored, when it can complete the entry without reading
   * it back (OutboundEntry.stored); the session keeps it with the entry it sends.
   */
  stored?: unknown;
  /**
   * Queue limits of this session when they are its own (a bridge's max_queued_messages/bytes),
   * in place of the repository's. The refusal and its count work as for the repository's limits.
   */
  limits?: QueueLimits;
}

export interface PublishTransition {
  message: Message;
  /** Sessions whose outbound queue receives the message, each once. */
  deliveries: Delivery[];
  /**
   * 'set' stores the message as the topic's retained message, within the retained limits (see
   * RetainedLimits: at them it is refused, and the topic's previous one removed); 'clear' removes it.
   */
  retained?: 'set' | 'clear';
  /** An inbound QoS2 PUBLISH: its packet id is recorded as received-not-released in the same batch. */
  inbound?: { clientId: string; packetId: number };
  /**
   * The message is handed over from this queue entry of another session (a shared subscription's
   * member whose session ends): the entry is removed in the same batch, so the message is in one
   * queue or the other whatever happens. An entry gone already (completed meanwhile) hands over
   * nothing: the deliveries are then not made.
   */
  handOver?: { clientId: string; seq: number };
}


/**
 * What `publish` resolves to: the seq given to each session that got an entry, and, for a retained
 * 'set' refused at the retained limits, `retainedRefused`.
 */
export type PublishResult = Map<string, number> & { retainedRefused?: true };

/**
 * A retained message read back for a new subscription: the message; undefined when the topic no
 * longer has one; a BrokerError (STORE_CORRUPT_RECORD) when its record is damaged, so that it is
 * reported and never delivered.
 */
export type RetainedRead = RetainedMessage | BrokerError | undefined;

export type { QueueLimits, QueueStats } from './queue-limits.js';
import type { QueueLimits, QueueStats } from './queue-limits.js';
export type { RetainedStats } from './retained-limits.js';
import type { RetainedStats } from './retained-limits.js';
import type { LevelInspector } from './level-inspector.js';

/** What a repository whose state lives in a directory on disk can do besides its transitions. */
export interface OnDiskStore {
  /** The store's directory: what broker-admin opens when the broker is stopped, and what a damaged store's move aside renames. */
  readonly location: string;
  /** Read-only, snapshot-consistent inspection for broker-admin while the broker runs. */
  inspector(): LevelInspector;
}

export interface SessionRepository {
  /** Set when the repository keeps its state in a directory on disk (LevelDB); absent in memory. */
  readonly onDisk?: OnDiskStore;
  open(): Promise<void>;
  /** Waits for transitions already submitted, then releases the backend. */
  close(): Promise<void>;
  /** Resolves once every transition submitted before it has landed (reads after it see them). */
  settled(): Promise<void>;

  /** Every stored session with its subscriptions: what routing needs at startup; no queues. */
  loadSessions(): Promise<StoredSession[]>;
  /** Topic, QoS and size of every retained message, without their payloads: what routing keeps in memory. */
  loadRetainedIndex(): Promise<RetainedEntry[]>;
  /** The retained messages of these topics, payloads included, in the order asked. */
  readRetained(topics: readonly string[]): Promise<RetainedRead[]>;
  /** Count and payload bytes of the retained messages stored, and how many were refused at the limits. */
  retainedStats(): Promise<RetainedStats>;
  /**
   * Outbound entries of a session with seq > afterSeq, in seq order: up to `limit` of them, and
   * none after the one that brings their payloads to `maxBytes` (default: no byte limit), so the
   * first entry always comes whatever its size.
   */
  readOutbound(clientId: string, afterSeq: number, limit: number, maxBytes?: number): Promise<OutboundEntry[]>;
  /** Packet ids of inbound QoS2 messages received but not yet released by PUBREL. */
  loadInbound(clientId: string): Promise<number[]>;
  /** When the session was created and last seen; undefined for an unknown session. */
  sessionInfo(clientId: string): Promise<SessionInfo | undefined>;

  /**
   * Creates the session if it does not exist (created and last seen now, owned by `owner`, the
   * user name of its client, none for an anonymous one; with `expiry`, its Session Expiry
   * Interval in seconds); keeps an existing one as it is.
   */
  createSession(clientId: string, owner?: string, expiry?: number): Promise<void>;
  /**
   * The session's client connected or disconnected now: stores last-seen, and `expiry` as its
   * Session Expiry Interval from now on (undefined: none, as for a 3.1.1 client). No-op for an
   * unknown session.
   */
  touchSession(clientId: string, expiry?: number): Promise<void>;
  /** Discards everything the session holds: subscriptions, queue, inflight, inbound packet ids. */
  destroySession(clientId: string): Promise<void>;
  subscribe(clientId: string, subscriptions: Subscription[]): Promise<void>;
  unsubscribe(clientId: string, filters: string[]): Promise<void>;
  /**
   * Stores a message and its deliveries in one batch; resolves to the seq given to each session.
   * A session whose queue is full (see QueueLimits) gets no entry and no seq; its drop is counted.
   */
  publish(transition: PublishTransition): Promise<PublishResult>;
  /**
   * Raises the session's DUP mark to `throughSeq` (never lowers it): entries with a seq at or
   * below it read back as 'dup', the others as 'queued'. One mark per session, not a record per
   * message, since entries are always sent in seq order. Capped at the highest seq given to the
   * session; seqs given after a restart stay above it.
   */
  raiseDupMark(clientId: string, throughSeq: number): Promise<void>;
  /**
   * Sets the DUP mark to `throughSeq`, also downwards. The caller guarantees that no entry above
   * it was sent (a session whose connection ends with entries marked ahead but never sent).
   */
  setDupMark(clientId: string, throughSeq: number): Promise<void>;
  /**
   * PUBREC arrived for outbound QoS2 entries: from now on it is PUBREL that gets resent. An entry
   * no longer queued gets nothing (a release record without its entry could mark a later entry
   * that reuses the seq after a restart). Several in one call are one transition: the PUBRECs of
   * one socket read are stored together.
   *
   * `releasedThrough` is the caller's word that every QoS2 entry of the session still queued at or
   * below that seq has had its PUBREC, in this call or before, and that its PUBREL goes with the
   * packet id its seq gives: a store may then keep one mark per session for them instead of a
   * record per entry, and read them back as 'released' without a packet id (OutboundEntry.packetId).
   * The releases must be entries as readOutbound or the session's enqueue handed them out, of the
   * session as it is now; seqs alone get a record each.
   */
  markReleased(clientId: string, releases: Release[], releasedThrough?: number): Promise<void>;
  /**
   * PUBACK (QoS1) or PUBCOMP (QoS2) arrived: the entries are gone. Also drops undeliverable
   * entries. Several seqs in one call are one transition: a draining session completes every
   * acknowledgement of a socket read together. A store may hold it back for a moment to write it
   * with the next transition (it only ever spares a redelivery), so its caller does not wait on it.
   */
  complete(clientId: string, ...completions: Completion[]): Promise<void>;
  /** PUBREL arrived for an inbound QoS2 packet id. */
  releaseInbound(clientId: string, packetId: number): Promise<void>;
  /** Removes the topic's retained message, if any (never refused). */
  clearRetained(topic: string): Promise<void>;

  /** Size of a session's queue and its drop count; undefined for an unknown session. */
  queueStats(clientId: string): Promise<QueueStats | undefined>;
}
