import { Command, InvalidArgumentError } from 'commander';
import { BrokerError } from '../errors.js';
import { consoleLogger } from '../logger.js';
import { createBroker, DEFAULTS, OPTION_RANGES, type Broker } from '../server/broker.js';
import { existingFileOption, loadConfigFile, type ConfigOptions } from '../server/config.js';
import { DEFAULT_QUEUE_LIMITS } from '../store/queue-limits.js';

function integerIn(min: number, max: number) {
  return (value: string): number => {
    const parsed = Number(value);
    if (value.trim() === '' || !Number.isInteger(parsed) || parsed < min || parsed > max) {
      throw new InvalidArgumentError(`expected an integer from ${min} to ${max}`);
    }
    return parsed;
  };
}

/** A parser for a numeric option, with the range createBroker accepts for it. */
function inRange(option: keyof typeof OPTION_RANGES) {
  return integerIn(OPTION_RANGES[option].min, OPTION_RANGES[option].max);
}

/** `broker`: runs the broker until SIGINT/SIGTERM, then shuts down cleanly and exits 0. */
export async function main(argv: string[]): Promise<void> {
  const log = consoleLogger();
  let broker: Broker;
  try {
    broker = createBroker({ ...(await commandLineOptions(argv)), log });
  } catch (error) {
    fail(error); // a bad config or option: nothing was started
    return;
  }

  // Installed before listen(): a signal that arrives as soon as `listening on` is printed must
  // still shut down cleanly, after the start-up has finished.
  let stopping = false;
  const started = broker.listen();
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info(`${signal} received, shutting down`);
    started
      .then(
        () => broker.close(),
        () => undefined, // start-up failed: already reported below
      )
      .then(
        () => {
          log.info('store closed, bye');
          process.exit(0);
        },
        (error: unknown) => {
          log.error(`shutdown failed: ${String(error)}`);
          process.exit(1);
        },
      );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  // SIGHUP re-reads the password and ACL files (a change on disk is picked up without it too).
  process.on('SIGHUP', () => {
    log.info('SIGHUP received, reloading the password and ACL files');
    void started.then(
      () => broker.reload(),
      () => undefined,
    );
  });

  try {
    await started;
  } catch (error) {
    fail(error);
    process.exit(1);
  }
}

interface Flags {
  config?: string;
  host: string;
  port: number;
  data: string;
  sync: boolean;
  syncInterval?: number;
  maxInflight: number;
  maxQueuedMessages: number;
  maxQueuedBytes: number;
  connectTimeout: number;
  allowAnonymous?: true;
  passwordFile?: string;
  aclFile?: string;
  maxPacketSize: number;
  maxConnections: number;
  moveCorruptStoreAside?: true;
}

/**
 * The broker's options from the command line: the config file (--config), then the flags the user
 * actually gave on top of it. Defaults shown in --help are the broker's own and never override the file.
 */
export async function commandLineOptions(argv: string[]): Promise<ConfigOptions> {
  const program = new Command('broker')
    .description('A durable MQTT 3.1.1 broker: acknowledged messages and persistent sessions survive any restart.')
    .option('--config <file>', 'config file, JSON (.json) or YAML (.yaml, .yml); the flags below override it')
    .option('--host <address>', 'interface to listen on (with --config: of the first listener)', DEFAULTS.host)
    .option('--port <number>', 'TCP port, 0 picks a free one (with --config: of the first listener)', integerIn(0, 65535), DEFAULTS.port)
    .option('--data <dir>', 'data directory (the store lives in <dir>/store)', DEFAULTS.dataDir)
    .option('--no-sync', 'never fsync; the OS writes back when it likes: a power cut can lose what was acknowledged since')
    .option(
      '--sync-interval <ms>',
      'acknowledge without waiting for fsync and fsync every <ms> instead: a power cut can lose the last <ms> of acknowledged messages',
      integerIn(1, 60_000),
    )
    .option('--max-inflight <number>', 'outbound QoS1/2 messages in flight per session', inRange('maxInflight'), DEFAULTS.maxInflight)
    .option(
      '--max-queued-messages <n>',
      'messages queued per session; beyond it new messages are refused for that session and counted as dropped',
      inRange('maxQueuedMessages'),
      DEFAULT_QUEUE_LIMITS.maxMessages,
    )
    .option(
      '--max-queued-bytes <n>',
      'payload bytes queued per session; beyond it new messages are refused for that session and counted as dropped',
      inRange('maxQueuedBytes'),
      DEFAULT_QUEUE_LIMITS.maxBytes,
    )
    .option('--connect-timeout <ms>', 'time a new connection has to send CONNECT', inRange('connectTimeoutMs'), DEFAULTS.connectTimeoutMs)
    .option('--allow-anonymous', 'accept clients without a verified user name on listeners that are not loopback (loopback listeners always do)')
    .option('--password-file <file>', 'password file that user names are verified against (see broker-admin passwd)')
    .option('--acl-file <file>', 'ACL file: who may publish and subscribe to what')
    .option(
      '--max-packet-size <bytes>',
      'largest MQTT packet accepted, fixed header included; a bigger one closes the connection',
      inRange('maxPacketSize'),
      DEFAULTS.maxPacketSize,
    )
    .option('--max-connections <n>', 'client connections across all listeners; beyond it new sockets are closed', inRange('maxConnections'), DEFAULTS.maxConnections)
    .option('--move-corrupt-store-aside', 'a store found corrupt at start is renamed store.corrupt-<time> and the broker starts empty')
    .parse(argv);
  const flags = program.opts<Flags>();
  const given = (name: keyof Flags) => {
    const source = program.getOptionValueSource(name);
    return source !== undefined && source !== 'default';
  };

  const options: ConfigOptions = flags.config === undefined ? {} : await loadConfigFile(flags.config);
  if (given('host')) options.host = flags.host;
  if (given('port')) options.port = flags.port;
  if (given('data')) options.dataDir = flags.data;
  if (given('syncInterval')) {
    // --sync-interval implies acknowledging before fsync; --no-sync alone means never fsync.
    options.sync = false;
    options.syncIntervalMs = flags.syncInterval!;
  } else if (given('sync')) {
    options.sync = false;
    options.syncIntervalMs = 0;
  }
  if (given('maxInflight')) options.maxInflight = flags.maxInflight;
  if (given('maxQueuedMessages')) options.maxQueuedMessages = flags.maxQueuedMessages;
  if (given('maxQueuedBytes')) options.maxQueuedBytes = flags.maxQueuedBytes;
  if (given('connectTimeout')) options.connectTimeoutMs = flags.connectTimeout;
  if (given('allowAnonymous')) options.allowAnonymous = true;
  if (given('passwordFile')) options.passwordFile = await existingFileOption('--password-file', flags.passwordFile!);
  if (given('aclFile')) options.aclFile = await existingFileOption('--acl-file', flags.aclFile!);
  if (given('maxPacketSize')) options.maxPacketSize = flags.maxPacketSize;
  if (given('maxConnections')) options.maxConnections = flags.maxConnections;
  if (given('moveCorruptStoreAside')) options.storeOnCorrupt = 'move-aside';
  return options;
}

function fail(error: unknown): void {
  const message = error instanceof BrokerError ? error.message : String(error);
  console.error(`broker: ${message}`);
  process.exitCode = 1;
}
