/**
 * MQTT 5 state across restarts: the broker runs as a child process (bin/broker.js), is killed
 * with SIGKILL or stopped with SIGTERM, and started again on the same data directory. Message
 * properties, subscription options, session expiry and message expiry must come back exactly.
 *
 * Expiry is a matter of time: these tests wait for deadlines (short ones) to pass; they never
 * assert how long anything took.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import type { IPublishPacket } from 'mqtt-packet';
import { BrokerProcess } from '../helpers/broker-process.js';
import { RawClient } from '../helpers/raw-client.js';
import { useBrokerProcesses } from '../helpers/process-harness.js';

const { onTeardown, freshDataDir, startBroker } = useBrokerProcesses('broker-mqtt5-');

async function v5(broker: BrokerProcess, clientId: string, options: { clean?: boolean; expiry?: number; will?: object; topicAliasMaximum?: number } = {}) {
  const client = await RawClient.connect(broker.port, '127.0.0.1', 5);
  onTeardown(() => client.socket.destroy());
  client.send({
    cmd: 'connect',
    protocolId: 'MQTT',
    protocolVersion: 5,
    clean: options.clean ?? false,
    keepalive: 0,
    clientId,
    properties: { sessionExpiryInterval: options.expiry ?? 3600, ...(options.topicAliasMaximum ? { topicAliasMaximum: options.topicAliasMaximum } : {}) },
    ...(options.will ? { will: options.will } : {}),
  } as never);
  const connack = await client.next('connack');
  expect(connack.reasonCode).toBe(0);
  return { client, connack };
}

/** Every property a PUBLISH can carry, User Properties interleaved and repeated, written by hand. */
function publishWithEveryProperty(topic: string, messageId: number, expirySeconds: number): Buffer {
  const user = (name: string, value: string) => [0x26, 0, Buffer.byteLength(name), ...Buffer.from(name), 0, Buffer.byteLength(value), ...Buffer.from(value)];
  const expiry = [expirySeconds >>> 24, (expirySeconds >>> 16) & 0xff, (expirySeconds >>> 8) & 0xff, expirySeconds & 0xff];
  const contentType = Buffer.from('application/json');
  const responseTopic = Buffer.from('reply/here');
  const properties = [
    0x01, 1,
    0x02, ...expiry,
    0x03, 0, contentType.length, ...contentType,
    0x08, 0, responseTopic.length, ...responseTopic,
    0x09, 0, 4, 0xde, 0xad, 0x00, 0xef,
    ...user('k', '1'), ...user('j', 'x'), ...user('k', '2'), ...user('é', 'ü'),
  ];
  const payload = Buffer.from('{"every":"property"}');
  const body = [0, topic.length, ...Buffer.from(topic), messageId >> 8, messageId & 0xff, properties.length, ...properties, ...payload];
  expect(body.length).toBeLessThan(128); // one byte of remaining length, as written here
  return Buffer.from([0x32, body.length, ...body]);
}

/** The bytes of a received PUBLISH's property list, Message Expiry Interval (which counts down) left out. */
function propertyBytesWithoutExpiry(raw: Buffer): Buffer {
  // Fixed header (1 + 1 length byte here), topic, packet id, then the property length.
  const topicLength = raw.readUInt16BE(2);
  let at = 2 + 2 + topicLength + 2;
  const length = raw[at]!;
  at++;
  const list = raw.subarray(at, at + length);
  const kept: number[] = [];
  for (let index = 0; index < list.length; ) {
    const id = list[index]!;
    const size = id === 0x01 ? 2 : id === 0x02 ? 5 : id === 0x26 ? 1 + 2 + list.readUInt16BE(index + 1) + 2 + list.readUInt16BE(index + 3 + list.readUInt16BE(index + 1)) : id === 0x0b ? 2 : 1 + 2 + list.readUInt16BE(index + 1);
    if (id !== 0x02) kept.push(...list.subarray(index, index + size));
    index += size;
  }
  return Buffer.from(kept);
}

