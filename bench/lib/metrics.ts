/** Every row the report can have, in table order. Scenario code fills values by `key`. */
import { BRIDGE_SCENARIOS, type BridgeScenarioId } from './bridge-metrics.js';

export type Better = 'higher' | 'lower' | 'none';
/** How runs combine into one cell: the median (with min–max spread for throughput) or the total. */
export type Aggregate = 'median' | 'sum';
export type Format = 'rate' | 'ms' | 'us' | 'mib' | 'bytes' | 'count' | 'ratio-of-runs' | 'times' | 'percent';

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
  /**
   * Not measured but computed from the combined cells of another row: the trivial sink's value of
   * `headroomOf` ÷ each broker's. The sink is the load generator's own capacity on this machine.
   */
  headroomOf?: string;
}

export type ScenarioId =
  | 'qos0' | 'qos1' | 'qos2' | 'fanout' | 'fanin' | 'latency' | 'offline' | 'offline2' | 'startup' | 'crash' | 'memory' | 'websocket' | 'mqtt5' | 'disk'
  | BridgeScenarioId;
export const ALL_SCENARIOS: ScenarioId[] = ['qos1', 'qos0', 'qos2', 'fanout', 'fanin', 'latency', 'offline', 'offline2', 'startup', 'crash', 'memory', 'websocket', 'mqtt5', 'disk', ...BRIDGE_SCENARIOS];

/** Scenarios the trivial sink takes part in: those where only the load generator's capacity is in question. */
export const SINK_SCENARIOS: ScenarioId[] = ['qos1', 'qos0', 'qos2', 'fanout', 'fanin', 'latency'];

/** The bridge scenarios' titles and rows (bridge-scenarios.ts fills them). */
const BRIDGE_TITLES: Record<BridgeScenarioId, string> = {
  bridge: 'Bridge QoS1: local publisher → gateway → upstream Mosquitto → persistent subscriber',
  'bridge-outage': 'Bridge outage (upstream down, QoS1 into the gateway, gateway SIGKILLed and restarted, upstream back)',
};

const bridge = 'bridge' as const;
const outage = 'bridge-outage' as const;

const BRIDGE_METRICS: MetricDef[] = [
  { key: 'bridge.rate', scenario: bridge, label: 'Bridge: forwarding throughput (delivered upstream)', unit: 'msg/s', better: 'higher', format: 'rate', aggregate: 'median', throughput: true },
  { key: 'bridge.p50', scenario: bridge, label: 'Bridge: end-to-end latency p50', unit: 'ms', better: 'lower', format: 'ms', aggregate: 'median' },
  { key: 'bridge.p99', scenario: bridge, label: 'Bridge: end-to-end latency p99', unit: 'ms', better: 'lower', format: 'ms', aggregate: 'median' },
  { key: 'bridge.cpuPerMsg', scenario: bridge, label: 'Bridge: gateway CPU per forwarded message (user+sys)', unit: 'µs', better: 'lower', format: 'us', aggregate: 'median' },
  { key: 'bridge.upstreamCpuPerMsg', scenario: bridge, label: 'Bridge: upstream Mosquitto CPU per message (user+sys)', unit: 'µs', better: 'none', format: 'us', aggregate: 'median' },
  { key: 'bridge.peakRss', scenario: bridge, label: 'Bridge: gateway peak RSS', unit: 'MiB', better: 'lower', format: 'mib', aggregate: 'median' },
  { key: 'bridge.undelivered', scenario: bridge, label: 'Bridge: never delivered upstream', unit: 'msgs', better: 'lower', format: 'count', aggregate: 'sum' },
  { key: 'bridge.duplicates', scenario: bridge, label: 'Bridge: delivered twice upstream', unit: 'msgs', better: 'lower', format: 'count', aggregate: 'sum' },
  { key: 'bridge.loadBusy', scenario: bridge, label: 'Bridge: load generator busy (share of one core)', unit: '%', better: 'none', format: 'percent', aggregate: 'median' },
  { key: 'bridge-outage.acked', scenario: outage, label: 'Bridge outage: acknowledged by the gateway, upstream down', unit: 'msgs', better: 'none', format: 'count', aggregate: 'sum' },
  { key: 'bridge-outage.fillRate', scenario: outage, label: 'Bridge outage: gateway acknowledgements, upstream down', unit: 'msg/s', better: 'higher', format: 'rate', aggregate: 'median', throughput: true },
  { key: 'bridge-outage.fillCpuPerMsg', scenario: outage, label: 'Bridge outage: gateway CPU per message acknowledged, upstream down (user+sys)', unit: 'µs', better: 'lower', format: 'us', aggregate: 'median' },
  { key: 'bridge-outage.receivedAcked', scenario: outage, label: 'Bridge outage: of those, reached the upstream subscriber', unit: 'msgs', better: 'higher', format: 'count', aggregate: 'sum' },
  { key: 'bridge-outage.lost', scenario: outage, label: 'Bridge outage: lost (acknowledged by the gateway, never reached upstream)', unit: 'msgs', better: 'lower', format: 'count', aggregate: 'sum' },
  { key: 'bridge-outage.duplicates', scenario: outage, label: 'Bridge outage: delivered twice upstream', unit: 'msgs', better: 'none', format: 'count', aggregate: 'sum' },
  { key: 'bridge-outage.outOfOrder', scenario: outage, label: 'Bridge outage: arrived out of order upstream', unit: 'msgs', better: 'lower', format: 'count', aggregate: 'sum' },
  { key: 'bridge-outage.catchUpRate', scenario: outage, label: 'Bridge outage: catch-up (upstream back → last message, reconnect wait included)', unit: 'msg/s', better: 'higher', format: 'rate', aggregate: 'median', throughput: true },
];

