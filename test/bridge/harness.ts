/**
 * What the bridge suites start: gateway and upstream brokers as child processes (bin/broker.js, the
 * gateway with a config file holding its bridges), Mosquitto as an upstream, and scripted fake
 * upstreams on raw sockets. Everything is torn down after each test, even one that failed half-way.
 *
 * No sleeps: a test waits for a line in a broker's output or for a packet, never for a time.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { createConnection, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterEach, onTestFailed } from 'vitest';
import mqttPacket, { type IPublishPacket, type Packet } from 'mqtt-packet';
import { BrokerProcess, makeDataDir, removeDataDir } from '../helpers/broker-process.js';
import { RawClient } from '../helpers/raw-client.js';

export const MOSQUITTO = '/usr/sbin/mosquitto';

/** Makes a test directory and the files in it readable by every user (Mosquitto drops root for its own user). */
export function readableByAll(dir: string): void {
  chmodSync(dir, 0o755);
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isFile()) chmodSync(path, 0o644);
  }
}

/** A port nothing listens on now (the kernel's pick, released at once). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Resolves once `child`'s output (stdout and stderr together, from its start) matches `pattern`. */
export function outputOf(child: ChildProcess): { text: () => string; waitFor: (pattern: RegExp, what?: string) => Promise<RegExpExecArray> } {
  let text = '';
  const waiters = new Set<() => void>();
  const onData = (chunk: Buffer) => {
    text += chunk.toString();
    for (const wake of [...waiters]) wake();
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  child.once('close', () => {
    for (const wake of [...waiters]) wake();
  });
  return {
    text: () => text,
    waitFor: (pattern, what = String(pattern)) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const match = pattern.exec(text);
          if (match) {
            waiters.delete(check);
            resolve(match);
          } else if (child.exitCode !== null || child.signalCode !== null) {
            waiters.delete(check);
            reject(new Error(`process ended before ${what}:\n${text}`));
          }
        };
        waiters.add(check);
        check();
      }),
  };
}

/** A broker process and a view of its output from the moment it was started. */
export interface RunningProcess {
  broker: BrokerProcess;
  port: number;
  /** Everything it printed, from its start. */
  log(): string;
  waitFor(pattern: RegExp, what?: string): Promise<RegExpExecArray>;
}

export interface MosquittoProcess {
  child: ChildProcess;
  port: number;
  log(): string;
  stop(): Promise<void>;
}

/** A scripted upstream: each accepted connection is handed to `onConnection`. */
export interface FakeUpstream {
  port: number;
  connections: FakeConnection[];
  /** Resolves with the n-th connection (1-based) once it has sent its CONNECT. */
  connection(n: number): Promise<FakeConnection>;
  close(): Promise<void>;
}

/** One connection to a fake upstream: packets queue up until taken, as RawClient's do. */
export class FakeConnection {
  readonly socket: Socket;
  readonly received: Packet[] = [];
  /** The raw protocol level byte of its CONNECT (0x84 with the bridge bit). */
  protocolLevel: number | undefined;
  readonly closed: Promise<void>;
  #closed = false;
  #waiters: Array<() => void> = [];

  constructor(socket: Socket) {
    this.socket = socket;
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    let first = true;
    socket.on('data', (chunk: Buffer) => {
      if (first) {
        first = false;
        // Fixed header, remaining length (1 byte for a small CONNECT), "MQTT" (6 bytes), then the level.
        this.protocolLevel = chunk[8];
      }
      parser.parse(chunk);
    });
    parser.on('packet', (packet: Packet) => {
      this.received.push(packet);
      this.#wake();
    });
    socket.on('error', () => {});
    this.closed = new Promise((resolve) =>
      socket.once('close', () => {
        this.#closed = true;
        this.#wake();
        resolve();
      }),
    );
  }

  get isClosed(): boolean {
    return this.#closed;
  }

  send(packet: Packet): void {
    if (!this.socket.destroyed) this.socket.write(mqttPacket.generate(packet));
  }

