import type { ProtocolLevel, Transport } from './mqtt-client.js';

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
  /** Publishes measured (spread evenly over the publishers): at least these, see measureMs. */
  messages: number;
  /**
   * The measured part goes on past `messages` until this long after its first send, up to
   * `maxMessages`: a count alone measured a fast broker for a few tens of ms, where one GC pause or
   * one slow fsync decides the figure (default: `messages` and no more).
   */
  measureMs?: number;
  maxMessages?: number;
  /** Publishes sent before the measured ones, through the same connections, and not counted. */
  warmup?: number;
  /** The warm-up ends this long after the first send even if not all of `warmup` went out (default: no limit). */
  warmupMs?: number;
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
  /** The broker process, whose CPU time the load process reads at the first send and the last completion. */
  brokerPid?: number;
  /** Where the subscribers connect, when not to `port` (bridge: publishers on the gateway, subscribers on the upstream). */
  subscriberPort?: number;
  /** A second broker whose CPU is read over the same interval (bridge: the upstream), so that it does not count as other work. */
  upstreamPid?: number;
  /**
   * When a message leaves the publisher's window: 'delivery' (default) once the broker acknowledged it
   * AND every subscriber got it; 'ack' at the acknowledgement alone (what most load tools count).
   * QoS 0 messages always wait for their delivery.
   */
  openUntil?: 'delivery' | 'ack';
  /** How every client reaches the broker (default TCP). */
  transport?: Transport;
  /** MQTT 3.1.1 (4, default) or 5.0 (5: every PUBLISH then carries typicalV5PublishProperties()). */
  protocol?: ProtocolLevel;
}

/**
 * Open loop: QoS 1, one publisher, one persistent subscriber; messages are sent on a fixed schedule
 * whatever the broker does, and latency counts from the scheduled send time (so a generator or
 * broker that falls behind shows up as latency, not as fewer samples).
 */
export interface OpenLoopJob {
  kind: 'openloop';
  port: number;
  /** Messages per second offered. */
  rate: number;
  /** Seconds measured, after `warmupSeconds` at the same rate that are sent but not counted. */
  seconds: number;
  warmupSeconds: number;
  payloadSize: number;
  topic: string;
  idPrefix: string;
  /** After the last send: wait this long without a delivery before giving up on the rest. */
  idleMs: number;
  timeoutMs: number;
  brokerPid?: number;
}

export interface FillJob {
  kind: 'fill';
  port: number;
  /** QoS1 messages to publish. */
  count: number;
  window: number;
  payloadSize: number;
  topic: string;
  /** The persistent (CleanSession=0) session that subscribes and goes offline before the fill; none when omitted (bridge outage: it is upstream). */
  subscriberId?: string;
  publisherId: string;
  progressEveryMs: number;
  stallMs: number;
  timeoutMs: number;
  /** QoS of the publishes and of the offline subscription (default 1). */
  qos?: 1 | 2;
  brokerPid?: number;
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

/**
 * The memory scenario's population: `count` QoS 1 PUBLISHes with RETAIN, each to its own topic
 * (retainedTopic(i)), `window` in flight.
 */
export interface RetainedFillJob {
  kind: 'retained-fill';
  port: number;
  count: number;
  window: number;
  payloadSize: number;
  stallMs: number;
  timeoutMs: number;
}

/**
 * The memory scenario's other population: `count` persistent sessions (CleanSession=0), each
 * subscribing to sessionFilters(i) in one SUBSCRIBE and disconnecting, `parallel` at a time.
 */
export interface SessionsFillJob {
  kind: 'sessions-fill';
  port: number;
  count: number;
  parallel: number;
  stallMs: number;
  timeoutMs: number;
}

/** After a restart: a clean session connects, retrying until the broker answers, and leaves. */
export interface ConnectProbeJob {
  kind: 'connect-probe';
  port: number;
  connectTimeoutMs: number;
}

/**
 * Once the runner has read the broker's memory: what the store gave back, the retained messages
 * under `retainedFilter` (counted) and whether each of `sessionIds` is present.
 */
export interface StoreCheckJob {
  kind: 'store-check';
  port: number;
  retainedFilter?: string;
  /** Stop counting retained messages once this many came, or none came for idleMs. */
  retainedExpected?: number;
  sessionIds?: string[];
  idleMs: number;
  timeoutMs: number;
}

export type Job = ThroughputJob | OpenLoopJob | FillJob | DrainJob | DiskJob | RetainedFillJob | SessionsFillJob | ConnectProbeJob | StoreCheckJob;

/** CPU time spent by one process over a measured interval (from /proc/<pid>/stat, or process.cpuUsage()). */
export interface CpuSpent {
  userMs: number;
  systemMs: number;
}

/** The whole machine over the same interval (/proc/stat): busy CPU time on all cores, steal, wall time. */
export interface MachineSpent {
  busyMs: number;
  stealMs: number;
  wallMs: number;
  cores: number;
}

export interface ThroughputResult {
  /** Measured publishes (the warm-up not included). */
  publishes: number;
  /** Warm-up publishes actually sent (fewer than ThroughputJob.warmup when warmupMs ended it). */
  warmupPublishes?: number;
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
  latencyP999Ms?: number;
  /** The broker's CPU from the first send to the last completion (absent without brokerPid). */
  brokerCpu?: CpuSpent;
  /** The load process's own CPU over the same interval. */
  loadCpu?: CpuSpent;
  machineCpu?: MachineSpent;
  /** The upstream broker's CPU over the same interval (only with upstreamPid). */
  upstreamCpu?: CpuSpent;
}

export interface OpenLoopResult {
  rate: number;
  /** Measured messages (warm-up excluded) and how many of them arrived. */
  messages: number;
  delivered: number;
  undelivered: number;
  duplicates: number;
  /** Stopped sending early: 65,535 messages were unacknowledged, the packet ids ran out. */
  fellBehind: boolean;
  /** Measured deliveries per second, first scheduled send → last measured delivery. */
  deliveryRate: number;
  latencyP50Ms: number;
  latencyP99Ms: number;
  latencyP999Ms: number;
  latencyMaxMs: number;
  brokerCpu?: CpuSpent;
  loadCpu?: CpuSpent;
  machineCpu?: MachineSpent;
  elapsedMs: number;
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
  brokerCpu?: CpuSpent;
  loadCpu?: CpuSpent;
  machineCpu?: MachineSpent;
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
  /** The broker's CPU from CONNACK to the last message (the runner sends its pid on stdin). */
  brokerCpu?: CpuSpent;
  /** The broker's CPU since its process started, read when the successful CONNECT went out. */
  brokerCpuAtConnect?: CpuSpent;
  loadCpu?: CpuSpent;
  machineCpu?: MachineSpent;
}

export interface PopulateResult {
  /** Retained messages acknowledged, or sessions created with every filter granted. */
  done: number;
  /** Filters the broker refused in SUBACK (0x80), over all sessions. */
  refusedFilters: number;
  /** CONNECTs the broker refused (CONNACK return code other than 0). */
  refusedSessions: number;
  elapsedMs: number;
}

export interface ConnectProbeResult {
  connackAt: number;
  connectAttempts: number;
}

export interface StoreCheckResult {
  retainedReceived: number;
  sessionsPresent: number;
  sessionsChecked: number;
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
  | { type: 'result'; result: ThroughputResult | OpenLoopResult | FillResult | DrainResult | DiskResult | PopulateResult | ConnectProbeResult | StoreCheckResult }
  | { type: 'error'; message: string };

/** What the runner may tell a running load process, one JSON object per stdin line. */
export type LoadCommand = { type: 'broker'; pid: number };

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
