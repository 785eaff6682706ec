import type { AbstractSnapshot } from 'abstract-level';
import { BrokerError, ErrorCodes } from '../errors.js';
import type { Logger } from '../logger.js';
import type { LevelDatabase } from './level-database.js';
import { decodeRecord as decode } from './codec.js';
import { decodeQueueEntry } from './queue-entry-codec.js';
import { GroupCommitWriter, type BatchBuilder } from './group-commit.js';
import { LevelInspector } from './level-inspector.js';
import { openLevelStore } from './store-opening.js';
import { admit, DEFAULT_QUEUE_LIMITS, emptyQueueStats, release, type QueueLimits, type QueueStats } from './queue-limits.js';
import { DEFAULT_RETAINED_LIMITS, emptyRetainedStats, type RetainedLimits, type RetainedStats } from './retained-limits.js';
import { clearRetained, retainedStatsOf, setRetained } from './retained-records.js';
import {
  RETAINED_TOTALS_KEY,
  SYNC_MARK_KEY,
  isBodyValue,
  isReleaseValue,
  isQueueEntryValue,
  isQueueStatsValue,
  isRefCount,
  isRetainedIndexValue,
  isRetainedTotalsValue,
  isRetainedValue,
  isDupMarkValue,
  outboundMarksOf,
  type OutboundMarks,
  isSessionValue,
  isSubscriptionValue,
  propertiesOf,
  propertiesValue,
  subscriptionOfValue,
  subscriptionValue,
  bodyMessage,
  inlineMessage,
  keys,
  outboundStateOf,
  toBuffer,
  type BodyValue,
  type ReleaseValue,
  type QueueEntryValue,
  type QueueStatsValue,
  type DupMarkValue,
  type SessionValue,
} from './key-layout.js';
import type {
  Completion,
  Release,
  OnDiskStore,
  Delivery,
  Message,
  OutboundEntry,
  PublishResult,
  PublishTransition,
  RetainedEntry,
  RetainedRead,
  SessionInfo,
  SessionRepository,
  StoredSession,
  Subscription,
} from './repository.js';

/** Entries asked of LevelDB in one read of the queue (one thread pool round trip): a default read window. */
const READ_CHUNK = 1000;

export interface LevelRepositoryOptions {
  /** Directory of the LevelDB store. */
  location: string;
  /**
   * true (default): every batch is fsynced before its transitions resolve, so whatever the broker
   * acknowledged survives a crash or power cut. false: the OS flushes when it likes; a crash of
   * the machine (not of the process) can lose recently acknowledged messages.
   */
  sync?: boolean;
  /**
   * With sync false: fsync at most this often (ms), if anything was written. A power cut then
   * loses at most about this much acknowledged work; a crash of the process alone loses nothing,
   * since every batch is in the OS's hands before its transitions resolve.
   */
  syncIntervalMs?: number;
  /** Per-session queue limits (default DEFAULT_QUEUE_LIMITS). */
  limits?: QueueLimits;
  /** Limits on retained messages across the store (default DEFAULT_RETAINED_LIMITS). */
  retainedLimits?: RetainedLimits;
  /** Hears of failing store writes: when they start, every minute while they last, when they end. */
  log?: Logger;
  /**
   * Tests only: called with the database once it is open (and its format checked), before the repository reads or writes it, so
   * a test can wrap the real LevelDB (e.g. make its writes fail on demand). Unset, it costs nothing.
   */
  instrument?: (db: LevelDatabase) => void;
}

export type { LevelDatabase };
type Db = LevelDatabase;
type Snapshot = AbstractSnapshot;

/** The durable repository: LevelDB, msgpack values, one atomic batch per group of transitions. */
export class LevelRepository implements SessionRepository {
  readonly #location: string;
  readonly #sync: boolean;
  readonly #syncIntervalMs: number;
  readonly #limits: QueueLimits;
  readonly #retainedLimits: RetainedLimits;
  readonly #log: Logger | undefined;
  readonly #instrument: ((db: Db) => void) | undefined;
  #syncTimer: NodeJS.Timeout | undefined;
  #db: Db | undefined;
  #writer: GroupCommitWriter | undefined;
  /** Every stored session's queue as this run knows it (its next seq); also the set of sessions that exist. */
  readonly #queues = new Map<string, SessionQueue>();
  #nextMessageId = 1;

