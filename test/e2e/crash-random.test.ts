/**
 * Randomized crash test (issue 4, "Durability"): the broker runs as a child process (bin/broker.js
 * → dist/) on one data directory and is killed with SIGKILL at random moments under load, then
 * restarted on the same directory — at least 20 times per run. Afterwards one more broker process
 * lets the subscribers drain, and the test proves:
 *
 *   1. no acknowledged message is lost: every message a publisher got PUBACK (QoS 1) or PUBREC
 *      (QoS 2) for reaches every persistent subscriber whose subscription matches it;
 *   2. no QoS 2 message is delivered twice as a new delivery, in particular none after its PUBCOMP
 *      (re-sends of a PUBLISH whose packet id the subscriber still holds are re-sends, not
 *      deliveries [MQTT-4.3.3-2]);
 *   3. order per topic is kept: per publisher and topic, the first deliveries of distinct messages
 *      follow the publisher's counter [MQTT-4.6.0-6];
 *   4. QoS 1 duplicates (re-deliveries after a crash or reconnect) are allowed; they are counted.
 *
 * Moves come from a seeded PRNG: the seed is printed, CRASH_SEED=<n> replays the same plan (kill
 * counts, loads, subscriber moves; socket timing still varies), CRASH_ROUNDS=<n> changes the number
 * of kills. The kill moment is count-based (the k-th acknowledgement, delivery or PUBREL of a
 * round, killed from inside the packet handler that counted it), never time-based. No sleeps, no
 * timed assertions: the drain ends with a marker per publisher and topic, which can only arrive
 * after everything published before it on that topic.
 */
import { randomInt } from 'node:crypto';
import { afterEach, describe, expect, it, onTestFailed } from 'vitest';
import { BrokerProcess, makeDataDir, removeDataDir } from '../helpers/broker-process.js';
import { Publisher, Random, Subscriber, type Delivery, type MessageInfo } from '../helpers/mqtt-peers.js';

function integerFromEnv(name: string, fallback: number): number {
  const value = process.env[name];
  if (value === undefined || value === '') return fallback;
  if (!/^\d+$/.test(value)) throw new Error(`${name} must be a non-negative integer, not ${JSON.stringify(value)}`);
  return Number(value);
}

const SEED = integerFromEnv('CRASH_SEED', randomInt(2 ** 31)) >>> 0;
/** At least 20 kills (issue 4); more with CRASH_ROUNDS. */
const ROUNDS = Math.max(20, integerFromEnv('CRASH_ROUNDS', 22));
/** Extra broker options for every broker process, e.g. CRASH_BROKER_ARGS='--sync-interval 5'. */
const BROKER_ARGS = (process.env.CRASH_BROKER_ARGS ?? '').split(/\s+/).filter((arg) => arg !== '');
const VERBOSE = process.env.CRASH_VERBOSE !== undefined;
const TOPICS = ['crash/t0', 'crash/t1', 'crash/t2'] as const;

// ---------------------------------------------------------------------------------------------
// Harness: everything started here is torn down in afterEach, even when the test failed half-way.

const brokers: BrokerProcess[] = [];
const peers: Array<Publisher | Subscriber> = [];
const dataDirs: string[] = [];
/** Set by afterEach: a test body still running after a timeout must not start another broker. */
let tornDown = false;

afterEach(async () => {
  tornDown = true;
  await Promise.all(peers.splice(0).map((peer) => peer.destroy()));
  await Promise.all(
    brokers.splice(0).map(async (broker) => {
      if (broker.child.exitCode === null && broker.child.signalCode === null) broker.child.kill('SIGKILL');
      await broker.exited;
    }),
  );
  for (const dir of dataDirs.splice(0)) removeDataDir(dir);
});

async function startBroker(dataDir: string, extraArgs: string[] = []): Promise<BrokerProcess> {
  const broker = await BrokerProcess.start(dataDir, [...BROKER_ARGS, ...extraArgs]);
  brokers.push(broker);
  if (tornDown) {
    await broker.kill();
    throw new Error('the test was torn down');
  }
  return broker;
}

