/**
 * The same QoS 1 1→1 load twice on one broker, each time on a fresh process and data directory,
 * changing one thing: the transport (websocket: TCP, then WebSocket; issue 15) or the protocol
 * (mqtt5: 3.1.1, then 5.0 with a few properties on every PUBLISH; issue 14). The rows are both
 * measurements and their ratio per broker, which is what the issues set targets for.
 */
import type { BrokerId, LaunchOptions } from './brokers.js';
import type { ThroughputResult } from './jobs.js';
import { startLoad } from './load-runner.js';
import type { ProtocolLevel, Transport } from './mqtt-client.js';
import { busyShare, cpuNotes, cpuPerMessageUs, disturbanceOf, exitNote, freshDir, qos1OneToOneJob, start, withBrokers, type Context, type RunOutcome } from './scenario-kit.js';

interface Variant {
  /** Metric key part and the note prefix. */
  key: string;
  launch: LaunchOptions;
  transport: Transport;
  protocol: ProtocolLevel;
}

type VariantScenario = 'websocket' | 'mqtt5';

/** The first variant is the baseline, the second the one whose cost is in question. */
export const VARIANTS: Record<VariantScenario, readonly [Variant, Variant]> = {
  websocket: [
    { key: 'tcp', launch: {}, transport: { kind: 'tcp' }, protocol: 4 },
    { key: 'ws', launch: { websocket: true }, transport: { kind: 'websocket', path: '/mqtt' }, protocol: 4 },
  ],
  mqtt5: [
    { key: 'v311', launch: {}, transport: { kind: 'tcp' }, protocol: 4 },
    { key: 'v5', launch: {}, transport: { kind: 'tcp' }, protocol: 5 },
  ],
};

/** Brokers that cannot take part, and why (the runner still lists them; their cells stay empty). */
const NOT_SPOKEN: Record<VariantScenario, Partial<Record<BrokerId, string>>> = {
  websocket: {},
  // aedes/lib/handlers/connect.js accepts protocol levels 3 and 4 only.
  mqtt5: { aedes: 'Aedes 1.x refuses MQTT 5 CONNECTs (protocol level 5)' },
};

async function measure(ctx: Context, broker: BrokerId, scenario: VariantScenario, variant: Variant): Promise<ThroughputResult & { notes: string[] }> {
  return withBrokers(async (started) => {
    const server = await start(ctx, broker, freshDir(ctx, broker, `${scenario}-${variant.key}`), undefined, variant.launch);
    started.push(server);
    await server.ready;
    const job = qos1OneToOneJob(ctx, server.port, server.pid, scenario, {
      idPrefix: `bench-${scenario}-${variant.key}`,
      transport: variant.transport,
      protocol: variant.protocol,
    });
    const result = await startLoad<ThroughputResult>(ctx.distDir, job, job.timeoutMs + 30_000).result;
    const notes = [...exitNote(broker, await server.stop())];
    if (result.undelivered > 0) notes.push(`${result.undelivered} of ${result.expectedDeliveries} deliveries never arrived`);
    if (result.duplicates > 0) notes.push(`${result.duplicates} duplicate deliveries`);
    return { ...result, notes };
  });
}

export async function runVariants(ctx: Context, broker: BrokerId, scenario: VariantScenario): Promise<RunOutcome> {
  const refusal = NOT_SPOKEN[scenario][broker] ?? VARIANTS[scenario].map((variant) => ctx.definitions[broker].cannot?.(variant.launch)).find(Boolean);
  if (refusal) return { metrics: {}, notes: [`not measured: ${refusal}`], raw: undefined };
  const metrics: Record<string, number> = {};
  const notes: string[] = [];
  const raw: Record<string, ThroughputResult> = {};
  let disturbance: number | undefined;
  for (const variant of VARIANTS[scenario]) {
    const { notes: runNotes, ...result } = await measure(ctx, broker, scenario, variant);
    raw[variant.key] = result;
    const share = disturbanceOf(result);
    if (share !== undefined) disturbance = Math.max(disturbance ?? 0, share);
    const k = (name: string) => `${scenario}.${variant.key}.${name}`;
    metrics[k('rate')] = result.deliveryRate;
    metrics[k('p50')] = result.latencyP50Ms;
    metrics[k('p99')] = result.latencyP99Ms;
    metrics[k('cpuPerMsg')] = cpuPerMessageUs(result.brokerCpu, result.deliveries);
    metrics[k('loadBusy')] = busyShare(result);
    metrics[k('undelivered')] = result.undelivered;
    notes.push(...[...runNotes, ...cpuNotes(ctx, result, share)].map((note) => `${variant.key}: ${note}`));
  }
  // Per run, so the ratio compares two measurements taken one after the other, not medians of different runs.
  const [base, other] = VARIANTS[scenario];
  const ratio = (name: string) => {
    const denominator = metrics[`${scenario}.${base.key}.${name}`]!;
    // A quick run's CPU can be 0 clock ticks: no ratio then.
    return denominator > 0 ? metrics[`${scenario}.${other.key}.${name}`]! / denominator : NaN;
  };
  metrics[`${scenario}.rateRatio`] = ratio('rate');
  metrics[`${scenario}.cpuRatio`] = ratio('cpuPerMsg');
  return { metrics, notes, raw, ...(disturbance === undefined ? {} : { disturbance }) };
}
