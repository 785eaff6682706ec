/**
 * MQTT 5.0 packets as a client sees them, byte for byte where it matters: raw mqtt-packet v5
 * sockets against a real broker over TCP. Normative statements are OASIS MQTT 5.0's.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import mqttPacket, { type IPublishPacket } from 'mqtt-packet';
import { startBroker, type RunningBroker } from '../helpers/in-process.js';
import { RawClient } from '../helpers/raw-client.js';
import { Clients } from '../helpers/wait.js';
import type { BrokerOptions } from '../../src/server/broker.js';

/** Every property a PUBLISH can carry from a client, User Properties repeated and interleaved. */
const ALL_PROPERTIES = {
  payloadFormatIndicator: true,
  messageExpiryInterval: 3600,
  contentType: 'text/plain; charset=utf-8',
  responseTopic: 'replies/for/me',
  correlationData: Buffer.from([0, 1, 2, 0xfe, 0xff]),
  userProperties: { a: ['1', '3'], b: '2' },
};

async function publish5(client: RawClient, packet: Partial<IPublishPacket> & { topic: string }, messageId = 1) {
  client.send({ cmd: 'publish', qos: 1, dup: false, retain: false, payload: 'x', messageId, ...packet } as IPublishPacket);
  const puback = await client.next('puback');
  expect(puback.messageId).toBe(messageId);
  return puback;
}

async function subscribe5(client: RawClient, subscriptions: Array<{ topic: string; qos: 0 | 1 | 2; nl?: boolean; rap?: boolean; rh?: number }>, properties?: object, messageId = 1) {
  client.send({ cmd: 'subscribe', messageId, subscriptions, ...(properties ? { properties } : {}) } as mqttPacket.ISubscribePacket);
  const suback = await client.next('suback');
  expect(suback.messageId).toBe(messageId);
  return suback.granted as number[];
}