  async next<C extends Packet['cmd']>(cmd: C): Promise<Extract<Packet, { cmd: C }>> {
    for (;;) {
      const index = this.received.findIndex((packet) => packet.cmd === cmd);
      if (index >= 0) return this.received.splice(index, 1)[0] as Extract<Packet, { cmd: C }>;
      if (this.#closed) throw new Error(`connection closed while waiting for ${cmd}`);
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
  }

  async take<C extends Packet['cmd']>(cmd: C, count: number): Promise<Array<Extract<Packet, { cmd: C }>>> {
    const packets: Array<Extract<Packet, { cmd: C }>> = [];
    while (packets.length < count) packets.push(await this.next(cmd));
    return packets;
  }

  /** CONNACK accepted, and SUBACK for the bridge's SUBSCRIBE when it comes. */
  accept(sessionPresent = false): void {
    this.send({ cmd: 'connack', returnCode: 0, sessionPresent });
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }
}

export interface BridgeConfig {
  [key: string]: unknown;
}

/** Registers the afterEach: call once at the top of a test file. */
export function useBridgeHarness(prefix = 'bridge-test-') {
  const processes: Array<{ child: ChildProcess; exited: Promise<unknown> }> = [];
  const servers: Server[] = [];
  const sockets = new Set<Socket>();
  const dirs: string[] = [];
  const teardowns: Array<() => unknown> = [];

  afterEach(async () => {
    for (const teardown of teardowns.splice(0)) await teardown();
    for (const socket of sockets) socket.destroy();
    sockets.clear();
    await Promise.all(servers.splice(0).map((server) => new Promise((resolve) => server.close(resolve))));
    await Promise.all(
      processes.splice(0).map(async ({ child, exited }) => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        await exited;
      }),
    );
    for (const dir of dirs.splice(0)) removeDataDir(dir);
  });

  function freshDir(): string {
    const dir = makeDataDir(prefix);
    dirs.push(dir);
    return dir;
  }

  async function track(broker: BrokerProcess): Promise<RunningProcess> {
    processes.push({ child: broker.child, exited: broker.exited });
    const output = outputOf(broker.child);
    // What it printed before `start` resolved is in broker.output already.
    const before = broker.output;
    // A failed test shows what each of its brokers said.
    onTestFailed(() => console.log(`--- broker on port ${broker.port}:\n${before + output.text()}`));
    return { broker, port: broker.port, log: () => before + output.text(), waitFor: async (pattern, what) => {
      const match = pattern.exec(before);
      return match ?? output.waitFor(pattern, what);
    } };
  }

  /** A broker (ours) on `port` (0: any) with `dataDir`; `args` beside. */
  async function startBroker(dataDir: string, args: string[] = [], port = 0): Promise<RunningProcess> {
    return track(await BrokerProcess.start(dataDir, args, port));
  }

  /** A gateway broker whose config file holds `bridges` (snake_case, as an operator writes it). */
  async function startGateway(dataDir: string, bridges: BridgeConfig[], extra: Record<string, unknown> = {}, args: string[] = []): Promise<RunningProcess> {
    const file = join(dataDir, 'gateway.json');
    writeFileSync(file, JSON.stringify({ log_level: 'debug', ...extra, bridges }, null, 2));
    return startBroker(dataDir, ['--config', file, ...args]);
  }

  /**
   * Mosquitto on `port` with the config lines given (a listener and logging to stderr are added).
   * Started as root, Mosquitto runs as the user `mosquitto`: the files it reads must be readable
   * to it (see readableByAll).
   */
  async function startMosquitto(port: number, lines: string[] = [], dir = freshDir()): Promise<MosquittoProcess> {
    const file = join(dir, 'mosquitto.conf');
    readableByAll(dir);
    writeFileSync(file, [`listener ${port} 127.0.0.1`, 'allow_anonymous true', 'log_dest stderr', 'log_type all', ...lines, ''].join('\n'));
    const child = spawn(MOSQUITTO, ['-c', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise((resolve) => child.once('close', resolve));
    processes.push({ child, exited });
    const output = outputOf(child);
    onTestFailed(() => console.log(`--- mosquitto on port ${port}:\n${output.text()}`));
    await output.waitFor(/Opening ipv4 listen socket on port/, `mosquitto listening on ${port}`);
    // The socket is open once the line is printed; "running" follows when the loop starts.
    await output.waitFor(/mosquitto version [\d.]+ running/, 'mosquitto running');
    return {
      child,
      port,
      log: output.text,
      stop: async () => {
        child.kill('SIGTERM');
        await exited;
      },
    };
  }

  /** A scripted upstream on `port` (0: any). */
  async function startFake(port = 0): Promise<FakeUpstream> {
    const connections: FakeConnection[] = [];
    const waiters: Array<() => void> = [];
    const server = createServer((socket) => {
      sockets.add(socket);
      const connection = new FakeConnection(socket);
      // Counted once its CONNECT is in (and left among its received packets).
      void connection.next('connect').then(
        (connect) => {
          connection.received.unshift(connect);
          connections.push(connection);
          for (const wake of waiters.splice(0)) wake();
        },
        () => {},
      );
    });
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
    return {
      port: (server.address() as AddressInfo).port,
      connections,
      async connection(n) {
        while (connections.length < n) await new Promise<void>((resolve) => waiters.push(resolve));
        return connections[n - 1]!;
      },
      close: () => {
        for (const connection of connections) connection.socket.destroy();
        return new Promise<void>((resolve) => server.close(() => resolve()));
      },
    };
  }

  return { freshDir, startBroker, startGateway, startMosquitto, startFake, onTeardown: (teardown: () => unknown) => teardowns.push(teardown) };
}

/** A bridge's config as an operator writes it, with what a test needs to be quick about reconnecting. */
export function bridgeConfig(port: number, topics: BridgeConfig[], extra: BridgeConfig = {}): BridgeConfig {
  return {
    name: 'cloud',
    address: `mqtt://127.0.0.1:${port}`,
    client_id: 'gw-17',
    reconnect: { min_ms: 20, max_ms: 200 },
    topics,
    ...extra,
  };
}

export interface Outgoing {
  topic: string;
  payload: string;
  qos: 0 | 1 | 2;
  retain?: boolean;
}

/**
 * Publishes on one raw CleanSession=1 connection, pipelined and in order, and waits until every
 * QoS 1/2 message is acknowledged (PUBACK; PUBREC → PUBREL → PUBCOMP): from then on the broker has
 * promised to keep them.
 */
export async function publishAll(port: number, messages: Outgoing[], clientId = `pub-${Math.random().toString(36).slice(2)}`): Promise<void> {
  const { client, connack } = await RawClient.session(port, { clientId });
  if (connack.returnCode !== 0) throw new Error(`publisher refused with ${connack.returnCode}`);
  messages.forEach(({ topic, payload, qos, retain = false }, index) => {
    client.send({ cmd: 'publish', topic, payload: Buffer.from(payload), qos, retain, dup: false, ...(qos > 0 ? { messageId: index + 1 } : {}) });
  });
  const qos2 = messages.flatMap(({ qos }, index) => (qos === 2 ? [index + 1] : []));
  await client.take('puback', messages.filter(({ qos }) => qos === 1).length);
  await client.take('pubrec', qos2.length);
  for (const messageId of qos2) client.send({ cmd: 'pubrel', messageId });
  await client.take('pubcomp', qos2.length);
  await client.disconnect();
}

/** A raw persistent subscriber (CleanSession=0) with its subscriptions made. */
export async function subscriber(port: number, clientId: string, subscriptions: Array<{ topic: string; qos: 0 | 1 | 2 }>, clean = false): Promise<RawClient> {
  const { client, connack } = await RawClient.session(port, { clientId, clean });
  if (connack.returnCode !== 0) throw new Error(`subscriber refused with ${connack.returnCode}`);
  if (subscriptions.length > 0) {
    client.send({ cmd: 'subscribe', messageId: 1, subscriptions });
    await client.next('suback');
  }
  return client;
}

/** Topic, payload and QoS of PUBLISHes, for assertions. */
export function summaries(publishes: IPublishPacket[]): Array<{ topic: string; payload: string; qos: number }> {
  return publishes.map(({ topic, payload, qos }) => ({ topic, payload: payload.toString(), qos }));
}

/**
 * A TCP gate in front of an upstream: while shut, a connection is closed at once (as if nothing
 * listened); while open, it is piped to `target`. Lets a test decide exactly when the bridge may
 * reach an upstream, e.g. only after a subscriber is in place there.
 */
export interface Gate {
  port: number;
  open(): void;
  /** Shuts the gate and cuts every connection through it. */
  shut(): void;
  close(): Promise<void>;
}

export async function startGate(target: number): Promise<Gate> {
  let open = false;
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    socket.on('error', () => {});
    if (!open) {
      socket.destroy();
      return;
    }
    const upstream = createConnection(target, '127.0.0.1');
    upstream.on('error', () => socket.destroy());
    socket.on('close', () => upstream.destroy());
    upstream.on('close', () => socket.destroy());
    socket.pipe(upstream).pipe(socket);
    sockets.add(socket).add(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const shut = () => {
    open = false;
    for (const socket of sockets) socket.destroy();
    sockets.clear();
  };
  return {
    port: (server.address() as AddressInfo).port,
    open: () => (open = true),
    shut,
    close: () => {
      shut();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
