/**
 * What every scenario runner shares: the sizes and context of a run, what a run gives back, and
 * the helpers that start brokers, judge disturbance and count CPU per message. The runners
 * (scenarios.ts and the files beside it) import it; it imports none of them.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { brokerDefinitions, describeExit, startBroker, type BrokerId, type BrokerProcess, type LaunchOptions } from './brokers.js';
import type { CpuSpent, MachineSpent, ThroughputJob } from './jobs.js';
import { freePort } from './proc.js';

export interface BenchSizes {
  /** Deliveries per throughput run (fan-out publishes messages/10, fan-in publishers send messages/10 each). */
  messages: number;
  queueSize: number;
  crashMessages: number;
  window: number;
  payloadSize: number;
  diskSeconds: number;
  /** After the crash restart, the drain ends once no message came for this long. */
  crashIdleMs: number;
  /** An acknowledged message not delivered within this long leaves the publisher's window. */
  overdueMs: number;
  /** No progress for this long fails a run. */
  stallMs: number;
  readyTimeoutMs: number;
  /**
   * Throughput runs first send up to this share of their messages again as an uncounted warm-up,
   * ended after warmupMs if it takes longer (ThroughputJob.warmupMs).
   */
  warmupShare: number;
  warmupMs: number;
  /** Throughput runs measure at least `messages`, and go on until measureMs, up to measureGrowth × their messages (ThroughputJob.measureMs). */
  measureMs: number;
  measureGrowth: number;
  /** When a message leaves the publisher's window (ThroughputJob.openUntil). */
  openUntil: 'delivery' | 'ack';
  /** Open-loop latency: seconds measured per offered rate, after warmupSeconds not counted. */
  latencySeconds: number;
  latencyWarmupSeconds: number;
  /** Messages queued in the "small store" of the start-up scenario. */
  smallStore: number;
  /** How long a freshly started broker sits idle before its idle RSS is read. */
  idleSettleMs: number;
  /** Share of the machine's CPU used by other processes above which a run counts as disturbed. */
  disturbedShare: number;
  /** Memory scenario: retained messages published, and offline persistent sessions created. */
  retainedCount: number;
  sessionCount: number;
}

export interface Context {
  root: string;
  distDir: string;
  workRoot: string;
  sizes: BenchSizes;
  definitions: ReturnType<typeof brokerDefinitions>;
  log: (line: string) => void;
}

/** Raw numbers of one run of one scenario on one broker (keys as in METRICS), plus notes. */
export interface RunOutcome {
  metrics: Record<string, number>;
  notes: string[];
  raw: unknown;
  /** Share of the machine's CPU that other processes took during the measurement (0–1). */
  disturbance?: number;
}

/** Microseconds of CPU per message. */
export function cpuPerMessageUs(cpu: CpuSpent | undefined, messages: number): number {
  return cpu && messages > 0 ? ((cpu.userMs + cpu.systemMs) * 1000) / messages : NaN;
}

/** Measurements shorter than this are not judged for disturbance or a busy generator. */
const MIN_JUDGED_MS = 250;

/**
 * What the machine spent beyond the broker and the load process during a measurement, as a share
 * of all its cores: other jobs on a shared machine (and the hypervisor's steal) that took CPU from
 * the two processes measured.
 */
export function disturbanceOf(result: { brokerCpu?: CpuSpent; loadCpu?: CpuSpent; machineCpu?: MachineSpent }): number | undefined {
  const machine = result.machineCpu;
  // /proc/stat counts in clock ticks (10 ms): shorter intervals say nothing reliable.
  if (!machine || machine.wallMs < MIN_JUDGED_MS) return undefined;
  const ours = (result.brokerCpu ? result.brokerCpu.userMs + result.brokerCpu.systemMs : 0) + (result.loadCpu ? result.loadCpu.userMs + result.loadCpu.systemMs : 0);
  return Math.max(0, (machine.busyMs + machine.stealMs - ours) / (machine.cores * machine.wallMs));
}

