/**
 * Several listeners in one broker, plain TCP and TLS (node:tls), over real sockets: one broker
 * behind all of them (a message published on one reaches subscribers on another), TLS with a test
 * CA made by openssl, client certificates required and mapped to user names, and what each
 * connection learns about its listener (loopback, TLS, allow_anonymous, certificate user).
 */
import { writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import mqttPacket, { type Packet } from 'mqtt-packet';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BrokerError, ErrorCodes } from '../../src/errors.js';
import { Connection } from '../../src/protocol/connection.js';
import { createBroker, type Broker, type BrokerOptions } from '../../src/server/broker.js';
import { isLoopbackHost, Listener } from '../../src/server/listeners.js';
import { BrokerProcess, makeDataDir, removeDataDir, runBroker } from '../helpers/broker-process.js';
import { MessageQueue } from '../helpers/wait.js';
import { useBrokerProcesses } from '../helpers/process-harness.js';
import { RawClient } from '../helpers/raw-client.js';
import { makeTlsFixture, type TlsFixture } from '../helpers/tls-fixture.js';

let tls: TlsFixture;
beforeAll(() => {
  tls = makeTlsFixture();
});
afterAll(() => tls.remove());

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const { freshDataDir, onTeardown } = useBrokerProcesses('broker-listeners-');

/** An in-process broker with a fresh data directory, closed after the test. */
async function startBroker(options: BrokerOptions): Promise<Broker> {
  const dataDir = makeDataDir();
  const broker = createBroker({ dataDir, ...options });
  cleanups.push(() => removeDataDir(dataDir));
  await broker.listen();
  cleanups.push(() => broker.close());
  return broker;
}

/** An MQTT.js client that does not reconnect, ended after the test. */
async function mqttClient(url: string, options: IClientOptions = {}): Promise<MqttClient> {
  const client = await mqtt.connectAsync(url, { reconnectPeriod: 0, ...options });
  cleanups.push(() => client.endAsync(true));
  return client;
}

/** The broker's Connection for a connected client id (what authentication reads). */
function connectionOf(broker: Broker, clientId: string): Connection {
  const channel = broker.sessions.lookup(clientId)?.channel;
  if (!(channel instanceof Connection)) throw new Error(`no live connection for ${clientId}`);
  return channel;
}

/**
 * A TLS socket that sends CONNECT as soon as the handshake is done, and reports the CONNACK or
 * that the connection ended without one (refused handshake, rejected certificate, …).
 */
async function tlsConnectOutcome(port: number, options: ConnectionOptions, clientId: string): Promise<'connack' | 'closed'> {
  const socket = tlsConnect({ host: '127.0.0.1', port, ...options });
  cleanups.push(() => socket.destroy());
  const parser = mqttPacket.parser({ protocolVersion: 4 });
  return new Promise((resolve) => {
    socket.on('secureConnect', () =>
      socket.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 0, clientId })),
    );
    parser.on('packet', (packet: Packet) => {
      if (packet.cmd === 'connack') resolve('connack');
    });
    socket.on('data', (chunk: Buffer) => parser.parse(chunk));
    socket.on('error', () => {});
    socket.on('close', () => resolve('closed'));
  });
}

const serverTls = () => ({ cert: tls.server.cert, key: tls.server.key });

