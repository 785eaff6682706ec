/**
 * The bridge against a scripted upstream on a raw socket, packet by packet: what it sends in
 * CONNECT, how it re-sends after a connection drops or the gateway is SIGKILLed (DUP=1, the same
 * packet ids, PUBREL once PUBREC was stored), QoS 2 exactly once inbound, and what it does with an
 * upstream that refuses, never answers, or answers wrongly. The gateway is a child process.
 */
import type { IConnectPacket } from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { receiveAndAck } from '../helpers/wait.js';
import { bridgeConfig, publishAll, subscriber, summaries, useBridgeHarness, type FakeConnection } from './harness.js';

const harness = useBridgeHarness();

/** Accepts the bridge's connection and answers its SUBSCRIBE, if it makes one. */
async function acceptBridge(connection: FakeConnection, sessionPresent = false, subscribes = false): Promise<IConnectPacket> {
  const connect = await connection.next('connect');
  connection.accept(sessionPresent);
  if (subscribes) {
    const subscribe = await connection.next('subscribe');
    connection.send({ cmd: 'suback', messageId: subscribe.messageId, granted: subscribe.subscriptions.map(({ qos }) => qos) });
  }
  return connect;
}

describe('bridge against a scripted upstream', () => {
  it('CONNECT carries the client id, CleanSession 0, the bridge bit, the will; then SUBSCRIBE and the state 1', async () => {
    const fake = await harness.startFake();
    await harness.startGateway(harness.freshDir(), [
      bridgeConfig(fake.port, [
        { pattern: 'sensors/#', direction: 'out', qos: 1, remote_prefix: 'site/gw-17/' },
        { pattern: 'commands/#', direction: 'in', qos: 2, remote_prefix: 'site/gw-17/' },
      ], { username: 'gw', password: 'secret', keepalive: 30 }),
    ]);
    const connection = await fake.connection(1);
    const connect = await connection.next('connect');
    expect(connection.protocolLevel).toBe(0x84);
    expect(connect).toMatchObject({ clientId: 'gw-17', clean: false, keepalive: 30, username: 'gw', bridgeMode: true });
    expect(connect.password?.toString()).toBe('secret');
    expect(connect.will).toMatchObject({ topic: '$SYS/broker/connection/gw-17/state', qos: 1, retain: true });
    expect(connect.will?.payload.toString()).toBe('0');
    connection.accept();
    const subscribe = await connection.next('subscribe');
    expect(subscribe.subscriptions.map(({ topic, qos }) => ({ topic, qos }))).toEqual([{ topic: 'site/gw-17/commands/#', qos: 2 }]);
    const state = await connection.next('publish');
    expect({ topic: state.topic, payload: state.payload.toString(), retain: state.retain, qos: state.qos }).toEqual({
      topic: '$SYS/broker/connection/gw-17/state',
      payload: '1',
      retain: true,
      qos: 0,
    });
  });

  it('a connection that drops mid-stream: unacknowledged messages go again with DUP=1 and their packet ids, then the rest', async () => {
    const fake = await harness.startFake();
    const gateway = await harness.startGateway(harness.freshDir(), [
      bridgeConfig(fake.port, [{ pattern: 'sensors/#', qos: 1 }], { max_inflight: 3, notifications: false }),
    ]);
    const first = await fake.connection(1);
    await acceptBridge(first);
    await gateway.waitFor(/bridge cloud: connected/);
    await publishAll(gateway.port, ['m1', 'm2', 'm3', 'm4', 'm5'].map((payload) => ({ topic: 'sensors/t', payload, qos: 1 as const })));
    // Three in flight (max_inflight), the upstream acknowledges the first, then the connection drops.
    const sent = await first.take('publish', 3);
    expect(sent.map(({ payload, dup }) => [payload.toString(), dup])).toEqual([['m1', false], ['m2', false], ['m3', false]]);
    first.send({ cmd: 'puback', messageId: sent[0]!.messageId! });
    const more = await first.next('publish'); // m4 takes m1's place in flight: m1 was acknowledged
    expect(more.payload.toString()).toBe('m4');
    first.socket.destroy();

    const second = await fake.connection(2);
    await acceptBridge(second, true);
    const again = await second.take('publish', 3);
    expect(again.map(({ payload, dup, messageId }) => [payload.toString(), dup, messageId])).toEqual([
      ['m2', true, sent[1]!.messageId],
      ['m3', true, sent[2]!.messageId],
      ['m4', true, more.messageId],
    ]);
    // Three in flight again: m5 waits for room, and was never sent, so DUP=0.
    second.send({ cmd: 'puback', messageId: again[0]!.messageId! });
    const last = await second.next('publish');
    expect([last.payload.toString(), last.dup]).toEqual(['m5', false]);
    for (const publish of [...again.slice(1), last]) second.send({ cmd: 'puback', messageId: publish.messageId! });
    // Nothing is left: the next local message is the next thing the upstream gets.
    await publishAll(gateway.port, [{ topic: 'sensors/t', payload: 'marker', qos: 1 }]);
    expect((await second.next('publish')).payload.toString()).toBe('marker');
    expect(second.received.filter((packet) => packet.cmd === 'publish')).toEqual([]);
  });

  it('QoS 2 out: PUBREC is stored, so after a SIGKILL of the gateway it continues with PUBREL, never the PUBLISH', async () => {
    const fake = await harness.startFake();
    const dataDir = harness.freshDir();
    const config = [bridgeConfig(fake.port, [{ pattern: 'alerts/#', qos: 2 }], { notifications: false })];
    let gateway = await harness.startGateway(dataDir, config);
    const first = await fake.connection(1);
    await acceptBridge(first);
    await gateway.waitFor(/bridge cloud: connected/);
    await publishAll(gateway.port, [{ topic: 'alerts/fire', payload: 'once', qos: 2 }]);
    const publish = await first.next('publish');
    expect(publish.qos).toBe(2);
    first.send({ cmd: 'pubrec', messageId: publish.messageId! });
    // PUBREL leaves only after PUBREC's transition is stored [MQTT-4.3.3-1].
    expect((await first.next('pubrel')).messageId).toBe(publish.messageId);
    await gateway.broker.kill();

    gateway = await harness.startGateway(dataDir, config);
    const second = await fake.connection(2);
    await acceptBridge(second, true);
    expect((await second.next('pubrel')).messageId).toBe(publish.messageId);
    second.send({ cmd: 'pubcomp', messageId: publish.messageId! });
    await publishAll(gateway.port, [{ topic: 'alerts/next', payload: 'marker', qos: 2 }]);
    const next = await second.next('publish');
    expect({ topic: next.topic, payload: next.payload.toString(), dup: next.dup }).toEqual({ topic: 'alerts/next', payload: 'marker', dup: false });
    expect(second.received.filter((packet) => packet.cmd === 'publish')).toEqual([]);
  });

  it('QoS 2 in: stored before PUBREC, and a re-send after a SIGKILL of the gateway is not delivered again', async () => {
    const fake = await harness.startFake();
    const dataDir = harness.freshDir();
    const config = [bridgeConfig(fake.port, [{ pattern: 'commands/#', direction: 'in', qos: 2 }], { notifications: false })];
    let gateway = await harness.startGateway(dataDir, config);
    const device = await subscriber(gateway.port, 'device', [{ topic: 'commands/#', qos: 2 }]);
    await device.close();
    const first = await fake.connection(1);
    await acceptBridge(first, false, true);
    first.send({ cmd: 'publish', topic: 'commands/go', payload: Buffer.from('once'), qos: 2, messageId: 7, retain: false, dup: false });
    expect((await first.next('pubrec')).messageId).toBe(7);
    await gateway.broker.kill();

    gateway = await harness.startGateway(dataDir, config);
    const second = await fake.connection(2);
    await acceptBridge(second, true, true);
    // The upstream did not see our PUBREC as final: it sends the PUBLISH again [MQTT-4.3.3-2].
    second.send({ cmd: 'publish', topic: 'commands/go', payload: Buffer.from('once'), qos: 2, messageId: 7, retain: false, dup: true });
    expect((await second.next('pubrec')).messageId).toBe(7);
    second.send({ cmd: 'pubrel', messageId: 7 });
    expect((await second.next('pubcomp')).messageId).toBe(7);
    second.send({ cmd: 'publish', topic: 'commands/marker', payload: Buffer.from('end'), qos: 1, messageId: 8, retain: false, dup: false });
    await second.next('puback');
    const back = await subscriber(gateway.port, 'device', []);
    expect(summaries(await receiveAndAck(back, 2))).toEqual([
      { topic: 'commands/go', payload: 'once', qos: 2 },
      { topic: 'commands/marker', payload: 'end', qos: 1 },
    ]);
    await back.roundTrip();
    expect(back.received.filter((packet) => packet.cmd === 'publish')).toEqual([]);
    await back.close();
  });

  it('session present 0 upstream: QoS 2 packet ids held from its lost session do not swallow new messages', async () => {
    const fake = await harness.startFake();
    const gateway = await harness.startGateway(harness.freshDir(), [
      bridgeConfig(fake.port, [{ pattern: 'commands/#', direction: 'in', qos: 2 }], { notifications: false }),
    ]);
    const device = await subscriber(gateway.port, 'device', [{ topic: 'commands/#', qos: 2 }]);
    const first = await fake.connection(1);
    await acceptBridge(first, false, true);
    first.send({ cmd: 'publish', topic: 'commands/a', payload: Buffer.from('first'), qos: 2, messageId: 7, retain: false, dup: false });
    await first.next('pubrec');
    first.socket.destroy(); // no PUBREL: the gateway holds packet id 7
    const second = await fake.connection(2);
    await acceptBridge(second, false, true); // the upstream lost our session
    second.send({ cmd: 'publish', topic: 'commands/b', payload: Buffer.from('second'), qos: 2, messageId: 7, retain: false, dup: false });
    expect((await second.next('pubrec')).messageId).toBe(7);
    expect(summaries(await receiveAndAck(device, 2))).toEqual([
      { topic: 'commands/a', payload: 'first', qos: 2 },
      { topic: 'commands/b', payload: 'second', qos: 2 },
    ]);
    await device.close();
  });

  it('an upstream that closes the connection before CONNACK with the bridge bit: tried once without it, logged once', async () => {
    const fake = await harness.startFake();
    const gateway = await harness.startGateway(harness.freshDir(), [bridgeConfig(fake.port, [{ pattern: 'a/#' }], { notifications: false })]);
    const first = await fake.connection(1);
    expect(first.protocolLevel).toBe(0x84);
    first.socket.destroy(); // as RabbitMQ does
    const second = await fake.connection(2);
    expect(second.protocolLevel).toBe(0x04);
    second.socket.destroy(); // any later failure is an ordinary one: the bit stays off for this address
    const third = await fake.connection(3);
    expect(third.protocolLevel).toBe(0x04);
    await acceptBridge(third);
    await gateway.waitFor(/bridge cloud: connected/);
    expect(gateway.log().match(/trying without it/g)).toHaveLength(1);
  });

  it('an upstream that answers the bridge bit with CONNACK 1 (unacceptable protocol version): tried without it', async () => {
    const fake = await harness.startFake();
    const gateway = await harness.startGateway(harness.freshDir(), [bridgeConfig(fake.port, [{ pattern: 'a/#' }], { notifications: false })]);
    const first = await fake.connection(1);
    expect(first.protocolLevel).toBe(0x84);
    first.send({ cmd: 'connack', returnCode: 1, sessionPresent: false });
    const second = await fake.connection(2);
    expect(second.protocolLevel).toBe(0x04);
    await acceptBridge(second);
    await gateway.waitFor(/bridge cloud: connected/);
    expect(gateway.log()).toMatch(/does not take the bridge bit \(0x80\) in CONNECT \(refused with CONNACK 1 \(unacceptable protocol version\)\): trying without it/);
  });

  it('try_private: false never sets the bit', async () => {
    const fake = await harness.startFake();
    await harness.startGateway(harness.freshDir(), [bridgeConfig(fake.port, [{ pattern: 'a/#' }], { try_private: false })]);
    const connection = await fake.connection(1);
    expect(connection.protocolLevel).toBe(0x04);
  });

  it('refused (CONNACK 5): backed off and logged once, however many attempts; then connects', async () => {
    const fake = await harness.startFake();
    const gateway = await harness.startGateway(harness.freshDir(), [bridgeConfig(fake.port, [{ pattern: 'a/#' }], { notifications: false })]);
    for (let attempt = 1; attempt <= 6; attempt++) {
      const connection = await fake.connection(attempt);
      connection.send({ cmd: 'connack', returnCode: 5, sessionPresent: false });
    }
    await acceptBridge(await fake.connection(7));
    await gateway.waitFor(/bridge cloud: connected/);
    expect(gateway.log().match(/refused with CONNACK 5 \(not authorized\)/g)).toHaveLength(1);
    expect(gateway.log()).toMatch(/error bridge cloud: mqtt:\/\/127\.0\.0\.1:\d+ refused with CONNACK 5 \(not authorized\); check the bridge's username, password or certificate; next attempt in/);
  });

  it('an upstream that never answers CONNECT: given up after connect_timeout_ms, tried again', async () => {
    const fake = await harness.startFake();
    const gateway = await harness.startGateway(harness.freshDir(), [
      bridgeConfig(fake.port, [{ pattern: 'a/#' }], { connect_timeout_ms: 300, notifications: false }),
    ]);
    const silent = await fake.connection(1);
    await silent.closed; // the gateway gives up on it
    await gateway.waitFor(/bridge cloud: cannot connect to .*: no CONNACK in time/);
    await acceptBridge(await fake.connection(2));
    await gateway.waitFor(/bridge cloud: connected/);
  });

  it('an upstream that answers a QoS 2 PUBLISH with PUBACK: a clear error, the message stays queued', async () => {
    const fake = await harness.startFake();
    const gateway = await harness.startGateway(harness.freshDir(), [bridgeConfig(fake.port, [{ pattern: 'a/#', qos: 2 }], { notifications: false })]);
    const first = await fake.connection(1);
    await acceptBridge(first);
    await gateway.waitFor(/bridge cloud: connected/);
    await publishAll(gateway.port, [{ topic: 'a/b', payload: 'x', qos: 2 }]);
    const publish = await first.next('publish');
    first.send({ cmd: 'puback', messageId: publish.messageId! }); // as RabbitMQ does
    await first.closed;
    await gateway.waitFor(/answered our QoS 2 PUBLISH \d+ with PUBACK: .*Bridge to this upstream at QoS 1/);
    const second = await fake.connection(2);
    await acceptBridge(second, true);
    const again = await second.next('publish');
    expect({ payload: again.payload.toString(), dup: again.dup, qos: again.qos }).toEqual({ payload: 'x', dup: true, qos: 2 });
  });
});
