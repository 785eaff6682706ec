/**
 * MQTT over WebSocket (issue 15): the same CONNECT handling, ACL, limits, back-pressure and
 * durability as TCP, through listeners[].websocket. MQTT.js over ws:// and wss:// for ordinary
 * flows; a WebSocket written by hand (test/helpers/raw-websocket.ts) for what a library will not
 * do: an unfinished frame, a text frame, a client that does not read.
 */
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import mqttPacket, { type Packet } from 'mqtt-packet';
import { afterEach, describe, expect, it } from 'vitest';
import type { BrokerOptions } from '../../src/server/broker.js';
import { startBroker, type RunningBroker } from '../helpers/in-process.js';
import { makeDataDir, removeDataDir } from '../helpers/broker-process.js';
import { RawClient } from '../helpers/raw-client.js';
import { frame, unframe, upgrade, type Upgraded } from '../helpers/raw-websocket.js';
import { makeTlsFixture } from '../helpers/tls-fixture.js';
import { LogLines } from './hardening-helpers.js';

const running: RunningBroker[] = [];
const clients: MqttClient[] = [];
const sockets: Upgraded[] = [];
const cleanups: Array<() => void> = [];
afterEach(async () => {
  await Promise.all(clients.splice(0).map((client) => client.endAsync(true)));
  for (const { socket } of sockets.splice(0)) socket.destroy();
  for (const broker of running.splice(0)) await broker.stop();
  for (const cleanup of cleanups.splice(0)) cleanup();
});

/** A broker with a plain listener (its `port`) and a WebSocket one (`wsPort`). */
async function webSocketBroker(options: BrokerOptions = {}, websocket: Partial<NonNullable<BrokerOptions['listeners']>[number]> = {}) {
  const broker = await startBroker({
    listeners: [
      { host: '127.0.0.1', port: 0 },
      { host: '127.0.0.1', port: 0, websocket: true, ...websocket },
    ],
    sysInterval: 0,
    ...options,
  });
  running.push(broker);
  return { ...broker, wsPort: broker.broker.addresses()[1]!.port };
}

async function client(url: string, options: mqtt.IClientOptions = {}): Promise<MqttClient> {
  const connected = await mqtt.connectAsync(url, { reconnectPeriod: 0, connectTimeout: 5000, ...options });
  clients.push(connected);
  return connected;
}

function nextMessage(subscriber: MqttClient): Promise<{ topic: string; payload: string; qos: number }> {
  return new Promise((resolve) => subscriber.once('message', (topic, payload, packet) => resolve({ topic, payload: payload.toString(), qos: packet.qos })));
}

async function raw(port: number, options: Parameters<typeof upgrade>[1] = {}): Promise<Upgraded> {
  const upgraded = await upgrade(port, options);
  sockets.push(upgraded);
  upgraded.socket.on('error', () => {});
  return upgraded;
}

/** The MQTT packets that arrive in the server's binary frames, from now on. */
function mqttReader(upgraded: Upgraded): { packets: Packet[]; next: () => Promise<Packet>; closed: Promise<void> } {
  const parser = mqttPacket.parser({ protocolVersion: 4 });
  const packets: Packet[] = [];
  const waiters: Array<() => void> = [];
  parser.on('packet', (packet: Packet) => {
    packets.push(packet);
    waiters.splice(0).forEach((wake) => wake());
  });
  let pending = upgraded.rest;
  const feed = (chunk: Buffer) => {
    const { payloads, rest } = unframe(Buffer.concat([pending, chunk]));
    pending = rest;
    for (const { opcode, payload } of payloads) if (opcode === 2) parser.parse(payload);
  };
  feed(Buffer.alloc(0));
  upgraded.socket.on('data', feed);
  const closed = once(upgraded.socket, 'close').then(() => undefined);
  let taken = 0;
  const next = async (): Promise<Packet> => {
    while (packets.length <= taken) await Promise.race([new Promise<void>((resolve) => waiters.push(resolve)), closed.then(() => Promise.reject(new Error('closed')))]);
    return packets[taken++]!;
  };
  return { packets, next, closed };
}

const connectPacket = (clientId: string, keepalive = 0) =>
  mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive, clientId });

