/**
 * The bridge between two of our brokers, each a child process: the gateway (with the bridge in its
 * config file) and the upstream. Out: a local QoS 1/2 PUBLISH is in the bridge's queue on disk
 * before its PUBACK/PUBREC, and leaves it only once the upstream acknowledged it. In: an upstream
 * PUBLISH is stored locally before the bridge acknowledges it upstream.
 */
import { describe, expect, it } from 'vitest';
import { RawClient } from '../helpers/raw-client.js';
import { receiveAndAck } from '../helpers/wait.js';
import { bridgeConfig, freePort, publishAll, subscriber, summaries, useBridgeHarness } from './harness.js';

const harness = useBridgeHarness();

describe('bridge between two brokers', () => {
  it('uplink down while messages are published locally, then up: every one arrives upstream, in order, logged once', async () => {
    const upstreamPort = await freePort();
    const upstreamDir = harness.freshDir();
    // The upstream subscriber's persistent session exists before the gateway ever connects.
    let upstream = await harness.startBroker(upstreamDir, [], upstreamPort);
    const first = await subscriber(upstreamPort, 'cloud-app', [{ topic: 'site/gw-17/#', qos: 2 }]);
    await first.disconnect();
    await upstream.broker.stop();

    const gateway = await harness.startGateway(harness.freshDir(), [
      bridgeConfig(upstreamPort, [{ pattern: 'sensors/#', direction: 'out', qos: 2, remote_prefix: 'site/gw-17/' }]),
    ]);
    await gateway.waitFor(/bridge cloud: cannot connect to mqtt:\/\/127\.0\.0\.1:\d+: .*ECONNREFUSED/);
    // The bridge's state, retained in memory: 0 now, 1 once it connects.
    const watcher = await subscriber(gateway.port, 'watcher', [{ topic: '$SYS/broker/bridges/+/state', qos: 0 }], true);
    const down = await watcher.next('publish');
    expect([down.topic, down.payload.toString(), down.retain]).toEqual(['$SYS/broker/bridges/cloud/state', '0', true]);
    const messages = Array.from({ length: 60 }, (_, index) => ({
      topic: `sensors/${index % 2 === 0 ? 'a' : 'b'}`,
      payload: `m${index}`,
      qos: (index % 3 === 0 ? 1 : 2) as 1 | 2,
    }));
    await publishAll(gateway.port, messages);

    upstream = await harness.startBroker(upstreamDir, [], upstreamPort);
    await gateway.waitFor(/bridge cloud: connected to mqtt:\/\/127\.0\.0\.1:\d+ as "gw-17"/);
    const up = await watcher.next('publish');
    expect([up.topic, up.payload.toString(), up.retain]).toEqual(['$SYS/broker/bridges/cloud/state', '1', false]);
    await watcher.close();
    const app = await subscriber(upstreamPort, 'cloud-app', []);
    const received = await receiveAndAck(app, messages.length);
    // Per topic in publish order, at the QoS it was published with (the topic line allows 2).
    for (const topic of ['a', 'b']) {
      expect(summaries(received).filter((message) => message.topic === `site/gw-17/sensors/${topic}`)).toEqual(
        messages.filter((message) => message.topic === `sensors/${topic}`).map(({ payload, qos }) => ({ topic: `site/gw-17/sensors/${topic}`, payload, qos })),
      );
    }
    // Attempts kept failing while the upstream was down, and that was said once.
    expect(gateway.log().match(/cannot connect/g)).toHaveLength(1);
    await app.close();
  });

  it('in: an upstream message reaches local persistent subscribers under its local name, QoS 2 exactly once', async () => {
    const upstream = await harness.startBroker(harness.freshDir());
    const gateway = await harness.startGateway(harness.freshDir(), [
      bridgeConfig(upstream.port, [{ pattern: 'commands/#', direction: 'in', qos: 2, remote_prefix: 'site/gw-17/' }]),
    ]);
    const local = await subscriber(gateway.port, 'device', [{ topic: 'commands/#', qos: 2 }]);
    await gateway.waitFor(/bridge cloud: subscribed upstream/);
    await publishAll(upstream.port, [
      { topic: 'site/gw-17/commands/a', payload: '1', qos: 1 },
      { topic: 'site/gw-17/commands/b', payload: '2', qos: 2 },
      { topic: 'site/gw-17/other', payload: 'not bridged', qos: 1 },
      { topic: 'site/gw-17/commands/c', payload: '3', qos: 2 },
    ]);
    expect(summaries(await receiveAndAck(local, 3))).toEqual([
      { topic: 'commands/a', payload: '1', qos: 1 },
      { topic: 'commands/b', payload: '2', qos: 2 },
      { topic: 'commands/c', payload: '3', qos: 2 },
    ]);
    // Nothing else: a marker is what comes next.
    await publishAll(upstream.port, [{ topic: 'site/gw-17/commands/marker', payload: 'end', qos: 1 }]);
    expect(summaries(await receiveAndAck(local, 1))).toEqual([{ topic: 'commands/marker', payload: 'end', qos: 1 }]);
    expect(local.received.filter((packet) => packet.cmd === 'publish')).toEqual([]);
    await local.close();
  });

  it("both on the same topics: what came in over the bridge never goes back out over it, and the echo ends there", async () => {
    const upstream = await harness.startBroker(harness.freshDir());
    const gateway = await harness.startGateway(harness.freshDir(), [bridgeConfig(upstream.port, [{ pattern: 'shared/#', direction: 'both', qos: 1 }])]);
    await gateway.waitFor(/bridge cloud: subscribed upstream/);
    const cloud = await subscriber(upstream.port, 'cloud-app', [{ topic: 'shared/#', qos: 1 }]);
    const local = await subscriber(gateway.port, 'device', [{ topic: 'shared/#', qos: 1 }]);
    // From upstream: arrives locally once, and is not sent back upstream.
    await publishAll(upstream.port, [{ topic: 'shared/down', payload: 'from cloud', qos: 1 }]);
    expect(summaries(await receiveAndAck(local, 1))).toEqual([{ topic: 'shared/down', payload: 'from cloud', qos: 1 }]);
    expect(summaries(await receiveAndAck(cloud, 1))).toEqual([{ topic: 'shared/down', payload: 'from cloud', qos: 1 }]);
    // From the gateway: arrives upstream once. Our upstream honours the bridge bit as Mosquitto
    // does (the bridge's subscriptions there are No Local), so nothing comes back over the bridge.
    await publishAll(gateway.port, [{ topic: 'shared/up', payload: 'from gateway', qos: 1 }]);
    expect(summaries(await receiveAndAck(cloud, 1))).toEqual([{ topic: 'shared/up', payload: 'from gateway', qos: 1 }]);
    expect(summaries(await receiveAndAck(local, 1))).toEqual([{ topic: 'shared/up', payload: 'from gateway', qos: 1 }]);
    // A marker from each side is the next thing each side sees: no message went round again.
    await publishAll(upstream.port, [{ topic: 'shared/marker', payload: 'end', qos: 1 }]);
    expect(summaries(await receiveAndAck(cloud, 1))).toEqual([{ topic: 'shared/marker', payload: 'end', qos: 1 }]);
    expect(summaries(await receiveAndAck(local, 1))).toEqual([{ topic: 'shared/marker', payload: 'end', qos: 1 }]);
    await cloud.roundTrip();
    await local.roundTrip();
    expect([...cloud.received, ...local.received].filter((packet) => packet.cmd === 'publish')).toEqual([]);
    await cloud.close();
    await local.close();
  });

  it('a client cannot connect with a client id reserved for bridges (CONNACK 0x02)', async () => {
    const gateway = await harness.startGateway(harness.freshDir(), [bridgeConfig(await freePort(), [{ pattern: 'a/#' }])]);
    for (const clientId of ['$bridge/cloud', '$bridge/other']) {
      const { client, connack } = await RawClient.session(gateway.port, { clientId, clean: false });
      expect(connack.returnCode).toBe(2);
      await client.closed;
    }
  });
});
