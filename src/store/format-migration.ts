import { checkedRecord, decodeFormat1, encode, encodeRecord, isCheckedRecord } from './codec.js';
import {
  FORMAT_KEY,
  FORMAT_VERSION,
  RETAINED_TOTALS_KEY,
  isRetainedValue,
  keys,
  parseKey,
  type RetainedIndexValue,
  type RetainedTotalsValue,
} from './key-layout.js';
import type { BatchOperation, LevelDatabase } from './level-database.js';

/** Keys, and bytes of values, rewritten per batch: memory stays bounded whatever the store holds. */
const CHUNK_KEYS = 1000;
const CHUNK_BYTES = 4 * 1024 * 1024;

/**
 * Converts a store of format 1 to the current format, once, when the broker opens it: every value becomes a
 * checked record (its msgpack bytes as they are, with a CRC-32 of key and bytes in front), every
 * retained message gets its index record, and the retained totals are written. The marker moves
 * to the current format (3; its records are those of 2) in the last batch, fsynced: a crash before it leaves format 1 with some records converted,
 * and the next start finishes the work (a record that is already a checked record is left as it
 * is). Bytes that were damaged before are wrapped as they are and still fail their shape check
 * when read; a retained message that does not decode stops the start as damage, as it did when
 * format 1 loaded retained messages whole.
 */
export async function convertFromFormat1(db: LevelDatabase): Promise<void> {
  const totals: RetainedTotalsValue = { m: 0, b: 0, d: 0 };
  let operations: BatchOperation[] = [];
  let bytes = 0;
  const flush = async () => {
    if (operations.length > 0) await db.batch(operations);
    operations = [];
    bytes = 0;
  };
  // The iterator reads a snapshot: index records written meanwhile are not visited again.
  for await (const [key, value] of db.iterator()) {
    if (key === FORMAT_KEY) continue;
    const converted = isCheckedRecord(value, key);
    const parsed = parseKey(key);
    if (parsed.kind === 'retained') {
      const { p, o } = decodeFormat1(value, key, isRetainedValue);
      totals.m++;
      totals.b += p.length;
      const index: RetainedIndexValue = { o, z: p.length };
      operations.push({ type: 'put', key: keys.retainedIndex(parsed.topic), value: encodeRecord(keys.retainedIndex(parsed.topic), index) });
    }
    if (!converted) {
      operations.push({ type: 'put', key, value: checkedRecord(key, value) });
      bytes += value.length;
    }
    if (operations.length >= CHUNK_KEYS || bytes >= CHUNK_BYTES) await flush();
  }
  operations.push({ type: 'put', key: RETAINED_TOTALS_KEY, value: encodeRecord(RETAINED_TOTALS_KEY, totals) });
  operations.push({ type: 'put', key: FORMAT_KEY, value: encode(FORMAT_VERSION) });
  // One log: this fsync makes every batch before it durable too.
  await db.batch(operations, { sync: true });
}