  constructor(options: LevelRepositoryOptions) {
    this.#location = options.location;
    this.#sync = options.sync ?? true;
    this.#syncIntervalMs = options.syncIntervalMs ?? 0;
    this.#limits = options.limits ?? DEFAULT_QUEUE_LIMITS;
    this.#retainedLimits = options.retainedLimits ?? DEFAULT_RETAINED_LIMITS;
    this.#log = options.log;
    this.#instrument = options.instrument;
    // LevelDB admits one handle: while the broker runs, broker-admin reads through this one.
    this.onDisk = { location: this.#location, inspector: () => new LevelInspector(this.#open()) };
  }

  /** The store lives in a directory; broker-admin can inspect it while the broker runs. */
  readonly onDisk: OnDiskStore;

  async open(): Promise<void> {
    const db = await openLevelStore(this.#location, { purpose: 'broker' });
    this.#instrument?.(db);
    try {
      await this.#loadCounters(db);
    } catch (error) {
      await db.close();
      throw error;
    }
    this.#db = db;
    this.#writer = new GroupCommitWriter(db, {
      sync: this.#sync,
      location: this.#location,
      // Every publish and every completion reads and writes its session's queue counts, a delivery
      // to a connected session its DUP mark, and every completion of a shared body's entry the
      // body's reference count.
      keepCommitted: (key) => keys.isQueueStatsKey(key) || keys.isDupMarkKey(key) || keys.isRefCountKey(key),
      ...(this.#log ? { log: this.#log } : {}),
    });
    if (!this.#sync && this.#syncIntervalMs > 0) this.#startPeriodicSync(this.#writer);
  }

  /** A tiny fsynced batch every interval makes every write before it durable (LevelDB has one log). */
  #startPeriodicSync(writer: GroupCommitWriter): void {
    let synced = writer.submitted;
    this.#syncTimer = setInterval(() => {
      if (writer.submitted === synced) return;
      synced = writer.submitted + 1;
      writer.submit({ sync: true, prepare: (batch) => batch.put(SYNC_MARK_KEY, Date.now()) }).catch(() => {
        // A failed sync is retried at the next tick; the failure itself reaches the next transition.
        synced = -1;
      });
    }, this.#syncIntervalMs);
    this.#syncTimer.unref();
  }

