import { channel } from 'node:diagnostics_channel';
import { performance } from 'node:perf_hooks';
import { BrokerError, ErrorCodes, errorMessage } from '../errors.js';
import type { Logger } from '../logger.js';
import { decodeRecord, encodeRecord } from './codec.js';
import type { BatchOperation as Operation, LevelDatabase as Db } from './level-database.js';
import { isWritten, reopen, WriteFailures } from './write-failures.js';

/**
 * Up to this many keys, `getMany` reads on the main thread: a read in the thread pool costs a
 * round trip that delays the whole batch, and with it every acknowledgement waiting for it. Its
 * one caller reads back the queue entries a session's acknowledgements complete when it cannot
 * trust the handles it handed out (LevelRepository.#standing), entries written or read moments
 * ago (LevelDB's memtable, or cached), so each read costs microseconds. Above this, a read of that
 * many keys would hold the main thread too long: the thread pool takes it.
 */
const SYNC_READ_LIMIT = 1024;

/** Where an overlay entry stands: a value to put (kept decoded until the batch is written) or a delete. */
const DELETED = Symbol('deleted');

/** A key the committed store does not hold, as CommittedValues remembers it. */
const ABSENT = Symbol('absent');

/**
 * At most this many values are kept by CommittedValues; past it, it starts afresh (about 2 MiB at
 * most: a key and a small value each). A broker with more than 8,000 busy persistent sessions
 * reads some of them from the store again, as it did before. Exported for tests.
 */
export const COMMITTED_VALUES = 16_384;

/**
 * The committed values of a few keys that many batches read and write (a session's queue counts,
 * a shared body's reference count), kept decoded by the writer: read from the store once, then
 * taken from here, and set to what each batch that commits wrote. Reading one from LevelDB cost a
 * native call and, once the memtable had been flushed, a search of the level-0 tables: 2 % of a
 * QoS 1 message's time. Only what a committed batch wrote goes in; after a failed write it is
 * emptied (the store decides again). Bounded (COMMITTED_VALUES): forgetting is always safe.
 */
export class CommittedValues {
  readonly #values = new Map<string, unknown>();

  constructor(readonly holds: (key: string) => boolean) {}

  /** How many values it keeps. */
  get size(): number {
    return this.#values.size;
  }

  /** The committed value (ABSENT: no such key), or undefined when not known here. */
  get(key: string): unknown {
    return this.#values.get(key);
  }

  remember(key: string, value: unknown): void {
    this.#set(key, value === undefined ? ABSENT : value);
  }

  /** A batch committed: what it wrote to `keys` (held keys) is what the store now holds. */
  committed(overlay: ReadonlyMap<string, unknown>, keys: Iterable<string>): void {
    for (const key of keys) {
      const value = overlay.get(key);
      if (value === DELETED) this.#values.delete(key);
      else this.#set(key, value);
    }
  }

  #set(key: string, value: unknown): void {
    if (this.#values.size >= COMMITTED_VALUES && !this.#values.has(key)) this.#values.clear();
    this.#values.set(key, value);
  }

  forget(): void {
    this.#values.clear();
  }
}

/**
 * One batch under construction. Reads see the committed store plus everything earlier jobs of the
 * same batch wrote, so a job may read-modify-write (reference counts, queue counts) without racing
 * other jobs: only one batch is ever being built or written at a time. Values stay decoded until
 * the batch is written, so a counter updated by a thousand jobs is encoded once, not a thousand
 * times.
 */
export class BatchBuilder {
  readonly #db: Db;
  readonly #committed: CommittedValues | undefined;
  /** Every key the batch writes, with its last value. */
  readonly #overlay = new Map<string, unknown>();
  /** The keys it writes whose committed values are kept (CommittedValues.holds). */
  readonly #held = new Set<string>();

  constructor(db: Db, committed?: CommittedValues) {
    this.#db = db;
    this.#committed = committed;
  }

