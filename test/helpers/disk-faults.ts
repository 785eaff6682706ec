import type { LevelDatabase } from '../../src/store/level-repository.js';

type Operation = { type: 'put' | 'del'; key: string; value?: Uint8Array };

/** How a failing write behaves. */
export type FaultMode =
  /** Nothing reaches the log, as when the disk is full before the append. */
  | 'refuse'
  /** The batch reaches LevelDB, then the call fails, as a failed fsync after the append does. */
  | 'fail-after-write';

/** classic-level's native batch, which the repository's writer fills one operation at a time. */
interface NativeBatch {
  _put(key: string, value: Uint8Array): void;
  _del(key: string): void;
  _write(options: unknown): Promise<void>;
}

interface Backend {
  _chainedBatch(): NativeBatch;
  open(options?: unknown): Promise<void>;
}

/**
 * Failures under a LevelRepository, in process, with the real LevelDB underneath: passed as its
 * `instrument` option, it wraps the native batches the database hands out (where classic-level
 * writes, whether through `batch()` or directly) and `open`. While failing, a write is refused with the error
 * classic-level gives for a full disk; while `failReopen` is on, so is reopening the store.
 */
export class DiskFaults {
  /** Write batches that reached LevelDB, and the ones refused. */
  written = 0;
  refused = 0;
  /** Times the database was opened after the first open (the repository's recovery). */
  reopens = 0;
  failReopen = false;
  #failing: { mode: FaultMode; when: (operations: Operation[]) => boolean } | undefined;
  #holding: { when: (operations: Operation[]) => boolean; reached: () => void; released: Promise<void>; release: () => void } | undefined;
  #location = '';

  readonly instrument = (db: LevelDatabase): void => {
    const backend = db as unknown as Backend;
    this.#location = db.location;
    const chainedBatch = backend._chainedBatch.bind(db);
    const open = backend.open.bind(db);
    backend._chainedBatch = () => {
      const batch = chainedBatch();
      const operations: Operation[] = [];
      const [put, del, write] = [batch._put.bind(batch), batch._del.bind(batch), batch._write.bind(batch)];
      batch._put = (key, value) => {
        operations.push({ type: 'put', key, value });
        put(key, value);
      };
      batch._del = (key) => {
        operations.push({ type: 'del', key });
        del(key);
      };
      batch._write = async (options) => {
        const holding = this.#holding;
        if (holding?.when(operations)) {
          // Group commit writes one batch at a time: everything submitted after this waits too.
          holding.reached();
          await holding.released;
        }
        const failing = this.#failing;
        if (!failing || !failing.when(operations)) {
          this.written++;
          return write(options);
        }
        this.refused++;
        if (failing.mode === 'fail-after-write') await write(options);
        throw this.#diskFull();
      };
      return batch;
    };
    backend.open = async (options) => {
      this.reopens++;
      if (this.failReopen) throw Object.assign(new Error('Database failed to open'), { code: 'LEVEL_DATABASE_NOT_OPEN', cause: this.#diskFull() });
      return open(options);
    };
  };

  /** From now on writes fail (those `when` picks, by default all). */
  fail(options: { mode?: FaultMode; when?: (operations: Operation[]) => boolean } = {}): void {
    this.#failing = { mode: options.mode ?? 'refuse', when: options.when ?? (() => true) };
  }

  /**
   * From now on the first write batch `when` picks waits until `release()`: a slow disk under one
   * transition, with the ones submitted behind it waiting for the next batch. Resolves once such a
   * batch has reached the disk and waits.
   */
  hold(when: (operations: Operation[]) => boolean): { reached: Promise<void>; release: () => void } {
    let reached!: () => void;
    let release!: () => void;
    const reachedPromise = new Promise<void>((resolve) => (reached = resolve));
    const released = new Promise<void>((resolve) => (release = resolve));
    this.#holding = { when, reached, released, release };
    return {
      reached: reachedPromise,
      release: () => {
        this.#holding = undefined;
        release();
      },
    };
  }

  /** The disk is back: writes and reopens go through again. */
  recover(): void {
    this.#failing = undefined;
    this.failReopen = false;
  }

  /** classic-level's error for a full disk (LEVEL_IO_ERROR with LevelDB's message). */
  #diskFull(): Error {
    return Object.assign(new Error(`IO error: ${this.#location}/000003.log: No space left on device`), { code: 'LEVEL_IO_ERROR' });
  }
}

/** Picks batches that write any key of `kind` (the key layout's first letter) for `clientId`. */
export function touches(kind: string, clientId: string): (operations: Operation[]) => boolean {
  const prefix = `${kind}\u0000${clientId}`;
  return (operations) => operations.some(({ key }) => key === prefix || key.startsWith(`${prefix}\u0000`));
}