  async close(): Promise<void> {
    const db = this.#db;
    if (!db) return;
    clearInterval(this.#syncTimer);
    await this.#writer?.close();
    this.#db = undefined;
    this.#writer = undefined;
    this.#queues.clear();
    await flushLog(db);
    await db.close();
  }

  async loadSessions(): Promise<StoredSession[]> {
    const db = this.#open();
    const sessions = new Map<string, StoredSession>();
    for await (const [key, value] of db.iterator(keys.sessions())) {
      const clientId = keys.clientIdOfSession(key);
      const { c, l, u, e } = decode(value, key, isSessionValue);
      sessions.set(clientId, {
        clientId,
        subscriptions: [],
        lastSeen: l ?? c,
        ...(u === undefined ? {} : { owner: u }),
        ...(e === undefined ? {} : { expiry: e }),
      });
    }
    for await (const [key, value] of db.iterator(keys.allSubscriptions())) {
      const [clientId, filter] = keys.splitSubscription(key);
      sessions.get(clientId)?.subscriptions.push(subscriptionOfValue(filter, decode(value, key, isSubscriptionValue)));
    }
    return [...sessions.values()];
  }

  async loadRetainedIndex(): Promise<RetainedEntry[]> {
    const db = this.#open();
    const entries: RetainedEntry[] = [];
    // The index records sit apart from the payloads (t\0 after r\0): this reads no payload.
    for await (const [key, value] of db.iterator(keys.allRetainedIndex())) {
      const { o, z } = decode(value, key, isRetainedIndexValue);
      entries.push({ topic: keys.topicOfRetainedIndexKey(key), qos: o, size: z });
    }
    return entries;
  }

  async readRetained(topics: readonly string[]): Promise<RetainedRead[]> {
    const db = this.#open();
    if (topics.length === 0) return [];
    const found = await db.getMany(topics.map((topic) => keys.retained(topic)));
    return topics.map((topic, index) => {
      const bytes = found[index];
      if (bytes === undefined) return undefined;
      try {
        const { p, o, x } = decode(bytes, keys.retained(topic), isRetainedValue);
        return { topic, payload: toBuffer(p), qos: o, ...(x === undefined ? {} : { properties: propertiesOf(x) }) };
      } catch (error) {
        // One damaged record must not keep the others from a subscriber: it is handed back as what it is.
        if (error instanceof BrokerError && error.code === ErrorCodes.STORE_CORRUPT_RECORD) return error;
        throw error;
      }
    });
  }

  async retainedStats(): Promise<RetainedStats> {
    const db = this.#open();
    const bytes = await db.get(RETAINED_TOTALS_KEY);
    return bytes === undefined ? emptyRetainedStats() : retainedStatsOf(decode(bytes, RETAINED_TOTALS_KEY, isRetainedTotalsValue));
  }

  async readOutbound(clientId: string, afterSeq: number, limit: number, maxBytes = Infinity): Promise<OutboundEntry[]> {
    const db = this.#open();
    // Taken before the snapshot: should the session be destroyed and made again meanwhile, the
    // entries read are not the new queue's, and their handles must not be trusted by it.
    const queue = this.#queues.get(clientId);
    // One snapshot for all reads, so the queue, the DUP mark and the releases agree.
    const snapshot = db.snapshot();
    try {
      return await this.#readOutbound(db, snapshot, clientId, queue, afterSeq, limit, maxBytes);
    } finally {
      await snapshot.close();
    }
  }

  async #readOutbound(
    db: Db,
    snapshot: Snapshot,
    clientId: string,
    queue: SessionQueue | undefined,
    afterSeq: number,
    limit: number,
    maxBytes: number,
  ): Promise<OutboundEntry[]> {
    if (limit <= 0) return [];
    const seqs: number[] = [];
    const entryKeys: string[] = [];
    const values: QueueEntryValue[] = [];
    const iterator = db.iterator({ ...keys.queueAfter(clientId, afterSeq), limit, snapshot, highWaterMarkBytes: readAheadBytes(limit, maxBytes) });
    try {
      let bytes = 0;
      while (seqs.length < limit && bytes < maxBytes) {
        // classic-level reserves room for as many entries as asked for, whether or not they come.
        const rows = await iterator.nextv(Math.min(limit - seqs.length, READ_CHUNK));
        if (rows.length === 0) break;
        for (const [key, value] of rows) {
          const entry = decodeQueueEntry(value, key);
          seqs.push(keys.seqOfQueueKey(key));
          entryKeys.push(key);
          values.push(entry);
          bytes += entry.m === undefined ? entry.p!.length : entry.z!;
          if (bytes >= maxBytes) break;
        }
      }
    } finally {
      await iterator.close();
    }
    if (seqs.length === 0) return [];
    // A point read is cheaper on the main thread than a round trip to the thread pool.
    const markBytes = db.getSync(keys.dupMark(clientId), { snapshot });
    const marks = storedMarks(markBytes, clientId);
    // Entries released with a record of their own (QoS2 after PUBREC, above the released-through
    // mark) are few: read their range rather than probe every seq.
    const releases = new Map<number, ReleaseValue>();
    const releaseRange = { gt: keys.release(clientId, afterSeq), lte: keys.release(clientId, seqs[seqs.length - 1]!), snapshot };
    for await (const [key, value] of db.iterator(releaseRange)) {
      releases.set(keys.seqOfQueueKey(key), decode(value, key, isReleaseValue));
    }
    const bodyIds: number[] = [];
    for (const value of values) if (value.m !== undefined) bodyIds.push(value.m);
    const bodies = new Map<number, Message>();
    if (bodyIds.length > 0) {
      const found = await db.getMany(
        bodyIds.map((id) => keys.body(id)),
        { snapshot },
      );
      bodyIds.forEach((id, index) => {
        const bytes = found[index];
        if (bytes === undefined) {
          throw new BrokerError(ErrorCodes.STORE_CORRUPT_RECORD, `queue of ${clientId} references missing message ${id}`);
        }
        bodies.set(id, bodyMessage(decode(bytes, keys.body(id), isBodyValue)));
      });
    }
    // One per body, as publish hands out one for all the entries it writes.
    const sharedBodies = new Map<number, SharedBody>();
    const sharedBodyOf = (id: number): SharedBody => {
      let body = sharedBodies.get(id);
      if (body === undefined) sharedBodies.set(id, (body = new SharedBody(id)));
      return body;
    };
    return values.map((value, index) => {
      const seq = seqs[index]!;
      const release = releases.get(seq);
      const message = value.m === undefined ? inlineMessage(value) : bodies.get(value.m)!;
      const entry: OutboundEntry = { seq, message, qos: value.q, retain: value.r, state: outboundStateOf(seq, value.q, marks, release) };
      if (value.s !== undefined) entry.subscriptionIds = value.s;
      if (value.g !== undefined) entry.shared = value.g;
      if (release) entry.packetId = release.i;
      // Completed from this without a read (see HeldEntry).
      if (queue !== undefined) {
        const body = value.m === undefined ? undefined : sharedBodyOf(value.m);
        const held = new HeldEntry(queue, entryKeys[index]!, value.m === undefined ? message.payload.length : value.z!, value.q, body);
        held.releaseRecord = release !== undefined;
        entry.stored = held;
      }
      return entry;
    });
  }

  async loadInbound(clientId: string): Promise<number[]> {
    const db = this.#open();
    const ids: number[] = [];
    for await (const key of db.keys(keys.inbounds(clientId))) ids.push(keys.packetIdOfInboundKey(key));
    return ids;
  }

  async createSession(clientId: string, owner?: string, expiry?: number): Promise<void> {
    const writer = this.#openWriter();
    const created = !this.#queues.has(clientId);
    if (created) this.#queues.set(clientId, new SessionQueue(clientId, 1));
    try {
      await writer.submit({
        prepare: (batch) => {
          if (batch.get(keys.session(clientId), isSessionValue) === undefined) {
            const now = Date.now();
            const value: SessionValue = { c: now, l: now };
            if (owner !== undefined) value.u = owner;
            if (expiry !== undefined) value.e = expiry;
            batch.put(keys.session(clientId), value);
          }
        },
      });
    } catch (error) {
      // Not stored: the session does not exist (publish, raiseDupMark must not take it for one).
      if (created) this.#queues.delete(clientId);
      throw error;
    }
  }

