/**
 * Memory-only retained messages (Broker.publishEphemeral, the seam for $SYS topics and a bridge's
 * state): delivered to current subscribers at QoS 0, kept in memory for new subscriptions, never
 * written to the store and never counted against its limits, gone after a restart.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { IPublishPacket } from 'mqtt-packet';
import { createBroker, type Broker } from '../../src/server/broker.js';
import { LevelRepository } from '../../src/store/level-repository.js';
import { Clients, publishQos1, subscribe } from '../helpers/wait.js';

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

async function startOn(location: string): Promise<{ broker: Broker; repository: LevelRepository; clients: Clients }> {
  const repository = new LevelRepository({ location });
  // Without the broker's own $SYS publications: this tests the seam they use.
  const broker = createBroker({ host: '127.0.0.1', port: 0, repository, sysInterval: 0 });
  const { port } = await broker.listen();
  const clients = new Clients(port);
  cleanup.push(() => broker.close());
  cleanup.push(() => clients.closeAll());
  return { broker, repository, clients };
}

/** Keys in the store, and its retained counts, as the running broker's store has them. */
async function storeState(repository: LevelRepository): Promise<{ keys: number; retained: unknown }> {
  const view = repository.onDisk.inspector().view();
  try {
    return { keys: (await view.totals()).keys, retained: await repository.retainedStats() };
  } finally {
    await view.close();
  }
}

/** What a new subscription to `filter` is sent, as topic=payload (QoS, RETAIN). */
async function sentToNewSubscriber(clients: Clients, filter: string): Promise<string[]> {
  const client = await clients.rawAccepted({ clientId: `probe-${Math.random().toString(36).slice(2)}` });
  await subscribe(client, 1, [{ topic: filter, qos: 1 }]);
  await client.roundTrip();
  const sent = client.received.filter((packet): packet is IPublishPacket => packet.cmd === 'publish');
  await client.disconnect();
  return sent.map((publish) => `${publish.topic}=${publish.payload.toString()} (q${publish.qos}${publish.retain ? ', retain' : ''})`);
}

describe('memory-only retained messages', { timeout: 30_000 }, () => {
  it('reach current and new subscribers at QoS 0, shadow a stored one, and never touch the store', async () => {
    const location = fs.mkdtempSync(path.join(os.tmpdir(), 'broker-ephemeral-'));
    cleanup.push(() => fs.rmSync(location, { recursive: true, force: true }));
    const { broker, repository, clients } = await startOn(location);

    const publisher = await clients.rawAccepted({ clientId: 'publisher' });
    await publishQos1(publisher, 1, 'bridge/state', 'stored by a client', true);
    const live = await clients.rawAccepted({ clientId: 'live' });
    await subscribe(live, 1, [
      { topic: '$SYS/#', qos: 1 },
      { topic: 'bridge/#', qos: 1 },
    ]);
    await live.roundTrip();
    live.received.splice(0);
    const before = await storeState(repository);

    broker.publishEphemeral('$SYS/broker/uptime', Buffer.from('42 seconds'), true);
    broker.publishEphemeral('bridge/state', Buffer.from('connected'), true);
    broker.publishEphemeral('$SYS/broker/load', Buffer.from('not retained'), false);
    const delivered = await live.take('publish', 3);
    // Live deliveries: QoS 0 whatever was granted, RETAIN 0 as for any message to a current subscriber [MQTT-3.3.1-9].
    expect(delivered.map((publish) => [publish.topic, publish.payload.toString(), publish.qos, publish.retain])).toEqual([
      ['$SYS/broker/uptime', '42 seconds', 0, false],
      ['bridge/state', 'connected', 0, false],
      ['$SYS/broker/load', 'not retained', 0, false],
    ]);

    expect(await sentToNewSubscriber(clients, '$SYS/#')).toEqual(['$SYS/broker/uptime=42 seconds (q0, retain)']);
    expect(await sentToNewSubscriber(clients, 'bridge/+')).toEqual(['bridge/state=connected (q0, retain)']);
    // Wildcards at the first level do not reach $ topics [MQTT-4.7.2-1].
    expect(await sentToNewSubscriber(clients, '#')).toEqual(['bridge/state=connected (q0, retain)']);

    // An empty payload clears the memory-only one: the client's stored message shows again.
    broker.publishEphemeral('bridge/state', Buffer.alloc(0), true);
    expect(await sentToNewSubscriber(clients, 'bridge/+')).toEqual(['bridge/state=stored by a client (q1, retain)']);
    broker.publishEphemeral('bridge/state', Buffer.from('connected again'), true);

    expect(await storeState(repository)).toEqual(before);
    expect(before.retained).toEqual({ messages: 1, bytes: 18, refused: 0 });

    await broker.close();
    const again = await startOn(location);
    expect(await sentToNewSubscriber(again.clients, '$SYS/#')).toEqual([]);
    expect(await sentToNewSubscriber(again.clients, 'bridge/+')).toEqual(['bridge/state=stored by a client (q1, retain)']);
  });

  it('are not counted against the retained limits', async () => {
    const location = fs.mkdtempSync(path.join(os.tmpdir(), 'broker-ephemeral-'));
    cleanup.push(() => fs.rmSync(location, { recursive: true, force: true }));
    const repository = new LevelRepository({ location, retainedLimits: { maxMessages: 1, maxBytes: 1000 } });
    // Without the broker's own $SYS publications: this tests the seam they use.
  const broker = createBroker({ host: '127.0.0.1', port: 0, repository, sysInterval: 0 });
    const { port } = await broker.listen();
    cleanup.push(() => broker.close());
    const clients = new Clients(port);
    cleanup.push(() => clients.closeAll());
    for (let index = 0; index < 5; index++) broker.publishEphemeral(`$SYS/broker/${index}`, Buffer.from('x'.repeat(500)), true);
    const publisher = await clients.rawAccepted({ clientId: 'publisher' });
    await publishQos1(publisher, 1, 'client/a', 'fits', true);
    expect(await repository.retainedStats()).toEqual({ messages: 1, bytes: 4, refused: 0 });
    expect(await sentToNewSubscriber(clients, '$SYS/broker/+')).toHaveLength(5);
  });
});
