import { Packr } from 'msgpackr';
import { BrokerError, ErrorCodes } from '../errors.js';

/**
 * Values are msgpack maps with short field names. Records (structure sharing) stay off: a record
 * definition lives outside the value, and a value must decode on its own for `broker-admin`.
 */
const packr = new Packr({ useRecords: false, mapsAsObjects: true });

export function encode(value: unknown): Buffer {
  return packr.pack(value);
}

export function decode<T>(bytes: Uint8Array, key: string): T {
  try {
    return packr.unpack(bytes) as T;
  } catch (error) {
    throw new BrokerError(ErrorCodes.STORE_CORRUPT_RECORD, `store record ${JSON.stringify(key)} does not decode`, {
      cause: error,
    });
  }
}
