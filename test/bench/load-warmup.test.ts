import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ThroughputJob, ThroughputResult } from '../../bench/lib/jobs.js';

// The load generator as the bench runs it (bench/dist, built by pretest), against the trivial
// sink: what is under test is the generator's timed warm-up, which skips the warm-up messages
// still unsent when its time is up.
const benchDist = join(dirname(fileURLToPath(import.meta.url)), '../../bench/dist');

let sink: ChildProcess;
let port: number;

async function freePort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  server.close();
  return port;
}

beforeAll(async () => {
  port = await freePort();
  sink = spawn(process.execPath, [join(benchDist, 'peers', 'sink-server.js'), '--port', String(port)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [chunk] = (await once(sink.stdout!, 'data')) as [Buffer];
  expect(chunk.toString()).toContain('listening on');
});

afterAll(() => {
  sink?.kill('SIGTERM');
});

async function runLoad(job: ThroughputJob): Promise<ThroughputResult> {
  const load = spawn(process.execPath, [join(benchDist, 'load.js'), JSON.stringify(job)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let output = '';
  load.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const [code] = (await once(load, 'exit')) as [number];
  const lines = output.trim().split('\n').map((line) => JSON.parse(line) as { type: string; result?: ThroughputResult; message?: string });
  const last = lines.at(-1)!;
  expect(last.message, 'the load process failed').toBeUndefined();
  expect(code).toBe(0);
  return last.result!;
}

function job(qos: 0 | 1 | 2, publishers: number): ThroughputJob {
  return {
    kind: 'throughput',
    port,
    qos,
    publishers,
    subscribers: 2,
    messages: 2_000,
    // Far more than 300 ms allow even at the sink's rate: the time ends the warm-up.
    warmup: 2_000_000,
    warmupMs: 300,
    window: 64,
    payloadSize: 64,
    topic: `warmup/q${qos}`,
    idPrefix: `warmup-q${qos}`,
    overdueMs: 5_000,
    stallMs: 10_000,
    timeoutMs: 30_000,
  };
}

describe('the load generator\'s timed warm-up', () => {
  for (const [qos, publishers] of [
    [0, 1],
    [1, 4],
    [2, 2],
  ] as const) {
    it(`QoS ${qos}, ${publishers} publisher(s): the warm-up stops after warmupMs and every measured message arrives once`, async () => {
      const result = await runLoad(job(qos, publishers));
      // Some warm-up went out, far from all of it: the rest was skipped, not sent.
      expect(result.warmupPublishes).toBeGreaterThan(0);
      expect(result.warmupPublishes).toBeLessThan(2_000_000);
      expect(result.publishes).toBe(2_000);
      // Skipped messages take no packet id and count as finished: nothing stalls, nothing is
      // delivered twice, every measured message reaches both subscribers.
      expect(result.expectedDeliveries).toBe(4_000);
      expect(result.deliveries).toBe(4_000);
      expect(result.undelivered).toBe(0);
      expect(result.duplicates).toBe(0);
      expect(result.overdue).toBe(0);
    });
  }
});

describe('the load generator\'s timed measurement', () => {
  for (const [qos, publishers] of [
    [0, 1],
    [1, 4],
    [2, 2],
  ] as const) {
    it(`QoS ${qos}, ${publishers} publisher(s): it measures past its messages until measureMs, and every measured message arrives once`, async () => {
      const result = await runLoad({ ...job(qos, publishers), warmup: 0, measureMs: 300, maxMessages: 2_000_000 });
      // More than the minimum went out, fewer than the slots kept: the time ended it.
      expect(result.publishes).toBeGreaterThan(2_000);
      expect(result.publishes).toBeLessThan(2_000_000);
      expect(result.elapsedMs).toBeGreaterThanOrEqual(300);
      // Unsent slots count as finished without a packet id: nothing stalls or arrives twice.
      expect(result.expectedDeliveries).toBe(result.publishes * 2);
      expect(result.deliveries).toBe(result.expectedDeliveries);
      expect(result.duplicates).toBe(0);
      expect(result.overdue).toBe(0);
    });
  }

  it('stops at maxMessages when measureMs is not over by then', async () => {
    const result = await runLoad({ ...job(1, 2), warmup: 0, messages: 1_000, measureMs: 600_000, maxMessages: 3_000 });
    expect(result.publishes).toBe(3_000);
    expect(result.deliveries).toBe(6_000);
    expect(result.duplicates).toBe(0);
  });

  it('without measureMs, measures exactly its messages', async () => {
    const result = await runLoad({ ...job(1, 2), warmup: 0, messages: 1_000, maxMessages: 3_000 });
    expect(result.publishes).toBe(1_000);
    expect(result.deliveries).toBe(2_000);
  });
});