  /** `value` must not be changed after this: it is encoded when the batch is written. */
  put(key: string, value: unknown): void {
    this.#overlay.set(key, value);
    if (this.#committed?.holds(key)) this.#held.add(key);
  }

  del(key: string): void {
    this.#overlay.set(key, DELETED);
    if (this.#committed?.holds(key)) this.#held.add(key);
  }

  /** The batch is written: the committed values it changed are what it wrote. */
  committed(): void {
    if (this.#held.size > 0) this.#committed?.committed(this.#overlay, this.#held);
  }

  /** One operation per key, its last value: a counter updated by many jobs is written once. */
  get operations(): Operation[] {
    const operations: Operation[] = [];
    for (const [key, value] of this.#overlay) {
      operations.push(value === DELETED ? { type: 'del', key } : { type: 'put', key, value: encodeRecord(key, value) });
    }
    return operations;
  }

  /** Whether an earlier job of this batch deleted `key`. */
  deletes(key: string): boolean {
    return this.#overlay.get(key) === DELETED;
  }

  /** Whether `key` holds a value, seen as `get` sees it, without decoding that value. */
  has(key: string): boolean {
    const pending = this.#overlay.get(key);
    if (pending !== undefined) return pending !== DELETED;
    return this.#db.getSync(key) !== undefined;
  }

  get<T>(key: string, isValid: (value: unknown) => value is T): T | undefined {
    const pending = this.#overlay.get(key);
    if (pending === DELETED) return undefined;
    // Put by an earlier job of this batch: the writer's own value, checked when it was read.
    if (pending !== undefined) return pending as T;
    const committed = this.#committed;
    if (committed === undefined || !committed.holds(key)) return this.#read(key, isValid);
    const known = committed.get(key);
    if (known !== undefined) return known === ABSENT ? undefined : (known as T);
    // No batch commits while this one is built: what the store holds now is the committed value.
    const value = this.#read(key, isValid);
    committed.remember(key, value);
    return value;
  }

  #read<T>(key: string, isValid: (value: unknown) => value is T): T | undefined {
    const bytes = this.#db.getSync(key);
    return bytes === undefined ? undefined : decodeRecord(bytes, key, isValid);
  }

  /**
   * `get` for many keys at once: for those the batch has not written, one read of the store, done
   * off the main thread when there are many. Like `get`, it sees earlier jobs of the batch; no
   * batch can commit while this one is being built, so the store does not change under it.
   */
  async getMany<T>(keys: readonly string[], isValid: (value: unknown) => value is T): Promise<(T | undefined)[]> {
    const values: (T | undefined)[] = new Array(keys.length);
    const unread: number[] = [];
    keys.forEach((key, index) => {
      const pending = this.#overlay.get(key);
      if (pending !== undefined) {
        values[index] = pending === DELETED ? undefined : (pending as T);
        return;
      }
      unread.push(index);
    });
    if (unread.length === 0) return values;
    if (unread.length <= SYNC_READ_LIMIT) {
      for (const index of unread) values[index] = this.get(keys[index]!, isValid);
      return values;
    }
    const found = await this.#db.getMany(unread.map((index) => keys[index]!));
    unread.forEach((index, at) => {
      const bytes = found[at];
      values[index] = bytes === undefined ? undefined : decodeRecord(bytes, keys[index]!, isValid);
    });
    return values;
  }

  /** Committed keys in a range (not the overlay): only exclusive jobs, which run in a batch of their own, use it. */
  async keysIn(range: { gt: string; lt: string }): Promise<string[]> {
    return this.#db.keys(range).all();
  }
}

export interface Job {
  /** Adds the job's writes to the batch. Must only read through the builder, so it can be re-run. */
  prepare(batch: BatchBuilder): void | Promise<void>;
  /** Runs in a batch of its own, after everything submitted before it is committed. */
  exclusive?: boolean;
  /** fsync this job's batch even when the writer does not sync every batch. */
  sync?: boolean;
  /**
   * Needs no batch of its own: it waits for the next job that does and shares its batch (and
   * fsync), or for RIDE_WAIT_MS, whichever comes first. For transitions nobody acts on: a
   * completion stored behind its PUBACK (see OutboundFlow), which lost to a crash only means a
   * redelivery. Saturated QoS 1 traffic made every second batch one of completions alone, each
   * with an fsync of its own.
   */
  deferrable?: boolean;
}

/**
 * How long a deferrable job waits for a batch to ride in. Under load one comes within a fraction
 * of this; an idle broker writes the job after it, in a batch of its own as before.
 */
const RIDE_WAIT_MS = 10;

/**
 * One batch written, as the broker's figures ($SYS, /metrics) see it. Published on
 * `commitChannel`, a diagnostics channel: the writer lives inside the repository, which the
 * broker does not reach into, and a channel costs the writer nothing while no one listens.
 */
export interface CommitRecord {
  /** The store's directory (the writer's `location`): a listener keeps the records of its own store. */
  location: string | undefined;
  /** Transitions the batch carried. */
  jobs: number;
  /** The batch was fsynced. */
  synced: boolean;
  /** The write, its fsync included, in seconds. */
  seconds: number;
  /** The write failed (its transitions may still have been found written after the reopen). */
  failed: boolean;
}

export const commitChannel = channel('durable-mqtt-broker:store-commit');

interface Queued {
  job: Job;
  resolve: () => void;
  reject: (error: unknown) => void;
}

/**
 * Group commit: transitions submitted while a batch is being written wait and then share the next
 * batch, so N concurrent acknowledgements cost one fsync instead of N. Submission order is commit
 * order, and promises resolve in that order.
 */
export class GroupCommitWriter {
  readonly #db: Db;
  readonly #sync: boolean;
  readonly #location: string | undefined;
  #pending: Queued[] = [];
  /** How many of #pending are not deferrable: while there is one, the pending jobs are written. */
  #urgent = 0;
  /** The deferrable jobs waited long enough (or the writer is closing): they are written now. */
  #flushing = false;
  #rideTimer: NodeJS.Timeout | undefined;
  #draining: Promise<void> | undefined;
  #closed = false;
  #submitted = 0;
  readonly #failures: WriteFailures;
  /** A write failed and reopening the store after it failed too (see #afterFailedWrite). */
  #reopenFirst = false;

  /** See CommittedValues; none unless the owner names keys to keep. */
  readonly #committed: CommittedValues | undefined;

  constructor(db: Db, options: { sync: boolean; log?: Logger; location?: string; keepCommitted?: (key: string) => boolean }) {
    this.#db = db;
    this.#sync = options.sync;
    this.#location = options.location;
    this.#failures = new WriteFailures(options);
    this.#committed = options.keepCommitted && new CommittedValues(options.keepCommitted);
  }

  submit(job: Job): Promise<void> {
    if (this.#closed) {
      return Promise.reject(new BrokerError(ErrorCodes.STORE_CLOSED, 'the store is closed'));
    }
    this.#submitted++;
    return new Promise<void>((resolve, reject) => {
      this.#pending.push({ job, resolve, reject });
      if (job.deferrable !== true) this.#urgent++;
      this.#schedule();
    });
  }

  /**
   * Starts writing if something pending must be, or else lets deferrable jobs wait for a ride (see
   * Job.deferrable). The timer is not cleared when a ride comes: at ten thousand messages a
   * second, a timer set and cleared per batch cost more than one left to fire for nothing.
   */
  #schedule(): void {
    if (this.#draining) return; // the running drain takes whatever is pending as it goes
    if (this.#urgent > 0 || this.#flushing) {
      this.#draining = this.#drain();
    } else if (this.#pending.length > 0) {
      this.#rideTimer ??= setTimeout(() => {
        this.#rideTimer = undefined;
        // Whatever waits now has waited at most this long; a drain under way takes it anyway.
        if (this.#pending.length === 0 || this.#draining) return;
        this.#flushing = true;
        this.#schedule();
      }, RIDE_WAIT_MS);
    }
  }

  /** How many jobs were ever submitted: tells a periodic sync whether anything was written. */
  get submitted(): number {
    return this.#submitted;
  }

  /** Stops accepting jobs and waits until every submitted one (deferrable ones too) is settled. */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#rideTimer);
    this.#rideTimer = undefined;
    this.#flushing = true;
    this.#schedule();
    await this.#draining;
  }

