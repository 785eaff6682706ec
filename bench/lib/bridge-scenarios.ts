/**
 * The bridge scenarios (issue 13): a gateway broker (ours, or Mosquitto with its own bridge)
 * bridges `bench/#` out at QoS 1 to an upstream Mosquitto, a separate process started fresh for
 * every run. The load process publishes to the gateway and subscribes at the upstream.
 *
 * - `bridge`: forwarding throughput and end-to-end latency, QoS 1, persistent subscriber upstream.
 * - `bridge-outage`: the upstream goes down, QoS 1 messages are published to the gateway, the
 *   gateway is SIGKILLed and restarted, the upstream comes back: what reached the upstream
 *   subscriber, what was lost (acknowledged by the gateway, never upstream), what came twice.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BridgeScenarioId } from './bridge-metrics.js';
import { describeExit, startBroker, type BrokerId, type BrokerProcess } from './brokers.js';
import { rangesMissing, type CpuSpent, type DrainJob, type DrainResult, type FillJob, type FillResult, type ThroughputResult } from './jobs.js';
import { startLoad } from './load-runner.js';
import { RawClient } from './mqtt-client.js';
import { freePort, readMem } from './proc.js';
import { busyShare, cpuNotes, cpuPerMessageUs, disturbanceOf, exitNote, freshDir, qos1OneToOneJob, withBrokers, type Context, type RunOutcome } from './scenario-kit.js';

type BrokerDefinition = Parameters<typeof startBroker>[0];

/** The gateway's client id upstream; its bridge announces itself on Mosquitto's notification topic. */
const GATEWAY_CLIENT_ID = 'bench-gateway';
const STATE_TOPIC = `$SYS/broker/connection/${GATEWAY_CLIENT_ID}/state`;
/** What the gateway bridges out; every topic the scenarios publish on is under it, unprefixed. */
const BRIDGED_FILTER = 'bench/#';
/**
 * Both bridges retry every second after a failure (Mosquitto: `restart_timeout 1`, a constant;
 * ours: between half and all of `reconnect.min_ms` = `max_ms` = 1000), so the outage's catch-up
 * measures forwarding, not two different backoff defaults (Mosquitto's 5–30 s, ours 1–60 s).
 */
const RECONNECT_MS = 1_000;
/** The same in-flight window towards the upstream as every broker gets towards its clients. */
const BRIDGE_MAX_INFLIGHT = 1_000;
/**
 * After the upstream is back: the catch-up ends once all acknowledged messages came, or none for
 * this long. Generous: Mosquitto's bridge, restarted while its upstream was down, once took more
 * than 5 s to reconnect and forward although it retries every second.
 */
const CATCH_UP_IDLE_MS = 15_000;

/**
 * The gateway: the broker's own bench definition (so ours runs from the runner's snapshot with its
 * `--ours-args`, Mosquitto with the bench's config) plus one bridge to 127.0.0.1:`upstreamPort`.
 */
