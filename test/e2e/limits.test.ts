import { setTimeout as sleep } from 'node:timers/promises';
import mqttPacket, { type Packet } from 'mqtt-packet';
import { afterEach, describe, expect, it } from 'vitest';
import { createBroker, type BrokerOptions } from '../../src/server/broker.js';
import { createStrictParser, PacketTooLarge } from '../../src/protocol/strict-parser.js';
import { startBroker, type RunningBroker } from '../helpers/in-process.js';
import type { RawClient } from '../helpers/raw-client.js';
import { answeredOrClosed, Clients, publishQos1, receiveAndAck, subscribe, summary } from '../helpers/wait.js';

/**
 * Each limit of issue 6, hit and not hit at its boundary, over real TCP against an in-process
 * broker; after each hit a bystander (connected before) still publishes and receives QoS 1.
 */

const REJECTED = 0x80;

interface Fixture {
  running: RunningBroker;
  clients: Clients;
  bystander: RawClient;
  served(): Promise<void>;
}

const open: Fixture[] = [];
afterEach(async () => {
  for (const fixture of open.splice(0)) {
    await fixture.clients.closeAll();
    await fixture.running.stop();
  }
});

async function brokerWith(options: BrokerOptions): Promise<Fixture> {
  const running = await startBroker(options);
  const clients = new Clients(running.port);
  const bystander = await clients.rawAccepted({ clientId: 'bystander' });
  let id = 1;
  await subscribe(bystander, id++, [{ topic: 'bystander/#', qos: 1 }]);
  const fixture: Fixture = {
    running,
    clients,
    bystander,
    async served() {
      const messageId = id++;
      await publishQos1(bystander, messageId, `bystander/${messageId}`, 'still served');
      const [received] = await receiveAndAck(bystander, 1);
      expect(summary(received!)).toBe(`bystander/${messageId}=still served`);
    },
  };
  open.push(fixture);
  return fixture;
}

/** A QoS 1 PUBLISH whose encoded size, fixed header included, is exactly `size` bytes. */
function publishOfSize(size: number, topic: string, messageId: number): Buffer {
  for (let payload = size; payload >= 0; payload--) {
    const bytes = mqttPacket.generate({ cmd: 'publish', topic, payload: Buffer.alloc(payload, 0x61), qos: 1, messageId, retain: false, dup: false });
    if (bytes.length === size) return bytes;
  }
  throw new Error(`no PUBLISH of exactly ${size} bytes`);
}

function encode(packet: Packet): Buffer {
  return mqttPacket.generate(packet);
}