  async touchSession(clientId: string, expiry?: number): Promise<void> {
    await this.#openWriter().submit({
      prepare: (batch) => {
        const stored = batch.get(keys.session(clientId), isSessionValue);
        if (stored === undefined) return;
        const { e: _previous, ...kept } = stored;
        const value: SessionValue = { ...kept, l: seenNow(stored) };
        if (expiry !== undefined) value.e = expiry;
        batch.put(keys.session(clientId), value);
      },
    });
  }

  async sessionInfo(clientId: string): Promise<SessionInfo | undefined> {
    const db = this.#open();
    const key = keys.session(clientId);
    const bytes = await db.get(key);
    if (bytes === undefined) return undefined;
    const { c, l, u, e } = decode(bytes, key, isSessionValue);
    // Records written before last-seen was stored have none: the creation is the last sighting known.
    return { createdAt: c, lastSeen: l ?? c, ...(u === undefined ? {} : { owner: u }), ...(e === undefined ? {} : { expiry: e }) };
  }

  async destroySession(clientId: string): Promise<void> {
    const writer = this.#openWriter();
    const queue = this.#queues.get(clientId);
    this.#queues.delete(clientId);
    if (queue !== undefined) queue.destroyed = true;
    try {
      await writer.submit({
        exclusive: true,
        prepare: async (batch) => {
          batch.del(keys.session(clientId));
          batch.del(keys.dupMark(clientId));
          batch.del(keys.queueStats(clientId));
          for (const key of await batch.keysIn(keys.subscriptions(clientId))) batch.del(key);
          for (const key of await batch.keysIn(keys.inbounds(clientId))) batch.del(key);
          for (const key of await batch.keysIn(keys.releases(clientId))) batch.del(key);
          for (const key of await batch.keysIn(keys.queue(clientId))) removeQueueEntry(batch, undefined, key);
        },
      });
    } catch (error) {
      // Not deleted: the session is still stored, with seqs continuing where they were (and the
      // entries handed out still there: the same SessionQueue, so their handles hold again).
      if (queue !== undefined && !this.#queues.has(clientId)) {
        queue.destroyed = false;
        this.#queues.set(clientId, queue);
      }
      throw error;
    }
  }

  async subscribe(clientId: string, subscriptions: Subscription[]): Promise<void> {
    const writer = this.#openWriter();
    this.#requireSession(clientId);
    await writer.submit({
      prepare: (batch) => {
        for (const subscription of subscriptions) {
          batch.put(keys.subscription(clientId, subscription.filter), subscriptionValue(subscription));
        }
      },
    });
  }

  async unsubscribe(clientId: string, filters: string[]): Promise<void> {
    const writer = this.#openWriter();
    this.#requireSession(clientId);
    await writer.submit({
      prepare: (batch) => {
        for (const filter of filters) batch.del(keys.subscription(clientId, filter));
      },
    });
  }

  async publish(transition: PublishTransition): Promise<PublishResult> {
    const writer = this.#openWriter();
    const { message, deliveries, retained, inbound, handOver } = transition;
    // Everything is checked before anything is counted: a transition lands whole or not at all.
    if (deliveries.length > 1 && new Set(deliveries.map(({ clientId }) => clientId)).size !== deliveries.length) {
      throw new Error('publish delivers twice to one session');
    }
    for (const { clientId } of deliveries) this.#requireSession(clientId);
    if (inbound) this.#requireSession(inbound.clientId);
    // Seqs and the message id are taken now, synchronously, so commit order is seq order. A
    // delivery refused for a full queue leaves a gap in that session's seqs, nothing more.
    const size = message.payload.length;
    const places = deliveries.map((delivery) => new Place(delivery, this.#requireSession(delivery.clientId)));
    const sharedBody = deliveries.length > 1 ? new SharedBody(this.#nextMessageId++) : undefined;
    const messageId = sharedBody?.id ?? 0;
    const properties = message.properties && propertiesValue(message.properties);
    let admitted: Place[] = [];
    let retainedRefused = false;
    await writer.submit({
      prepare: (batch) => {
        // Handed over from another session's entry: moved only if that entry is still there.
        if (handOver && !this.#takeHandedOver(batch, handOver)) return;
        // Queue limits are decided here, where transitions are applied in submission order and a
        // batch that fails to write leaves the stored counts as they were.
        admitted = places.filter((place) => this.#admit(batch, place, size, place.delivery.limits));
        const bodyShared = admitted.length > 1;
        if (bodyShared) {
          const body: BodyValue = { t: message.topic, p: message.payload, o: message.qos };
          if (properties) body.x = properties;
          batch.put(keys.body(messageId), body);
          batch.put(sharedBody!.countKey, admitted.length);
        }
        for (const { delivery, seq, key, queue } of admitted) {
          const { qos, retain, raiseDupMark, subscriptionIds, shared } = delivery;
          const entry: QueueEntryValue = bodyShared
            ? { q: qos, r: retain, m: messageId, z: size }
            : { q: qos, r: retain, t: message.topic, p: message.payload, o: message.qos };
          if (properties && !bodyShared) entry.x = properties;
          if (subscriptionIds) entry.s = subscriptionIds;
          if (shared) entry.g = shared;
          batch.put(key, entry);
          if (raiseDupMark) writeDupMark(batch, queue.dupMarkKey, seq, false);
        }
        // The retained limits too, for the same reasons.
        if (retained === 'set') retainedRefused = !setRetained(batch, message, this.#retainedLimits);
        else if (retained === 'clear') clearRetained(batch, message.topic);
        if (inbound) batch.put(keys.inbound(inbound.clientId, inbound.packetId), { a: Date.now() });
      },
    });
    // Completing an entry needs no read then (see HeldEntry).
    const body = admitted.length > 1 ? sharedBody : undefined;
    const result: PublishResult = new Map();
    for (const { delivery, seq, queue, key } of admitted) {
      delivery.stored = new HeldEntry(queue, key, size, delivery.qos, body);
      result.set(delivery.clientId, seq);
    }
    if (retainedRefused) result.retainedRefused = true;
    return result;
  }

  async settled(): Promise<void> {
    // A job that writes nothing: it resolves once every job before it has (group commit keeps order).
    await this.#openWriter().submit({ prepare: () => undefined });
  }

  async raiseDupMark(clientId: string, throughSeq: number): Promise<void> {
    await this.#storeDupMark(clientId, throughSeq, false);
  }

  async setDupMark(clientId: string, throughSeq: number): Promise<void> {
    await this.#storeDupMark(clientId, throughSeq, true);
  }

  async #storeDupMark(clientId: string, throughSeq: number, exact: boolean): Promise<void> {
    const writer = this.#openWriter();
    const queue = this.#queues.get(clientId);
    if (queue === undefined) return;
    // Never past the last seq given: a later enqueue must not read back as 'dup'.
    const through = Math.max(0, Math.min(throughSeq, queue.nextSeq - 1));
    await writer.submit({ prepare: (batch) => writeDupMark(batch, queue.dupMarkKey, through, exact) });
  }

  async markReleased(clientId: string, releases: Release[], releasedThrough = 0): Promise<void> {
    await this.#openWriter().submit({
      prepare: (batch) => {
        const through = this.#raiseReleasedThrough(batch, clientId, releases, releasedThrough);
        for (const { entry, packetId } of releases) {
          const seq = typeof entry === 'number' ? entry : entry.seq;
          if (seq <= through) continue;
          // An entry completed or destroyed meanwhile must not get a release record without an entry.
          const key = keys.queueEntry(clientId, seq);
          const held = typeof entry === 'number' ? undefined : entry.stored;
          const trusted = held instanceof HeldEntry && held.key === key;
          const standing = trusted ? this.#standing(batch, clientId, held) : 'unknown';
          if (standing === 'gone' || (standing === 'unknown' && !batch.has(key))) continue;
          batch.put(keys.release(clientId, seq), { s: 2, i: packetId } satisfies ReleaseValue);
          if (trusted) {
            held.releaseRecord = true;
          } else {
            // No queue: its session is being destroyed, which deletes the record with the rest.
            const queue = this.#queues.get(clientId);
            if (queue !== undefined) queue.releasedBySeq = true;
          }
        }
      },
    });
  }

  /**
   * Raises the session's released-through mark to `releasedThrough` where the caller's word for it
   * can be trusted (markReleased), and returns the mark; 0 when no release is under it. The word
   * holds for the session the caller's entries came from, so every release must be a handle of the
   * session's queue as it is now (not one destroyed meanwhile, whose seqs a new session may reuse).
   * The mark never passes the DUP mark, which every PUBREC'd entry is under: seqs given after a
   * restart start above both.
   */
  #raiseReleasedThrough(batch: BatchBuilder, clientId: string, releases: Release[], releasedThrough: number): number {
    if (releasedThrough <= 0) return 0;
    const queue = this.#queues.get(clientId);
    if (queue === undefined || queue.destroyed) return 0;
    for (const { entry } of releases) {
      if (typeof entry === 'number' || !(entry.stored instanceof HeldEntry) || entry.stored.queue !== queue) return 0;
    }
    const stored = batch.get(queue.dupMarkKey, isDupMarkValue);
    if (stored === undefined) return 0;
    const current = stored.r ?? 0;
    const through = Math.min(releasedThrough, stored.s);
    if (through <= current) return current;
    batch.put(queue.dupMarkKey, { s: stored.s, r: through } satisfies DupMarkValue);
    return through;
  }

  /**
   * What the handle `held` tells of its entry, as the batch sees it, without reading the store
   * (about 4 µs a read; for a shared body's entry, a read and a decode, a fifth of a fan-out's CPU):
   * - 'gone': its session was destroyed (or is being destroyed), or this batch removed it. The
   *   seq may already name an entry of a new session of the same client: it must not be read.
   * - 'queued': nothing but its holder can have removed it: not completed through this handle,
   *   handed out of the session's queue as it is now, and no hand-over took entries from that queue.
   * - 'unknown': the caller reads the store by seq.
   * A wrong 'queued' would count an entry out twice, and for a shared body's entry delete the body
   * under the other sessions' entries: every one of these conditions is tested.
   */
  #standing(batch: BatchBuilder, clientId: string, held: HeldEntry): 'queued' | 'gone' | 'unknown' {
    if (held.queue.destroyed || batch.deletes(held.key)) return 'gone';
    return !held.completed && this.#queues.get(clientId) === held.queue && !held.queue.handedOver ? 'queued' : 'unknown';
  }

  /**
   * Removes the entry a message is handed over from (PublishTransition.handOver); false if it is
   * gone. Handles to that queue's entries are not trusted from now on: they may name this one.
   */
  #takeHandedOver(batch: BatchBuilder, { clientId, seq }: { clientId: string; seq: number }): boolean {
    const queue = this.#queues.get(clientId);
    if (queue !== undefined) queue.handedOver = true;
    const key = keys.queueEntry(clientId, seq);
    const entry = removeQueueEntry(batch, clientId, key);
    if (entry === undefined) return false;
    if (entry.q === 2) batch.del(keys.release(clientId, seq));
    return true;
  }

  async complete(clientId: string, ...completions: Completion[]): Promise<void> {
    const held: { seq: number; entry: HeldEntry }[] = [];
    const seqs: number[] = [];
    for (const completion of completions) {
      if (typeof completion === 'number') seqs.push(completion);
      else if (completion.stored instanceof HeldEntry) held.push({ seq: completion.seq, entry: completion.stored });
      else seqs.push(completion.seq);
    }
    await this.#openWriter().submit({
      // Nobody waits on it to act: it shares the next batch that must be written (Job.deferrable).
      deferrable: true,
      prepare: async (batch) => {
        // Decided as the batch is built: what the transitions before this one did counts.
        this.#completeHeld(batch, clientId, held, seqs);
        if (seqs.length > 0) await this.#completeRead(batch, clientId, seqs);
      },
    });
  }

  /**
   * Entries as readOutbound or publish handed them out: deleted and counted out without reading
   * them back, each shared body's count going down; those whose standing is unknown (#standing)
   * go to `unread`, to be read.
   */
  #completeHeld(batch: BatchBuilder, clientId: string, held: { seq: number; entry: HeldEntry }[], unread: number[]): void {
    let count = 0;
    let bytes = 0;
    // The session's queue, as every entry counted out here names it ('queued' standing).
    let queue: SessionQueue | undefined;
    for (const { seq, entry } of held) {
      const standing = this.#standing(batch, clientId, entry);
      if (standing !== 'queued') {
        if (standing === 'unknown') unread.push(seq);
        continue;
      }
      entry.completed = true;
      queue = entry.queue;
      batch.del(entry.key);
      count++;
      bytes += entry.size;
      if (entry.body !== undefined) releaseBody(batch, entry.body);
      // Deleting a missing key still writes: only an entry known to have a release record (most
      // QoS2 entries are released by the mark instead) deletes it.
      if (entry.qos === 2 && (entry.releaseRecord || entry.queue.releasedBySeq)) batch.del(keys.release(clientId, seq));
    }
    if (queue === undefined) return;
    const stats = readStats(batch, queue.statsKey);
    release(stats, bytes, count);
    writeStats(batch, queue.statsKey, stats);
  }

  /** Entries known by seq only, or holding a shared body: read back, then removed. */
  async #completeRead(batch: BatchBuilder, clientId: string, seqs: number[]): Promise<void> {
    // One read per seq, before anything is removed: a seq given twice would otherwise be counted out twice.
    const unique = seqs.length > 1 ? [...new Set(seqs)] : seqs;
    const entryKeys = unique.map((seq) => keys.queueEntry(clientId, seq));
    const entries = await batch.getMany(entryKeys, isQueueEntryValue);
    entries.forEach((entry, index) => {
      if (entry === undefined) return; // completed before: nothing to count twice
      removeQueueEntry(batch, clientId, entryKeys[index]!, entry);
      if (entry.q === 2) batch.del(keys.release(clientId, unique[index]!));
    });
  }

  async releaseInbound(clientId: string, packetId: number): Promise<void> {
    await this.#openWriter().submit({
      prepare: (batch) => batch.del(keys.inbound(clientId, packetId)),
    });
  }

  async clearRetained(topic: string): Promise<void> {
    await this.#openWriter().submit({
      prepare: (batch) => clearRetained(batch, topic),
    });
  }

  async queueStats(clientId: string): Promise<QueueStats | undefined> {
    const db = this.#open();
    if (!this.#queues.has(clientId)) return undefined;
    const bytes = await db.get(keys.queueStats(clientId));
    return bytes === undefined ? emptyQueueStats() : fromStatsValue(decode(bytes, keys.queueStats(clientId), isQueueStatsValue));
  }

  /** Counts a delivery of `size` bytes into the session's queue if its limits allow; counts a drop if not. */
  #admit(batch: BatchBuilder, { queue }: Place, size: number, limits = this.#limits): boolean {
    const stats = readStats(batch, queue.statsKey);
    const admitted = admit(stats, size, limits);
    writeStats(batch, queue.statsKey, stats);
    return admitted;
  }

  #requireSession(clientId: string): SessionQueue {
    const queue = this.#queues.get(clientId);
    if (queue === undefined) {
      throw new BrokerError(ErrorCodes.STORE_UNKNOWN_SESSION, `no stored session for client ${JSON.stringify(clientId)}`);
    }
    return queue;
  }

  async #loadCounters(db: Db): Promise<void> {
    for await (const key of db.keys(keys.sessions())) {
      const clientId = keys.clientIdOfSession(key);
      const [last] = await db.keys({ ...keys.queue(clientId), reverse: true, limit: 1 }).all();
      const markBytes = await db.get(keys.dupMark(clientId));
      const marks = storedMarks(markBytes, clientId);
      const lastSeq = last === undefined ? 0 : keys.seqOfQueueKey(last);
      // Seqs continue above the marks too, or a new entry would read back as 'dup' or 'released'.
      this.#queues.set(clientId, new SessionQueue(clientId, Math.max(lastSeq, marks.dup, marks.releasedThrough) + 1));
    }
    // Decoded once at start so a corrupt count is reported now, not at the first publish.
    for await (const [key, value] of db.iterator(keys.allQueueStats())) decode(value, key, isQueueStatsValue);
    const totals = await db.get(RETAINED_TOTALS_KEY);
    if (totals !== undefined) decode(totals, RETAINED_TOTALS_KEY, isRetainedTotalsValue);
    const [lastBody] = await db.keys({ ...keys.bodies(), reverse: true, limit: 1 }).all();
    this.#nextMessageId = lastBody === undefined ? 1 : keys.messageIdOfBodyKey(lastBody) + 1;
  }

  #open(): Db {
    if (!this.#db) throw new BrokerError(ErrorCodes.STORE_CLOSED, 'the store is not open');
    return this.#db;
  }

  #openWriter(): GroupCommitWriter {
    if (!this.#writer) throw new BrokerError(ErrorCodes.STORE_CLOSED, 'the store is not open');
    return this.#writer;
  }
}