  async #drain(): Promise<void> {
    try {
      // Let the submitting tick finish so that every transition it submits joins the first batch.
      await Promise.resolve();
      while (this.#pending.length > 0 && (this.#urgent > 0 || this.#flushing)) {
        const jobs = this.#takeBatch();
        for (const queued of jobs) if (queued.job.deferrable !== true) this.#urgent--;
        if (this.#reopenFirst && !(await this.#reopen(jobs))) continue;
        const batch = await this.#build(jobs);
        if (jobs.length === 0) continue;
        const operations = batch.operations;
        const sync = this.#sync || jobs.some((queued) => queued.job.sync === true);
        // A batch with nothing to write (its transitions changed nothing) is not written, nor fsynced.
        const synced = sync && operations.length > 0;
        const started = commitChannel.hasSubscribers ? performance.now() : 0;
        try {
          await writeBatch(this.#db, operations, sync);
          this.#observe(started, jobs.length, synced, false);
          batch.committed();
        } catch (cause) {
          this.#observe(started, jobs.length, synced, true);
          // Whether the batch is in is the store's to say now (and after a reopen, of every batch).
          this.#committed?.forget();
          if (!(await this.#afterFailedWrite(jobs, operations, cause))) continue;
        }
        this.#failures.succeeded();
        for (const queued of jobs) queued.resolve();
      }
    } finally {
      // Cleared in the same tick the loop sees an empty queue: a job submitted by a callback of
      // the last batch must start a new drain, not wait for one that is ending.
      this.#draining = undefined;
      if (this.#pending.length === 0) this.#flushing = false;
      // Deferrable jobs left behind wait for a ride.
      this.#schedule();
    }
  }

  #observe(started: number, jobs: number, synced: boolean, failed: boolean): void {
    if (!commitChannel.hasSubscribers || started === 0) return;
    const record: CommitRecord = { location: this.#location, jobs, synced, seconds: (performance.now() - started) / 1000, failed };
    commitChannel.publish(record);
  }

  /**
   * A batch whose write failed may still be in LevelDB's log, whole (a failed fsync) or in part (a
   * failed append, as on a full disk). The next recovery takes a partial record for the end of the
   * log and drops every record behind it without a word: batches written once space was freed
   * were gone after a restart, with a real full disk. LevelDB also refuses every write for good
   * after a failed fsync or compaction. So the store is reopened at once, which recovers the log
   * while nothing follows the failed batch and starts a fresh one; then the store itself says
   * whether the batch is in. true: it is, and its transitions stand. That is durable even after a
   * failed fsync only because recovery writes the recovered log into a table file that LevelDB
   * syncs (with the manifest naming it) before open returns; an option that keeps the old log
   * instead (reuse_logs) would break it.
   */
  async #afterFailedWrite(jobs: Queued[], operations: Operation[], cause: unknown): Promise<boolean> {
    let written: boolean;
    try {
      await reopen(this.#db);
      written = await isWritten(this.#db, operations);
    } catch {
      // Still unusable: nothing is written until a reopen succeeds.
      this.#reopenFirst = true;
      this.#refuse(jobs, cause);
      return false;
    }
    if (written) {
      this.#failures.writtenAfterAll(cause, jobs.length);
      return true;
    }
    this.#refuse(jobs, cause);
    return false;
  }

  /** The reopen after a failed write failed too: each batch tries again before it is built. */
  async #reopen(jobs: Queued[]): Promise<boolean> {
    try {
      await reopen(this.#db);
      this.#reopenFirst = false;
      return true;
    } catch (cause) {
      this.#refuse(jobs, cause, 'the store could not be reopened after a failed write');
      return false;
    }
  }

  /** Nothing of the batch is stored: each transition's caller hears so, the operator once (WriteFailures). */
  #refuse(jobs: Queued[], cause: unknown, what = 'store write failed'): void {
    // abstract-level wraps the reason of a failed open: say the reason.
    const reason = [cause, (cause as { cause?: unknown }).cause].filter((error) => error instanceof Error).map(errorMessage).join(': ');
    const error = new BrokerError(ErrorCodes.STORE_WRITE_FAILED, `${what}: ${reason}`, { cause });
    this.#failures.failed(error, jobs.length);
    for (const queued of jobs) queued.reject(error);
  }

  #takeBatch(): Queued[] {
    const first = this.#pending[0];
    if (first?.job.exclusive) return this.#pending.splice(0, 1);
    const end = this.#pending.findIndex((queued) => queued.job.exclusive);
    return this.#pending.splice(0, end === -1 ? this.#pending.length : end);
  }

  /** Builds the batch; a job whose prepare throws is rejected alone and the batch rebuilt without it. */
  async #build(jobs: Queued[]): Promise<BatchBuilder> {
    for (;;) {
      const batch = new BatchBuilder(this.#db, this.#committed);
      let failed = -1;
      let failure: unknown;
      for (let index = 0; index < jobs.length; index++) {
        try {
          // Synchronous prepares run back to back: an await per job would let unrelated work in between.
          const preparing = jobs[index]!.job.prepare(batch);
          if (preparing) await preparing;
        } catch (error) {
          failed = index;
          failure = error;
          break;
        }
      }
      if (failed === -1) return batch;
      jobs.splice(failed, 1)[0]!.reject(failure);
    }
  }
}

/** classic-level's native batch, as its ChainedBatch gives it to abstract-level: one binding call per operation. */
interface NativeBatch {
  _put(key: string, value: Uint8Array): void;
  _del(key: string): void;
  _write(options: { sync: boolean }): Promise<void>;
  close(): Promise<void>;
}

interface BatchBackend {
  _chainedBatch(): NativeBatch;
}

/**
 * Writes a batch through classic-level's implementor methods, below abstract-level's public
 * `batch()`. That copies and re-validates every operation, re-encoding keys and values that are
 * already strings and bytes; and handing the binding an array of operations makes it read each
 * one's properties back across N-API, costlier per operation than adding them one call each
 * (both measured: bench/results/figures-behind-code.md). Our keys are strings and our values
 * Uint8Arrays, the two forms the binding takes as they are; no hooks or write events are used on
 * this database. These are internals: classic-level is pinned to an exact version in
 * package.json, and test/deps/dependency-internals.test.ts states what this relies on.
 */
async function writeBatch(db: Db, operations: Operation[], sync: boolean): Promise<void> {
  if (db.status !== 'open') throw new BrokerError(ErrorCodes.STORE_CLOSED, `the store is ${db.status}`);
  if (operations.length === 0) return;
  const batch = (db as unknown as BatchBackend)._chainedBatch();
  try {
    for (const operation of operations) {
      if (operation.type === 'put') batch._put(operation.key, operation.value);
      else batch._del(operation.key);
    }
    await batch._write({ sync });
  } finally {
    // Detaches it from the database, which tracks open batches until they close. Not awaited: it
    // only runs abstract-level's bookkeeping, and the transitions need not wait for that.
    void batch.close();
  }
}