describe('max_packet_size', () => {
  const MAX = 1024;

  it('accepts a packet of exactly max_packet_size bytes', async () => {
    const { clients, running, served, bystander } = await brokerWith({ maxPacketSize: MAX });
    const sender = await clients.rawAccepted({ clientId: 'exact' });
    const bytes = publishOfSize(MAX, 'bystander/exact', 7);
    expect(bytes.length).toBe(MAX);
    sender.sendBytes(bytes);
    expect((await sender.next('puback')).messageId).toBe(7);
    const [received] = await receiveAndAck(bystander, 1);
    // Fixed header 1 + 2 length bytes, topic 2 + 15, packet id 2: the rest is payload.
    expect(received!.payload.length).toBe(MAX - 3 - 2 - 'bystander/exact'.length - 2);
    expect(running.broker.counters.packetsTooLarge).toBe(0);
    await served();
  });

  it('closes the connection on a packet one byte over, without acknowledging it', async () => {
    const { clients, running, served } = await brokerWith({ maxPacketSize: MAX });
    const sender = await clients.rawAccepted({ clientId: 'over' });
    sender.sendBytes(publishOfSize(MAX + 1, 'bystander/over', 7));
    expect(await answeredOrClosed(sender)).toBe('closed');
    expect(sender.received.filter((packet) => packet.cmd === 'puback')).toEqual([]);
    expect(running.broker.counters.packetsTooLarge).toBe(1);
    await served();
  });

  it('closes at once on a huge declared remaining length followed by only a few bytes', async () => {
    // keepalive 0 and no more bytes coming: only the size check can end this connection, so a
    // broker that waited for the 256 MiB body would leave this test hanging.
    const { clients, running, served } = await brokerWith({});
    const sender = await clients.rawAccepted({ clientId: 'huge' });
    sender.sendBytes([0x30, 0xff, 0xff, 0xff, 0x7f, 0x00, 0x03, 0x61, 0x2f, 0x62, 0x01, 0x02]);
    await sender.closed;
    expect(sender.received).toEqual([]);
    expect(running.broker.counters.packetsTooLarge).toBe(1);
    await served();
  });

  it('closes on a declared length over the limit whose length bytes arrive one write at a time', async () => {
    const { clients, running, served } = await brokerWith({ maxPacketSize: MAX });
    const sender = await clients.rawAccepted({ clientId: 'split' });
    // Remaining length 1022 = 0xfe 0x07: total 1 + 2 + 1022 = 1025 bytes, one over.
    for (const byte of [0x30, 0xfe, 0x07]) {
      sender.sendBytes([byte]);
      // Pacing only, so the bytes tend to arrive in separate reads; the parser test below pins it.
      await sleep(20);
    }
    await sender.closed;
    expect(running.broker.counters.packetsTooLarge).toBe(1);
    await served();
  });

  it('counts the fixed header: the refusal comes with the last length byte, whatever the chunking', () => {
    const over = [0x30, 0xfe, 0x07]; // 1025 bytes declared
    const exact = [0x30, 0xfd, 0x07]; // 1024 bytes declared
    for (const bytes of [over, exact]) {
      const parser = createStrictParser(MAX);
      const errors: Error[] = [];
      parser.on('error', (error: Error) => errors.push(error));
      parser.parse(Buffer.from(bytes.slice(0, 1)));
      parser.parse(Buffer.from(bytes.slice(1, 2)));
      expect(errors).toEqual([]);
      parser.parse(Buffer.from(bytes.slice(2)));
      if (bytes === over) {
        expect(errors).toHaveLength(1);
        expect(errors[0]).toBeInstanceOf(PacketTooLarge);
      } else {
        expect(errors).toEqual([]);
      }
    }
  });

  it('before CONNECT, nothing larger than the largest possible CONNECT is buffered, whatever max_packet_size allows', async () => {
    // 1 MiB allowed, but no CONNECT can exceed about 320 KiB: a first packet declaring 400 KiB is
    // refused as soon as its length is read, not after 400 KiB were sent.
    const { clients, running, served } = await brokerWith({ maxPacketSize: 1024 * 1024 });
    const socket = await clients.socket();
    const declared = 400 * 1024; // varint: 0x80 0x80 0x19
    socket.sendBytes([0x10, 0x80, 0x80, 0x19, 0x00, 0x04]);
    expect(declared).toBe(0x19 * 128 * 128);
    await socket.closed;
    expect(socket.received).toEqual([]);
    expect(running.broker.counters.packetsTooLarge).toBe(1);
    await served();
  });

  it('applies to CONNECT too: an oversized CONNECT is closed without CONNACK', async () => {
    const { clients, served } = await brokerWith({ maxPacketSize: MAX });
    const socket = await clients.socket();
    socket.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'c'.repeat(MAX), clean: true, keepalive: 0 });
    await socket.closed;
    expect(socket.received).toEqual([]);
    await served();
  });
});

describe('max_connections', () => {
  it('accepts exactly max_connections clients, closes the next socket at once, and accepts again once one leaves', async () => {
    // The bystander is the first of the three.
    const { clients, running, served } = await brokerWith({ maxConnections: 3 });
    await clients.rawAccepted({ clientId: 'second' });
    const third = await clients.rawAccepted({ clientId: 'third' });
    expect(running.broker.counters.connectionsRefused).toBe(0);

    const fourth = await clients.socket();
    await fourth.closed;
    expect(fourth.received).toEqual([]);
    expect(running.broker.counters.connectionsRefused).toBe(1);
    await served();

    await third.disconnect();
    // The slot frees once the broker has finished with the connection; until then a new socket
    // is refused like the fourth was. Each attempt either gets CONNACK or a close.
    let attempts = 0;
    for (;;) {
      attempts++;
      const socket = await clients.socket();
      socket.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'again', clean: true, keepalive: 0 });
      const connack = await socket.next('connack').catch(() => undefined);
      if (connack) {
        expect(connack.returnCode).toBe(0);
        break;
      }
      expect(attempts).toBeLessThan(1000);
    }
    expect(running.broker.counters.connectionsRefused).toBe(attempts);
    await served();
  });
});

