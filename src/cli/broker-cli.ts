import { spawn } from 'node:child_process';
import { fstatSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { AccessControl } from '../auth/access-control.js';
import { BrokerError, errorMessage } from '../errors.js';
import { consoleLogger, LOG_FORMATS, LOG_LEVELS, type LogFormat, type Logger, type LogLevel } from '../logger.js';
import { createBroker, DEFAULTS, OPTION_RANGES, type Broker, type BrokerOptions } from '../server/broker.js';
import { existingFileOption, loadConfigFile, type ConfigOptions } from '../server/config.js';
import { formatAddress } from '../server/listeners.js';
import { packageVersion } from '../server/version.js';
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

/**
 * `broker`: runs the broker until SIGINT/SIGTERM, then shuts down cleanly and exits 0.
 * `broker --check-config FILE`: checks FILE (and the flags beside it) and exits 0 or 1.
 */
export async function main(argv: string[]): Promise<void> {
  let commandLine: CommandLine;
  try {
    commandLine = await readCommandLine(argv);
  } catch (error) {
    fail(error); // a bad config or option: nothing was started
    return;
  }
  const { logLevel, logFormat, ...options } = commandLine.options;
  const log = consoleLogger({ level: logLevel, format: logFormat, journal: journalStreams() });
  if (commandLine.checkConfig !== undefined) {
    await checkConfig(commandLine.checkConfig, options, log);
    return;
  }
  // From here on the log format is known: a start that fails says so in it (one JSON object).
  const failStart = (error: unknown) => (logFormat === 'json' ? log.error(describeError(error)) : fail(error));

  let broker: Broker;
  try {
    broker = createBroker({ ...options, log });
  } catch (error) {
    failStart(error);
    process.exitCode = 1;
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
    failStart(error);
    process.exit(1);
  }
  if (!stopping) await notifyReady(`listening on ${broker.addresses().map(({ address, port }) => formatAddress(address, port)).join(', ')}`, log);
}

/**
 * `--check-config FILE`: what a start checks before it opens the store — the file, the flags beside
 * it, the options as createBroker takes them, the password and ACL files as they parse — and
 * nothing more: no store is opened, no port bound, no directory created.
 */
async function checkConfig(file: string, options: BrokerOptions, log: Logger): Promise<void> {
  try {
    // createBroker checks its options and builds the broker; only listen() opens anything.
    createBroker({ ...options, log });
    const access = new AccessControl({ passwordFile: options.passwordFile, aclFile: options.aclFile, log, watch: false });
    await access.start();
    access.close();
  } catch (error) {
    fail(error);
    return;
  }
  console.log(`${file}: valid`);
}

/**
 * Under systemd with `Type=notify` (NOTIFY_SOCKET set): tells it the broker is ready, once every
 * listener accepts connections. Node cannot send a datagram on a Unix socket, so `systemd-notify`
 * sends it; it runs as our child, hence `NotifyAccess=all` in the unit. Since systemd 246 it also
 * waits until systemd has read the message, so that the message still counts after it exited.
 */
async function notifyReady(status: string, log: Logger): Promise<void> {
  if (!process.env['NOTIFY_SOCKET']) return;
  const problem = await new Promise<string | undefined>((resolve) => {
    const child = spawn('systemd-notify', ['--ready', `--status=${status}`], { stdio: ['ignore', 'ignore', 'pipe'] });
    let output = '';
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.once('error', (error) => resolve(errorMessage(error)));
    child.once('close', (code, signal) => resolve(code === 0 ? undefined : `${code === null ? signal : `exit code ${code}`} ${output.trim()}`.trim()));
  });
  if (problem !== undefined) {
    log.error(`NOTIFY_SOCKET is set but systemd-notify --ready failed (${problem}): systemd will stop the broker when its start-up time runs out`);
  }
}

interface Flags {
  config?: string;
  checkConfig?: string;
  logLevel: LogLevel;
  logFormat: LogFormat;
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
  persistentSessionExpiry?: number;
  moveCorruptStoreAside?: true;
  metricsPort?: number;
}

interface CommandLine {
  options: ConfigOptions;
  /** `--check-config FILE`: check, do not start. */
  checkConfig?: string;
}

/**
 * The broker's options from the command line: the config file (--config), then the flags the user
 * actually gave on top of it. Defaults shown in --help are the broker's own and never override the file.
 */
export async function commandLineOptions(argv: string[]): Promise<ConfigOptions> {
  return (await readCommandLine(argv)).options;
}

async function readCommandLine(argv: string[]): Promise<CommandLine> {
  const program = new Command('broker')
    .description('A durable MQTT 3.1.1 broker: acknowledged messages and persistent sessions survive any restart.')
    .version(packageVersion(), '-V, --version', 'print the version and exit')
    .option('--config <file>', 'config file, JSON (.json) or YAML (.yaml, .yml); the flags below override it')
    .addOption(
      new Option('--check-config <file>', 'check the config file and the flags beside it as a start would, print every problem, exit 0 if valid, 1 if not; starts nothing').conflicts(
        'config',
      ),
    )
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
    .option(
      '--persistent-session-expiry <seconds>',
      'discard a persistent session whose client has been away this long, where the client did not set an expiry itself (3.1.1); default never',
      inRange('persistentSessionExpiry'),
    )
    .option('--metrics-port <number>', 'serve /metrics (Prometheus) and /healthz over HTTP on this port, on 127.0.0.1 unless the config file says otherwise', integerIn(0, 65535))
    .option('--move-corrupt-store-aside', 'a store found corrupt at start is renamed store.corrupt-<time> and the broker starts empty')
    .addOption(new Option('--log-level <level>', 'least severe log lines printed').choices(LOG_LEVELS).default('info'))
    .addOption(new Option('--log-format <format>', 'text: one readable line each; json: one JSON object per line').choices(LOG_FORMATS).default('text'))
    .parse(argv);
  const flags = program.opts<Flags>();
  const given = (name: keyof Flags) => {
    const source = program.getOptionValueSource(name);
    return source !== undefined && source !== 'default';
  };

  const configFile = flags.checkConfig ?? flags.config;
  const options: ConfigOptions = configFile === undefined ? {} : await loadConfigFile(configFile);
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
  if (given('persistentSessionExpiry')) options.persistentSessionExpiry = flags.persistentSessionExpiry;
  if (given('moveCorruptStoreAside')) options.storeOnCorrupt = 'move-aside';
  if (given('metricsPort')) options.metrics = { ...options.metrics, port: flags.metricsPort! };
  if (given('logLevel')) options.logLevel = flags.logLevel;
  if (given('logFormat')) options.logFormat = flags.logFormat;
  return flags.checkConfig === undefined ? { options } : { options, checkConfig: flags.checkConfig };
}

/**
 * Whether stdout and stderr go to journald: systemd then sets JOURNAL_STREAM to the device and
 * inode of that stream; one inherited from a parent whose output went there names another file.
 */
function journalStreams(): { stdout: boolean; stderr: boolean } {
  const stream = process.env['JOURNAL_STREAM'];
  const isJournal = (fd: number) => {
    if (!stream) return false;
    try {
      const { dev, ino } = fstatSync(fd, { bigint: true });
      return `${dev}:${ino}` === stream;
    } catch {
      return false;
    }
  };
  return { stdout: isJournal(1), stderr: isJournal(2) };
}

function fail(error: unknown): void {
  console.error(`broker: ${describeError(error)}`);
  process.exitCode = 1;
}

function describeError(error: unknown): string {
  return error instanceof BrokerError ? error.message : String(error);
}
