import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startBroker, type RunningBroker } from '../helpers/in-process.js';
import { controlPacket as packet, mqttString } from '../helpers/packet-bytes.js';
import type { RawClient } from '../helpers/raw-client.js';
import { answeredOrClosed, Clients, publishQos1, receiveAndAck, subscribe, summary } from '../helpers/wait.js';


/** A 3.1.1 CONNECT with the given flags byte and payload fields, keepalive 0. */
function connectPacket(flags: number, ...payload: Buffer[]): Buffer {
  return packet(0x10, mqttString('MQTT'), Buffer.from([4, flags, 0, 0]), ...payload);
}

const CLEAN = 0x02;
const WILL = 0x04;
const WILL_QOS_1 = 0x08;
const WILL_QOS_3 = 0x18;
const PASSWORD = 0x40;

/**
 * First bytes on which a parser must fail at once: reserved flag bits other than those of
 * table 2.2, or a PUBLISH with both QoS bits set. Random garbage starts with one of them, because
 * after any other first byte a random remaining length could rightly make a parser wait for more.
 */
const INVALID_FIRST_BYTES = (() => {
  const required: Record<number, number> = { 1: 0, 2: 0, 4: 0, 5: 0, 6: 2, 7: 0, 8: 2, 9: 0, 10: 2, 11: 0, 12: 0, 13: 0, 14: 0 };
  const bytes: number[] = [];
  for (let byte = 0x10; byte <= 0xef; byte++) {
    const type = byte >> 4;
    const flags = byte & 0x0f;
    if (type === 3 ? (flags & 0x06) === 0x06 : flags !== required[type]) bytes.push(byte);
  }
  return bytes;
})();

function garbage(length: number): Buffer {
  const bytes = randomBytes(length);
  bytes[0] = INVALID_FIRST_BYTES[bytes[1]! % INVALID_FIRST_BYTES.length]!;
  return bytes;
}

