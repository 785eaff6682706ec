/**
 * /metrics and /healthz (issue 15). The text is checked by Prometheus's own parser and linter
 * (`promtool check metrics`, Debian's `prometheus`, which .ci/run installs), not by string
 * matching alone; the counters move with real traffic; /healthz says 503 with its reason until the
 * store is open and every listener accepts, then 200.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import mqtt, { type MqttClient } from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { createBroker, type Broker } from '../../src/server/broker.js';
import { LevelRepository } from '../../src/store/level-repository.js';
import { BrokerProcess, makeDataDir, removeDataDir } from '../helpers/broker-process.js';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** `promtool check metrics` on `text`: its exit code and what it said. */
async function promtool(text: string): Promise<{ code: number | null; output: string }> {
  const child = spawn('promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stdin.end(text);
  const [code] = (await once(child, 'close')) as [number | null];
  return { code, output };
}

/** The samples of the text, by name with labels as printed (`mqtt_store_write_seconds_count{fsync="true"}`). */
function samples(text: string): Map<string, number> {
  const values = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    values.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return values;
}

describe('/metrics', () => {
  it('broker --metrics-port: promtool accepts the text, and the counters move with QoS 1 traffic to a persistent session', { timeout: 60_000 }, async () => {
    const dataDir = makeDataDir('metrics-');
    cleanups.push(() => removeDataDir(dataDir));
    const broker = await BrokerProcess.start(dataDir, ['--metrics-port', '0']);
    cleanups.push(() => broker.stop());
    const metricsPort = Number(/metrics and health on http:\/\/127\.0\.0\.1:(\d+)\/metrics/.exec(broker.output)![1]);
    const scrape = async () => {
      const response = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
      return response.text();
    };

    const before = await scrape();
    const checked = await promtool(before);
    expect(checked.output).toBe('');
    expect(checked.code).toBe(0);

    const subscriber: MqttClient = await mqtt.connectAsync(`mqtt://127.0.0.1:${broker.port}`, { clientId: 'metrics-sub', clean: false, reconnectPeriod: 0 });
    cleanups.push(() => subscriber.endAsync(true));
    await subscriber.subscribeAsync('m/#', { qos: 1 });
    const publisher = await mqtt.connectAsync(`mqtt://127.0.0.1:${broker.port}`, { clientId: 'metrics-pub', reconnectPeriod: 0 });
    cleanups.push(() => publisher.endAsync(true));
    const delivered = new Promise<void>((resolve) => {
      let count = 0;
      subscriber.on('message', () => ++count === 20 && resolve());
    });
    for (let index = 0; index < 20; index++) await publisher.publishAsync(`m/${index}`, 'x'.repeat(100), { qos: 1 });
    await delivered;

    const after = await scrape();
    expect((await promtool(after)).code).toBe(0);
    const [was, is] = [samples(before), samples(after)];
    const moved = (name: string) => is.get(name)! - (was.get(name) ?? 0);
    expect(moved('mqtt_publish_received_total')).toBe(20);
    expect(moved('mqtt_publish_sent_total')).toBeGreaterThanOrEqual(20);
    expect(moved('mqtt_bytes_received_total')).toBeGreaterThan(20 * 100);
    expect(moved('mqtt_connects_total')).toBe(2);
    expect(is.get('mqtt_clients_connected')).toBe(2);
    expect(is.get('mqtt_subscriptions')).toBe(1);
    // Each QoS 1 PUBLISH waited for its store write; the writes were fsynced.
    expect(moved('mqtt_publish_ack_seconds_count')).toBe(20);
    expect(moved('mqtt_store_syncs_total')).toBeGreaterThanOrEqual(1);
    expect(moved('mqtt_store_write_seconds_count{fsync="true"}')).toBeGreaterThanOrEqual(1);
    // The process metrics Prometheus users expect.
    expect(is.get('process_resident_memory_bytes')).toBeGreaterThan(0);
    expect(is.has('nodejs_eventloop_lag_seconds')).toBe(true);
  });
});

describe('/healthz', () => {
  it('503 with the reason until the store is open and every listener accepts, then 200; 503 again while shutting down', async () => {
    const dataDir = makeDataDir('healthz-');
    cleanups.push(() => removeDataDir(dataDir));
    let openStore!: () => void;
    const storeMayOpen = new Promise<void>((resolve) => (openStore = resolve));
    /** The LevelDB store, opened when the test says so. */
    class SlowToOpen extends LevelRepository {
      override async open(): Promise<void> {
        await storeMayOpen;
        await super.open();
      }
    }
    const broker: Broker = createBroker({
      host: '127.0.0.1',
      port: 0,
      repository: new SlowToOpen({ location: `${dataDir}/store` }),
      metrics: { port: 0 },
      sysInterval: 0,
    });
    const listening = broker.listen();
    cleanups.push(async () => {
      openStore();
      await listening.catch(() => undefined);
      await broker.close();
    });
    while (broker.metricsAddress() === undefined) await new Promise(setImmediate);
    const healthz = `http://127.0.0.1:${broker.metricsAddress()!.port}/healthz`;

    const starting = await fetch(healthz);
    expect(starting.status).toBe(503);
    expect(await starting.text()).toBe('starting: the store is not open yet\n');

    openStore();
    await listening;
    const serving = await fetch(healthz);
    expect(serving.status).toBe(200);
    expect(await serving.text()).toBe('ok\n');

    const closing = broker.close();
    // The listeners and the store close first; /healthz answers until the very end.
    const stopping = await fetch(healthz);
    expect([stopping.status, await stopping.text()]).toEqual([503, 'shutting down\n']);
    await closing;
  });
});


