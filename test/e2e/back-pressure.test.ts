import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import mqttPacket from 'mqtt-packet';
import { afterEach, describe, expect, it } from 'vitest';
import { QOS0_HIGH_WATER } from '../../src/protocol/limits.js';
import { DEFAULTS } from '../../src/server/broker.js';
import { LevelRepository } from '../../src/store/level-repository.js';
import type { PublishTransition } from '../../src/store/repository.js';
import { makeDataDir, removeDataDir } from '../helpers/broker-process.js';
import { startBroker, type RunningBroker } from '../helpers/in-process.js';
import type { RawClient } from '../helpers/raw-client.js';
import { Clients, publishQos1, subscribe } from '../helpers/wait.js';

/**
 * Slow and stuck clients cannot grow the broker's memory without bound (issue 6): a subscriber
 * that stops reading loses QoS 0 messages beyond a high-water mark of unsent bytes (counted), its
 * QoS 1 messages wait in the store with only the inflight window on the wire, and a publisher
 * that pipelines faster than the store writes is stopped from sending by TCP back-pressure.
 * Everything is measured by counting, not by timing.
 */

let running: RunningBroker | undefined;
let clients: Clients | undefined;
/** Run before the broker stops (opening a gate it would wait for) and after (removing its directory). */
const beforeStop: Array<() => unknown> = [];
const afterStop: Array<() => unknown> = [];
afterEach(async () => {
  for (const cleanup of beforeStop.splice(0)) await cleanup();
  await clients?.closeAll();
  await running?.stop();
  running = undefined;
  clients = undefined;
  for (const cleanup of afterStop.splice(0)) await cleanup();
});

async function start(options: Parameters<typeof startBroker>[0] = {}): Promise<{ running: RunningBroker; clients: Clients }> {
  running = await startBroker(options);
  clients = new Clients(running.port);
  return { running, clients };
}

/** Writes on the raw socket, waiting for 'drain' when it asks to: the test itself must not buffer it all. */
async function write(client: RawClient, bytes: Buffer): Promise<void> {
  if (!client.socket.write(bytes)) await once(client.socket, 'drain');
}

/** The most a paused reader's kernel buffers can hold on this machine, both ends of the socket together. */
function kernelBufferBound(): number {
  try {
    const max = (path: string) => Number(readFileSync(path, 'utf8').trim().split(/\s+/).at(-1));
    return max('/proc/sys/net/ipv4/tcp_wmem') + max('/proc/sys/net/ipv4/tcp_rmem');
  } catch {
    return 64 * 1024 * 1024;
  }
}

describe('a subscriber that never reads', () => {
  it('gets QoS 0 messages only up to the high-water mark; the rest are dropped and counted, none lost uncounted', async () => {
    const { running, clients } = await start();
    const subscriber = await clients.rawAccepted({ clientId: 'stuck-qos0' });
    expect(await subscribe(subscriber, 1, [{ topic: 'bp/#', qos: 1 }])).toEqual([1]);
    subscriber.socket.pause();

    // 160 MiB of QoS 0, several times what the kernel can hold for a reader that does not read.
    const size = 64 * 1024;
    const count = 2560;
    const publisher = await clients.rawAccepted({ clientId: 'fast-qos0' });
    const message = mqttPacket.generate({ cmd: 'publish', topic: 'bp/data', payload: Buffer.alloc(size, 0x5a), qos: 0, retain: false, dup: false });
    for (let index = 0; index < count; index++) await write(publisher, message);
    // A QoS 1 marker is never dropped; it leaves after every QoS 0 delivery that was not.
    await publishQos1(publisher, 1, 'bp/marker', 'end');

    subscriber.socket.resume();
    let delivered = 0;
    for (;;) {
      const publish = await subscriber.next('publish');
      if (publish.topic === 'bp/marker') {
        subscriber.send({ cmd: 'puback', messageId: publish.messageId! });
        break;
      }
      expect(publish.payload.length).toBe(size);
      delivered++;
    }
    const dropped = running.broker.counters.qos0Dropped;
    console.log(`QoS 0 to a stuck subscriber: ${count} published, ${delivered} delivered, ${dropped} dropped`);
    // Every message is accounted for: delivered, or dropped and counted.
    expect(delivered + dropped).toBe(count);
    expect(dropped).toBeGreaterThan(0);
    // What reached the reader fits in the kernel's buffers plus the broker's high-water mark.
    expect(delivered * size).toBeLessThanOrEqual(kernelBufferBound() + QOS0_HIGH_WATER + 2 * size);
  });

  it('keeps its QoS 1 messages in the store with only the inflight window sent, and gets them all once it reads', async () => {
    const { running, clients } = await start();
    const subscriber = await clients.rawAccepted({ clientId: 'stuck-qos1', clean: false });
    expect(await subscribe(subscriber, 1, [{ topic: 'bq/#', qos: 1 }])).toEqual([1]);
    subscriber.socket.pause();

    const count = 5000;
    const publisher = await clients.rawAccepted({ clientId: 'fast-qos1' });
    for (let index = 1; index <= count; index++) {
      const bytes = mqttPacket.generate({
        cmd: 'publish',
        topic: `bq/${index}`,
        payload: Buffer.from(String(index).padEnd(1024, '.')),
        qos: 1,
        messageId: index,
        retain: false,
        dup: false,
      });
      await write(publisher, bytes);
    }
    const pubacks = await publisher.take('puback', count);
    expect(pubacks.map((puback) => puback.messageId)).toEqual(Array.from({ length: count }, (_, index) => index + 1));

    // Acknowledged means stored: all of them wait in the session's queue on disk.
    const stats = await running.broker.sessions.lookup('stuck-qos1')!.queueStats();
    expect(stats?.messages).toBe(count);

    subscriber.socket.resume();
    // Nothing was acknowledged, so exactly the inflight window went out before the PINGRESP.
    await subscriber.roundTrip();
    expect(subscriber.received.filter((packet) => packet.cmd === 'publish')).toHaveLength(DEFAULTS.maxInflight);

    for (let index = 1; index <= count; index++) {
      const publish = await subscriber.next('publish');
      expect(publish.topic).toBe(`bq/${index}`);
      subscriber.send({ cmd: 'puback', messageId: publish.messageId! });
    }
    await subscriber.roundTrip();
    expect(subscriber.received).toEqual([]);
  });
});