// ---------------------------------------------------------------------------------------------
// Checks, shared by the final assertions and the failure report

/** Acknowledged messages a subscriber never received (its subscriptions match every test topic). */
function lostFor(subscriber: Subscriber, publishers: Publisher[]): MessageInfo[] {
  return publishers.flatMap((publisher) =>
    [...publisher.acknowledged.values()].filter(
      (info) => subscriber.grantedFor(info.topic) !== undefined && !subscriber.arrivals.has(info.uid),
    ),
  );
}

/** First deliveries whose counter is not above the previous first delivery of that publisher and topic. */
function orderViolations(subscriber: Subscriber): string[] {
  const seen = new Set<string>();
  const last = new Map<string, Delivery>();
  const violations: string[] = [];
  for (const delivery of subscriber.deliveries) {
    const { info } = delivery;
    if (seen.has(info.uid)) continue;
    seen.add(info.uid);
    const stream = `${info.publisher} ${info.topic}`;
    const previous = last.get(stream);
    if (previous && info.counter <= previous.info.counter) {
      violations.push(`${stream}: #${info.counter} (${info.uid}) first delivered after #${previous.info.counter} (${previous.info.uid})`);
    }
    last.set(stream, delivery);
  }
  return violations;
}

/**
 * Arrivals of a message received before that carry DUP=0, unless the publisher re-sent that
 * message (then the broker legitimately holds a second copy, whose first delivery has DUP=0).
 * A re-delivery must have DUP=1 [MQTT-3.3.1-1].
 */
function redeliveriesWithoutDup(subscriber: Subscriber, publishers: Publisher[]): string[] {
  const resent = new Set(publishers.flatMap((publisher) => [...publisher.resentUids]));
  const seen = new Set<string>();
  const found: string[] = [];
  for (const { info, dup, qos, packetId } of subscriber.deliveries) {
    if (seen.has(info.uid) && !dup && !resent.has(info.uid)) found.push(`${info.uid} again with DUP=0 (QoS ${qos}, packet id ${packetId})`);
    seen.add(info.uid);
  }
  return found;
}

function sample<T>(items: T[], count = 10): string {
  const shown = items.slice(0, count).map((item) => (typeof item === 'string' ? item : JSON.stringify(item)));
  return shown.join('\n  ') + (items.length > count ? `\n  … and ${items.length - count} more` : '');
}

// ---------------------------------------------------------------------------------------------

type SubscriberMode = 'online' | 'offline' | 'leave' | 'bounce';
type KillTrigger = 'acknowledgements' | 'deliveries' | 'releases';

