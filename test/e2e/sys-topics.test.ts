/**
 * $SYS topics (issue 15): Mosquitto's names read with Mosquitto's own mosquitto_sub, ours beside
 * them; published every sys_interval as memory-only retained messages, so that the store does not
 * change while only $SYS does; the ACL applies to them as to any topic; and a client's PUBLISH on
 * $SYS is dropped, as Mosquitto drops it.
 */
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import mqtt, { type MqttClient } from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import type { BrokerOptions } from '../../src/server/broker.js';
import { ofType, runAdmin } from '../admin/fixture.js';
import { makeDataDir, removeDataDir } from '../helpers/broker-process.js';
import { startBroker, type RunningBroker } from '../helpers/in-process.js';
import { LogLines } from './hardening-helpers.js';

const run = promisify(execFile);

/** Mosquitto's names (mosquitto(8)) this broker publishes, under $SYS/broker/. */
const MOSQUITTO_TOPICS = [
  'version',
  'uptime',
  'clients/connected',
  'clients/disconnected',
  'clients/total',
  'clients/maximum',
  'messages/received',
  'messages/sent',
  'messages/stored',
  'publish/messages/received',
  'publish/messages/sent',
  'publish/messages/dropped',
  'bytes/received',
  'bytes/sent',
  'subscriptions/count',
  'retained messages/count',
  ...['messages/received', 'messages/sent', 'publish/received', 'publish/sent', 'publish/dropped', 'bytes/received', 'bytes/sent', 'connections', 'sockets'].flatMap(
    (load) => ['1min', '5min', '15min'].map((window) => `load/${load}/${window}`),
  ),
];
const OUR_TOPICS = ['store/bytes', 'store/syncs', 'store/sync/batch', 'store/write/latency'];

let running: RunningBroker | undefined;
const clients: MqttClient[] = [];
const cleanups: Array<() => void> = [];
afterEach(async () => {
  await Promise.all(clients.splice(0).map((client) => client.endAsync(true)));
  await running?.stop();
  running = undefined;
  for (const cleanup of cleanups.splice(0)) cleanup();
});

async function broker(options: BrokerOptions = {}): Promise<RunningBroker> {
  running = await startBroker({ sysInterval: 1, ...options });
  return running;
}

async function client(port: number, options: mqtt.IClientOptions = {}): Promise<MqttClient> {
  const connected = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, ...options });
  clients.push(connected);
  return connected;
}

/** The next `count` payloads of `topic` that `subscriber` receives. */
function payloadsOf(subscriber: MqttClient, topic: string, count: number): Promise<string[]> {
  const payloads: string[] = [];
  return new Promise((resolve) => {
    const onMessage = (received: string, payload: Buffer) => {
      if (received !== topic) return;
      payloads.push(payload.toString());
      if (payloads.length === count) {
        subscriber.off('message', onMessage);
        resolve(payloads);
      }
    };
    subscriber.on('message', onMessage);
  });
}

