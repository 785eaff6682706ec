import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { join, resolve } from 'node:path';
import { AdminServer } from '../admin/admin-server.js';
import { BrokerError, ErrorCodes, errorMessage } from '../errors.js';
import { silentLogger, type Logger } from '../logger.js';
import { Connection, type BrokerContext } from '../protocol/connection.js';
import { Distributor } from '../session/distributor.js';
import { SessionManager } from '../session/session-manager.js';
import { LevelRepository } from '../store/level-repository.js';
import { MemoryRepository } from '../store/memory-repository.js';
import { DEFAULT_QUEUE_LIMITS, type QueueLimits } from '../store/queue-limits.js';
import type { SessionRepository } from '../store/repository.js';

export interface BrokerOptions {
  /** Interface to listen on. Loopback by default: exposing the broker is a deliberate choice. */
  host?: string;
  /** TCP port; 0 picks a free one (see `address()` after `listen()`). */
  port?: number;
  /** Data directory; the LevelDB store lives in `<data>/store`. */
  dataDir?: string;
  /** fsync every batch before acknowledging (default true). See LevelRepositoryOptions.sync. */
  sync?: boolean;
  /** With sync false: fsync at most every this many ms. See LevelRepositoryOptions.syncIntervalMs. */
  syncIntervalMs?: number;
  /** Use this repository for persistent sessions instead of LevelDB in `dataDir` (tests, embedding). */
  repository?: SessionRepository;
  /** Outbound QoS1/2 messages in flight per session (default 32). */
  maxInflight?: number;
  /** Messages queued per session before new ones are refused for it (default 1,000,000). */
  maxQueuedMessages?: number;
  /** Payload bytes queued per session before new messages are refused for it (default 512 MiB). */
  maxQueuedBytes?: number;
  /** Queued messages a connected session keeps in memory; the rest is read from the store as needed (default 1000). */
  readWindow?: number;
  /** Milliseconds a new socket has to send CONNECT (default 30000). */
  connectTimeoutMs?: number;
  /**
   * Serve broker-admin on the Unix socket `<dataDir>/admin.sock` (mode 0600). Default: on with the
   * LevelDB store, off when a `repository` is injected (there is no store for it to inspect).
   */
  admin?: boolean;
  log?: Logger;
}

export interface Broker {
  /** Opens the store, restores sessions and retained messages, then accepts connections. */
  listen(): Promise<AddressInfo>;
  /** Stops accepting, ends every connection, lets store writes under way finish, closes the store. */
  close(): Promise<void>;
  address(): AddressInfo | undefined;
  readonly sessions: SessionManager;
}

export const DEFAULTS = {
  host: '127.0.0.1',
  port: 1883,
  dataDir: './data',
  maxInflight: 32,
  readWindow: 1000,
  connectTimeoutMs: 30_000,
} as const;

/** The composition root: store → sessions → routing → protocol → listener. */
export function createBroker(options: BrokerOptions = {}): Broker {
  const log = options.log ?? silentLogger;
  const host = options.host ?? DEFAULTS.host;
  const port = options.port ?? DEFAULTS.port;
  const maxInflight = positiveInteger('maxInflight', options.maxInflight ?? DEFAULTS.maxInflight, 65535);
  const readWindow = positiveInteger('readWindow', options.readWindow ?? DEFAULTS.readWindow, 1_000_000);
  const connectTimeoutMs = positiveInteger('connectTimeoutMs', options.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs, 2 ** 31 - 1);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new BrokerError(ErrorCodes.BAD_OPTION, `port must be an integer from 0 to 65535, got ${port}`);
  }

  const limits: QueueLimits = {
    maxMessages: positiveInteger('maxQueuedMessages', options.maxQueuedMessages ?? DEFAULT_QUEUE_LIMITS.maxMessages, 2 ** 40),
    maxBytes: positiveInteger('maxQueuedBytes', options.maxQueuedBytes ?? DEFAULT_QUEUE_LIMITS.maxBytes, 2 ** 50),
  };
  const durable =
    options.repository ??
    new LevelRepository({
      limits,
      location: join(resolve(options.dataDir ?? DEFAULTS.dataDir), 'store'),
      sync: options.sync ?? true,
      syncIntervalMs: options.syncIntervalMs ?? 0,
    });
  const adminEnabled = options.admin ?? options.repository === undefined;
  if (adminEnabled && !(durable instanceof LevelRepository)) {
    throw new BrokerError(ErrorCodes.BAD_OPTION, 'the admin channel inspects the LevelDB store: it cannot be used with an injected repository');
  }
  const dataDir = resolve(options.dataDir ?? DEFAULTS.dataDir);
  let admin: AdminServer | undefined;
  const volatile = new MemoryRepository({ limits });
  const sessions = new SessionManager({ durable, volatile, limits: { maxInflight, readWindow }, log });
  const context: BrokerContext = {
    sessions,
    distributor: new Distributor(sessions),
    log,
    options: { connectTimeoutMs },
    shuttingDown: false,
  };
  const connections = new Set<Connection>();
  let server: Server | undefined;
  let closing: Promise<void> | undefined;

  const accept = (socket: Socket) => {
    const connection = new Connection(socket, context);
    connections.add(connection);
    void connection.closed.then(() => connections.delete(connection));
  };

  return {
    sessions,

    async listen() {
      await Promise.all([durable.open(), volatile.open()]);
      try {
        const restored = await sessions.restore();
        log.info(`restored ${restored.sessions} persistent sessions and ${restored.retained} retained messages`);
        if (adminEnabled && durable instanceof LevelRepository) {
          const path = join(dataDir, 'admin.sock');
          try {
            admin = await AdminServer.start({ path, store: join(dataDir, 'store'), inspector: durable.inspector(), sessions, log });
          } catch (error) {
            // MQTT is served without it; broker-admin then reports the store in use and no admin channel.
            log.warn(`admin channel not available on ${path}: ${errorMessage(error)}`);
          }
        }
        server = createServer(accept);
        await new Promise<void>((resolveListen, rejectListen) => {
          server!.once('error', rejectListen);
          server!.listen(port, host, () => {
            server!.off('error', rejectListen);
            resolveListen();
          });
        });
      } catch (error) {
        server = undefined;
        await admin?.close();
        admin = undefined;
        await durable.close();
        if (error instanceof BrokerError) throw error;
        throw new BrokerError(ErrorCodes.LISTEN_FAILED, `cannot listen on ${host}:${port}: ${String(error)}`, { cause: error });
      }
      const address = server.address() as AddressInfo;
      log.info(`listening on ${address.address}:${address.port}`);
      return address;
    },

    close() {
      closing ??= (async () => {
        context.shuttingDown = true;
        // First, so admin requests under way end (and close their snapshots) before the store does.
        await admin?.close();
        const listening = server;
        const stopped = listening ? new Promise<void>((done) => listening.close(() => done())) : Promise.resolve();
        for (const connection of connections) connection.close('the broker is shutting down');
        await Promise.all([...connections].map((connection) => connection.closed));
        await stopped;
        await sessions.closeAll();
        await durable.close();
        await volatile.close();
      })();
      return closing;
    },

    address() {
      return (server?.address() as AddressInfo | null) ?? undefined;
    },
  };
}

function positiveInteger(name: string, value: number, max: number): number {
  if (!Number.isInteger(value) || value < 1 || value > max) {
    throw new BrokerError(ErrorCodes.BAD_OPTION, `${name} must be an integer from 1 to ${max}, got ${value}`);
  }
  return value;
}
