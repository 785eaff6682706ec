import { BrokerError, ErrorCodes } from '../errors.js';
import { admit, DEFAULT_QUEUE_LIMITS, emptyQueueStats, release, type QueueLimits, type QueueStats } from './queue-limits.js';
import type {
  Completion,
  OutboundEntry,
  PublishTransition,
  QoS,
  RetainedMessage,
  SessionInfo,
  SessionRepository,
  StoredSession,
  Subscription,
} from './repository.js';

interface MemorySession {
  subscriptions: Map<string, QoS>;
  stats: QueueStats;
  /** Insertion order is seq order: seqs only grow. */
  queue: Map<number, OutboundEntry>;
  nextSeq: number;
  inbound: Set<number>;
  createdAt: number;
  lastSeen: number;
  owner: string | undefined;
}

/**
 * The repository in memory: the reference the LevelDB repository is checked against, and the home
 * of CleanSession=1 sessions, whose state must end with their connection and never touch disk.
 * Its state survives close/open of the same instance, not a process restart.
 */
export class MemoryRepository implements SessionRepository {
  readonly #sessions = new Map<string, MemorySession>();
  readonly #retained = new Map<string, RetainedMessage>();
  readonly #limits: QueueLimits;
  #open = false;

  constructor(options: { limits?: QueueLimits } = {}) {
    this.#limits = options.limits ?? DEFAULT_QUEUE_LIMITS;
  }

  async open(): Promise<void> {
    this.#open = true;
  }

  async close(): Promise<void> {
    this.#open = false;
  }

  async loadSessions(): Promise<StoredSession[]> {
    this.#checkOpen();
    return [...this.#sessions].map(([clientId, session]) => ({
      clientId,
      subscriptions: [...session.subscriptions].map(([filter, qos]) => ({ filter, qos })),
      ...(session.owner === undefined ? {} : { owner: session.owner }),
    }));
  }

  async loadRetained(): Promise<RetainedMessage[]> {
    this.#checkOpen();
    return [...this.#retained.values()];
  }

  async readOutbound(clientId: string, afterSeq: number, limit: number, maxBytes = Infinity): Promise<OutboundEntry[]> {
    this.#checkOpen();
    const entries: OutboundEntry[] = [];
    const session = this.#sessions.get(clientId);
    if (!session || limit <= 0) return entries;
    let bytes = 0;
    for (const entry of session.queue.values()) {
      if (entry.seq <= afterSeq) continue;
      entries.push({ ...entry });
      bytes += entry.message.payload.length;
      if (entries.length >= limit || bytes >= maxBytes) break;
    }
    return entries;
  }

  async loadInbound(clientId: string): Promise<number[]> {
    this.#checkOpen();
    return [...(this.#sessions.get(clientId)?.inbound ?? [])];
  }

  async createSession(clientId: string, owner?: string): Promise<void> {
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
    });
  }

  async touchSession(clientId: string): Promise<void> {
    this.#checkOpen();
    const session = this.#sessions.get(clientId);
    // Never backwards, even if the clock steps back.
    if (session) session.lastSeen = Math.max(Date.now(), session.lastSeen);
  }

  async sessionInfo(clientId: string): Promise<SessionInfo | undefined> {
    this.#checkOpen();
    const session = this.#sessions.get(clientId);
    return (
      session && {
        createdAt: session.createdAt,
        lastSeen: session.lastSeen,
        ...(session.owner === undefined ? {} : { owner: session.owner }),
      }
    );
  }

  async destroySession(clientId: string): Promise<void> {
    this.#checkOpen();
    this.#sessions.delete(clientId);
  }

  async subscribe(clientId: string, subscriptions: Subscription[]): Promise<void> {
    const session = this.#session(clientId);
    for (const { filter, qos } of subscriptions) session.subscriptions.set(filter, qos);
  }

  async unsubscribe(clientId: string, filters: string[]): Promise<void> {
    const session = this.#session(clientId);
    for (const filter of filters) session.subscriptions.delete(filter);
  }

  async publish(transition: PublishTransition): Promise<Map<string, number>> {
    this.#checkOpen();
    const { message, deliveries, retained, inbound } = transition;
    // Validate everything before changing anything: a transition lands whole or not at all.
    const targets = deliveries.map((delivery) => [delivery, this.#session(delivery.clientId)] as const);
    if (new Set(deliveries.map((delivery) => delivery.clientId)).size !== deliveries.length) {
      throw new Error('publish delivers twice to one session');
    }
    const inboundSession = inbound ? this.#session(inbound.clientId) : undefined;
    const seqs = new Map<string, number>();
    for (const [{ clientId, qos, retain, raiseDupMark }, session] of targets) {
      if (!admit(session.stats, message.payload.length, this.#limits)) continue;
      const seq = session.nextSeq++;
      session.queue.set(seq, { seq, message, qos, retain, state: 'queued' });
      // Same meaning as raiseDupMark: the mark rises to this entry, covering the ones before it.
      if (raiseDupMark) markDupThrough(session, seq);
      seqs.set(clientId, seq);
    }
    if (retained === 'set') this.#retained.set(message.topic, { ...message });
    else if (retained === 'clear') this.#retained.delete(message.topic);
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

  async markReleased(clientId: string, seq: number, packetId: number): Promise<void> {
    this.#checkOpen();
    const entry = this.#sessions.get(clientId)?.queue.get(seq);
    if (entry) {
      entry.state = 'released';
      entry.packetId = packetId;
    }
  }

  async complete(clientId: string, ...completions: Completion[]): Promise<void> {
    this.#checkOpen();
    const session = this.#sessions.get(clientId);
    if (!session) return;
    for (const completion of completions) {
      const seq = typeof completion === 'number' ? completion : completion.seq;
      const entry = session.queue.get(seq);
      if (!entry) continue;
      session.queue.delete(seq);
      release(session.stats, entry.message.payload.length);
    }
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
    this.#retained.delete(topic);
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

/** Raises the DUP mark: entries are in seq order, the ones up to it are the first ones. */
function markDupThrough(session: MemorySession, throughSeq: number): void {
  for (const entry of session.queue.values()) {
    if (entry.seq > throughSeq) break;
    if (entry.state === 'queued') entry.state = 'dup';
  }
}