describe('a publisher faster than the store', () => {
  it('is stopped by TCP back-pressure: the writes it has pending stay bounded while the store stalls', async () => {
    // The store's publish transitions wait behind a gate the test opens; everything else passes.
    const dataDir = makeDataDir('broker-back-pressure-');
    afterStop.push(() => removeDataDir(dataDir));
    const repository = new LevelRepository({ location: join(dataDir, 'store') });
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    beforeStop.push(() => open());
    let pending = 0;
    let peak = 0;
    let onPending: (() => void) | undefined;
    const publish = repository.publish.bind(repository);
    repository.publish = async (transition: PublishTransition) => {
      pending++;
      peak = Math.max(peak, pending);
      onPending?.();
      try {
        await gate;
        return await publish(transition);
      } finally {
        pending--;
      }
    };
    const pendingReaches = (threshold: number) =>
      new Promise<void>((resolve) => {
        onPending = () => pending >= threshold && resolve();
        onPending();
      });

    const { running, clients } = await start({ repository, dataDir });
    // A persistent subscriber, gone: every PUBLISH needs a store write to queue the message for it.
    const absent = await clients.rawAccepted({ clientId: 'absent', clean: false });
    expect(await subscribe(absent, 1, [{ topic: 'bs/#', qos: 1 }])).toEqual([1]);
    await absent.disconnect();

    // ~11 MB of QoS 1 PUBLISHes, far more than the kernel's buffers take; written without waiting.
    const count = 20_000;
    const publisher = await clients.rawAccepted({ clientId: 'firehose' });
    for (let index = 1; index <= count; index++) {
      publisher.socket.write(
        mqttPacket.generate({ cmd: 'publish', topic: 'bs/t', payload: Buffer.alloc(512, 0x41), qos: 1, messageId: index, retain: false, dup: false }),
      );
    }

    const bound = 2048;
    await pendingReaches(1024);
    // The broker keeps serving others meanwhile; a broker reading the firehose all along would
    // pass the bound long before these round trips are done.
    const pinger = await clients.rawAccepted({ clientId: 'pinger' });
    const pings = (async () => {
      for (let index = 0; index < 50; index++) await pinger.roundTrip();
      return 'served others' as const;
    })();
    const result = await Promise.race([pings, pendingReaches(bound).then(() => 'over the bound' as const)]);
    expect(result).toBe('served others');
    expect(peak).toBeLessThan(bound);
    expect(publisher.received).toEqual([]);

    // The store recovers: every PUBLISH is acknowledged, in order, with the bound kept throughout.
    open();
    const pubacks = await publisher.take('puback', count);
    expect(pubacks.map((puback) => puback.messageId)).toEqual(Array.from({ length: count }, (_, index) => index + 1));
    expect(peak).toBeLessThan(bound);
    console.log(`firehose of ${count} QoS 1 PUBLISHes against a stalled store: at most ${peak} store writes pending`);
    expect((await running.broker.sessions.lookup('absent')!.queueStats())?.messages).toBe(count);
  });
});