/** Offered rates of the open-loop latency scenario, and the key each one's rows use. */
export const LATENCY_RATES = [
  { rate: 1_000, key: '1k' },
  { rate: 10_000, key: '10k' },
] as const;

export const SCENARIO_TITLES: Record<ScenarioId, string> = {
  qos1: 'Online QoS1, 1 → 1 persistent subscriber',
  qos0: 'Online QoS0, 1 → 1',
  qos2: 'Online QoS2, 1 → 1 persistent subscriber',
  fanout: 'Fan-out QoS1, 1 → 10 persistent subscribers',
  fanin: 'Fan-in QoS1, 10 → 1 persistent subscriber',
  latency: 'Latency at a fixed offered rate (open loop, QoS1, 1 → 1 persistent subscriber)',
  offline: 'Offline queue (QoS1 into an offline persistent session, SIGTERM, restart, drain)',
  offline2: 'Offline queue QoS2 (QoS2 into an offline persistent session, SIGTERM, restart, drain)',
  startup: 'Start-up with a small store (1 offline session with a few queued QoS1 messages, SIGTERM, restart)',
  crash: 'Crash (SIGKILL mid-stream, restart, drain)',
  memory: 'Memory with many retained messages, and with many offline persistent sessions (before and after a restart)',
  websocket: 'QoS1 1 → 1 persistent subscriber over WebSocket, beside the same over TCP',
  mqtt5: 'QoS1 1 → 1 persistent subscriber in MQTT 5 (3 properties per PUBLISH), beside the same in 3.1.1',
  disk: 'Machine limits (data disk)',
  ...BRIDGE_TITLES,
};

function online(scenario: ScenarioId, name: string, rateLabel: string): MetricDef[] {
  const per = scenario === 'fanout' ? 'delivery' : 'delivered message';
  return [
    { key: `${scenario}.rate`, scenario, label: `${name}: ${rateLabel}`, unit: 'msg/s', better: 'higher', format: 'rate', aggregate: 'median', throughput: true },
    { key: `${scenario}.p50`, scenario, label: `${name}: latency p50`, unit: 'ms', better: 'lower', format: 'ms', aggregate: 'median' },
    { key: `${scenario}.p99`, scenario, label: `${name}: latency p99`, unit: 'ms', better: 'lower', format: 'ms', aggregate: 'median' },
    ...(scenario === 'qos1'
      ? [{ key: 'qos1.idleRss', scenario, label: `${name}: idle RSS (started, empty store, before the load)`, unit: 'MiB', better: 'lower', format: 'mib', aggregate: 'median' } as const]
      : []),
    { key: `${scenario}.peakRss`, scenario, label: `${name}: peak RSS`, unit: 'MiB', better: 'lower', format: 'mib', aggregate: 'median' },
    { key: `${scenario}.cpuPerMsg`, scenario, label: `${name}: broker CPU per ${per} (user+sys)`, unit: 'µs', better: 'lower', format: 'us', aggregate: 'median' },
    { key: `${scenario}.undelivered`, scenario, label: `${name}: never delivered${scenario === 'qos0' ? ' (allowed at QoS0)' : ''}`, unit: 'msgs', better: 'lower', format: 'count', aggregate: 'sum' },
    { key: `${scenario}.headroom`, scenario, label: `${name}: load generator headroom (its capacity, against the trivial sink, ÷ this broker)`, unit: '×', better: 'none', format: 'times', aggregate: 'median', headroomOf: `${scenario}.rate` },
    { key: `${scenario}.loadBusy`, scenario, label: `${name}: load generator busy (share of one core)`, unit: '%', better: 'none', format: 'percent', aggregate: 'median' },
  ];
}

