/**
 * A bridge's options: createBroker and the config file refuse the same things, naming the key;
 * defaults; the backoff and the once-a-minute failure report.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { bridgeSettings } from '../../src/bridge/bridge-options.js';
import { Backoff, FailureReport, REPEAT_LOG_INTERVAL_MS } from '../../src/bridge/reconnect.js';
import { BrokerError, ErrorCodes } from '../../src/errors.js';
import { createBroker } from '../../src/server/broker.js';
import { configToOptions } from '../../src/server/config.js';
import { MemoryRepository } from '../../src/store/memory-repository.js';

const dir = mkdtempSync(join(tmpdir(), 'bridge-options-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function brokerProblem(bridges: unknown): string {
  try {
    createBroker({ repository: new MemoryRepository(), admin: false, bridges: bridges as never });
  } catch (error) {
    expect(error).toBeInstanceOf(BrokerError);
    expect((error as BrokerError).code).toBe(ErrorCodes.BAD_OPTION);
    return (error as Error).message;
  }
  throw new Error('accepted');
}

async function configProblem(bridges: unknown): Promise<string> {
  const error = await configToOptions({ bridges }, join(dir, 'broker.yaml')).then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(BrokerError);
  expect((error as BrokerError).code).toBe(ErrorCodes.BAD_CONFIG);
  return (error as Error).message;
}

describe('bridge options', () => {
  it('the config file maps snake_case keys, reads password_file and fills nothing it was not given', async () => {
    writeFileSync(join(dir, 'secret'), 's3cret\nignored\n');
    const options = await configToOptions(
      {
        bridges: [
          {
            name: 'cloud',
            address: ['mqtt://a.example:1883', 'mqtts://b.example'],
            client_id: 'gw',
            username: 'gw',
            password_file: 'secret',
            try_private: false,
            clean_session: true,
            keepalive: 10,
            reconnect: { min_ms: 500, max_ms: 5000 },
            max_inflight: 7,
            max_queued_messages: 10,
            max_queued_bytes: 1000,
            notifications: false,
            topics: [{ pattern: '', direction: 'both', qos: 2, local_prefix: 'a', remote_prefix: 'b' }],
          },
        ],
      },
      join(dir, 'broker.yaml'),
    );
    expect(options.bridges).toEqual([
      {
        name: 'cloud',
        address: ['mqtt://a.example:1883', 'mqtts://b.example'],
        clientId: 'gw',
        username: 'gw',
        password: 's3cret',
        tryPrivate: false,
        cleanSession: true,
        keepalive: 10,
        reconnect: { minMs: 500, maxMs: 5000 },
        maxInflight: 7,
        maxQueuedMessages: 10,
        maxQueuedBytes: 1000,
        notifications: false,
        topics: [{ pattern: '', direction: 'both', qos: 2, localPrefix: 'a', remotePrefix: 'b' }],
      },
    ]);
  });

  it('defaults: Mosquitto habits (try_private on, persistent upstream session), qos 1, the notification topic of the client id', () => {
    const settings = bridgeSettings({ name: 'cloud', address: 'mqtts://c.example', clientId: 'gw-1', topics: [{ pattern: 'a/#' }] });
    expect(settings).toMatchObject({
      addresses: [{ text: 'mqtts://c.example', host: 'c.example', port: 8883, tls: true }],
      tryPrivate: true,
      cleanSession: false,
      keepalive: 60,
      reconnect: { minMs: 1000, maxMs: 60_000 },
      maxInflight: 100,
      notifications: true,
      notificationTopic: '$SYS/broker/connection/gw-1/state',
    });
    expect(bridgeSettings({ name: 'x', address: 'mqtt://[::1]', topics: [{ pattern: 'a' }] }).addresses[0]).toMatchObject({ host: '::1', port: 1883 });
  });

  it.each([
    [[{ name: 'a b', address: 'mqtt://h', topics: [{ pattern: 'a' }] }], 'bridges[0].name: only letters, digits, _ and -'],
    [[{ name: 'a', address: 'http://h', topics: [{ pattern: 'a' }] }], 'bridges[0].address: the scheme must be mqtt:// or mqtts://'],
    [[{ name: 'a', address: ['mqtt://h', 'mqtt://h/path'], topics: [{ pattern: 'a' }] }], 'bridges[0].address[1]: only mqtt(s)://host:port'],
    [[{ name: 'a', address: 'mqtt://h', tls: { servername: 'h' }, topics: [{ pattern: 'a' }] }], 'bridges[0].tls: given for mqtt://h, which is not mqtts://'],
    [[{ name: 'a', address: 'mqtt://h', topics: [] }], 'bridges[0].topics: at least one topic line is required'],
    [[{ name: 'a', address: 'mqtt://h', topics: [{ pattern: 'x/#', local_prefix: 'y/+/' }] }], 'bridges[0].topics[0].local_prefix: a prefix cannot hold a wildcard'],
    [[{ name: 'a', address: 'mqtt://h', topics: [{ pattern: '' }] }], 'bridges[0].topics[0].pattern: an empty pattern maps local_prefix to remote_prefix'],
    [[{ name: 'a', address: 'mqtt://h', reconnect: { min_ms: 10, max_ms: 5 }, topics: [{ pattern: 'a' }] }], 'bridges[0].reconnect.max_ms: must be at least min_ms (10)'],
    [[{ name: 'a', address: 'mqtt://h', password: 'p', topics: [{ pattern: 'a' }] }], 'bridges[0].password: a password needs a username'],
    [
      [
        { name: 'a', address: 'mqtt://h', client_id: 'same', topics: [{ pattern: 'a' }] },
        { name: 'a', address: 'mqtt://h', client_id: 'same', topics: [{ pattern: 'a' }] },
      ],
      'bridges[1].name: "a" is the name of another bridge',
    ],
  ])('refused alike by createBroker and the config file: %j', async (bridges, message) => {
    expect(await configProblem(bridges)).toContain(message);
    const camel = JSON.parse(
      JSON.stringify(bridges).replace(/"(\w+)_(\w)(\w*)":/g, (_, head: string, first: string, rest: string) => `"${head}${first.toUpperCase()}${rest}":`),
    ) as unknown;
    expect(brokerProblem(camel)).toContain(message);
  });

  it('protocol_version: 4 (the default) or 5; anything else is refused by both', async () => {
    const options = await configToOptions({ bridges: [{ name: 'a', address: 'mqtt://h', protocol_version: 5, topics: [{ pattern: 'a' }] }] }, join(dir, 'broker.yaml'));
    expect(options.bridges?.[0]?.protocolVersion).toBe(5);
    expect(bridgeSettings(options.bridges![0]!).protocolVersion).toBe(5);
    expect(bridgeSettings({ name: 'a', address: 'mqtt://h', topics: [{ pattern: 'a' }] }).protocolVersion).toBe(4);
    expect(await configProblem([{ name: 'a', address: 'mqtt://h', protocol_version: 3, topics: [{ pattern: 'a' }] }])).toContain('bridges[0].protocol_version: expected an integer from 4 to 5, got 3');
    expect(brokerProblem([{ name: 'a', address: 'mqtt://h', protocolVersion: 3, topics: [{ pattern: 'a' }] }])).toContain('bridges[0].protocol_version: must be 4 (MQTT 3.1.1) or 5 (MQTT 5)');
  });

  it('the config file names unknown keys and wrong types', async () => {
    const message = await configProblem([{ name: 'a', adress: 'mqtt://h', keepalive: -1, topics: [{ pattern: 1, qos: 3, direction: 'up' }] }]);
    expect(message).toContain('bridges[0].adress: unknown key (did you mean address?)');
    expect(message).toContain('bridges[0].address: required');
    expect(message).toContain('bridges[0].keepalive: expected an integer from 0 to 65535, got -1');
    expect(message).toContain('bridges[0].topics[0].pattern: expected a string, got 1');
    expect(message).toContain('bridges[0].topics[0].qos: expected an integer from 0 to 2, got 3');
    expect(message).toContain('bridges[0].topics[0].direction: expected one of out, in, both, got "up"');
  });
});

describe('reconnecting', () => {
  it('backoff doubles up to max with jitter between half and all of it, and starts over after a connection', () => {
    const low = new Backoff(100, 1000, () => 0);
    expect([1, 2, 3, 4, 5, 6].map(() => low.next())).toEqual([100, 100, 200, 400, 500, 500]);
    const high = new Backoff(100, 1000, () => 0.999_999);
    expect([1, 2, 3, 4, 5].map(() => high.next())).toEqual([100, 200, 400, 800, 1000]);
    high.reset();
    expect(high.next()).toBe(100);
  });

  it('a failure is reported once, again when it changes, and while it repeats once a minute with the count', () => {
    let now = 0;
    const report = new FailureReport(() => now);
    expect(report.failed('unreachable', 'down')).toBe('down');
    now += 1000;
    expect(report.failed('unreachable', 'down')).toBeUndefined();
    now += REPEAT_LOG_INTERVAL_MS;
    expect(report.failed('unreachable', 'down')).toBe('down (still failing: 2 attempts since this was last logged)');
    expect(report.failed('refused:5', 'refused')).toBe('refused');
    report.reset();
    expect(report.failed('refused:5', 'refused')).toBe('refused');
  });
});
