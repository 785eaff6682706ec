/**
 * A bridge that speaks MQTT 5 upstream (`protocol_version: 5`): to our own broker and to Mosquitto,
 * each a child process. Messages keep their properties both ways; our subscriptions upstream are
 * No Local, so with `both` on the same topics nothing comes back (MQTT 5 has no bridge bit).
 */
import { describe, expect, it } from 'vitest';
import type { IPublishPacket } from 'mqtt-packet';
import { RawClient } from '../helpers/raw-client.js';
import { acknowledge } from '../helpers/wait.js';
import { bridgeConfig, freePort, useBridgeHarness } from './harness.js';

const harness = useBridgeHarness('bridge-v5-');

const PROPERTIES = {
  payloadFormatIndicator: true,
  messageExpiryInterval: 600,
  contentType: 'application/json',
  responseTopic: 'shared/replies',
  correlationData: Buffer.from([1, 2, 3]),
  userProperties: { a: ['1', '3'], b: '2' },
};

async function v5(port: number, clientId: string): Promise<RawClient> {
  const { client, connack } = await RawClient.session5(port, { clientId, clean: true });
  harness.onTeardown(() => client.socket.destroy());
  expect(connack.reasonCode).toBe(0);
  return client;
}

async function subscribed(port: number, clientId: string, filter: string): Promise<RawClient> {
  const client = await v5(port, clientId);
  client.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: filter, qos: 1 }] });
  expect((await client.next('suback')).granted).toEqual([1]);
  return client;
}

async function publish(port: number, topic: string, payload: string, properties?: object): Promise<void> {
  const client = await v5(port, `pub-${Math.random().toString(36).slice(2)}`);
  client.send({ cmd: 'publish', topic, payload, qos: 1, messageId: 1, dup: false, retain: false, ...(properties ? { properties } : {}) });
  await client.next('puback');
  await client.disconnect();
}

/** The next PUBLISH, acknowledged. */
async function received(client: RawClient): Promise<IPublishPacket> {
  const packet = await client.next('publish');
  await acknowledge(client, packet);
  return packet;
}

/** What of a received PUBLISH's properties came from the publisher (the remaining expiry only bounded). */
function carried(packet: IPublishPacket) {
  const { messageExpiryInterval, ...rest } = packet.properties ?? {};
  expect(messageExpiryInterval).toBeGreaterThan(500);
  expect(messageExpiryInterval).toBeLessThanOrEqual(600);
  return { ...rest, correlationData: Buffer.from(rest.correlationData as Buffer) };
}

/** What the receiver sees of PROPERTIES, the remaining expiry aside. */
const { messageExpiryInterval: _expiry, ...expected } = PROPERTIES;

describe('bridge with protocol_version 5', () => {
  it('to our broker, both on the same topics: properties cross both ways in order, and nothing comes back [MQTT-3.8.3-3] [MQTT-3.3.2-17] [MQTT-3.3.2-18]', async () => {
    const upstream = await harness.startBroker(harness.freshDir());
    const gateway = await harness.startGateway(harness.freshDir(), [bridgeConfig(upstream.port, [{ pattern: 'shared/#', direction: 'both', qos: 1 }], { protocol_version: 5 })]);
    await gateway.waitFor(/bridge cloud: subscribed upstream/);
    const cloud = await subscribed(upstream.port, 'cloud-app', 'shared/#');
    const local = await subscribed(gateway.port, 'device', 'shared/#');

    await publish(gateway.port, 'shared/up', 'from gateway', PROPERTIES);
    for (const client of [cloud, local]) {
      const packet = await received(client);
      expect([packet.topic, packet.payload.toString()]).toEqual(['shared/up', 'from gateway']);
      expect(carried(packet)).toEqual(expected);
    }
    await publish(upstream.port, 'shared/down', 'from cloud', PROPERTIES);
    for (const client of [local, cloud]) {
      const packet = await received(client);
      expect([packet.topic, packet.payload.toString()]).toEqual(['shared/down', 'from cloud']);
      expect(carried(packet)).toEqual(expected);
    }
    // A marker from each side is the next thing each side sees: nothing went round again.
    await publish(upstream.port, 'shared/marker', 'end');
    expect((await received(cloud)).topic).toBe('shared/marker');
    expect((await received(local)).topic).toBe('shared/marker');
    await cloud.roundTrip();
    await local.roundTrip();
    expect([...cloud.received, ...local.received].filter((packet) => packet.cmd === 'publish')).toEqual([]);
    expect(upstream.log()).toMatch(/client "gw-17" connected.*protocolVersion=5/);
  });

  it('to Mosquitto: properties cross both ways; No Local upstream, so no echo', async () => {
    const port = await freePort();
    await harness.startMosquitto(port);
    const gateway = await harness.startGateway(harness.freshDir(), [bridgeConfig(port, [{ pattern: 'shared/#', direction: 'both', qos: 1 }], { protocol_version: 5 })]);
    await gateway.waitFor(/bridge cloud: subscribed upstream/);
    const cloud = await subscribed(port, 'cloud-app', 'shared/#');
    const local = await subscribed(gateway.port, 'device', 'shared/#');

    await publish(gateway.port, 'shared/up', 'from gateway', PROPERTIES);
    const up = await received(cloud);
    expect(up.payload.toString()).toBe('from gateway');
    expect(carried(up)).toEqual(expected);
    expect((await received(local)).payload.toString()).toBe('from gateway');

    await publish(port, 'shared/down', 'from cloud', PROPERTIES);
    const down = await received(local);
    expect(down.payload.toString()).toBe('from cloud');
    expect(carried(down)).toEqual(expected);
    expect((await received(cloud)).payload.toString()).toBe('from cloud');

    await publish(port, 'shared/marker', 'end');
    expect((await received(cloud)).topic).toBe('shared/marker');
    expect((await received(local)).topic).toBe('shared/marker');
    await cloud.roundTrip();
    await local.roundTrip();
    expect([...cloud.received, ...local.received].filter((packet) => packet.cmd === 'publish')).toEqual([]);
  });
});
