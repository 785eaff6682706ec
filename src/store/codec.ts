import { Packr } from 'msgpackr/pack';
import { BrokerError, ErrorCodes } from '../errors.js';

/**
 * Values are msgpack maps with short field names. Records (structure sharing) stay off: a record
 * definition lives outside the value, and a value must decode on its own for `broker-admin`.
 */
const packr = new Packr({ useRecords: false, mapsAsObjects: true });

export function encode(value: unknown): Buffer {
  return packr.pack(value);
}

/**
 * Decodes a stored value and checks its shape: msgpack decodes many corrupt byte strings into
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

function corrupt(key: string, problem: string, cause?: unknown): BrokerError {
  return new BrokerError(ErrorCodes.STORE_CORRUPT_RECORD, `store record ${JSON.stringify(key)} ${problem}`, { cause });
}
