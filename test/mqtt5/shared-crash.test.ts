/**
 * Shared subscriptions across crashes: the broker runs as a child process (bin/broker.js), group
 * members crash or expire holding messages, and the broker is killed with SIGKILL and started
 * again on the same data directory. Nothing acknowledged to the publisher may be lost, and each
 * message goes to one member at a time.
 *
 * What the tests allow: the member that crashed was sent its messages and never acknowledged them;
 * the member they are handed to gets each of them exactly once. So a message may have reached two
 * clients (the crashed one, unacknowledged, and the one it was handed to): QoS 1 is at least once,
 * and MQTT 5.0 4.8.2 asks for exactly this hand-over of an unacknowledged QoS 1 message. A
 * duplicate at the same member, or a message at neither, fails the test.
 *
 * Expiry is a matter of time: these tests wait for a short deadline to pass; they never assert how
 * long anything took.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import type { IPublishPacket } from 'mqtt-packet';
import type { BrokerProcess } from '../helpers/broker-process.js';
import { RawClient } from '../helpers/raw-client.js';
import { useBrokerProcesses } from '../helpers/process-harness.js';
import { acknowledge } from '../helpers/wait.js';

const { onTeardown, freshDataDir, startBroker } = useBrokerProcesses('broker-shared-');
const COUNT = 20;
const GROUP = '$share/workers/jobs/#';

async function v5(broker: BrokerProcess, clientId: string, expiry: number) {
  const client = await RawClient.connect(broker.port, '127.0.0.1', 5);
  onTeardown(() => client.socket.destroy());
  client.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: false, keepalive: 0, clientId, properties: { sessionExpiryInterval: expiry } });
  const connack = await client.next('connack');
  expect(connack.reasonCode).toBe(0);
  return { client, sessionPresent: connack.sessionPresent };
}

async function join(client: RawClient): Promise<void> {
  client.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: GROUP, qos: 1 }, { topic: 'marker', qos: 0 }] });
  expect((await client.next('suback')).granted).toEqual([1, 0]);
}

/** COUNT QoS 1 messages, each acknowledged by the broker before the next. */
async function publishJobs(broker: BrokerProcess): Promise<void> {
  const { client } = await v5(broker, 'publisher', 0);
  for (let index = 0; index < COUNT; index++) {
    client.send({ cmd: 'publish', topic: `jobs/${index}`, payload: `job ${index}`, qos: 1, messageId: index + 1, dup: false, retain: false });
    expect((await client.next('puback')).messageId).toBe(index + 1);
  }
  await client.disconnect();
}

const jobs = Array.from({ length: COUNT }, (_, index) => `job ${index}`);

/** The spare member returns: it must find every job queued once, and nothing after them. */
async function spareFindsEveryJobOnce(broker: BrokerProcess): Promise<void> {
  const { client, sessionPresent } = await v5(broker, 'spare', 3600);
  expect(sessionPresent).toBe(true);
  const received: IPublishPacket[] = await client.take('publish', COUNT);
  for (const publish of received) await acknowledge(client, publish);
  expect(received.map(({ payload }) => payload.toString()).sort()).toEqual([...jobs].sort());
  // Nothing more: a marker published now is the next thing it gets.
  const { client: marker } = await v5(broker, 'marker-publisher', 0);
  marker.send({ cmd: 'publish', topic: 'marker', payload: '', qos: 0, dup: false, retain: false });
  expect((await client.next('publish')).topic).toBe('marker');
}

/** A member, connected, that is sent every job (connected members come first) and acknowledges none. */
async function holderOfEveryJob(broker: BrokerProcess, expiry: number): Promise<RawClient> {
  const { client } = await v5(broker, 'holder', expiry);
  await join(client);
  await publishJobs(broker);
  const sent = await client.take('publish', COUNT);
  expect(sent.map(({ payload }) => payload.toString())).toEqual(jobs);
  return client;
}

/** The spare member: joined, then away (persistent), so it is chosen only when nobody is connected. */
async function spareAway(broker: BrokerProcess): Promise<void> {
  const { client } = await v5(broker, 'spare', 3600);
  await join(client);
  await client.disconnect();
}

describe('shared subscriptions across crashes', { timeout: 60_000 }, () => {
  it('a member crashes holding unacknowledged QoS 1 messages and its session expires; SIGKILL; the other member gets each once (MQTT 5.0 4.8.2)', async () => {
    const dir = freshDataDir();
    const broker = await startBroker(dir);
    await spareAway(broker);
    const holder = await holderOfEveryJob(broker, 1);
    // The holder's client crashes: no DISCONNECT, no acknowledgement.
    holder.socket.destroy();
    // Its session expires a second later and its messages are handed over; the broker says so.
    while (!/ended: 20 messages of its shared subscriptions handed to other members/.test(broker.output)) await sleep(100);
    await broker.kill();

    const again = await startBroker(dir);
    await spareFindsEveryJobOnce(again);
    expect((await v5(again, 'holder', 3600)).sessionPresent).toBe(false);
  });

  it('a member expires while the broker is stopped: at start its messages go to the other member before anything runs; SIGKILL right after; each once', async () => {
    const dir = freshDataDir();
    const broker = await startBroker(dir);
    await spareAway(broker);
    await holderOfEveryJob(broker, 1);
    await broker.kill();
    // The holder's deadline (last seen at its CONNECT, plus 1 s) passes while the broker is down.
    await sleep(1500);

    const handing = await startBroker(dir);
    expect(handing.output).toMatch(/1 persistent sessions expired while the broker was stopped/);
    expect(handing.output).toMatch(/"holder" ended: 20 messages of its shared subscriptions handed to other members/);
    await handing.kill();

    const again = await startBroker(dir);
    await spareFindsEveryJobOnce(again);
    expect((await v5(again, 'holder', 3600)).sessionPresent).toBe(false);
  });

  it('a member taken over with Clean Start while holding messages; SIGKILL at once; the other member gets each once', async () => {
    const dir = freshDataDir();
    const broker = await startBroker(dir);
    await spareAway(broker);
    await holderOfEveryJob(broker, 3600);
    // A new connection with Clean Start discards the session [MQTT-3.1.2-4]; its CONNACK comes after the hand-over.
    const fresh = await RawClient.connect(broker.port, '127.0.0.1', 5);
    onTeardown(() => fresh.socket.destroy());
    fresh.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, keepalive: 0, clientId: 'holder' });
    expect((await fresh.next('connack')).sessionPresent).toBe(false);
    await broker.kill();

    const again = await startBroker(dir);
    await spareFindsEveryJobOnce(again);
  });
});