/**
 * Moves what LevelDB's log holds into a table file before a clean close, so the next start has
 * no log to check for damage (store-damage.ts reads all of it) or to replay, which is time before
 * the first CONNACK (bench/results/figures-behind-code.md). CompactRange writes the memtable out
 * before it compacts its range, and this range holds no key. A failure changes nothing: the log
 * is then checked and replayed at the next start, as after a crash.
 */
async function flushLog(db: Db): Promise<void> {
  try {
    await db.compactRange('\u0000', '\u0000');
  } catch {
    // See above.
  }
}

/**
 * How many bytes of keys and values one read of the queue may bring into memory (classic-level's
 * highWaterMarkBytes; with its default, 16 KiB, a window of small messages took a thread pool
 * round trip every few hundred entries). Enough for `limit` entries whose payloads stay under `maxBytes`,
 * with room for keys, topics and encoding; when that is not enough, reading continues.
 */
function readAheadBytes(limit: number, maxBytes: number): number {
  const PER_ENTRY = 256;
  const UNBOUNDED = 4 * 1024 * 1024;
  return Math.min(maxBytes, UNBOUNDED) + Math.min(limit, READ_CHUNK) * PER_ENTRY;
}

/**
 * This run's knowledge of one stored session's queue. A new one for each session made (a session
 * destroyed and made again gets another), so a HeldEntry names the queue it was handed out of.
 */
