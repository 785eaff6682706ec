import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import mqttPacket from 'mqtt-packet';
import { startBroker, type RunningBroker } from '../helpers/in-process.js';
import { Clients, publishQos1, receiveAndAck, subscribe, summary } from '../helpers/wait.js';

/** A 3.1.1 CONNECT as bytes, for tests that patch single bytes (level at index 8, flags at 9). */
function connectBytes(clientId: string): Buffer {
  const bytes = mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId, clean: true, keepalive: 0 });
  expect(bytes.subarray(2, 8).toString('latin1')).toBe('\u0000\u0004MQTT');
  return bytes;
}

describe('CONNECT / CONNACK', () => {
  let running: RunningBroker;
  let clients: Clients;
  beforeEach(async () => {
    running = await startBroker();
    clients = new Clients(running.port);
  });
  afterEach(async () => {
    await clients.closeAll();
    await running.stop();
  });

  describe('session present', () => {
    it('is 0 for a new CleanSession=0 session [MQTT-3.2.2-3]', async () => {
      const { connack } = await clients.raw({ clientId: 'fresh', clean: false });
      expect(connack.returnCode).toBe(0);
      expect(connack.sessionPresent).toBe(false);
    });

    it('is 0 for CleanSession=1 [MQTT-3.2.2-1]', async () => {
      const { connack } = await clients.raw({ clientId: 'clean', clean: true });
      expect(connack.returnCode).toBe(0);
      expect(connack.sessionPresent).toBe(false);
    });

    it('is 1 when a CleanSession=0 session is resumed, whose subscriptions still deliver [MQTT-3.2.2-2]', async () => {
      const first = await clients.rawAccepted({ clientId: 'durable', clean: false });
      expect(await subscribe(first, 1, [{ topic: 'resume/t', qos: 1 }])).toEqual([1]);
      await first.disconnect();

      const { client: second, connack } = await clients.raw({ clientId: 'durable', clean: false });
      expect(connack.returnCode).toBe(0);
      expect(connack.sessionPresent).toBe(true);
      // No SUBSCRIBE on this connection: the stored subscription routes the message.
      const publisher = await clients.rawAccepted({ clientId: 'pub' });
      await publishQos1(publisher, 1, 'resume/t', 'still subscribed');
      const [received] = await receiveAndAck(second, 1);
      expect(summary(received!)).toBe('resume/t=still subscribed');
    });

    it('is 0 with CleanSession=1 although a persistent session existed, which is discarded [MQTT-3.1.2-6] [MQTT-3.2.2-1]', async () => {
      const persistent = await clients.rawAccepted({ clientId: 'switcher', clean: false });
      await subscribe(persistent, 1, [{ topic: 'old/sub', qos: 1 }]);
      await persistent.disconnect();
      const publisher = await clients.rawAccepted({ clientId: 'pub' });
      // Queued for the persistent session while it is away: must be discarded with it.
      await publishQos1(publisher, 1, 'old/sub', 'queued while away');

      const { client: clean, connack } = await clients.raw({ clientId: 'switcher', clean: true });
      expect(connack.sessionPresent).toBe(false);
      await subscribe(clean, 1, [{ topic: 'marker', qos: 1 }]);
      await publishQos1(publisher, 2, 'old/sub', 'after the clean start');
      await publishQos1(publisher, 3, 'marker', 'marker');
      // Neither the queued message nor the old subscription delivers: the marker comes first.
      const [first] = await receiveAndAck(clean, 1);
      expect(summary(first!)).toBe('marker=marker');
      await clean.disconnect();

      // The clean session ended with its connection, so nothing is left to resume.
      const { connack: again } = await clients.raw({ clientId: 'switcher', clean: false });
      expect(again.sessionPresent).toBe(false);
    });
  });

  describe('client identifier', () => {
    it('accepts a zero-length client id with CleanSession=1 and gives each such client its own session [MQTT-3.1.3-6]', async () => {
      const { client: first, connack: firstAck } = await clients.raw({ clientId: '', clean: true });
      const { client: second, connack: secondAck } = await clients.raw({ clientId: '', clean: true });
      expect(firstAck.returnCode).toBe(0);
      expect(secondAck.returnCode).toBe(0);
      // Had both got the same id, the second CONNECT would have taken over and closed the first.
      await first.roundTrip();
      await second.roundTrip();
      await subscribe(first, 1, [{ topic: 'anon', qos: 0 }]);
      second.send({ cmd: 'publish', topic: 'anon', payload: 'to first', qos: 0, retain: false, dup: false });
      expect(summary(await first.next('publish'))).toBe('anon=to first');
    });

    it('refuses a zero-length client id with CleanSession=0 with CONNACK 0x02 and closes [MQTT-3.1.3-8] [MQTT-3.2.2-4]', async () => {
      const client = await clients.socket();
      // mqtt-packet refuses to encode this CONNECT, so the CleanSession bit is cleared by hand.
      const bytes = connectBytes('');
      expect(bytes[9]).toBe(0x02);
      bytes[9] = 0x00;
      client.sendBytes(bytes);
      const connack = await client.next('connack');
      expect(connack.returnCode).toBe(2);
      expect(connack.sessionPresent).toBe(false);
      await client.closed;
    });
  });

  describe('protocol name and level', () => {
    it('refuses an unknown protocol level (6) with CONNACK 0x01 and closes [MQTT-3.1.2-2]', async () => {
      const client = await clients.socket();
      const bytes = connectBytes('v6');
      bytes[8] = 6;
      client.sendBytes(bytes);
      const connack = await client.next('connack');
      expect(connack.returnCode).toBe(1);
      await client.closed;
    });

    it("refuses protocol name 'MQTT' with level 3 (3.1 spoke 'MQIsdp') with CONNACK 0x01 and closes [MQTT-3.1.2-2]", async () => {
      // The name is the 3.1.1 one, so the level is what is unsupported: refused with 0x01, not dropped.
      const client = await clients.socket();
      const bytes = connectBytes('mqtt-level-3');
      bytes[8] = 3;
      client.sendBytes(bytes);
      await client.closed;
      expect(client.received.map((packet) => (packet.cmd === 'connack' ? `connack ${packet.returnCode}` : packet.cmd))).toEqual(['connack 1']);
    });

    it("refuses an MQTT 3.1 CONNECT with an empty client id with CONNACK 0x02: 3.1 has no assigned ids (its ids are 1 to 23 characters)", async () => {
      const client = await clients.socket();
      // mqtt-packet refuses to encode it: the one-character id is cut off by hand.
      const bytes = mqttPacket.generate({ cmd: 'connect', protocolId: 'MQIsdp', protocolVersion: 3, clientId: 'x', clean: true, keepalive: 0 });
      expect([...bytes.subarray(bytes.length - 3)]).toEqual([0, 1, 0x78]);
      const empty = Buffer.concat([bytes.subarray(0, bytes.length - 3), Buffer.from([0, 0])]);
      empty[1] = empty[1]! - 1;
      client.sendBytes(empty);
      const connack = await client.next('connack');
      expect(connack.returnCode).toBe(2);
      await client.closed;
    });

    it('answers MQTT 3.1 with a CONNACK whose first byte is 0, also when its persistent session is resumed (3.1 has no session present flag)', async () => {
      const first = await clients.rawAccepted({ clientId: 'v31-durable', clean: false, protocolId: 'MQIsdp', protocolVersion: 3 });
      expect(await subscribe(first, 1, [{ topic: 'v31/t', qos: 1 }])).toEqual([1]);
      await first.disconnect();
      const client = await clients.socket();
      const bytes: Buffer[] = [];
      client.socket.on('data', (chunk: Buffer) => bytes.push(chunk));
      client.send({ cmd: 'connect', protocolId: 'MQIsdp', protocolVersion: 3, clientId: 'v31-durable', clean: false, keepalive: 0 });
      await client.next('connack');
      // CONNACK: type 0x20, remaining length 2, acknowledge flags (reserved in 3.1), return code.
      expect([...Buffer.concat(bytes).subarray(0, 4)]).toEqual([0x20, 2, 0, 0]);
      // The same client on 3.1.1 does see its session present [MQTT-3.2.2-2].
      await client.disconnect();
      const { connack } = await clients.raw({ clientId: 'v31-durable', clean: false });
      expect(connack.sessionPresent).toBe(true);
    });

    it("accepts MQTT 3.1 ('MQIsdp', level 3) and serves it", async () => {
      const { client, connack } = await clients.raw({ clientId: 'old-client', protocolId: 'MQIsdp', protocolVersion: 3 });
      expect(connack.returnCode).toBe(0);
      expect(await subscribe(client, 1, [{ topic: 'v3/t', qos: 1 }])).toEqual([1]);
      await publishQos1(client, 2, 'v3/t', 'loop');
      const [received] = await receiveAndAck(client, 1);
      expect(summary(received!)).toBe('v3/t=loop');
    });
  });

  describe('user name and password flags', () => {
    it('closes a CONNECT that carries a user name while its User Name Flag is 0, without CONNACK [MQTT-3.1.2-18]', async () => {
      const client = await clients.socket();
      const bytes = connectBytes('sneaky');
      expect(bytes[9]).toBe(0x02); // CleanSession only: no user name, no password
      const userName = Buffer.from([0, 5, ...Buffer.from('alice')]);
      const packet = Buffer.concat([bytes, userName]);
      packet[1] = packet[1]! + userName.length; // remaining length, one byte for a CONNECT this small
      client.sendBytes(packet);
      await client.closed;
      expect(client.received).toEqual([]);
    });

    it('closes a CONNECT that carries a password while its Password Flag is 0, without CONNACK [MQTT-3.1.2-20]', async () => {
      const client = await clients.socket();
      const bytes = mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'sneaky2', clean: true, keepalive: 0, username: 'bob' });
      expect(bytes[9]).toBe(0x82); // user name flag, CleanSession; no password flag
      const password = Buffer.from([0, 3, ...Buffer.from('pwd')]);
      const packet = Buffer.concat([bytes, password]);
      packet[1] = packet[1]! + password.length;
      client.sendBytes(packet);
      await client.closed;
      expect(client.received).toEqual([]);
    });
  });

  describe('packet order', () => {
    it('closes without a response when the first packet is PINGREQ, not CONNECT [MQTT-3.1.0-1]', async () => {
      const client = await clients.socket();
      client.send({ cmd: 'pingreq' });
      await client.closed;
      expect(client.received).toEqual([]);
    });

    it('closes without a response when the first packet is PUBLISH, not CONNECT [MQTT-3.1.0-1]', async () => {
      const client = await clients.socket();
      client.send({ cmd: 'publish', topic: 'early', payload: 'x', qos: 1, messageId: 1, retain: false, dup: false });
      await client.closed;
      expect(client.received).toEqual([]);
    });

    it('closes the connection on a second CONNECT [MQTT-3.1.0-2]', async () => {
      const client = await clients.rawAccepted({ clientId: 'twice' });
      client.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'twice', clean: true, keepalive: 0 });
      await client.closed;
      expect(client.received.filter((packet) => packet.cmd === 'connack')).toEqual([]);
    });
  });

  describe('keepalive', () => {
    it('answers PINGREQ with PINGRESP [MQTT-3.12.4-1]', async () => {
      const client = await clients.rawAccepted({ clientId: 'pinger', keepalive: 60 });
      client.send({ cmd: 'pingreq' });
      await client.next('pingresp');
      client.send({ cmd: 'pingreq' });
      await client.next('pingresp');
    });

    it('closes a client silent for 1.5 keepalive periods and publishes its will [MQTT-3.1.2-24]', async () => {
      const watcher = await clients.rawAccepted({ clientId: 'watcher' });
      await subscribe(watcher, 1, [{ topic: 'wills/silent', qos: 1 }]);
      const silent = await clients.rawAccepted({
        clientId: 'silent',
        keepalive: 1,
        will: { topic: 'wills/silent', payload: Buffer.from('gone quiet'), qos: 1, retain: false },
      });
      // No assertion on timing: the broker must close it at some point, and then publish the will.
      await silent.closed;
      const [will] = await receiveAndAck(watcher, 1);
      expect(summary(will!)).toBe('wills/silent=gone quiet');
      expect(will!.qos).toBe(1);
    });

    it('keeps a client that pings within its keepalive connected', async () => {
      const client = await clients.rawAccepted({ clientId: 'pinging', keepalive: 1 });
      // Time has to pass here (unavoidably): four pings half a period apart span 2 s, more than the
      // 1.5 s after which a broker that did not count them as activity would have closed us.
      for (let index = 0; index < 4; index++) {
        await new Promise((resolve) => setTimeout(resolve, 500));
        await client.roundTrip();
      }
      expect(client.isClosed).toBe(false);
    });
  });

  it('closes a socket that sends no CONNECT within the connect timeout', async () => {
    const quick = await startBroker({ connectTimeoutMs: 200 });
    const local = new Clients(quick.port);
    try {
      const idle = await local.socket();
      await idle.closed;
      expect(idle.received).toEqual([]);
    } finally {
      await local.closeAll();
      await quick.stop();
    }
  });
});