/** The load process's CPU over the measured interval as a share of one core. */
export function busyShare(result: { loadCpu?: CpuSpent; machineCpu?: MachineSpent }): number {
  const wallMs = result.machineCpu?.wallMs ?? 0;
  return result.loadCpu && wallMs >= MIN_JUDGED_MS ? (result.loadCpu.userMs + result.loadCpu.systemMs) / wallMs : NaN;
}

/**
 * Notes on what may have capped or disturbed a measurement. A capacity run (the trivial sink's
 * throughput runs) is meant to be capped by the generator: it gets a note when it was not.
 */
export function cpuNotes(ctx: Context, result: { loadCpu?: CpuSpent; machineCpu?: MachineSpent }, disturbance: number | undefined, capacityRun = false): string[] {
  const notes: string[] = [];
  const busy = busyShare(result);
  if (capacityRun) {
    if (busy < 0.9) notes.push(`the load process was only ${Math.round(busy * 100)} % busy: this rate may be below the generator's capacity`);
  } else if (busy > 0.9) {
    notes.push(`the load process was ${Math.round(busy * 100)} % busy: this run may be capped by the generator`);
  }
  if (disturbance !== undefined && disturbance > ctx.sizes.disturbedShare) {
    notes.push(`disturbed: other processes used ${Math.round(disturbance * 100)} % of the machine's CPU during the measurement`);
  }
  return notes;
}

let sequence = 0;
export function freshDir(ctx: Context, broker: BrokerId, scenario: string): string {
  const dir = join(ctx.workRoot, `${broker}-${scenario}-${++sequence}`);
  mkdirSync(dir, { recursive: true });
  return dir;
}

export async function start(ctx: Context, broker: BrokerId, dataDir: string, port?: number, options?: LaunchOptions): Promise<BrokerProcess> {
  const process = startBroker(ctx.definitions[broker], broker, dataDir, port ?? (await freePort()), ctx.workRoot, ctx.sizes.readyTimeoutMs, options);
  return process;
}

/** Runs body with the brokers it starts; every one still running afterwards is killed. */
export async function withBrokers<T>(body: (started: BrokerProcess[]) => Promise<T>): Promise<T> {
  const started: BrokerProcess[] = [];
  try {
    return await body(started);
  } finally {
    await Promise.all(started.map((broker) => broker.kill()));
  }
}

/** A broker stopped by SIGTERM should exit 0; anything else is worth a note. */
export function exitNote(broker: BrokerId, outcome: Awaited<ReturnType<BrokerProcess['stop']>>): string[] {
  if (outcome.forced) return [`${broker} did not exit within the stop timeout after SIGTERM; killed`];
  if (outcome.status.code !== 0) return [`${broker} exited with ${describeExit(outcome.status)} after SIGTERM`];
  return [];
}

/**
 * The QoS 1 1→1 throughput job (one publisher, one persistent subscriber) at the run's sizes,
 * window and warm-up, as the scenarios that vary it (transport, protocol, a bridge in
 * between) run it; `extra` says what they vary.
 */
export function qos1OneToOneJob(ctx: Context, port: number, brokerPid: number, name: string, extra: Partial<ThroughputJob> = {}): ThroughputJob {
  return {
    kind: 'throughput',
    port,
    qos: 1,
    publishers: 1,
    subscribers: 1,
    messages: ctx.sizes.messages,
    warmup: Math.round(ctx.sizes.messages * ctx.sizes.warmupShare),
    warmupMs: ctx.sizes.warmupMs,
    measureMs: ctx.sizes.measureMs,
    maxMessages: ctx.sizes.messages * ctx.sizes.measureGrowth,
    window: ctx.sizes.window,
    payloadSize: ctx.sizes.payloadSize,
    topic: `bench/${name}`,
    idPrefix: `bench-${name}`,
    overdueMs: ctx.sizes.overdueMs,
    stallMs: ctx.sizes.stallMs,
    timeoutMs: Math.max(60_000, ctx.sizes.messages * 10),
    brokerPid,
    openUntil: ctx.sizes.openUntil,
    ...extra,
  };
}
