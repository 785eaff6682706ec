/**
 * The config file: JSON and YAML parse to the same BrokerOptions, relative paths resolve against
 * the file's directory, every kind of mistake is an error naming the file and the key path, and
 * command-line flags the user gave override the file while flags left at their defaults do not.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { commandLineOptions } from '../../src/cli/broker-cli.js';
import { BrokerError, ErrorCodes } from '../../src/errors.js';
import { configToOptions, loadConfigFile, type ConfigOptions } from '../../src/server/config.js';
import { makeTlsFixture, type TlsFixture } from '../helpers/tls-fixture.js';

let tls: TlsFixture;
// Made when the file loads: the error table below names paths in it.
const dir = mkdtempSync(join(tmpdir(), 'broker-config-'));

beforeAll(() => {
  tls = makeTlsFixture();
  // Files the config refers to, beside it (the paths in it are relative to its directory).
  writeFileSync(join(dir, 'passwd'), '');
  writeFileSync(join(dir, 'acl'), 'topic read $SYS/#\n');
  for (const [name, contents] of [
    ['server.crt', tls.server.cert],
    ['server.key', tls.server.key],
    ['ca.crt', tls.ca.cert],
    ['other.key', tls.client('someone').key],
  ] as const) {
    writeFileSync(join(dir, name), contents);
  }
  mkdirSync(join(dir, 'a-directory'));
});

afterAll(() => {
  tls.remove();
  rmSync(dir, { recursive: true, force: true });
});

function write(name: string, text: string): string {
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
}

/** The error a config file fails with (the test fails if it loads). */
async function loadError(file: string): Promise<BrokerError> {
  const error = await loadConfigFile(file).then(
    () => undefined,
    (caught: unknown) => caught,
  );
  if (!(error instanceof BrokerError)) throw new Error(`expected a BrokerError from ${file}, got ${String(error)}`);
  expect(error.code).toBe(ErrorCodes.BAD_CONFIG);
  return error;
}

const FULL_YAML = `
# every key of the schema
data_dir: ./data
sync: false
sync_interval_ms: 0
allow_anonymous: false
password_file: ./passwd
acl_file: acl
store_on_corrupt: move-aside
log_level: debug
log_format: json
listeners:
  - host: 127.0.0.1
    port: 1883
  - host: 0.0.0.0
    port: 8883
    allow_anonymous: true
    tls:
      cert: server.crt
      key: ./server.key
      ca: ca.crt
      require_client_cert: true
      cert_username: true
limits:
  max_inflight: 16
  max_queued_messages: 5000
  max_queued_bytes: 1048576
  read_window: 200
  connect_timeout_ms: 10000
  max_packet_size: 65536
  max_connections: 100
  max_topic_length: 256
  max_topic_levels: 16
  max_subscriptions_per_client: 50
`;

const FULL_JSON = JSON.stringify({
  data_dir: './data',
  sync: false,
  sync_interval_ms: 0,
  allow_anonymous: false,
  password_file: './passwd',
  acl_file: 'acl',
  store_on_corrupt: 'move-aside',
  log_level: 'debug',
  log_format: 'json',
  listeners: [
    { host: '127.0.0.1', port: 1883 },
    {
      host: '0.0.0.0',
      port: 8883,
      allow_anonymous: true,
      tls: { cert: 'server.crt', key: './server.key', ca: 'ca.crt', require_client_cert: true, cert_username: true },
    },
  ],
  limits: {
    max_inflight: 16,
    max_queued_messages: 5000,
    max_queued_bytes: 1048576,
    read_window: 200,
    connect_timeout_ms: 10000,
    max_packet_size: 65536,
    max_connections: 100,
    max_topic_length: 256,
    max_topic_levels: 16,
    max_subscriptions_per_client: 50,
  },
});