describe('several listeners', () => {
  it('two plain listeners serve one broker: a message published on one reaches a subscriber on the other', async () => {
    const broker = await startBroker({ listeners: [{ host: '127.0.0.1', port: 0 }, { host: '127.0.0.1', port: 0 }] });
    const [first, second] = broker.addresses();
    expect(broker.addresses()).toHaveLength(2);
    expect(first!.port).not.toBe(second!.port);
    expect(broker.address()).toEqual(first);

    const subscriber = await mqttClient(`mqtt://127.0.0.1:${first!.port}`, { clientId: 'sub-on-first' });
    const messages = new MessageQueue(subscriber);
    await subscriber.subscribeAsync('plant/#', { qos: 1 });
    const publisher = await mqttClient(`mqtt://127.0.0.1:${second!.port}`, { clientId: 'pub-on-second' });
    await publisher.publishAsync('plant/boiler', 'hot', { qos: 1 });
    const message = await messages.next();
    expect([message.topic, message.payload.toString()]).toEqual(['plant/boiler', 'hot']);

    // Each connection knows the listener that accepted it.
    expect(connectionOf(broker, 'sub-on-first').listener).toEqual({ name: `127.0.0.1:${first!.port}`, loopback: true, allowAnonymous: false, tls: false });
    expect(connectionOf(broker, 'pub-on-second').listener.name).toBe(`127.0.0.1:${second!.port}`);
  });

  it('allow_anonymous: a listener’s own setting overrides the broker’s; a wildcard address is not loopback', async () => {
    const broker = await startBroker({
      allowAnonymous: true,
      listeners: [
        { host: '127.0.0.1', port: 0, allowAnonymous: false },
        { host: '0.0.0.0', port: 0 },
      ],
    });
    const [own, inherited] = broker.addresses();
    await mqttClient(`mqtt://127.0.0.1:${own!.port}`, { clientId: 'on-own' });
    await mqttClient(`mqtt://127.0.0.1:${inherited!.port}`, { clientId: 'on-inherited' });
    expect(connectionOf(broker, 'on-own').listener).toMatchObject({ loopback: true, allowAnonymous: false });
    // Reached through 127.0.0.1, but bound to every interface: the listener is not loopback.
    expect(connectionOf(broker, 'on-inherited').listener).toMatchObject({ name: `0.0.0.0:${inherited!.port}`, loopback: false, allowAnonymous: true });
  });

  it.each([
    ['127.0.0.1', true],
    ['127.255.0.9', true],
    ['::1', true],
    ['0:0:0:0:0:0:0:1', true],
    ['::ffff:127.0.0.1', true],
    ['localhost', true],
    ['0.0.0.0', false],
    ['::', false],
    ['128.0.0.1', false],
    ['192.168.1.10', false],
    ['localhost.example.com', false],
  ])('isLoopbackHost(%s) is %s', (host, loopback) => {
    expect(isLoopbackHost(host)).toBe(loopback);
  });

  it('host and port beside listeners replace the first listener’s address (as --host/--port do)', async () => {
    const taken = await freePortHeld();
    const broker = await startBroker({ host: '127.0.0.1', port: 0, listeners: [{ host: '0.0.0.0', port: taken.port }, { host: '127.0.0.1', port: 0 }] });
    const [first] = broker.addresses();
    expect(first!.address).toBe('127.0.0.1');
    expect(first!.port).not.toBe(taken.port);
  });

  it('a listener that cannot listen fails listen() naming its address, and the ones already open are closed', async () => {
    const taken = await freePortHeld();
    const dataDir = makeDataDir();
    cleanups.push(() => removeDataDir(dataDir));
    const broker = createBroker({ dataDir, listeners: [{ host: '127.0.0.1', port: 0 }, { host: '127.0.0.1', port: taken.port }] });
    const error = await broker.listen().then(
      () => undefined,
      (caught: unknown) => caught,
    );
    expect(error).toBeInstanceOf(BrokerError);
    expect((error as BrokerError).code).toBe(ErrorCodes.LISTEN_FAILED);
    expect((error as BrokerError).message).toContain(`cannot listen on 127.0.0.1:${taken.port}`);
    expect(broker.addresses()).toEqual([]);
    // The store was released too: a broker on the same directory starts.
    const again = await startBroker({ dataDir, host: '127.0.0.1', port: 0 });
    expect(again.addresses()).toHaveLength(1);
  });

  it.each<{ case: string; options: BrokerOptions; message: string }>([
    { case: 'no listener', options: { listeners: [] }, message: 'listeners must hold at least one listener' },
    { case: 'a bad port', options: { listeners: [{ port: 0 }, { port: 65536 }] }, message: 'listeners[1].port must be an integer from 0 to 65535' },
    {
      case: 'client certificates without a CA',
      options: { listeners: [{ port: 0, tls: { cert: 'x', key: 'y', requireClientCert: true } }] },
      message: 'listeners[0].tls.ca is required',
    },
  ])('createBroker refuses $case', ({ options, message }) => {
    expect(() => createBroker({ dataDir: '/nonexistent', ...options })).toThrow(message);
  });
});