function latency(): MetricDef[] {
  return LATENCY_RATES.flatMap(({ rate, key }) => {
    const name = `Latency at ${new Intl.NumberFormat('en-US').format(rate)} msg/s`;
    const scenario = 'latency' as const;
    return [
      { key: `latency.${key}.p50`, scenario, label: `${name}: p50`, unit: 'ms', better: 'lower', format: 'ms', aggregate: 'median' },
      { key: `latency.${key}.p99`, scenario, label: `${name}: p99`, unit: 'ms', better: 'lower', format: 'ms', aggregate: 'median' },
      { key: `latency.${key}.p999`, scenario, label: `${name}: p99.9`, unit: 'ms', better: 'lower', format: 'ms', aggregate: 'median' },
      { key: `latency.${key}.cpuPerMsg`, scenario, label: `${name}: broker CPU per delivered message (user+sys)`, unit: 'µs', better: 'lower', format: 'us', aggregate: 'median' },
      { key: `latency.${key}.undelivered`, scenario, label: `${name}: never delivered`, unit: 'msgs', better: 'lower', format: 'count', aggregate: 'sum' },
    ] satisfies MetricDef[];
  });
}

function queued(scenario: 'offline' | 'offline2', name: string): MetricDef[] {
  return [
    { key: `${scenario}.fillRate`, scenario, label: `${name}: fill (acked)`, unit: 'msg/s', better: 'higher', format: 'rate', aggregate: 'median', throughput: true },
    { key: `${scenario}.fillCpuPerMsg`, scenario, label: `${name}: broker CPU per message filled (user+sys)`, unit: 'µs', better: 'lower', format: 'us', aggregate: 'median' },
    { key: `${scenario}.rssAfterFill`, scenario, label: `${name}: RSS after fill`, unit: 'MiB', better: 'lower', format: 'mib', aggregate: 'median' },
    { key: `${scenario}.writePerMsg`, scenario, label: `${name}: disk writes during fill, per message`, unit: 'B', better: 'lower', format: 'bytes', aggregate: 'median' },
    { key: `${scenario}.dataAfterFill`, scenario, label: `${name}: data dir after fill (running)`, unit: 'MiB', better: 'lower', format: 'mib', aggregate: 'median' },
    { key: `${scenario}.stopMs`, scenario, label: `${name}: SIGTERM → exit`, unit: 'ms', better: 'lower', format: 'ms', aggregate: 'median' },
    { key: `${scenario}.dataAfterStop`, scenario, label: `${name}: data dir after stop`, unit: 'MiB', better: 'lower', format: 'mib', aggregate: 'median' },
    { key: `${scenario}.startToConnack`, scenario, label: `${name}: process start → first CONNACK`, unit: 'ms', better: 'lower', format: 'ms', aggregate: 'median' },
    { key: `${scenario}.startCpuMs`, scenario, label: `${name}: broker CPU from process start to CONNECT`, unit: 'ms', better: 'lower', format: 'ms', aggregate: 'median' },
    { key: `${scenario}.rssAfterRestart`, scenario, label: `${name}: RSS after restart (at CONNACK)`, unit: 'MiB', better: 'lower', format: 'mib', aggregate: 'median' },
    { key: `${scenario}.drainRate`, scenario, label: `${name}: drain`, unit: 'msg/s', better: 'higher', format: 'rate', aggregate: 'median', throughput: true },
    { key: `${scenario}.drainCpuPerMsg`, scenario, label: `${name}: broker CPU per message drained (user+sys)`, unit: 'µs', better: 'lower', format: 'us', aggregate: 'median' },
    { key: `${scenario}.rssDrainPeak`, scenario, label: `${name}: peak RSS restart + drain`, unit: 'MiB', better: 'lower', format: 'mib', aggregate: 'median' },
    { key: `${scenario}.drained`, scenario, label: `${name}: messages drained / queued`, unit: '', better: 'none', format: 'ratio-of-runs', aggregate: 'sum', of: `${scenario}.queued` },
  ];
}