describe('MQTT 5', () => {
  let running: RunningBroker;
  let clients: Clients;
  const start = async (options: BrokerOptions = {}) => {
    running = await startBroker(options);
    clients = new Clients(running.port);
  };
  afterEach(async () => {
    await clients?.closeAll();
    await running?.stop();
  });

  describe('CONNECT / CONNACK', () => {
    beforeEach(() => start());

    it('accepts protocol level 5 and tells the client what the broker takes (MQTT 5.0 3.2.2.3)', async () => {
      const { connack } = await clients.raw5({ clientId: 'v5' });
      expect(connack.reasonCode).toBe(0);
      expect(connack.sessionPresent).toBe(false);
      expect(connack.properties).toMatchObject({ maximumPacketSize: 1024 * 1024, topicAliasMaximum: 10, receiveMaximum: 1024 });
      // Retain, wildcards, subscription identifiers and shared subscriptions are available: their absence says so.
      expect(connack.properties?.sharedSubscriptionAvailable).toBeUndefined();
      expect(connack.properties?.retainAvailable).toBeUndefined();
      expect(connack.properties?.maximumQoS).toBeUndefined();
    });

    it('assigns a client id to an empty one, with Clean Start 0 too, and returns it [MQTT-3.1.3-6] [MQTT-3.1.3-7]', async () => {
      const client = await RawClient.connect(running.port, '127.0.0.1', 5);
      const bytes = mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, keepalive: 0, clientId: '', properties: { sessionExpiryInterval: 60 } }, { protocolVersion: 5 });
      // mqtt-packet will not write an empty id with Clean Start 0: clear the flag by hand (byte 9).
      expect(bytes[9]).toBe(0x02);
      bytes[9] = 0;
      client.sendBytes(bytes);
      const connack = await client.next('connack');
      await client.close();
      expect(connack.reasonCode).toBe(0);
      expect(connack.properties?.assignedClientIdentifier).toMatch(/^auto-/);
    });

    it('refuses enhanced authentication with 0x8C and closes [MQTT-4.12.0-1]', async () => {
      const { client, connack } = await clients.raw5({ clientId: 'auth', properties: { authenticationMethod: 'SCRAM-SHA-1' } });
      expect(connack.reasonCode).toBe(0x8c);
      expect(connack.sessionPresent).toBe(false);
      expect(connack.properties?.reasonString).toMatch(/not supported/);
      await client.closed;
    });

    it('a second connection with the client id gets the session; the first is sent DISCONNECT 0x8E [MQTT-3.1.4-3]', async () => {
      const first = await clients.raw5Accepted({ clientId: 'twice' });
      await clients.raw5Accepted({ clientId: 'twice' });
      const disconnect = await first.next('disconnect');
      expect(disconnect.reasonCode).toBe(0x8e);
      await first.closed;
    });

    it('a client silent past 1.5 × its keep alive is sent DISCONNECT 0x8D [MQTT-3.1.2-22]', async () => {
      const client = await clients.raw5Accepted({ clientId: 'sleepy', keepalive: 1 });
      const disconnect = await client.next('disconnect');
      expect(disconnect.reasonCode).toBe(0x8d);
      await client.closed;
    });

    it('a property that appears twice is a Protocol Error: DISCONNECT 0x82 once connected (MQTT 5.0 2.2.2.2) [MQTT-4.13.1-1]', async () => {
      const client = await clients.raw5Accepted({ clientId: 'twice-prop' });
      // PUBLISH QoS 0, topic "t", properties: Content Type "a" twice.
      const properties = [0x03, 0x00, 0x01, 0x61, 0x03, 0x00, 0x01, 0x61];
      const body = [0x00, 0x01, 0x74, properties.length, ...properties];
      client.sendBytes([0x30, body.length, ...body]);
      const disconnect = await client.next('disconnect');
      expect(disconnect.reasonCode).toBe(0x82);
      await client.closed;
    });

    it('a PUBLISH property string that is not well-formed UTF-8, or holds U+0000, makes it malformed: DISCONNECT 0x81 [MQTT-1.5.4-1] [MQTT-1.5.4-2]', async () => {
      // User Property "k" = bytes C3 28 (a lead byte without its continuation); Content Type "a\0".
      for (const [clientId, properties] of [
        ['bad-utf8-prop', [0x26, 0x00, 0x01, 0x6b, 0x00, 0x02, 0xc3, 0x28]],
        ['nul-prop', [0x03, 0x00, 0x02, 0x61, 0x00]],
      ] as const) {
        const client = await clients.raw5Accepted({ clientId });
        const body = [0x00, 0x01, 0x74, properties.length, ...properties];
        client.sendBytes([0x30, body.length, ...body]);
        expect((await client.next('disconnect')).reasonCode).toBe(0x81);
        await client.closed;
      }
    });

    it('a property not allowed in its packet makes it malformed: DISCONNECT 0x81 (MQTT 5.0 2.2.2.2)', async () => {
      const client = await clients.raw5Accepted({ clientId: 'wrong-prop' });
      // PUBLISH QoS 0, topic "t", properties: Session Expiry Interval (a CONNECT property).
      const properties = [0x11, 0, 0, 0, 5];
      const body = [0x00, 0x01, 0x74, properties.length, ...properties];
      client.sendBytes([0x30, body.length, ...body]);
      expect((await client.next('disconnect')).reasonCode).toBe(0x81);
      await client.closed;
    });

    it('a packet over max_packet_size is answered with DISCONNECT 0x95 (MQTT 5.0 3.2.2.3.6)', async () => {
      await running.stop();
      await start({ maxPacketSize: 64 });
      const client = await clients.raw5Accepted({ clientId: 'big' });
      client.send({ cmd: 'publish', topic: 't', payload: Buffer.alloc(100), qos: 0, dup: false, retain: false });
      expect((await client.next('disconnect')).reasonCode).toBe(0x95);
      await client.closed;
    });
  });

  describe('PUBLISH with properties', () => {
    beforeEach(() => start());

    it('delivers every property to an MQTT 5 subscriber, User Properties in order with duplicates [MQTT-3.3.2-17] [MQTT-3.3.2-18]', async () => {
      const subscriber = await clients.raw5Accepted({ clientId: 'sub' });
      expect(await subscribe5(subscriber, [{ topic: 'props/#', qos: 1 }])).toEqual([1]);
      const publisher = await clients.raw5Accepted({ clientId: 'pub' });
      // Interleaved and repeated names, written by hand: mqtt-packet's writer groups them by name.
      const pairs: Array<[string, string]> = [['a', '1'], ['b', '2'], ['a', '3']];
      const userProperties = pairs.flatMap(([name, value]) => [0x26, 0, name.length, ...Buffer.from(name), 0, value.length, ...Buffer.from(value)]);
      const properties = [0x01, 1, 0x02, 0, 0, 0x0e, 0x10, 0x09, 0, 2, 7, 8, ...userProperties];
      const body = [0x00, 0x07, ...Buffer.from('props/a'), 0x00, 0x01, properties.length, ...properties, ...Buffer.from('hé')];
      publisher.sendBytes([0x32, body.length, ...body]);
      expect((await publisher.next('puback')).reasonCode).toBe(0);
      const received = await subscriber.next('publish');
      expect(received.topic).toBe('props/a');
      expect(received.payload.toString()).toBe('hé');
      expect(received.properties?.payloadFormatIndicator).toBe(true);
      expect(received.properties?.correlationData).toEqual(Buffer.from([7, 8]));
      expect(received.properties?.messageExpiryInterval).toBeGreaterThan(3590);
      expect(received.properties?.messageExpiryInterval).toBeLessThanOrEqual(3600);
      // The exact order on the wire: read the User Properties back from the raw bytes.
      expect(received.properties?.userProperties).toEqual({ a: ['1', '3'], b: '2' });
    });

    it('keeps User Property order byte for byte on the wire [MQTT-3.3.2-18]', async () => {
      const subscriber = await RawClient.connect(running.port, '127.0.0.1', 5);
      const bytes: Buffer[] = [];
      subscriber.socket.on('data', (chunk: Buffer) => bytes.push(chunk));
      subscriber.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, keepalive: 0, clientId: 'wire' });
      await subscriber.next('connack');
      await subscribe5(subscriber, [{ topic: 'wire', qos: 0 }]);
      const publisher = await clients.raw5Accepted({ clientId: 'pub' });
      const pairs = [0x26, 0, 1, 0x7a, 0, 1, 0x31, 0x26, 0, 1, 0x61, 0, 1, 0x32, 0x26, 0, 1, 0x7a, 0, 1, 0x33];
      const body = [0x00, 0x04, ...Buffer.from('wire'), pairs.length, ...pairs];
      publisher.sendBytes([0x30, body.length, ...body]);
      await subscriber.next('publish');
      const all = Buffer.concat(bytes);
      const at = all.indexOf(Buffer.from(pairs));
      expect(at).toBeGreaterThan(0);
      await subscriber.close();
    });

    it('a 3.1.1 subscriber gets the message without its properties; an MQTT 5 one gets a 3.1.1 message without any', async () => {
      const old = await clients.rawAccepted({ clientId: 'old' });
      old.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'mixed', qos: 1 }] });
      await old.next('suback');
      const modern = await clients.raw5Accepted({ clientId: 'modern' });
      await subscribe5(modern, [{ topic: 'mixed', qos: 1 }]);
      const publisher5 = await clients.raw5Accepted({ clientId: 'pub5' });
      await publish5(publisher5, { topic: 'mixed', payload: 'from v5', properties: ALL_PROPERTIES });
      const atOld = await old.next('publish');
      expect(atOld.payload.toString()).toBe('from v5');
      old.send({ cmd: 'puback', messageId: atOld.messageId! });
      const atModern = await modern.next('publish');
      expect(atModern.properties?.contentType).toBe(ALL_PROPERTIES.contentType);
      modern.send({ cmd: 'puback', messageId: atModern.messageId! });
      const publisher4 = await clients.rawAccepted({ clientId: 'pub4' });
      publisher4.send({ cmd: 'publish', topic: 'mixed', payload: 'from 3.1.1', qos: 1, messageId: 1, dup: false, retain: false });
      await publisher4.next('puback');
      const plain = await modern.next('publish');
      expect(plain.payload.toString()).toBe('from 3.1.1');
      expect(plain.properties).toBeUndefined();
    });

    it('PUBACK says 0x10 when no one subscribes, and 0x00 when someone does (MQTT 5.0 3.4.2.1)', async () => {
      const publisher = await clients.raw5Accepted({ clientId: 'pub' });
      expect((await publish5(publisher, { topic: 'nobody/here' })).reasonCode).toBe(0x10);
      const subscriber = await clients.raw5Accepted({ clientId: 'sub' });
      await subscribe5(subscriber, [{ topic: 'somebody', qos: 0 }]);
      expect((await publish5(publisher, { topic: 'somebody' }, 2)).reasonCode ?? 0).toBe(0);
    });

    it('a payload that is not UTF-8 though its Payload Format Indicator says so gets PUBACK 0x99 and is not delivered (MQTT 5.0 3.3.2.3.2)', async () => {
      const subscriber = await clients.raw5Accepted({ clientId: 'sub' });
      await subscribe5(subscriber, [{ topic: 'text', qos: 1 }]);
      const publisher = await clients.raw5Accepted({ clientId: 'pub' });
      const refused = await publish5(publisher, { topic: 'text', payload: Buffer.from([0xff, 0xfe]), properties: { payloadFormatIndicator: true } });
      expect(refused.reasonCode).toBe(0x99);
      await publish5(publisher, { topic: 'text', payload: 'fine', properties: { payloadFormatIndicator: true } }, 2);
      expect((await subscriber.next('publish')).payload.toString()).toBe('fine');
    });

    it('a PUBLISH from a client with a Subscription Identifier is a Protocol Error [MQTT-3.3.4-6]', async () => {
      const client = await clients.raw5Accepted({ clientId: 'bad' });
      client.send({ cmd: 'publish', topic: 't', payload: 'x', qos: 0, dup: false, retain: false, properties: { subscriptionIdentifier: 3 } });
      expect((await client.next('disconnect')).reasonCode).toBe(0x82);
    });
  });

  describe('subscription options', () => {
    beforeEach(() => start({ maxSubscriptionsPerClient: 3 }));

    it('SUBACK says per filter why one was refused: 0x8F invalid (a shared one without a filter too), 0x97 over the quota [MQTT-3.9.3-1] [MQTT-4.8.2-2]', async () => {
      const client = await clients.raw5Accepted({ clientId: 'sub' });
      const granted = await subscribe5(client, [
        { topic: 'a/#/b', qos: 1 },
        { topic: '$share/g', qos: 1 },
        { topic: 'one', qos: 2 },
        { topic: 'two', qos: 0 },
        { topic: 'three', qos: 1 },
        { topic: 'four', qos: 1 },
      ]);
      expect(granted).toEqual([0x8f, 0x8f, 2, 0, 1, 0x97]);
    });

    it('UNSUBACK says per filter whether there was a subscription: 0x00 or 0x11 [MQTT-3.11.3-1]', async () => {
      const client = await clients.raw5Accepted({ clientId: 'sub' });
      await subscribe5(client, [{ topic: 'held', qos: 1 }]);
      client.send({ cmd: 'unsubscribe', messageId: 2, unsubscriptions: ['held', 'never'] });
      expect((await client.next('unsuback')).granted).toEqual([0x00, 0x11]);
    });

    it('No Local: a subscription does not get what its own session published [MQTT-3.8.3-3]', async () => {
      const client = await clients.raw5Accepted({ clientId: 'self' });
      const other = await clients.raw5Accepted({ clientId: 'other' });
      await subscribe5(client, [{ topic: 'chat/#', qos: 1, nl: true }]);
      await subscribe5(other, [{ topic: 'chat/#', qos: 1, nl: true }]);
      await publish5(client, { topic: 'chat/room', payload: 'mine' });
      const atOther = await other.next('publish');
      expect(atOther.payload.toString()).toBe('mine');
      await publish5(other, { topic: 'chat/room', payload: 'theirs' });
      const atClient = await client.next('publish');
      expect(atClient.payload.toString()).toBe('theirs');
      await client.roundTrip();
      expect(client.received.filter((packet) => packet.cmd === 'publish')).toEqual([]);
    });

    it('Retain As Published keeps RETAIN on live deliveries; without it RETAIN is 0 [MQTT-3.3.1-12] [MQTT-3.3.1-13]', async () => {
      const asPublished = await clients.raw5Accepted({ clientId: 'rap' });
      const plain = await clients.raw5Accepted({ clientId: 'plain' });
      await subscribe5(asPublished, [{ topic: 'state', qos: 1, rap: true }]);
      await subscribe5(plain, [{ topic: 'state', qos: 1 }]);
      const publisher = await clients.raw5Accepted({ clientId: 'pub' });
      await publish5(publisher, { topic: 'state', payload: 'on', retain: true });
      expect((await asPublished.next('publish')).retain).toBe(true);
      expect((await plain.next('publish')).retain).toBe(false);
    });

    it('Retain Handling: 0 sends retained messages, 1 only for a new subscription, 2 never [MQTT-3.3.1-9] [MQTT-3.3.1-10] [MQTT-3.3.1-11]', async () => {
      const publisher = await clients.raw5Accepted({ clientId: 'pub' });
      await publish5(publisher, { topic: 'kept', payload: 'v', retain: true });
      const client = await clients.raw5Accepted({ clientId: 'rh' });
      await subscribe5(client, [{ topic: 'kept', qos: 0, rh: 2 }], undefined, 1);
      await client.roundTrip();
      expect(client.received).toEqual([]);
      await subscribe5(client, [{ topic: 'kept', qos: 0, rh: 1 }], undefined, 2);
      await client.roundTrip();
      // Not new any more (it existed with rh 2): nothing.
      expect(client.received).toEqual([]);
      await subscribe5(client, [{ topic: 'kept', qos: 0, rh: 0 }], undefined, 3);
      expect((await client.next('publish')).payload.toString()).toBe('v');
      const fresh = await clients.raw5Accepted({ clientId: 'rh1' });
      await subscribe5(fresh, [{ topic: 'kept', qos: 0, rh: 1 }]);
      expect((await fresh.next('publish')).retain).toBe(true);
    });

    it('overlapping subscriptions: one message at the highest QoS with every identifier [MQTT-3.3.4-2] [MQTT-3.3.4-3] [MQTT-3.3.4-4]', async () => {
      const client = await clients.raw5Accepted({ clientId: 'ids' });
      await subscribe5(client, [{ topic: 'x/+', qos: 0 }], { subscriptionIdentifier: 7 }, 1);
      await subscribe5(client, [{ topic: 'x/#', qos: 2 }], { subscriptionIdentifier: 300 }, 2);
      const publisher = await clients.raw5Accepted({ clientId: 'pub' });
      client.received.length = 0;
      publisher.send({ cmd: 'publish', topic: 'x/y', payload: 'once', qos: 2, messageId: 1, dup: false, retain: false });
      await publisher.next('pubrec');
      const received = await client.next('publish');
      expect(received.qos).toBe(2);
      expect([...(received.properties?.subscriptionIdentifier as number[])].sort((a, b) => a - b)).toEqual([7, 300]);
      client.send({ cmd: 'pubrec', messageId: received.messageId! });
      await client.next('pubrel');
      client.send({ cmd: 'pubcomp', messageId: received.messageId! });
      await client.roundTrip();
      expect(client.received.filter((packet) => packet.cmd === 'publish')).toEqual([]);
    });

    it('a 3.1.1 client with the bridge bit gets No Local and Retain As Published, as Mosquitto gives its bridges', async () => {
      const bridge = await RawClient.connect(running.port);
      bridge.socket.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, bridgeMode: true, clientId: 'b', clean: true, keepalive: 0 } as mqttPacket.IConnectPacket));
      expect((await bridge.next('connack')).returnCode).toBe(0);
      bridge.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'up/#', qos: 1 }] });
      await bridge.next('suback');
      bridge.send({ cmd: 'publish', topic: 'up/own', payload: 'echo?', qos: 1, messageId: 2, dup: false, retain: true });
      await bridge.next('puback');
      const other = await clients.rawAccepted({ clientId: 'other' });
      other.send({ cmd: 'publish', topic: 'up/theirs', payload: 'hi', qos: 1, messageId: 1, dup: false, retain: true });
      await other.next('puback');
      const received = await bridge.next('publish');
      expect([received.topic, received.retain]).toEqual(['up/theirs', true]);
      await bridge.close();
    });
  });

  describe('topic aliases', () => {
    beforeEach(() => start());

    it('a client sets an alias with its topic and then publishes on the alias alone [MQTT-3.3.2-12]', async () => {
      const subscriber = await clients.raw5Accepted({ clientId: 'sub' });
      await subscribe5(subscriber, [{ topic: 'long/topic/name', qos: 1 }]);
      const publisher = await clients.raw5Accepted({ clientId: 'pub' });
      await publish5(publisher, { topic: 'long/topic/name', payload: 'first', properties: { topicAlias: 3 } });
      await publish5(publisher, { topic: '', payload: 'second', properties: { topicAlias: 3 } }, 2);
      const received = await subscriber.take('publish', 2);
      expect(received.map(({ topic, payload }) => `${topic}=${payload.toString()}`)).toEqual(['long/topic/name=first', 'long/topic/name=second']);
    });

    it('an alias above the Topic Alias Maximum is answered with DISCONNECT 0x94 [MQTT-3.3.2-12]', async () => {
      const publisher = await clients.raw5Accepted({ clientId: 'pub' });
      publisher.send({ cmd: 'publish', topic: 't', payload: 'x', qos: 0, dup: false, retain: false, properties: { topicAlias: 11 } });
      expect((await publisher.next('disconnect')).reasonCode).toBe(0x94);
      await publisher.closed;
    });

    it('the broker assigns aliases within the client\'s Topic Alias Maximum: the topic goes once, then the alias alone [MQTT-3.1.2-26] [MQTT-3.3.2-11]', async () => {
      const subscriber = await clients.raw5Accepted({ clientId: 'sub', properties: { topicAliasMaximum: 1 } });
      await subscribe5(subscriber, [{ topic: 'al/#', qos: 0 }]);
      const publisher = await clients.raw5Accepted({ clientId: 'pub' });
      for (const [index, topic] of ['al/one', 'al/one', 'al/two'].entries()) await publish5(publisher, { topic, qos: 1 }, index + 1);
      const [first, second, third] = await subscriber.take('publish', 3);
      expect([first!.topic, first!.properties?.topicAlias]).toEqual(['al/one', 1]);
      expect([second!.topic, second!.properties?.topicAlias]).toEqual(['', 1]);
      // The maximum is used up: a new topic goes in full, without an alias.
      expect([third!.topic, third!.properties?.topicAlias]).toEqual(['al/two', undefined]);
    });
  });

  describe('flow control', () => {
    it('a message over the client\'s Maximum Packet Size is not sent to it, and counted; the next one is [MQTT-3.1.2-24] [MQTT-3.1.2-25]', async () => {
      await start();
      const subscriber = await clients.raw5Accepted({ clientId: 'small', properties: { maximumPacketSize: 64 } });
      await subscribe5(subscriber, [{ topic: 'size', qos: 1 }]);
      const publisher = await clients.raw5Accepted({ clientId: 'pub' });
      await publish5(publisher, { topic: 'size', payload: Buffer.alloc(100, 0x61) });
      await publish5(publisher, { topic: 'size', payload: 'small' }, 2);
      const received = await subscriber.next('publish');
      expect(received.payload.toString()).toBe('small');
      expect(running.broker.counters.publishesOverClientMaximum).toBe(1);
    });

    it('no more QoS 1/2 PUBLISHes in flight to a client than its Receive Maximum; the next goes once one is acknowledged [MQTT-3.3.4-9]', async () => {
      await start();
      const subscriber = await clients.raw5Accepted({ clientId: 'slow', properties: { receiveMaximum: 2 } });
      await subscribe5(subscriber, [{ topic: 'rm', qos: 1 }, { topic: 'rm-marker', qos: 0 }]);
      const publisher = await clients.raw5Accepted({ clientId: 'pub' });
      for (const messageId of [1, 2, 3]) await publish5(publisher, { topic: 'rm', payload: `m${messageId}` }, messageId);
      publisher.send({ cmd: 'publish', topic: 'rm-marker', payload: '', qos: 0, dup: false, retain: false });
      // QoS 0 is not held back by Receive Maximum: the marker overtakes the third.
      const before = [await subscriber.next('publish'), await subscriber.next('publish'), await subscriber.next('publish')];
      expect(before.map(({ topic, payload }) => `${topic}:${payload}`)).toEqual(['rm:m1', 'rm:m2', 'rm-marker:']);
      subscriber.send({ cmd: 'puback', messageId: before[0]!.messageId! });
      expect((await subscriber.next('publish')).payload.toString()).toBe('m3');
    });

    it('more unreleased QoS 2 PUBLISHes than the Receive Maximum: DISCONNECT 0x93 [MQTT-3.3.4-7] (MQTT 5.0 4.9)', async () => {
      await start({ receiveMaximum: 2 });
      const { client, connack } = await clients.raw5({ clientId: 'fast' });
      expect(connack.properties?.receiveMaximum).toBe(2);
      for (const messageId of [1, 2]) {
        client.send({ cmd: 'publish', topic: 'q2', payload: 'x', qos: 2, messageId, dup: false, retain: false });
        await client.next('pubrec');
      }
      client.send({ cmd: 'publish', topic: 'q2', payload: 'x', qos: 2, messageId: 3, dup: false, retain: false });
      expect((await client.next('disconnect')).reasonCode).toBe(0x93);
    });

    it('Maximum QoS, when configured, is announced, granted at most, and a PUBLISH above it is answered with DISCONNECT 0x9B [MQTT-3.2.2-9] [MQTT-3.2.2-10] [MQTT-3.2.2-11]', async () => {
      await start({ maxQos: 1 });
      const { client, connack } = await clients.raw5({ clientId: 'q' });
      expect(connack.properties?.maximumQoS).toBe(1);
      expect(await subscribe5(client, [{ topic: 'a', qos: 2 }])).toEqual([1]);
      client.send({ cmd: 'publish', topic: 'a', payload: 'x', qos: 2, messageId: 5, dup: false, retain: false });
      expect((await client.next('disconnect')).reasonCode).toBe(0x9b);
    });
  });

  describe('will and DISCONNECT', () => {
    beforeEach(() => start());

    it('DISCONNECT 0x04 publishes the will; a normal DISCONNECT does not [MQTT-3.1.2-8] [MQTT-3.1.2-10]', async () => {
      const watcher = await clients.raw5Accepted({ clientId: 'watcher' });
      await subscribe5(watcher, [{ topic: 'wills/#', qos: 0 }]);
      const quiet = await clients.raw5Accepted({ clientId: 'quiet', will: { topic: 'wills/quiet', payload: Buffer.from('gone'), qos: 0, retain: false } });
      quiet.send({ cmd: 'disconnect', reasonCode: 0 });
      await quiet.closed;
      const loud = await clients.raw5Accepted({
        clientId: 'loud',
        will: { topic: 'wills/loud', payload: Buffer.from('gone'), qos: 0, retain: false, properties: { contentType: 'text/plain', userProperties: { why: 'asked' } } },
      });
      loud.send({ cmd: 'disconnect', reasonCode: 0x04 });
      await loud.closed;
      const will = await watcher.next('publish');
      expect(will.topic).toBe('wills/loud');
      expect(will.properties).toMatchObject({ contentType: 'text/plain', userProperties: { why: 'asked' } });
      await watcher.roundTrip();
      expect(watcher.received.filter((packet) => packet.cmd === 'publish')).toEqual([]);
    });

    it('DISCONNECT may not set a Session Expiry Interval where CONNECT had 0 [MQTT-3.14.2-2]', async () => {
      const client = await clients.raw5Accepted({ clientId: 'zero' });
      client.send({ cmd: 'disconnect', reasonCode: 0, properties: { sessionExpiryInterval: 60 } });
      expect((await client.next('disconnect')).reasonCode).toBe(0x82);
    });
  });

  describe('ACL', () => {
    it('a PUBLISH the ACL refuses gets PUBACK 0x87, where 3.1.1 can only acknowledge it (MQTT 5.0 3.4.2.1)', async () => {
      const dir = (await import('../helpers/broker-process.js')).makeDataDir();
      const aclFile = join(dir, 'acl');
      writeFileSync(aclFile, 'topic readwrite open/#\n');
      await start({ dataDir: dir, aclFile });
      const client = await clients.raw5Accepted({ clientId: 'c' });
      expect((await publish5(client, { topic: 'closed/door' })).reasonCode).toBe(0x87);
      expect(await subscribe5(client, [{ topic: 'closed/#', qos: 1 }, { topic: 'open/#', qos: 1 }])).toEqual([0x87, 1]);
    });

    it('a Reason String says why, unless the client set Request Problem Information to 0 [MQTT-3.1.2-29]', async () => {
      const dir = (await import('../helpers/broker-process.js')).makeDataDir();
      const aclFile = join(dir, 'acl');
      writeFileSync(aclFile, 'topic readwrite open/#\n');
      await start({ dataDir: dir, aclFile });
      const told = await clients.raw5Accepted({ clientId: 'told' });
      const toldAck = await publish5(told, { topic: 'closed/door' });
      expect([toldAck.reasonCode, toldAck.properties?.reasonString]).toEqual([0x87, 'not authorized to publish on "closed/door"']);
      const quiet = await clients.raw5Accepted({ clientId: 'quiet', properties: { requestProblemInformation: false } });
      const quietAck = await publish5(quiet, { topic: 'closed/door' });
      expect([quietAck.reasonCode, quietAck.properties?.reasonString]).toEqual([0x87, undefined]);
    });
  });

  describe('queue limits and packet identifiers', () => {
    /** A persistent subscriber to `topic`, away, whose queue takes one message (max_queued_messages 1). */
    async function awaySubscriber(clientId: string, topic: string) {
      const client = await clients.raw5Accepted({ clientId, clean: false, properties: { sessionExpiryInterval: 3600 } });
      await subscribe5(client, [{ topic, qos: 1 }]);
      await client.disconnect();
    }

    it('PUBACK and PUBREC say 0x97 when a queue limit refused the message for every subscriber, 0x00 when one took it (MQTT 5.0 3.4.2.1)', async () => {
      await start({ maxQueuedMessages: 1 });
      await awaySubscriber('full', 'q/#');
      const publisher = await clients.raw5Accepted({ clientId: 'pub' });
      expect((await publish5(publisher, { topic: 'q/1' }, 1)).reasonCode ?? 0).toBe(0);
      expect((await publish5(publisher, { topic: 'q/2' }, 2)).reasonCode).toBe(0x97);
      // QoS 2: PUBREC 0x97 ends the exchange [MQTT-4.3.3-4]; the packet id is free again at once.
      publisher.send({ cmd: 'publish', topic: 'q/3', payload: 'x', qos: 2, messageId: 3, dup: false, retain: false });
      expect((await publisher.next('pubrec')).reasonCode).toBe(0x97);
      // A second subscriber with room: the message is taken, so the publisher hears 0x00.
      await awaySubscriber('roomy', 'q/#');
      expect((await publish5(publisher, { topic: 'q/4' }, 4)).reasonCode ?? 0).toBe(0);
      // 3.1.1 has no way to say it: a plain PUBACK.
      const publisher4 = await clients.rawAccepted({ clientId: 'pub4' });
      publisher4.send({ cmd: 'publish', topic: 'q/5', payload: 'x', qos: 1, messageId: 5, dup: false, retain: false });
      expect(await publisher4.next('puback')).toMatchObject({ messageId: 5 });
    });

    it('a PUBLISH whose topic name has a wildcard gets DISCONNECT 0x90 Topic Name invalid [MQTT-3.3.2-2]', async () => {
      await start();
      const client = await clients.raw5Accepted({ clientId: 'wild' });
      client.send({ cmd: 'publish', topic: 'a/+', payload: 'x', qos: 1, messageId: 1, dup: false, retain: false });
      expect((await client.next('disconnect')).reasonCode).toBe(0x90);
      await client.closed;
    });

    it('PUBREL for a packet id not held gets PUBCOMP 0x92; for a held one 0x00 (MQTT 5.0 3.7.2.1) [MQTT-4.3.3-2]', async () => {
      await start();
      const client = await clients.raw5Accepted({ clientId: 'q2' });
      client.send({ cmd: 'publish', topic: 'x', payload: 'x', qos: 2, messageId: 7, dup: false, retain: false });
      await client.next('pubrec');
      client.send({ cmd: 'pubrel', messageId: 7 });
      expect((await client.next('pubcomp')).reasonCode ?? 0).toBe(0);
      client.send({ cmd: 'pubrel', messageId: 7 });
      expect((await client.next('pubcomp')).reasonCode).toBe(0x92);
    });
  });
});