describe('max_topic_length and max_topic_levels', () => {
  const limits = { maxTopicLength: 32, maxTopicLevels: 4 };
  const exactLength = 'bystander/' + 'x'.repeat(22); // 32 bytes
  // 'é' is two bytes in UTF-8: the limit counts bytes, not characters.
  const exactLengthUtf8 = 'bystander/' + 'é'.repeat(11); // 32 bytes

  it('accepts a PUBLISH whose topic is exactly at both limits', async () => {
    const { clients, bystander, served } = await brokerWith(limits);
    const sender = await clients.rawAccepted({ clientId: 'at-limits' });
    expect(Buffer.byteLength(exactLength)).toBe(32);
    expect(Buffer.byteLength(exactLengthUtf8)).toBe(32);
    for (const [index, topic] of [exactLength, exactLengthUtf8, 'bystander/b/c/d'].entries()) {
      await publishQos1(sender, index + 1, topic, 'ok');
      const [received] = await receiveAndAck(bystander, 1);
      expect(received!.topic).toBe(topic);
    }
    await served();
  });

  it.each([
    { name: 'one byte over max_topic_length', topic: exactLength + 'x' },
    { name: 'one UTF-8 byte over max_topic_length', topic: 'bystander/' + 'é'.repeat(11) + 'x' },
    { name: 'one level over max_topic_levels', topic: 'bystander/b/c/d/e' },
    { name: 'empty levels over max_topic_levels', topic: 'bystander////' },
  ])('closes the connection on a PUBLISH $name, unacknowledged and undelivered', async ({ topic }) => {
    const { clients, served } = await brokerWith(limits);
    const sender = await clients.rawAccepted({ clientId: 'over-limits' });
    sender.send({ cmd: 'publish', topic, payload: 'no', qos: 1, messageId: 1, retain: false, dup: false });
    expect(await answeredOrClosed(sender)).toBe('closed');
    expect(sender.received).toEqual([]);
    // The bystander's next message is its own marker: the refused one was not delivered.
    await served();
  });

  it.each([
    { name: 'length', topic: 'w/' + 'x'.repeat(31) },
    { name: 'levels', topic: 'w/b/c/d/e' },
  ])('closes without CONNACK on a will topic over max_topic_$name', async ({ topic }) => {
    const { clients, served } = await brokerWith(limits);
    const socket = await clients.socket();
    socket.send({
      cmd: 'connect',
      protocolId: 'MQTT',
      protocolVersion: 4,
      clientId: 'will-over',
      clean: true,
      keepalive: 0,
      will: { topic, payload: Buffer.from('bye'), qos: 1, retain: false },
    });
    await socket.closed;
    expect(socket.received).toEqual([]);
    await served();
  });

  it('accepts a will topic exactly at the limits', async () => {
    const { clients } = await brokerWith(limits);
    const { connack } = await clients.raw({
      clientId: 'will-ok',
      will: { topic: 'w/b/c/' + 'x'.repeat(26), payload: Buffer.from('bye'), qos: 1, retain: false },
    });
    expect(connack.returnCode).toBe(0);
  });

  it('answers 0x80 for SUBSCRIBE filters over the limits and grants the rest [MQTT-3.9.3-2]', async () => {
    const { clients, bystander, served } = await brokerWith(limits);
    const subscriber = await clients.rawAccepted({ clientId: 'filters' });
    const granted = await subscribe(subscriber, 1, [
      { topic: 'a/b/c/d', qos: 1 },
      { topic: 'a/b/c/d/e', qos: 1 },
      { topic: '+/+/+/#', qos: 1 },
      { topic: '+/+/+/+/#', qos: 1 },
      { topic: 'f/' + 'x'.repeat(30), qos: 1 },
      { topic: 'f/' + 'x'.repeat(31), qos: 1 },
    ]);
    expect(granted).toEqual([1, REJECTED, 1, REJECTED, 1, REJECTED]);
    // The granted wildcard filter is live: a 4-level topic reaches the subscriber.
    await publishQos1(bystander, 100, 'a/b/c/d', 'routed');
    const [received] = await receiveAndAck(subscriber, 1);
    expect(summary(received!)).toBe('a/b/c/d=routed');
    // UNSUBSCRIBE is not limited: a filter held from before a lower limit can always be removed.
    subscriber.send({ cmd: 'unsubscribe', messageId: 2, unsubscriptions: ['a/b/c/d/e/f/g', 'a/b/c/d'] });
    expect((await subscriber.next('unsuback')).messageId).toBe(2);
    await served();
  });
});