class SessionQueue {
  /** A hand-over removed entries from this queue: handles to it are no longer trusted (see #standing). */
  handedOver = false;
  /** Its session was destroyed (or is being): every entry handed out of it is gone (see #standing). */
  destroyed = false;
  /** A release record was written for a seq without its handle: completing any QoS2 entry deletes one then. */
  releasedBySeq = false;

  /** The keys of its session's queue counts and DUP mark, built once: every publish to the session reads and writes them. */
  readonly statsKey: string;
  readonly dupMarkKey: string;

  constructor(
    clientId: string,
    public nextSeq: number,
  ) {
    this.statsKey = keys.queueStats(clientId);
    this.dupMarkKey = keys.dupMark(clientId);
  }
}

/** Where a delivery of a publish goes: the next seq of its session's queue, taken as the publish is submitted. */
class Place {
  readonly seq: number;
  readonly key: string;

  constructor(
    readonly delivery: Delivery,
    readonly queue: SessionQueue,
  ) {
    this.seq = queue.nextSeq++;
    this.key = keys.queueEntry(delivery.clientId, this.seq);
  }
}

/**
 * What readOutbound and publish keep with an entry they hand out (OutboundEntry.stored,
 * Delivery.stored): what completing it needs, so that it is not read back while it may be trusted
 * (LevelRepository.#standing): its queue, key, payload size, QoS, and the shared body it refers to.
 */
