/**
 * The broker-wide session budget (issue 12, item 1): persistent sessions and subscriptions are in
 * memory whether or not their clients are connected, and a restart loads all of them again, so
 * they are bounded when they are taken. A client flooding long, distinct filters gets 0x80 at the
 * budget; a CONNECT that would store one more persistent session gets 0x03; and the broker
 * restarts, after SIGKILL too, with everything it accepted, also under a lower limit.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { BrokerProcess, makeDataDir, removeDataDir } from '../helpers/broker-process.js';
import { startBroker, type RunningBroker } from '../helpers/in-process.js';
import { Clients, publishQos1, receiveAndAck, subscribe, summary } from '../helpers/wait.js';

const REJECTED = 0x80;
const SERVER_UNAVAILABLE = 3;

/** A filter of `levels` levels, distinct per (client, index) at its first level, `a` and `+` after it. */
function deepFilter(client: string, index: number, levels: number): string {
  const parts = [`${client}-${index}`];
  for (let level = 1; level < levels; level++) parts.push((index >> level % 8) & 1 ? '+' : 'a');
  return parts.join('/');
}

/** A topic the deep filter matches. */
function topicFor(filter: string): string {
  return filter.replaceAll('+', 'x');
}

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function inProcess(budget: { maxSessions?: number; maxSubscriptions?: number; maxSubscriptionBytes?: number }): Promise<{ running: RunningBroker; clients: Clients }> {
  const running = await startBroker(budget);
  const clients = new Clients(running.port);
  cleanups.push(() => running.stop());
  cleanups.push(() => clients.closeAll());
  return { running, clients };
}

