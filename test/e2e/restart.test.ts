/**
 * Restart: the broker runs as a child process (bin/broker.js → dist/), is stopped with SIGTERM
 * (exit code 0 asserted) and started again on the same data directory. Everything a CleanSession=0
 * session holds must come back: subscriptions, queued messages, outbound messages in flight (QoS1
 * unacknowledged, QoS2 PUBREC'd), inbound QoS2 packet ids awaiting PUBREL, and retained messages.
 *
 * No sleeps and no timed assertions: absence is shown by publishing a marker afterwards and
 * checking that the marker is the next (and only) thing to arrive.
 */
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import mqtt from 'mqtt';
import type { IConnackPacket, IPublishPacket } from 'mqtt-packet';
import type { BrokerProcess } from '../helpers/broker-process.js';
import {
  drainUntil,
  range,
  subscribe,
  summary,
  useBrokerProcesses,
  type Outgoing,
} from '../helpers/process-harness.js';
import { acknowledge, receiveAndAck } from '../helpers/wait.js';

const { onTeardown, freshDataDir, startBroker, connectRaw, publishAll, expectMarkerNext } = useBrokerProcesses('broker-restart-');

/** SIGTERM, which must end the process with exit code 0, then a new broker process on the same directory. */
async function restart(broker: BrokerProcess, dataDir: string): Promise<BrokerProcess> {
  const { code, signal } = await broker.stop();
  expect(signal, broker.output).toBeNull();
  expect(code, broker.output).toBe(0);
  return startBroker(dataDir);
}

function mqttUrl(broker: BrokerProcess): string {
  return `mqtt://127.0.0.1:${broker.port}`;
}

/** An MQTT.js client plus a queue of the messages it received, attached before CONNECT goes out. */
function mqttClient(broker: BrokerProcess, clientId: string, clean: boolean) {
  const client = mqtt.connect(mqttUrl(broker), { clientId, clean, reconnectPeriod: 0, resubscribe: false });
  onTeardown(() => client.end(true));
  const messages: IPublishPacket[] = [];
  let wake: (() => void) | undefined;
  client.on('message', (_topic, _payload, packet) => {
    messages.push(packet);
    wake?.();
  });
  const connack = new Promise<IConnackPacket>((resolve, reject) => {
    client.once('connect', resolve);
    client.once('error', reject);
  });
  return {
    client,
    connack,
    async nextMessage(): Promise<IPublishPacket> {
      while (messages.length === 0) await new Promise<void>((resolve) => (wake = resolve));
      return messages.shift()!;
    },
  };
}

