/**
 * The config keys and flags of issue 15: listeners[].websocket with path and allowed_origins,
 * sys_interval, the metrics section and --metrics-port; each mistake named by file and key.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { commandLineOptions } from '../../src/cli/broker-cli.js';
import { createBroker } from '../../src/server/broker.js';
import { configToOptions } from '../../src/server/config.js';

const dir = mkdtempSync(join(tmpdir(), 'broker-config-ops-'));
const file = join(dir, 'broker.yaml');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function problems(raw: unknown): Promise<string[]> {
  try {
    await configToOptions(raw, file);
  } catch (error) {
    return (error as Error).message.split('\n');
  }
  return [];
}

describe('config: WebSocket listeners, $SYS and metrics', () => {
  it('maps to BrokerOptions', async () => {
    const options = await configToOptions(
      {
        sys_interval: 30,
        metrics: { host: '0.0.0.0', port: 9100 },
        listeners: [
          { port: 1883 },
          { host: '0.0.0.0', port: 8080, websocket: true, path: '/ws', allowed_origins: ['https://dashboard.example'] },
        ],
      },
      file,
    );
    expect(options.sysInterval).toBe(30);
    expect(options.metrics).toEqual({ host: '0.0.0.0', port: 9100 });
    expect(options.listeners?.[1]).toEqual({ host: '0.0.0.0', port: 8080, websocket: true, path: '/ws', allowedOrigins: ['https://dashboard.example'] });
  });

  it('names each mistake by its key', async () => {
    expect(
      await problems({
        sys_interval: -1,
        metrics: { prot: 9100 },
        listeners: [
          { port: 1, path: '/mqtt' },
          { port: 2, websocket: 'yes' },
          { port: 3, websocket: true, path: 'mqtt', allowed_origins: 'https://x' },
        ],
      }),
    ).toEqual([
      `${file}: listeners[0].path: applies to WebSocket listeners only (websocket: true)`,
      `${file}: listeners[1].websocket: expected true or false, got "yes"`,
      `${file}: listeners[2].path: expected a URL path such as /mqtt, got "mqtt"`,
      `${file}: listeners[2].allowed_origins: expected a list of origins such as https://dashboard.example.com, got "https://x"`,
      `${file}: sys_interval: expected an integer from 0 to 86400, got -1`,
      `${file}: metrics.prot: unknown key (did you mean port?)`,
      `${file}: metrics.port: required (the TCP port of /metrics and /healthz)`,
    ]);
  });

  it('--metrics-port sets the port, on 127.0.0.1 unless the file says otherwise', async () => {
    expect((await commandLineOptions(['node', 'broker', '--metrics-port', '9200'])).metrics).toEqual({ port: 9200 });
  });

  it('createBroker checks them too', () => {
    expect(() => createBroker({ sysInterval: 1.5 })).toThrow(/sysInterval must be an integer from 0 to 86400/);
    expect(() => createBroker({ metrics: { port: 70000 } })).toThrow(/metrics.port must be an integer from 0 to 65535/);
    expect(() => createBroker({ listeners: [{ port: 0, path: '/x' }] })).toThrow(/path and allowedOrigins apply to WebSocket listeners only/);
    expect(() => createBroker({ listeners: [{ port: 0, websocket: true, path: 'x' }] })).toThrow(/path must start with \//);
  });
});
