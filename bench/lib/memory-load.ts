/**
 * The load process's side of the memory scenario (issue 12): filling a broker with retained
 * messages or with offline persistent sessions, probing it after a restart, and checking what the
 * restart gave back. Speed is not measured here; what counts is that the broker holds exactly
 * what the scenario says when the runner reads its memory.
 */
import type { ConnectProbeJob, ConnectProbeResult, PopulateResult, RetainedFillJob, SessionsFillJob, StoreCheckJob, StoreCheckResult } from './jobs.js';
import { RawClient } from './mqtt-client.js';
import { PublishTemplate } from './wire.js';

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Retained message i's topic: 1,000 topics per middle level, as a fleet of devices under groups would be. */
export function retainedTopic(i: number): string {
  return `r/${Math.floor(i / 1000)}/${i}`;
}

export const FILTERS_PER_SESSION = 10;

export function sessionClientId(i: number): string {
  return `bench-mem-${i}`;
}

/**
 * Session i's filters: exact ones, single-level wildcards and multi-level wildcards mixed, as a
 * device's subscriptions are (its commands, its group's broadcasts, its configuration subtree).
 */
export function sessionFilters(i: number): string[] {
  return Array.from({ length: FILTERS_PER_SESSION }, (_, k) => (k % 3 === 0 ? `s/${i}/+/t${k}` : k % 3 === 1 ? `s/${i}/d/t${k}` : `s/${i}/t${k}/#`));
}

/** A CONNECT the broker answered with a CONNACK return code other than 0 (RawClient.connect's error). */
function isRefusal(error: unknown): boolean {
  return error instanceof Error && error.message.startsWith('CONNACK return code');
}

/** Fails when `progress()` has not moved for stallMs, or after timeoutMs. */
async function guarded<T>(body: Promise<T>, progress: () => number, stallMs: number, timeoutMs: number, what: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const watch = new Promise<never>((_, reject) => {
    const started = Date.now();
    let last = progress();
    let lastChange = started;
    timer = setInterval(() => {
      const now = Date.now();
      if (progress() !== last) {
        last = progress();
        lastChange = now;
      }
      if (now - lastChange > stallMs) reject(new Error(`stalled: no progress for ${stallMs} ms (${what()})`));
      else if (now - started > timeoutMs) reject(new Error(`timed out after ${timeoutMs} ms (${what()})`));
    }, 100);
  });
  try {
    return await Promise.race([body, watch]);
  } finally {
    clearInterval(timer);
  }
}

export async function retainedFill(job: RetainedFillJob): Promise<PopulateResult> {
  const started = performance.now();
  let acked = 0;
  let sent = 0;
  let finish!: () => void;
  const done = new Promise<void>((resolve) => (finish = resolve));
  const { client } = await RawClient.connect(job.port, {
    clientId: 'bench-mem-retainer',
    clean: true,
    setup: (client) => {
      client.onPuback = () => {
        acked++;
        if (acked === job.count) finish();
        else pump();
      };
    },
  });
  // Each topic is different, so each message gets its own template: the generator's cost does not matter here.
  const pump = () => {
    for (const limit = Math.min(job.count, acked + job.window); sent < limit; sent++) {
      client.publish(new PublishTemplate(retainedTopic(sent), 1, job.payloadSize, { retain: true }), (sent % 65535) + 1, sent, 0);
    }
  };
  pump();
  const closed = client.closed.then((error) => {
    throw new Error(`connection closed after ${acked} acks${error ? `: ${error.message}` : ''}`);
  });
  await guarded(Promise.race([done, closed]), () => acked, job.stallMs, job.timeoutMs, () => `${acked}/${job.count} retained messages acknowledged`);
  await client.disconnect();
  return { done: acked, refusedFilters: 0, refusedSessions: 0, elapsedMs: performance.now() - started };
}

export async function sessionsFill(job: SessionsFillJob): Promise<PopulateResult> {
  const started = performance.now();
  let next = 0;
  let created = 0;
  let refusedFilters = 0;
  let refusedSessions = 0;
  // A few connections at a time: each one connects, subscribes, disconnects, and the next takes its place.
  const worker = async () => {
    while (next < job.count) {
      const i = next++;
      let client: RawClient;
      try {
        ({ client } = await RawClient.connect(job.port, { clientId: sessionClientId(i), clean: false }));
      } catch (error) {
        // A broker at its session limit refuses the CONNECT (ours: 0x03): counted, the others go on.
        if (isRefusal(error)) {
          refusedSessions++;
          continue;
        }
        throw error;
      }
      const granted = await client.subscribeAll(sessionFilters(i), 1);
      const refused = granted.filter((code) => code > 2).length;
      refusedFilters += refused;
      if (refused === 0) created++;
      await client.disconnect();
    }
  };
  const workers = Promise.all(Array.from({ length: Math.min(job.parallel, job.count) }, worker));
  await guarded(workers, () => next, job.stallMs, job.timeoutMs, () => `${next}/${job.count} sessions started`);
  return { done: created, refusedFilters, refusedSessions, elapsedMs: performance.now() - started };
}

/** Connects a clean session as soon as the broker answers; the runner reads memory after this CONNACK. */
export async function connectProbe(job: ConnectProbeJob): Promise<ConnectProbeResult> {
  const deadline = Date.now() + job.connectTimeoutMs;
  for (let attempts = 1; ; attempts++) {
    try {
      const { client, connackAt } = await RawClient.connect(job.port, { clientId: 'bench-mem-probe', clean: true, timeoutMs: Math.max(1, deadline - Date.now()) });
      await client.disconnect();
      return { connackAt, connectAttempts: attempts };
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`could not connect within ${job.connectTimeoutMs} ms: ${String(error)}`);
      await sleep(5);
    }
  }
}

export async function storeCheck(job: StoreCheckJob): Promise<StoreCheckResult> {
  let retainedReceived = 0;
  if (job.retainedFilter !== undefined) {
    const expected = job.retainedExpected ?? Number.POSITIVE_INFINITY;
    let lastAt = Date.now();
    // A clean session at QoS 0: nothing to queue or acknowledge, so the count shows what the broker
    // has, not how it queues. At QoS 1 ours queues every match before sending (a clean session's
    // queue holds at most 10,000, so 10,000 came of 100,000) and, for a persistent session, writes
    // each match to its queue before it reads the subscriber's next packet: 1,000 came (the window
    // in flight), then nothing for minutes.
    const { client } = await RawClient.connect(job.port, {
      clientId: 'bench-mem-check',
      clean: true,
      setup: (client) => {
        client.onPublish = (_data, _start, _end, qos, id) => {
          client.acknowledge(qos, id);
          retainedReceived++;
          lastAt = Date.now();
        };
      },
    });
    await client.subscribe(job.retainedFilter, 0);
    const deadline = Date.now() + job.timeoutMs;
    while (retainedReceived < expected && Date.now() - lastAt < job.idleMs && Date.now() < deadline) await sleep(20);
    await client.disconnect();
  }
  let sessionsPresent = 0;
  for (const clientId of job.sessionIds ?? []) {
    // Resuming a session and leaving again changes nothing in it (no filter, no message). A session
    // that is not there would be created: a broker at its session limit refuses that, and it is not present either.
    const connected = await RawClient.connect(job.port, { clientId, clean: false }).catch((error: unknown) => {
      if (isRefusal(error)) return undefined;
      throw error;
    });
    if (connected?.sessionPresent) sessionsPresent++;
    await connected?.client.disconnect();
  }
  return { retainedReceived, sessionsPresent, sessionsChecked: job.sessionIds?.length ?? 0 };
}
