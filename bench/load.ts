/**
 * The load generator: one process per job, separate from the broker under test and from the
 * runner. `node bench/dist/load.js '<job json>'`; answers with JSON lines on stdout (LoadEvent)
 * and reads LoadCommand lines on stdin.
 *
 * It shares the machine's cores with the broker, so it is built to cost as little as possible per
 * message (see bench/README.md, "The load generator's own cost"): no object, promise or closure per
 * message, packets written straight into one buffer per socket and tick, state in typed arrays.
 */
import { closeSync, fdatasyncSync, fsyncSync, mkdirSync, openSync, rmSync, writeSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { ClassicLevel } from 'classic-level';
import {
  toRanges,
  type CpuSpent,
  type DiskJob,
  type DiskResult,
  type DrainJob,
  type DrainResult,
  type FillJob,
  type FillResult,
  type Job,
  type LoadCommand,
  type LoadEvent,
  type OpenLoopJob,
  type OpenLoopResult,
  type ThroughputJob,
  type ThroughputResult,
} from './lib/jobs.js';
import { connectProbe, retainedFill, sessionsFill, storeCheck } from './lib/memory-load.js';
import { payloadSentAt, payloadSeq, RawClient } from './lib/mqtt-client.js';
import { readCpu, readMachineCpu, type CpuTimes, type MachineCpu } from './lib/proc.js';
import { PublishTemplate, typicalV5PublishProperties } from './lib/wire.js';

function emit(event: LoadEvent): void {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** The broker's pid, given in the job or (drain: the broker starts after the load) on stdin. */
let brokerPid: number | undefined;
/** A second broker measured beside it (bridge: the upstream). */
let upstreamPid: number | undefined;

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index]!;
}

/**
 * CPU of the broker (from /proc), of this process and of the whole machine over one measured
 * interval: what the machine spent beyond the two is other work that disturbed the measurement.
 */
class CpuWatch {
  #broker: CpuTimes | undefined;
  #upstream: CpuTimes | undefined;
  #load: NodeJS.CpuUsage | undefined;
  #machine: MachineCpu | undefined;
  #startedAt = 0;
  #spent: Pick<ThroughputResult, 'brokerCpu' | 'loadCpu' | 'machineCpu' | 'upstreamCpu'> = {};

  start(): void {
    this.#broker = brokerPid === undefined ? undefined : readCpu(brokerPid);
    this.#upstream = upstreamPid === undefined ? undefined : readCpu(upstreamPid);
    this.#load = process.cpuUsage();
    this.#machine = readMachineCpu();
    this.#startedAt = performance.now();
  }

