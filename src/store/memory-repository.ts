import { BrokerError, ErrorCodes } from '../errors.js';
import { admit, DEFAULT_QUEUE_LIMITS, emptyQueueStats, release, type QueueLimits, type QueueStats } from './queue-limits.js';
import { admitRetained, DEFAULT_RETAINED_LIMITS, emptyRetainedStats, removeRetained, type RetainedLimits, type RetainedStats } from './retained-limits.js';
import type {
  Completion,
  Release,
  OutboundEntry,
  PublishResult,
  PublishTransition,
  RetainedEntry,
  RetainedMessage,
  RetainedRead,
  SessionInfo,
  SessionRepository,
  StoredSession,
  Subscription,
} from './repository.js';

interface MemorySession {
  subscriptions: Map<string, Subscription>;
  stats: QueueStats;
  /** Insertion order is seq order: seqs only grow. */
  queue: Map<number, OutboundEntry>;
  nextSeq: number;
  inbound: Set<number>;
  createdAt: number;
  lastSeen: number;
  owner: string | undefined;
  expiry: number | undefined;
}

/**
 * The repository in memory: the reference the LevelDB repository is checked against, and the home
 * of CleanSession=1 sessions, whose state must end with their connection and never touch disk.
 * Its state survives close/open of the same instance, not a process restart.
 */
export class MemoryRepository implements SessionRepository {
  readonly #sessions = new Map<string, MemorySession>();
  readonly #retained = new Map<string, RetainedMessage>();
  readonly #retainedStats = emptyRetainedStats();
  readonly #limits: QueueLimits;
  readonly #retainedLimits: RetainedLimits;
  #open = false;

  constructor(options: { limits?: QueueLimits; retainedLimits?: RetainedLimits } = {}) {
    this.#limits = options.limits ?? DEFAULT_QUEUE_LIMITS;
    this.#retainedLimits = options.retainedLimits ?? DEFAULT_RETAINED_LIMITS;
  }

  async open(): Promise<void> {
    this.#open = true;
  }

  async close(): Promise<void> {
    this.#open = false;
  }

  async settled(): Promise<void> {
    // Every transition here is applied when it is called.
    this.#checkOpen();
  }