describe('TLS listener', () => {
  it('MQTT.js connects over mqtts trusting the test CA, and talks to a client on the plain listener', async () => {
    const broker = await startBroker({ listeners: [{ host: '127.0.0.1', port: 0 }, { host: '127.0.0.1', port: 0, tls: serverTls() }] });
    const [plain, secure] = broker.addresses();

    const subscriber = await mqttClient(`mqtts://127.0.0.1:${secure!.port}`, { clientId: 'tls-sub', ca: tls.ca.cert });
    const messages = new MessageQueue(subscriber);
    await subscriber.subscribeAsync('secure/#', { qos: 1 });
    const publisher = await mqttClient(`mqtt://127.0.0.1:${plain!.port}`, { clientId: 'plain-pub' });
    await publisher.publishAsync('secure/door', 'open', { qos: 1 });
    const message = await messages.next();
    expect([message.topic, message.payload.toString()]).toEqual(['secure/door', 'open']);

    const connection = connectionOf(broker, 'tls-sub');
    expect(connection.listener).toEqual({ name: `127.0.0.1:${secure!.port} (TLS)`, loopback: true, allowAnonymous: false, tls: true });
    expect(connection.certificateUser).toBeUndefined();
  });

  it('a client that does not trust the server certificate refuses it (no CA given)', async () => {
    const broker = await startBroker({ listeners: [{ host: '127.0.0.1', port: 0, tls: serverTls() }] });
    expect(await tlsConnectOutcome(broker.address()!.port, {}, 'no-ca')).toBe('closed');
  });

  it('a plain MQTT client on the TLS port gets no CONNACK and is disconnected; the listener keeps serving', async () => {
    const broker = await startBroker({ listeners: [{ host: '127.0.0.1', port: 0, tls: serverTls() }] });
    const port = broker.address()!.port;
    const plain = await RawClient.connect(port);
    cleanups.push(() => plain.close());
    plain.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 0, clientId: 'plain-on-tls' });
    await expect(plain.next('connack')).rejects.toThrow(/closed/);
    expect(plain.received).toEqual([]);
    expect(broker.sessions.lookup('plain-on-tls')).toBeUndefined();

    await mqttClient(`mqtts://127.0.0.1:${port}`, { clientId: 'after-plain', ca: tls.ca.cert });
    expect(connectionOf(broker, 'after-plain').listener.tls).toBe(true);
  });

  describe('require_client_cert with cert_username', () => {
    const options = (): BrokerOptions => ({
      listeners: [{ host: '127.0.0.1', port: 0, tls: { ...serverTls(), ca: tls.ca.cert, requireClientCert: true, certUsername: true } }],
    });

    it('a client certificate signed by the CA is accepted and its subject CN becomes the connection’s user', async () => {
      const broker = await startBroker(options());
      const alice = tls.client('alice');
      await mqttClient(`mqtts://127.0.0.1:${broker.address()!.port}`, { clientId: 'alice-device', ca: tls.ca.cert, cert: alice.cert, key: alice.key });
      expect(connectionOf(broker, 'alice-device').certificateUser).toBe('alice');
    });

    it('a client without a certificate is refused before MQTT starts', async () => {
      const broker = await startBroker(options());
      expect(await tlsConnectOutcome(broker.address()!.port, { ca: tls.ca.cert }, 'no-cert')).toBe('closed');
      expect(broker.sessions.lookup('no-cert')).toBeUndefined();
    });

    it('a client certificate from another CA is refused, whatever its CN claims', async () => {
      const broker = await startBroker(options());
      const mallory = tls.rogueClient('alice');
      expect(await tlsConnectOutcome(broker.address()!.port, { ca: tls.ca.cert, cert: mallory.cert, key: mallory.key }, 'rogue')).toBe('closed');
      expect(broker.sessions.lookup('rogue')).toBeUndefined();
    });
  });

  it('cert_username without require_client_cert: the certificate is optional, and only a verified one names a user', async () => {
    const broker = await startBroker({
      listeners: [{ host: '127.0.0.1', port: 0, tls: { ...serverTls(), ca: tls.ca.cert, certUsername: true } }],
    });
    const url = `mqtts://127.0.0.1:${broker.address()!.port}`;
    const bob = tls.client('bob');
    const mallory = tls.rogueClient('bob');
    await mqttClient(url, { clientId: 'verified', ca: tls.ca.cert, cert: bob.cert, key: bob.key });
    await mqttClient(url, { clientId: 'no-certificate', ca: tls.ca.cert });
    await mqttClient(url, { clientId: 'unverified', ca: tls.ca.cert, cert: mallory.cert, key: mallory.key });
    expect(connectionOf(broker, 'verified').certificateUser).toBe('bob');
    expect(connectionOf(broker, 'no-certificate').certificateUser).toBeUndefined();
    expect(connectionOf(broker, 'unverified').certificateUser).toBeUndefined();
  });

  it('require_client_cert without cert_username: the certificate is checked but names no user', async () => {
    const broker = await startBroker({
      listeners: [{ host: '127.0.0.1', port: 0, tls: { ...serverTls(), ca: tls.ca.cert, requireClientCert: true } }],
    });
    const carol = tls.client('carol');
    await mqttClient(`mqtts://127.0.0.1:${broker.address()!.port}`, { clientId: 'carol-device', ca: tls.ca.cert, cert: carol.cert, key: carol.key });
    expect(connectionOf(broker, 'carol-device').certificateUser).toBeUndefined();
  });

  it('sockets still in their TLS handshake count against max_connections', async () => {
    const broker = await startBroker({
      maxConnections: 2,
      listeners: [{ host: '127.0.0.1', port: 0 }, { host: '127.0.0.1', port: 0, tls: serverTls() }],
    });
    const [plain, secure] = broker.addresses();
    // Two sockets that never start their handshake hold both places.
    const silent = [await RawClient.connect(secure!.port), await RawClient.connect(secure!.port)];
    cleanups.push(() => silent.forEach((socket) => socket.close()));
    // A third TLS socket and a plain one are closed at once, before any MQTT.
    const third = await RawClient.connect(secure!.port);
    await third.closed;
    const refused = await RawClient.connect(plain!.port);
    await refused.closed;
    expect(refused.received).toEqual([]);
    expect(broker.counters.connectionsRefused).toBe(2);
    // Once a handshake slot frees, a plain client is served again (the broker sees the close a
    // moment after the client does: a refused attempt is retried).
    await silent[0]!.close();
    let outcome: 'connack' | 'closed' = 'closed';
    for (let attempt = 0; attempt < 100 && outcome === 'closed'; attempt++) {
      const client = await RawClient.connect(plain!.port);
      client.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'after-handshakes', clean: true, keepalive: 0 });
      outcome = await client.next('connack').then(
        () => 'connack' as const,
        () => 'closed' as const,
      );
      await client.close();
    }
    expect(outcome).toBe('connack');
  });

  it('close() does not wait for a socket stuck before its TLS handshake', async () => {
    // With a handshake timeout of ten minutes, a close() that waited for the socket would time the test out.
    const dataDir = makeDataDir();
    cleanups.push(() => removeDataDir(dataDir));
    const broker = createBroker({ dataDir, connectTimeoutMs: 600_000, listeners: [{ host: '127.0.0.1', port: 0, tls: serverTls() }] });
    await broker.listen();
    const silent = await RawClient.connect(broker.address()!.port);
    cleanups.push(() => silent.close());
    await broker.close();
    await silent.closed;
  });

  it('a Listener on its own hands each verified TLS client to accept with its certificate user', async () => {
    const accepted: Array<{ name: string; user: string | undefined }> = [];
    const listener = await Listener.open(
      { host: '127.0.0.1', port: 0, tls: { ...serverTls(), ca: tls.ca.cert, certUsername: true } },
      {
        admit: () => true,
        accept: (socket, info, user) => {
          accepted.push({ name: info.name, user });
          cleanups.push(() => socket.destroy()); // the broker would own it; here nobody reads it
          socket.write(mqttPacket.generate({ cmd: 'connack', returnCode: 0, sessionPresent: false }));
        },
        log: { info() {}, warn() {}, error() {} },
        handshakeTimeoutMs: 10_000,
        maxPacketSize: 1024 * 1024,
        allowAnonymous: false,
      },
    );
    cleanups.push(() => listener.close());
    const dave = tls.client('dave');
    expect(await tlsConnectOutcome(listener.address().port, { ca: tls.ca.cert, cert: dave.cert, key: dave.key }, 'x')).toBe('connack');
    expect(accepted).toEqual([{ name: `127.0.0.1:${listener.address().port} (TLS)`, user: 'dave' }]);
  });
});

