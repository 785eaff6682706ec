import zlib from 'node:zlib';
import { Packr } from 'msgpackr/pack';
import { BrokerError, ErrorCodes } from '../errors.js';
import { flatMapSize, writeFlatMap } from './flat-map-encoder.js';

/**
 * Values are msgpack maps with short field names. Records (structure sharing) stay off: a record
 * definition lives outside the value, and a value must decode on its own for `broker-admin`.
 */
const packr = new Packr({ useRecords: false, mapsAsObjects: true });

/**
 * Every record the broker stores (store format 2) is checked:
 *
 *   0xc1 | CRC-32 of the key's UTF-8 bytes followed by the msgpack bytes (4 bytes, big-endian) | msgpack
 *
 * LevelDB checksums its blocks, but classic-level cannot ask it to verify them on reads, so a bit
 * that flips inside a table would otherwise be read as data: a payload delivered corrupted, a
 * queue entry moved to another client's key. The key is in the check, so a damaged key is caught
 * as surely as a damaged value. 0xc1 is the one byte msgpack never uses: no plain msgpack value,
 * such as every value of a format 1 store, can be taken for a checked record.
 */
const CHECKED = 0xc1;
const HEADER_BYTES = 5;

type Crc32 = (data: string | Uint8Array, value?: number) => number;

/** zlib.crc32 where Node.js has it (20.15 and 22.2 on); the same CRC-32 in JavaScript before that. */
export const crc32: Crc32 = (zlib as { crc32?: Crc32 }).crc32 ?? tableCrc32;

/** Plain msgpack: the format marker (an older broker must read it to refuse a newer store), and the values of format 1. */
export function encode(value: unknown): Buffer {
  return packr.pack(value);
}

/** A checked record of `value` stored under `key`. */
export function encodeRecord(key: string, value: unknown): Buffer {
  const size = flatMapSize(value);
  if (size === -1) return checkedRecord(key, packr.pack(value));
  const record = Buffer.allocUnsafe(HEADER_BYTES + size);
  writeFlatMap(value as Record<string, unknown>, record, HEADER_BYTES);
  return sealed(record, key);
}

/** A checked record around msgpack bytes that are already encoded (a format 1 value being converted). */
export function checkedRecord(key: string, body: Uint8Array): Buffer {
  const record = Buffer.allocUnsafe(HEADER_BYTES + body.length);
  record.set(body, HEADER_BYTES);
  return sealed(record, key);
}

/** Writes the header of `record`, whose msgpack body is in place after it: the marker, then the check of key and body. */
function sealed(record: Buffer, key: string): Buffer {
  record[0] = CHECKED;
  record.writeUInt32BE(crc32(record.subarray(HEADER_BYTES), crc32(key)), 1);
  return record;
}

/** Whether `bytes` is a checked record of `key` whose check holds. */
export function isCheckedRecord(bytes: Uint8Array, key: string): boolean {
  return checkedBody(bytes, key) !== undefined;
}

/** The msgpack bytes of a checked record; throws STORE_CORRUPT_RECORD when it is not one or its check fails. */
export function recordBody(bytes: Uint8Array, key: string): Uint8Array {
  const body = checkedBody(bytes, key);
  if (body === undefined) {
    const checked = bytes.length >= HEADER_BYTES && bytes[0] === CHECKED;
    throw corrupt(key, checked ? 'fails its checksum: its key or value changed on disk' : 'carries no checksum (every record of this store format has one)');
  }
  return body;
}

/** The body of a checked record whose check holds; undefined otherwise. */
function checkedBody(bytes: Uint8Array, key: string): Uint8Array | undefined {
  if (bytes.length < HEADER_BYTES || bytes[0] !== CHECKED) return undefined;
  const stored = ((bytes[1]! << 24) | (bytes[2]! << 16) | (bytes[3]! << 8) | bytes[4]!) >>> 0;
  const body = bytes.subarray(HEADER_BYTES);
  return crc32(body, crc32(key)) === stored ? body : undefined;
}

/** Decodes a checked record and checks its shape; any failure is STORE_CORRUPT_RECORD. */
export function decodeRecord<T>(bytes: Uint8Array, key: string, isValid: (value: unknown) => value is T): T {
  return decode(recordBody(bytes, key), key, isValid);
}

/**
 * Decodes plain msgpack and checks its shape: msgpack decodes many corrupt byte strings into
 * *something* (0xc1 even into a marker object), so "it decoded" proves nothing on its own.
 */
export function decode<T>(bytes: Uint8Array, key: string, isValid: (value: unknown) => value is T): T {
  let value: unknown;
  try {
    value = packr.unpack(bytes);
  } catch (error) {
    throw corrupt(key, 'does not decode', error);
  }
  if (!isValid(value)) throw corrupt(key, 'has an unexpected shape');
  return value;
}

/**
 * Decodes a value of a format 1 store: plain msgpack, or a checked record where a conversion to
 * format 2 was cut short (format-migration.ts).
 */
export function decodeFormat1<T>(bytes: Uint8Array, key: string, isValid: (value: unknown) => value is T): T {
  return isCheckedRecord(bytes, key) ? decodeRecord(bytes, key, isValid) : decode(bytes, key, isValid);
}

/** How a reader decodes the values of a store: decodeRecord (format 2) or decodeFormat1. */
export type RecordDecoder = <T>(bytes: Uint8Array, key: string, isValid: (value: unknown) => value is T) => T;

function corrupt(key: string, problem: string, cause?: unknown): BrokerError {
  return new BrokerError(ErrorCodes.STORE_CORRUPT_RECORD, `store record ${JSON.stringify(key)} ${problem}`, { cause });
}

let table: Int32Array | undefined;

/** CRC-32 (IEEE 802.3, as zlib computes it), continuing from `value` like zlib.crc32. Exported for tests. */
export function tableCrc32(data: string | Uint8Array, value = 0): number {
  table ??= crcTable();
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  let crc = ~value;
  for (let index = 0; index < bytes.length; index++) crc = table[(crc ^ bytes[index]!) & 0xff]! ^ (crc >>> 8);
  return ~crc >>> 0;
}

function crcTable(): Int32Array {
  const entries = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let bit = 0; bit < 8; bit++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    entries[n] = c;
  }
  return entries;
}