describe('MQTT over WebSocket with MQTT.js', () => {
  it('ws://: a WebSocket subscriber gets what a TCP client publishes at QoS 1, and the other way round', async () => {
    const { port, wsPort } = await webSocketBroker();
    const overWebSocket = await client(`ws://127.0.0.1:${wsPort}/mqtt`, { clientId: 'ws-1' });
    const overTcp = await client(`mqtt://127.0.0.1:${port}`, { clientId: 'tcp-1' });
    await overWebSocket.subscribeAsync('to-ws/#', { qos: 1 });
    await overTcp.subscribeAsync('to-tcp/#', { qos: 1 });
    const atWebSocket = nextMessage(overWebSocket);
    await overTcp.publishAsync('to-ws/a', 'from tcp', { qos: 1 });
    expect(await atWebSocket).toEqual({ topic: 'to-ws/a', payload: 'from tcp', qos: 1 });
    const atTcp = nextMessage(overTcp);
    await overWebSocket.publishAsync('to-tcp/b', 'from ws', { qos: 1 });
    expect(await atTcp).toEqual({ topic: 'to-tcp/b', payload: 'from ws', qos: 1 });
  });

  it('wss://: TLS with the listener’s certificate, and a client certificate naming the user (cert_username)', async () => {
    const fixture = makeTlsFixture();
    cleanups.push(() => fixture.remove());
    const alice = fixture.client('alice');
    const log = new LogLines();
    const { wsPort } = await webSocketBroker({ log }, { tls: { cert: fixture.server.cert, key: fixture.server.key, ca: fixture.ca.cert, certUsername: true } });
    const secure = await client(`wss://localhost:${wsPort}/mqtt`, { clientId: 'wss-1', ca: fixture.ca.cert, cert: alice.cert, key: alice.key });
    await secure.subscribeAsync('s/#', { qos: 1 });
    const received = nextMessage(secure);
    await secure.publishAsync('s/1', 'secure', { qos: 1 });
    expect(await received).toEqual({ topic: 's/1', payload: 'secure', qos: 1 });
    const connectLine = log.fields[log.lines.findIndex((line) => /client "wss-1" connected/.test(line))];
    expect(connectLine).toMatchObject({ clientId: 'wss-1', user: 'alice', listener: expect.stringMatching(/\(WebSocket, TLS\)$/) });
  });

  it('a persistent session over WebSocket comes back after a restart with the QoS 1 message queued for it', async () => {
    const dataDir = makeDataDir();
    cleanups.push(() => removeDataDir(dataDir));
    const listeners = [{ host: '127.0.0.1', port: 0, websocket: true }];
    let broker = await startBroker({ dataDir, listeners, sysInterval: 0 });
    const url = () => `ws://127.0.0.1:${broker.port}/mqtt`;
    const subscriber = await client(url(), { clientId: 'durable-ws', clean: false });
    await subscriber.subscribeAsync('d/#', { qos: 1 });
    await subscriber.endAsync();
    const publisher = await client(url(), { clientId: 'pub-ws' });
    await publisher.publishAsync('d/1', 'kept', { qos: 1 });
    await publisher.endAsync();
    await broker.stop();

    broker = await startBroker({ dataDir, listeners, sysInterval: 0 });
    running.push(broker);
    const back = mqtt.connect(url(), { clientId: 'durable-ws', clean: false, reconnectPeriod: 0 });
    clients.push(back);
    const received = nextMessage(back);
    const connack = await new Promise<{ sessionPresent: boolean }>((resolve) => back.once('connect', resolve));
    expect(connack.sessionPresent).toBe(true);
    expect(await received).toEqual({ topic: 'd/1', payload: 'kept', qos: 1 });
  });

  it('the ACL applies over WebSocket as over TCP', async () => {
    const dir = makeDataDir('acl-ws-');
    cleanups.push(() => removeDataDir(dir));
    const aclFile = join(dir, 'acl');
    writeFileSync(aclFile, 'topic readwrite open/#\n');
    const { port, wsPort } = await webSocketBroker({ aclFile });
    const subscriber = await client(`ws://127.0.0.1:${wsPort}/mqtt`, { clientId: 'acl-ws' });
    // Refused with 0x80 in SUBACK, over WebSocket as over TCP [MQTT-3.9.3-2].
    expect(await subscriber.subscribeAsync('closed/#', { qos: 1 }).then(() => 'granted', () => 'refused')).toBe('refused');
    await subscriber.subscribeAsync('open/#', { qos: 1 });
    const publisher = await client(`mqtt://127.0.0.1:${port}`, { clientId: 'acl-tcp' });
    const received = nextMessage(subscriber);
    await publisher.publishAsync('closed/x', 'not for you', { qos: 1 });
    await publisher.publishAsync('open/x', 'for you', { qos: 1 });
    expect(await received).toEqual({ topic: 'open/x', payload: 'for you', qos: 1 });
  });
});