describe('max_subscriptions_per_client', () => {
  const limits = { maxSubscriptionsPerClient: 3 };

  it('grants up to the limit, refuses new filters beyond it, and lets held filters be replaced', async () => {
    const { clients, bystander, served } = await brokerWith(limits);
    const subscriber = await clients.rawAccepted({ clientId: 'many', clean: false });
    expect(await subscribe(subscriber, 1, [{ topic: 's/a', qos: 0 }, { topic: 's/b', qos: 1 }, { topic: 's/a', qos: 1 }])).toEqual([0, 1, 1]);
    // Two held ('s/a' twice in one packet is one filter); one more fits, the next does not.
    expect(await subscribe(subscriber, 2, [{ topic: 's/c', qos: 1 }, { topic: 's/d', qos: 1 }])).toEqual([1, REJECTED]);
    // Replacing held filters does not count against the limit [MQTT-3.8.4-3].
    expect(await subscribe(subscriber, 3, [{ topic: 's/a', qos: 2 }, { topic: 's/b', qos: 2 }, { topic: 's/e', qos: 1 }])).toEqual([
      2,
      2,
      REJECTED,
    ]);

    // The refused filter routes nothing: the subscriber's next message is the one on 's/c'.
    await publishQos1(bystander, 100, 's/d', 'refused filter');
    await publishQos1(bystander, 101, 's/c', 'held filter');
    const [received] = await receiveAndAck(subscriber, 1);
    expect(summary(received!)).toBe('s/c=held filter');

    // The limit holds across a reconnect of the persistent session (its subscriptions are restored).
    await subscriber.disconnect();
    const again = await clients.raw({ clientId: 'many', clean: false });
    expect(again.connack.sessionPresent).toBe(true);
    expect(await subscribe(again.client, 4, [{ topic: 's/f', qos: 1 }])).toEqual([REJECTED]);
    // An UNSUBSCRIBE frees a slot.
    again.client.send({ cmd: 'unsubscribe', messageId: 5, unsubscriptions: ['s/c'] });
    await again.client.next('unsuback');
    expect(await subscribe(again.client, 6, [{ topic: 's/f', qos: 1 }])).toEqual([1]);
    await served();
  });
});

describe('CONNECT timeout', () => {
  const quick = { connectTimeoutMs: 300 };

  it('closes a socket that sends nothing', async () => {
    const { clients, served } = await brokerWith(quick);
    const silent = await clients.socket();
    await silent.closed;
    expect(silent.received).toEqual([]);
    await served();
  });

  it('closes a slowloris that trickles a CONNECT one byte at a time, at the timeout and not at its end', async () => {
    const { clients, served } = await brokerWith(quick);
    const slow = await clients.socket();
    slow.socket.setNoDelay(true);
    // 500 bytes at one per 20 ms would take 10 s to complete: far past the 300 ms timeout.
    const bytes = encode({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 's'.repeat(480), clean: true, keepalive: 0 });
    let sent = 0;
    while (!slow.isClosed && sent < bytes.length) {
      slow.sendBytes(bytes.subarray(sent, sent + 1));
      sent++;
      await Promise.race([sleep(20), slow.closed]);
    }
    await slow.closed;
    expect(sent).toBeLessThan(bytes.length);
    expect(slow.received).toEqual([]);
    await served();
  });

  it('lets a keepalive end a client that trickles a packet after CONNECT [MQTT-3.1.2-24]', async () => {
    const { clients, served } = await brokerWith({});
    const slow = await clients.rawAccepted({ clientId: 'trickle', keepalive: 1 });
    // A PUBLISH declaring 200 bytes, sent a byte per 100 ms: 20 s, while keepalive allows 1.5 s
    // without a complete packet.
    const bytes = encode({ cmd: 'publish', topic: 'bystander/slow', payload: Buffer.alloc(190), qos: 0, retain: false, dup: false });
    let sent = 0;
    while (!slow.isClosed && sent < bytes.length) {
      slow.sendBytes(bytes.subarray(sent, sent + 1));
      sent++;
      await Promise.race([sleep(100), slow.closed]);
    }
    await slow.closed;
    expect(sent).toBeLessThan(bytes.length);
    await served();
  });
});

describe('option validation', () => {
  it.each([
    { maxPacketSize: 1 },
    { maxPacketSize: 268_435_461 },
    { maxConnections: 0 },
    { maxTopicLength: 0 },
    { maxTopicLength: 65536 },
    { maxTopicLevels: 1.5 },
    { maxSubscriptionsPerClient: -1 },
  ])('refuses %o', (options) => {
    expect(() => createBroker({ port: 0, ...options })).toThrow(new RegExp(`${Object.keys(options)[0]} must be an integer`));
  });
});
