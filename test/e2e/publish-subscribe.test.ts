import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { MqttClient } from 'mqtt';
import { startBroker, type RunningBroker } from '../helpers/in-process.js';
import { answeredOrClosed, Clients, MessageQueue, publishQos1, receiveAndAck, subscribe, summary } from '../helpers/wait.js';

describe('PUBLISH / SUBSCRIBE', () => {
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

  /** An MQTT.js subscriber with its message queue, subscribed at QoS 1 to the filters. */
  async function subscriber(clientId: string, filters: string[]): Promise<{ client: MqttClient; messages: MessageQueue }> {
    const client = await clients.mqtt({ clientId });
    const messages = new MessageQueue(client);
    const granted = await client.subscribeAsync(filters, { qos: 1 });
    expect(granted.map((grant) => grant.qos)).toEqual(filters.map(() => 1));
    return { client, messages };
  }

  /** Publishes each topic in order at QoS 1 (payload = topic), waiting for every PUBACK. */
  async function publishAll(publisher: MqttClient, topics: string[]): Promise<void> {
    for (const topic of topics) await publisher.publishAsync(topic, topic, { qos: 1 });
  }

  describe('topic filters', () => {
    it("matches '+' against exactly one level, an empty one included [MQTT-4.7.1-3]", async () => {
      const { messages } = await subscriber('sub', ['a/+/c']);
      const publisher = await clients.mqtt({ clientId: 'pub' });
      await publishAll(publisher, ['a/b/c', 'a/b/d', 'a/c', 'a//c', 'a/b/c/d', 'b/b/c', 'a/end/c']);
      // The last topic matches and comes last: everything before it has been routed by then.
      const received = await messages.take(3);
      expect(received.map((message) => message.topic)).toEqual(['a/b/c', 'a//c', 'a/end/c']);
    });

    it("matches '#' against the parent level and any number of child levels [MQTT-4.7.1-2]", async () => {
      const { messages } = await subscriber('sub', ['sport/#']);
      const publisher = await clients.mqtt({ clientId: 'pub' });
      await publishAll(publisher, ['sport', 'sports', 'sport/tennis', 'other/sport', 'sport/tennis/player1', 'sport/', 'sport/end']);
      const received = await messages.take(5);
      expect(received.map((message) => message.topic)).toEqual(['sport', 'sport/tennis', 'sport/tennis/player1', 'sport/', 'sport/end']);
    });

    // $SYS itself belongs to the broker (a client's PUBLISH there is dropped: sys-topics.test.ts).
    it("does not match '$' topics with leading wildcards ('#', '+/x'), but with '$app/#' [MQTT-4.7.2-1]", async () => {
      const wildcard = await subscriber('wildcard', ['#', '+/x']);
      const system = await subscriber('system', ['$app/#']);
      const publisher = await clients.mqtt({ clientId: 'pub' });
      await publishAll(publisher, ['$app/x', 'm/x', 'n/x']);
      // 'm/x' matches both '#' and '+/x' and still comes once [MQTT-3.3.5-1]; '$app/x' never comes.
      expect((await wildcard.messages.take(2)).map((message) => message.topic)).toEqual(['m/x', 'n/x']);
      expect((await system.messages.next()).topic).toBe('$app/x');
    });
  });

  describe('SUBACK', () => {
    it('grants per filter in order and returns 0x80 for invalid filters, the valid ones still working [MQTT-3.8.4-5] [MQTT-3.9.3-1]', async () => {
      const sub = await clients.rawAccepted({ clientId: 'sub' });
      const granted = await subscribe(sub, 7, [
        { topic: 'g/two', qos: 2 },
        { topic: 'a/#/b', qos: 1 },
        { topic: 'g/zero', qos: 0 },
        { topic: 'a+', qos: 1 },
        { topic: 'g/one/#', qos: 1 },
        { topic: '#/x', qos: 0 },
      ]);
      expect(granted).toEqual([2, 0x80, 0, 0x80, 1, 0x80]);

      const publisher = await clients.mqtt({ clientId: 'pub' });
      await publishAll(publisher, ['g/two', 'g/zero', 'g/one/x']);
      const received = await receiveAndAck(sub, 3);
      expect(received.map(summary).sort()).toEqual(['g/one/x=g/one/x', 'g/two=g/two', 'g/zero=g/zero']);
    });

    it('delivers at the minimum of the published and the granted QoS [MQTT-3.8.4-6]', async () => {
      const sub = await clients.rawAccepted({ clientId: 'sub' });
      expect(
        await subscribe(sub, 1, [
          { topic: 'min/0', qos: 0 },
          { topic: 'min/1', qos: 1 },
          { topic: 'min/2', qos: 2 },
        ]),
      ).toEqual([0, 1, 2]);
      const publisher = await clients.mqtt({ clientId: 'pub' });
      const expected: string[] = [];
      for (const granted of [0, 1, 2] as const) {
        for (const published of [0, 1, 2] as const) {
          await publisher.publishAsync(`min/${granted}`, `published ${published}`, { qos: published });
          expected.push(`min/${granted}=published ${published} at ${Math.min(granted, published)}`);
        }
      }
      // QoS 0 and queued deliveries take different paths; only the set is compared.
      const received = await receiveAndAck(sub, 9);
      expect(received.map((publish) => `${summary(publish)} at ${publish.qos}`).sort()).toEqual(expected.sort());
    });

    it('delivers once, at the highest granted QoS, to overlapping subscriptions [MQTT-3.3.5-1]', async () => {
      const sub = await clients.rawAccepted({ clientId: 'sub' });
      await subscribe(sub, 1, [
        { topic: 'o/x', qos: 0 },
        { topic: 'o/+', qos: 1 },
        { topic: 'o/#', qos: 2 },
      ]);
      const publisher = await clients.mqtt({ clientId: 'pub' });
      await publisher.publishAsync('o/x', 'overlap', { qos: 2 });
      await publisher.publishAsync('o/marker', 'marker', { qos: 2 });
      // A second copy of 'o/x' would arrive before the marker.
      const received = await receiveAndAck(sub, 2);
      expect(received.map((publish) => `${summary(publish)} at ${publish.qos}`)).toEqual(['o/x=overlap at 2', 'o/marker=marker at 2']);
    });

    it('replaces the QoS of a subscription on a new SUBSCRIBE to the same filter [MQTT-3.8.4-3]', async () => {
      const sub = await clients.rawAccepted({ clientId: 'sub' });
      expect(await subscribe(sub, 1, [{ topic: 'rs', qos: 2 }])).toEqual([2]);
      expect(await subscribe(sub, 2, [{ topic: 'rs', qos: 0 }])).toEqual([0]);
      const publisher = await clients.mqtt({ clientId: 'pub' });
      await publisher.publishAsync('rs', 'downgraded', { qos: 2 });
      await publisher.publishAsync('rs', 'again', { qos: 2 });
      const downgraded = await receiveAndAck(sub, 2);
      expect(downgraded.map((publish) => `${summary(publish)} at ${publish.qos}`)).toEqual(['rs=downgraded at 0', 'rs=again at 0']);

      expect(await subscribe(sub, 3, [{ topic: 'rs', qos: 2 }])).toEqual([2]);
      await publisher.publishAsync('rs', 'upgraded', { qos: 2 });
      const [upgraded] = await receiveAndAck(sub, 1);
      expect(`${summary(upgraded!)} at ${upgraded!.qos}`).toBe('rs=upgraded at 2');
    });
  });

  describe('UNSUBSCRIBE', () => {
    it('answers with UNSUBACK carrying its packet id and stops delivery [MQTT-3.10.4-4] [MQTT-3.10.4-2]', async () => {
      const sub = await clients.rawAccepted({ clientId: 'sub' });
      await subscribe(sub, 1, [
        { topic: 'un/a', qos: 1 },
        { topic: 'un/marker', qos: 1 },
      ]);
      sub.send({ cmd: 'unsubscribe', messageId: 42, unsubscriptions: ['un/a'] });
      expect((await sub.next('unsuback')).messageId).toBe(42);
      const publisher = await clients.mqtt({ clientId: 'pub' });
      await publishAll(publisher, ['un/a', 'un/marker']);
      const [first] = await receiveAndAck(sub, 1);
      expect(first!.topic).toBe('un/marker');
    });

    it('answers with UNSUBACK also for a filter never subscribed [MQTT-3.10.4-5]', async () => {
      const sub = await clients.rawAccepted({ clientId: 'sub' });
      sub.send({ cmd: 'unsubscribe', messageId: 9, unsubscriptions: ['never/subscribed', 'not/+/either'] });
      expect((await sub.next('unsuback')).messageId).toBe(9);
      await sub.roundTrip();
    });

    it('unsubscribes with MQTT.js', async () => {
      const { client, messages } = await subscriber('sub', ['mq/a', 'mq/b']);
      await client.unsubscribeAsync('mq/a');
      const publisher = await clients.mqtt({ clientId: 'pub' });
      await publishAll(publisher, ['mq/a', 'mq/b']);
      expect((await messages.next()).topic).toBe('mq/b');
    });
  });

  describe('PUBLISH validation', () => {
    it.each(['ok/+', 'ok/#', '+', '#'])(
      'closes a client publishing to %j, a topic name with a wildcard, and serves the others on [MQTT-3.3.2-2]',
      async (topic) => {
        const { messages } = await subscriber('sub', ['#']);
        const publisher = await clients.mqtt({ clientId: 'pub' });
        const offender = await clients.rawAccepted({ clientId: 'offender' });
        offender.send({ cmd: 'publish', topic, payload: 'bad', qos: 1, messageId: 1, retain: false, dup: false });
        expect(await answeredOrClosed(offender)).toBe('closed');
        expect(offender.received.filter((packet) => packet.cmd === 'puback')).toEqual([]);
        await publisher.publishAsync('ok/1', 'fine', { qos: 1 });
        expect(summary(await messages.next())).toBe('ok/1=fine');
      },
    );

    it('closes a client sending a QoS 0 PUBLISH with DUP=1 [MQTT-3.3.1-2]', async () => {
      const { messages } = await subscriber('sub', ['dup/t']);
      const offender = await clients.rawAccepted({ clientId: 'offender' });
      offender.send({ cmd: 'publish', topic: 'dup/t', payload: 'dup', qos: 0, retain: false, dup: true });
      expect(await answeredOrClosed(offender)).toBe('closed');
      const publisher = await clients.mqtt({ clientId: 'pub' });
      await publisher.publishAsync('dup/t', 'marker', { qos: 1 });
      expect(summary(await messages.next())).toBe('dup/t=marker');
    });
  });

  it('sends RETAIN=0 to subscriptions that existed when a retained message was published [MQTT-3.3.1-9]', async () => {
    const { messages } = await subscriber('sub', ['rt']);
    const publisher = await clients.mqtt({ clientId: 'pub' });
    await publisher.publishAsync('rt', 'kept', { qos: 1, retain: true });
    const live = await messages.next();
    expect(summary(live)).toBe('rt=kept');
    expect(live.retain).toBe(false);
    // The contrast: it was retained, so a new subscription gets it with RETAIN=1.
    const late = await subscriber('late', ['rt']);
    expect((await late.messages.next()).retain).toBe(true);
  });

  it('sends RETAIN=0 for a retained message queued while a persistent subscriber was offline [MQTT-3.3.1-9]', async () => {
    const sub = await clients.rawAccepted({ clientId: 'offline', clean: false });
    await subscribe(sub, 1, [{ topic: 'rt/offline', qos: 1 }]);
    await sub.disconnect();
    const publisher = await clients.mqtt({ clientId: 'pub' });
    await publisher.publishAsync('rt/offline', 'queued', { qos: 1, retain: true });
    // Matched by the established subscription, so not a retained delivery, even read back from the queue.
    const back = await clients.rawAccepted({ clientId: 'offline', clean: false });
    const [queued] = await receiveAndAck(back, 1);
    expect(`${summary(queued!)} retain=${queued!.retain}`).toBe('rt/offline=queued retain=false');
  });

  describe('ordering', () => {
    it('delivers 200 QoS1 messages on one topic in publishing order to persistent and clean subscribers [MQTT-4.6.0-6]', async () => {
      const persistent = await clients.rawAccepted({ clientId: 'persistent', clean: false });
      await subscribe(persistent, 1, [{ topic: 'order/t', qos: 1 }]);
      const clean = await subscriber('clean', ['order/t']);
      const publisher = await clients.rawAccepted({ clientId: 'pub' });
      const count = 200;
      for (let index = 0; index < count; index++) {
        publisher.send({ cmd: 'publish', topic: 'order/t', payload: String(index), qos: 1, messageId: index + 1, retain: false, dup: false });
      }
      const expected = Array.from({ length: count }, (_, index) => String(index));
      const [fromPersistent, fromClean] = await Promise.all([receiveAndAck(persistent, count), clean.messages.take(count)]);
      expect(fromPersistent.map((publish) => publish.payload.toString())).toEqual(expected);
      expect(fromClean.map((message) => message.payload.toString())).toEqual(expected);
      expect((await publisher.take('puback', count)).map((puback) => puback.messageId)).toEqual(expected.map((_, index) => index + 1));
    });

    it.each([
      { kind: 'clean', clean: true },
      { kind: 'persistent', clean: false },
    ])('keeps the order of retained and non-retained QoS1 messages on one topic for a $kind subscriber [MQTT-4.6.0-6]', async ({ clean }) => {
      const sub = await clients.rawAccepted({ clientId: 'sub', clean });
      await subscribe(sub, 1, [{ topic: 'mixed/t', qos: 1 }]);
      const publisher = await clients.rawAccepted({ clientId: 'pub' });
      const count = 20;
      for (let index = 0; index < count; index++) {
        publisher.send({ cmd: 'publish', topic: 'mixed/t', payload: String(index), qos: 1, messageId: index + 1, retain: index % 2 === 0, dup: false });
      }
      await publisher.take('puback', count);
      const received = await receiveAndAck(sub, count);
      expect(received.map((publish) => publish.payload.toString())).toEqual(Array.from({ length: count }, (_, index) => String(index)));
    });

    it('keeps the order of retained and non-retained QoS0 messages on one topic [MQTT-4.6.0-6]', async () => {
      const sub = await clients.rawAccepted({ clientId: 'sub' });
      await subscribe(sub, 1, [{ topic: 'mixed/0', qos: 0 }]);
      const publisher = await clients.rawAccepted({ clientId: 'pub' });
      const count = 20;
      for (let index = 0; index < count; index++) {
        publisher.send({ cmd: 'publish', topic: 'mixed/0', payload: String(index), qos: 0, retain: index % 2 === 0, dup: false });
      }
      const received = await sub.take('publish', count);
      expect(received.map((publish) => publish.payload.toString())).toEqual(Array.from({ length: count }, (_, index) => String(index)));
    });
  });

  it('completes a QoS 2 round trip with MQTT.js on both sides, delivering once', async () => {
    const sub = await clients.mqtt({ clientId: 'sub' });
    const messages = new MessageQueue(sub);
    expect((await sub.subscribeAsync('q2/t', { qos: 2 })).map((grant) => grant.qos)).toEqual([2]);
    const publisher = await clients.mqtt({ clientId: 'pub' });
    await publisher.publishAsync('q2/t', 'exactly once', { qos: 2 });
    await publisher.publishAsync('q2/t', 'marker', { qos: 2 });
    const received = await messages.take(2);
    expect(received.map((message) => `${summary(message)} at ${message.qos}`)).toEqual(['q2/t=exactly once at 2', 'q2/t=marker at 2']);
  });

  it('routes between raw and MQTT.js clients at QoS 1 (raw publisher helper sanity)', async () => {
    const { messages } = await subscriber('sub', ['raw/+']);
    const publisher = await clients.rawAccepted({ clientId: 'pub' });
    await publishQos1(publisher, 1, 'raw/one', 'payload');
    expect(summary(await messages.next())).toBe('raw/one=payload');
  });
});
