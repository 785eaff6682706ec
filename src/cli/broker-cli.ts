import { Command, InvalidArgumentError } from 'commander';
import { BrokerError } from '../errors.js';
import { consoleLogger } from '../logger.js';
import { createBroker, DEFAULTS } from '../server/broker.js';

function integer(value: string): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed)) throw new InvalidArgumentError('not an integer');
  return parsed;
}

/** `broker`: runs the broker until SIGINT/SIGTERM, then shuts down cleanly and exits 0. */
export async function main(argv: string[]): Promise<void> {
  const program = new Command('broker')
    .description('A durable MQTT 3.1.1 broker: acknowledged messages and persistent sessions survive any restart.')
    .option('--host <address>', 'interface to listen on', DEFAULTS.host)
    .option('--port <number>', 'TCP port', integer, DEFAULTS.port)
    .option('--data <dir>', 'data directory (the store lives in <dir>/store)', DEFAULTS.dataDir)
    .option('--no-sync', 'do not fsync before acknowledging: faster, but a power cut can lose acknowledged messages')
    .option('--max-inflight <number>', 'outbound QoS1/2 messages in flight per session', integer, DEFAULTS.maxInflight)
    .option('--connect-timeout <ms>', 'time a new connection has to send CONNECT', integer, DEFAULTS.connectTimeoutMs)
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
  let broker;
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
    await broker.listen();
  } catch (error) {
    const message = error instanceof BrokerError ? error.message : String(error);
    console.error(`broker: ${message}`);
    process.exitCode = 1;
    return;
  }

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info(`${signal} received, shutting down`);
    broker.close().then(
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
}
