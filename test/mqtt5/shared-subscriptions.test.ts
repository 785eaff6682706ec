/**
 * Shared subscriptions `$share/{group}/{filter}` (MQTT 5.0 4.8.2), for MQTT 5 and 3.1.1 clients:
 * raw mqtt-packet sockets against a real broker over TCP, so every acknowledgement is the test's.
 *
 * Absence is shown with a marker: each member also holds an ordinary subscription to `marker`, and
 * a session's messages arrive in the order they were routed, so what a member got before the
 * marker is everything it got.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { IPublishPacket, ISubscribePacket } from 'mqtt-packet';
import { startBroker, type RunningBroker } from '../helpers/in-process.js';
import type { RawClient } from '../helpers/raw-client.js';
import { acknowledge, Clients, publishQos1 } from '../helpers/wait.js';

const MARKER = 'marker';

async function subscribe(client: RawClient, subscriptions: ISubscribePacket['subscriptions'], messageId = 1): Promise<number[]> {
  client.send({ cmd: 'subscribe', messageId, subscriptions });
  const suback = await client.next('suback');
  expect(suback.messageId).toBe(messageId);
  return suback.granted as number[];
}

/** A member of `$share/<group>/<filter>` at `qos` that also gets the marker. */
async function join(client: RawClient, shared: string, qos: 0 | 1 | 2 = 1): Promise<void> {
  expect(await subscribe(client, [{ topic: shared, qos }, { topic: MARKER, qos: 0 }])).toEqual([qos, 0]);
}

/** Every PUBLISH a client gets before the marker, acknowledged (unless `ack` is false); the marker itself is taken too. */
async function untilMarker(client: RawClient, ack = true): Promise<IPublishPacket[]> {
  const received: IPublishPacket[] = [];
  for (;;) {
    const publish = await client.next('publish');
    if (publish.topic === MARKER) return received;
    received.push(publish);
    if (ack) await acknowledge(client, publish);
  }
}

const payloads = (publishes: IPublishPacket[]) => publishes.map(({ payload }) => payload.toString());