function gatewayDefinition(ctx: Context, broker: BrokerId, upstreamPort: number): BrokerDefinition {
  const base = ctx.definitions[broker];
  return {
    info: () => base.info(),
    launch: (dataDir, port, workDir) => {
      const launch = base.launch(dataDir, port, workDir);
      if (broker === 'mosquitto') {
        // Mosquitto's bridge as its documentation sets it up for a gateway: a persistent session
        // upstream, try_private for loop detection, and `persistence true` (from the base config)
        // for its local queue. max_queued_messages 0 (base config) lets that queue grow without
        // limit, so whatever it loses is lost to the crash, not to a full queue.
        const configAt = launch.args.indexOf('-c') + 1;
        const baseConfig = readFileSync(launch.args[configAt]!, 'utf8');
        const config = join(workDir, `mosquitto-gateway-${port}.conf`);
        const bridge = [
          'connection bench',
          `address 127.0.0.1:${upstreamPort}`,
          `remote_clientid ${GATEWAY_CLIENT_ID}`,
          `topic ${BRIDGED_FILTER} out 1`,
          'cleansession false',
          'try_private true',
          `restart_timeout ${RECONNECT_MS / 1000}`,
        ];
        writeFileSync(config, `${baseConfig}${bridge.join('\n')}\n`);
        return { ...launch, args: launch.args.map((arg, i) => (i === configAt ? config : arg)) };
      }
      const config = join(workDir, `ours-gateway-${port}.yaml`);
      const yaml = [
        'bridges:',
        '  - name: bench',
        `    address: mqtt://127.0.0.1:${upstreamPort}`,
        `    client_id: ${GATEWAY_CLIENT_ID}`,
        `    max_inflight: ${BRIDGE_MAX_INFLIGHT}`,
        `    reconnect: { min_ms: ${RECONNECT_MS}, max_ms: ${RECONNECT_MS} }`,
        '    topics:',
        `      - { pattern: '${BRIDGED_FILTER}', direction: out, qos: 1 }`,
      ];
      writeFileSync(config, `${yaml.join('\n')}\n`);
      return { ...launch, args: [...launch.args, '--config', config] };
    },
  };
}

function startUpstream(ctx: Context, dataDir: string, port: number): BrokerProcess {
  return startBroker(ctx.definitions.mosquitto, 'mosquitto', dataDir, port, ctx.workRoot, ctx.sizes.readyTimeoutMs);
}

/** The upstream is always a Mosquitto: without one there is nothing to bridge to. */
function requireUpstream(ctx: Context): void {
  const missing = ctx.definitions.mosquitto.info().missing;
  if (missing) throw new Error(`the bridge scenarios need a Mosquitto as the upstream: ${missing}`);
}

/**
 * Waits until the gateway's bridge is connected: both bridges publish a retained `1` on the
 * notification topic upstream when they connect (Mosquitto's convention, which ours follows).
 */
async function bridgeConnected(ctx: Context, upstreamPort: number, gateway: BrokerProcess): Promise<void> {
  let connected!: () => void;
  const seen = new Promise<void>((resolve) => (connected = resolve));
  const { client } = await RawClient.connect(upstreamPort, {
    clientId: 'bench-bridge-probe',
    clean: true,
    setup: (probe) => {
      probe.onPublish = (data, start, end) => {
        if (end - start === 1 && data[start] === 0x31) connected();
      };
    },
  });
  let timer: NodeJS.Timeout | undefined;
  try {
    await client.subscribe(STATE_TOPIC, 0);
    await Promise.race([
      seen,
      gateway.exited.then((status) => {
        throw new Error(`the gateway exited before its bridge connected (${describeExit(status)}): ${gateway.logTail()}`);
      }),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`the gateway's bridge did not connect upstream within ${ctx.sizes.readyTimeoutMs} ms: ${gateway.logTail()}`)), ctx.sizes.readyTimeoutMs);
      }),
    ]);
  } finally {
    clearTimeout(timer);
    client.destroy();
  }
}

function sumCpu(a: CpuSpent | undefined, b: CpuSpent | undefined): CpuSpent | undefined {
  if (!a || !b) return a ?? b;
  return { userMs: a.userMs + b.userMs, systemMs: a.systemMs + b.systemMs };
}

