/**
 * SIGKILL of the gateway at random moments while it forwards to a Mosquitto upstream and receives
 * from it, restarted on the same data directory each time (issue 13). Afterwards one more gateway
 * lets everything drain, and the test proves, in both directions:
 *   1. nothing acknowledged is lost: every message the gateway acknowledged to a local publisher
 *      reaches the upstream subscriber, and every message Mosquitto acknowledged to an upstream
 *      publisher reaches the local subscriber;
 *   2. QoS 2 arrives exactly once (no second new delivery, none after PUBCOMP);
 *   3. order per publisher, topic and QoS is kept (first deliveries follow the publisher's counter).
 * QoS 1 duplicates are allowed and counted.
 *
 * Moves come from a seeded PRNG: the seed is printed; BRIDGE_CRASH_SEED=<n> replays the plan,
 * BRIDGE_CRASH_ROUNDS=<n> changes the number of kills. Kill moments are counts of events (the k-th
 * acknowledgement or delivery of a round), never times.
 */
import { randomInt } from 'node:crypto';
import { afterEach, describe, expect, it, onTestFailed } from 'vitest';
import { Publisher, Random, Subscriber, type MessageInfo } from '../helpers/mqtt-peers.js';
import { bridgeConfig, freePort, useBridgeHarness, type RunningProcess } from './harness.js';

const SEED = Number(process.env.BRIDGE_CRASH_SEED ?? randomInt(2 ** 31)) >>> 0;
const ROUNDS = Number(process.env.BRIDGE_CRASH_ROUNDS ?? 10);
const OUT_TOPICS = ['sensors/t0', 'sensors/t1', 'sensors/t2'] as const;
const IN_TOPICS = ['commands/t0', 'commands/t1'] as const;

const harness = useBridgeHarness('bridge-crash-');
const peers: Array<Publisher | Subscriber> = [];
afterEach(async () => {
  await Promise.all(peers.splice(0).map((peer) => peer.destroy()));
});

/** Acknowledged messages the subscriber never received. */
function lost(subscriber: Subscriber, publisher: Publisher): MessageInfo[] {
  return [...publisher.acknowledged.values()].filter((info) => subscriber.grantedFor(info.topic) !== undefined && !subscriber.arrivals.has(info.uid));
}

/**
 * First deliveries out of the publisher's order on their topic, among messages of one QoS. Across
 * QoS levels no order is promised (MQTT 3.1.1 section 4.6, non-normative): Mosquitto, for one,
 * passes a QoS 2 message on when its PUBREL arrives, after QoS 1 messages sent behind it, and
 * re-sends what it had in flight before what it had queued.
 */
function disorder(subscriber: Subscriber): string[] {
  const seen = new Set<string>();
  const last = new Map<string, number>();
  const found: string[] = [];
  for (const { info } of subscriber.deliveries) {
    if (seen.has(info.uid)) continue;
    seen.add(info.uid);
    const stream = `${info.publisher} ${info.topic} QoS ${info.qos}`;
    if ((last.get(stream) ?? 0) >= info.counter) found.push(`${stream}: #${info.counter} after #${last.get(stream)}`);
    last.set(stream, info.counter);
  }
  return found;
}

