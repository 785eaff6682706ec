/**
 * Shared set-up of the broker-admin suites: a store produced by a real broker run (bin/broker.js
 * as a child process, raw MQTT clients) with known sessions, queues, messages in flight, an
 * inbound QoS 2 message awaiting PUBREL and retained messages; and a runner for bin/broker-admin.js.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ClassicLevel } from 'classic-level';
import { expect } from 'vitest';
import { BrokerProcess, makeDataDir, removeDataDir } from '../helpers/broker-process.js';
import { RawClient } from '../helpers/raw-client.js';

const ADMIN_BIN = fileURLToPath(new URL('../../bin/broker-admin.js', import.meta.url));

export interface AdminRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs bin/broker-admin.js to completion, output piped (so no progress line, no colors). */
export function runAdmin(args: string[]): Promise<AdminRun> {
  const child = spawn(process.execPath, [ADMIN_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

/** The NDJSON records of a `--json` run. */
export function records(run: AdminRun): Array<Record<string, unknown>> {
  return run.stdout
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

export function ofType<T = Record<string, unknown>>(run: AdminRun, type: string): T[] {
  return records(run).filter((record) => record.type === type) as T[];
}

/** Every file under a directory with a hash of its contents: equal before and after = nothing written. */
export function directoryState(dir: string): Record<string, string> {
  const state: Record<string, string> = {};
  const walk = (path: string, name: string) => {
    const stats = statSync(path);
    if (stats.isDirectory()) {
      state[`${name}/`] = 'dir';
      for (const entry of readdirSync(path)) walk(join(path, entry), name === '' ? entry : `${name}/${entry}`);
    } else if (stats.isFile()) {
      state[name] = createHash('sha256').update(readFileSync(path)).digest('hex');
    } else {
      state[name] = 'special';
    }
  };
  walk(dir, '');
  return state;
}

/** Every key and value of a LevelDB store (hex values): its logical contents. */
export async function storeContents(location: string): Promise<Record<string, string>> {
  const db = new ClassicLevel<string, Uint8Array>(location, { valueEncoding: 'view', createIfMissing: false });
  await db.open();
  try {
    const contents: Record<string, string> = {};
    for await (const [key, value] of db.iterator()) contents[key] = Buffer.from(value).toString('hex');
    return contents;
  } finally {
    await db.close();
  }
}

/** Runs a function on the raw store of a stopped broker (to corrupt it on purpose). */
export async function withStore(location: string, change: (db: ClassicLevel<string, Uint8Array>) => Promise<void>): Promise<void> {
  const db = new ClassicLevel<string, Uint8Array>(location, { valueEncoding: 'view', createIfMissing: false });
  await db.open();
  try {
    await change(db);
  } finally {
    await db.close();
  }
}

/** 100 bytes that are not UTF-8 text. */
export const BINARY = Buffer.from(Array.from({ length: 100 }, (_, index) => (index * 37 + 128) % 256));

/** What the fixture leaves connected; close() ends it all. */
export interface Fixture {
  dataDir: string;
  broker: BrokerProcess;
  /** Persistent, connected: three messages in flight (sent, released, sent). */
  inflight: RawClient;
  /** Persistent, connected: QoS 2 PUBLISH 42 received (PUBREC sent), no PUBREL. */
  publisher: RawClient;
  /** CleanSession=1, connected, subscribed to status/#. */
  watcher: RawClient;
}

const open: Fixture[] = [];

export async function connect(broker: BrokerProcess, clientId: string, clean: boolean): Promise<RawClient> {
  const { client, connack } = await RawClient.session(broker.port, { clientId, clean });
  expect(connack.returnCode).toBe(0);
  return client;
}

async function subscribe(client: RawClient, subscriptions: Array<{ topic: string; qos: 0 | 1 | 2 }>): Promise<void> {
  client.send({ cmd: 'subscribe', messageId: 1, subscriptions });
  const suback = await client.next('suback');
  expect(suback.granted).toEqual(subscriptions.map(({ qos }) => qos));
}

async function publish1(client: RawClient, messageId: number, topic: string, payload: Buffer | string, retain = false): Promise<void> {
  client.send({ cmd: 'publish', topic, payload: Buffer.from(payload), qos: 1, messageId, retain, dup: false });
  expect((await client.next('puback')).messageId).toBe(messageId);
}

/**
 * Starts a broker on a fresh data directory and produces the known state:
 * - sub-offline (persistent, offline): subscribed to alerts/# (2) and sensors/# (1); three queued
 *   messages: sensors/t1 "21.5", alerts/fire "fire" (QoS 2), sensors/raw (100 binary bytes);
 * - sub-inflight (persistent, connected): the same subscriptions and messages, all in flight:
 *   seq 1 sent (#1), seq 2 released (#2, PUBREC sent, PUBCOMP withheld), seq 3 sent (#3);
 * - pub-qos2 (persistent, connected): inbound QoS 2 packet id 42 awaiting PUBREL;
 * - watcher (clean, connected): subscribed to status/# (0);
 * - retained: status/gw "online" (QoS 1), bin/blob (100 binary bytes, QoS 1).
 * Every message goes to two sessions, so each body is stored once with a count of 2.
 */
export async function setUp(): Promise<Fixture> {
  const dataDir = makeDataDir('broker-admin-');
  const broker = await BrokerProcess.start(dataDir);
  const fixture: Fixture = { dataDir, broker } as Fixture;
  open.push(fixture);

  const offline = await connect(broker, 'sub-offline', false);
  await subscribe(offline, [
    { topic: 'sensors/#', qos: 1 },
    { topic: 'alerts/#', qos: 2 },
  ]);
  await offline.disconnect();

  fixture.inflight = await connect(broker, 'sub-inflight', false);
  await subscribe(fixture.inflight, [
    { topic: 'sensors/#', qos: 1 },
    { topic: 'alerts/#', qos: 2 },
  ]);
  fixture.publisher = await connect(broker, 'pub-qos2', false);
  const pubClean = await connect(broker, 'pub-clean', true);

  await publish1(pubClean, 1, 'sensors/t1', '21.5');
  expect((await fixture.inflight.next('publish')).topic).toBe('sensors/t1');

  fixture.publisher.send({ cmd: 'publish', topic: 'alerts/fire', payload: Buffer.from('fire'), qos: 2, messageId: 42, retain: false, dup: false });
  expect((await fixture.publisher.next('pubrec')).messageId).toBe(42);
  const fire = await fixture.inflight.next('publish');
  expect([fire.topic, fire.qos, fire.messageId]).toEqual(['alerts/fire', 2, 2]);
  fixture.inflight.send({ cmd: 'pubrec', messageId: 2 });
  expect((await fixture.inflight.next('pubrel')).messageId).toBe(2);

  await publish1(pubClean, 2, 'sensors/raw', BINARY);
  expect((await fixture.inflight.next('publish')).topic).toBe('sensors/raw');
  await publish1(pubClean, 3, 'status/gw', 'online', true);
  await publish1(pubClean, 4, 'bin/blob', BINARY, true);
  await pubClean.disconnect();

  fixture.watcher = await connect(broker, 'watcher', true);
  await subscribe(fixture.watcher, [{ topic: 'status/#', qos: 0 }]);
  expect((await fixture.watcher.next('publish')).topic).toBe('status/gw');
  await fixture.inflight.roundTrip();
  await fixture.publisher.roundTrip();
  return fixture;
}

/** SIGTERM; the broker must exit 0. */
export async function stopBroker(fixture: Fixture): Promise<void> {
  const { code, signal } = await fixture.broker.stop();
  expect(signal, fixture.broker.output).toBeNull();
  expect(code, fixture.broker.output).toBe(0);
}

export async function tearDown(): Promise<void> {
  for (const fixture of open.splice(0)) {
    for (const client of [fixture.inflight, fixture.publisher, fixture.watcher]) client?.socket.destroy();
    const { child } = fixture.broker;
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await fixture.broker.exited;
    removeDataDir(fixture.dataDir);
  }
}