/** Forwarding QoS 1: publisher on the gateway, persistent subscriber on the upstream, windowed as the other throughput runs. */
export async function runBridge(ctx: Context, broker: BrokerId): Promise<RunOutcome> {
  requireUpstream(ctx);
  return withBrokers(async (started) => {
    const upstream = startUpstream(ctx, freshDir(ctx, 'mosquitto', 'bridge-upstream'), await freePort());
    started.push(upstream);
    await upstream.ready;
    const gateway = startBroker(gatewayDefinition(ctx, broker, upstream.port), broker, freshDir(ctx, broker, 'bridge'), await freePort(), ctx.workRoot, ctx.sizes.readyTimeoutMs);
    started.push(gateway);
    await gateway.ready;
    await bridgeConnected(ctx, upstream.port, gateway);

    const job = qos1OneToOneJob(ctx, gateway.port, gateway.pid, 'bridge', { subscriberPort: upstream.port, upstreamPid: upstream.pid });
    const result = await startLoad<ThroughputResult>(ctx.distDir, job, job.timeoutMs + 30_000).result;
    // The upstream works for this run too: its CPU is not "other work".
    const disturbance = disturbanceOf({ ...result, brokerCpu: sumCpu(result.brokerCpu, result.upstreamCpu) });
    const mem = readMem(gateway.pid);
    const notes: string[] = [];
    if (result.duplicates > 0) notes.push(`${result.duplicates} duplicate deliveries upstream`);
    if (result.undelivered > 0) notes.push(`${result.undelivered} of ${result.expectedDeliveries} messages never reached the upstream subscriber`);
    if (result.overdue > 0) notes.push(`${result.overdue} messages not delivered within ${ctx.sizes.overdueMs} ms of their ack (max latency ${Math.round(result.latencyMaxMs)} ms)`);
    notes.push(...cpuNotes(ctx, result, disturbance));
    notes.push(...exitNote(broker, await gateway.stop()).map((note) => `gateway: ${note}`));
    notes.push(...exitNote('mosquitto', await upstream.stop()).map((note) => `upstream: ${note}`));
    return {
      metrics: {
        'bridge.rate': result.deliveryRate,
        'bridge.p50': result.latencyP50Ms,
        'bridge.p99': result.latencyP99Ms,
        'bridge.cpuPerMsg': cpuPerMessageUs(result.brokerCpu, result.deliveries),
        'bridge.upstreamCpuPerMsg': cpuPerMessageUs(result.upstreamCpu, result.deliveries),
        'bridge.peakRss': mem?.hwm ?? NaN,
        'bridge.undelivered': result.undelivered,
        'bridge.duplicates': result.duplicates,
        'bridge.loadBusy': busyShare(result),
      },
      notes,
      raw: result,
      ...(disturbance === undefined ? {} : { disturbance }),
    };
  });
}

/**
 * The outage, in the order an edge gateway lives it: bridged and running, the uplink goes down
 * (the upstream stopped with SIGTERM, so its subscriber's session survives), the devices go on
 * publishing to the gateway, the gateway loses power (SIGKILL) and comes back, then the uplink.
 */