  stop(): void {
    if (!this.#load) return;
    const wallMs = performance.now() - this.#startedAt;
    const broker = brokerPid === undefined ? undefined : readCpu(brokerPid);
    const upstream = upstreamPid === undefined ? undefined : readCpu(upstreamPid);
    const load = process.cpuUsage(this.#load);
    const machine = readMachineCpu();
    this.#spent = {
      loadCpu: { userMs: load.user / 1000, systemMs: load.system / 1000 },
      ...(this.#broker && broker ? { brokerCpu: { userMs: broker.userMs - this.#broker.userMs, systemMs: broker.systemMs - this.#broker.systemMs } } : {}),
      ...(this.#upstream && upstream ? { upstreamCpu: { userMs: upstream.userMs - this.#upstream.userMs, systemMs: upstream.systemMs - this.#upstream.systemMs } } : {}),
      ...(this.#machine && machine
        ? { machineCpu: { busyMs: machine.busyMs - this.#machine.busyMs, stealMs: machine.stealMs - this.#machine.stealMs, wallMs, cores: machine.cores } }
        : {}),
    };
    this.#load = undefined;
  }

  get spent(): Pick<ThroughputResult, 'brokerCpu' | 'loadCpu' | 'machineCpu' | 'upstreamCpu'> {
    return this.#spent;
  }
}

/**
 * Runs `body` until it settles, failing it when `progress()` stops changing for stallMs or the
 * whole job exceeds timeoutMs.
 */
function watchdog<T>(body: Promise<T>, progress: () => number, stallMs: number, timeoutMs: number, what: () => string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const started = Date.now();
    let last = progress();
    let lastChange = started;
    const timer = setInterval(() => {
      const now = Date.now();
      const current = progress();
      if (current !== last) {
        last = current;
        lastChange = now;
      }
      if (now - lastChange > stallMs) {
        clearInterval(timer);
        reject(new Error(`stalled: no progress for ${stallMs} ms (${what()})`));
      } else if (now - started > timeoutMs) {
        clearInterval(timer);
        reject(new Error(`timed out after ${timeoutMs} ms (${what()})`));
      }
    }, 100);
    body.then(
      (value) => {
        clearInterval(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearInterval(timer);
        reject(error instanceof Error ? error : new Error(String(error)));
      },
    );
  });
}

/** Waits until `count()` reaches `target`, or stops growing for idleMs, or deadlineMs passes. */
async function settle(count: () => number, target: number, idleMs: number, deadlineMs: number): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  let last = count();
  let lastChange = Date.now();
  while (count() < target && Date.now() < deadline && Date.now() - lastChange < idleMs) {
    await sleep(20);
    if (count() !== last) {
      last = count();
      lastChange = Date.now();
    }
  }
}

/** Fails the job if a connection closes before `isOver()`. */
function failOnClose(clients: RawClient[], isOver: () => boolean, fail: (error: Error) => void): void {
  for (const client of clients) {
    void client.closed.then((error) => {
      if (!isOver()) fail(new Error(`a connection closed mid-run${error ? `: ${error.message}` : ''}`));
    });
  }
}

async function throughput(job: ThroughputJob): Promise<ThroughputResult> {
  // Each publisher first sends its share of the warm-up, then its measured messages, through the
  // same connections and the same full window: the measured part starts in a steady state, not
  // while the broker's and the generator's JIT compilers are still at work. The warm-up ends after
  // warmupMs (the rest of it is skipped) or when its messages are all sent, whichever comes first:
  // a count alone would warm a fast broker for a fraction of a second and a slow one for minutes.
  const warmupPer = Math.ceil((job.warmup ?? 0) / job.publishers);
  // A publisher sends at least minMeasuredPer measured messages, then more until measureMs has
  // passed since the first measured send, up to measuredPer (the slots kept for it).
  const minMeasuredPer = Math.max(1, Math.ceil(job.messages / job.publishers));
  const measuredPer = Math.max(minMeasuredPer, Math.ceil((job.maxMessages ?? 0) / job.publishers));
  const perPublisher = warmupPer + measuredPer;
  const total = perPublisher * job.publishers;
  const subs = job.subscribers;
  const qos = job.qos;
  const releaseOnAck = job.openUntil === 'ack' && qos > 0;
  const protocol = job.protocol ?? 4;
  const transport = job.transport ?? { kind: 'tcp' as const };
  const template = new PublishTemplate(job.topic, qos, job.payloadSize, protocol === 5 ? { properties: typicalV5PublishProperties() } : {});
  if (job.brokerPid !== undefined) brokerPid = job.brokerPid;
  if (job.upstreamPid !== undefined) upstreamPid = job.upstreamPid;
  const isMeasured = (seq: number) => seq % perPublisher >= warmupPer;

  const acked = new Uint8Array(total);
  /** When the broker acknowledged it (QoS 1/2) or it was sent (QoS 0): the overdue clock starts. */
  const settledAt = new Float64Array(total);
  const receipts = new Uint16Array(total);
  /** Out of the publisher's window (see openUntil). */
  const released = new Uint8Array(total);
  /** Delivered to every subscriber and acknowledged, or given up on as overdue. */
  const finished = new Uint8Array(total);
  const seen = new Uint8Array(total * subs);
  const latencies = new Float64Array(measuredPer * job.publishers * subs);
  /** Measured deliveries (warm-up ones only count as progress). */
  let deliveries = 0;
  let allDeliveries = 0;
  let duplicates = 0;
  let finishedCount = 0;
  let overdue = 0;
  let ackCount = 0;
  let firstSendAt = 0;
  let lastCompleteAt = 0;
  const cpu = new CpuWatch();

  let finish!: () => void;
  let fail!: (error: Error) => void;
  const done = new Promise<void>((resolve, reject) => {
    finish = resolve;
    fail = reject;
  });

  const sent = new Int32Array(job.publishers);
  /** Per publisher: the packet id of its last send (skipped warm-up messages take none). */
  const lastId = new Int32Array(job.publishers);
  const releasedBy = new Int32Array(job.publishers);
  let warmupEndsAt = Infinity;
  let warmupSkipped = 0;
  /** Measured slots left unsent once measureMs was over. */
  let tailSkipped = 0;
  /** Per publisher: the oldest message (local index) not finished yet, where the overdue scan starts. */
  const oldest = new Int32Array(job.publishers);
  const idToSeq = Array.from({ length: job.publishers }, () => new Int32Array(65536).fill(-1));
  const publishers: RawClient[] = [];

  /**
   * This publisher's slots from the next unsent one up to `end` will not be sent: they count as
   * finished and out of the window, and take no packet id. Returns how many.
   */
  const skipUnsent = (p: number, end: number): number => {
    const from = sent[p]!;
    for (let local = from; local < end; local++) {
      const seq = p * perPublisher + local;
      finished[seq] = 1;
      released[seq] = 1;
    }
    const skipped = end - from;
    finishedCount += skipped;
    releasedBy[p]! += skipped;
    sent[p] = end;
    return skipped;
  };
  /** Every slot is finished: the run is over. */
  const finishIfDone = (): boolean => {
    if (finishedCount !== total) return false;
    lastCompleteAt = performance.now();
    cpu.stop();
    finish();
    return true;
  };
  /** The warm-up time is over: this publisher's unsent warm-up messages are skipped. */
  const skipRestOfWarmup = (p: number) => {
    warmupSkipped += skipUnsent(p, warmupPer);
  };
  /** This publisher measured long enough: its unsent measured slots are skipped. */
  const endMeasurement = (p: number) => {
    tailSkipped += skipUnsent(p, perPublisher);
    finishIfDone();
  };
  const pump = (p: number) => {
    const client = publishers[p]!;
    const ids = idToSeq[p]!;
    if (sent[p]! < warmupPer && performance.now() >= warmupEndsAt) skipRestOfWarmup(p);
    let local = sent[p]!;
    const limit = Math.min(perPublisher, releasedBy[p]! + job.window);
    if (local >= limit) return;
    // Everything sent now leaves in one write at the end of this tick: one send time for all.
    const now = performance.now();
    if (warmupEndsAt === Infinity) warmupEndsAt = now + (job.warmupMs ?? Infinity);
    let id = lastId[p]!;
    for (; local < limit; local++) {
      if (local === warmupPer && firstSendAt === 0) {
        firstSendAt = now;
        cpu.start();
      }
      if (local >= warmupPer + minMeasuredPer && !(now - firstSendAt < (job.measureMs ?? 0))) {
        lastId[p] = id;
        sent[p] = local;
        endMeasurement(p);
        return;
      }
      const seq = p * perPublisher + local;
      id = (id % 65535) + 1;
      if (qos > 0) ids[id] = seq;
      else settledAt[seq] = now;
      client.publish(template, id, seq, now);
    }
    lastId[p] = id;
    sent[p] = local;
  };
  const release = (seq: number) => {
    if (released[seq] === 1) return;
    released[seq] = 1;
    const p = (seq / perPublisher) | 0;
    releasedBy[p]!++;
    pump(p);
  };
  const complete = (seq: number) => {
    if (finished[seq] === 1) return;
    finished[seq] = 1;
    finishedCount++;
    if (!finishIfDone()) release(seq);
  };
  const onAck = (p: number, id: number) => {
    const seq = idToSeq[p]![id]!;
    if (seq < 0 || acked[seq] === 1) return;
    acked[seq] = 1;
    settledAt[seq] = performance.now();
    ackCount++;
    if (receipts[seq] === subs) complete(seq);
    else if (releaseOnAck) release(seq);
  };

  // A message the broker acknowledged (or, QoS 0, that was sent) but did not deliver to every
  // subscriber within overdueMs leaves the window, so one lost message cannot stall the run; it
  // is counted as overdue and, if it never arrives, as not delivered.
  const overdueTimer = setInterval(() => {
    const now = performance.now();
    for (let p = 0; p < job.publishers; p++) {
      const base = p * perPublisher;
      while (oldest[p]! < sent[p]! && finished[base + oldest[p]!] === 1) oldest[p]!++;
      for (let local = oldest[p]!; local < sent[p]!; local++) {
        const seq = base + local;
        if (finished[seq] === 0 && settledAt[seq]! > 0 && now - settledAt[seq]! > job.overdueMs) {
          if (isMeasured(seq)) overdue++;
          complete(seq);
        }
      }
    }
  }, 50);

  const subscribers: RawClient[] = [];
  for (let s = 0; s < subs; s++) {
    const { client } = await RawClient.connect(job.subscriberPort ?? job.port, {
      clientId: `${job.idPrefix}-sub-${s}`,
      clean: false,
      transport,
      protocol,
      setup: (client) => {
        client.onPublish = (data, start, end, packetQos, id) => {
          client.acknowledge(packetQos, id);
          const seq = payloadSeq(data, start, end);
          if (seq < 0 || seq >= total) return;
          const slot = seq * subs + s;
          if (seen[slot] === 1) {
            duplicates++;
            return;
          }
          seen[slot] = 1;
          allDeliveries++;
          if (isMeasured(seq)) latencies[deliveries++] = performance.now() - payloadSentAt(data, start, end);
          if (++receipts[seq]! === subs && (qos === 0 || acked[seq] === 1)) complete(seq);
        };
        client.onPubrel = (id) => client.pubcomp(id);
      },
    });
    await client.subscribe(job.topic, qos);
    subscribers.push(client);
  }
  for (let p = 0; p < job.publishers; p++) {
    const { client } = await RawClient.connect(job.port, {
      clientId: `${job.idPrefix}-pub-${p}`,
      clean: true,
      transport,
      protocol,
      setup: (client) => {
        client.onPuback = (id) => onAck(p, id);
        client.onPubrec = (id) => client.pubrel(id);
        client.onPubcomp = (id) => onAck(p, id);
      },
    });
    publishers.push(client);
  }
  failOnClose([...subscribers, ...publishers], () => finishedCount === total, (error) => fail(error));

  for (let p = 0; p < job.publishers; p++) pump(p);
  try {
    await watchdog(
      done,
      () => allDeliveries + ackCount + overdue,
      job.stallMs,
      job.timeoutMs,
      () => `${deliveries}/${(measuredPer * job.publishers - tailSkipped) * subs} delivered, ${ackCount} acknowledged`,
    );
  } finally {
    clearInterval(overdueTimer);
  }

  const elapsedMs = lastCompleteAt - firstSendAt;
  const measured = measuredPer * job.publishers - tailSkipped;
  const expectedDeliveries = measured * subs;
  // Stragglers released as overdue may still come: wait for them (not counted in the elapsed time)
  // until all arrived or none came for 2 × overdueMs (at least 2 s), at most 10 s.
  await settle(() => deliveries, expectedDeliveries, Math.max(2_000, 2 * job.overdueMs), 10_000);
  // Latencies of everything that did arrive, overdue ones included.
  const sorted = latencies.subarray(0, deliveries).sort();
  await Promise.all([...publishers, ...subscribers].map((client) => client.disconnect()));
  return {
    publishes: measured,
    warmupPublishes: warmupPer * job.publishers - warmupSkipped,
    deliveries,
    expectedDeliveries,
    undelivered: expectedDeliveries - deliveries,
    overdue,
    duplicates,
    elapsedMs,
    deliveryRate: (deliveries / elapsedMs) * 1000,
    publishRate: (measured / elapsedMs) * 1000,
    latencyP50Ms: percentile(sorted, 50),
    latencyP99Ms: percentile(sorted, 99),
    latencyP999Ms: percentile(sorted, 99.9),
    latencyMaxMs: sorted.length ? sorted[sorted.length - 1]! : NaN,
    ...cpu.spent,
  };
}

async function openLoop(job: OpenLoopJob): Promise<OpenLoopResult> {
  if (job.brokerPid !== undefined) brokerPid = job.brokerPid;
  const warmup = Math.round(job.rate * job.warmupSeconds);
  const measured = Math.round(job.rate * job.seconds);
  const total = warmup + measured;
  const template = new PublishTemplate(job.topic, 1, job.payloadSize);
  const seen = new Uint8Array(total);
  const latencies = new Float64Array(measured);
  /** Packet id → sequence number while unacknowledged, -1 when free. */
  const idToSeq = new Int32Array(65536).fill(-1);
  let delivered = 0;
  let duplicates = 0;
  let sent = 0;
  let fellBehind = false;
  let lastDeliveryAt = 0;
  const cpu = new CpuWatch();
  let cpuStopped = false;

  const { client: subscriber } = await RawClient.connect(job.port, {
    clientId: `${job.idPrefix}-sub`,
    clean: false,
    setup: (client) => {
      client.onPublish = (data, start, end, qos, id) => {
        client.acknowledge(qos, id);
        const seq = payloadSeq(data, start, end);
        if (seq < 0 || seq >= total) return;
        if (seen[seq] === 1) {
          duplicates++;
          return;
        }
        seen[seq] = 1;
        if (seq < warmup) return;
        const now = performance.now();
        latencies[delivered++] = now - payloadSentAt(data, start, end);
        lastDeliveryAt = now;
        if (delivered === measured && !cpuStopped) {
          cpuStopped = true;
          cpu.stop();
        }
      };
    },
  });
  await subscriber.subscribe(job.topic, 1);
  const { client: publisher } = await RawClient.connect(job.port, {
    clientId: `${job.idPrefix}-pub`,
    clean: true,
    setup: (client) => {
      client.onPuback = (id) => {
        idToSeq[id] = -1;
      };
    },
  });
  let over = false;
  let fail!: (error: Error) => void;
  const failed = new Promise<never>((_, reject) => (fail = reject));
  failed.catch(() => {});
  failOnClose([subscriber, publisher], () => over, (error) => fail(error));

  // Open loop in 1 ms bursts: at each millisecond k every message due by then is sent, stamped with
  // k (when its burst was due), so a late tick shows as latency (no coordinated omission), whoever
  // was late, while the 1 ms timer's granularity adds nothing by itself.
  const startAt = performance.now() + 10;
  const burstOf = (seq: number) => Math.ceil((seq * 1000) / job.rate);
  let timer: NodeJS.Timeout | undefined;
  let allSent!: () => void;
  const sending = new Promise<void>((resolve) => (allSent = resolve));
  const tick = () => {
    const ms = Math.floor(performance.now() - startAt);
    const due = Math.min(total, Math.floor((ms * job.rate) / 1000) + 1);
    for (; sent < due; sent++) {
      const id = (sent % 65535) + 1;
      if (idToSeq[id] !== -1) {
        fellBehind = true;
        allSent();
        return;
      }
      if (sent === warmup) cpu.start();
      idToSeq[id] = sent;
      publisher.publish(template, id, sent, startAt + burstOf(sent));
    }
    if (sent >= total) allSent();
    else timer = setTimeout(tick, Math.max(0, startAt + burstOf(sent) - performance.now()));
  };
  const measuredFrom = startAt + burstOf(warmup);
  timer = setTimeout(tick, Math.max(0, startAt - performance.now()));
  try {
    await Promise.race([sending, failed]);
    const deadline = Math.max(1_000, job.timeoutMs - (performance.now() - startAt));
    await Promise.race([settle(() => delivered, sent > warmup ? sent - warmup : 0, job.idleMs, deadline), failed]);
  } finally {
    clearTimeout(timer);
    over = true;
  }
  if (!cpuStopped) cpu.stop();
  const sorted = latencies.subarray(0, delivered).sort();
  await Promise.all([publisher.disconnect(), subscriber.disconnect()]);
  const elapsedMs = lastDeliveryAt - measuredFrom;
  return {
    rate: job.rate,
    messages: measured,
    delivered,
    undelivered: measured - delivered,
    duplicates,
    fellBehind,
    deliveryRate: elapsedMs > 0 ? (delivered / elapsedMs) * 1000 : NaN,
    latencyP50Ms: percentile(sorted, 50),
    latencyP99Ms: percentile(sorted, 99),
    latencyP999Ms: percentile(sorted, 99.9),
    latencyMaxMs: sorted.length ? sorted[sorted.length - 1]! : NaN,
    elapsedMs,
    ...cpu.spent,
  };
}

async function fill(job: FillJob): Promise<FillResult> {
  const qos = job.qos ?? 1;
  if (job.brokerPid !== undefined) brokerPid = job.brokerPid;
  // The persistent subscriber: subscribe, then go away so everything queues for it.
  if (job.subscriberId !== undefined) {
    const { client } = await RawClient.connect(job.port, { clientId: job.subscriberId, clean: false });
    await client.subscribe(job.topic, qos);
    await client.disconnect();
  }
  const template = new PublishTemplate(job.topic, qos, job.payloadSize);
  const acked = new Uint8Array(job.count);
  const idToSeq = new Int32Array(65536).fill(-1);
  let sent = 0;
  let ackCount = 0;
  let firstSendAt = 0;
  let lastAckAt = 0;
  const cpu = new CpuWatch();
  let finish!: () => void;
  const done = new Promise<void>((resolve) => (finish = resolve));

  const onAck = (id: number) => {
    const seq = idToSeq[id]!;
    if (seq < 0 || acked[seq] === 1) return;
    acked[seq] = 1;
    ackCount++;
    if (ackCount === job.count) {
      lastAckAt = performance.now();
      cpu.stop();
      finish();
    } else pump();
  };
  const { client } = await RawClient.connect(job.port, {
    clientId: job.publisherId,
    clean: true,
    setup: (client) => {
      client.onPuback = onAck;
      client.onPubrec = (id) => client.pubrel(id);
      client.onPubcomp = onAck;
    },
  });
  const pump = () => {
    const limit = Math.min(job.count, ackCount + job.window);
    if (sent >= limit) return;
    const now = performance.now();
    if (firstSendAt === 0) {
      firstSendAt = now;
      cpu.start();
    }
    for (; sent < limit; sent++) {
      const id = (sent % 65535) + 1;
      idToSeq[id] = sent;
      client.publish(template, id, sent, now);
    }
  };
  const progress = setInterval(() => emit({ type: 'progress', sent, acked: ackCount }), job.progressEveryMs);
  let reason: string | undefined;
  pump();
  try {
    await watchdog(
      Promise.race([
        done,
        client.closed.then((error) => {
          throw new Error(`connection closed${error ? `: ${error.message}` : ''}`);
        }),
      ]),
      () => ackCount,
      job.stallMs,
      job.timeoutMs,
      () => `${ackCount}/${job.count} acknowledged`,
    );
  } catch (error) {
    reason = error instanceof Error ? error.message : String(error);
  } finally {
    clearInterval(progress);
  }
  emit({ type: 'progress', sent, acked: ackCount });
  if (reason === undefined) await client.disconnect();
  else client.destroy();
  const elapsedMs = (lastAckAt || performance.now()) - firstSendAt;
  return {
    completed: reason === undefined,
    ...(reason === undefined ? {} : { reason }),
    sent,
    acked: ackCount,
    ackedRanges: toRanges(acked),
    elapsedMs,
    ackRate: (ackCount / elapsedMs) * 1000,
    ...cpu.spent,
  };
}

async function drain(job: DrainJob): Promise<DrainResult> {
  const seen = new Uint8Array(job.expected);
  const extra = new Set<number>();
  let received = 0;
  let duplicates = 0;
  let outOfOrder = 0;
  let lastSeq = -1;
  let lastAt = 0;
  let attempts = 0;
  const cpu = new CpuWatch();
  let brokerCpuAtConnect: CpuTimes | undefined;
  let finish!: (how: DrainResult['stoppedBy']) => void;
  const done = new Promise<DrainResult['stoppedBy']>((resolve) => (finish = resolve));

  emit({ type: 'waiting' });
  const deadline = Date.now() + job.connectTimeoutMs;
  let connected: Awaited<ReturnType<typeof RawClient.connect>> | undefined;
  while (!connected) {
    attempts++;
    try {
      connected = await RawClient.connect(job.port, {
        clientId: job.subscriberId,
        clean: false,
        timeoutMs: Math.max(1, deadline - Date.now()),
        setup: (client) => {
          client.onPublish = (data, start, end, qos, id) => {
            client.acknowledge(qos, id);
            const seq = payloadSeq(data, start, end);
            lastAt = performance.timeOrigin + performance.now();
            if (seq < 0) return;
            const known = seq < job.expected ? seen[seq] === 1 : extra.has(seq);
            if (known) {
              duplicates++;
              return;
            }
            if (seq < job.expected) seen[seq] = 1;
            else extra.add(seq);
            if (seq < lastSeq) outOfOrder++;
            lastSeq = seq;
            received++;
            if (received >= job.expected) {
              cpu.stop();
              finish('expected');
            }
          };
          client.onPubrel = (id) => client.pubcomp(id);
          // Messages may come in the same segment as CONNACK: the interval starts at the socket.
          cpu.start();
          brokerCpuAtConnect = brokerPid === undefined ? undefined : readCpu(brokerPid);
        },
      });
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`could not connect within ${job.connectTimeoutMs} ms: ${String(error)}`);
      await sleep(2);
    }
  }
  const { client, sessionPresent, connackAt } = connected;
  emit({ type: 'connack', at: connackAt, sessionPresent });
  lastAt = lastAt || connackAt;
  if (job.expected === 0) finish('expected');
  void client.closed.then(() => finish('closed'));
  const timer = setInterval(() => {
    const now = performance.timeOrigin + performance.now();
    if (now - lastAt > job.idleMs) finish('idle');
    else if (now - connackAt > job.timeoutMs) finish('timeout');
  }, 50);
  const stoppedBy = await done;
  clearInterval(timer);
  if (stoppedBy !== 'expected') cpu.stop();
  await client.disconnect();
  const drainMs = Math.max(0, lastAt - connackAt);
  const receivedRanges = toRanges(seen);
  for (const seq of [...extra].sort((a, b) => a - b)) receivedRanges.push([seq, seq]);
  return {
    sessionPresent,
    connackAt,
    connectAttempts: attempts,
    received,
    duplicates,
    outOfOrder,
    receivedRanges,
    drainMs,
    drainRate: drainMs > 0 ? (received / drainMs) * 1000 : NaN,
    stoppedBy,
    ...cpu.spent,
    ...(brokerCpuAtConnect ? { brokerCpuAtConnect } : {}),
  };
}

async function disk(job: DiskJob): Promise<DiskResult> {
  mkdirSync(job.dir, { recursive: true });
  const record = Buffer.alloc(64, 0x2e);
  const timed = async (body: () => void | Promise<void>, opsPerCall = 1): Promise<number> => {
    const start = performance.now();
    const end = start + job.seconds * 1000;
    let ops = 0;
    while (ops < job.maxOps && performance.now() < end) {
      await body();
      ops += opsPerCall;
    }
    return (ops / (performance.now() - start)) * 1000;
  };
  const appendFile = join(job.dir, 'append.bin');
  const appendRate = async (sync: (fd: number) => void) => {
    const fd = openSync(appendFile, 'a');
    try {
      return await timed(() => {
        writeSync(fd, record);
        sync(fd);
      });
    } finally {
      closeSync(fd);
    }
  };
  const appendFsyncPerS = await appendRate(fsyncSync);
  const appendFdatasyncPerS = await appendRate(fdatasyncSync);

  const db = new ClassicLevel<string, Buffer>(join(job.dir, 'level'), { valueEncoding: 'buffer' });
  await db.open();
  let key = 0;
  const next = () => `k${(key++).toString().padStart(10, '0')}`;
  const levelSyncBatchPerS = await timed(() => db.batch([{ type: 'put', key: next(), value: record }], { sync: true }));
  const levelNoSyncBatchPerS = await timed(() => db.batch([{ type: 'put', key: next(), value: record }], { sync: false }));
  const levelSync100PutsPerS = await timed(
    () => db.batch(Array.from({ length: 100 }, () => ({ type: 'put' as const, key: next(), value: record })), { sync: true }),
    100,
  );
  await db.close();
  rmSync(job.dir, { recursive: true, force: true });

  let filesystem = 'unknown';
  try {
    filesystem = execFileSync('df', ['--output=fstype,source', job.dir.replace(/\/[^/]*$/, '') || '/'], { encoding: 'utf8' })
      .trim()
      .split('\n')
      .slice(1)
      .join(' ')
      .replace(/\s+/g, ' ');
  } catch {
    // df missing: leave unknown
  }
  return { appendFsyncPerS, appendFdatasyncPerS, levelSyncBatchPerS, levelNoSyncBatchPerS, levelSync100PutsPerS, filesystem };
}

async function main(): Promise<void> {
  const job = JSON.parse(process.argv[2] ?? '{}') as Job;
  createInterface({ input: process.stdin }).on('line', (line) => {
    try {
      const command = JSON.parse(line) as LoadCommand;
      if (command.type === 'broker') brokerPid = command.pid;
    } catch {
      // not a command: ignored
    }
  });
  let result;
  switch (job.kind) {
    case 'throughput':
      result = await throughput(job);
      break;
    case 'openloop':
      result = await openLoop(job);
      break;
    case 'fill':
      result = await fill(job);
      break;
    case 'drain':
      result = await drain(job);
      break;
    case 'disk':
      result = await disk(job);
      break;
    case 'retained-fill':
      result = await retainedFill(job);
      break;
    case 'sessions-fill':
      result = await sessionsFill(job);
      break;
    case 'connect-probe':
      result = await connectProbe(job);
      break;
    case 'store-check':
      result = await storeCheck(job);
      break;
    default:
      throw new Error(`unknown job ${JSON.stringify(job)}`);
  }
  emit({ type: 'result', result });
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    emit({ type: 'error', message: error instanceof Error ? error.message : String(error) });
    process.exit(1);
  },
);