describe('the WebSocket handshake', () => {
  it('serves /mqtt only, chooses the subprotocol mqtt (or mqttv3.1), refuses other subprotocols and origins not allowed', async () => {
    const log = new LogLines();
    const { wsPort } = await webSocketBroker({ log }, { allowedOrigins: ['https://dashboard.example'] });
    expect((await raw(wsPort, { path: '/other' })).status).toBe(404);
    const both = await raw(wsPort, { protocols: 'mqttv3.1, mqtt' });
    expect(both.status).toBe(101);
    // [MQTT-6.0.0-4] the server selects "mqtt"
    expect(both.headers['sec-websocket-protocol']).toBe('mqtt');
    expect((await raw(wsPort, { protocols: 'mqttv3.1' })).headers['sec-websocket-protocol']).toBe('mqttv3.1');
    expect((await raw(wsPort, { protocols: 'chat' })).status).toBe(400);
    expect((await raw(wsPort, { protocols: 'mqtt', origin: 'https://evil.example' })).status).toBe(403);
    expect((await raw(wsPort, { protocols: 'mqtt', origin: 'https://dashboard.example' })).status).toBe(101);
    // Not a browser page: no Origin to check.
    expect((await raw(wsPort, { protocols: 'mqtt' })).status).toBe(101);
    expect(log.matching(/WebSocket upgrade from .* refused: origin "https:\/\/evil.example" is not in allowed_origins/)).toHaveLength(1);
    const plain = await fetch(`http://127.0.0.1:${wsPort}/mqtt`);
    expect(plain.status).toBe(426);
  });

  it('a text frame closes the connection [MQTT-6.0.0-1]', async () => {
    const { wsPort } = await webSocketBroker();
    const upgraded = await raw(wsPort, { protocols: 'mqtt' });
    const reader = mqttReader(upgraded);
    upgraded.socket.write(frame(connectPacket('text-frame')));
    expect((await reader.next()).cmd).toBe('connack');
    upgraded.socket.write(frame(Buffer.from('hello'), { opcode: 1 }));
    await reader.closed;
  });

  it('MQTT packets split across WebSocket messages, and several in one message, are read as one stream', async () => {
    const { wsPort } = await webSocketBroker();
    const upgraded = await raw(wsPort, { protocols: 'mqtt' });
    const reader = mqttReader(upgraded);
    const connect = connectPacket('split');
    upgraded.socket.write(Buffer.concat([frame(connect.subarray(0, 5)), frame(connect.subarray(5))]));
    expect((await reader.next()).cmd).toBe('connack');
    const ping = mqttPacket.generate({ cmd: 'pingreq' });
    upgraded.socket.write(frame(Buffer.concat([ping, ping, ping])));
    for (let count = 0; count < 3; count++) expect((await reader.next()).cmd).toBe('pingresp');
  });
});

