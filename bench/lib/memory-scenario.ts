/**
 * Memory (issue 12): what a broker's resident memory is with many retained messages, and with
 * many offline persistent sessions holding subscriptions, before and after a restart on the same
 * data. Each part: a fresh broker, idle RSS, the population from a load process, 1 s idle, RSS;
 * SIGTERM, a restart, the first CONNACK, 1 s, RSS; then a check that the restart gave everything back.
 */
import type { BrokerId } from './brokers.js';
import type { ConnectProbeJob, ConnectProbeResult, PopulateResult, RetainedFillJob, SessionsFillJob, StoreCheckJob, StoreCheckResult } from './jobs.js';
import { startLoad } from './load-runner.js';
import { FILTERS_PER_SESSION, sessionClientId } from './memory-load.js';
import { readMem, sleep } from './proc.js';
import { exitNote, freshDir, start, withBrokers, type Context, type RunOutcome } from './scenario-kit.js';

/** How long the broker sits idle after its population, and after the first CONNACK of the restart, before RSS is read. */
const SETTLE_MS = 1_000;
/** Connections creating sessions at once: enough to keep a broker's group commit busy, few enough to be ordinary clients. */
const SESSION_PARALLEL = 8;
/** The retained check ends when no message came for this long (a complete delivery ends it at once). */
const CHECK_IDLE_MS = 5_000;
/** Sessions resumed after the restart to see that they came back (evenly spread over all of them). */
const SESSION_SAMPLE = 20;

type Part = 'retained' | 'sessions';

interface PartOutcome {
  metrics: Record<string, number>;
  notes: string[];
  raw: unknown;
}

async function measurePart(ctx: Context, broker: BrokerId, part: Part): Promise<PartOutcome> {
  const count = part === 'retained' ? ctx.sizes.retainedCount : ctx.sizes.sessionCount;
  const dataDir = freshDir(ctx, broker, `memory-${part}`);
  const notes: string[] = [];
  const timeoutMs = Math.max(120_000, count * 20);
  return withBrokers(async (started) => {
    const first = await start(ctx, broker, dataDir);
    started.push(first);
    await first.ready;
    await sleep(ctx.sizes.idleSettleMs);
    const idle = readMem(first.pid);

    const fillJob: RetainedFillJob | SessionsFillJob =
      part === 'retained'
        ? { kind: 'retained-fill', port: first.port, count, window: ctx.sizes.window, payloadSize: ctx.sizes.payloadSize, stallMs: ctx.sizes.stallMs, timeoutMs }
        : { kind: 'sessions-fill', port: first.port, count, parallel: SESSION_PARALLEL, stallMs: ctx.sizes.stallMs, timeoutMs };
    const filled = await startLoad<PopulateResult>(ctx.distDir, fillJob, timeoutMs + 30_000).result;
    if (filled.done < count) {
      const why = part === 'retained' ? 'acknowledged' : `sessions created with all their filters (${filled.refusedSessions} CONNECTs and ${filled.refusedFilters} filters refused)`;
      notes.push(`${part}: only ${filled.done} of ${count} ${why}`);
    }
    await sleep(SETTLE_MS);
    const populated = readMem(first.pid);
    notes.push(...exitNote(broker, await first.stop(timeoutMs)).map((note) => `${part}: ${note}`));

    const second = await start(ctx, broker, dataDir);
    started.push(second);
    await second.ready;
    const probeJob: ConnectProbeJob = { kind: 'connect-probe', port: second.port, connectTimeoutMs: ctx.sizes.readyTimeoutMs };
    await startLoad<ConnectProbeResult>(ctx.distDir, probeJob, ctx.sizes.readyTimeoutMs + 30_000).result;
    await sleep(SETTLE_MS);
    const restarted = readMem(second.pid);

    // Only now, with the memory read: a check that reads every retained message back would grow it.
    const sample = Array.from({ length: Math.min(SESSION_SAMPLE, count) }, (_, k) => sessionClientId(Math.floor((k * count) / Math.min(SESSION_SAMPLE, count))));
    const checkJob: StoreCheckJob = {
      kind: 'store-check',
      port: second.port,
      ...(part === 'retained' ? { retainedFilter: 'r/#', retainedExpected: count } : { sessionIds: sample }),
      idleMs: CHECK_IDLE_MS,
      timeoutMs,
    };
    const check = await startLoad<StoreCheckResult>(ctx.distDir, checkJob, timeoutMs + 30_000).result;
    notes.push(...exitNote(broker, await second.stop(timeoutMs)).map((note) => `${part}: ${note}`));
    if (part === 'retained' && check.retainedReceived < count) notes.push(`retained: ${check.retainedReceived} of ${count} retained messages came back after the restart`);
    if (part === 'sessions' && check.sessionsPresent < check.sessionsChecked) notes.push(`sessions: ${check.sessionsPresent} of ${check.sessionsChecked} sampled sessions present after the restart`);

    const k = (name: string) => `memory.${part}.${name}`;
    const restartRss = restarted?.rss ?? NaN;
    return {
      metrics: {
        [k('idleRss')]: idle?.rss ?? NaN,
        [k('rss')]: populated?.rss ?? NaN,
        [k('hwm')]: populated?.hwm ?? NaN,
        [k('restartRss')]: restartRss,
        [k('restartHwm')]: restarted?.hwm ?? NaN,
        [k('perItem')]: idle ? (restartRss - idle.rss) / count : NaN,
        ...(part === 'retained'
          ? { [k('kept')]: check.retainedReceived, [k('count')]: count }
          : { [k('present')]: check.sessionsPresent, [k('checked')]: check.sessionsChecked }),
      },
      notes,
      raw: { idle, populated, restarted, filled, check },
    };
  });
}

/** Both parts on the broker, each with its own data directory and processes; one part failing leaves the other's rows. */
export async function runMemory(ctx: Context, broker: BrokerId): Promise<RunOutcome> {
  const metrics: Record<string, number> = {};
  const notes: string[] = [];
  const raw: Record<string, unknown> = {};
  const failures: string[] = [];
  for (const part of ['retained', 'sessions'] as const) {
    try {
      const outcome = await measurePart(ctx, broker, part);
      Object.assign(metrics, outcome.metrics);
      notes.push(...outcome.notes);
      raw[part] = outcome.raw;
    } catch (error) {
      failures.push(`${part}: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
  // Both failed: the run is an error (the cells say so); one failed: its rows stay empty and the note says why.
  if (failures.length === 2) throw new Error(failures.join('; '));
  notes.push(...failures.map((failure) => `not measured: ${failure}`));
  return { metrics, notes, raw: { ...raw, filtersPerSession: FILTERS_PER_SESSION } };
}