describe('shared subscriptions', () => {
  let running: RunningBroker;
  let clients: Clients;
  let publisher: RawClient;
  let nextId = 1;
  const publish = (topic: string, payload: string, retain = false) => publishQos1(publisher, nextId++, topic, payload, retain);
  const marker = async () => publisher.send({ cmd: 'publish', topic: MARKER, payload: '', qos: 0, dup: false, retain: false });

  beforeEach(async () => {
    running = await startBroker();
    clients = new Clients(running.port);
    publisher = await clients.raw5Accepted({ clientId: 'publisher' });
  });
  afterEach(async () => {
    await clients.closeAll();
    await running.stop();
  });

  it('each message goes to one member, round robin among the connected ones, MQTT 5 and 3.1.1 members alike (MQTT 5.0 4.8.2)', async () => {
    const a = await clients.raw5Accepted({ clientId: 'a' });
    const b = await clients.raw5Accepted({ clientId: 'b' });
    const c = await clients.rawAccepted({ clientId: 'c' });
    for (const member of [a, b, c]) await join(member, '$share/workers/jobs/+');
    for (let index = 0; index < 9; index++) await publish(`jobs/${index}`, `job ${index}`);
    await marker();
    const got = await Promise.all([a, b, c].map((member) => untilMarker(member)));
    // Three each, in turn: a, b, c, a, b, c, ...
    expect(got.map(payloads)).toEqual([
      ['job 0', 'job 3', 'job 6'],
      ['job 1', 'job 4', 'job 7'],
      ['job 2', 'job 5', 'job 8'],
    ]);
  });

  it('each group gets its own copy; an ordinary subscription gets every message besides; the delivery says which filter chose the session', async () => {
    const a = await clients.raw5Accepted({ clientId: 'a' });
    const b = await clients.raw5Accepted({ clientId: 'b' });
    const all = await clients.raw5Accepted({ clientId: 'all' });
    await join(a, '$share/one/t');
    await join(b, '$share/two/t');
    // `all` is in group one too, with an identifier: chosen, it gets the message once, carrying it.
    all.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 't', qos: 1 }, { topic: MARKER, qos: 0 }] });
    await all.next('suback');
    all.send({ cmd: 'subscribe', messageId: 2, subscriptions: [{ topic: '$share/one/t', qos: 1 }], properties: { subscriptionIdentifier: 7 } });
    await all.next('suback');
    for (let index = 0; index < 4; index++) await publish('t', `m${index}`);
    await marker();
    const [atA, atB, atAll] = await Promise.all([untilMarker(a), untilMarker(b), untilMarker(all)]);
    expect(payloads(atB)).toEqual(['m0', 'm1', 'm2', 'm3']);
    expect(payloads(atAll)).toEqual(['m0', 'm1', 'm2', 'm3']);
    // Group one alternates between a and all.
    expect(payloads(atA)).toEqual(['m0', 'm2']);
    expect(atAll.map((publish) => publish.properties?.subscriptionIdentifier)).toEqual([undefined, 7, undefined, 7]);
  });

  it('connected members first; with none connected, one persistent member queues it for its return', async () => {
    const away = await clients.raw5Accepted({ clientId: 'away', clean: false, properties: { sessionExpiryInterval: 3600 } });
    await join(away, '$share/g/t');
    await away.disconnect();
    const here = await clients.raw5Accepted({ clientId: 'here', clean: false, properties: { sessionExpiryInterval: 3600 } });
    await join(here, '$share/g/t');
    for (let index = 0; index < 3; index++) await publish('t', `while here ${index}`);
    await marker();
    expect(payloads(await untilMarker(here))).toEqual(['while here 0', 'while here 1', 'while here 2']);
    await here.disconnect();
    // Nobody connected: each goes to one persistent member's queue, round robin (here had the last turn).
    for (let index = 0; index < 4; index++) await publish('t', `while away ${index}`);
    for (const [clientId, expected] of [
      ['away', ['while away 0', 'while away 2']],
      ['here', ['while away 1', 'while away 3']],
    ] as const) {
      const member = await clients.raw5Accepted({ clientId, clean: false, properties: { sessionExpiryInterval: 3600 } });
      const queued = await member.take('publish', 2);
      for (const publish of queued) await acknowledge(member, publish);
      expect(payloads(queued)).toEqual(expected);
      // Nothing else was queued for it: a marker sent now is what comes next.
      await marker();
      expect(await untilMarker(member)).toEqual([]);
    }
  });

  it('retained messages are not sent on a new shared subscription (MQTT 5.0 3.3.1.3, 4.8.2)', async () => {
    await publish('kept', 'retained', true);
    const member = await clients.raw5Accepted({ clientId: 'member' });
    await join(member, '$share/g/kept');
    await marker();
    expect(await untilMarker(member)).toEqual([]);
    // A live message published with RETAIN reaches the group, RETAIN 0 as for any existing subscription [MQTT-3.3.1-9].
    await publish('kept', 'live', true);
    await marker();
    const [live] = await untilMarker(member);
    expect(live?.payload.toString()).toBe('live');
    expect(live?.retain).toBe(false);
  });

  it('No Local on a shared subscription is a Protocol Error: DISCONNECT 0x82 [MQTT-3.8.3-4]', async () => {
    const member = await clients.raw5Accepted({ clientId: 'member' });
    member.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: '$share/g/t', qos: 1, nl: true }] });
    expect((await member.next('disconnect')).reasonCode).toBe(0x82);
    await member.closed;
  });

  it('a ShareName with a wildcard, or no filter after it, is refused: 0x8F, 0x80 for 3.1.1 [MQTT-4.8.2-1] [MQTT-4.8.2-2]', async () => {
    const v5 = await clients.raw5Accepted({ clientId: 'v5' });
    expect(await subscribe(v5, [{ topic: '$share/g+/t', qos: 1 }, { topic: '$share/g/', qos: 1 }, { topic: '$share//t', qos: 1 }, { topic: '$share/g/t', qos: 2 }])).toEqual([0x8f, 0x8f, 0x8f, 2]);
    const v4 = await clients.rawAccepted({ clientId: 'v4' });
    expect(await subscribe(v4, [{ topic: '$share/#/t', qos: 1 }, { topic: '$share/g/t', qos: 1 }])).toEqual([0x80, 1]);
  });

  it('UNSUBSCRIBE leaves the group: the other member gets everything after it', async () => {
    const a = await clients.raw5Accepted({ clientId: 'a' });
    const b = await clients.raw5Accepted({ clientId: 'b' });
    await join(a, '$share/g/t');
    await join(b, '$share/g/t');
    a.send({ cmd: 'unsubscribe', messageId: 2, unsubscriptions: ['$share/g/t'] });
    expect((await a.next('unsuback')).granted).toEqual([0]);
    for (let index = 0; index < 3; index++) await publish('t', `m${index}`);
    await marker();
    expect(await untilMarker(a)).toEqual([]);
    expect(payloads(await untilMarker(b))).toEqual(['m0', 'm1', 'm2']);
  });

  it("the broker's own $SYS messages go to one connected member each, in turn", async () => {
    await clients.closeAll();
    await running.stop();
    running = await startBroker({ sysInterval: 1 });
    clients = new Clients(running.port);
    const a = await clients.raw5Accepted({ clientId: 'a' });
    const b = await clients.raw5Accepted({ clientId: 'b' });
    for (const member of [a, b]) await subscribe(member, [{ topic: '$share/g/$SYS/broker/uptime', qos: 0 }]);
    // Four publications of the uptime, one a second: a, b, a, b (or b, a, b, a).
    const arrivals: string[] = [];
    await new Promise<void>((resolve) => {
      for (const [name, member] of [['a', a], ['b', b]] as const) {
        void (async () => {
          while (arrivals.length < 4) {
            await member.next('publish');
            arrivals.push(name);
            if (arrivals.length === 4) resolve();
          }
        })().catch(() => {});
      }
    });
    expect([['a', 'b', 'a', 'b'], ['b', 'a', 'b', 'a']]).toContainEqual(arrivals.slice(0, 4));
  });

  describe('a member whose session ends', () => {
    /** `holder` gets `count` QoS `qos` messages and acknowledges none; `spare` is a persistent member, away. */
    async function holding(qos: 1 | 2, count: number, holderSession: { clean: boolean; properties: object }) {
      const spare = await clients.raw5Accepted({ clientId: 'spare', clean: false, properties: { sessionExpiryInterval: 3600 } });
      await join(spare, '$share/g/t', 2);
      await spare.disconnect();
      const holder = await clients.raw5Accepted({ clientId: 'holder', ...holderSession });
      await join(holder, '$share/g/t', 2);
      for (let index = 0; index < count; index++) {
        publisher.send({ cmd: 'publish', topic: 't', payload: `m${index}`, qos, messageId: nextId, retain: false, dup: false });
        await publisher.next(qos === 1 ? 'puback' : 'pubrec');
        if (qos === 2) {
          publisher.send({ cmd: 'pubrel', messageId: nextId });
          await publisher.next('pubcomp');
        }
        nextId++;
      }
      await marker();
      // Connected, so chosen for every one; sent, never acknowledged.
      expect(payloads(await untilMarker(holder, false))).toEqual(Array.from({ length: count }, (_, index) => `m${index}`));
      return holder;
    }

    /** What the spare member finds queued when it returns: `count` messages, and nothing after them. */
    const spareGets = async (count: number) => {
      const spare = await clients.raw5Accepted({ clientId: 'spare', clean: false, properties: { sessionExpiryInterval: 3600 } });
      const queued = await spare.take('publish', count);
      for (const publish of queued) await acknowledge(spare, publish);
      // A queued message could be overtaken by a QoS 0 marker while it is read back: the marker goes once they are here.
      await marker();
      expect(await untilMarker(spare)).toEqual([]);
      return queued;
    };

    it('QoS 1 messages sent to it and not acknowledged go to another member when its session ends with its connection (MQTT 5.0 4.8.2)', async () => {
      const holder = await holding(1, 3, { clean: true, properties: { sessionExpiryInterval: 0 } });
      await holder.close();
      const got = await spareGets(3);
      expect(payloads(got)).toEqual(['m0', 'm1', 'm2']);
      // A redelivery to another client is a first delivery to it: DUP 0 [MQTT-3.3.1-3].
      expect(got.every((publish) => publish.qos === 1 && !publish.dup)).toBe(true);
    });

    it('QoS 1 messages queued for a persistent member go to another member when a Clean Start discards its session', async () => {
      const holder = await holding(1, 2, { clean: false, properties: { sessionExpiryInterval: 3600 } });
      await holder.close();
      await clients.raw5Accepted({ clientId: 'holder', clean: true, properties: { sessionExpiryInterval: 0 } });
      expect(payloads(await spareGets(2))).toEqual(['m0', 'm1']);
    });

    it('a QoS 2 message whose delivery began is not sent to another member [MQTT-4.8.2-5]; one never sent is', async () => {
      const holder = await holding(2, 1, { clean: true, properties: { sessionExpiryInterval: 0, receiveMaximum: 1 } });
      // With Receive Maximum 1 the second waits unsent in the holder's queue.
      publisher.send({ cmd: 'publish', topic: 't', payload: 'unsent', qos: 2, messageId: nextId, retain: false, dup: false });
      await publisher.next('pubrec');
      publisher.send({ cmd: 'pubrel', messageId: nextId });
      await publisher.next('pubcomp');
      nextId++;
      await holder.roundTrip();
      expect(holder.received.filter(({ cmd }) => cmd === 'publish')).toEqual([]);
      await holder.close();
      expect(payloads(await spareGets(1))).toEqual(['unsent']);
    });
  });
});
