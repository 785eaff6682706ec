import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startBroker, type RunningBroker } from '../helpers/in-process.js';
import type { RawClient } from '../helpers/raw-client.js';
import { Clients, MessageQueue, publishQos1, receiveAndAck, subscribe, summary } from '../helpers/wait.js';

describe('session takeover', () => {
  let running: RunningBroker;
  let clients: Clients;
  let publisher: RawClient;
  let nextId = 1;
  beforeEach(async () => {
    running = await startBroker();
    clients = new Clients(running.port);
    publisher = await clients.rawAccepted({ clientId: 'publisher' });
  });
  afterEach(async () => {
    await clients.closeAll();
    await running.stop();
  });

  const publish = (topic: string, payload: string) => publishQos1(publisher, nextId++, topic, payload);

  it('closes the first connection when a second one connects with the same client id [MQTT-3.1.4-2]', async () => {
    const first = await clients.rawAccepted({ clientId: 'twin' });
    const { client: second, connack } = await clients.raw({ clientId: 'twin' });
    expect(connack.returnCode).toBe(0);
    await first.closed;
    // The second connection is fully usable.
    await second.roundTrip();
    await subscribe(second, 1, [{ topic: 'twin/t', qos: 1 }]);
    await publish('twin/t', 'to the second');
    const [received] = await receiveAndAck(second, 1);
    expect(summary(received!)).toBe('twin/t=to the second');
  });

  it('continues a persistent session on the new connection: session present, subscriptions kept, in-flight re-sent [MQTT-3.1.4-2] [MQTT-3.2.2-2]', async () => {
    const first = await clients.rawAccepted({ clientId: 'durable', clean: false });
    await subscribe(first, 1, [{ topic: 'take/t', qos: 1 }]);
    await publish('take/t', 'unacknowledged');
    const original = await first.next('publish'); // never acknowledged by the first connection

    const { client: second, connack } = await clients.raw({ clientId: 'durable', clean: false });
    expect(connack.sessionPresent).toBe(true);
    await first.closed;
    const [redelivered] = await receiveAndAck(second, 1);
    expect([summary(redelivered!), redelivered!.messageId, redelivered!.dup]).toEqual(['take/t=unacknowledged', original.messageId, true]);
    // No SUBSCRIBE on the second connection: the session's subscription carries over.
    await publish('take/t', 'after takeover');
    const [next] = await receiveAndAck(second, 1);
    expect(summary(next!)).toBe('take/t=after takeover');
  });

  it('discards the persistent session when the taking-over connection has CleanSession=1 [MQTT-3.1.2-6]', async () => {
    const first = await clients.rawAccepted({ clientId: 'switch', clean: false });
    await subscribe(first, 1, [{ topic: 'old/t', qos: 1 }]);
    const { client: second, connack } = await clients.raw({ clientId: 'switch', clean: true });
    expect(connack.sessionPresent).toBe(false);
    await first.closed;
    await subscribe(second, 1, [{ topic: 'marker', qos: 1 }]);
    await publish('old/t', 'to the discarded subscription');
    await publish('marker', 'marker');
    const [received] = await receiveAndAck(second, 1);
    expect(summary(received!)).toBe('marker=marker');
  });

  it('starts a clean session afresh when a CleanSession=1 connection is taken over with CleanSession=0', async () => {
    const first = await clients.rawAccepted({ clientId: 'fresh', clean: true });
    await subscribe(first, 1, [{ topic: 'clean/t', qos: 1 }]);
    const { client: second, connack } = await clients.raw({ clientId: 'fresh', clean: false });
    // The clean session ends with its connection; there is nothing to be present.
    expect(connack.sessionPresent).toBe(false);
    await first.closed;
    await subscribe(second, 1, [{ topic: 'marker', qos: 1 }]);
    await publish('clean/t', 'to the ended session');
    await publish('marker', 'marker');
    const [received] = await receiveAndAck(second, 1);
    expect(summary(received!)).toBe('marker=marker');
  });

  it('leaves only the newest of several successive connections open', async () => {
    const connections: RawClient[] = [];
    for (let index = 0; index < 5; index++) {
      connections.push(await clients.rawAccepted({ clientId: 'serial', clean: false }));
    }
    await Promise.all(connections.slice(0, -1).map((connection) => connection.closed));
    const last = connections.at(-1)!;
    await subscribe(last, 1, [{ topic: 'serial/t', qos: 1 }]);
    await publish('serial/t', 'to the last');
    const [received] = await receiveAndAck(last, 1);
    expect(summary(received!)).toBe('serial/t=to the last');
  });

  it('keeps exactly one of two simultaneous CONNECTs with the same client id', async () => {
    const [a, b] = await Promise.all([clients.socket(), clients.socket()]);
    for (const socket of [a, b]) {
      socket.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'race', clean: false, keepalive: 0 });
    }
    await Promise.race([a.closed, b.closed]);
    const survivor = a.isClosed ? b : a;
    expect(survivor.isClosed).toBe(false);
    expect((await survivor.next('connack')).returnCode).toBe(0);
    await subscribe(survivor, 1, [{ topic: 'race/t', qos: 1 }]);
    await publish('race/t', 'to the survivor');
    const [received] = await receiveAndAck(survivor, 1);
    expect(summary(received!)).toBe('race/t=to the survivor');
  });

  it('lets an MQTT.js client take over the session of a raw client', async () => {
    const raw = await clients.rawAccepted({ clientId: 'shared', clean: false });
    await subscribe(raw, 1, [{ topic: 'shared/t', qos: 1 }]);
    const modern = await clients.mqtt({ clientId: 'shared', clean: false });
    const messages = new MessageQueue(modern);
    await raw.closed;
    await publish('shared/t', 'via the kept subscription');
    expect(summary(await messages.next())).toBe('shared/t=via the kept subscription');
  });
});
