/**
 * A retained message whose store write is under way while a subscription to its topic is being
 * stored must reach that subscriber: it was routed before the subscription existed (so not live),
 * and it must not miss the retained index either [MQTT-3.3.1-6]. A held disk write opens the
 * window deterministically: the SUBSCRIBE's batch waits, the retained PUBLISH is routed behind it.
 */
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createBroker } from '../../src/server/broker.js';
import { LevelRepository } from '../../src/store/level-repository.js';
import { makeDataDir, removeDataDir } from '../helpers/broker-process.js';
import { DiskFaults, touches } from '../helpers/disk-faults.js';
import { Clients, publishQos1, summary } from '../helpers/wait.js';

const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

describe('retained messages racing a new subscription', () => {
  it.each([0, 1] as const)('a retained QoS %i PUBLISH routed while the SUBSCRIBE is being stored reaches the new subscriber as retained', async (qos) => {
    const dataDir = makeDataDir('broker-retained-race-');
    cleanups.push(() => removeDataDir(dataDir));
    const faults = new DiskFaults();
    const repository = new LevelRepository({ location: join(dataDir, 'store'), instrument: faults.instrument });
    const broker = createBroker({ host: '127.0.0.1', port: 0, dataDir, repository, admin: false });
    const { port } = await broker.listen();
    cleanups.push(() => broker.close());
    const clients = new Clients(port);
    cleanups.push(() => clients.closeAll());

    const subscriber = await clients.rawAccepted({ clientId: 'late-subscriber', clean: false });
    const publisher = await clients.rawAccepted({ clientId: 'retainer' });
    const held = faults.hold(touches('b', 'late-subscriber'));
    subscriber.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'race/t', qos: 1 }] });
    await held.reached;
    // Routed now, while the subscription is on its way to the disk: it matches no one.
    publisher.send({ cmd: 'publish', topic: 'race/t', payload: Buffer.from('retained value'), qos, messageId: 7, retain: true, dup: false });
    await publisher.roundTrip();
    held.release();

    expect((await subscriber.next('suback')).granted).toEqual([1]);
    if (qos === 1) expect((await publisher.next('puback')).messageId).toBe(7);
    // The broker handles a connection's packets in order: once PINGRESP is back, everything the
    // SUBSCRIBE caused (its retained messages) is queued; a marker published now comes after them.
    await subscriber.roundTrip();
    await publishQos1(publisher, 8, 'race/t', 'marker');
    const received = [];
    for (;;) {
      const publish = await subscriber.next('publish');
      if (publish.qos > 0) subscriber.send({ cmd: 'puback', messageId: publish.messageId! });
      received.push(`${summary(publish)} retain=${publish.retain}`);
      if (publish.payload.toString() === 'marker') break;
    }
    expect(received).toEqual(['race/t=retained value retain=true', 'race/t=marker retain=false']);
  });
});
