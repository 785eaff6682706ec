import { Command, InvalidArgumentError } from 'commander';
import { BrokerError } from '../errors.js';
import { consoleLogger } from '../logger.js';
import { createBroker, DEFAULTS, type Broker } from '../server/broker.js';

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
    .option('--no-sync', 'do not fsync before acknowledging: faster, but a power cut can lose acknowledged messages')
    .option('--max-inflight <number>', 'outbound QoS1/2 messages in flight per session', integerIn(1, 65535), DEFAULTS.maxInflight)
    .option('--connect-timeout <ms>', 'time a new connection has to send CONNECT', integerIn(1, 2 ** 31 - 1), DEFAULTS.connectTimeoutMs)
    .parse(argv);
  const options = program.opts<{
    host: string;
    port: number;
    data: string;
    sync: boolean;
    maxInflight: number;
    connectTimeout: number;
  }>();

  const log = consoleLogger();
  let broker: Broker;
  try {
    broker = createBroker({
      host: options.host,
      port: options.port,
      dataDir: options.data,
      sync: options.sync,
      maxInflight: options.maxInflight,
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