describe('limits over WebSocket', () => {
  it('max_connections counts WebSocket clients with TCP ones; a socket beyond it is closed before its upgrade', async () => {
    const { port, wsPort, broker } = await webSocketBroker({ maxConnections: 2 });
    await client(`ws://127.0.0.1:${wsPort}/mqtt`, { clientId: 'first' });
    await client(`mqtt://127.0.0.1:${port}`, { clientId: 'second' });
    const third = await raw(wsPort, { protocols: 'mqtt' });
    expect(third.status).toBe(0); // closed without an answer
    const fourth = await RawClient.connect(port);
    await fourth.closed;
    expect(broker.counters.connectionsRefused).toBe(2);
  });

  it('a WebSocket message larger than max_packet_size closes the connection before it is buffered', async () => {
    const log = new LogLines();
    const { wsPort } = await webSocketBroker({ log, maxPacketSize: 1024 });
    const upgraded = await raw(wsPort, { protocols: 'mqtt' });
    const reader = mqttReader(upgraded);
    upgraded.socket.write(frame(connectPacket('big')));
    expect((await reader.next()).cmd).toBe('connack');
    // Only the header of a 1 MiB message: refused on it.
    upgraded.socket.write(frame(Buffer.alloc(16), { declaredLength: 1024 * 1024 }));
    await reader.closed;
    await log.waitFor(/client "big" disconnected: socket error: .*payload/i);
  });

  it('a frame left unfinished runs packet_timeout_ms like a packet underway, keepalive 0 or not', async () => {
    const log = new LogLines();
    const { wsPort } = await webSocketBroker({ log, packetTimeoutMs: 300 });
    const upgraded = await raw(wsPort, { protocols: 'mqtt' });
    const reader = mqttReader(upgraded);
    upgraded.socket.write(frame(connectPacket('stalled', 0)));
    expect((await reader.next()).cmd).toBe('connack');
    upgraded.socket.write(frame(Buffer.alloc(100, 0x30), { declaredLength: 1000 }));
    await reader.closed;
    expect(log.matching(/client "stalled" disconnected: packet not complete in time/)).toHaveLength(1);
  });

  it('frames left unfinished count against max_unfinished_packet_bytes: the connection that would take it over is closed', async () => {
    const log = new LogLines();
    const KiB = 1024;
    const { wsPort } = await webSocketBroker({ log, maxPacketSize: 4 * KiB, maxUnfinishedPacketBytes: 8 * KiB });
    const holders = await Promise.all(
      ['h1', 'h2', 'h3'].map(async (clientId) => {
        const upgraded = await raw(wsPort, { protocols: 'mqtt' });
        const reader = mqttReader(upgraded);
        upgraded.socket.write(frame(connectPacket(clientId)));
        expect((await reader.next()).cmd).toBe('connack');
        return { upgraded, reader };
      }),
    );
    // Three frames of 4 KiB, each with 3 KiB arrived: two fit in 8 KiB, the third does not.
    for (const { upgraded } of holders) upgraded.socket.write(frame(Buffer.alloc(3 * KiB, 0x30), { declaredLength: 4 * KiB - 16 }));
    await Promise.race(holders.map(({ reader }) => reader.closed));
    await log.waitFor(/packets still arriving would hold more than max_unfinished_packet_bytes \(8192\) across all connections; closing this one/);
    const stillOpen = holders.filter(({ upgraded }) => !upgraded.socket.destroyed && upgraded.socket.readyState === 'open');
    expect(stillOpen.length).toBeGreaterThanOrEqual(1);
  });

  it('a WebSocket client that does not read: the broker stops reading it at max_unsent_bytes and answers every PINGREQ once it reads', { timeout: 60_000 }, async () => {
    const log = new LogLines();
    const { wsPort, port } = await webSocketBroker({ log, maxInflight: 7, maxUnsentBytes: 64 * 1024 });
    const upgraded = await raw(wsPort, { protocols: 'mqtt' });
    const reader = mqttReader(upgraded);
    upgraded.socket.write(frame(connectPacket('silent')));
    upgraded.socket.write(frame(mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'fill', qos: 1 }] })));
    expect((await reader.next()).cmd).toBe('connack');
    expect((await reader.next()).cmd).toBe('suback');
    upgraded.socket.pause();
    // Fill the kernel's buffers with messages it does not read (see unread-output.test.ts).
    const filler = await client(`mqtt://127.0.0.1:${port}`, { clientId: 'filler' });
    for (let id = 0; id < 7; id++) await filler.publishAsync('fill', Buffer.alloc(512 * 1024, 0x66), { qos: 1 });

    const ping = frame(mqttPacket.generate({ cmd: 'pingreq' }));
    const chunk = Buffer.concat(Array.from({ length: 4096 }, () => ping));
    const notRead = log.waitFor(/"silent": not reading what it is sent/);
    let stopped = false;
    void notRead.then(() => (stopped = true));
    let sent = 0;
    while (!stopped) {
      sent += 4096;
      if (upgraded.socket.write(chunk)) await new Promise(setImmediate);
      else await Promise.race([once(upgraded.socket, 'drain'), notRead]);
    }
    // Reads again: every PINGREQ is answered, after the 7 messages.
    upgraded.socket.resume();
    let pingresps = 0;
    let publishes = 0;
    while (pingresps < sent) {
      const packet = await reader.next();
      if (packet.cmd === 'publish') {
        publishes++;
        upgraded.socket.write(frame(mqttPacket.generate({ cmd: 'puback', messageId: packet.messageId! })));
      } else {
        expect(packet.cmd).toBe('pingresp');
        pingresps++;
      }
    }
    expect(publishes).toBe(7);
  });
});
