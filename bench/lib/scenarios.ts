import { join } from 'node:path';
import { describeExit, SINK_WINDOW, type BrokerId, type BrokerProcess } from './brokers.js';
import {
  rangesCount,
  rangesMissing,
  type DiskJob,
  type DiskResult,
  type DrainJob,
  type DrainResult,
  type FillJob,
  type FillResult,
  type OpenLoopJob,
  type OpenLoopResult,
  type ThroughputJob,
  type ThroughputResult,
} from './jobs.js';
import { startLoad } from './load-runner.js';
import { runMemory } from './memory-scenario.js';
import { busyShare, cpuNotes, cpuPerMessageUs, disturbanceOf, exitNote, freshDir, start, withBrokers, type BenchSizes, type Context, type RunOutcome } from './scenario-kit.js';
import { runVariants } from './variant-scenarios.js';
import { LATENCY_RATES, type ScenarioId } from './metrics.js';

export type { BenchSizes, Context, RunOutcome };
import { cpuSpentMs, dirSize, freePort, readCpu, readIo, readMem, sleep } from './proc.js';
import type { BridgeScenarioId } from './bridge-metrics.js';

const THROUGHPUT_SHAPES: Record<'qos0' | 'qos1' | 'qos2' | 'fanout' | 'fanin', { qos: 0 | 1 | 2; publishers: number; subscribers: number }> = {
  qos0: { qos: 0, publishers: 1, subscribers: 1 },
  qos1: { qos: 1, publishers: 1, subscribers: 1 },
  qos2: { qos: 2, publishers: 1, subscribers: 1 },
  fanout: { qos: 1, publishers: 1, subscribers: 10 },
  fanin: { qos: 1, publishers: 10, subscribers: 1 },
};

/**
 * The trivial sink runs this many times the messages of a broker run (same payload): at millions of
 * messages a second a broker-sized run would last a few tens of ms, too short to say what the
 * generator can sustain.
 */
export const SINK_SCALE = 5;

export async function runThroughput(ctx: Context, broker: BrokerId, scenario: keyof typeof THROUGHPUT_SHAPES): Promise<RunOutcome> {
  const shape = THROUGHPUT_SHAPES[scenario];
  const scale = broker === 'sink' ? SINK_SCALE : 1;
  return withBrokers(async (started) => {
    const server = await start(ctx, broker, freshDir(ctx, broker, scenario));
    started.push(server);
    await server.ready;
    let idleRss = NaN;
    if (scenario === 'qos1') {
      await sleep(ctx.sizes.idleSettleMs);
      idleRss = readMem(server.pid)?.rss ?? NaN;
    }
    const job: ThroughputJob = {
      kind: 'throughput',
      port: server.port,
      ...shape,
      // Fan-out: messages/10 publishes × 10 subscribers; fan-in: 10 publishers × messages/10.
      messages: Math.max(1, Math.round((ctx.sizes.messages * scale) / shape.subscribers)),
      warmup: Math.round(((ctx.sizes.messages * scale) / shape.subscribers) * ctx.sizes.warmupShare),
      warmupMs: ctx.sizes.warmupMs,
      measureMs: ctx.sizes.measureMs,
      maxMessages: Math.round((ctx.sizes.messages * scale * ctx.sizes.measureGrowth) / shape.subscribers),
      window: broker === 'sink' ? Math.max(ctx.sizes.window, SINK_WINDOW) : ctx.sizes.window,
      payloadSize: ctx.sizes.payloadSize,
      topic: `bench/${scenario}`,
      idPrefix: `bench-${scenario}`,
      overdueMs: ctx.sizes.overdueMs,
      stallMs: ctx.sizes.stallMs,
      timeoutMs: Math.max(60_000, ctx.sizes.messages * 10),
      brokerPid: server.pid,
      openUntil: ctx.sizes.openUntil,
    };
    const result = await startLoad<ThroughputResult>(ctx.distDir, job, job.timeoutMs + 30_000).result;
    const disturbance = disturbanceOf(result);
    const mem = readMem(server.pid);
    const notes: string[] = [];
    if (result.duplicates > 0) notes.push(`${result.duplicates} duplicate deliveries`);
    if (result.undelivered > 0) {
      notes.push(`${result.undelivered} of ${result.expectedDeliveries} deliveries never arrived (not even ${Math.max(2, (2 * ctx.sizes.overdueMs) / 1000)} s after the run)`);
    }
    if (result.overdue > 0) {
      notes.push(`${result.overdue} messages not delivered within ${ctx.sizes.overdueMs} ms of their ack/send (released from the window; max latency ${Math.round(result.latencyMaxMs)} ms)`);
    }
    notes.push(...cpuNotes(ctx, result, disturbance, broker === 'sink'));
    const stopped = await server.stop();
    notes.push(...exitNote(broker, stopped));
    return {
      metrics: {
        [`${scenario}.rate`]: result.deliveryRate,
        [`${scenario}.p50`]: result.latencyP50Ms,
        [`${scenario}.p99`]: result.latencyP99Ms,
        [`${scenario}.peakRss`]: mem?.hwm ?? NaN,
        [`${scenario}.undelivered`]: result.undelivered,
        [`${scenario}.overdue`]: result.overdue,
        [`${scenario}.cpuPerMsg`]: cpuPerMessageUs(result.brokerCpu, result.deliveries),
        [`${scenario}.loadCpuPerMsg`]: cpuPerMessageUs(result.loadCpu, result.deliveries),
        [`${scenario}.loadBusy`]: busyShare(result),
        ...(scenario === 'qos1' ? { 'qos1.idleRss': idleRss } : {}),
      },
      notes,
      raw: result,
      ...(disturbance === undefined ? {} : { disturbance }),
    };
  });
}

