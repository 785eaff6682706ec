import type { AddressInfo } from 'node:net';
import { createBroker, type Broker, type BrokerOptions } from '../../src/server/broker.js';
import { makeDataDir, removeDataDir } from './broker-process.js';

export interface RunningBroker {
  broker: Broker;
  port: number;
  dataDir: string;
  stop(): Promise<void>;
}

/** An embedded broker on a free loopback port with a fresh LevelDB data directory. */
export async function startBroker(options: BrokerOptions = {}): Promise<RunningBroker> {
  const dataDir = options.dataDir ?? makeDataDir();
  const broker = createBroker({ host: '127.0.0.1', port: 0, dataDir, ...options });
  const address: AddressInfo = await broker.listen();
  return {
    broker,
    port: address.port,
    dataDir,
    async stop() {
      await broker.close();
      if (!options.dataDir) removeDataDir(dataDir);
    },
  };
}