describe('config file: parsing and mapping', () => {
  it('a YAML file with every key maps to the matching BrokerOptions; TLS files are read, other paths resolved', async () => {
    const options = await loadConfigFile(write('full.yaml', FULL_YAML));
    expect(options).toEqual({
      dataDir: join(dir, 'data'),
      sync: false,
      syncIntervalMs: 0,
      allowAnonymous: false,
      passwordFile: join(dir, 'passwd'),
      aclFile: join(dir, 'acl'),
      storeOnCorrupt: 'move-aside',
      logLevel: 'debug',
      logFormat: 'json',
      listeners: [
        { host: '127.0.0.1', port: 1883 },
        {
          host: '0.0.0.0',
          port: 8883,
          allowAnonymous: true,
          tls: { cert: tls.server.cert, key: tls.server.key, ca: tls.ca.cert, requireClientCert: true, certUsername: true },
        },
      ],
      maxInflight: 16,
      maxQueuedMessages: 5000,
      maxQueuedBytes: 1048576,
      readWindow: 200,
      connectTimeoutMs: 10000,
      maxPacketSize: 65536,
      maxConnections: 100,
      maxTopicLength: 256,
      maxTopicLevels: 16,
      maxSubscriptionsPerClient: 50,
    } satisfies ConfigOptions);
  });

  it('the same settings as JSON (.json) give the same options as YAML (.yaml and .yml)', async () => {
    const fromJson = await loadConfigFile(write('full.json', FULL_JSON));
    expect(fromJson).toEqual(await loadConfigFile(write('full.yaml', FULL_YAML)));
    expect(fromJson).toEqual(await loadConfigFile(write('full.yml', FULL_YAML)));
  });

  it('relative paths resolve against the config file directory, not the working directory', async () => {
    const sub = join(dir, 'etc', 'broker');
    mkdirSync(sub, { recursive: true });
    writeFileSync(join(sub, 'passwd'), '');
    const file = join(sub, 'broker.yaml');
    writeFileSync(file, 'data_dir: ../../var/data\npassword_file: passwd\nacl_file: ../../acl\n');
    // Loaded through a path relative to the working directory: the file's own directory still counts.
    const options = await loadConfigFile(relative(process.cwd(), file));
    expect(options).toEqual({ dataDir: join(dir, 'var', 'data'), passwordFile: join(sub, 'passwd'), aclFile: join(dir, 'acl') });
  });

  it('keys left out are left out of the options (the broker defaults apply); an empty YAML file is no settings', async () => {
    expect(await loadConfigFile(write('empty.yaml', ''))).toEqual({});
    expect(await loadConfigFile(write('comments.yaml', '# nothing set yet\n'))).toEqual({});
    expect(await loadConfigFile(write('limits.json', '{"limits": {"max_inflight": 4}}'))).toEqual({ maxInflight: 4 });
    expect(await loadConfigFile(write('listener.yaml', 'listeners:\n  - port: 0\n'))).toEqual({ listeners: [{ host: '127.0.0.1', port: 0 }] });
  });

  it('sync_interval_ms > 0 means acknowledge before fsync (sync off), like --sync-interval; sync: false alone means never fsync', async () => {
    expect(await configToOptions({ sync_interval_ms: 250 }, 'b.yaml')).toEqual({ sync: false, syncIntervalMs: 250 });
    expect(await configToOptions({ sync: true, sync_interval_ms: 250 }, 'b.yaml')).toEqual({ sync: false, syncIntervalMs: 250 });
    expect(await configToOptions({ sync: false }, 'b.yaml')).toEqual({ sync: false, syncIntervalMs: 0 });
    expect(await configToOptions({ sync: true, sync_interval_ms: 0 }, 'b.yaml')).toEqual({ sync: true, syncIntervalMs: 0 });
  });
});

