import { decode, recordBody } from './codec.js';
import { isQueueEntryValue, type QueueEntryValue } from './key-layout.js';

type Fields = Record<string, unknown>;

/**
 * Decodes a stored queue entry: the one value read for every message a session is sent. Its check
 * is tested first, as for every record (codec.ts). Then it reads the msgpack the broker writes for
 * it (a map of one-letter keys to small integers, booleans, a string and bytes) directly;
 * msgpackr's general decoder cost a DataView and several objects per value. Anything else, and
 * any value the fast path cannot read, goes through `decode`, so what is accepted, and what is
 * reported as corrupt, is exactly what `decodeRecord` decides.
 */
export function decodeQueueEntry(bytes: Uint8Array, key: string): QueueEntryValue {
  return decodeQueueEntryBody(recordBody(bytes, key), key);
}

/** The same for the plain msgpack of a queue entry (its check tested already, or a store of format 1). */
export function decodeQueueEntryBody(body: Uint8Array, key: string): QueueEntryValue {
  const value = Buffer.isBuffer(body) ? readFields(body) : undefined;
  return value !== undefined && isQueueEntryValue(value) ? value : decode(body, key, isQueueEntryValue);
}

/** A msgpack map of one-letter keys to the value types queue entries use, filling all of `bytes`; else undefined. Exported for tests. */
export function readFields(bytes: Buffer): Fields | undefined {
  const length = bytes.length;
  if (length < 1) return undefined;
  let at = 0;
  let size: number;
  const head = bytes[at++]!;
  if (head >= 0x80 && head <= 0x8f) {
    size = head & 0x0f;
  } else if (head === 0xde && length >= 3) {
    size = bytes.readUInt16BE(at);
    at += 2;
  } else {
    return undefined;
  }
  const fields: Fields = {};
  for (let index = 0; index < size; index++) {
    // Key: a one-character fixstr.
    if (at + 2 > length || bytes[at] !== 0xa1) return undefined;
    const name = String.fromCharCode(bytes[at + 1]!);
    at += 2;
    if (at >= length) return undefined;
    const type = bytes[at++]!;
    let end: number;
    if (type <= 0x7f) {
      fields[name] = type;
      continue;
    } else if (type === 0xc2 || type === 0xc3) {
      fields[name] = type === 0xc3;
      continue;
    } else if (type === 0xcc || type === 0xcd || type === 0xce) {
      const width = type === 0xcc ? 1 : type === 0xcd ? 2 : 4;
      if (at + width > length) return undefined;
      fields[name] = bytes.readUIntBE(at, width);
      at += width;
      continue;
    } else if (type === 0xcb) {
      if (at + 8 > length) return undefined;
      fields[name] = bytes.readDoubleBE(at);
      at += 8;
      continue;
    } else if ((type >= 0xa0 && type <= 0xbf) || type === 0xd9 || type === 0xda) {
      const [start, stop] = span(bytes, at, type >= 0xa0 && type <= 0xbf ? type & 0x1f : undefined, type === 0xda ? 2 : 1);
      if (stop > length) return undefined;
      // Not utf8Slice's replacement characters for invalid bytes: let `decode` judge those.
      if (!isUtf8(bytes, start, stop)) return undefined;
      fields[name] = bytes.toString('utf8', start, stop);
      end = stop;
    } else if (type === 0xc4 || type === 0xc5 || type === 0xc6) {
      const [start, stop] = span(bytes, at, undefined, type === 0xc4 ? 1 : type === 0xc5 ? 2 : 4);
      if (stop > length) return undefined;
      fields[name] = bytes.subarray(start, stop);
      end = stop;
    } else {
      return undefined;
    }
    at = end;
  }
  return at === length ? fields : undefined;
}

/** [start, end) of a string or binary whose length is `fixed`, or in the next `width` bytes at `at`. */
function span(bytes: Buffer, at: number, fixed: number | undefined, width: number): [number, number] {
  if (fixed !== undefined) return [at, at + fixed];
  if (at + width > bytes.length) return [at, Infinity];
  const size = bytes.readUIntBE(at, width);
  return [at + width, at + width + size];
}

/** ASCII is checked byte by byte (topics nearly always are); anything else by the decoder. */
function isUtf8(bytes: Buffer, start: number, end: number): boolean {
  for (let index = start; index < end; index++) {
    if (bytes[index]! >= 0x80) return isWellFormedUtf8(bytes.subarray(start, end));
  }
  return true;
}

const strict = new TextDecoder('utf-8', { fatal: true });

function isWellFormedUtf8(bytes: Uint8Array): boolean {
  try {
    strict.decode(bytes);
    return true;
  } catch {
    return false;
  }
}
