import { Command, InvalidArgumentError } from 'commander';
import { BrokerError } from '../errors.js';
import { consoleLogger } from '../logger.js';
import { createBroker, DEFAULTS, type Broker } from '../server/broker.js';
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

/** `broker`: runs the broker until SIGINT/SIGTERM, then shuts down cleanly and exits 0. */
export async function main(argv: string[]): Promise<void> {
  const program = new Command('broker')
    .description('A durable MQTT 3.1.1 broker: acknowledged messages and persistent sessions survive any restart.')
    .option('--host <address>', 'interface to listen on', DEFAULTS.host)
    .option('--port <number>', 'TCP port (0 picks a free one)', integerIn(0, 65535), DEFAULTS.port)
    .option('--data <dir>', 'data directory (the store lives in <dir>/store)', DEFAULTS.dataDir)
    .option('--no-sync', 'never fsync; the OS writes back when it likes: a power cut can lose what was acknowledged since')
    .option(
      '--sync-interval <ms>',
      'acknowledge without waiting for fsync and fsync every <ms> instead: a power cut can lose the last <ms> of acknowledged messages',
      integerIn(1, 60_000),
    )
    .option('--max-inflight <number>', 'outbound QoS1/2 messages in flight per session', integerIn(1, 65535), DEFAULTS.maxInflight)
    .option(
      '--max-queued-messages <n>',
      'messages queued per session; beyond it new messages are refused for that session and counted as dropped',
      integerIn(1, 2 ** 40),
      DEFAULT_QUEUE_LIMITS.maxMessages,
    )
    .option(
      '--max-queued-bytes <n>',
      'payload bytes queued per session; beyond it new messages are refused for that session and counted as dropped',
      integerIn(1, 2 ** 50),
      DEFAULT_QUEUE_LIMITS.maxBytes,
    )
    .option('--connect-timeout <ms>', 'time a new connection has to send CONNECT', integerIn(1, 2 ** 31 - 1), DEFAULTS.connectTimeoutMs)
    .parse(argv);
  const options = program.opts<{
    host: string;
    port: number;
    data: string;
    sync: boolean;
    syncInterval?: number;
    maxInflight: number;
    maxQueuedMessages: number;
    maxQueuedBytes: number;
    connectTimeout: number;
  }>();

  const log = consoleLogger();
  let broker: Broker;
  try {
    broker = createBroker({
      host: options.host,
      port: options.port,
      dataDir: options.data,
      // --sync-interval implies acknowledging before fsync; --no-sync alone means never fsync.
      sync: options.sync && options.syncInterval === undefined,
      syncIntervalMs: options.syncInterval ?? 0,
      maxInflight: options.maxInflight,
      maxQueuedMessages: options.maxQueuedMessages,
      maxQueuedBytes: options.maxQueuedBytes,
      connectTimeoutMs: options.connectTimeout,
      log,
    });
  } catch (error) {
    fail(error);
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

  try {
    await started;
  } catch (error) {
    fail(error);
    process.exit(1);
  }
}

function fail(error: unknown): void {
  const message = error instanceof BrokerError ? error.message : String(error);
  console.error(`broker: ${message}`);
  process.exitCode = 1;
}