describe('restart (SIGTERM, then a new broker process on the same data directory)', () => {
  it('restores the subscriptions of a CleanSession=0 session: reconnecting without SUBSCRIBE gets messages, session present = 1 [MQTT-3.1.2-4] [MQTT-3.2.2-2]', async () => {
    const dataDir = freshDataDir();
    let broker = await startBroker(dataDir);

    const first = mqttClient(broker, 'restore-subs', false);
    expect((await first.connack).sessionPresent).toBe(false);
    const granted = await first.client.subscribeAsync({
      'subs/queued/+': { qos: 1 },
      'subs/live/#': { qos: 2 },
      'subs/zero': { qos: 0 },
    });
    expect(granted.map(({ topic, qos }) => [topic, qos])).toEqual([
      ['subs/queued/+', 1],
      ['subs/live/#', 2],
      ['subs/zero', 0],
    ]);
    await first.client.endAsync();

    broker = await restart(broker, dataDir);

    // Published by another client while the subscriber is offline: only a restored subscription
    // can route it into the session's queue [MQTT-3.1.2-5].
    const publisher = await mqtt.connectAsync(mqttUrl(broker), { clientId: 'restore-subs-pub', reconnectPeriod: 0 });
    onTeardown(() => publisher.end(true));
    await publisher.publishAsync('subs/queued/a', 'while offline', { qos: 2 });

    const second = mqttClient(broker, 'restore-subs', false);
    expect((await second.connack).sessionPresent).toBe(true);
    // Granted QoS 1 is restored too: a QoS 2 message goes out at QoS 1 [MQTT-3.8.4-6].
    expect(summary(await second.nextMessage())).toEqual({ topic: 'subs/queued/a', payload: 'while offline', qos: 1 });

    await publisher.publishAsync('subs/live/x/y', 'while online', { qos: 2 });
    expect(summary(await second.nextMessage())).toEqual({ topic: 'subs/live/x/y', payload: 'while online', qos: 2 });
    await publisher.publishAsync('subs/zero', 'granted zero', { qos: 1 });
    expect(summary(await second.nextMessage())).toEqual({ topic: 'subs/zero', payload: 'granted zero', qos: 0 });

    await publisher.endAsync();
    await second.client.endAsync();
  });

  it('delivers every QoS1/QoS2 message queued while the client was offline, in publish order, session present = 1 [MQTT-3.1.2-5] [MQTT-4.6.0-6]', async () => {
    const dataDir = freshDataDir();
    let broker = await startBroker(dataDir);

    const { client: before } = await connectRaw(broker, 'offline-queue', false);
    await subscribe(before, [['queue/#', 2]]);
    await before.disconnect();

    // 50 QoS1 and 10 QoS2 messages, interleaved, on two topics.
    const messages: Outgoing[] = Array.from({ length: 60 }, (_, index) => ({
      topic: index % 2 === 0 ? 'queue/even' : 'queue/odd',
      payload: `message ${index}`,
      qos: index % 6 === 5 ? 2 : 1,
    }));
    expect(messages.filter(({ qos }) => qos === 1)).toHaveLength(50);
    await publishAll(broker, messages);

    broker = await restart(broker, dataDir);

    const { client: after, connack } = await connectRaw(broker, 'offline-queue', false);
    expect(connack.sessionPresent).toBe(true);
    const received = await receiveAndAck(after, messages.length);
    expect(received.map(summary)).toEqual(messages.map(({ topic, payload, qos }) => ({ topic, payload, qos })));
    expect(received.every((publish) => !publish.dup && !publish.retain)).toBe(true);
    await expectMarkerNext(broker, after, 'queue/marker');
  });

  it('a subscriber reconnecting after the restart (and again, twice) while a publisher keeps publishing receives every message, in order [MQTT-3.1.2-5] [MQTT-4.6.0-6]', async () => {
    // On reconnect the session reads its queue back from the store, and reads again once that
    // first window is sent, while new messages for it keep being stored: none may be skipped.
    // Each cycle: GAP messages are published while the subscriber is offline, it reconnects and
    // drains while STREAM more are published, then everything up to a marker.
    const dataDir = freshDataDir();
    let broker = await startBroker(dataDir);
    const { client: before } = await connectRaw(broker, 'busy-sub', false);
    await subscribe(before, [['busy/#', 1]]);
    await before.disconnect();
    const BACKLOG = 300;
    await publishAll(broker, range(BACKLOG).map((index) => ({ topic: 'busy/data', payload: `backlog ${index}`, qos: 1 })));

    broker = await restart(broker, dataDir);

    const CYCLES = 3;
    const GAP = 300;
    const STREAM = 900;
    const WINDOW = 32; // PUBLISHes the publisher keeps unacknowledged
    const { client: publisher } = await connectRaw(broker, 'busy-pub', true);
    let sent = 0;
    /** Publishes `count` messages, WINDOW at a time; calls `onAcked` with the running PUBACK count. */
    const stream = async (count: number, onAcked: (acked: number) => void) => {
      let queued = 0;
      let acked = 0;
      while (acked < count) {
        while (queued < count && queued - acked < WINDOW) {
          publisher.send({ cmd: 'publish', topic: 'busy/data', payload: Buffer.from(`live ${sent}`), qos: 1, dup: false, retain: false, messageId: (sent % 65535) + 1 });
          sent++;
          queued++;
        }
        await publisher.next('puback');
        onAcked(++acked);
      }
    };

    const received: IPublishPacket[] = [];
    for (let cycle = 1; cycle <= CYCLES; cycle++) {
      let reconnect!: () => void;
      const gapPublished = new Promise<void>((resolve) => (reconnect = resolve));
      const streaming = stream(GAP + STREAM, (acked) => acked === GAP && reconnect());
      await gapPublished;
      const { client: subscriber, connack } = await connectRaw(broker, 'busy-sub', false);
      expect(connack.sessionPresent).toBe(true);
      const draining = drainUntil(subscriber, `busy/marker/${cycle}`);
      await streaming;
      // Two markers: should the first one be skipped too, the second still ends the cycle.
      await publishAll(broker, [
        { topic: `busy/marker/${cycle}`, payload: 'end', qos: 1 },
        { topic: `busy/marker/${cycle}`, payload: 'end, again', qos: 1 },
      ]);
      received.push(...(await draining).filter((publish) => publish.topic === 'busy/data'));
      await subscriber.disconnect();
    }

    const payloads = received.map((publish) => publish.payload.toString());
    const expected = [...range(BACKLOG).map((index) => `backlog ${index}`), ...range(sent).map((index) => `live ${index}`)];
    const missing = expected.filter((payload) => !payloads.includes(payload));
    expect(missing, `${missing.length} of ${expected.length} messages were never delivered`).toEqual([]);
    const at = payloads.findIndex((payload, index) => payload !== expected[index]);
    expect(at, `delivery #${at} out of publish order: got ${payloads[at]}, expected ${expected[at]}`).toBe(-1);
    expect(payloads, 'every message once, in publish order').toEqual(expected);
  });

  it('re-sends unacknowledged outbound QoS1 PUBLISHes with DUP=1, their original packet ids, in their original order [MQTT-4.4.0-1] [MQTT-3.3.1-1] [MQTT-4.6.0-1]', async () => {
    const dataDir = freshDataDir();
    let broker = await startBroker(dataDir);

    const { client: before } = await connectRaw(broker, 'inflight-qos1', false);
    await subscribe(before, [['inflight1/#', 1]]);
    const messages: Outgoing[] = [0, 1, 2].map((index) => ({ topic: `inflight1/${index}`, payload: `unacked ${index}`, qos: 1 }));
    await publishAll(broker, messages);
    // Received and deliberately not acknowledged.
    const original = await before.take('publish', 3);
    expect(original.map(summary)).toEqual(messages.map(({ topic, payload, qos }) => ({ topic, payload, qos })));
    expect(original.every((publish) => !publish.dup)).toBe(true);

    broker = await restart(broker, dataDir);

    const { client: after, connack } = await connectRaw(broker, 'inflight-qos1', false);
    expect(connack.sessionPresent).toBe(true);
    const resent = await after.take('publish', 3);
    expect(resent.map((publish) => ({ ...summary(publish), dup: publish.dup, messageId: publish.messageId }))).toEqual(
      original.map((publish) => ({ ...summary(publish), dup: true, messageId: publish.messageId })),
    );
    for (const publish of resent) await acknowledge(after, publish);
    await after.roundTrip();
    await expectMarkerNext(broker, after, 'inflight1/marker');
  });

  it('after PUBREC, re-sends PUBREL (not the PUBLISH) with the original packet id; after PUBCOMP nothing more, across a second restart too [MQTT-4.4.0-1] [MQTT-4.3.3-1]', async () => {
    const dataDir = freshDataDir();
    let broker = await startBroker(dataDir);

    const { client: before } = await connectRaw(broker, 'inflight-qos2', false);
    await subscribe(before, [['inflight2/#', 2]]);
    await publishAll(broker, [{ topic: 'inflight2/x', payload: 'exactly once', qos: 2 }]);
    const publish = await before.next('publish');
    expect(summary(publish)).toEqual({ topic: 'inflight2/x', payload: 'exactly once', qos: 2 });
    const packetId = publish.messageId!;
    before.send({ cmd: 'pubrec', messageId: packetId });
    // PUBREL only goes out once the released state is stored; PUBCOMP is withheld.
    expect((await before.next('pubrel')).messageId).toBe(packetId);

    broker = await restart(broker, dataDir);

    const { client: after, connack } = await connectRaw(broker, 'inflight-qos2', false);
    expect(connack.sessionPresent).toBe(true);
    expect((await after.next('pubrel')).messageId).toBe(packetId);
    after.send({ cmd: 'pubcomp', messageId: packetId });
    await after.roundTrip();
    expect(after.received.filter((packet) => packet.cmd === 'publish')).toEqual([]);
    await expectMarkerNext(broker, after, 'inflight2/marker');
    await after.disconnect();

    // The completion is stored as well: another restart re-sends neither the PUBREL nor the PUBLISH.
    broker = await restart(broker, dataDir);
    const { client: third, connack: thirdConnack } = await connectRaw(broker, 'inflight-qos2', false);
    expect(thirdConnack.sessionPresent).toBe(true);
    await expectMarkerNext(broker, third, 'inflight2/marker');
  });

  describe('inbound QoS2 received (PUBREC sent) but not released before the restart', () => {
    async function setUp(): Promise<{ dataDir: string; broker: BrokerProcess }> {
      const dataDir = freshDataDir();
      const broker = await startBroker(dataDir);
      const { client: subscriber } = await connectRaw(broker, 'inbound-sub', false);
      await subscribe(subscriber, [['inbound/#', 2]]);
      await subscriber.disconnect();

      const { client: publisher } = await connectRaw(broker, 'inbound-pub', false);
      publisher.send({ cmd: 'publish', topic: 'inbound/x', payload: Buffer.from('once'), qos: 2, dup: false, retain: false, messageId: 42 });
      expect((await publisher.next('pubrec')).messageId).toBe(42);
      // No PUBREL before the restart.
      return { dataDir, broker };
    }

    /** The persistent subscriber gets the message exactly once, followed by `then`, followed by the marker. */
    async function expectDeliveredOnce(broker: BrokerProcess, then: string[] = []): Promise<void> {
      const { client: subscriber, connack } = await connectRaw(broker, 'inbound-sub', false);
      expect(connack.sessionPresent).toBe(true);
      const expected = ['once', ...then];
      const received = await receiveAndAck(subscriber, expected.length);
      expect(received.map((publish) => publish.payload.toString())).toEqual(expected);
      await expectMarkerNext(broker, subscriber, 'inbound/marker');
    }

    it('PUBREL after the restart gets PUBCOMP; the message is delivered exactly once; the packet id is free again [MQTT-4.3.3-2] [MQTT-4.4.0-1]', async () => {
      const { dataDir, broker: first } = await setUp();
      const broker = await restart(first, dataDir);

      const { client: publisher, connack } = await connectRaw(broker, 'inbound-pub', false);
      expect(connack.sessionPresent).toBe(true);
      publisher.send({ cmd: 'pubrel', messageId: 42 });
      expect((await publisher.next('pubcomp')).messageId).toBe(42);

      // Released: the same packet id now carries a new message, which must be delivered.
      publisher.send({ cmd: 'publish', topic: 'inbound/x', payload: Buffer.from('new message, reused id'), qos: 2, dup: false, retain: false, messageId: 42 });
      expect((await publisher.next('pubrec')).messageId).toBe(42);
      publisher.send({ cmd: 'pubrel', messageId: 42 });
      expect((await publisher.next('pubcomp')).messageId).toBe(42);
      await publisher.disconnect();

      await expectDeliveredOnce(broker, ['new message, reused id']);
    });

    it('a re-sent PUBLISH (DUP=1, same packet id) after the restart gets PUBREC again and is not delivered twice [MQTT-4.3.3-2] [MQTT-3.3.1-1]', async () => {
      const { dataDir, broker: first } = await setUp();
      const broker = await restart(first, dataDir);

      const { client: publisher, connack } = await connectRaw(broker, 'inbound-pub', false);
      expect(connack.sessionPresent).toBe(true);
      publisher.send({ cmd: 'publish', topic: 'inbound/x', payload: Buffer.from('once'), qos: 2, dup: true, retain: false, messageId: 42 });
      expect((await publisher.next('pubrec')).messageId).toBe(42);
      publisher.send({ cmd: 'pubrel', messageId: 42 });
      expect((await publisher.next('pubcomp')).messageId).toBe(42);
      await publisher.disconnect();

      await expectDeliveredOnce(broker);
    });
  });

  it('keeps retained messages, keeps the latest value of a topic, and keeps a cleared retained message cleared [MQTT-3.3.1-5] [MQTT-3.3.1-6] [MQTT-3.3.1-8] [MQTT-3.3.1-10] [MQTT-3.3.1-11]', async () => {
    const dataDir = freshDataDir();
    let broker = await startBroker(dataDir);

    await publishAll(broker, [
      { topic: 'ret/keep', payload: 'kept', qos: 1, retain: true },
      { topic: 'ret/updated', payload: 'v1', qos: 1, retain: true },
      { topic: 'ret/updated', payload: 'v2', qos: 2, retain: true },
      { topic: 'ret/cleared', payload: 'soon gone', qos: 1, retain: true },
      { topic: 'ret/cleared', payload: '', qos: 1, retain: true },
    ]);

    broker = await restart(broker, dataDir);

    const { client: subscriber } = await connectRaw(broker, 'retained-sub', true);
    await subscribe(subscriber, [['ret/#', 2]]);
    // PINGRESP comes after the SUBSCRIBE is fully handled, retained messages included.
    await subscriber.roundTrip();
    const marker = `marker-${randomUUID()}`;
    await publishAll(broker, [{ topic: 'ret/marker', payload: marker, qos: 1 }]);
    const received: IPublishPacket[] = [];
    for (;;) {
      const publish = await subscriber.next('publish');
      received.push(publish);
      await acknowledge(subscriber, publish);
      if (publish.topic === 'ret/marker') break;
    }
    const retained = received
      .slice(0, -1)
      .map((publish) => ({ ...summary(publish), retain: publish.retain }))
      .sort((a, b) => a.topic.localeCompare(b.topic));
    expect(retained).toEqual([
      { topic: 'ret/keep', payload: 'kept', qos: 1, retain: true },
      { topic: 'ret/updated', payload: 'v2', qos: 2, retain: true },
    ]);
    expect(received.at(-1)!.retain).toBe(false);
  });

  it('CleanSession=1 sessions leave nothing behind: no subscription is restored, session present = 0 with clean=1 and with clean=0 [MQTT-3.1.2-6] [MQTT-3.2.2-1] [MQTT-3.2.2-3]', async () => {
    const dataDir = freshDataDir();
    let broker = await startBroker(dataDir);

    const { client: before } = await connectRaw(broker, 'clean-client', true);
    await subscribe(before, [['clean/#', 1]]);
    await before.disconnect();

    broker = await restart(broker, dataDir);
    // Would be queued for the client if its subscription had survived.
    await publishAll(broker, [{ topic: 'clean/topic', payload: 'must not arrive (1)', qos: 1 }]);

    const { client: cleanAgain, connack: cleanConnack } = await connectRaw(broker, 'clean-client', true);
    expect(cleanConnack.sessionPresent).toBe(false);
    await subscribe(cleanAgain, [['marker/clean', 1]]);
    await expectMarkerNext(broker, cleanAgain, 'marker/clean');
    await cleanAgain.disconnect();

    await publishAll(broker, [{ topic: 'clean/topic', payload: 'must not arrive (2)', qos: 1 }]);
    const { client: persistent, connack: persistentConnack } = await connectRaw(broker, 'clean-client', false);
    expect(persistentConnack.sessionPresent).toBe(false);
    await subscribe(persistent, [['marker/clean', 1]]);
    await expectMarkerNext(broker, persistent, 'marker/clean');
  });

  it('a persistent session discarded by a CleanSession=1 CONNECT stays discarded after the restart: no subscriptions, no queue [MQTT-3.1.2-6] [MQTT-3.2.2-3]', async () => {
    const dataDir = freshDataDir();
    let broker = await startBroker(dataDir);
    const { client: persistent } = await connectRaw(broker, 'discarded', false);
    await subscribe(persistent, [['discard/#', 1]]);
    await persistent.disconnect();
    await publishAll(broker, [{ topic: 'discard/queued', payload: 'queued, then discarded', qos: 1 }]);

    const { client: clean, connack: cleanConnack } = await connectRaw(broker, 'discarded', true);
    expect(cleanConnack.sessionPresent).toBe(false);
    await clean.disconnect();

    broker = await restart(broker, dataDir);
    await publishAll(broker, [{ topic: 'discard/new', payload: 'must not be routed', qos: 1 }]);
    const { client: after, connack } = await connectRaw(broker, 'discarded', false);
    expect(connack.sessionPresent).toBe(false);
    await subscribe(after, [['marker/discard', 1]]);
    await expectMarkerNext(broker, after, 'marker/discard');
  });

  it('an UNSUBSCRIBE acknowledged before the restart stays in force; other subscriptions stay [MQTT-3.10.4-2]', async () => {
    const dataDir = freshDataDir();
    let broker = await startBroker(dataDir);

    const { client: before } = await connectRaw(broker, 'unsub-client', false);
    await subscribe(before, [
      ['unsub/gone', 1],
      ['unsub/kept', 1],
    ]);
    before.send({ cmd: 'unsubscribe', messageId: 2, unsubscriptions: ['unsub/gone'] });
    expect((await before.next('unsuback')).messageId).toBe(2);
    await before.disconnect();

    broker = await restart(broker, dataDir);
    await publishAll(broker, [
      { topic: 'unsub/gone', payload: 'must not arrive', qos: 1 },
      { topic: 'unsub/kept', payload: 'arrives', qos: 1 },
    ]);

    const { client: after, connack } = await connectRaw(broker, 'unsub-client', false);
    expect(connack.sessionPresent).toBe(true);
    const [first] = await receiveAndAck(after, 1);
    expect(summary(first!)).toEqual({ topic: 'unsub/kept', payload: 'arrives', qos: 1 });
    await publishAll(broker, [{ topic: 'unsub/gone', payload: 'must not arrive either', qos: 1 }]);
    await expectMarkerNext(broker, after, 'unsub/kept');
  });
});
