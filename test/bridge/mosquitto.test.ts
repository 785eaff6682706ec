/**
 * The bridge to a real Mosquitto upstream (the Debian package; .ci/run installs it): the bridge bit
 * keeps Mosquitto from echoing our messages back, an upstream restarted without persistence
 * (session present 0) gets our subscriptions and what it had not acknowledged again, a wrong
 * password is refused and logged once, TLS with a CA and a client certificate, and two bridges at
 * once, one of which cannot verify its upstream.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTlsFixture, type TlsFixture } from '../helpers/tls-fixture.js';
import { receiveAndAck } from '../helpers/wait.js';
import { bridgeConfig, freePort, publishAll, readableByAll, startGate, subscriber, summaries, useBridgeHarness } from './harness.js';

const harness = useBridgeHarness();

describe('bridge to Mosquitto', () => {
  it("with the bridge bit, 'both' on the same topics: each message arrives once on each side, no echo", async () => {
    const mosquitto = await harness.startMosquitto(await freePort());
    const gateway = await harness.startGateway(harness.freshDir(), [bridgeConfig(mosquitto.port, [{ pattern: 'shared/#', direction: 'both', qos: 2 }])]);
    await gateway.waitFor(/bridge cloud: subscribed upstream/);
    const cloud = await subscriber(mosquitto.port, 'cloud-app', [{ topic: 'shared/#', qos: 2 }]);
    const local = await subscriber(gateway.port, 'device', [{ topic: 'shared/#', qos: 2 }]);
    await publishAll(gateway.port, [{ topic: 'shared/up', payload: 'from gateway', qos: 2 }]);
    await publishAll(mosquitto.port, [{ topic: 'shared/down', payload: 'from cloud', qos: 2 }]);
    // Each side gets its own message directly and the other's over the bridge, in either order.
    const both = [
      { topic: 'shared/down', payload: 'from cloud', qos: 2 },
      { topic: 'shared/up', payload: 'from gateway', qos: 2 },
    ];
    const byTopic = (a: { topic: string }, b: { topic: string }) => a.topic.localeCompare(b.topic);
    expect(summaries(await receiveAndAck(local, 2)).sort(byTopic)).toEqual(both);
    expect(summaries(await receiveAndAck(cloud, 2)).sort(byTopic)).toEqual(both);
    // A marker from each side is the next thing each side sees: nothing came round again.
    await publishAll(mosquitto.port, [{ topic: 'shared/marker', payload: 'end', qos: 1 }]);
    expect(summaries(await receiveAndAck(local, 1))).toEqual([{ topic: 'shared/marker', payload: 'end', qos: 1 }]);
    expect(summaries(await receiveAndAck(cloud, 1))).toEqual([{ topic: 'shared/marker', payload: 'end', qos: 1 }]);
    await local.roundTrip();
    await cloud.roundTrip();
    expect([...local.received, ...cloud.received].filter((packet) => packet.cmd === 'publish')).toEqual([]);
    await local.close();
    await cloud.close();
  });

  it('Mosquitto restarted without persistence (session present 0): we subscribe again and send what it had not acknowledged', async () => {
    const port = await freePort();
    const gate = await startGate(port);
    harness.onTeardown(() => gate.close());
    let mosquitto = await harness.startMosquitto(port);
    const gateway = await harness.startGateway(harness.freshDir(), [
      bridgeConfig(gate.port, [
        { pattern: 'sensors/#', direction: 'out', qos: 1 },
        { pattern: 'commands/#', direction: 'in', qos: 1 },
      ]),
    ]);
    gate.open();
    await gateway.waitFor(/bridge cloud: subscribed upstream/);
    gate.shut();
    await mosquitto.stop();
    await gateway.waitFor(/bridge cloud: connection to .* lost/);
    const messages = Array.from({ length: 20 }, (_, index) => ({ topic: 'sensors/t', payload: `m${index}`, qos: 1 as const }));
    await publishAll(gateway.port, messages);

    mosquitto = await harness.startMosquitto(port);
    const cloud = await subscriber(port, 'cloud-app', [{ topic: 'sensors/#', qos: 1 }]);
    const local = await subscriber(gateway.port, 'device', [{ topic: 'commands/#', qos: 1 }]);
    gate.open();
    await gateway.waitFor(/session present: false[\s\S]*session present: false[\s\S]*subscribed upstream/);
    expect(summaries(await receiveAndAck(cloud, messages.length))).toEqual(messages);
    await publishAll(port, [{ topic: 'commands/x', payload: 'after restart', qos: 1 }]);
    expect(summaries(await receiveAndAck(local, 1))).toEqual([{ topic: 'commands/x', payload: 'after restart', qos: 1 }]);
    await cloud.close();
    await local.close();
  });

  it('retained flags are forwarded as published, both ways; QoS 0 goes while connected and is not queued while down', async () => {
    const port = await freePort();
    const gate = await startGate(port);
    harness.onTeardown(() => gate.close());
    const mosquitto = await harness.startMosquitto(port);
    const gateway = await harness.startGateway(harness.freshDir(), [bridgeConfig(gate.port, [{ pattern: 'status/#', direction: 'both', qos: 1 }])]);
    gate.open();
    await gateway.waitFor(/bridge cloud: subscribed upstream/);
    // Forwarding is asynchronous: a probe on each side, subscribed first, sees both arrive there.
    const probes = [await subscriber(port, 'cloud-probe', [{ topic: 'status/#', qos: 1 }], true), await subscriber(gateway.port, 'probe', [{ topic: 'status/#', qos: 1 }], true)];
    await publishAll(gateway.port, [{ topic: 'status/gw', payload: 'online', qos: 1, retain: true }]);
    await publishAll(mosquitto.port, [{ topic: 'status/cloud', payload: 'up', qos: 1, retain: true }]);
    for (const probe of probes) {
      await receiveAndAck(probe, 2);
      await probe.close();
    }
    // Subscribers that come later get both as retained messages, on either side.
    const marker = { topic: 'status/marker', payload: 'end', qos: 1 as const };
    const cloud = await subscriber(port, 'cloud-app', [{ topic: 'status/#', qos: 1 }]);
    const local = await subscriber(gateway.port, 'device', [{ topic: 'status/#', qos: 1 }]);
    for (const client of [cloud, local]) {
      const retained = await receiveAndAck(client, 2);
      expect(retained.map(({ topic, payload, retain }) => [topic, payload.toString(), retain]).sort()).toEqual([
        ['status/cloud', 'up', true],
        ['status/gw', 'online', true],
      ]);
    }
    // QoS 0: forwarded while connected; published while the uplink is down, it is not queued.
    await publishAll(gateway.port, [{ topic: 'status/live', payload: 'qos0 up', qos: 0 }, marker]);
    expect(summaries(await receiveAndAck(cloud, 2))).toEqual([{ topic: 'status/live', payload: 'qos0 up', qos: 0 }, marker]);
    gate.shut();
    await gateway.waitFor(/bridge cloud: connection to .* lost/);
    await publishAll(gateway.port, [{ topic: 'status/live', payload: 'qos0 while down', qos: 0 }, { ...marker, payload: 'queued' }]);
    gate.open();
    // The first marker may come once more: if the gate shut before Mosquitto's PUBACK for it reached
    // the bridge, the bridge sends it again once reconnected, a duplicate QoS 1 allows. Nothing else
    // comes before the queued marker: not the QoS 0 message published while the uplink was down.
    let next = summaries(await receiveAndAck(cloud, 1))[0];
    while (next?.payload === 'end') next = summaries(await receiveAndAck(cloud, 1))[0];
    expect(next).toEqual({ ...marker, payload: 'queued' });
    await cloud.close();
    await local.close();
  });

  it('a wrong password: refused, backed off, logged once; the right one (password_file) connects', async () => {
    const dir = harness.freshDir();
    const passwords = join(dir, 'passwords');
    execFileSync('mosquitto_passwd', ['-b', '-c', passwords, 'gw', 'right']);
    readableByAll(dir);
    const mosquitto = await harness.startMosquitto(await freePort(), [`password_file ${passwords}`, 'allow_anonymous false'], dir);
    const gateway = await harness.startGateway(harness.freshDir(), [
      bridgeConfig(mosquitto.port, [{ pattern: 'a/#' }], { username: 'gw', password: 'wrong' }),
    ]);
    // Several attempts, each refused by Mosquitto.
    const refused = /Sending CONNACK to \S+ \(0, [45]\)/g;
    await waitUntil(() => (mosquitto.log().match(refused)?.length ?? 0) >= 4, mosquitto.child);
    expect(gateway.log().match(/refused with CONNACK [45]/g)).toHaveLength(1);
    await gateway.broker.stop();

    const passwordFile = join(dir, 'bridge-password');
    execFileSync('sh', ['-c', `printf 'right\\n' > ${passwordFile}`]);
    const fixed = await harness.startGateway(harness.freshDir(), [
      bridgeConfig(mosquitto.port, [{ pattern: 'a/#' }], { username: 'gw', password_file: passwordFile }),
    ]);
    await fixed.waitFor(/bridge cloud: connected/);
  });

  describe('TLS', () => {
    let tls: TlsFixture;
    beforeAll(() => {
      tls = makeTlsFixture();
      tls.client('gw-17');
      readableByAll(tls.dir);
    });
    afterAll(() => tls.remove());

    it('to a Mosquitto that requires a client certificate, beside a bridge whose CA does not verify its upstream', async () => {
      const tlsPort = await freePort();
      const client = tls.client('gw-17');
      const mosquitto = await harness.startMosquitto(await freePort(), [
        `listener ${tlsPort} 127.0.0.1`,
        `cafile ${tls.ca.certFile}`,
        `certfile ${tls.server.certFile}`,
        `keyfile ${tls.server.keyFile}`,
        'require_certificate true',
        'use_identity_as_username true',
      ]);
      const gateway = await harness.startGateway(harness.freshDir(), [
        bridgeConfig(tlsPort, [{ pattern: 'sensors/#', qos: 1 }], {
          address: `mqtts://127.0.0.1:${tlsPort}`,
          tls: { ca: tls.ca.certFile, cert: client.certFile, key: client.keyFile },
        }),
        bridgeConfig(tlsPort, [{ pattern: 'sensors/#', qos: 1 }], {
          name: 'rogue',
          client_id: 'gw-rogue',
          address: `mqtts://127.0.0.1:${tlsPort}`,
          tls: { ca: tls.rogueCa.certFile, cert: client.certFile, key: client.keyFile },
        }),
      ]);
      await gateway.waitFor(/bridge cloud: connected to mqtts:/);
      await gateway.waitFor(/error bridge rogue: cannot connect to mqtts:\/\/127\.0\.0\.1:\d+: .*(self.signed|unable to verify|certificate)/i);
      const cloud = await subscriber(mosquitto.port, 'cloud-app', [{ topic: 'sensors/#', qos: 1 }]);
      await publishAll(gateway.port, [{ topic: 'sensors/t', payload: 'over tls', qos: 1 }]);
      expect(summaries(await receiveAndAck(cloud, 1))).toEqual([{ topic: 'sensors/t', payload: 'over tls', qos: 1 }]);
      await cloud.close();
    });
  });
});

/** Waits until `done()` holds, re-checking whenever `child` prints something. */
function waitUntil(done: () => boolean, child: import('node:child_process').ChildProcess): Promise<void> {
  return new Promise((resolve, reject) => {
    const check = () => {
      if (done()) {
        child.stderr?.off('data', check);
        child.stdout?.off('data', check);
        resolve();
      } else if (child.exitCode !== null) {
        reject(new Error('the process ended first'));
      }
    };
    child.stderr?.on('data', check);
    child.stdout?.on('data', check);
    check();
  });
}
