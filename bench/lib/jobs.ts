/**
 * What the runner asks of a load process (bench/dist/load.js <job-json>) and what it answers, one
 * JSON object per stdout line.
 */

export interface ThroughputJob {
  kind: 'throughput';
  port: number;
  qos: 0 | 1 | 2;
  publishers: number;
  subscribers: number;
  /** Publishes in total (spread evenly over the publishers). */
  messages: number;
  /** Messages each publisher may have outstanding: sent but not yet acknowledged and delivered to every subscriber. */
  window: number;
  payloadSize: number;
  topic: string;
  idPrefix: string;
  /** An acknowledged message not delivered within this long leaves the window (counted as overdue). */
  overdueMs: number;
  /** Fail when nothing moves for this long. */
  stallMs: number;
  timeoutMs: number;
}

export interface FillJob {
  kind: 'fill';
  port: number;
  /** QoS1 messages to publish. */
  count: number;
  window: number;
  payloadSize: number;
  topic: string;
  /** The persistent (CleanSession=0) session that subscribes and goes offline before the fill. */
  subscriberId: string;
  publisherId: string;
  progressEveryMs: number;
  stallMs: number;
  timeoutMs: number;
}

export interface DrainJob {
  kind: 'drain';
  port: number;
  subscriberId: string;
  /** Stop as soon as this many distinct messages arrived. */
  expected: number;
  /** Stop when no message arrived for this long (after CONNACK). */
  idleMs: number;
  /** Keep retrying the TCP connection / CONNECT this long (the broker is being started). */
  connectTimeoutMs: number;
  timeoutMs: number;
}

export interface DiskJob {
  kind: 'disk';
  dir: string;
  /** Seconds per measurement. */
  seconds: number;
  maxOps: number;
}

export type Job = ThroughputJob | FillJob | DrainJob | DiskJob;

export interface ThroughputResult {
  publishes: number;
  deliveries: number;
  expectedDeliveries: number;
  /** Deliveries that never arrived (acknowledged or sent, not delivered by the end of the run). */
  undelivered: number;
  /** Messages that left the window because their delivery took longer than overdueMs. */
  overdue: number;
  duplicates: number;
  elapsedMs: number;
  /** Deliveries per second (= messages/s for 1 → 1). */
  deliveryRate: number;
  publishRate: number;
  latencyP50Ms: number;
  latencyP99Ms: number;
  latencyMaxMs: number;
}

/** Sorted, inclusive [first, last] runs of sequence numbers. */
export type Ranges = Array<[number, number]>;

export interface FillResult {
  completed: boolean;
  /** Why the fill stopped early (connection closed, stall, timeout). */
  reason?: string;
  sent: number;
  acked: number;
  ackedRanges: Ranges;
  elapsedMs: number;
  /** Acknowledged messages per second. */
  ackRate: number;
}

export interface DrainResult {
  sessionPresent: boolean;
  connackAt: number;
  connectAttempts: number;
  received: number;
  duplicates: number;
  outOfOrder: number;
  receivedRanges: Ranges;
  /** CONNACK → last message. */
  drainMs: number;
  drainRate: number;
  stoppedBy: 'expected' | 'idle' | 'timeout' | 'closed';
}

export interface DiskResult {
  appendFsyncPerS: number;
  appendFdatasyncPerS: number;
  levelSyncBatchPerS: number;
  levelNoSyncBatchPerS: number;
  levelSync100PutsPerS: number;
  filesystem: string;
}

export type LoadEvent =
  | { type: 'progress'; sent: number; acked: number }
  | { type: 'waiting' }
  | { type: 'connack'; at: number; sessionPresent: boolean }
  | { type: 'result'; result: ThroughputResult | FillResult | DrainResult | DiskResult }
  | { type: 'error'; message: string };

export function toRanges(flags: Uint8Array): Ranges {
  const ranges: Ranges = [];
  let start = -1;
  for (let i = 0; i <= flags.length; i++) {
    const set = i < flags.length && flags[i] !== 0;
    if (set && start < 0) start = i;
    else if (!set && start >= 0) {
      ranges.push([start, i - 1]);
      start = -1;
    }
  }
  return ranges;
}

export function rangesCount(ranges: Ranges): number {
  return ranges.reduce((sum, [a, b]) => sum + b - a + 1, 0);
}

/** How many numbers of `a` are not in `b`. */
export function rangesMissing(a: Ranges, b: Ranges): number {
  const size = [...a, ...b].reduce((max, [, last]) => Math.max(max, last + 1), 0);
  const set = new Uint8Array(size);
  for (const [x, y] of b) set.fill(1, x, y + 1);
  let missing = 0;
  for (const [x, y] of a) for (let i = x; i <= y; i++) if (set[i] === 0) missing++;
  return missing;
}