/** The queued scenarios: a persistent subscriber offline, `queue` messages at `qos`, SIGTERM, restart, drain. */
type QueuedScenario = 'offline' | 'offline2' | 'startup';

export async function runQueued(ctx: Context, broker: BrokerId, scenario: QueuedScenario, qos: 1 | 2, queue: number): Promise<RunOutcome> {
  const subscriberId = `bench-${scenario}-sub`;
  const dataDir = freshDir(ctx, broker, scenario);
  const notes: string[] = [];
  // Generous bounds: the stall watchdog is what normally ends a broken run.
  const longTimeout = Math.max(120_000, queue * (qos === 2 ? 10 : 5));
  return withBrokers(async (started) => {
    const first = await start(ctx, broker, dataDir);
    started.push(first);
    await first.ready;
    const ioBefore = readIo(first.pid);
    const fillJob: FillJob = {
      kind: 'fill',
      port: first.port,
      count: queue,
      window: ctx.sizes.window,
      payloadSize: ctx.sizes.payloadSize,
      topic: `bench/${scenario}`,
      subscriberId,
      publisherId: `bench-${scenario}-pub`,
      progressEveryMs: 1000,
      stallMs: ctx.sizes.stallMs,
      timeoutMs: longTimeout,
      qos,
      brokerPid: first.pid,
    };
    const fill = await startLoad<FillResult>(ctx.distDir, fillJob, longTimeout + 30_000).result;
    if (!fill.completed) throw new Error(`fill stopped after ${fill.acked}/${queue} acks: ${fill.reason}`);
    const ioAfter = readIo(first.pid);
    const memAfterFill = readMem(first.pid);
    const dataAfterFill = await dirSize(dataDir);
    const stopped = await first.stop(longTimeout);
    notes.push(...exitNote(broker, stopped));
    const dataAfterStop = await dirSize(dataDir);

    // The drain client is already knocking when the broker process is spawned.
    const port = await freePort();
    let connack: { at: number; sessionPresent: boolean } | undefined;
    let rssAtConnack = NaN;
    let second: BrokerProcess | undefined;
    let waitingSeen!: () => void;
    const waiting = new Promise<void>((resolve) => (waitingSeen = resolve));
    const drainJob: DrainJob = {
      kind: 'drain',
      port,
      subscriberId,
      expected: queue,
      idleMs: ctx.sizes.stallMs,
      connectTimeoutMs: ctx.sizes.readyTimeoutMs,
      timeoutMs: longTimeout,
    };
    const drainLoad = startLoad<DrainResult>(ctx.distDir, drainJob, longTimeout + ctx.sizes.readyTimeoutMs + 30_000, (event) => {
      if (event.type === 'waiting') waitingSeen();
      if (event.type === 'connack') {
        connack = { at: event.at, sessionPresent: event.sessionPresent };
        if (second) rssAtConnack = readMem(second.pid)?.rss ?? NaN;
      }
    });
    await Promise.race([waiting, drainLoad.result]);
    second = await start(ctx, broker, dataDir, port);
    started.push(second);
    drainLoad.send({ type: 'broker', pid: second.pid });
    const restarted = second;
    let rssPeakSampled = 0;
    const sampler = setInterval(() => {
      const mem = readMem(restarted.pid);
      if (mem) rssPeakSampled = Math.max(rssPeakSampled, mem.rss);
    }, 100);
    let drain: DrainResult;
    try {
      drain = await Promise.race([
        drainLoad.result,
        second.ready.then(() => new Promise<never>(() => {})),
        second.exited.then((status) => {
          throw new Error(`${broker} exited during restart/drain (${describeExit(status)}): ${restarted.logTail()}`);
        }),
      ]);
    } finally {
      clearInterval(sampler);
      drainLoad.kill();
    }
    const memEnd = readMem(second.pid);
    const stoppedAgain = await second.stop(longTimeout);
    notes.push(...exitNote(broker, stoppedAgain));
    if (!connack) throw new Error('no CONNACK seen');
    if (!connack.sessionPresent) notes.push('session present = 0 after restart');
    if (drain.received < queue) notes.push(`drained ${drain.received}/${queue} (stopped by ${drain.stoppedBy})`);
    if (drain.duplicates > 0) notes.push(`${drain.duplicates} duplicates in the drain`);
    if (drain.outOfOrder > 0) notes.push(`${drain.outOfOrder} out-of-order deliveries in the drain`);
    const fillDisturbance = disturbanceOf(fill);
    const drainDisturbance = disturbanceOf(drain);
    notes.push(...cpuNotes(ctx, fill, fillDisturbance).map((note) => `fill: ${note}`), ...cpuNotes(ctx, drain, drainDisturbance).map((note) => `drain: ${note}`));
    const writeBytes = ioBefore && ioAfter ? ioAfter.writeBytes - ioBefore.writeBytes : NaN;
    const startCpu = drain.brokerCpuAtConnect;
    const k = (name: string) => `${scenario}.${name}`;
    return {
      metrics: {
        [k('fillRate')]: fill.ackRate,
        [k('rssAfterFill')]: memAfterFill?.rss ?? NaN,
        [k('writePerMsg')]: writeBytes / queue,
        [k('dataAfterFill')]: dataAfterFill,
        [k('stopMs')]: stopped.ms,
        [k('dataAfterStop')]: dataAfterStop,
        [k('startToConnack')]: connack.at - second.spawnedAt,
        [k('rssAfterRestart')]: rssAtConnack,
        [k('drainRate')]: drain.drainRate,
        [k('rssDrainPeak')]: Math.max(memEnd?.hwm ?? 0, rssPeakSampled) || NaN,
        [k('drained')]: drain.received,
        [k('queued')]: queue,
        [k('fillCpuPerMsg')]: cpuPerMessageUs(fill.brokerCpu, fill.acked),
        [k('drainCpuPerMsg')]: cpuPerMessageUs(drain.brokerCpu, drain.received),
        [k('startCpuMs')]: startCpu ? startCpu.userMs + startCpu.systemMs : NaN,
      },
      notes,
      raw: { fill: { ...fill, ackedRanges: undefined }, drain: { ...drain, receivedRanges: drain.receivedRanges.slice(0, 20) }, writeBytes, fillDisturbance, drainDisturbance },
      ...(fillDisturbance === undefined && drainDisturbance === undefined ? {} : { disturbance: Math.max(fillDisturbance ?? 0, drainDisturbance ?? 0) }),
    };
  });
}

