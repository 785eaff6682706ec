import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { MqttClient } from 'mqtt';
import type mqttPacket from 'mqtt-packet';
import { startBroker, type RunningBroker } from '../helpers/in-process.js';
import type { RawClient } from '../helpers/raw-client.js';
import { answeredOrClosed, Clients, MessageQueue, publishQos1, receiveAndAck, subscribe, summary } from '../helpers/wait.js';

describe('retained messages and wills', () => {
  let running: RunningBroker;
  let clients: Clients;
  let publisher: MqttClient;
  beforeEach(async () => {
    running = await startBroker();
    clients = new Clients(running.port);
    publisher = await clients.mqtt({ clientId: 'publisher' });
  });
  afterEach(async () => {
    await clients.closeAll();
    await running.stop();
  });

  /**
   * A raw client that subscribes, waits until everything the SUBSCRIBE caused (retained messages
   * included) is queued for it, then has `publisher` send a non-retained marker on `markerTopic`.
   * The PUBLISHes it received, up to and including the marker, are returned: what the
   * subscription delivered and nothing that might have come later.
   */
  async function subscribeUntilMarker(clientId: string, filter: string, qos: 0 | 1 | 2, markerTopic: string) {
    const client = await clients.rawAccepted({ clientId });
    await subscribe(client, 1, [{ topic: filter, qos }]);
    await client.roundTrip();
    await publisher.publishAsync(markerTopic, 'marker', { qos: 1 });
    const received: mqttPacket.IPublishPacket[] = [];
    while (received.at(-1)?.payload.toString() !== 'marker') received.push(...(await receiveAndAck(client, 1)));
    return { client, received };
  }

  /**
   * Publishes a retained message and returns once the broker has stored it. QoS 0 has no ack, so
   * a QoS 1 PUBLISH on another topic follows: the broker acknowledges a connection's PUBLISHes in
   * order, so its PUBACK means the retained one is handled too.
   */
  async function retain(topic: string, payload: string, qos: 0 | 1 | 2): Promise<void> {
    await publisher.publishAsync(topic, payload, { qos, retain: true });
    if (qos === 0) await publisher.publishAsync('barrier', '', { qos: 1 });
  }

  describe('retained', () => {
    it.each(['ret/a', 'ret/+', 'ret/#', '#', '+/a'])(
      'sends the retained message with RETAIN=1 to a new subscription on %j [MQTT-3.3.1-8]',
      async (filter) => {
        await publisher.publishAsync('ret/a', 'kept', { qos: 1, retain: true });
        const { received } = await subscribeUntilMarker('late', filter, 1, 'ret/a');
        expect(received.map((publish) => `${summary(publish)} retain=${publish.retain}`)).toEqual(['ret/a=kept retain=true', 'ret/a=marker retain=false']);
      },
    );

    it('sends every matching retained message to a wildcard subscription', async () => {
      await publisher.publishAsync('many/a', 'A', { qos: 1, retain: true });
      await retain('many/b', 'B', 0);
      await publisher.publishAsync('many/c/d', 'not matched', { qos: 1, retain: true });
      const { received } = await subscribeUntilMarker('late', 'many/+', 1, 'many/z');
      const retained = received.filter((publish) => publish.retain);
      expect(retained.map(summary).sort()).toEqual(['many/a=A', 'many/b=B']);
      expect(received).toHaveLength(3);
    });

    it('keeps only the newest retained message of a topic [MQTT-3.3.1-5]', async () => {
      await publisher.publishAsync('ver', 'v1', { qos: 1, retain: true });
      await publisher.publishAsync('ver', 'v2', { qos: 1, retain: true });
      const { received } = await subscribeUntilMarker('late', 'ver', 1, 'ver');
      expect(received.map(summary)).toEqual(['ver=v2', 'ver=marker']);
    });

    it('clears the retained message on an empty retained PUBLISH, which existing subscribers still receive [MQTT-3.3.1-10] [MQTT-3.3.1-11]', async () => {
      await publisher.publishAsync('clr', 'to be cleared', { qos: 1, retain: true });
      const existing = await clients.mqtt({ clientId: 'existing' });
      const messages = new MessageQueue(existing);
      await existing.subscribeAsync('clr', { qos: 1 });
      expect((await messages.next()).retain).toBe(true);

      await publisher.publishAsync('clr', '', { qos: 1, retain: true });
      const cleared = await messages.next();
      expect(cleared.topic).toBe('clr');
      expect(cleared.payload.length).toBe(0);
      expect(cleared.retain).toBe(false);

      const { received } = await subscribeUntilMarker('late', 'clr', 1, 'clr');
      expect(received.map(summary)).toEqual(['clr=marker']);
    });

    it.each([
      { retainedQos: 2, granted: 1, delivered: 1 },
      { retainedQos: 1, granted: 2, delivered: 1 },
      { retainedQos: 0, granted: 2, delivered: 0 },
      { retainedQos: 2, granted: 2, delivered: 2 },
      { retainedQos: 2, granted: 0, delivered: 0 },
    ] as const)(
      'sends a retained message at the lower of its QoS and the granted QoS: %o [MQTT-3.8.4-6]',
      async ({ retainedQos, granted, delivered }) => {
        await retain('rq', 'retained', retainedQos);
        const { received } = await subscribeUntilMarker('late', 'rq', granted, 'rq');
        const retained = received.find((publish) => publish.retain);
        expect(retained && `${summary(retained)} at ${retained.qos}`).toBe(`rq=retained at ${delivered}`);
      },
    );

    it('re-sends retained messages when a subscription is replaced [MQTT-3.8.4-3]', async () => {
      await publisher.publishAsync('again', 'retained', { qos: 1, retain: true });
      const sub = await clients.rawAccepted({ clientId: 'sub' });
      await subscribe(sub, 1, [{ topic: 'again', qos: 1 }]);
      const [first] = await receiveAndAck(sub, 1);
      expect(first!.retain).toBe(true);
      await subscribe(sub, 2, [{ topic: 'again', qos: 1 }]);
      const [second] = await receiveAndAck(sub, 1);
      expect(`${summary(second!)} retain=${second!.retain}`).toBe('again=retained retain=true');
    });

    // $SYS itself belongs to the broker (a client's PUBLISH there is dropped: sys-topics.test.ts).
    it("does not send a retained '$' topic to a '#' subscription, but to '$app/#' [MQTT-4.7.2-1]", async () => {
      await publisher.publishAsync('$app/retained', 'system', { qos: 1, retain: true });
      const all = await subscribeUntilMarker('all', '#', 1, 'plain');
      expect(all.received.map(summary)).toEqual(['plain=marker']);
      const system = await subscribeUntilMarker('system', '$app/#', 1, '$app/marker');
      expect(system.received.map(summary)).toEqual(['$app/retained=system', '$app/marker=marker']);
    });
  });

  describe('will', () => {
    /** A raw client with a will on `topic`. */
    function withWill(clientId: string, topic: string, options: { qos?: 0 | 1 | 2; retain?: boolean } = {}): Promise<RawClient> {
      return clients.rawAccepted({
        clientId,
        will: { topic, payload: Buffer.from(`${clientId} is gone`), qos: options.qos ?? 1, retain: options.retain ?? false },
      });
    }

    /** A raw subscriber already subscribed to `filter` at QoS 2. */
    async function watcher(filter: string): Promise<RawClient> {
      const client = await clients.rawAccepted({ clientId: 'watcher' });
      await subscribe(client, 1, [{ topic: filter, qos: 2 }]);
      return client;
    }

    it.each([0, 1, 2] as const)('is published at its QoS %i when the connection drops without DISCONNECT [MQTT-3.1.2-8]', async (qos) => {
      const watching = await watcher('will/#');
      const dying = await withWill('dying', 'will/dying', { qos });
      await dying.close();
      const [will] = await receiveAndAck(watching, 1);
      expect(`${summary(will!)} at ${will!.qos} retain=${will!.retain}`).toBe(`will/dying=dying is gone at ${qos} retain=false`);
    });

    it('is published as a non-retained message when Will Retain is 0 [MQTT-3.1.2-16]', async () => {
      const watching = await watcher('will/#');
      const dying = await withWill('dying', 'will/plain', { retain: false });
      await dying.close();
      await receiveAndAck(watching, 1);
      const { received } = await subscribeUntilMarker('late', 'will/plain', 1, 'will/plain');
      expect(received.map(summary)).toEqual(['will/plain=marker']);
    });

    it('is published as a retained message when Will Retain is 1 [MQTT-3.1.2-17]', async () => {
      const watching = await watcher('will/#');
      const dying = await withWill('dying', 'will/retained', { retain: true });
      await dying.close();
      const [live] = await receiveAndAck(watching, 1);
      expect(live!.retain).toBe(false);
      const { received } = await subscribeUntilMarker('late', 'will/retained', 1, 'will/retained');
      expect(received.map((publish) => `${summary(publish)} retain=${publish.retain}`)).toEqual([
        'will/retained=dying is gone retain=true',
        'will/retained=marker retain=false',
      ]);
    });

    it('is not published after DISCONNECT [MQTT-3.14.4-3]', async () => {
      const watching = await watcher('will/#');
      const leaving = await withWill('leaving', 'will/leaving');
      await leaving.disconnect();
      // A will would be routed when the connection closes, before the marker is even sent.
      await publisher.publishAsync('will/leaving', 'marker', { qos: 1 });
      const [first] = await receiveAndAck(watching, 1);
      expect(summary(first!)).toBe('will/leaving=marker');
    });

    it('is published when the broker closes the connection for a protocol violation', async () => {
      const watching = await watcher('will/#');
      const offender = await withWill('offender', 'will/offender');
      offender.send({ cmd: 'publish', topic: 'no/+/wildcards', payload: 'x', qos: 0, retain: false, dup: false });
      expect(await answeredOrClosed(offender)).toBe('closed');
      const [will] = await receiveAndAck(watching, 1);
      expect(summary(will!)).toBe('will/offender=offender is gone');
    });

    it('is published when the broker closes the connection for a malformed packet', async () => {
      const watching = await watcher('will/#');
      const offender = await withWill('garbled', 'will/garbled');
      offender.sendBytes([0x36, 0x00]); // PUBLISH with both QoS bits set
      expect(await answeredOrClosed(offender)).toBe('closed');
      const [will] = await receiveAndAck(watching, 1);
      expect(summary(will!)).toBe('will/garbled=garbled is gone');
    });

    it('is published once, from a persistent session, and not again when the session resumes', async () => {
      const watching = await watcher('will/#');
      const first = await clients.rawAccepted({
        clientId: 'durable',
        clean: false,
        will: { topic: 'will/durable', payload: Buffer.from('first connection'), qos: 1, retain: false },
      });
      await first.close();
      const [will] = await receiveAndAck(watching, 1);
      expect(summary(will!)).toBe('will/durable=first connection');
      // The next connection has no will; leaving it gracefully must not bring the old one back.
      const second = await clients.rawAccepted({ clientId: 'durable', clean: false });
      await second.disconnect();
      const helper = await clients.rawAccepted({ clientId: 'helper' });
      await publishQos1(helper, 1, 'will/durable', 'marker');
      const [next] = await receiveAndAck(watching, 1);
      expect(summary(next!)).toBe('will/durable=marker');
    });
  });
});