  async loadSessions(): Promise<StoredSession[]> {
    this.#checkOpen();
    return [...this.#sessions].map(([clientId, session]) => ({
      clientId,
      subscriptions: [...session.subscriptions.values()].map((subscription) => ({ ...subscription })),
      lastSeen: session.lastSeen,
      ...(session.owner === undefined ? {} : { owner: session.owner }),
      ...(session.expiry === undefined ? {} : { expiry: session.expiry }),
    }));
  }

  async loadRetainedIndex(): Promise<RetainedEntry[]> {
    this.#checkOpen();
    return [...this.#retained.values()].map(({ topic, qos, payload }) => ({ topic, qos, size: payload.length }));
  }

  async readRetained(topics: readonly string[]): Promise<RetainedRead[]> {
    this.#checkOpen();
    return topics.map((topic) => this.#retained.get(topic));
  }

  async retainedStats(): Promise<RetainedStats> {
    this.#checkOpen();
    return { ...this.#retainedStats };
  }

  async readOutbound(clientId: string, afterSeq: number, limit: number, maxBytes = Infinity): Promise<OutboundEntry[]> {
    this.#checkOpen();
    const entries: OutboundEntry[] = [];
    const session = this.#sessions.get(clientId);
    if (!session || limit <= 0) return entries;
    let bytes = 0;
    for (const entry of session.queue.values()) {
      if (entry.seq <= afterSeq) continue;
      // Handed out with its session: a session destroyed and made again does not take it for its own.
      entries.push({ ...entry, stored: session });
      bytes += entry.message.payload.length;
      if (entries.length >= limit || bytes >= maxBytes) break;
    }
    return entries;
  }

  async loadInbound(clientId: string): Promise<number[]> {
    this.#checkOpen();
    return [...(this.#sessions.get(clientId)?.inbound ?? [])];
  }

  async createSession(clientId: string, owner?: string, expiry?: number): Promise<void> {
    this.#checkOpen();
    if (this.#sessions.has(clientId)) return;
    const now = Date.now();
    this.#sessions.set(clientId, {
      subscriptions: new Map(),
      stats: emptyQueueStats(),
      queue: new Map(),
      nextSeq: 1,
      inbound: new Set(),
      createdAt: now,
      lastSeen: now,
      owner,
      expiry,
    });
  }

  async touchSession(clientId: string, expiry?: number): Promise<void> {
    this.#checkOpen();
    const session = this.#sessions.get(clientId);
    if (!session) return;
    // Never backwards, even if the clock steps back.
    session.lastSeen = Math.max(Date.now(), session.lastSeen);
    session.expiry = expiry;
  }

  async sessionInfo(clientId: string): Promise<SessionInfo | undefined> {
    this.#checkOpen();
    const session = this.#sessions.get(clientId);
    return (
      session && {
        createdAt: session.createdAt,
        lastSeen: session.lastSeen,
        ...(session.owner === undefined ? {} : { owner: session.owner }),
        ...(session.expiry === undefined ? {} : { expiry: session.expiry }),
      }
    );
  }

  async destroySession(clientId: string): Promise<void> {
    this.#checkOpen();
    this.#sessions.delete(clientId);
  }

  async subscribe(clientId: string, subscriptions: Subscription[]): Promise<void> {
    const session = this.#session(clientId);
    for (const subscription of subscriptions) session.subscriptions.set(subscription.filter, { ...subscription });
  }

  async unsubscribe(clientId: string, filters: string[]): Promise<void> {
    const session = this.#session(clientId);
    for (const filter of filters) session.subscriptions.delete(filter);
  }

  async publish(transition: PublishTransition): Promise<PublishResult> {
    this.#checkOpen();
    const { message, deliveries, retained, inbound, handOver } = transition;
    // Validate everything before changing anything: a transition lands whole or not at all.
    const targets = deliveries.map((delivery) => [delivery, this.#session(delivery.clientId)] as const);
    if (new Set(deliveries.map((delivery) => delivery.clientId)).size !== deliveries.length) {
      throw new Error('publish delivers twice to one session');
    }
    const inboundSession = inbound ? this.#session(inbound.clientId) : undefined;
    const seqs: PublishResult = new Map<string, number>();
    // Handed over from another session's entry: moved only if that entry is still there.
    if (handOver && !this.#takeEntry(handOver.clientId, handOver.seq)) return seqs;
    for (const [delivery, session] of targets) {
      const { clientId, qos, retain, raiseDupMark, limits, subscriptionIds, shared } = delivery;
      if (!admit(session.stats, message.payload.length, limits ?? this.#limits)) continue;
      delivery.stored = session;
      const seq = session.nextSeq++;
      const entry: OutboundEntry = { seq, message, qos, retain, state: 'queued' };
      if (subscriptionIds) entry.subscriptionIds = [...subscriptionIds];
      if (shared) entry.shared = [...shared];
      session.queue.set(seq, entry);
      // Same meaning as raiseDupMark: the mark rises to this entry, covering the ones before it.
      if (raiseDupMark) markDupThrough(session, seq);
      seqs.set(clientId, seq);
    }
    if (retained === 'set') {
      const previous = this.#retained.get(message.topic)?.payload.length;
      if (admitRetained(this.#retainedStats, previous, message.payload.length, this.#retainedLimits)) {
        this.#retained.set(message.topic, { ...message });
      } else {
        this.#retained.delete(message.topic);
        seqs.retainedRefused = true;
      }
    } else if (retained === 'clear') {
      this.#clearRetained(message.topic);
    }
    if (inbound) inboundSession!.inbound.add(inbound.packetId);
    return seqs;
  }

  async raiseDupMark(clientId: string, throughSeq: number): Promise<void> {
    this.#checkOpen();
    const session = this.#sessions.get(clientId);
    if (session) markDupThrough(session, throughSeq);
  }

  async setDupMark(clientId: string, throughSeq: number): Promise<void> {
    this.#checkOpen();
    const session = this.#sessions.get(clientId);
    if (!session) return;
    for (const entry of session.queue.values()) {
      if (entry.seq <= throughSeq && entry.state === 'queued') entry.state = 'dup';
      else if (entry.seq > throughSeq && entry.state === 'dup') entry.state = 'queued';
    }
  }

  /** Each release is recorded with its entry: the released-through mark would only say the same again. */
  async markReleased(clientId: string, releases: Release[]): Promise<void> {
    this.#checkOpen();
    const session = this.#sessions.get(clientId);
    if (!session) return;
    for (const { entry: released, packetId } of releases) {
      const entry = heldBy(session, released) ? session.queue.get(typeof released === 'number' ? released : released.seq) : undefined;
      if (entry) {
        entry.state = 'released';
        entry.packetId = packetId;
      }
    }
  }

  async complete(clientId: string, ...completions: Completion[]): Promise<void> {
    this.#checkOpen();
    const session = this.#sessions.get(clientId);
    if (!session) return;
    for (const completion of completions) {
      if (heldBy(session, completion)) this.#takeEntry(clientId, typeof completion === 'number' ? completion : completion.seq);
    }
  }

  /** Removes a queue entry and counts it out; false if there is none. */
  #takeEntry(clientId: string, seq: number): boolean {
    const session = this.#sessions.get(clientId);
    const entry = session?.queue.get(seq);
    if (!session || !entry) return false;
    session.queue.delete(seq);
    release(session.stats, entry.message.payload.length);
    return true;
  }

  async queueStats(clientId: string): Promise<QueueStats | undefined> {
    this.#checkOpen();
    const stats = this.#sessions.get(clientId)?.stats;
    return stats && { ...stats };
  }

  async releaseInbound(clientId: string, packetId: number): Promise<void> {
    this.#checkOpen();
    this.#sessions.get(clientId)?.inbound.delete(packetId);
  }

  async clearRetained(topic: string): Promise<void> {
    this.#checkOpen();
    this.#clearRetained(topic);
  }

  #clearRetained(topic: string): void {
    const previous = this.#retained.get(topic);
    if (previous === undefined) return;
    this.#retained.delete(topic);
    removeRetained(this.#retainedStats, previous.payload.length);
  }

  #session(clientId: string): MemorySession {
    this.#checkOpen();
    const session = this.#sessions.get(clientId);
    if (!session) {
      throw new BrokerError(ErrorCodes.STORE_UNKNOWN_SESSION, `no stored session for client ${JSON.stringify(clientId)}`);
    }
    return session;
  }

  #checkOpen(): void {
    if (!this.#open) throw new BrokerError(ErrorCodes.STORE_CLOSED, 'the store is not open');
  }
}

/**
 * Whether `completion` may name an entry of `session`: a seq always; an entry handed out (stored
 * holds the session it came from) only by this session, not by one its client had before it was
 * destroyed, whose seqs this one gives again.
 */
function heldBy(session: MemorySession, completion: Completion): boolean {
  return typeof completion === 'number' || completion.stored === undefined || completion.stored === session;
}

/** Raises the DUP mark: entries are in seq order, the ones up to it are the first ones. */
function markDupThrough(session: MemorySession, throughSeq: number): void {
  for (const entry of session.queue.values()) {
    if (entry.seq > throughSeq) break;
    if (entry.state === 'queued') entry.state = 'dup';
  }
}
