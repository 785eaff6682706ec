/**
 * The load generator: one process per job, separate from the broker under test and from the
 * runner. `node bench/dist/load.js '<job json>'`; answers with JSON lines on stdout (LoadEvent).
 */
import { closeSync, fdatasyncSync, fsyncSync, mkdirSync, openSync, rmSync, writeSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import type { IPublishPacket, QoS } from 'mqtt-packet';
import {
  toRanges,
  type DiskJob,
  type DiskResult,
  type DrainJob,
  type DrainResult,
  type FillJob,
  type FillResult,
  type Job,
  type LoadEvent,
  type ThroughputJob,
  type ThroughputResult,
} from './lib/jobs.js';
import { makePayload, payloadSentAt, payloadSeq, RawClient } from './lib/mqtt-client.js';

function emit(event: LoadEvent): void {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index]!;
}

/** Acknowledges an incoming PUBLISH the way its QoS requires. */
function ackIncoming(client: RawClient, packet: IPublishPacket): void {
  if (packet.qos === 1) client.puback(packet.messageId ?? 0);
  else if (packet.qos === 2) client.pubrec(packet.messageId ?? 0);
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

async function throughput(job: ThroughputJob): Promise<ThroughputResult> {
  const topic = Buffer.from(job.topic);
  const perPublisher = Math.max(1, Math.ceil(job.messages / job.publishers));
  const total = perPublisher * job.publishers;
  const subs = job.subscribers;
  const expectedDeliveries = total * subs;
  const qos = job.qos;

  const acked = new Uint8Array(total);
  /** When the broker acknowledged it (QoS 1/2) or it was sent (QoS 0): the overdue clock starts. */
  const settledAt = new Float64Array(total);
  const receipts = new Uint16Array(total);
  const seen = new Uint8Array(total * subs);
  const latencies = new Float64Array(expectedDeliveries);
  let deliveries = 0;
  let duplicates = 0;
  let completed = 0;
  let overdue = 0;
  let ackCount = 0;
  let firstSendAt = 0;
  let lastCompleteAt = 0;

  let finish!: () => void;
  let fail!: (error: Error) => void;
  const done = new Promise<void>((resolve, reject) => {
    finish = resolve;
    fail = reject;
  });

  const sent = new Int32Array(job.publishers);
  const completedBy = new Int32Array(job.publishers);
  const idToSeq = Array.from({ length: job.publishers }, () => new Int32Array(65536).fill(-1));
  const publishers: RawClient[] = [];
  /** Sent and not yet complete, in send order: what the window counts. */
  const open = new Set<number>();

  /** Leaves the window: fully delivered, or given up on as overdue. */
  const close = (seq: number) => {
    if (!open.delete(seq)) return;
    completed++;
    const p = Math.floor(seq / perPublisher);
    completedBy[p]!++;
    lastCompleteAt = performance.now();
    if (completed === total) finish();
    else pump(p);
  };
  const isComplete = (seq: number) => receipts[seq] === subs && (qos === 0 || acked[seq] === 1);

  const pump = (p: number) => {
    const client = publishers[p]!;
    while (sent[p]! < perPublisher && sent[p]! - completedBy[p]! < job.window) {
      const local = sent[p]!;
      const seq = p * perPublisher + local;
      const id = (local % 65535) + 1;
      if (qos > 0) idToSeq[p]![id] = seq;
      const now = performance.now();
      if (firstSendAt === 0) firstSendAt = now;
      if (qos === 0) settledAt[seq] = now;
      open.add(seq);
      client.publish(topic, makePayload(job.payloadSize, seq, now), qos as QoS, id);
      sent[p]!++;
    }
  };

  const onAck = (p: number, id: number) => {
    const seq = idToSeq[p]![id] ?? -1;
    if (seq < 0 || acked[seq] === 1) return;
    acked[seq] = 1;
    settledAt[seq] = performance.now();
    ackCount++;
    if (isComplete(seq)) close(seq);
  };

  // A message the broker acknowledged (or, QoS 0, that was sent) but did not deliver to every
  // subscriber within overdueMs leaves the window, so one lost message cannot stall the run; it
  // is counted as overdue and, if it never arrives, as not delivered.
  const overdueTimer = setInterval(() => {
    const now = performance.now();
    for (const seq of [...open]) {
      if (settledAt[seq]! > 0 && now - settledAt[seq]! > job.overdueMs && !isComplete(seq)) {
        overdue++;
        close(seq);
      }
    }
  }, 50);

  const subscribers: RawClient[] = [];
  for (let s = 0; s < subs; s++) {
    const { client } = await RawClient.connect(job.port, {
      clientId: `${job.idPrefix}-sub-${s}`,
      clean: false,
      setup: (client) => {
        client.onPublish = (packet) => {
          ackIncoming(client, packet);
          const payload = packet.payload as Buffer;
          const seq = payloadSeq(payload);
          if (seq < 0 || seq >= total) return;
          const slot = seq * subs + s;
          if (seen[slot] === 1) {
            duplicates++;
            return;
          }
          seen[slot] = 1;
          latencies[deliveries++] = performance.now() - payloadSentAt(payload);
          receipts[seq]!++;
          if (isComplete(seq)) close(seq);
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
      setup: (client) => {
        client.onPuback = (id) => onAck(p, id);
        client.onPubrec = (id) => client.pubrel(id);
        client.onPubcomp = (id) => onAck(p, id);
      },
    });
    publishers.push(client);
  }
  for (const client of [...subscribers, ...publishers]) {
    void client.closed.then((error) => {
      if (completed < total) fail(new Error(`a connection closed mid-run${error ? `: ${error.message}` : ''}`));
    });
  }

  for (let p = 0; p < job.publishers; p++) pump(p);
  try {
    await watchdog(
      done,
      () => deliveries + ackCount + overdue,
      job.stallMs,
      job.timeoutMs,
      () => `${deliveries}/${expectedDeliveries} delivered, ${ackCount}/${qos > 0 ? total : 0} acknowledged`,
    );
  } finally {
    clearInterval(overdueTimer);
  }

  const elapsedMs = lastCompleteAt - firstSendAt;
  // Stragglers released as overdue may still come: wait for them (not counted in the elapsed time)
  // until all arrived or none came for 2 × overdueMs (at least 2 s), at most 10 s.
  const graceMs = Math.max(2_000, 2 * job.overdueMs);
  const graceEnd = Date.now() + 10_000;
  let lastCount = deliveries;
  let lastChange = Date.now();
  while (deliveries < expectedDeliveries && Date.now() < graceEnd && Date.now() - lastChange < graceMs) {
    await sleep(50);
    if (deliveries !== lastCount) {
      lastCount = deliveries;
      lastChange = Date.now();
    }
  }
  // Latencies of everything that did arrive, overdue ones included.
  const sorted = latencies.subarray(0, deliveries).sort();
  await Promise.all([...publishers, ...subscribers].map((client) => client.disconnect()));
  return {
    publishes: total,
    deliveries,
    expectedDeliveries,
    undelivered: expectedDeliveries - deliveries,
    overdue,
    duplicates,
    elapsedMs,
    deliveryRate: (deliveries / elapsedMs) * 1000,
    publishRate: (total / elapsedMs) * 1000,
    latencyP50Ms: percentile(sorted, 50),
    latencyP99Ms: percentile(sorted, 99),
    latencyMaxMs: sorted.length ? sorted[sorted.length - 1]! : NaN,
  };
}

async function fill(job: FillJob): Promise<FillResult> {
  // The persistent subscriber: subscribe, then go away so everything queues for it.
  {
    const { client } = await RawClient.connect(job.port, { clientId: job.subscriberId, clean: false });
    await client.subscribe(job.topic, 1);
    await client.disconnect();
  }
  const topic = Buffer.from(job.topic);
  const acked = new Uint8Array(job.count);
  const idToSeq = new Int32Array(65536).fill(-1);
  let sent = 0;
  let ackCount = 0;
  let firstSendAt = 0;
  let lastAckAt = 0;
  let finish!: () => void;
  const done = new Promise<void>((resolve) => (finish = resolve));

  const { client } = await RawClient.connect(job.port, {
    clientId: job.publisherId,
    clean: true,
    setup: (client) => {
      client.onPuback = (id) => {
        const seq = idToSeq[id] ?? -1;
        if (seq < 0 || acked[seq] === 1) return;
        acked[seq] = 1;
        ackCount++;
        lastAckAt = performance.now();
        if (ackCount === job.count) finish();
        else pump();
      };
    },
  });
  const pump = () => {
    while (sent < job.count && sent - ackCount < job.window) {
      const id = (sent % 65535) + 1;
      idToSeq[id] = sent;
      const now = performance.now();
      if (firstSendAt === 0) firstSendAt = now;
      client.publish(topic, makePayload(job.payloadSize, sent, now), 1, id);
      sent++;
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
          client.onPublish = (packet) => {
            ackIncoming(client, packet);
            const seq = payloadSeq(packet.payload as Buffer);
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
            if (received >= job.expected) finish('expected');
          };
          client.onPubrel = (id) => client.pubcomp(id);
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
  let result;
  switch (job.kind) {
    case 'throughput':
      result = await throughput(job);
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