export async function runBridgeOutage(ctx: Context, broker: BrokerId): Promise<RunOutcome> {
  requireUpstream(ctx);
  const count = ctx.sizes.queueSize;
  const topic = 'bench/outage';
  const subscriberId = 'bench-outage-sub';
  const longTimeout = Math.max(120_000, count * 5);
  const notes: string[] = [];
  return withBrokers(async (started) => {
    const upstreamDir = freshDir(ctx, 'mosquitto', 'bridge-outage-upstream');
    const upstream = startUpstream(ctx, upstreamDir, await freePort());
    started.push(upstream);
    await upstream.ready;
    // The application upstream: a persistent QoS 1 subscription, offline from now on.
    {
      const { client } = await RawClient.connect(upstream.port, { clientId: subscriberId, clean: false });
      await client.subscribe(topic, 1);
      await client.disconnect();
    }
    const gatewayDir = freshDir(ctx, broker, 'bridge-outage');
    const definition = gatewayDefinition(ctx, broker, upstream.port);
    const gateway = startBroker(definition, broker, gatewayDir, await freePort(), ctx.workRoot, ctx.sizes.readyTimeoutMs);
    started.push(gateway);
    await gateway.ready;
    await bridgeConnected(ctx, upstream.port, gateway);

    notes.push(...exitNote('mosquitto', await upstream.stop()).map((note) => `upstream: ${note}`));
    const fillJob: FillJob = {
      kind: 'fill',
      port: gateway.port,
      count,
      window: ctx.sizes.window,
      payloadSize: ctx.sizes.payloadSize,
      topic,
      publisherId: 'bench-outage-pub',
      progressEveryMs: 1000,
      stallMs: ctx.sizes.stallMs,
      timeoutMs: longTimeout,
      qos: 1,
      brokerPid: gateway.pid,
    };
    const fill = await startLoad<FillResult>(ctx.distDir, fillJob, longTimeout + 30_000).result;
    if (!fill.completed) notes.push(`the gateway acknowledged ${fill.acked} of ${count} (${fill.reason})`);
    const killed = await gateway.kill();
    if (killed.signal !== 'SIGKILL') notes.push(`the gateway ended with ${describeExit(killed)} before the SIGKILL`);

    const restarted = startBroker(definition, broker, gatewayDir, await freePort(), ctx.workRoot, ctx.sizes.readyTimeoutMs);
    started.push(restarted);
    await restarted.ready;
    // The upstream subscriber is already knocking when the upstream comes back on its old port.
    let waitingSeen!: () => void;
    const waiting = new Promise<void>((resolve) => (waitingSeen = resolve));
    const drainJob: DrainJob = {
      kind: 'drain',
      port: upstream.port,
      subscriberId,
      expected: fill.sent,
      idleMs: CATCH_UP_IDLE_MS,
      connectTimeoutMs: ctx.sizes.readyTimeoutMs,
      timeoutMs: longTimeout,
    };
    const drainLoad = startLoad<DrainResult>(ctx.distDir, drainJob, longTimeout + ctx.sizes.readyTimeoutMs + 30_000, (event) => {
      if (event.type === 'waiting') waitingSeen();
    });
    await Promise.race([waiting, drainLoad.result]);
    const upstreamAgain = startUpstream(ctx, upstreamDir, upstream.port);
    started.push(upstreamAgain);
    // The gateway forwards the backlog: its CPU over the catch-up.
    drainLoad.send({ type: 'broker', pid: restarted.pid });
    let drain: DrainResult;
    try {
      drain = await drainLoad.result;
    } finally {
      drainLoad.kill();
    }
    notes.push(...exitNote(broker, await restarted.stop(longTimeout)).map((note) => `gateway: ${note}`));
    notes.push(...exitNote('mosquitto', await upstreamAgain.stop()).map((note) => `upstream: ${note}`));

    const lost = rangesMissing(fill.ackedRanges, drain.receivedRanges);
    if (lost > 0) notes.push(`LOST ${lost} of ${fill.acked} messages the gateway acknowledged`);
    if (!drain.sessionPresent) notes.push('the upstream subscriber had no session after the upstream restart');
    const fillDisturbance = disturbanceOf(fill);
    notes.push(...cpuNotes(ctx, fill, fillDisturbance).map((note) => `fill: ${note}`));
    return {
      metrics: {
        'bridge-outage.acked': fill.acked,
        'bridge-outage.fillRate': fill.ackRate,
        'bridge-outage.fillCpuPerMsg': cpuPerMessageUs(fill.brokerCpu, fill.acked),
        'bridge-outage.receivedAcked': fill.acked - lost,
        'bridge-outage.lost': lost,
        'bridge-outage.duplicates': drain.duplicates,
        'bridge-outage.outOfOrder': drain.outOfOrder,
        'bridge-outage.catchUpRate': drain.received > 0 ? drain.drainRate : NaN,
      },
      notes,
      raw: {
        fill: { ...fill, ackedRanges: fill.ackedRanges.slice(0, 20) },
        drain: { ...drain, receivedRanges: drain.receivedRanges.slice(0, 20) },
        gatewayCpuCatchUpPerMsg: cpuPerMessageUs(drain.brokerCpu, drain.received),
        fillDisturbance,
      },
      ...(fillDisturbance === undefined ? {} : { disturbance: fillDisturbance }),
    };
  });
}

export const BRIDGE_RUNNERS: Record<BridgeScenarioId, (ctx: Context, broker: BrokerId) => Promise<RunOutcome>> = {
  bridge: runBridge,
  'bridge-outage': runBridgeOutage,
};