describe('$SYS topics', () => {
  it('mosquitto_sub -t $SYS/# -v reads Mosquitto’s names and ours, in Mosquitto’s forms', async () => {
    const { port } = await broker();
    const watcher = await client(port, { clientId: 'watcher' });
    await watcher.subscribeAsync('$SYS/broker/uptime', { qos: 0 });
    await payloadsOf(watcher, '$SYS/broker/uptime', 2);
    const { stdout } = await run('mosquitto_sub', ['-p', String(port), '-t', '$SYS/#', '-v', '-C', String(MOSQUITTO_TOPICS.length + OUR_TOPICS.length), '-W', '20']);
    const lines = stdout.trim().split('\n');
    const values = new Map<string, string>();
    for (const topic of [...MOSQUITTO_TOPICS, ...OUR_TOPICS]) {
      const line = lines.find((candidate) => candidate.startsWith(`$SYS/broker/${topic} `));
      if (line !== undefined) values.set(topic, line.slice(`$SYS/broker/${topic} `.length));
    }
    for (const topic of [...MOSQUITTO_TOPICS, ...OUR_TOPICS]) expect(values.has(topic), topic).toBe(true);
    expect(values.get('version')).toMatch(/^durable-mqtt-broker version \d+\.\d+\.\d+/);
    expect(values.get('uptime')).toMatch(/^\d+ seconds$/);
    expect(Number(values.get('clients/connected'))).toBeGreaterThanOrEqual(1);
    expect(values.get('load/messages/sent/1min')).toMatch(/^\d+\.\d\d$/);
    expect(values.get('store/write/latency')).toMatch(/^\d+\.\d\d$/);
    for (const topic of ['messages/received', 'bytes/sent', 'subscriptions/count', 'store/bytes', 'store/syncs']) expect(values.get(topic)).toMatch(/^\d+$/);
  });

  it('the figures move with traffic: messages, subscriptions, retained messages, store syncs', async () => {
    const { port } = await broker();
    const watcher = await client(port, { clientId: 'watcher' });
    await watcher.subscribeAsync(['$SYS/broker/retained messages/count', '$SYS/broker/store/syncs', '$SYS/broker/publish/messages/received'], { qos: 0 });
    const publisher = await client(port, { clientId: 'publisher' });
    for (let index = 0; index < 5; index++) await publisher.publishAsync(`kept/${index}`, 'v', { qos: 1, retain: true });
    // The tick after the publishes says so.
    const retainedCounts = await payloadsOf(watcher, '$SYS/broker/retained messages/count', 3);
    expect(retainedCounts.at(-1)).toBe('5');
    const received = await payloadsOf(watcher, '$SYS/broker/publish/messages/received', 1);
    expect(Number(received[0])).toBeGreaterThanOrEqual(5);
    const syncs = await payloadsOf(watcher, '$SYS/broker/store/syncs', 1);
    expect(Number(syncs[0])).toBeGreaterThanOrEqual(1);
  });

  it('are never written to the store: its keys stay the same while only $SYS changes', async () => {
    const dataDir = makeDataDir('sys-store-');
    cleanups.push(() => removeDataDir(dataDir));
    const { port } = await broker({ dataDir });
    const keys = async () => ofType<{ keys: number; valueBytes: number }>(await runAdmin(['stats', '--json', '--data', dataDir]), 'totals')[0]!;
    const watcher = await client(port, { clientId: 'watcher' });
    await watcher.subscribeAsync(['$SYS/broker/uptime', '$SYS/broker/store/syncs'], { qos: 0 });
    const syncs = payloadsOf(watcher, '$SYS/broker/store/syncs', 4);
    await payloadsOf(watcher, '$SYS/broker/uptime', 1);
    const before = await keys();
    const uptimes = await payloadsOf(watcher, '$SYS/broker/uptime', 3);
    expect(new Set(uptimes).size).toBeGreaterThan(1);
    expect(await keys()).toEqual(before);
    // Nor does it make the store write anything at all: no batch, no fsync.
    expect(new Set(await syncs).size).toBe(1);
  });

  it('the ACL applies: a pattern starting with a wildcard does not reach $SYS [MQTT-4.7.2-1]; a rule naming it does', async () => {
    const dir = makeDataDir('sys-acl-');
    cleanups.push(() => removeDataDir(dir));
    const aclFile = join(dir, 'acl');
    writeFileSync(aclFile, 'topic read #\n\nuser alice\ntopic read $SYS/#\n');
    const { port } = await broker({ aclFile });
    const anonymous = await client(port, { clientId: 'anonymous' });
    expect(await anonymous.subscribeAsync('$SYS/#', { qos: 0 }).then(() => 'granted', () => 'refused')).toBe('refused');
    const alice = await client(port, { clientId: 'alice', username: 'alice' });
    const version = payloadsOf(alice, '$SYS/broker/version', 1);
    await alice.subscribeAsync('$SYS/#', { qos: 0 });
    expect((await version)[0]).toMatch(/^durable-mqtt-broker version/);
  });

  it('a client’s PUBLISH on $SYS is acknowledged and dropped, retained or not, as Mosquitto does; so is a will there', async () => {
    const log = new LogLines();
    const { port, broker: embedded } = await broker({ log });
    const watcher = await client(port, { clientId: 'watcher' });
    await watcher.subscribeAsync(['$SYS/#', 'marker'], { qos: 1 });
    const seen: string[] = [];
    watcher.on('message', (topic, payload) => {
      if (topic === 'marker' || topic === '$SYS/fake' || payload.toString() === 'spoofed') seen.push(topic);
    });
    const spoofer = await client(port, { clientId: 'spoofer', will: { topic: '$SYS/fake', payload: Buffer.from('will'), qos: 1, retain: false } });
    await spoofer.publishAsync('$SYS/broker/version', 'spoofed', { qos: 1, retain: true });
    await spoofer.publishAsync('$SYS/fake', 'spoofed', { qos: 2 });
    spoofer.stream.destroy(); // the will goes out, or would
    await log.waitFor(/will message on "\$SYS\/fake" not published/);
    const publisher = await client(port, { clientId: 'publisher' });
    const marker = new Promise<void>((resolve) => watcher.on('message', (topic) => topic === 'marker' && resolve()));
    await publisher.publishAsync('marker', 'after', { qos: 1 });
    await marker;
    expect(seen).toEqual(['marker']);
    expect(embedded.counters.publishesRefused).toBe(3);
    const late = await client(port, { clientId: 'late' });
    const version = payloadsOf(late, '$SYS/broker/version', 1);
    await late.subscribeAsync('$SYS/broker/version', { qos: 0 });
    expect((await version)[0]).toMatch(/^durable-mqtt-broker version/);
  });
});
