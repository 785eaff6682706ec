/** Every row the report can have, in table order. Scenario code fills values by `key`. */

export type Better = 'higher' | 'lower' | 'none';
/** How runs combine into one cell: the median (with min–max spread for throughput) or the total. */
export type Aggregate = 'median' | 'sum';
export type Format = 'rate' | 'ms' | 'mib' | 'bytes' | 'count' | 'ratio-of-runs';

export interface MetricDef {
  key: string;
  scenario: ScenarioId;
  label: string;
  unit: string;
  better: Better;
  format: Format;
  aggregate: Aggregate;
  /** Throughput rows show the spread (min–max) of their runs. */
  throughput?: boolean;
  /** For 'ratio-of-runs': the metric summed as denominator, or 'runs' for the number of runs. */
  of?: string;
}

export type ScenarioId = 'qos0' | 'qos1' | 'qos2' | 'fanout' | 'fanin' | 'offline' | 'crash' | 'disk';
export const ALL_SCENARIOS: ScenarioId[] = ['qos1', 'qos0', 'qos2', 'fanout', 'fanin', 'offline', 'crash', 'disk'];

export const SCENARIO_TITLES: Record<ScenarioId, string> = {
  qos1: 'Online QoS1, 1 → 1 persistent subscriber',
  qos0: 'Online QoS0, 1 → 1',
  qos2: 'Online QoS2, 1 → 1 persistent subscriber',
  fanout: 'Fan-out QoS1, 1 → 10 persistent subscribers',
  fanin: 'Fan-in QoS1, 10 → 1 persistent subscriber',
  offline: 'Offline queue (QoS1 into an offline persistent session, SIGTERM, restart, drain)',
  crash: 'Crash (SIGKILL mid-stream, restart, drain)',
  disk: 'Machine limits (data disk)',
};

function online(scenario: ScenarioId, name: string, rateLabel: string): MetricDef[] {
  return [
    { key: `${scenario}.rate`, scenario, label: `${name}: ${rateLabel}`, unit: 'msg/s', better: 'higher', format: 'rate', aggregate: 'median', throughput: true },
    { key: `${scenario}.p50`, scenario, label: `${name}: latency p50`, unit: 'ms', better: 'lower', format: 'ms', aggregate: 'median' },
    { key: `${scenario}.p99`, scenario, label: `${name}: latency p99`, unit: 'ms', better: 'lower', format: 'ms', aggregate: 'median' },
    { key: `${scenario}.peakRss`, scenario, label: `${name}: peak RSS`, unit: 'MiB', better: 'lower', format: 'mib', aggregate: 'median' },
    { key: `${scenario}.undelivered`, scenario, label: `${name}: never delivered${scenario === 'qos0' ? ' (allowed at QoS0)' : ''}`, unit: 'msgs', better: 'lower', format: 'count', aggregate: 'sum' },
  ];
}

export const METRICS: MetricDef[] = [
  ...online('qos1', 'QoS1 1→1', 'throughput'),
  ...online('qos0', 'QoS0 1→1', 'throughput'),
  ...online('qos2', 'QoS2 1→1', 'throughput'),
  ...online('fanout', 'Fan-out 1→10', 'deliveries'),
  ...online('fanin', 'Fan-in 10→1', 'deliveries'),
  { key: 'offline.fillRate', scenario: 'offline', label: 'Offline queue: fill (acked)', unit: 'msg/s', better: 'higher', format: 'rate', aggregate: 'median', throughput: true },
  { key: 'offline.rssAfterFill', scenario: 'offline', label: 'Offline queue: RSS after fill', unit: 'MiB', better: 'lower', format: 'mib', aggregate: 'median' },
  { key: 'offline.writePerMsg', scenario: 'offline', label: 'Offline queue: disk writes during fill, per message', unit: 'B', better: 'lower', format: 'bytes', aggregate: 'median' },
  { key: 'offline.dataAfterFill', scenario: 'offline', label: 'Offline queue: data dir after fill (running)', unit: 'MiB', better: 'lower', format: 'mib', aggregate: 'median' },
  { key: 'offline.stopMs', scenario: 'offline', label: 'Offline queue: SIGTERM → exit', unit: 'ms', better: 'lower', format: 'ms', aggregate: 'median' },
  { key: 'offline.dataAfterStop', scenario: 'offline', label: 'Offline queue: data dir after stop', unit: 'MiB', better: 'lower', format: 'mib', aggregate: 'median' },
  { key: 'offline.startToConnack', scenario: 'offline', label: 'Offline queue: process start → first CONNACK', unit: 'ms', better: 'lower', format: 'ms', aggregate: 'median' },
  { key: 'offline.rssAfterRestart', scenario: 'offline', label: 'Offline queue: RSS after restart (at CONNACK)', unit: 'MiB', better: 'lower', format: 'mib', aggregate: 'median' },
  { key: 'offline.drainRate', scenario: 'offline', label: 'Offline queue: drain', unit: 'msg/s', better: 'higher', format: 'rate', aggregate: 'median', throughput: true },
  { key: 'offline.rssDrainPeak', scenario: 'offline', label: 'Offline queue: peak RSS restart + drain', unit: 'MiB', better: 'lower', format: 'mib', aggregate: 'median' },
  { key: 'offline.drained', scenario: 'offline', label: 'Offline queue: messages drained / queued', unit: '', better: 'none', format: 'ratio-of-runs', aggregate: 'sum', of: 'offline.queued' },
  { key: 'crash.acked', scenario: 'crash', label: 'Crash: acknowledged before SIGKILL', unit: 'msgs', better: 'none', format: 'count', aggregate: 'sum' },
  { key: 'crash.receivedAcked', scenario: 'crash', label: 'Crash: of those, received after restart', unit: 'msgs', better: 'higher', format: 'count', aggregate: 'sum' },
  { key: 'crash.lost', scenario: 'crash', label: 'Crash: lost (acknowledged, never received)', unit: 'msgs', better: 'lower', format: 'count', aggregate: 'sum' },
  { key: 'crash.unacked', scenario: 'crash', label: 'Crash: received but not acknowledged (allowed)', unit: 'msgs', better: 'none', format: 'count', aggregate: 'sum' },
  { key: 'crash.duplicates', scenario: 'crash', label: 'Crash: delivered twice', unit: 'msgs', better: 'none', format: 'count', aggregate: 'sum' },
  { key: 'crash.sessionPresent', scenario: 'crash', label: 'Crash: session present after restart', unit: 'runs', better: 'none', format: 'ratio-of-runs', aggregate: 'sum', of: 'runs' },
];

/** Machine limits are one value each, not per broker. */
export const DISK_METRICS = [
  { key: 'appendFsyncPerS', label: 'append 64 B + fsync', unit: 'ops/s' },
  { key: 'appendFdatasyncPerS', label: 'append 64 B + fdatasync', unit: 'ops/s' },
  { key: 'levelSyncBatchPerS', label: 'LevelDB batch of 1 put, sync: true', unit: 'batches/s' },
  { key: 'levelNoSyncBatchPerS', label: 'LevelDB batch of 1 put, sync: false', unit: 'batches/s' },
  { key: 'levelSync100PutsPerS', label: 'LevelDB batches of 100 puts, sync: true', unit: 'puts/s' },
] as const;