describe('bin/broker.js --config', () => {
  /** Waits until the broker printed a `listening on` line for a TLS listener; returns its port. */
  async function tlsPort(broker: BrokerProcess): Promise<number> {
    for (;;) {
      const match = /listening on 127\.0\.0\.1:(\d+) \(TLS\)/.exec(broker.output);
      if (match) return Number(match[1]);
      await new Promise<void>((resolve) => broker.child.stdout!.once('data', () => setImmediate(resolve)));
    }
  }

  it('a YAML config with a plain and a TLS listener: both serve; --host/--port replace the first listener’s address', async () => {
    const dataDir = freshDataDir();
    const config = join(dataDir, 'broker.yaml');
    writeFileSync(join(dataDir, 'server.crt'), tls.server.cert);
    writeFileSync(join(dataDir, 'server.key'), tls.server.key);
    writeFileSync(
      config,
      [
        'listeners:',
        '  - host: 127.0.0.1',
        '    port: 1',
        '  - host: 127.0.0.1',
        '    port: 0',
        '    tls:',
        '      cert: server.crt   # relative to this file',
        '      key: server.key',
        '',
      ].join('\n'),
    );
    // BrokerProcess passes --host 127.0.0.1 --port 0: the first listener's port 1 is replaced.
    const broker = await BrokerProcess.start(dataDir, ['--config', config]);
    onTeardown(async () => {
      if (broker.child.exitCode === null && broker.child.signalCode === null) await broker.kill();
    });
    const securePort = await tlsPort(broker);
    expect(securePort).not.toBe(broker.port);

    const subscriber = await mqttClient(`mqtts://127.0.0.1:${securePort}`, { clientId: 'cli-tls-sub', ca: tls.ca.cert });
    const messages = new MessageQueue(subscriber);
    await subscriber.subscribeAsync('cli/#', { qos: 1 });
    const publisher = await mqttClient(`mqtt://127.0.0.1:${broker.port}`, { clientId: 'cli-plain-pub' });
    await publisher.publishAsync('cli/x', 'through both', { qos: 1 });
    expect((await messages.next()).payload.toString()).toBe('through both');
    await subscriber.endAsync();
    await publisher.endAsync();
    expect(await broker.stop()).toEqual({ code: 0, signal: null });
  });

  it('a bad config: exit code 1, `broker: <file>: <key>: <problem>`, nothing started', async () => {
    const dataDir = freshDataDir();
    const config = join(dataDir, 'broker.json');
    writeFileSync(config, JSON.stringify({ listeners: [{ host: '127.0.0.1', port: 0, tls: { cert: 'absent.crt', key: 'absent.key' } }] }));
    const result = await runBroker(['--config', config, '--data', dataDir]);
    expect(result.code, result.output).toBe(1);
    expect(result.output).toContain(`broker: ${config}: listeners[0].tls.cert: file not found: ${join(dataDir, 'absent.crt')}`);
    expect(result.output).toContain(`${config}: listeners[0].tls.key: file not found: ${join(dataDir, 'absent.key')}`);
    expect(result.output).not.toMatch(/listening on|restored/);
  });
});

/** A port bound by another server for the test's duration. */
async function freePortHeld(): Promise<AddressInfo> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return server.address() as AddressInfo;
}