function memory(part: 'retained' | 'sessions', name: string, each: string): MetricDef[] {
  const scenario = 'memory' as const;
  const k = (metric: string) => `memory.${part}.${metric}`;
  return [
    { key: k('rss'), scenario, label: `${name}: RSS 1 s after the last one`, unit: 'MiB', better: 'lower', format: 'mib', aggregate: 'median' },
    { key: k('hwm'), scenario, label: `${name}: peak RSS (VmHWM) by then`, unit: 'MiB', better: 'lower', format: 'mib', aggregate: 'median' },
    { key: k('restartRss'), scenario, label: `${name}: RSS after a restart (first CONNACK + 1 s)`, unit: 'MiB', better: 'lower', format: 'mib', aggregate: 'median' },
    { key: k('restartHwm'), scenario, label: `${name}: peak RSS of the restart (VmHWM by then)`, unit: 'MiB', better: 'lower', format: 'mib', aggregate: 'median' },
    { key: k('perItem'), scenario, label: `${name}: RSS after the restart minus idle RSS, per ${each}`, unit: 'B', better: 'lower', format: 'bytes', aggregate: 'median' },
    part === 'retained'
      ? { key: k('kept'), scenario, label: `${name}: retained messages a new subscriber got after the restart / published`, unit: '', better: 'none', format: 'ratio-of-runs', aggregate: 'sum', of: k('count') }
      : { key: k('present'), scenario, label: `${name}: sampled sessions present after the restart / sampled`, unit: '', better: 'none', format: 'ratio-of-runs', aggregate: 'sum', of: k('checked') },
  ];
}

/**
 * One QoS1 1→1 load measured as `base` and as `other` on fresh processes (variant-scenarios.ts), and
 * other ÷ base per run: `target` says what the issue asks of that ratio.
 */
function variants(scenario: 'websocket' | 'mqtt5', base: [string, string], other: [string, string], target: { rate: string; cpu: string }): MetricDef[] {
  const rows = ([key, name]: [string, string]): MetricDef[] => [
    { key: `${scenario}.${key}.rate`, scenario, label: `${name}: throughput`, unit: 'msg/s', better: 'higher', format: 'rate', aggregate: 'median', throughput: true },
    { key: `${scenario}.${key}.p50`, scenario, label: `${name}: latency p50`, unit: 'ms', better: 'lower', format: 'ms', aggregate: 'median' },
    { key: `${scenario}.${key}.p99`, scenario, label: `${name}: latency p99`, unit: 'ms', better: 'lower', format: 'ms', aggregate: 'median' },
    { key: `${scenario}.${key}.cpuPerMsg`, scenario, label: `${name}: broker CPU per delivered message (user+sys)`, unit: 'µs', better: 'lower', format: 'us', aggregate: 'median' },
    { key: `${scenario}.${key}.undelivered`, scenario, label: `${name}: never delivered`, unit: 'msgs', better: 'lower', format: 'count', aggregate: 'sum' },
    { key: `${scenario}.${key}.loadBusy`, scenario, label: `${name}: load generator busy (share of one core)`, unit: '%', better: 'none', format: 'percent', aggregate: 'median' },
  ];
  return [
    ...rows(other),
    ...rows(base),
    { key: `${scenario}.rateRatio`, scenario, label: `${other[1]} ÷ ${base[1]}: throughput (target ${target.rate})`, unit: '×', better: 'higher', format: 'times', aggregate: 'median' },
    { key: `${scenario}.cpuRatio`, scenario, label: `${other[1]} ÷ ${base[1]}: broker CPU per message (target ${target.cpu})`, unit: '×', better: 'lower', format: 'times', aggregate: 'median' },
  ];
}