describe('malformed and hostile input', () => {
  let running: RunningBroker;
  let clients: Clients;
  /** A well-behaved client connected throughout; it must not notice anything. */
  let bystander: RawClient;
  let bystanderId = 1;
  beforeEach(async () => {
    running = await startBroker();
    clients = new Clients(running.port);
    bystander = await clients.rawAccepted({ clientId: 'bystander' });
    await subscribe(bystander, bystanderId++, [{ topic: 'bystander/#', qos: 1 }]);
  });
  afterEach(async () => {
    await clients.closeAll();
    await running.stop();
  });

  async function expectBystanderServed(): Promise<void> {
    const id = bystanderId++;
    await publishQos1(bystander, id, `bystander/${id}`, 'still fine');
    const [received] = await receiveAndAck(bystander, 1);
    expect(summary(received!)).toBe(`bystander/${id}=still fine`);
  }

  /** Sends `bytes` on a new socket (after CONNECT when `connected`) and expects the broker to close it. */
  async function expectClosedOn(bytes: Buffer | number[], options: { connected: boolean }): Promise<RawClient> {
    const client = options.connected ? await clients.rawAccepted({ clientId: 'offender' }) : await clients.socket();
    client.sendBytes(bytes);
    expect(await answeredOrClosed(client)).toBe('closed');
    return client;
  }

  describe('garbage', () => {
    it.each([1, 2, 3, 4, 5])('closes a connection sending random garbage before CONNECT, without a response (run %i)', async () => {
      const offender = await expectClosedOn(garbage(64), { connected: false });
      expect(offender.received).toEqual([]);
      await expectBystanderServed();
    });

    it.each([1, 2, 3, 4, 5])('closes a connected client sending random garbage, others keep publishing and receiving (run %i)', async () => {
      await expectClosedOn(garbage(64), { connected: true });
      await expectBystanderServed();
    });

    it('closes a connection that speaks HTTP', async () => {
      await expectClosedOn(Buffer.from('GET / HTTP/1.1\r\nHost: localhost\r\n\r\n'), { connected: false });
      await expectBystanderServed();
    });

    it('closes a connection that starts a TLS handshake', async () => {
      // The start of a TLS ClientHello record: content type 0x16, version 3.1, length.
      await expectClosedOn([0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03], { connected: false });
      await expectBystanderServed();
    });

    it('closes a connection whose remaining length runs over four bytes', async () => {
      await expectClosedOn([0x30, 0xff, 0xff, 0xff, 0xff, 0x01], { connected: true });
      await expectBystanderServed();
    });
  });

  describe('CONNECT', () => {
    it('closes without CONNACK when the reserved connect flag is set [MQTT-3.1.2-3]', async () => {
      const offender = await expectClosedOn(connectPacket(CLEAN | 0x01, mqttString('reserved')), { connected: false });
      expect(offender.received).toEqual([]);
    });

    it('closes without CONNACK when Will QoS is 3 [MQTT-3.1.2-14] [MQTT-3.1.4-1]', async () => {
      const offender = await expectClosedOn(
        connectPacket(CLEAN | WILL | WILL_QOS_3, mqttString('will-qos-3'), mqttString('will/t'), mqttString('payload')),
        { connected: false },
      );
      expect(offender.received).toEqual([]);
    });

    it('closes without CONNACK when Will QoS is set without the Will Flag [MQTT-3.1.2-13]', async () => {
      const offender = await expectClosedOn(connectPacket(CLEAN | WILL_QOS_1, mqttString('no-will')), { connected: false });
      expect(offender.received).toEqual([]);
    });

    it('closes without CONNACK when the Password Flag is set without the User Name Flag [MQTT-3.1.2-22] [MQTT-3.1.4-1]', async () => {
      const offender = await expectClosedOn(connectPacket(CLEAN | PASSWORD, mqttString('password-only'), mqttString('secret')), {
        connected: false,
      });
      expect(offender.received).toEqual([]);
    });

    it('closes without CONNACK when the will topic contains a wildcard', async () => {
      const offender = await expectClosedOn(
        connectPacket(CLEAN | WILL | WILL_QOS_1, mqttString('wild-will'), mqttString('will/#'), mqttString('payload')),
        { connected: false },
      );
      expect(offender.received).toEqual([]);
    });

    it('closes without CONNACK on a protocol name other than MQTT [MQTT-3.1.2-1]', async () => {
      const offender = await expectClosedOn(packet(0x10, mqttString('MQTX'), Buffer.from([4, CLEAN, 0, 0]), mqttString('name')), {
        connected: false,
      });
      expect(offender.received).toEqual([]);
    });
  });

  describe('fixed header', () => {
    it.each([
      { name: 'SUBSCRIBE with flags 0 [MQTT-3.8.1-1]', bytes: packet(0x80, Buffer.from([0, 1]), mqttString('a'), Buffer.from([0])) },
      { name: 'UNSUBSCRIBE with flags 0 [MQTT-3.10.1-1]', bytes: packet(0xa0, Buffer.from([0, 1]), mqttString('a')) },
      { name: 'PUBREL with flags 0 [MQTT-3.6.1-1]', bytes: packet(0x60, Buffer.from([0, 1])) },
      { name: 'PINGREQ with flags 1 [MQTT-2.2.2-2]', bytes: packet(0xc1) },
      { name: 'PUBACK with flags 2 [MQTT-2.2.2-2]', bytes: packet(0x42, Buffer.from([0, 1])) },
      { name: 'PUBLISH with both QoS bits set [MQTT-3.3.1-4]', bytes: packet(0x36, mqttString('a'), Buffer.from([0, 1])) },
    ])('closes on $name', async ({ bytes }) => {
      await expectClosedOn(bytes, { connected: true });
      await expectBystanderServed();
    });
  });

  describe('packets a client may not send', () => {
    it.each([
      { name: 'CONNACK', bytes: packet(0x20, Buffer.from([0, 0])) },
      { name: 'SUBACK', bytes: packet(0x90, Buffer.from([0, 1, 0])) },
      { name: 'UNSUBACK', bytes: packet(0xb0, Buffer.from([0, 1])) },
      { name: 'PINGRESP', bytes: packet(0xd0) },
    ])('closes a client sending $name', async ({ bytes }) => {
      await expectClosedOn(bytes, { connected: true });
      await expectBystanderServed();
    });
  });

  describe('SUBSCRIBE / UNSUBSCRIBE payload', () => {
    it('closes on a SUBSCRIBE requesting QoS 3 [MQTT-3.8.3-4]', async () => {
      await expectClosedOn(packet(0x82, Buffer.from([0, 1]), mqttString('a'), Buffer.from([3])), { connected: true });
      await expectBystanderServed();
    });

    it('closes on a SUBSCRIBE with reserved option bits set [MQTT-3.8.3-4]', async () => {
      await expectClosedOn(packet(0x82, Buffer.from([0, 1]), mqttString('a'), Buffer.from([0x05])), { connected: true });
    });

    it('closes on a SUBSCRIBE without topic filters [MQTT-3.8.3-3]', async () => {
      const offender = await expectClosedOn(packet(0x82, Buffer.from([0, 1])), { connected: true });
      expect(offender.received.filter((received) => received.cmd === 'suback')).toEqual([]);
    });

    it('closes on an UNSUBSCRIBE without topic filters [MQTT-3.10.3-2]', async () => {
      const offender = await expectClosedOn(packet(0xa2, Buffer.from([0, 1])), { connected: true });
      expect(offender.received.filter((received) => received.cmd === 'unsuback')).toEqual([]);
    });
  });

  describe('PUBLISH topic', () => {
    it('closes on an empty topic name [MQTT-4.7.3-1]', async () => {
      await expectClosedOn(packet(0x30, mqttString(''), Buffer.from('x')), { connected: true });
      await expectBystanderServed();
    });

    it('closes on a topic name containing U+0000 [MQTT-4.7.3-2]', async () => {
      await expectClosedOn(packet(0x30, mqttString([0x61, 0x00, 0x62]), Buffer.from('x')), { connected: true });
      await expectBystanderServed();
    });

    it.each([
      { name: 'an invalid byte 0xFF', bytes: [0x61, 0xff] },
      { name: 'an encoded UTF-16 surrogate U+D800', bytes: [0x61, 0xed, 0xa0, 0x80] },
      { name: 'a truncated sequence', bytes: [0x61, 0xc3] },
    ])('closes on a topic name with ill-formed UTF-8 ($name) [MQTT-1.5.3-1]', async ({ bytes }) => {
      await expectClosedOn(packet(0x30, mqttString(bytes), Buffer.from('x')), { connected: true });
      await expectBystanderServed();
    });
  });
});