describe('crash at random moments (SIGKILL under load, restart on the same data directory)', () => {
  it(`${ROUNDS} SIGKILLs: no acknowledged QoS1/QoS2 message lost, no QoS2 delivered twice or after PUBCOMP, order per topic kept [MQTT-4.3.2-2] [MQTT-4.3.3-2] [MQTT-4.6.0-6]`, { timeout: 120_000 }, async () => {
    tornDown = false;
    const random = new Random(SEED);
    const dataDir = makeDataDir('broker-crash-random-');
    dataDirs.push(dataDir);
    const started = performance.now();

    // pub-a re-sends unacknowledged PUBLISHes with DUP=1 on reconnect [MQTT-4.4.0-1]; pub-b gives
    // them up (allowed: never acknowledged). Both continue PUBREC'd QoS 2 flows with PUBREL.
    const publishers = [
      new Publisher({ clientId: 'crash-pub-a', resendUnacknowledged: true }),
      new Publisher({ clientId: 'crash-pub-b', resendUnacknowledged: false }),
    ];
    // sub-all gets everything at the published QoS; sub-mixed has QoS 1 (QoS 2 downgraded) on t0 and t2.
    const subscribers = [
      new Subscriber({ clientId: 'crash-sub-all', subscriptions: TOPICS.map((topic) => ({ topic, qos: 2 as const })) }),
      new Subscriber({
        clientId: 'crash-sub-mixed',
        subscriptions: [
          { topic: 'crash/t0', qos: 1 },
          { topic: 'crash/t1', qos: 2 },
          { topic: 'crash/t2', qos: 1 },
        ],
      }),
    ];
    peers.push(...publishers, ...subscribers);

    let phase = 'start';
    let round = 0;
    let broker: BrokerProcess | undefined;
    const kills: string[] = [];
    const stats = () => {
      const published = publishers.reduce((sum, p) => sum + p.published.size, 0);
      const acknowledged = publishers.reduce((sum, p) => sum + p.acknowledged.size, 0);
      const resent = publishers.reduce((sum, p) => sum + p.resent, 0);
      const abandoned = publishers.reduce((sum, p) => sum + p.abandoned.size, 0);
      const delivered = subscribers.reduce((sum, s) => sum + s.deliveries.length, 0);
      const qos1Duplicates = subscribers.reduce((sum, s) => sum + s.qos1Duplicates, 0);
      const qos1Copies = subscribers.reduce((sum, s) => sum + s.qos1Copies, 0);
      const qos2Resends = subscribers.reduce((sum, s) => sum + s.qos2Resends, 0);
      const reconnects = subscribers.reduce((sum, s) => sum + s.connections, 0);
      return `seed ${SEED}, kills ${kills.length}, published ${published} (re-sent ${resent}, abandoned unacknowledged ${abandoned}), acknowledged ${acknowledged}, delivered ${delivered} (QoS1 duplicates ${qos1Duplicates}, of which ${qos1Copies} with DUP=0 from publisher re-sends; QoS2 re-sends to a held packet id ${qos2Resends}), subscriber connections ${reconnects}`;
    };
    onTestFailed(() => {
      const lost = subscribers.map((s) => `${s.clientId}: ${lostFor(s, publishers).length} acknowledged not (yet) received: ${sample(lostFor(s, publishers).map((i) => i.uid), 5)}`);
      console.log(
        `[crash random] FAILED in ${phase} (round ${round})\n${stats()}\n${lost.join('\n')}\n` +
          `publishers in flight: ${publishers.map((p) => `${p.clientId} ${p.inFlight} (+${p.planned} planned)`).join(', ')}\n` +
          `violations: ${sample(subscribers.flatMap((s) => s.violations))}\n` +
          `anomalies: ${sample([...publishers, ...subscribers].flatMap((peer) => peer.anomalies))}\n` +
          `kills: ${kills.slice(-5).join('; ')}\n` +
          `last broker output (tail):\n${broker?.output.slice(-2000) ?? ''}`,
      );
    });

    // ---- SIGKILL rounds -----------------------------------------------------------------------
    for (round = 1; round <= ROUNDS; round++) {
      phase = 'round start';
      const roundStarted = performance.now();
      // The outbound window changes between restarts now and then: a session may come back with
      // more messages in flight than the new broker's --max-inflight.
      const maxInflight = random.pick([32, 32, 8, 2]);
      const current = await startBroker(dataDir, ['--max-inflight', String(maxInflight)]);
      broker = current;
      const listening = performance.now();
      let killed = false;
      let onKilled!: () => void;
      const killedPromise = new Promise<void>((resolve) => (onKilled = resolve));
      const kill = (reason: string) => {
        if (killed) return;
        killed = true;
        current.child.kill('SIGKILL');
        kills.push(`round ${round}: ${reason}`);
        onKilled();
      };

      if (round === 1) {
        // Subscribe first (SUBACK = stored), so that every message published from now on matches.
        for (const subscriber of subscribers) {
          if (!(await subscriber.connect(current.port))) throw new Error(`${subscriber.clientId} could not subscribe`);
          await subscriber.disconnect();
        }
      }

      // This round's moves.
      const modes = subscribers.map(() => random.pick<SubscriberMode>(['online', 'online', 'online', 'offline', 'leave', 'bounce']));
      const plans = publishers.map(() =>
        Array.from({ length: random.int(40, 110) }, () => ({ topic: random.pick(TOPICS), qos: random.pick([1, 2] as const) })),
      );
      const windows = publishers.map(() => random.pick([1, 4, 16, 48]));
      const total = plans.reduce((sum, plan) => sum + plan.length, 0);
      const online = subscribers.filter((_, index) => modes[index] === 'online');
      const releasesReachable = online.reduce(
        (sum, s) => sum + plans.flat().filter(({ topic, qos }) => qos === 2 && s.grantedFor(topic) === 2).length,
        0,
      );
      let trigger = random.pick<KillTrigger>(['acknowledgements', 'deliveries', 'releases']);
      if (trigger === 'deliveries' && online.length === 0) trigger = 'acknowledgements';
      if (trigger === 'releases' && releasesReachable === 0) trigger = 'acknowledgements';
      // Every count below is reached if the broker runs on: the round's messages all get
      // acknowledged, and a subscriber online all round gets each of them.
      const reachable = trigger === 'releases' ? releasesReachable : total;
      const killAt = random.chance(0.3) ? random.int(1, Math.min(20, reachable)) : random.int(1, reachable);
      let count = 0;
      const tick = (kind: KillTrigger) => {
        if (kind === trigger && ++count === killAt) kill(`after ${killAt} ${trigger} (subscribers ${modes.join('/')}, publisher windows ${windows.join('/')}, max-inflight ${maxInflight})`);
      };
      for (const publisher of publishers) publisher.onAcknowledged = () => tick('acknowledgements');

      const background: Array<Promise<unknown>> = [];
      const connectOrKilled = async (peer: Publisher | Subscriber) => {
        const ok = await peer.connect(current.port);
        if (!ok && !killed) throw new Error(`${peer.clientId} could not connect in round ${round}:\n${current.output}`);
        return ok;
      };
      phase = 'connecting';
      for (const [index, subscriber] of subscribers.entries()) {
        const mode = modes[index]!;
        subscriber.onRelease = () => tick('releases');
        subscriber.onDelivery = () => tick('deliveries');
        if (mode === 'offline' || killed) continue;
        if (mode === 'leave' || mode === 'bounce') {
          // Drop the connection after this many deliveries (gracefully or not); 'bounce' comes back at once.
          const after = random.int(1, 150);
          const graceful = random.chance(0.5);
          let delivered = 0;
          subscriber.onDelivery = () => {
            tick('deliveries');
            if (++delivered !== after || killed) return;
            background.push(
              (async () => {
                if (graceful) await subscriber.disconnect();
                else await subscriber.destroy();
                if (mode === 'bounce' && !killed) await connectOrKilled(subscriber);
              })(),
            );
          };
        }
        await connectOrKilled(subscriber);
      }
      for (const [index, publisher] of publishers.entries()) {
        if (killed) break;
        if (await connectOrKilled(publisher)) publisher.load(plans[index]!, windows[index]!);
      }

      phase = 'load';
      // Only our SIGKILL may end a round: a broker that exits by itself, or closes a connection we
      // did not close, fails the test at once instead of stalling it.
      const unexpected = new Promise<never>((_, reject) => {
        void current.exited.then(({ code, signal }) => {
          if (!killed) reject(new Error(`round ${round}: the broker exited by itself (${code ?? signal}):\n${current.output}`));
        });
        const stayConnected = [...publishers, ...subscribers.filter((_, index) => modes[index] === 'online')];
        for (const peer of stayConnected) {
          void peer.link?.closed.then(() => {
            if (!killed) reject(new Error(`round ${round}: the broker closed ${peer.clientId}'s connection:\n${current.output}`));
          });
        }
      });
      await Promise.race([killedPromise, unexpected]);
      if (VERBOSE) {
        const elapsed = (from: number) => ((performance.now() - from) / 1000).toFixed(2);
        console.log(`[crash random] ${kills.at(-1)}; broker started in ${((listening - roundStarted) / 1000).toFixed(2)} s, killed ${elapsed(listening)} s later`);
      }
      phase = 'after kill';
      expect((await current.exited).signal).toBe('SIGKILL');
      await Promise.all(background);
      await Promise.all([...publishers, ...subscribers].map((peer) => peer.link?.closed));
      for (const publisher of publishers) {
        publisher.onAcknowledged = undefined;
        publisher.clearPlan();
      }
      for (const subscriber of subscribers) {
        subscriber.onDelivery = undefined;
        subscriber.onRelease = undefined;
      }
    }

    // ---- Final restart and drain --------------------------------------------------------------
    phase = 'final drain';
    broker = await startBroker(dataDir);
    for (const peer of [...subscribers, ...publishers]) {
      if (!(await peer.connect(broker.port))) throw new Error(`${peer.clientId} could not connect to the final broker`);
    }
    await Promise.all(publishers.map((publisher) => publisher.settled()));
    // A marker per publisher and topic: it arrives only after every message published before it on
    // that topic by that publisher (order per topic), so once all markers are in, the drain is done.
    for (const publisher of publishers) publisher.load(TOPICS.map((topic) => ({ topic, qos: 1 as const, marker: true })), 3);
    await Promise.all(publishers.map((publisher) => publisher.settled()));
    const markers = publishers.flatMap((publisher) => [...publisher.published.values()].filter((info) => info.marker));
    await Promise.all(
      subscribers.map((subscriber) => subscriber.until(() => markers.every((marker) => subscriber.arrivals.has(marker.uid)), 'the markers')),
    );
    phase = 'final stop';
    const { code } = await broker.stop();
    expect(code, broker.output).toBe(0);

    // ---- Verdict ------------------------------------------------------------------------------
    phase = 'assertions';
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    console.log(`[crash random] ${stats()}, ${seconds} s`);
    expect(kills.length).toBeGreaterThanOrEqual(20);

    const published = new Map(publishers.flatMap((publisher) => [...publisher.published]));
    for (const subscriber of subscribers) {
      const unknown = [...subscriber.arrivals.keys()].filter((uid) => !published.has(uid));
      expect(unknown, `${subscriber.clientId}: delivered but never published`).toEqual([]);
      // (1) Nothing acknowledged is lost.
      const lost = lostFor(subscriber, publishers).map((info) => `${info.uid} ${info.topic} #${info.counter} QoS ${info.qos}`);
      expect(lost, `${subscriber.clientId}: acknowledged but never delivered (seed ${SEED}):\n  ${sample(lost)}`).toEqual([]);
      // (2) QoS 2: no second new delivery, none after PUBCOMP; packet ids, QoS as granted.
      expect(subscriber.violations, `${subscriber.clientId} (seed ${SEED}):\n  ${sample(subscriber.violations)}`).toEqual([]);
      // (3) Order per publisher and topic.
      const disorder = orderViolations(subscriber);
      expect(disorder, `${subscriber.clientId}: order per topic broken (seed ${SEED}):\n  ${sample(disorder)}`).toEqual([]);
    }
    // A re-delivery is flagged DUP=1 [MQTT-3.3.1-1].
    for (const subscriber of subscribers) {
      const withoutDup = redeliveriesWithoutDup(subscriber, publishers);
      expect(withoutDup, `${subscriber.clientId}: re-delivered with DUP=0 (seed ${SEED}):\n  ${sample(withoutDup)}`).toEqual([]);
    }
    // Sessions came back after every crash; no acknowledgement for an unknown packet id.
    const anomalies = [...publishers, ...subscribers].flatMap((peer) => peer.anomalies);
    expect(anomalies, `seed ${SEED}:\n  ${sample(anomalies)}`).toEqual([]);
    // (4) QoS 1 duplicates are allowed; counted in the summary above.
  });
});