export const METRICS: MetricDef[] = [
  ...online('qos1', 'QoS1 1→1', 'throughput'),
  ...online('qos0', 'QoS0 1→1', 'throughput'),
  ...online('qos2', 'QoS2 1→1', 'throughput'),
  ...online('fanout', 'Fan-out 1→10', 'deliveries'),
  ...online('fanin', 'Fan-in 10→1', 'deliveries'),
  ...latency(),
  ...queued('offline', 'Offline queue'),
  ...queued('offline2', 'Offline queue QoS2'),
  { key: 'startup.startToConnack', scenario: 'startup', label: 'Small store: process start → first CONNACK', unit: 'ms', better: 'lower', format: 'ms', aggregate: 'median' },
  { key: 'startup.startCpuMs', scenario: 'startup', label: 'Small store: broker CPU from process start to CONNECT', unit: 'ms', better: 'lower', format: 'ms', aggregate: 'median' },
  { key: 'startup.rssAfterRestart', scenario: 'startup', label: 'Small store: RSS at CONNACK', unit: 'MiB', better: 'lower', format: 'mib', aggregate: 'median' },
  { key: 'startup.drained', scenario: 'startup', label: 'Small store: messages drained / queued', unit: '', better: 'none', format: 'ratio-of-runs', aggregate: 'sum', of: 'startup.queued' },
  { key: 'crash.acked', scenario: 'crash', label: 'Crash: acknowledged before SIGKILL', unit: 'msgs', better: 'none', format: 'count', aggregate: 'sum' },
  { key: 'crash.receivedAcked', scenario: 'crash', label: 'Crash: of those, received after restart', unit: 'msgs', better: 'higher', format: 'count', aggregate: 'sum' },
  { key: 'crash.lost', scenario: 'crash', label: 'Crash: lost (acknowledged, never received)', unit: 'msgs', better: 'lower', format: 'count', aggregate: 'sum' },
  { key: 'crash.unacked', scenario: 'crash', label: 'Crash: received but not acknowledged (allowed)', unit: 'msgs', better: 'none', format: 'count', aggregate: 'sum' },
  { key: 'crash.duplicates', scenario: 'crash', label: 'Crash: delivered twice', unit: 'msgs', better: 'none', format: 'count', aggregate: 'sum' },
  { key: 'crash.sessionPresent', scenario: 'crash', label: 'Crash: session present after restart', unit: 'runs', better: 'none', format: 'ratio-of-runs', aggregate: 'sum', of: 'runs' },
  { key: 'crash.cpuPerMsg', scenario: 'crash', label: 'Crash: broker CPU per message acknowledged before the kill (user+sys)', unit: 'µs', better: 'lower', format: 'us', aggregate: 'median' },
  ...memory('retained', 'Memory, retained (QoS1, 64 B, distinct topics)', 'retained message'),
  ...memory('sessions', 'Memory, offline sessions (10 filters each)', 'session'),
  ...variants('websocket', ['tcp', 'QoS1 1→1 over TCP'], ['ws', 'QoS1 1→1 over WebSocket'], { rate: '≥ 0.8', cpu: '≤ 1.2' }),
  ...variants('mqtt5', ['v311', 'QoS1 1→1 in MQTT 3.1.1'], ['v5', 'QoS1 1→1 in MQTT 5'], { rate: '≥ 0.9', cpu: '≤ 1.1' }),
  ...BRIDGE_METRICS,
];

/** Machine limits are one value each, not per broker. */
export const DISK_METRICS = [
  { key: 'appendFsyncPerS', label: 'append 64 B + fsync', unit: 'ops/s' },
  { key: 'appendFdatasyncPerS', label: 'append 64 B + fdatasync', unit: 'ops/s' },
  { key: 'levelSyncBatchPerS', label: 'LevelDB batch of 1 put, sync: true', unit: 'batches/s' },
  { key: 'levelNoSyncBatchPerS', label: 'LevelDB batch of 1 put, sync: false', unit: 'batches/s' },
  { key: 'levelSync100PutsPerS', label: 'LevelDB batches of 100 puts, sync: true', unit: 'puts/s' },
] as const;
