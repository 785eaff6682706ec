/**
 * Connect and disconnect lines say who, from where, with what and why it ended, as fields: with
 * log_format json, keys of the line's object that a log shipper can filter on (issue 15).
 */
import { once } from 'node:events';
import mqtt from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { BrokerProcess, makeDataDir, removeDataDir } from '../helpers/broker-process.js';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

describe('connect and disconnect lines', () => {
  it('carry clientId, address, listener, protocolVersion, clean, user, keepalive, and the reason it ended', async () => {
    const dataDir = makeDataDir('connection-log-');
    cleanups.push(() => removeDataDir(dataDir));
    const broker = await BrokerProcess.start(dataDir, ['--log-format', 'json']);
    cleanups.push(() => broker.stop());
    const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${broker.port}`, { clientId: 'sensor-7', username: 'bob', clean: false, keepalive: 42, reconnectPeriod: 0 });
    const { localPort } = client.stream as unknown as { localPort: number };
    await client.endAsync();
    // The broker reads the DISCONNECT after the client has gone: its line, then the stop.
    while (!broker.output.includes('disconnected: DISCONNECT')) await once(broker.child.stdout!, 'data');
    await broker.stop();
    const lines = broker.output
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    const common = {
      clientId: 'sensor-7',
      address: `127.0.0.1:${localPort}`,
      listener: `127.0.0.1:${broker.port}`,
      protocolVersion: 4,
      clean: false,
      user: 'bob',
      keepalive: 42,
    };
    expect(lines.find((line) => line['message'] === 'client "sensor-7" connected')).toMatchObject({ level: 'info', ...common, sessionPresent: false });
    expect(lines.find((line) => line['message'] === 'client "sensor-7" disconnected: DISCONNECT')).toMatchObject({ level: 'info', ...common, reason: 'DISCONNECT' });
  });
});
