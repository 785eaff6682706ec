import { closeSync, openSync, readSync } from 'node:fs';

/**
 * A reader of LevelDB's write-ahead log format (leveldb/db/log_format.h), used only to check a log
 * before LevelDB recovers it. LevelDB runs recovery without paranoid checks and classic-level
 * offers no way to turn them on: a damaged record in the middle of the log is dropped, together
 * with the rest of its 32 KiB block, and the database opens as if nothing happened. The records
 * lost that way were acknowledged; the broker must refuse to start on them instead.
 *
 * The checks mirror leveldb/db/log_reader.cc exactly: what LevelDB reports as corruption (and
 * silently drops) is reported here; what it takes for the end of the log (a record cut short by
 * the end of the file, as a crash in the middle of a write leaves it) is not a problem.
 */

const BLOCK_SIZE = 32768;
const HEADER_SIZE = 7;
const FULL = 1;
const FIRST = 2;
const MIDDLE = 3;
const LAST = 4;
/** A write batch has a 12-byte header (sequence number, count): a shorter record cannot be one. */
const MIN_BATCH_SIZE = 12;

export interface LogDamage {
  /** Byte offset in the file where the dropped bytes start. */
  offset: number;
  /** How many bytes LevelDB would drop. */
  bytes: number;
  /** LevelDB's own words for it. */
  reason: string;
}

/** The first damage LevelDB's recovery would silently skip in this log file, or undefined. */
export function findLogDamage(path: string): LogDamage | undefined {
  const fd = openSync(path, 'r');
  try {
    return new LogChecker(fd).run();
  } finally {
    closeSync(fd);
  }
}

class LogChecker {
  readonly #fd: number;
  readonly #block = Buffer.alloc(BLOCK_SIZE);
  /** The unread part of the current block: [#start, #end). */
  #start = 0;
  #end = 0;
  /** File offset of #block[0]. */
  #blockOffset = -BLOCK_SIZE;
  #eof = false;
  #damage: LogDamage | undefined;

  constructor(fd: number) {
    this.#fd = fd;
  }

  /** ReadRecord, repeated until the end of the file or the first reported corruption. */
  run(): LogDamage | undefined {
    let fragmented = false;
    let assembled = 0;
    while (this.#damage === undefined) {
      const physical = this.#readPhysicalRecord();
      if (physical === 'eof') return undefined;
      if (physical === 'bad') {
        if (fragmented) this.#report(assembled, 'error in middle of record');
        fragmented = false;
        assembled = 0;
        continue;
      }
      const { type, length } = physical;
      switch (type) {
        case FULL:
          if (fragmented && assembled > 0) this.#report(assembled, 'partial record without end(1)');
          else if (length < MIN_BATCH_SIZE) this.#report(length, 'log record too small');
          fragmented = false;
          assembled = 0;
          break;
        case FIRST:
          if (fragmented && assembled > 0) this.#report(assembled, 'partial record without end(2)');
          fragmented = true;
          assembled = length;
          break;
        case MIDDLE:
          if (!fragmented) this.#report(length, 'missing start of fragmented record(1)');
          else assembled += length;
          break;
        case LAST:
          if (!fragmented) this.#report(length, 'missing start of fragmented record(2)');
          else if (assembled + length < MIN_BATCH_SIZE) this.#report(assembled + length, 'log record too small');
          fragmented = false;
          assembled = 0;
          break;
        default:
          this.#report(length + (fragmented ? assembled : 0), `unknown record type ${type}`);
      }
    }
    return this.#damage;
  }

  #readPhysicalRecord(): { type: number; length: number } | 'eof' | 'bad' {
    for (;;) {
      if (this.#end - this.#start < HEADER_SIZE) {
        // A header cut short by the end of the file: the writer died while writing it.
        if (this.#eof) return 'eof';
        // Fewer than 7 bytes left in a full block are its zero trailer.
        this.#blockOffset += BLOCK_SIZE;
        const read = readFully(this.#fd, this.#block, this.#blockOffset);
        this.#start = 0;
        this.#end = read;
        if (read < BLOCK_SIZE) this.#eof = true;
        continue;
      }
      const header = this.#start;
      const length = this.#block[header + 4]! | (this.#block[header + 5]! << 8);
      const type = this.#block[header + 6]!;
      if (HEADER_SIZE + length > this.#end - this.#start) {
        const dropped = this.#end - this.#start;
        this.#start = this.#end;
        if (!this.#eof) {
          this.#report(dropped, 'bad record length', header);
          return 'bad';
        }
        // A record cut short by the end of the file: the writer died in the middle of it.
        return 'eof';
      }
      if (type === 0 && length === 0) {
        // Preallocated, never written: skipped without a report.
        this.#start = this.#end;
        return 'bad';
      }
      const expected = unmask(this.#block.readUInt32LE(header));
      const actual = crc32c(this.#block, header + 6, header + HEADER_SIZE + length);
      if (actual !== expected) {
        const dropped = this.#end - this.#start;
        this.#start = this.#end;
        this.#report(dropped, 'checksum mismatch', header);
        return 'bad';
      }
      this.#start += HEADER_SIZE + length;
      return { type, length };
    }
  }

  #report(bytes: number, reason: string, at = this.#start): void {
    this.#damage ??= { offset: this.#blockOffset + at, bytes, reason };
  }
}

function readFully(fd: number, buffer: Buffer, position: number): number {
  let total = 0;
  while (total < buffer.length) {
    const read = readSync(fd, buffer, total, buffer.length - total, position + total);
    if (read === 0) break;
    total += read;
  }
  return total;
}

const MASK_DELTA = 0xa282ead8;

function unmask(masked: number): number {
  const rotated = (masked - MASK_DELTA) >>> 0;
  return ((rotated >>> 17) | (rotated << 15)) >>> 0;
}

/** CRC-32C (Castagnoli), the checksum LevelDB puts on every log record. */
const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

export function crc32c(bytes: Uint8Array, start = 0, end = bytes.length): number {
  let crc = 0xffffffff;
  for (let i = start; i < end; i++) crc = CRC_TABLE[(crc ^ bytes[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}