class HeldEntry {
  /** Set once `complete` removed the entry: a late completion or markReleased with it then reads the store. */
  completed = false;
  /** It has a release record (f\0) of its own, which completing it deletes; under the released-through mark it has none. */
  releaseRecord = false;

  constructor(
    readonly queue: SessionQueue,
    readonly key: string,
    readonly size: number,
    readonly qos: QueueEntryValue['q'],
    /** The shared body; undefined for an entry holding its own copy of the message. */
    readonly body: SharedBody | undefined,
  ) {}
}

/**
 * A shared body as the handles of its entries refer to it: its message id, and the key of its
 * reference count, built once for all of them (a fan-out's every completion releases the body).
 */
class SharedBody {
  readonly countKey: string;

  constructor(readonly id: number) {
    this.countKey = keys.refCount(id);
  }
}

/** Now as a last-seen time: never before the session's creation or its previous last-seen (a clock stepping back). */
function seenNow({ c, l }: SessionValue): number {
  return Math.max(Date.now(), c, l ?? c);
}

/** The DUP and released-through marks of a session, from their record as stored (none: both 0). */
function storedMarks(bytes: Uint8Array | undefined, clientId: string): OutboundMarks {
  return outboundMarksOf(bytes === undefined ? undefined : decode(bytes, keys.dupMark(clientId), isDupMarkValue));
}

