import type { BatchBuilder } from './group-commit.js';
import {
  RETAINED_TOTALS_KEY,
  isRetainedIndexValue,
  isRetainedTotalsValue,
  keys,
  propertiesValue,
  type RetainedIndexValue,
  type RetainedTotalsValue,
  type RetainedValue,
} from './key-layout.js';
import type { Message } from './model.js';
import { admitRetained, emptyRetainedStats, removeRetained, type RetainedLimits, type RetainedStats } from './retained-limits.js';

/**
 * The records of the retained messages, changed inside a batch of the group commit: the payload
 * (r\0<topic>), its index record (t\0<topic>) and the totals (!retained) always move together, and
 * the limits are decided where transitions are applied in submission order and a batch that fails
 * to write leaves the stored totals as they were (as for a session's queue counts).
 */

/** Stores `message` as its topic's retained message if the limits allow; the previous one goes either way. true: kept. */
export function setRetained(batch: BatchBuilder, message: Message, limits: RetainedLimits): boolean {
  const { topic, payload, qos, properties } = message;
  const previous = batch.get(keys.retainedIndex(topic), isRetainedIndexValue);
  const stats = readStats(batch);
  const kept = admitRetained(stats, previous?.z, payload.length, limits);
  if (kept) {
    const value: RetainedValue = { p: payload, o: qos };
    if (properties) value.x = propertiesValue(properties);
    batch.put(keys.retained(topic), value);
    batch.put(keys.retainedIndex(topic), { o: qos, z: payload.length } satisfies RetainedIndexValue);
  } else if (previous !== undefined) {
    batch.del(keys.retained(topic));
    batch.del(keys.retainedIndex(topic));
  }
  writeStats(batch, stats);
  return kept;
}

/** Removes a topic's retained message and its index record, and takes it out of the totals. */
export function clearRetained(batch: BatchBuilder, topic: string): void {
  const previous = batch.get(keys.retainedIndex(topic), isRetainedIndexValue);
  batch.del(keys.retained(topic));
  batch.del(keys.retainedIndex(topic));
  if (previous === undefined) return;
  const stats = readStats(batch);
  removeRetained(stats, previous.z);
  writeStats(batch, stats);
}

export function retainedStatsOf({ m, b, d }: RetainedTotalsValue): RetainedStats {
  return { messages: m, bytes: b, refused: d };
}

/** The retained totals as the batch sees them (earlier jobs of the batch included). */
function readStats(batch: BatchBuilder): RetainedStats {
  const value = batch.get(RETAINED_TOTALS_KEY, isRetainedTotalsValue);
  return value === undefined ? emptyRetainedStats() : retainedStatsOf(value);
}

function writeStats(batch: BatchBuilder, stats: RetainedStats): void {
  batch.put(RETAINED_TOTALS_KEY, { m: stats.messages, b: stats.bytes, d: stats.refused } satisfies RetainedTotalsValue);
}
