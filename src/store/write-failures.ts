import { errorMessage } from '../errors.js';
import { silentLogger, type Logger } from '../logger.js';
import type { BatchOperation as Operation, LevelDatabase as Db } from './level-database.js';

/** While writes keep failing, the log is reminded at most this often. */
const REMINDER_MS = 60_000;

/**
 * One episode of failing store writes (a full disk, an I/O error), from the first failed batch to
 * the next batch that is written. The operator hears of it once when it starts, every minute
 * while it lasts, and once when it ends: a full disk under a thousand clients must not turn into
 * a thousand log lines a second.
 */
export class WriteFailures {
  readonly #log: Logger;
  readonly #location: string;
  #since: number | undefined;
  #batches = 0;
  #transitions = 0;
  #remindedAt = 0;

  constructor(options: { log?: Logger; location?: string }) {
    this.#log = options.log ?? silentLogger;
    this.#location = options.location ?? 'the store';
  }

  /** A batch of `transitions` was refused because of `cause` (its write, or the reopen before it). */
  failed(cause: unknown, transitions: number): void {
    const now = Date.now();
    this.#batches++;
    this.#transitions += transitions;
    if (this.#since === undefined) {
      this.#since = now;
      this.#remindedAt = now;
      this.#log.error(
        `${errorMessage(cause)} (store at ${this.#location}). ${transitions} transitions were not stored and none of them ` +
          'is acknowledged; their clients are disconnected and re-send what was not acknowledged when they reconnect.',
      );
    } else if (now - this.#remindedAt >= REMINDER_MS) {
      this.#remindedAt = now;
      this.#log.error(
        `store writes at ${this.#location} still failing since ${new Date(this.#since).toISOString()}, last: ${errorMessage(cause)} ` +
          `(${this.#batches} batches, ${this.#transitions} transitions refused so far)`,
      );
    }
  }

  /** A batch whose write failed turned out to be in the store after all (see GroupCommitWriter). */
  writtenAfterAll(cause: unknown, transitions: number): void {
    this.#log.warn(
      `${errorMessage(cause)} (store at ${this.#location}), yet after reopening the store the batch is in it: its ${transitions} transitions stand`,
    );
  }

  /** A batch was written: the episode, if any, is over. */
  succeeded(): void {
    if (this.#since === undefined) return;
    this.#log.warn(
      `store writes at ${this.#location} succeed again, after ${this.#batches} failed batches (${this.#transitions} transitions refused) ` +
        `since ${new Date(this.#since).toISOString()}`,
    );
    this.#since = undefined;
    this.#batches = 0;
    this.#transitions = 0;
  }
}

/**
 * Closes and opens the database again: LevelDB recovers its log (keeping every whole record,
 * dropping a partial one at its end), starts a fresh log and forgets an error it kept from a
 * failed fsync or compaction. The same object is reopened, so everyone holding it keeps a valid
 * handle; reads under way when it closes fail, and their sessions reconnect.
 */
export async function reopen(db: Db): Promise<void> {
  await db.close();
  await db.open();
}

/**
 * Whether the store holds what `operations` write: every put's value and none of the deleted keys.
 * A batch is atomic in LevelDB's log, so this is all or nothing, unless the batch changed nothing,
 * in which case the store is as it would be either way.
 */
export async function isWritten(db: Db, operations: Operation[]): Promise<boolean> {
  const values = await db.getMany(operations.map(({ key }) => key));
  return operations.every((operation, index) => {
    const stored = values[index];
    if (operation.type === 'del') return stored === undefined;
    return stored !== undefined && Buffer.compare(stored, operation.value) === 0;
  });
}