describe('config file: errors name the file and the key path', () => {
  it.each([
    // unknown keys, with a suggestion when one is close
    { case: 'unknown top-level key', yaml: 'data_dri: ./x\n', expected: ['data_dri: unknown key (did you mean data_dir?)'] },
    { case: 'unknown key in limits', yaml: 'limits:\n  max_inflght: 3\n', expected: ['limits.max_inflght: unknown key (did you mean max_inflight?)'] },
    { case: 'unknown key in a listener', yaml: 'listeners:\n  - port: 1\n  - port: 2\n    bind: x\n', expected: ['listeners[1].bind: unknown key'] },
    {
      case: 'unknown key under tls',
      yaml: 'listeners:\n  - port: 1\n    tls: {cert: server.crt, key: server.key, verify: true}\n',
      expected: ['listeners[0].tls.verify: unknown key'],
    },
    // wrong types
    { case: 'YAML yes is a string, not a boolean', yaml: 'sync: yes\n', expected: ['sync: expected true or false, got "yes"'] },
    { case: 'a string for a number', yaml: 'limits:\n  max_inflight: "32"\n', expected: ['limits.max_inflight: expected an integer from 1 to 65535, got "32"'] },
    { case: 'a fraction for an integer', yaml: 'limits:\n  read_window: 1.5\n', expected: ['limits.read_window: expected an integer from 1 to 1000000, got 1.5'] },
    { case: 'a number for a path', yaml: 'data_dir: 42\n', expected: ['data_dir: expected a non-empty string, got 42'] },
    { case: 'null (an empty value) for a path', yaml: 'acl_file:\n', expected: ['acl_file: expected a non-empty string, got null'] },
    { case: 'a mapping for a list', yaml: 'listeners:\n  port: 1883\n', expected: ['listeners: expected a list of listeners, got a mapping'] },
    { case: 'a list for a mapping', yaml: 'limits: [1, 2]\n', expected: ['limits: expected a mapping of keys, got a list'] },
    { case: 'a bad enum value', yaml: 'store_on_corrupt: ignore\n', expected: ['store_on_corrupt: expected one of fail, move-aside, got "ignore"'] },
    { case: 'a log level that is not one', yaml: 'log_level: verbose\n', expected: ['log_level: expected one of debug, info, warn, error, got "verbose"'] },
    { case: 'a log format that is not one', yaml: 'log_format: logfmt\n', expected: ['log_format: expected one of text, json, got "logfmt"'] },
    { case: 'a misspelt log key', yaml: 'log_levl: warn\n', expected: ['log_levl: unknown key (did you mean log_level?)'] },
    { case: 'a top level that is not a mapping', yaml: '- port: 1883\n', expected: ['expected a mapping of settings, got a list'] },
    // out of range
    { case: 'port above 65535', yaml: 'listeners:\n  - port: 65536\n', expected: ['listeners[0].port: expected an integer from 0 to 65535, got 65536'] },
    { case: 'negative port', yaml: 'listeners:\n  - port: -1\n', expected: ['listeners[0].port: expected an integer from 0 to 65535, got -1'] },
    { case: 'max_inflight 0', yaml: 'limits:\n  max_inflight: 0\n', expected: ['limits.max_inflight: expected an integer from 1 to 65535, got 0'] },
    {
      case: 'max_packet_size above what MQTT can encode',
      yaml: 'limits:\n  max_packet_size: 268435461\n',
      expected: ['limits.max_packet_size: expected an integer from 2 to 268435460, got 268435461'],
    },
    { case: 'sync_interval_ms above a minute', yaml: 'sync_interval_ms: 60001\n', expected: ['sync_interval_ms: expected an integer from 0 to 60000, got 60001'] },
    { case: 'max_topic_length above 65535', yaml: 'limits:\n  max_topic_length: 70000\n', expected: ['limits.max_topic_length: expected an integer from 1 to 65535, got 70000'] },
    // missing or contradictory settings
    { case: 'a listener without a port', yaml: 'listeners:\n  - host: 127.0.0.1\n', expected: ['listeners[0].port: required'] },
    { case: 'an empty listener list', yaml: 'listeners: []\n', expected: ['listeners: must hold at least one listener'] },
    {
      case: 'two listeners on one address',
      yaml: 'listeners:\n  - {host: 127.0.0.1, port: 1883}\n  - {host: 127.0.0.1, port: 1883}\n',
      expected: ['listeners[1]: same host and port as listeners[0]'],
    },
    { case: 'tls without cert and key', yaml: 'listeners:\n  - port: 1\n    tls: {}\n', expected: ['listeners[0].tls.cert: required', 'listeners[0].tls.key: required'] },
    {
      case: 'client certificates without a CA',
      yaml: 'listeners:\n  - port: 1\n    tls: {cert: server.crt, key: server.key, cert_username: true}\n',
      expected: ['listeners[0].tls.ca: required when require_client_cert or cert_username is true'],
    },
    // files
    { case: 'missing password file', yaml: 'password_file: ./nope\n', expected: [`password_file: file not found: ${join(dir, 'nope')}`] },
    { case: 'missing ACL file', yaml: 'acl_file: rules.acl\n', expected: [`acl_file: file not found: ${join(dir, 'rules.acl')}`] },
    { case: 'a directory as the ACL file', yaml: 'acl_file: a-directory\n', expected: [`acl_file: not a file: ${join(dir, 'a-directory')}`] },
    {
      case: 'missing certificate file',
      yaml: 'listeners:\n  - port: 1\n    tls: {cert: missing.crt, key: server.key}\n',
      expected: [`listeners[0].tls.cert: file not found: ${join(dir, 'missing.crt')}`],
    },
    {
      case: 'missing CA file',
      yaml: 'listeners:\n  - port: 1\n    tls: {cert: server.crt, key: server.key, ca: nope/ca.crt}\n',
      expected: [`listeners[0].tls.ca: file not found: ${join(dir, 'nope', 'ca.crt')}`],
    },
    {
      case: 'a key file that holds a certificate',
      yaml: 'listeners:\n  - port: 1\n    tls: {cert: server.crt, key: server.crt}\n',
      expected: [`listeners[0].tls.key: ${join(dir, 'server.crt')} does not hold a PEM private key`],
    },
    {
      case: 'a certificate file that holds a key',
      yaml: 'listeners:\n  - port: 1\n    tls: {cert: server.key, key: server.key}\n',
      expected: [`listeners[0].tls.cert: ${join(dir, 'server.key')} does not hold a PEM certificate`],
    },
    {
      case: 'a key that is not the certificate’s',
      yaml: 'listeners:\n  - port: 1\n    tls: {cert: server.crt, key: other.key}\n',
      expected: [`listeners[0].tls.key: does not belong to the certificate in ${join(dir, 'server.crt')}`],
    },
  ])('$case', async ({ yaml, expected }) => {
    const file = write('bad.yaml', yaml);
    const { message } = await loadError(file);
    const lines = message.split('\n');
    expect(lines).toHaveLength(expected.length);
    expected.forEach((line, index) => expect(lines[index]).toContain(`${file}: ${line}`));
  });

  it('every problem of a file is reported at once, in one message, each on its own line', async () => {
    const file = write('many.yaml', 'sync: 1\nlimits:\n  max_inflight: 0\n  bogus: 1\nlisteners:\n  - port: 99999\n');
    const { message } = await loadError(file);
    expect(message.split('\n')).toEqual([
      `${file}: sync: expected true or false, got 1`,
      `${file}: listeners[0].port: expected an integer from 0 to 65535, got 99999`,
      `${file}: limits.bogus: unknown key`,
      `${file}: limits.max_inflight: expected an integer from 1 to 65535, got 0`,
    ]);
  });

  it('YAML syntax errors and duplicate keys name the line and column', async () => {
    const broken = write('broken.yaml', 'limits:\n  max_inflight: 3\n max_connections: 4\n');
    expect((await loadError(broken)).message).toMatch(new RegExp(`^${escape(broken)}: line 3, column \\d+: not valid YAML: `));
    const duplicate = write('duplicate.yaml', 'sync: true\nsync: false\n');
    expect((await loadError(duplicate)).message).toBe(`${duplicate}: line 2, column 1: not valid YAML: Map keys must be unique`);
  });

  it('JSON syntax errors say the file is not valid JSON, on one line', async () => {
    const file = write('broken.json', '{"limits": {\n"max_inflight": }\n}');
    const { message } = await loadError(file);
    expect(message).toMatch(new RegExp(`^${escape(file)}: .*not valid JSON: `));
    expect(message).not.toContain('\n');
  });

  it('a missing config file, and a name without .json/.yaml/.yml, are errors naming the file', async () => {
    const missing = join(dir, 'missing.yaml');
    expect((await loadError(missing)).message).toBe(`${missing}: cannot read the config file: file not found: ${missing}`);
    const toml = write('broker.toml', 'sync = true\n');
    expect((await loadError(toml)).message).toBe(`${toml}: unknown config file format: the name must end in .json, .yaml or .yml`);
  });
});

