import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import mqttPacket, { type Packet } from 'mqtt-packet';
import { startBroker, type RunningBroker } from '../helpers/in-process.js';
import type { RawClient } from '../helpers/raw-client.js';
import { Clients, publishQos1, receiveAndAck, subscribe, summary } from '../helpers/wait.js';

/** Records every packet a raw client receives from now on, in arrival order (`received` loses it once taken). */
function recordArrivals(client: RawClient): string[] {
  const arrivals: string[] = [];
  const parser = mqttPacket.parser({ protocolVersion: 4 });
  parser.on('packet', (packet: Packet) => arrivals.push(`${packet.cmd}:${'messageId' in packet ? packet.messageId : ''}`));
  client.socket.on('data', (chunk: Buffer) => parser.parse(chunk));
  return arrivals;
}

/** The PUBLISHes still queued on a raw client (not yet taken). */
function queuedPublishes(client: RawClient) {
  return client.received.filter((packet) => packet.cmd === 'publish');
}

describe('QoS flows', () => {
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

  describe('inbound (client → broker)', () => {
    it('answers a QoS 1 PUBLISH with PUBACK carrying its packet id [MQTT-4.3.2-2]', async () => {
      const sub = await clients.rawAccepted({ clientId: 'sub' });
      await subscribe(sub, 1, [{ topic: 'q1', qos: 1 }]);
      const publisher = await clients.rawAccepted({ clientId: 'pub' });
      publisher.send({ cmd: 'publish', topic: 'q1', payload: 'one', qos: 1, messageId: 4711, retain: false, dup: false });
      expect((await publisher.next('puback')).messageId).toBe(4711);
      const [received] = await receiveAndAck(sub, 1);
      expect(summary(received!)).toBe('q1=one');
    });

    it('answers a QoS 2 PUBLISH with PUBREC, and PUBREL with PUBCOMP [MQTT-4.3.3-2]', async () => {
      const sub = await clients.rawAccepted({ clientId: 'sub' });
      await subscribe(sub, 1, [{ topic: 'q2', qos: 2 }]);
      const publisher = await clients.rawAccepted({ clientId: 'pub' });
      publisher.send({ cmd: 'publish', topic: 'q2', payload: 'two', qos: 2, messageId: 99, retain: false, dup: false });
      expect((await publisher.next('pubrec')).messageId).toBe(99);
      publisher.send({ cmd: 'pubrel', messageId: 99 });
      expect((await publisher.next('pubcomp')).messageId).toBe(99);
      const [received] = await receiveAndAck(sub, 1);
      expect(`${summary(received!)} at ${received!.qos}`).toBe('q2=two at 2');
    });

    it.each([
      { kind: 'clean', clean: true },
      { kind: 'persistent', clean: false },
    ])('answers a re-sent QoS 2 PUBLISH (DUP=1) before PUBREL with PUBREC again and delivers it once, $kind publisher [MQTT-4.3.3-2]', async ({ clean }) => {
      const sub = await clients.rawAccepted({ clientId: 'sub' });
      await subscribe(sub, 1, [{ topic: 'once', qos: 2 }]);
      const publisher = await clients.rawAccepted({ clientId: 'pub', clean });
      publisher.send({ cmd: 'publish', topic: 'once', payload: 'only once', qos: 2, messageId: 5, retain: false, dup: false });
      expect((await publisher.next('pubrec')).messageId).toBe(5);
      publisher.send({ cmd: 'publish', topic: 'once', payload: 'only once', qos: 2, messageId: 5, retain: false, dup: true });
      expect((await publisher.next('pubrec')).messageId).toBe(5);
      publisher.send({ cmd: 'pubrel', messageId: 5 });
      expect((await publisher.next('pubcomp')).messageId).toBe(5);
      // Same publisher, topic and QoS: a duplicate delivery would come before the marker.
      publisher.send({ cmd: 'publish', topic: 'once', payload: 'marker', qos: 2, messageId: 6, retain: false, dup: false });
      await publisher.next('pubrec');
      const received = await receiveAndAck(sub, 2);
      expect(received.map(summary)).toEqual(['once=only once', 'once=marker']);
    });

    it('recognises a QoS 2 PUBLISH re-sent after reconnecting, before PUBREL, and delivers it once [MQTT-4.3.3-2]', async () => {
      const sub = await clients.rawAccepted({ clientId: 'sub' });
      await subscribe(sub, 1, [{ topic: 'across', qos: 2 }]);
      const first = await clients.rawAccepted({ clientId: 'pub', clean: false });
      first.send({ cmd: 'publish', topic: 'across', payload: 'before the break', qos: 2, messageId: 77, retain: false, dup: false });
      await first.next('pubrec');
      await first.close();

      const { client: second, connack } = await clients.raw({ clientId: 'pub', clean: false });
      expect(connack.sessionPresent).toBe(true);
      second.send({ cmd: 'publish', topic: 'across', payload: 'before the break', qos: 2, messageId: 77, retain: false, dup: true });
      expect((await second.next('pubrec')).messageId).toBe(77);
      second.send({ cmd: 'pubrel', messageId: 77 });
      expect((await second.next('pubcomp')).messageId).toBe(77);
      second.send({ cmd: 'publish', topic: 'across', payload: 'marker', qos: 2, messageId: 78, retain: false, dup: false });
      await second.next('pubrec');
      const received = await receiveAndAck(sub, 2);
      expect(received.map(summary)).toEqual(['across=before the break', 'across=marker']);
    });

    it('answers PUBREL for an unknown packet id with PUBCOMP [MQTT-4.3.3-2]', async () => {
      const client = await clients.rawAccepted({ clientId: 'stray' });
      client.send({ cmd: 'pubrel', messageId: 1234 });
      expect((await client.next('pubcomp')).messageId).toBe(1234);
    });

    it('sends PUBACKs in the order of the PUBLISHes, whatever each one had to store [MQTT-4.6.0-2]', async () => {
      // Topics whose PUBLISHes cost different work: a queue write for an offline persistent
      // session, a memory queue for a clean one, a retained write, or nothing at all.
      const durable = await clients.rawAccepted({ clientId: 'durable', clean: false });
      await subscribe(durable, 1, [{ topic: 'acks/durable', qos: 1 }]);
      await durable.disconnect();
      const volatile = await clients.rawAccepted({ clientId: 'volatile' });
      await subscribe(volatile, 1, [{ topic: 'acks/volatile', qos: 0 }]);
      const topics = ['acks/durable', 'acks/nobody', 'acks/volatile', 'acks/retained', 'acks/nobody', 'acks/durable', 'acks/durable'];

      const publisher = await clients.rawAccepted({ clientId: 'pub' });
      const count = 50;
      for (let id = 1; id <= count; id++) {
        const topic = topics[id % topics.length]!;
        publisher.send({ cmd: 'publish', topic, payload: String(id), qos: 1, messageId: id, retain: topic === 'acks/retained', dup: false });
      }
      const pubacks = await publisher.take('puback', count);
      expect(pubacks.map((puback) => puback.messageId)).toEqual(Array.from({ length: count }, (_, index) => index + 1));
    });

    it('sends PUBACKs and PUBRECs of interleaved QoS 1 and QoS 2 PUBLISHes in PUBLISH order [MQTT-4.6.0-2] [MQTT-4.6.0-3]', async () => {
      const durable = await clients.rawAccepted({ clientId: 'durable', clean: false });
      await subscribe(durable, 1, [{ topic: 'mixed/durable', qos: 2 }]);
      await durable.disconnect();
      const publisher = await clients.rawAccepted({ clientId: 'pub', clean: false });
      const arrivals = recordArrivals(publisher);
      const expected: string[] = [];
      for (let id = 1; id <= 40; id++) {
        const qos = id % 3 === 0 ? 1 : 2;
        const topic = id % 2 === 0 ? 'mixed/durable' : 'mixed/nobody';
        publisher.send({ cmd: 'publish', topic, payload: String(id), qos, messageId: id, retain: false, dup: false });
        expected.push(`${qos === 1 ? 'puback' : 'pubrec'}:${id}`);
      }
      const qos1 = expected.filter((ack) => ack.startsWith('puback')).length;
      await publisher.take('puback', qos1);
      await publisher.take('pubrec', expected.length - qos1);
      expect(arrivals).toEqual(expected);
    });
  });

  describe('outbound (broker → subscriber)', () => {
    it('completes QoS 2 with the subscriber: PUBLISH → PUBREC → PUBREL → PUBCOMP, then holds nothing [MQTT-4.3.3-1]', async () => {
      const sub = await clients.rawAccepted({ clientId: 'sub', clean: false });
      await subscribe(sub, 1, [{ topic: 'out/2', qos: 2 }]);
      const publisher = await clients.mqtt({ clientId: 'pub' });
      await publisher.publishAsync('out/2', 'exactly once', { qos: 2 });

      const publish = await sub.next('publish');
      expect(publish.qos).toBe(2);
      expect(publish.dup).toBe(false);
      expect(publish.messageId).toBeGreaterThan(0);
      sub.send({ cmd: 'pubrec', messageId: publish.messageId! });
      expect((await sub.next('pubrel')).messageId).toBe(publish.messageId);
      sub.send({ cmd: 'pubcomp', messageId: publish.messageId! });
      await sub.disconnect();

      // Completed: a resumed session re-sends neither the PUBLISH nor the PUBREL.
      const { client: again, connack } = await clients.raw({ clientId: 'sub', clean: false });
      expect(connack.sessionPresent).toBe(true);
      await again.roundTrip();
      expect(again.received).toEqual([]);
    });

    it('re-sends unacknowledged QoS 1 PUBLISHes on reconnect with DUP=1, the same packet ids, in order [MQTT-4.4.0-1] [MQTT-3.3.1-1] [MQTT-4.6.0-1]', async () => {
      const sub = await clients.rawAccepted({ clientId: 'sub', clean: false });
      await subscribe(sub, 1, [{ topic: 'withheld', qos: 1 }]);
      const publisher = await clients.rawAccepted({ clientId: 'pub' });
      for (const [index, payload] of ['a', 'b', 'c'].entries()) await publishQos1(publisher, index + 1, 'withheld', payload);
      const original = await sub.take('publish', 3);
      expect(original.map((publish) => [publish.payload.toString(), publish.dup])).toEqual([
        ['a', false],
        ['b', false],
        ['c', false],
      ]);
      await sub.close(); // no PUBACK, no DISCONNECT

      const { client: again, connack } = await clients.raw({ clientId: 'sub', clean: false });
      expect(connack.sessionPresent).toBe(true);
      const redelivered = await again.take('publish', 3);
      expect(redelivered.map((publish) => [publish.payload.toString(), publish.messageId, publish.dup, publish.qos])).toEqual(
        original.map((publish) => [publish.payload.toString(), publish.messageId, true, 1]),
      );
      for (const publish of redelivered) again.send({ cmd: 'puback', messageId: publish.messageId! });
      await again.disconnect();

      // Acknowledged now: nothing is re-sent on the next resume.
      const third = await clients.rawAccepted({ clientId: 'sub', clean: false });
      await third.roundTrip();
      expect(queuedPublishes(third)).toEqual([]);
    });

    it('re-sends a QoS 2 PUBLISH without PUBREC on reconnect with DUP=1 and the same packet id [MQTT-4.4.0-1] [MQTT-3.3.1-1]', async () => {
      const sub = await clients.rawAccepted({ clientId: 'sub', clean: false });
      await subscribe(sub, 1, [{ topic: 'withheld2', qos: 2 }]);
      const publisher = await clients.mqtt({ clientId: 'pub' });
      await publisher.publishAsync('withheld2', 'unreceived', { qos: 2 });
      const original = await sub.next('publish');
      await sub.close();

      const again = await clients.rawAccepted({ clientId: 'sub', clean: false });
      const redelivered = await again.next('publish');
      expect([redelivered.messageId, redelivered.dup, redelivered.qos, redelivered.payload.toString()]).toEqual([original.messageId, true, 2, 'unreceived']);
    });

    it.each([
      { qos: 1 as const, wrong: 'pubrec' as const },
      { qos: 1 as const, wrong: 'pubcomp' as const },
      { qos: 2 as const, wrong: 'puback' as const },
    ])(
      'closes the connection on $wrong for a QoS $qos message in flight, a protocol violation; the message stays queued and comes again with DUP=1 [MQTT-4.8.0-1]',
      async ({ qos, wrong }) => {
        const sub = await clients.rawAccepted({ clientId: 'sub', clean: false });
        await subscribe(sub, 1, [{ topic: 'wrong-ack', qos }]);
        const publisher = await clients.mqtt({ clientId: 'pub' });
        await publisher.publishAsync('wrong-ack', 'mismatched', { qos });
        const original = await sub.next('publish');
        sub.send({ cmd: wrong, messageId: original.messageId! });
        await sub.closed;

        const again = await clients.rawAccepted({ clientId: 'sub', clean: false });
        const redelivered = await again.next('publish');
        expect([redelivered.messageId, redelivered.dup, redelivered.qos, redelivered.payload.toString()]).toEqual([original.messageId, true, qos, 'mismatched']);
      },
    );

    it('re-sends PUBREL, not PUBLISH, on reconnect after PUBREC without PUBCOMP [MQTT-4.4.0-1]', async () => {
      const sub = await clients.rawAccepted({ clientId: 'sub', clean: false });
      await subscribe(sub, 1, [{ topic: 'half', qos: 2 }]);
      const publisher = await clients.mqtt({ clientId: 'pub' });
      await publisher.publishAsync('half', 'received', { qos: 2 });
      const publish = await sub.next('publish');
      sub.send({ cmd: 'pubrec', messageId: publish.messageId! });
      expect((await sub.next('pubrel')).messageId).toBe(publish.messageId);
      await sub.close(); // no PUBCOMP

      const again = await clients.rawAccepted({ clientId: 'sub', clean: false });
      // Re-sends go out while the CONNECT is handled, so they are all here after one round trip.
      await again.roundTrip();
      expect(again.received.map((packet) => `${packet.cmd}:${'messageId' in packet ? packet.messageId : ''}`)).toEqual([`pubrel:${publish.messageId}`]);
      again.send({ cmd: 'pubcomp', messageId: publish.messageId! });
      await again.disconnect();

      const third = await clients.rawAccepted({ clientId: 'sub', clean: false });
      await third.roundTrip();
      expect(third.received).toEqual([]);
    });
  });

  describe.each([
    { window: 'read window of 3 messages', limits: { readWindow: 3 } },
    // Payloads here are 1-2 bytes: a window of 3-5 messages, set by bytes alone.
    { window: 'read window of 5 payload bytes', limits: { readWindowBytes: 5 } },
  ])('flow control (small maxInflight and $window)', ({ limits }) => {
    let limited: RunningBroker;
    let local: Clients;
    beforeEach(async () => {
      limited = await startBroker({ maxInflight: 2, ...limits });
      local = new Clients(limited.port);
    });
    afterEach(async () => {
      await local.closeAll();
      await limited.stop();
    });

    it('keeps at most maxInflight QoS 1 messages unacknowledged per subscriber, sending the next on PUBACK', async () => {
      const sub = await local.rawAccepted({ clientId: 'slow' });
      await subscribe(sub, 1, [{ topic: 'inflight', qos: 1 }]);
      const publisher = await local.rawAccepted({ clientId: 'pub' });
      for (let index = 0; index < 5; index++) await publishQos1(publisher, index + 1, 'inflight', String(index));

      const inFlight = await sub.take('publish', 2);
      expect(inFlight.map((publish) => publish.payload.toString())).toEqual(['0', '1']);
      // Distinct non-zero packet ids for messages in flight together [MQTT-2.3.1-1].
      expect(new Set(inFlight.map((publish) => publish.messageId)).size).toBe(2);
      expect(inFlight.every((publish) => publish.messageId! > 0)).toBe(true);
      // All 5 were routed before their PUBACKs, so a broker ignoring the limit has sent them by now.
      await sub.roundTrip();
      expect(queuedPublishes(sub)).toEqual([]);

      sub.send({ cmd: 'puback', messageId: inFlight[0]!.messageId! });
      expect((await sub.next('publish')).payload.toString()).toBe('2');
      await sub.roundTrip();
      expect(queuedPublishes(sub)).toEqual([]);

      sub.send({ cmd: 'puback', messageId: inFlight[1]!.messageId! });
      const rest = await receiveAndAck(sub, 2);
      expect(rest.map((publish) => publish.payload.toString())).toEqual(['3', '4']);
    });

    it.each([
      { kind: 'clean', clean: true },
      { kind: 'persistent', clean: false },
    ])('delivers a live stream longer than the read window in order to a $kind subscriber [MQTT-4.6.0-6]', async ({ clean }) => {
      const sub = await local.rawAccepted({ clientId: 'reader', clean });
      await subscribe(sub, 1, [{ topic: 'stream', qos: 1 }]);
      const publisher = await local.rawAccepted({ clientId: 'pub' });
      const count = 60;
      for (let index = 0; index < count; index++) {
        publisher.send({ cmd: 'publish', topic: 'stream', payload: String(index), qos: 1, messageId: index + 1, retain: false, dup: false });
      }
      const received = await receiveAndAck(sub, count);
      expect(received.map((publish) => publish.payload.toString())).toEqual(Array.from({ length: count }, (_, index) => String(index)));
    });

    it('delivers a stored backlog longer than the read window in order after a reconnect, in-flight messages first [MQTT-4.6.0-1] [MQTT-4.6.0-6]', async () => {
      const sub = await local.rawAccepted({ clientId: 'backlog', clean: false });
      await subscribe(sub, 1, [{ topic: 'backlog', qos: 1 }]);
      await sub.disconnect();
      const publisher = await local.rawAccepted({ clientId: 'pub' });
      const count = 12;
      for (let index = 0; index < count; index++) await publishQos1(publisher, index + 1, 'backlog', String(index));

      const first = await local.rawAccepted({ clientId: 'backlog', clean: false });
      const unacknowledged = await first.take('publish', 2);
      expect(unacknowledged.map((publish) => publish.payload.toString())).toEqual(['0', '1']);
      await first.close();

      const second = await local.rawAccepted({ clientId: 'backlog', clean: false });
      const received = await receiveAndAck(second, count);
      expect(received.map((publish) => `${publish.payload.toString()}${publish.dup ? ' dup' : ''}`)).toEqual([
        '0 dup',
        '1 dup',
        ...Array.from({ length: count - 2 }, (_, index) => String(index + 2)),
      ]);
      expect(received.slice(0, 2).map((publish) => publish.messageId)).toEqual(unacknowledged.map((publish) => publish.messageId));
      await second.disconnect();

      const third = await local.rawAccepted({ clientId: 'backlog', clean: false });
      await third.roundTrip();
      expect(queuedPublishes(third)).toEqual([]);
    });
  });
});
