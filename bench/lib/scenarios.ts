import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { brokerDefinitions, describeExit, startBroker, type BrokerId, type BrokerProcess } from './brokers.js';
import {
  rangesCount,
  rangesMissing,
  type DiskJob,
  type DiskResult,
  type DrainJob,
  type DrainResult,
  type FillJob,
  type FillResult,
  type ThroughputJob,
  type ThroughputResult,
} from './jobs.js';
import { startLoad } from './load-runner.js';
import type { ScenarioId } from './metrics.js';
import { dirSize, freePort, readIo, readMem } from './proc.js';

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
}

let sequence = 0;
function freshDir(ctx: Context, broker: BrokerId, scenario: string): string {
  const dir = join(ctx.workRoot, `${broker}-${scenario}-${++sequence}`);
  mkdirSync(dir, { recursive: true });
  return dir;
}

async function start(ctx: Context, broker: BrokerId, dataDir: string, port?: number): Promise<BrokerProcess> {
  const process = startBroker(ctx.definitions[broker], broker, dataDir, port ?? (await freePort()), ctx.workRoot, ctx.sizes.readyTimeoutMs);
  return process;
}

/** Runs body with the brokers it starts; every one still running afterwards is killed. */
async function withBrokers<T>(body: (started: BrokerProcess[]) => Promise<T>): Promise<T> {
  const started: BrokerProcess[] = [];
  try {
    return await body(started);
  } finally {
    await Promise.all(started.map((broker) => broker.kill()));
  }
}

/** A broker stopped by SIGTERM should exit 0; anything else is worth a note. */
function exitNote(broker: BrokerId, outcome: Awaited<ReturnType<BrokerProcess['stop']>>): string[] {
  if (outcome.forced) return [`${broker} did not exit within the stop timeout after SIGTERM; killed`];
  if (outcome.status.code !== 0) return [`${broker} exited with ${describeExit(outcome.status)} after SIGTERM`];
  return [];
}

const THROUGHPUT_SHAPES: Record<'qos0' | 'qos1' | 'qos2' | 'fanout' | 'fanin', { qos: 0 | 1 | 2; publishers: number; subscribers: number }> = {
  qos0: { qos: 0, publishers: 1, subscribers: 1 },
  qos1: { qos: 1, publishers: 1, subscribers: 1 },
  qos2: { qos: 2, publishers: 1, subscribers: 1 },
  fanout: { qos: 1, publishers: 1, subscribers: 10 },
  fanin: { qos: 1, publishers: 10, subscribers: 1 },
};

export async function runThroughput(ctx: Context, broker: BrokerId, scenario: keyof typeof THROUGHPUT_SHAPES): Promise<RunOutcome> {
  const shape = THROUGHPUT_SHAPES[scenario];
  return withBrokers(async (started) => {
    const server = await start(ctx, broker, freshDir(ctx, broker, scenario));
    started.push(server);
    await server.ready;
    const job: ThroughputJob = {
      kind: 'throughput',
      port: server.port,
      ...shape,
      // Fan-out: messages/10 publishes × 10 subscribers; fan-in: 10 publishers × messages/10.
      messages: Math.max(1, Math.round(ctx.sizes.messages / shape.subscribers)),
      window: ctx.sizes.window,
      payloadSize: ctx.sizes.payloadSize,
      topic: `bench/${scenario}`,
      idPrefix: `bench-${scenario}`,
      overdueMs: ctx.sizes.overdueMs,
      stallMs: ctx.sizes.stallMs,
      timeoutMs: Math.max(60_000, ctx.sizes.messages * 10),
    };
    const result = await startLoad<ThroughputResult>(ctx.distDir, job, job.timeoutMs + 30_000).result;
    const mem = readMem(server.pid);
    const notes: string[] = [];
    if (result.duplicates > 0) notes.push(`${result.duplicates} duplicate deliveries`);
    if (result.undelivered > 0) {
      notes.push(`${result.undelivered} of ${result.expectedDeliveries} deliveries never arrived (not even ${Math.max(2, (2 * ctx.sizes.overdueMs) / 1000)} s after the run)`);
    }
    if (result.overdue > 0) {
      notes.push(`${result.overdue} messages not delivered within ${ctx.sizes.overdueMs} ms of their ack/send (released from the window; max latency ${Math.round(result.latencyMaxMs)} ms)`);
    }
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
      },
      notes,
      raw: result,
    };
  });
}

export async function runOffline(ctx: Context, broker: BrokerId): Promise<RunOutcome> {
  const queue = ctx.sizes.queueSize;
  const subscriberId = 'bench-offline-sub';
  const dataDir = freshDir(ctx, broker, 'offline');
  const notes: string[] = [];
  // Generous bounds: the stall watchdog is what normally ends a broken run.
  const longTimeout = Math.max(120_000, queue * 5);
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
      topic: 'bench/offline',
      subscriberId,
      publisherId: 'bench-offline-pub',
      progressEveryMs: 1000,
      stallMs: ctx.sizes.stallMs,
      timeoutMs: longTimeout,
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
    const writeBytes = ioBefore && ioAfter ? ioAfter.writeBytes - ioBefore.writeBytes : NaN;
    return {
      metrics: {
        'offline.fillRate': fill.ackRate,
        'offline.rssAfterFill': memAfterFill?.rss ?? NaN,
        'offline.writePerMsg': writeBytes / queue,
        'offline.dataAfterFill': dataAfterFill,
        'offline.stopMs': stopped.ms,
        'offline.dataAfterStop': dataAfterStop,
        'offline.startToConnack': connack.at - second.spawnedAt,
        'offline.rssAfterRestart': rssAtConnack,
        'offline.drainRate': drain.drainRate,
        'offline.rssDrainPeak': Math.max(memEnd?.hwm ?? 0, rssPeakSampled) || NaN,
        'offline.drained': drain.received,
        'offline.queued': queue,
      },
      notes,
      raw: { fill: { ...fill, ackedRanges: undefined }, drain: { ...drain, receivedRanges: drain.receivedRanges.slice(0, 20) }, writeBytes },
    };
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
        void first.kill();
      }
    }).result;
    if (killedAtAcks < 0) {
      // The whole stream was acknowledged before a progress line arrived: kill now, but say so.
      killedAtAcks = fill.acked;
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
      },
      notes,
      raw: {
        sent: fill.sent,
        acked,
        killedAtAcks,
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

export const PER_BROKER: Record<Exclude<ScenarioId, 'disk'>, (ctx: Context, broker: BrokerId) => Promise<RunOutcome>> = {
  qos0: (ctx, broker) => runThroughput(ctx, broker, 'qos0'),
  qos1: (ctx, broker) => runThroughput(ctx, broker, 'qos1'),
  qos2: (ctx, broker) => runThroughput(ctx, broker, 'qos2'),
  fanout: (ctx, broker) => runThroughput(ctx, broker, 'fanout'),
  fanin: (ctx, broker) => runThroughput(ctx, broker, 'fanin'),
  offline: runOffline,
  crash: runCrash,
};