/**
 * Latency at a fixed offered rate (open loop, QoS 1, 1 → 1 persistent subscriber): each rate of
 * LATENCY_RATES in turn on one broker process, each after a warm-up at the same rate.
 */
export async function runLatency(ctx: Context, broker: BrokerId): Promise<RunOutcome> {
  return withBrokers(async (started) => {
    const server = await start(ctx, broker, freshDir(ctx, broker, 'latency'));
    started.push(server);
    await server.ready;
    const metrics: Record<string, number> = {};
    const notes: string[] = [];
    const raw: Record<string, OpenLoopResult> = {};
    let disturbance: number | undefined;
    for (const { rate, key } of LATENCY_RATES) {
      const job: OpenLoopJob = {
        kind: 'openloop',
        port: server.port,
        rate,
        seconds: ctx.sizes.latencySeconds,
        warmupSeconds: ctx.sizes.latencyWarmupSeconds,
        payloadSize: ctx.sizes.payloadSize,
        topic: `bench/latency/${key}`,
        idPrefix: `bench-latency-${key}`,
        idleMs: Math.max(2_000, 2 * ctx.sizes.overdueMs),
        timeoutMs: Math.max(60_000, (ctx.sizes.latencySeconds + ctx.sizes.latencyWarmupSeconds) * 1000 * 4),
        brokerPid: server.pid,
      };
      const result = await startLoad<OpenLoopResult>(ctx.distDir, job, job.timeoutMs + 30_000).result;
      raw[key] = result;
      const share = disturbanceOf(result);
      if (share !== undefined) disturbance = Math.max(disturbance ?? 0, share);
      metrics[`latency.${key}.p50`] = result.latencyP50Ms;
      metrics[`latency.${key}.p99`] = result.latencyP99Ms;
      metrics[`latency.${key}.p999`] = result.latencyP999Ms;
      metrics[`latency.${key}.rate`] = result.deliveryRate;
      metrics[`latency.${key}.cpuPerMsg`] = cpuPerMessageUs(result.brokerCpu, result.delivered);
      metrics[`latency.${key}.undelivered`] = result.undelivered;
      if (result.fellBehind) notes.push(`${rate} msg/s: 65,535 messages unacknowledged, sending stopped early (the broker could not keep up)`);
      if (result.undelivered > 0) notes.push(`${rate} msg/s: ${result.undelivered} of ${result.messages} measured messages never arrived`);
      notes.push(...cpuNotes(ctx, result, share).map((note) => `${rate} msg/s: ${note}`));
    }
    notes.push(...exitNote(broker, await server.stop()));
    return { metrics, notes, raw, ...(disturbance === undefined ? {} : { disturbance }) };
  });
}

