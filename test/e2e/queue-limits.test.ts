import { afterEach, describe, expect, it } from 'vitest';
import { BrokerProcess, makeDataDir, removeDataDir } from '../helpers/broker-process.js';
import { startBroker, type RunningBroker } from '../helpers/in-process.js';
import { RawClient } from '../helpers/raw-client.js';
import { Clients, publishQos1, receiveAndAck, subscribe } from '../helpers/wait.js';

describe('per-session queue limits (refuse newest, count the drop)', () => {
  let running: RunningBroker | undefined;
  let clients: Clients | undefined;
  afterEach(async () => {
    await clients?.closeAll();
    await running?.stop();
    running = undefined;
  });

  it('refuses messages beyond maxQueuedMessages for the full session only; the publisher is still acknowledged', async () => {
    running = await startBroker({ maxQueuedMessages: 3 });
    clients = new Clients(running.port);
    for (const clientId of ['small', 'other']) {
      const sub = await clients.rawAccepted({ clientId, clean: false });
      await subscribe(sub, 1, [{ topic: 'limits/#', qos: 1 }]);
      await sub.disconnect();
    }
    // The second subscriber drains as it goes, so only 'small' overflows.
    const other = await clients.rawAccepted({ clientId: 'other', clean: false });
    const publisher = await clients.rawAccepted({ clientId: 'pub' });
    const drained: string[] = [];
    for (let index = 0; index < 5; index++) {
      await publishQos1(publisher, index + 1, 'limits/a', `m${index}`);
      // In-flight messages count too: 'other' acknowledges each before the next arrives.
      drained.push(...(await receiveAndAck(other, 1)).map((publish) => publish.payload.toString()));
    }
    expect(drained).toEqual(['m0', 'm1', 'm2', 'm3', 'm4']);

    expect(await running.broker.sessions.lookup('small')!.queueStats()).toEqual({ messages: 3, bytes: 6, dropped: 2 });
    const small = await clients.rawAccepted({ clientId: 'small', clean: false });
    expect((await receiveAndAck(small, 3)).map((publish) => publish.payload.toString())).toEqual(['m0', 'm1', 'm2']);
    await small.roundTrip();
    expect(small.received.filter((packet) => packet.cmd === 'publish')).toEqual([]);
  });

  it('refuses messages beyond maxQueuedBytes, counting payload bytes', async () => {
    running = await startBroker({ maxQueuedBytes: 10 });
    clients = new Clients(running.port);
    const sub = await clients.rawAccepted({ clientId: 'bytes', clean: false });
    await subscribe(sub, 1, [{ topic: 'b', qos: 1 }]);
    await sub.disconnect();
    const publisher = await clients.rawAccepted({ clientId: 'pub' });
    await publishQos1(publisher, 1, 'b', '123456'); // 6 bytes: admitted
    await publishQos1(publisher, 2, 'b', '12345'); // 11 > 10: refused
    await publishQos1(publisher, 3, 'b', '1234'); // 10: admitted
    expect(await running.broker.sessions.lookup('bytes')!.queueStats()).toEqual({ messages: 2, bytes: 10, dropped: 1 });
    const again = await clients.rawAccepted({ clientId: 'bytes', clean: false });
    expect((await receiveAndAck(again, 2)).map((publish) => publish.payload.toString())).toEqual(['123456', '1234']);
  });
});

describe('durability options', () => {
  it('--sync-interval: acknowledged messages survive a SIGKILL of the broker process', async () => {
    const dataDir = makeDataDir();
    let broker = await BrokerProcess.start(dataDir, ['--sync-interval', '50']);
    try {
      const { client: sub } = await RawClient.session(broker.port, { clientId: 'keeper', clean: false });
      await subscribe(sub, 1, [{ topic: 'kept', qos: 1 }]);
      await sub.close();
      const { client: publisher } = await RawClient.session(broker.port, { clientId: 'pub' });
      for (let index = 0; index < 50; index++) await publishQos1(publisher, index + 1, 'kept', String(index));
      await publisher.close();
      // The OS holds every acknowledged batch already; only a power cut could lose the last 50 ms.
      await broker.kill();
      broker = await BrokerProcess.start(dataDir);
      const { client: again, connack } = await RawClient.session(broker.port, { clientId: 'keeper', clean: false });
      expect(connack.sessionPresent).toBe(true);
      const received = await receiveAndAck(again, 50);
      expect(received.map((publish) => publish.payload.toString())).toEqual(Array.from({ length: 50 }, (_, index) => String(index)));
      await again.close();
    } finally {
      await broker.kill();
      removeDataDir(dataDir);
    }
  });
});