describe('command line over the config file', () => {
  const argv = (...args: string[]) => ['node', 'broker', ...args];
  const configFile = () =>
    write(
      'cli.yaml',
      [
        'data_dir: ./cli-data',
        'sync_interval_ms: 100',
        'allow_anonymous: false',
        'listeners:',
        '  - {host: 127.0.0.1, port: 1884}',
        '  - {host: 127.0.0.1, port: 1885}',
        'limits:',
        '  max_inflight: 7',
        '  max_packet_size: 4096',
        '  max_connections: 20',
        '  connect_timeout_ms: 5000',
        'log_level: error',
        'log_format: json',
        '',
      ].join('\n'),
    );

  it('flags the user did not give (commander defaults) leave the file alone', async () => {
    const file = configFile();
    const options = await commandLineOptions(argv('--config', file));
    expect(options).toEqual(await loadConfigFile(file));
    // --log-level and --log-format show defaults in --help (info, text); the file's own stand
    expect(options).toMatchObject({ logLevel: 'error', logFormat: 'json' });
  });

  it('--check-config FILE reads FILE as --config does, and the flags beside it apply on top', async () => {
    const file = configFile();
    expect(await commandLineOptions(argv('--check-config', file))).toEqual(await commandLineOptions(argv('--config', file)));
    expect(await commandLineOptions(argv('--check-config', file, '--max-inflight', '3', '--log-level', 'debug'))).toEqual({
      ...(await loadConfigFile(file)),
      maxInflight: 3,
      logLevel: 'debug',
    });
  });

  it('every flag the user gives overrides the file', async () => {
    const file = configFile();
    const passwd = relative(process.cwd(), join(dir, 'passwd'));
    const options = await commandLineOptions(
      argv(
        '--config', file, '--host', '127.0.0.2', '--port', '0', '--data', 'elsewhere', '--max-inflight', '9',
        '--max-packet-size', '2048', '--max-connections', '3', '--connect-timeout', '700', '--allow-anonymous',
        '--password-file', passwd, '--acl-file', join(dir, 'acl'), '--move-corrupt-store-aside', '--no-sync',
        '--log-level', 'warn', '--log-format', 'json',
      ),
    );
    expect(options).toEqual({
      ...(await loadConfigFile(file)),
      // host and port replace the first listener's address (see createBroker); the list stays as the file says
      host: '127.0.0.2',
      port: 0,
      dataDir: 'elsewhere',
      sync: false,
      syncIntervalMs: 0,
      maxInflight: 9,
      maxPacketSize: 2048,
      maxConnections: 3,
      connectTimeoutMs: 700,
      allowAnonymous: true,
      passwordFile: join(dir, 'passwd'),
      aclFile: join(dir, 'acl'),
      storeOnCorrupt: 'move-aside',
      logLevel: 'warn',
      logFormat: 'json',
    });
  });

  it('--sync-interval overrides the file’s sync settings; --max-queued-* override limits', async () => {
    const file = write('sync.yaml', 'sync: true\nlimits:\n  max_queued_messages: 10\n  max_queued_bytes: 10\n');
    expect(await commandLineOptions(argv('--config', file, '--sync-interval', '50', '--max-queued-messages', '11', '--max-queued-bytes', '12'))).toEqual({
      sync: false,
      syncIntervalMs: 50,
      maxQueuedMessages: 11,
      maxQueuedBytes: 12,
    });
  });

  it('without --config only the flags given are set: the broker applies its own defaults to the rest', async () => {
    expect(await commandLineOptions(argv())).toEqual({});
    expect(await commandLineOptions(argv('--port', '1999'))).toEqual({ port: 1999 });
  });

  it('a --password-file or --acl-file that does not exist is an error naming the flag and the path', async () => {
    const missing = join(dir, 'no-such-passwd');
    await expect(commandLineOptions(argv('--password-file', missing))).rejects.toThrow(`--password-file: file not found: ${missing}`);
    await expect(commandLineOptions(argv('--acl-file', dir))).rejects.toThrow(`--acl-file: not a file: ${dir}`);
  });

  it('a bad config file given with --config rejects with its problems (the CLI prints them and exits 1)', async () => {
    const file = write('cli-bad.yaml', 'limits:\n  max_inflight: 0\n');
    await expect(commandLineOptions(argv('--config', file, '--max-inflight', '5'))).rejects.toThrow(
      `${file}: limits.max_inflight: expected an integer from 1 to 65535, got 0`,
    );
  });
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