/**
 * Stores the DUP mark: raised only, unless `exact`; the released-through mark beside it stays, and
 * the DUP mark never goes under it (no entry still stored there is unsent: it moves nothing).
 */
function writeDupMark(batch: BatchBuilder, dupMarkKey: string, through: number, exact: boolean): void {
  const stored = batch.get(dupMarkKey, isDupMarkValue);
  const current = stored?.s ?? 0;
  const value = Math.max(exact ? through : Math.max(current, through), stored?.r ?? 0);
  if (value === current && !exact) return;
  batch.put(dupMarkKey, stored?.r === undefined ? ({ s: value } satisfies DupMarkValue) : ({ s: value, r: stored.r } satisfies DupMarkValue));
}

/** A session's stored queue counts as the batch sees them (earlier jobs of the batch included). */
function readStats(batch: BatchBuilder, statsKey: string): QueueStats {
  const value = batch.get(statsKey, isQueueStatsValue);
  return value === undefined ? emptyQueueStats() : fromStatsValue(value);
}

function writeStats(batch: BatchBuilder, statsKey: string, stats: QueueStats): void {
  batch.put(statsKey, { m: stats.messages, b: stats.bytes, d: stats.dropped } satisfies QueueStatsValue);
}

function fromStatsValue({ m, b, d }: QueueStatsValue): QueueStats {
  return { messages: m, bytes: b, dropped: d };
}

/**
 * Deletes a queue entry and, when it was the last reference to a shared body, the body too.
 * `clientId` set: the entry also leaves the session's queue counts (a destroy drops them whole).
 */
function removeQueueEntry(
  batch: BatchBuilder,
  clientId: string | undefined,
  key: string,
  entry = batch.get(key, isQueueEntryValue),
): QueueEntryValue | undefined {
  if (entry === undefined) return undefined;
  batch.del(key);
  if (clientId !== undefined) {
    const statsKey = keys.queueStats(clientId);
    const stats = readStats(batch, statsKey);
    release(stats, entry.m === undefined ? entry.p!.length : entry.z!);
    writeStats(batch, statsKey, stats);
  }
  if (entry.m !== undefined) releaseBody(batch, entry.m);
  return entry;
}

/** One queue entry less refers to the shared body: its count, read from the store, goes down; at 0 the body goes. */
function releaseBody(batch: BatchBuilder, body: SharedBody | number): void {
  const { id, countKey } = typeof body === 'number' ? new SharedBody(body) : body;
  const remaining = (batch.get(countKey, isRefCount) ?? 1) - 1;
  if (remaining > 0) {
    batch.put(countKey, remaining);
  } else {
    batch.del(countKey);
    batch.del(keys.body(id));
  }
}