describe('max_subscriptions and max_subscription_bytes: a budget for all sessions together', () => {
  it('grants filters until the bytes budget is reached, refuses new ones with 0x80 beyond it, for every client alike', async () => {
    const { running, clients } = await inProcess({ maxSubscriptionBytes: 64 * 1024 });
    const granted: number[] = [];
    for (let client = 0; client < 3; client++) {
      const flooder = await clients.rawAccepted({ clientId: `flood-${client}`, clean: false });
      for (let index = 0; index < 40; index++) {
        granted.push(...(await subscribe(flooder, index + 1, [{ topic: deepFilter(`flood-${client}`, index, 100), qos: 1 }])));
      }
    }
    const accepted = granted.filter((code) => code !== REJECTED).length;
    expect(accepted).toBeGreaterThan(0);
    expect(accepted).toBeLessThan(granted.length);
    // Once refused, refused for good while nothing is freed: no filter slips in after the first 0x80.
    expect(granted.slice(granted.indexOf(REJECTED)).every((code) => code === REJECTED)).toBe(true);
    expect(running.broker.sessions.usage.subscriptionBytes).toBeLessThanOrEqual(64 * 1024);
    expect(running.broker.sessions.usage.subscriptions).toBe(accepted);
  });

  it('at the budget, a filter already held is still replaced [MQTT-3.8.4-3], and an UNSUBSCRIBE makes room for a new one', async () => {
    const { clients } = await inProcess({ maxSubscriptions: 3 });
    const client = await clients.rawAccepted({ clientId: 'full', clean: false });
    expect(await subscribe(client, 1, [{ topic: 'a', qos: 0 }, { topic: 'b', qos: 0 }, { topic: 'c', qos: 0 }, { topic: 'd', qos: 0 }])).toEqual([0, 0, 0, REJECTED]);
    expect(await subscribe(client, 2, [{ topic: 'a', qos: 2 }])).toEqual([2]);
    expect(await subscribe(client, 3, [{ topic: 'd', qos: 1 }])).toEqual([REJECTED]);
    client.send({ cmd: 'unsubscribe', messageId: 4, unsubscriptions: ['b'] });
    await client.next('unsuback');
    expect(await subscribe(client, 5, [{ topic: 'd', qos: 1 }])).toEqual([1]);
  });

  it('counts clean sessions too, and gives their room back when they end', async () => {
    const { running, clients } = await inProcess({ maxSubscriptions: 2 });
    const clean = await clients.rawAccepted({ clientId: 'clean-one', clean: true });
    expect(await subscribe(clean, 1, [{ topic: 'x', qos: 0 }, { topic: 'y', qos: 0 }])).toEqual([0, 0]);
    const other = await clients.rawAccepted({ clientId: 'other', clean: false });
    expect(await subscribe(other, 1, [{ topic: 'z', qos: 0 }])).toEqual([REJECTED]);
    await clean.disconnect();
    // The clean session is discarded with its connection; its subscriptions leave the budget.
    await other.roundTrip();
    for (;;) {
      if (running.broker.sessions.usage.subscriptions === 0) break;
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(await subscribe(other, 2, [{ topic: 'z', qos: 0 }])).toEqual([0]);
  });
});

describe('max_sessions', () => {
  it('refuses a CONNECT that would store one more persistent session with 0x03, touching nothing; clean sessions and resumes still work', async () => {
    const { clients } = await inProcess({ maxSessions: 2 });
    for (const clientId of ['p1', 'p2']) await (await clients.rawAccepted({ clientId, clean: false })).disconnect();
    const { client: refused, connack } = await clients.raw({ clientId: 'p3', clean: false });
    expect(connack.returnCode).toBe(SERVER_UNAVAILABLE);
    expect(connack.sessionPresent).toBe(false);
    await refused.closed;
    // A clean session is not stored: allowed. A stored one resumes.
    expect((await clients.raw({ clientId: 'c1', clean: true })).connack.returnCode).toBe(0);
    const resumed = await clients.raw({ clientId: 'p1', clean: false });
    expect([resumed.connack.returnCode, resumed.connack.sessionPresent]).toEqual([0, true]);
    // Discarding one (CleanSession=1 on its id) makes room.
    await (await clients.rawAccepted({ clientId: 'p2', clean: true })).disconnect();
    expect((await clients.raw({ clientId: 'p3', clean: false })).connack.returnCode).toBe(0);
  });
});

describe('a restart brings back everything the broker accepted (bin/broker.js)', { timeout: 60_000 }, () => {
  it('after a subscription flood and SIGKILL, the broker starts, serves every accepted filter, and still refuses beyond the budget; a lower limit at restart is a warning, not a failure', async () => {
    const dataDir = makeDataDir();
    cleanups.push(() => removeDataDir(dataDir));
    const config = (limits: string) => {
      const file = join(dataDir, 'broker.yaml');
      writeFileSync(file, `limits:\n${limits}`);
      return ['--config', file];
    };
    let broker = await BrokerProcess.start(dataDir, config('  max_sessions: 3\n  max_subscription_bytes: 65536\n'));
    cleanups.push(() => broker.kill());
    let clients = new Clients(broker.port);
    const accepted: Array<{ clientId: string; filter: string }> = [];
    for (let client = 0; client < 3; client++) {
      const flooder = await clients.rawAccepted({ clientId: `deep-${client}`, clean: false });
      for (let index = 0; index < 30; index++) {
        const filter = deepFilter(`deep-${client}`, index, 120);
        const [code] = await subscribe(flooder, index + 1, [{ topic: filter, qos: 1 }]);
        if (code !== REJECTED) accepted.push({ clientId: `deep-${client}`, filter });
      }
    }
    expect((await clients.raw({ clientId: 'deep-3', clean: false })).connack.returnCode).toBe(SERVER_UNAVAILABLE);
    expect(accepted.length).toBeGreaterThan(0);
    expect(accepted.length).toBeLessThan(90);
    await clients.closeAll();
    await broker.kill();

    // Restarted under a lower session limit than what is stored: it warns and serves it all.
    broker = await BrokerProcess.start(dataDir, config('  max_sessions: 1\n  max_subscription_bytes: 65536\n'));
    expect(broker.output).toMatch(/the store holds more than the session limits allow \(3 persistent sessions/);
    clients = new Clients(broker.port);
    cleanups.push(() => clients.closeAll());
    const publisher = await clients.rawAccepted({ clientId: 'publisher' });
    const last = accepted[accepted.length - 1]!;
    await publishQos1(publisher, 1, topicFor(last.filter), 'routed after restart');
    const owner = await clients.rawAccepted({ clientId: last.clientId, clean: false });
    const [received] = await receiveAndAck(owner, 1);
    expect(summary(received!)).toBe(`${topicFor(last.filter)}=routed after restart`);
    const [code] = await subscribe(owner, 99, [{ topic: deepFilter('more', 1, 120), qos: 1 }]);
    expect(code).toBe(REJECTED);
  });
});
