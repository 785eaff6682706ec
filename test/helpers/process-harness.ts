/**
 * The harness of the suites that run the broker as a child process (bin/broker.js → dist/) and
 * stop, kill or restart it on the same data directory, talking to it over raw sockets so that
 * every acknowledgement is under the test's control.
 *
 * No sleeps: absence is shown by publishing a marker afterwards and checking that it is what
 * arrives next (`expectMarkerNext`).
 */
import { randomUUID } from 'node:crypto';
import { afterEach, expect } from 'vitest';
import type { IConnackPacket, IPublishPacket, QoS } from 'mqtt-packet';
import { BrokerProcess, makeDataDir, removeDataDir } from './broker-process.js';
import { RawClient } from './raw-client.js';
import { acknowledge } from './wait.js';

export interface Outgoing {
  topic: string;
  payload: string;
  qos: QoS;
  retain?: boolean;
}

/**
 * Registers an afterEach with vitest, so call it once at the top of a test file. Everything started
 * through the returned helpers is torn down after each test, even when the test failed half-way:
 * a broker left running would hold its data directory's lock and a port for the rest of the run.
 */
export function useBrokerProcesses(dataDirPrefix: string) {
  const teardowns: Array<() => unknown> = [];
  const rawClients: RawClient[] = [];
  const brokers: BrokerProcess[] = [];
  const dataDirs: string[] = [];

  afterEach(async () => {
    for (const teardown of teardowns.splice(0)) await teardown();
    for (const client of rawClients.splice(0)) client.socket.destroy();
    await Promise.all(
      brokers.splice(0).map(async (broker) => {
        if (broker.child.exitCode === null && broker.child.signalCode === null) broker.child.kill('SIGKILL');
        await broker.exited;
      }),
    );
    // Only once every broker is gone: a live one could still be writing to its directory.
    for (const dir of dataDirs.splice(0)) removeDataDir(dir);
  });

  /**
   * For what a test file starts beyond the harness (MQTT.js clients, other child processes): runs at
   * the end of the current test, before the harness closes its own clients and brokers.
   */
  function onTeardown(teardown: () => unknown): void {
    teardowns.push(teardown);
  }

  function freshDataDir(): string {
    const dir = makeDataDir(dataDirPrefix);
    dataDirs.push(dir);
    return dir;
  }

  async function startBroker(dataDir: string, args: string[] = []): Promise<BrokerProcess> {
    const broker = await BrokerProcess.start(dataDir, args);
    brokers.push(broker);
    return broker;
  }

  async function connectRaw(
    broker: BrokerProcess,
    clientId: string,
    clean: boolean,
  ): Promise<{ client: RawClient; connack: IConnackPacket }> {
    const { client, connack } = await RawClient.session(broker.port, { clientId, clean });
    rawClients.push(client);
    expect(connack.returnCode).toBe(0);
    return { client, connack };
  }

  /**
   * Publishes the messages on one raw connection (CleanSession=1), pipelined and in order, and waits
   * until the broker acknowledged every one of them (PUBACK; PUBREC → PUBREL → PUBCOMP): from then
   * on the broker has promised to keep them.
   */
  async function publishAll(broker: BrokerProcess, messages: Outgoing[], clientId = `pub-${randomUUID()}`): Promise<void> {
    const { client } = await connectRaw(broker, clientId, true);
    messages.forEach(({ topic, payload, qos, retain = false }, index) => {
      client.send({
        cmd: 'publish',
        topic,
        payload: Buffer.from(payload),
        qos,
        retain,
        dup: false,
        ...(qos > 0 ? { messageId: index + 1 } : {}),
      });
    });
    const qos1 = messages.flatMap(({ qos }, index) => (qos === 1 ? [index + 1] : []));
    const qos2 = messages.flatMap(({ qos }, index) => (qos === 2 ? [index + 1] : []));
    const pubacks = await client.take('puback', qos1.length);
    expect(pubacks.map((packet) => packet.messageId)).toEqual(qos1);
    const pubrecs = await client.take('pubrec', qos2.length);
    expect(pubrecs.map((packet) => packet.messageId)).toEqual(qos2);
    for (const messageId of qos2) client.send({ cmd: 'pubrel', messageId });
    const pubcomps = await client.take('pubcomp', qos2.length);
    expect(pubcomps.map((packet) => packet.messageId)).toEqual(qos2);
    await client.roundTrip();
    await client.disconnect();
  }

  /**
   * Shows that nothing else is pending for `client`: a marker published now (to a topic it is
   * subscribed to) must be the very next PUBLISH, and after it nothing else may have arrived
   * (no PUBLISH, no PUBREL).
   */
  async function expectMarkerNext(broker: BrokerProcess, client: RawClient, topic: string): Promise<void> {
    const payload = `marker-${randomUUID()}`;
    await publishAll(broker, [{ topic, payload, qos: 1 }]);
    const next = await client.next('publish');
    expect({ topic: next.topic, payload: next.payload.toString() }).toEqual({ topic, payload });
    await acknowledge(client, next);
    await client.roundTrip();
    expect(client.received.map((packet) => packet.cmd)).toEqual([]);
  }

  return { onTeardown, freshDataDir, startBroker, connectRaw, publishAll, expectMarkerNext };
}

export async function subscribe(client: RawClient, subscriptions: Array<[string, QoS]>, messageId = 1): Promise<void> {
  client.send({ cmd: 'subscribe', messageId, subscriptions: subscriptions.map(([topic, qos]) => ({ topic, qos })) });
  const suback = await client.next('suback');
  expect(suback.messageId).toBe(messageId);
  expect(suback.granted).toEqual(subscriptions.map(([, qos]) => qos));
}

/** Every PUBLISH (acknowledged) up to and including the first one on `topic`. */
export async function drainUntil(client: RawClient, topic: string): Promise<IPublishPacket[]> {
  const received: IPublishPacket[] = [];
  for (;;) {
    const publish = await client.next('publish');
    received.push(publish);
    await acknowledge(client, publish);
    if (publish.topic === topic) return received;
  }
}

/** What a test compares: DUP, RETAIN and the packet id are left out, they are asserted on their own. */
export function summary(publish: IPublishPacket): { topic: string; payload: string; qos: QoS } {
  return { topic: publish.topic, payload: publish.payload.toString(), qos: publish.qos };
}

export const range = (length: number) => Array.from({ length }, (_, index) => index);