export async function runCrash(ctx: Context, broker: BrokerId): Promise<RunOutcome> {
  const total = ctx.sizes.crashMessages;
  const killAt = Math.max(1, Math.floor(total * 0.4));
  const subscriberId = 'bench-crash-sub';
  const dataDir = freshDir(ctx, broker, 'crash');
  const notes: string[] = [];
  return withBrokers(async (started) => {
    const first = await start(ctx, broker, dataDir);
    started.push(first);
    await first.ready;
    // Broker CPU from ready to the kill, per message acknowledged by then (the killed process
    // cannot be read afterwards).
    const cpuAtReady = readCpu(first.pid);
    let cpuAtKill: ReturnType<typeof readCpu>;
    let killedAtAcks = -1;
    const fillJob: FillJob = {
      kind: 'fill',
      port: first.port,
      count: total,
      window: ctx.sizes.window,
      payloadSize: ctx.sizes.payloadSize,
      topic: 'bench/crash',
      subscriberId,
      publisherId: 'bench-crash-pub',
      progressEveryMs: 10,
      stallMs: ctx.sizes.stallMs,
      timeoutMs: Math.max(60_000, total * 10),
    };
    const fill = await startLoad<FillResult>(ctx.distDir, fillJob, fillJob.timeoutMs + 30_000, (event) => {
      if (event.type === 'progress' && event.acked >= killAt && killedAtAcks < 0) {
        killedAtAcks = event.acked;
        cpuAtKill = readCpu(first.pid);
        void first.kill();
      }
    }).result;
    if (killedAtAcks < 0) {
      // The whole stream was acknowledged before a progress line arrived: kill now, but say so.
      killedAtAcks = fill.acked;
      cpuAtKill = readCpu(first.pid);
      notes.push('the stream ended before the kill; killed after it');
    }
    const killStatus = await first.kill();
    if (killStatus.signal !== 'SIGKILL') notes.push(`${broker} ended with ${describeExit(killStatus)} before the SIGKILL`);

    const second = await start(ctx, broker, dataDir);
    started.push(second);
    await second.ready;
    const drainJob: DrainJob = {
      kind: 'drain',
      port: second.port,
      subscriberId,
      expected: fill.sent,
      idleMs: ctx.sizes.crashIdleMs,
      connectTimeoutMs: 10_000,
      timeoutMs: Math.max(60_000, total * 10),
    };
    const drain = await startLoad<DrainResult>(ctx.distDir, drainJob, drainJob.timeoutMs + 30_000).result;
    notes.push(...exitNote(broker, await second.stop()));

    const acked = fill.acked;
    const lost = rangesMissing(fill.ackedRanges, drain.receivedRanges);
    const receivedAcked = acked - lost;
    if (lost > 0) notes.push(`LOST ${lost} of ${acked} acknowledged messages`);
    return {
      metrics: {
        'crash.acked': acked,
        'crash.receivedAcked': receivedAcked,
        'crash.lost': lost,
        'crash.unacked': rangesCount(drain.receivedRanges) - receivedAcked,
        'crash.duplicates': drain.duplicates,
        'crash.sessionPresent': drain.sessionPresent ? 1 : 0,
        'crash.cpuPerMsg': killedAtAcks > 0 ? (cpuSpentMs(cpuAtReady, cpuAtKill) * 1000) / killedAtAcks : NaN,
      },
      notes,
      raw: {
        sent: fill.sent,
        acked,
        killedAtAcks,
        brokerCpuToKill: cpuAtReady && cpuAtKill ? { userMs: cpuAtKill.userMs - cpuAtReady.userMs, systemMs: cpuAtKill.systemMs - cpuAtReady.systemMs } : undefined,
        fillReason: fill.reason,
        drain: { ...drain, receivedRanges: drain.receivedRanges.slice(0, 20) },
      },
    };
  });
}