describe('gateway SIGKILLed at random moments while it bridges', () => {
  it(`${ROUNDS} SIGKILLs: nothing acknowledged lost either way, QoS 2 exactly once, order per topic kept`, { timeout: 180_000 }, async () => {
    const random = new Random(SEED);
    console.log(`[bridge crash] seed ${SEED} (BRIDGE_CRASH_SEED=${SEED} replays it), ${ROUNDS} rounds`);
    // Mosquitto queues for our offline bridge session without its default limit of 1000.
    const mosquitto = await harness.startMosquitto(await freePort(), ['max_queued_messages 0']);
    const dataDir = harness.freshDir();
    const bridges = [
      bridgeConfig(mosquitto.port, [
        { pattern: 'sensors/#', direction: 'out', qos: 2 },
        { pattern: 'commands/#', direction: 'in', qos: 2 },
      ], { max_inflight: 20 }),
    ];
    const localPublisher = new Publisher({ clientId: 'gw-pub', resendUnacknowledged: true });
    const localSubscriber = new Subscriber({ clientId: 'gw-sub', subscriptions: IN_TOPICS.map((topic) => ({ topic, qos: 2 as const })) });
    const cloudPublisher = new Publisher({ clientId: 'cloud-pub', resendUnacknowledged: true });
    const cloudSubscriber = new Subscriber({ clientId: 'cloud-sub', subscriptions: OUT_TOPICS.map((topic) => ({ topic, qos: 2 as const })) });
    peers.push(localPublisher, localSubscriber, cloudPublisher, cloudSubscriber);
    let gateway: RunningProcess | undefined;
    const kills: string[] = [];
    onTestFailed(() => {
      console.log(
        `[bridge crash] FAILED, seed ${SEED}; kills: ${kills.join('; ')}\n` +
          `out lost: ${lost(cloudSubscriber, localPublisher).length}, in lost: ${lost(localSubscriber, cloudPublisher).length}\n` +
          `violations: ${[...cloudSubscriber.violations, ...localSubscriber.violations].slice(0, 10).join('\n')}\n` +
          `last gateway output:\n${gateway?.log().slice(-3000) ?? ''}`,
      );
    });

    // Upstream peers stay connected to Mosquitto all along; it keeps queueing for our bridge.
    expect(await cloudSubscriber.connect(mosquitto.port)).toBe(true);
    expect(await cloudPublisher.connect(mosquitto.port)).toBe(true);

    for (let round = 1; round <= ROUNDS; round++) {
      gateway = await harness.startGateway(dataDir, bridges, { log_level: 'info' });
      const current = gateway;
      if (round === 1) {
        // Messages published upstream before the bridge's first SUBSCRIBE were never ours to keep.
        await current.waitFor(/bridge cloud: subscribed upstream/);
      }
      let killed = false;
      let onKilled!: () => void;
      const killedPromise = new Promise<void>((resolve) => (onKilled = resolve));
      const plan = Array.from({ length: random.int(20, 80) }, () => ({ topic: random.pick(OUT_TOPICS), qos: random.pick([1, 2] as const) }));
      const upstreamPlan = Array.from({ length: random.int(10, 40) }, () => ({ topic: random.pick(IN_TOPICS), qos: random.pick([1, 2] as const) }));
      // Every count up to the plan's length is reached: each of its messages gets acknowledged.
      const killAt = random.int(1, plan.length);
      let events = 0;
      const tick = () => {
        if (killed || ++events !== killAt) return;
        killed = true;
        current.broker.child.kill('SIGKILL');
        kills.push(`round ${round} after ${killAt} events`);
        onKilled();
      };
      localPublisher.onAcknowledged = tick;
      localSubscriber.onDelivery = tick;
      cloudSubscriber.onDelivery = tick;
      if (!(await localSubscriber.connect(current.port)) && !killed) throw new Error('gw-sub could not connect');
      if (!killed && (await localPublisher.connect(current.port))) localPublisher.load(plan, random.pick([1, 8, 32]));
      cloudPublisher.load(upstreamPlan, random.pick([1, 8]));
      await killedPromise;
      expect((await current.broker.exited).signal).toBe('SIGKILL');
      await Promise.all([localPublisher, localSubscriber].map((peer) => peer.link?.closed));
      localPublisher.onAcknowledged = undefined;
      localPublisher.clearPlan();
      localSubscriber.onDelivery = undefined;
      cloudSubscriber.onDelivery = undefined;
    }

    // ---- Final gateway: everything drains; a marker per publisher and topic ends it ----------------
    gateway = await harness.startGateway(dataDir, bridges, { log_level: 'info' });
    expect(await localSubscriber.connect(gateway.port)).toBe(true);
    expect(await localPublisher.connect(gateway.port)).toBe(true);
    await Promise.all([localPublisher.settled(), cloudPublisher.settled()]);
    // A marker at each QoS: order is promised per topic and QoS only, and a QoS 2 message still
    // between PUBREC and PUBCOMP may arrive after a QoS 1 marker sent behind it.
    const markersOf = (topics: readonly string[]) => topics.flatMap((topic) => ([1, 2] as const).map((qos) => ({ topic, qos, marker: true })));
    localPublisher.load(markersOf(OUT_TOPICS), 3);
    cloudPublisher.load(markersOf(IN_TOPICS), 3);
    await Promise.all([localPublisher.settled(), cloudPublisher.settled()]);
    const markers = (publisher: Publisher) => [...publisher.published.values()].filter((info) => info.marker);
    await cloudSubscriber.until(() => markers(localPublisher).every((marker) => cloudSubscriber.arrivals.has(marker.uid)), 'the out markers');
    await localSubscriber.until(() => markers(cloudPublisher).every((marker) => localSubscriber.arrivals.has(marker.uid)), 'the in markers');

    const out = { sent: localPublisher.acknowledged.size, delivered: cloudSubscriber.deliveries.length, qos1Duplicates: cloudSubscriber.qos1Duplicates };
    const inbound = { sent: cloudPublisher.acknowledged.size, delivered: localSubscriber.deliveries.length, qos1Duplicates: localSubscriber.qos1Duplicates };
    console.log(`[bridge crash] seed ${SEED}, ${kills.length} kills; out ${JSON.stringify(out)}; in ${JSON.stringify(inbound)}`);
    expect(kills).toHaveLength(ROUNDS);
    expect(lost(cloudSubscriber, localPublisher).map((info) => info.uid), `out, seed ${SEED}`).toEqual([]);
    expect(lost(localSubscriber, cloudPublisher).map((info) => info.uid), `in, seed ${SEED}`).toEqual([]);
    expect([...cloudSubscriber.violations, ...localSubscriber.violations], `seed ${SEED}`).toEqual([]);
    expect([...disorder(cloudSubscriber), ...disorder(localSubscriber)], `seed ${SEED}`).toEqual([]);
  });
});