/** Collects the raw bytes of everything a client receives, to read a PUBLISH as it was on the wire. */
function recordBytes(client: RawClient): () => Buffer {
  const chunks: Buffer[] = [];
  client.socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  return () => Buffer.concat(chunks);
}

async function subscribe5(client: RawClient, subscriptions: Array<{ topic: string; qos: 0 | 1 | 2; nl?: boolean; rap?: boolean }>, identifier?: number, messageId = 1) {
  client.send({ cmd: 'subscribe', messageId, subscriptions, ...(identifier ? { properties: { subscriptionIdentifier: identifier } } : {}) } as never);
  const suback = await client.next('suback');
  return suback.granted;
}

describe('MQTT 5 state across restarts', { timeout: 60_000 }, () => {
  it('a message with every property, queued, SIGKILL: delivered after the restart with the same properties, byte for byte [MQTT-3.3.2-17] [MQTT-3.3.2-18]', async () => {
    const dir = freshDataDir();
    const broker = await startBroker(dir);
    const online = await v5(broker, 'online');
    const recordOnline = recordBytes(online.client);
    await subscribe5(online.client, [{ topic: 'every/#', qos: 1 }]);
    const offline = await v5(broker, 'offline');
    await subscribe5(offline.client, [{ topic: 'every/#', qos: 1 }]);
    await offline.client.close();
    const publisher = await v5(broker, 'publisher', { clean: true, expiry: 0 });
    publisher.client.sendBytes(publishWithEveryProperty('every/one', 1, 3600));
    expect((await publisher.client.next('puback')).reasonCode ?? 0).toBe(0);
    const live = await online.client.next('publish');
    const liveBytes = recordOnline();
    await broker.kill();

    const again = await startBroker(dir);
    const client = await RawClient.connect(again.port, '127.0.0.1', 5);
    onTeardown(() => client.socket.destroy());
    const record = recordBytes(client);
    client.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: false, keepalive: 0, clientId: 'offline', properties: { sessionExpiryInterval: 3600 } } as never);
    const connack = await client.next('connack');
    expect(connack.sessionPresent).toBe(true);
    const delivered: IPublishPacket = await client.next('publish');
    expect(delivered.payload.toString()).toBe(live.payload.toString());
    expect({ ...delivered.properties, messageExpiryInterval: 0 }).toEqual({ ...live.properties, messageExpiryInterval: 0 });
    // What remains of the expiry, counted from when it arrived, not from the restart [MQTT-3.3.2-6].
    expect(delivered.properties?.messageExpiryInterval).toBeLessThanOrEqual(3600);
    expect(delivered.properties?.messageExpiryInterval).toBeGreaterThan(3000);
    const afterRestart = record();
    const publishAt = (bytes: Buffer) => bytes.subarray(bytes.indexOf(Buffer.from([0x00, 9, ...Buffer.from('every/one')])) - 2);
    const before = propertyBytesWithoutExpiry(publishAt(liveBytes));
    expect(before.length).toBeGreaterThan(60);
    expect(propertyBytesWithoutExpiry(publishAt(afterRestart))).toEqual(before);
  });

  it('subscription options and identifiers survive SIGKILL: No Local still holds, identifiers still come [MQTT-3.8.3-3] [MQTT-3.3.4-3]', async () => {
    const dir = freshDataDir();
    const broker = await startBroker(dir);
    const first = await v5(broker, 'options');
    await subscribe5(first.client, [{ topic: 'opt/#', qos: 1, nl: true, rap: true }], 42);
    await broker.kill();

    const again = await startBroker(dir);
    const { client, connack } = await v5(again, 'options');
    expect(connack.sessionPresent).toBe(true);
    client.send({ cmd: 'publish', topic: 'opt/own', payload: 'mine', qos: 1, messageId: 1, dup: false, retain: true } as never);
    await client.next('puback');
    const other = await v5(again, 'other', { clean: true, expiry: 0 });
    other.client.send({ cmd: 'publish', topic: 'opt/theirs', payload: 'theirs', qos: 1, messageId: 1, dup: false, retain: true } as never);
    await other.client.next('puback');
    const received = await client.next('publish');
    expect([received.topic, received.retain, received.properties?.subscriptionIdentifier]).toEqual(['opt/theirs', true, 42]);
  });

  it('a session whose expiry passes while the broker is stopped is gone after start: no session, no queue [MQTT-3.1.2-23]', async () => {
    const dir = freshDataDir();
    const broker = await startBroker(dir);
    const short = await v5(broker, 'short', { expiry: 1 });
    await subscribe5(short.client, [{ topic: 'exp/#', qos: 1 }]);
    const long = await v5(broker, 'long', { expiry: 3600 });
    await subscribe5(long.client, [{ topic: 'exp/#', qos: 1 }]);
    await short.client.close();
    await long.client.close();
    const publisher = await v5(broker, 'pub', { clean: true, expiry: 0 });
    publisher.client.send({ cmd: 'publish', topic: 'exp/t', payload: 'queued', qos: 1, messageId: 1, dup: false, retain: false } as never);
    await publisher.client.next('puback');
    expect((await broker.stop()).code).toBe(0);
    await sleep(1500);

    const again = await startBroker(dir);
    expect(again.output).toMatch(/1 persistent sessions expired while the broker was stopped/);
    const gone = await v5(again, 'short');
    expect(gone.connack.sessionPresent).toBe(false);
    const kept = await v5(again, 'long');
    expect(kept.connack.sessionPresent).toBe(true);
    expect((await kept.client.next('publish')).payload.toString()).toBe('queued');
    await gone.client.roundTrip();
    expect(gone.client.received.filter((packet) => packet.cmd === 'publish')).toEqual([]);
  });

  it('a session expires at run time once its client has been away past its interval [MQTT-3.1.2-23]', async () => {
    const broker = await startBroker(freshDataDir());
    const first = await v5(broker, 'brief', { expiry: 1 });
    await subscribe5(first.client, [{ topic: 'brief/#', qos: 1 }]);
    await first.client.close();
    await sleep(1500);
    const { connack } = await v5(broker, 'brief');
    expect(connack.sessionPresent).toBe(false);
  });

  it('DISCONNECT may lengthen the expiry: the session then outlives a restart', async () => {
    const dir = freshDataDir();
    const broker = await startBroker(dir);
    const first = await v5(broker, 'longer', { expiry: 1 });
    await subscribe5(first.client, [{ topic: 'l/#', qos: 1 }]);
    first.client.send({ cmd: 'disconnect', reasonCode: 0, properties: { sessionExpiryInterval: 3600 } } as never);
    await first.client.closed;
    await broker.kill();
    await sleep(1500);
    const again = await startBroker(dir);
    const { connack } = await v5(again, 'longer');
    expect(connack.sessionPresent).toBe(true);
  });

  it('an expired message is never delivered, also after a restart; the one without expiry is [MQTT-3.3.2-5]', async () => {
    const dir = freshDataDir();
    const broker = await startBroker(dir);
    const subscriber = await v5(broker, 'late');
    await subscribe5(subscriber.client, [{ topic: 'msg/#', qos: 1 }]);
    await subscriber.client.close();
    const publisher = await v5(broker, 'pub', { clean: true, expiry: 0 });
    publisher.client.send({ cmd: 'publish', topic: 'msg/short', payload: 'expires', qos: 1, messageId: 1, dup: false, retain: false, properties: { messageExpiryInterval: 1 } } as never);
    publisher.client.send({ cmd: 'publish', topic: 'msg/kept', payload: 'stays', qos: 1, messageId: 2, dup: false, retain: false } as never);
    await publisher.client.take('puback', 2);
    await broker.kill();
    await sleep(1500);
    const again = await startBroker(dir);
    const { client } = await v5(again, 'late');
    const received = await client.next('publish');
    expect(received.payload.toString()).toBe('stays');
    client.send({ cmd: 'puback', messageId: received.messageId! } as never);
    await client.roundTrip();
    expect(client.received.filter((packet) => packet.cmd === 'publish')).toEqual([]);
  });

  it('3.1.1: persistent_session_expiry discards a session whose client has been away longer, at run time and at start', async () => {
    const dir = freshDataDir();
    const broker = await BrokerProcess.start(dir, ['--persistent-session-expiry', '1']);
    onTeardown(async () => {
      if (broker.child.exitCode === null) await broker.kill();
    });
    const first = await RawClient.session(broker.port, { clientId: 'old-style', clean: false });
    onTeardown(() => first.client.socket.destroy());
    await first.client.disconnect();
    await sleep(1500);
    const second = await RawClient.session(broker.port, { clientId: 'old-style', clean: false });
    onTeardown(() => second.client.socket.destroy());
    expect(second.connack.sessionPresent).toBe(false);
    await second.client.disconnect();
    expect((await broker.stop()).code).toBe(0);
    await sleep(1500);
    const again = await BrokerProcess.start(dir, ['--persistent-session-expiry', '1']);
    onTeardown(async () => {
      if (again.child.exitCode === null) await again.kill();
    });
    expect(again.output).toMatch(/1 persistent sessions expired while the broker was stopped/);
  });

  it('Will Delay: the will waits; a reconnect within the delay cancels it [MQTT-3.1.3-9]; a session expiring first publishes it [MQTT-3.1.2-8]', async () => {
    const broker = await startBroker(freshDataDir());
    const watcher = await v5(broker, 'watcher', { clean: true, expiry: 0 });
    await subscribe5(watcher.client, [{ topic: 'will/#', qos: 0 }]);
    const will = (topic: string, delay: number) => ({ topic, payload: Buffer.from(topic), qos: 0, retain: false, properties: { willDelayInterval: delay } });
    const back = await v5(broker, 'comes-back', { will: will('will/back', 1) });
    await back.client.close();
    const returned = await v5(broker, 'comes-back');
    const gone = await v5(broker, 'expires-first', { expiry: 1, will: will('will/expired', 3600) });
    await gone.client.close();
    // Published when its session expires (after 1 s), long before its own delay.
    const published = await watcher.client.next('publish');
    expect(published.topic).toBe('will/expired');
    await sleep(1200);
    await watcher.client.roundTrip();
    expect(watcher.client.received.filter((packet) => packet.cmd === 'publish')).toEqual([]);
    await returned.client.close();
  });

  it('Will Delay: a second connection taking over the session within the delay means the will is never published [MQTT-3.1.3-9] [MQTT-3.1.4-3]', async () => {
    const broker = await startBroker(freshDataDir());
    const watcher = await v5(broker, 'watcher', { clean: true, expiry: 0 });
    await subscribe5(watcher.client, [{ topic: 'will/#', qos: 0 }]);
    const first = await v5(broker, 'taken', { will: { topic: 'will/taken', payload: Buffer.from('taken'), qos: 0, retain: false, properties: { willDelayInterval: 1 } } });
    const second = await v5(broker, 'taken');
    expect((await first.client.next('disconnect')).reasonCode).toBe(0x8e);
    // A control with the same delay, whose connection is lost after the takeover: its will is due
    // after the taken one's would have been, so once it has arrived the delay is over for both.
    const control = await v5(broker, 'control', { will: { topic: 'will/control', payload: Buffer.from('control'), qos: 0, retain: false, properties: { willDelayInterval: 1 } } });
    control.client.socket.destroy();
    expect((await watcher.client.next('publish')).topic).toBe('will/control');
    await watcher.client.roundTrip();
    expect(watcher.client.received.filter((packet) => packet.cmd === 'publish' && packet.topic !== 'will/control')).toEqual([]);
    await second.client.close();
  });
});