export async function runDisk(ctx: Context): Promise<DiskResult> {
  const job: DiskJob = { kind: 'disk', dir: join(ctx.workRoot, 'disk'), seconds: ctx.sizes.diskSeconds, maxOps: 1_000_000 };
  return startLoad<DiskResult>(ctx.distDir, job, ctx.sizes.diskSeconds * 5_000 + 60_000).result;
}

/** The bridge scenarios (bench/lib/bridge-scenarios.ts) are dispatched beside these by the runner. */
export const PER_BROKER: Record<Exclude<ScenarioId, 'disk' | BridgeScenarioId>, (ctx: Context, broker: BrokerId) => Promise<RunOutcome>> = {
  qos0: (ctx, broker) => runThroughput(ctx, broker, 'qos0'),
  qos1: (ctx, broker) => runThroughput(ctx, broker, 'qos1'),
  qos2: (ctx, broker) => runThroughput(ctx, broker, 'qos2'),
  fanout: (ctx, broker) => runThroughput(ctx, broker, 'fanout'),
  fanin: (ctx, broker) => runThroughput(ctx, broker, 'fanin'),
  latency: runLatency,
  offline: (ctx, broker) => runQueued(ctx, broker, 'offline', 1, ctx.sizes.queueSize),
  offline2: (ctx, broker) => runQueued(ctx, broker, 'offline2', 2, ctx.sizes.queueSize),
  startup: (ctx, broker) => runQueued(ctx, broker, 'startup', 1, ctx.sizes.smallStore),
  crash: runCrash,
  memory: (ctx, broker) => runMemory(ctx, broker),
  websocket: (ctx, broker) => runVariants(ctx, broker, 'websocket'),
  mqtt5: (ctx, broker) => runVariants(ctx, broker, 'mqtt5'),
};
