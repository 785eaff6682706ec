import type { AddressInfo, Socket } from 'node:net';
import { join, resolve } from 'node:path';
import { AdminServer } from '../admin/admin-server.js';
import { AccessControl } from '../auth/access-control.js';
import type { BridgeOptions } from '../bridge/bridge-options.js';
import { Bridges, checkBridges } from '../bridge/bridges.js';
import { isBridgeClientId } from '../session/bridge-client-id.js';
import { BrokerError, ErrorCodes, errorMessage } from '../errors.js';
import { silentLogger, type Logger } from '../logger.js';
import { summaryOf } from '../log-summary.js';
import { newTrafficCounters, type BrokerContext, type Transport } from '../protocol/broker-context.js';
import { Connection } from '../protocol/connection.js';
import type { ListenerInfo } from '../protocol/listener-info.js';
import { dispatch } from '../protocol/dispatcher.js';
import { newCounters, type BrokerCounters } from '../protocol/limits.js';
import { RetainedIndex } from '../routing/retained-index.js';
import { TopicTree } from '../routing/topic-tree.js';
import { Distributor, type SubscriberOptions } from '../session/distributor.js';
import { SessionManager } from '../session/session-manager.js';
import type { Session } from '../session/session.js';
import { ByteBudget } from '../session/byte-budget.js';
import { LevelRepository } from '../store/level-repository.js';
import { MemoryRepository } from '../store/memory-repository.js';
import { DEFAULT_QUEUE_LIMITS, type QueueLimits } from '../store/queue-limits.js';
import { DEFAULT_RETAINED_LIMITS, type RetainedLimits } from '../store/retained-limits.js';
import type { SessionRepository } from '../store/repository.js';
import { BrokerFigures } from './figures.js';
import type { MetricsOptions, MetricsServer } from './http/metrics-server.js';
import { Listener, type ListenerOptions, type TlsListenerOptions } from './listeners.js';
import { openStore } from './store-startup.js';
import { SysTopics, SysTopicsGuard } from './sys-topics.js';
import { packageVersion } from './version.js';

export type { BridgeOptions, ListenerOptions, MetricsOptions, TlsListenerOptions };

export interface BrokerOptions {
  /**
   * Interface to listen on. Loopback by default: exposing the broker is a deliberate choice.
   * With `listeners`, replaces the first listener's host.
   */
  host?: string;
  /** TCP port; 0 picks a free one (see `address()` after `listen()`). With `listeners`, replaces the first listener's port. */
  port?: number;
  /** Several listeners, plain TCP, TLS or WebSocket (default: one, from `host` and `port`). */
  listeners?: ListenerOptions[];
  /**
   * Accept clients without a verified user name on listeners that are not loopback (default false);
   * a listener's own `allowAnonymous` overrides it. Loopback listeners always accept them.
   */
  allowAnonymous?: boolean;
  /** Password file (absolute path) that user names are verified against; without it they are not verified. */
  passwordFile?: string;
  /** ACL file (absolute path); without it every client may publish and subscribe to anything. */
  aclFile?: string;
  /** What to do with a store found corrupt at start (default 'fail': exit naming the problem; 'move-aside': rename it and start empty). */
  storeOnCorrupt?: 'fail' | 'move-aside';
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
  /** Retained messages in the store, across the broker; beyond it a new one is not kept (default 100,000; see RetainedLimits). */
  maxRetainedMessages?: number;
  /** Payload bytes of the retained messages in the store (default 256 MiB). */
  maxRetainedBytes?: number;
  /** Queued messages a connected session keeps in memory; the rest is read from the store as needed (default 1000). */
  readWindow?: number;
  /** Payload bytes of queued messages a connected session keeps in memory, at least one message (default 1 MiB). */
  readWindowBytes?: number;
  /**
   * Payload bytes of queued messages all connected sessions keep in memory together (default 64
   * MiB); while it is spent, a session's window holds one message at a time.
   */
  maxTotalReadWindowBytes?: number;
  /** Milliseconds a new socket has to send CONNECT (default 30000). */
  connectTimeoutMs?: number;
  /** Bytes of one MQTT packet, fixed header included (default 1 MiB); a bigger one closes the connection before its body is read. */
  maxPacketSize?: number;
  /**
   * Bytes held in packets still arriving, across all connections (default 64 MiB, or maxPacketSize
   * if that is more): the connection whose bytes would take the total over it is closed. At least
   * maxPacketSize.
   */
  maxUnfinishedPacketBytes?: number;
  /** Milliseconds a packet may take from its first byte to its last (default 60000), keepalive 0 or not. */
  packetTimeoutMs?: number;
  /**
   * Bytes waiting unsent to one client before it counts as not reading (default 1 MiB): QoS 0
   * messages for it are dropped and its socket is not read until half of it has gone.
   */
  maxUnsentBytes?: number;
  /**
   * Bytes waiting unsent to all clients together (default 64 MiB): while over it, a client with
   * more than 64 KiB waiting counts as not reading (QoS 0 for it dropped, its deliveries and its
   * socket held) until it catches up.
   */
  maxTotalUnsentBytes?: number;
  /** Open client connections across all listeners (default 10000); a socket beyond it is closed at once. */
  maxConnections?: number;
  /** UTF-8 bytes of a topic name or filter (default 1024). */
  maxTopicLength?: number;
  /** Levels of a topic name or filter (default 128). */
  maxTopicLevels?: number;
  /** Subscriptions one session may hold (default 1000); SUBSCRIBE gets 0x80 for new filters beyond it. */
  maxSubscriptionsPerClient?: number;
  /** Persistent sessions stored at once (default 100,000); a CONNECT that would create one more gets 0x03. */
  maxSessions?: number;
  /** Subscriptions of all sessions together (default 200,000); new filters beyond it get 0x80. */
  maxSubscriptions?: number;
  /** Memory of all subscriptions and the routing tree, as counted (default 64 MiB); new filters beyond it get 0x80. */
  maxSubscriptionBytes?: number;
  /**
   * Serve broker-admin on the Unix socket `<dataDir>/admin.sock` (mode 0600). Default: on with the
   * LevelDB store, off when a `repository` is injected (there is no store for it to inspect).
   */
  admin?: boolean;
  /** MQTT 5 Topic Aliases a client may set per connection (default 10; 0: none). */
  topicAliasMaximum?: number;
  /** MQTT 5 Receive Maximum: QoS 1/2 PUBLISHes a client may have unacknowledged (default 1024). */
  receiveMaximum?: number;
  /** The highest QoS taken and granted (default 2); MQTT 5 clients are told it in CONNACK. */
  maxQos?: number;
  /**
   * Seconds a session whose client is away is kept when its client did not say (3.1.1
   * persistent sessions); default: forever. An MQTT 5 client's Session Expiry Interval applies to its own.
   */
  persistentSessionExpiry?: number;
  /** Bridges to upstream brokers (README, "Bridge to a central broker"). */
  bridges?: BridgeOptions[];
  /** Seconds between two publications of the $SYS topics (default 10); 0: none. */
  sysInterval?: number;
  /** Serve /metrics (Prometheus) and /healthz over HTTP (default: off). */
  metrics?: MetricsOptions;
  log?: Logger;
}

export interface Broker {
  /** Opens the store, restores sessions and retained messages, then accepts connections. */
  listen(): Promise<AddressInfo>;
  /** Stops accepting, ends every connection, lets store writes under way finish, closes the store. */
  close(): Promise<void>;
  /** The first listener's address, once listening. */
  address(): AddressInfo | undefined;
  /** Every listener's address, in the order of `listeners`, once listening. */
  addresses(): AddressInfo[];
  /** The address of /metrics and /healthz, once listening; undefined without `metrics`. */
  metricsAddress(): AddressInfo | undefined;
  readonly sessions: SessionManager;
  /** The bridges to upstream brokers, and their state. */
  readonly bridges: Bridges;
  /** What the limits refused since start (connections, QoS 0 deliveries, oversized packets). */
  readonly counters: Readonly<BrokerCounters>;
  /**
   * Re-reads the password and ACL files (the CLI calls it on SIGHUP; changes on disk are picked up
   * by themselves). A file that does not read or parse keeps the rules in force; the error is logged.
   */
  reload(): Promise<void>;
  /**
   * Publishes a message that is never stored: to the connected subscribers at QoS 0 and, with
   * `retain`, as a memory-only retained message for new subscriptions (see
   * Distributor.publishEphemeral). For the broker's own state topics, not for clients' data.
   */
  publishEphemeral(topic: string, payload: Buffer, retain: boolean): void;
}

export const DEFAULTS = {
  host: '127.0.0.1',
  port: 1883,
  dataDir: './data',
  maxInflight: 32,
  readWindow: 1000,
  readWindowBytes: 1024 * 1024,
  maxTotalReadWindowBytes: 64 * 1024 * 1024,
  connectTimeoutMs: 30_000,
  maxPacketSize: 1024 * 1024,
  maxUnfinishedPacketBytes: 64 * 1024 * 1024,
  packetTimeoutMs: 60_000,
  maxUnsentBytes: 1024 * 1024,
  maxTotalUnsentBytes: 64 * 1024 * 1024,
  maxConnections: 10_000,
  maxTopicLength: 1024,
  maxTopicLevels: 128,
  maxSubscriptionsPerClient: 1000,
  maxSessions: 100_000,
  maxSubscriptions: 200_000,
  maxSubscriptionBytes: 64 * 1024 * 1024,
  topicAliasMaximum: 10,
  receiveMaximum: 1024,
  maxQos: 2,
  sysInterval: 10,
  metricsHost: '127.0.0.1',
} as const;

/**
 * The range of every numeric option, in one place: createBroker, the config file and the command
 * line all check against it.
 */
export const OPTION_RANGES = {
  maxInflight: { min: 1, max: 65535 },
  maxQueuedMessages: { min: 1, max: 2 ** 40 },
  maxQueuedBytes: { min: 1, max: 2 ** 50 },
  // 0: retained messages are delivered but never kept.
  maxRetainedMessages: { min: 0, max: 2 ** 31 - 1 },
  maxRetainedBytes: { min: 0, max: 2 ** 50 },
  readWindow: { min: 1, max: 1_000_000 },
  readWindowBytes: { min: 1, max: 2 ** 40 },
  maxTotalReadWindowBytes: { min: 1, max: 2 ** 50 },
  connectTimeoutMs: { min: 1, max: 2 ** 31 - 1 },
  // A whole packet, fixed header included: PINGREQ (2 bytes) up to the largest MQTT can encode.
  maxPacketSize: { min: 2, max: 1 + 4 + 268_435_455 },
  maxUnfinishedPacketBytes: { min: 2, max: 2 ** 50 },
  packetTimeoutMs: { min: 1, max: 2 ** 31 - 1 },
  maxUnsentBytes: { min: 1, max: 2 ** 40 },
  maxTotalUnsentBytes: { min: 1, max: 2 ** 50 },
  maxConnections: { min: 1, max: 2 ** 31 - 1 },
  maxTopicLength: { min: 1, max: 65535 },
  maxTopicLevels: { min: 1, max: 65535 },
  maxSubscriptionsPerClient: { min: 1, max: 2 ** 31 - 1 },
  maxSessions: { min: 1, max: 2 ** 31 - 1 },
  maxSubscriptions: { min: 1, max: 2 ** 31 - 1 },
  maxSubscriptionBytes: { min: 1024, max: 2 ** 40 },
  topicAliasMaximum: { min: 0, max: 65535 },
  receiveMaximum: { min: 1, max: 65535 },
  maxQos: { min: 0, max: 2 },
  persistentSessionExpiry: { min: 0, max: 2 ** 32 - 1 },
  sysInterval: { min: 0, max: 86_400 },
} as const satisfies Partial<Record<keyof BrokerOptions, { min: number; max: number }>>;

type RangedOption = keyof typeof OPTION_RANGES;

/**
 * A CleanSession=1 session's queue (QoS 1/2 messages its client has not taken yet) is kept in
 * memory, not on disk: its limits are the configured ones but at most these, so a clean
 * subscriber that stops reading costs at most this much memory.
 */
export const CLEAN_SESSION_QUEUE_CAP = { maxMessages: 10_000, maxBytes: 16 * 1024 * 1024 } as const;

/** The composition root: store → sessions → routing → protocol → listener. */
export function createBroker(options: BrokerOptions = {}): Broker {
  const log = options.log ?? silentLogger;
  const listenerOptions = brokerListeners(options);
  const ranged = (name: RangedOption, fallback: number) => inRange(name, options[name] ?? fallback);
  const maxInflight = ranged('maxInflight', DEFAULTS.maxInflight);
  const readWindow = ranged('readWindow', DEFAULTS.readWindow);
  const readWindowBytes = ranged('readWindowBytes', DEFAULTS.readWindowBytes);
  const connectTimeoutMs = ranged('connectTimeoutMs', DEFAULTS.connectTimeoutMs);
  const maxPacketSize = ranged('maxPacketSize', DEFAULTS.maxPacketSize);
  // Left out, it grows with a max_packet_size above its default, so that such a config stays valid.
  const maxUnfinishedPacketBytes = ranged('maxUnfinishedPacketBytes', Math.max(DEFAULTS.maxUnfinishedPacketBytes, maxPacketSize));
  const packetTimeoutMs = ranged('packetTimeoutMs', DEFAULTS.packetTimeoutMs);
  const maxUnsentBytes = ranged('maxUnsentBytes', DEFAULTS.maxUnsentBytes);
  if (maxUnfinishedPacketBytes < maxPacketSize) {
    // Else a packet of the largest size allowed could never arrive.
    throw new BrokerError(
      ErrorCodes.BAD_OPTION,
      `max_unfinished_packet_bytes (maxUnfinishedPacketBytes, ${maxUnfinishedPacketBytes}) must be at least max_packet_size (${maxPacketSize})`,
    );
  }
  const maxConnections = ranged('maxConnections', DEFAULTS.maxConnections);
  const maxTopicLength = ranged('maxTopicLength', DEFAULTS.maxTopicLength);
  const maxTopicLevels = ranged('maxTopicLevels', DEFAULTS.maxTopicLevels);
  const maxSubscriptionsPerClient = ranged('maxSubscriptionsPerClient', DEFAULTS.maxSubscriptionsPerClient);
  const topicAliasMaximum = ranged('topicAliasMaximum', DEFAULTS.topicAliasMaximum);
  const receiveMaximum = ranged('receiveMaximum', DEFAULTS.receiveMaximum);
  const maxQos = ranged('maxQos', DEFAULTS.maxQos) as 0 | 1 | 2;
  const bridgeSettings = checkBridges(options.bridges ?? []);

  const limits: QueueLimits = {
    maxMessages: ranged('maxQueuedMessages', DEFAULT_QUEUE_LIMITS.maxMessages),
    maxBytes: ranged('maxQueuedBytes', DEFAULT_QUEUE_LIMITS.maxBytes),
  };
  const retainedLimits: RetainedLimits = {
    maxMessages: ranged('maxRetainedMessages', DEFAULT_RETAINED_LIMITS.maxMessages),
    maxBytes: ranged('maxRetainedBytes', DEFAULT_RETAINED_LIMITS.maxBytes),
  };
  const durable =
    options.repository ??
    new LevelRepository({
      limits,
      retainedLimits,
      location: join(resolve(options.dataDir ?? DEFAULTS.dataDir), 'store'),
      sync: options.sync ?? true,
      syncIntervalMs: options.syncIntervalMs ?? 0,
      log,
    });
  const adminEnabled = options.admin ?? options.repository === undefined;
  const onDisk = durable.onDisk;
  if (adminEnabled && !onDisk) {
    throw new BrokerError(ErrorCodes.BAD_OPTION, 'the admin channel inspects a store on disk: it cannot be used with a repository that has none');
  }
  const dataDir = resolve(options.dataDir ?? DEFAULTS.dataDir);
  let admin: AdminServer | undefined;
  // CleanSession=1 queues live in memory: capped well below the on-disk defaults.
  const volatile = new MemoryRepository({
    limits: {
      maxMessages: Math.min(limits.maxMessages, CLEAN_SESSION_QUEUE_CAP.maxMessages),
      maxBytes: Math.min(limits.maxBytes, CLEAN_SESSION_QUEUE_CAP.maxBytes),
    },
  });
  // The routing table: written by the session manager (subscriptions), read by the distributor.
  const subscriptions = new TopicTree();
  const sysInterval = ranged('sysInterval', DEFAULTS.sysInterval);
  const metricsOptions = options.metrics;
  if (metricsOptions !== undefined && (!Number.isInteger(metricsOptions.port) || metricsOptions.port < 0 || metricsOptions.port > 65535)) {
    throw new BrokerError(ErrorCodes.BAD_OPTION, `metrics.port must be an integer from 0 to 65535, got ${metricsOptions.port}`);
  }
  // $SYS belongs to the broker: a client's PUBLISH there is refused like one the ACL refuses.
  const access = new SysTopicsGuard({ passwordFile: options.passwordFile, aclFile: options.aclFile, log });
  // Read permission is checked against the subscriber session's owner when a message is routed
  // and again when a queued one is sent; without an ACL neither pays for it.
  // A bridge's session is the operator's own configuration, not a client: the ACL does not apply to it.
  const canRead = access.hasAcl
    ? (session: Session, topic: string) => isBridgeClientId(session.clientId) || access.canRead(session.clientId, session.owner, topic)
    : undefined;
  const sessions = new SessionManager({
    durable,
    volatile,
    subscriptions,
    budget: {
      maxSessions: ranged('maxSessions', DEFAULTS.maxSessions),
      maxSubscriptions: ranged('maxSubscriptions', DEFAULTS.maxSubscriptions),
      maxSubscriptionBytes: ranged('maxSubscriptionBytes', DEFAULTS.maxSubscriptionBytes),
    },
    policy: {
      limits: { maxInflight, readWindow, readWindowBytes, windowBudget: new ByteBudget(ranged('maxTotalReadWindowBytes', DEFAULTS.maxTotalReadWindowBytes)) },
      ...(canRead ? { canRead } : {}),
    },
    ...(options.persistentSessionExpiry === undefined ? {} : { persistentSessionExpiry: inRange('persistentSessionExpiry', options.persistentSessionExpiry) }),
    neverExpires: isBridgeClientId,
    // The distributor is made next, with the session manager: it is called only once sessions run.
    handOver: (session, sharedFilters) => distributor.handOver(session, sharedFilters),
    log,
  });
  const retained = new RetainedIndex();
  const distributor: Distributor = new Distributor({
    lookup: (clientId) => sessions.lookup(clientId),
    subscriptions,
    retained,
    durable,
    volatile,
    ...(canRead ? { canRead } : {}),
    log,
    // Only with bridges: without them, routing does not ask.
    ...(bridgeSettings.length > 0 ? { subscriberOptions: (clientId: string): SubscriberOptions | undefined => bridges.subscriberOptions(clientId) } : {}),
  });
  const bridges: Bridges = new Bridges(bridgeSettings, { sessions, distributor, queueLimits: limits, maxUnsentBytes, log });
  const context: BrokerContext = {
    sessions,
    distributor,
    log,
    options: {
      connectTimeoutMs,
      maxPacketSize,
      packetTimeoutMs,
      maxUnsentBytes,
      maxTopicLength,
      maxTopicLevels,
      maxSubscriptionsPerClient,
      topicAliasMaximum,
      receiveMaximum,
      maxQos,
    },
    counters: newCounters(),
    unfinishedPackets: new ByteBudget(maxUnfinishedPacketBytes),
    unsent: new ByteBudget(ranged('maxTotalUnsentBytes', DEFAULTS.maxTotalUnsentBytes)),
    access,
    shuttingDown: false,
    traffic: newTrafficCounters(),
  };
  const connections = new Set<Connection>();
  // Only when something reads them: otherwise nothing is timed or observed.
  const figures =
    sysInterval > 0 || metricsOptions !== undefined
      ? new BrokerFigures({
          traffic: context.traffic,
          counters: context.counters,
          sessions,
          retained,
          connections,
          storeLocation: onDisk?.location,
          version: packageVersion(),
        })
      : undefined;
  const sysTopics =
    figures && sysInterval > 0
      ? new SysTopics(figures, sysInterval, (topic, payload) => distributor.publishEphemeral(topic, Buffer.from(payload), true))
      : undefined;
  let metricsServer: MetricsServer | undefined;
  /** What /healthz says while the broker does not serve. */
  let starting: string | undefined = 'starting: the store is not open yet';
  const health = (): string | undefined => {
    if (closing) return 'shutting down';
    if (starting !== undefined) return starting;
    const down = listeners.find((listener) => !listener.listening);
    if (down) return `listener ${down.info.name} does not accept connections`;
    if (figures?.storeFailing) return 'the last store write failed (see the broker log)';
    return undefined;
  };
  let listeners: Listener[] = [];
  let closing: Promise<void> | undefined;

  /** Sockets refused since the limit was last reached: logged once when it is reached, once when it clears. */
  let refusing = 0;
  /** Connections held, TLS handshakes under way included, are below the limit; else `socket` is closed. */
  const admit = (socket: { destroy(): unknown }): boolean => {
    const held = connections.size + listeners.reduce((sum, listener) => sum + listener.handshakes, 0);
    if (held >= maxConnections) {
      socket.destroy();
      context.counters.connectionsRefused++;
      if (refusing++ === 0) log.warn(`max_connections (${maxConnections}) reached: new connections are closed at once`);
      return false;
    }
    if (refusing > 0) {
      log.info(`below max_connections again; ${refusing} connections were refused`);
      refusing = 0;
    }
    return true;
  };
  const accept = (transport: Transport, listener: ListenerInfo, certificateUser: string | undefined) => {
    // A TLS or WebSocket connection was admitted when its socket connected, and no longer counts as a handshake here.
    if (!admit(transport)) return;
    figures?.socketOpened();
    const connection = new Connection(transport, context, dispatch, listener, certificateUser);
    connections.add(connection);
    void connection.closed.then(() => connections.delete(connection));
  };

  return {
    sessions,
    bridges,
    counters: context.counters,

    async listen() {
      // First, so that /healthz answers (503) while the store opens.
      if (figures && metricsOptions) {
        // Loaded only here: a broker without /metrics does not hold prom-client in memory.
        const { MetricsServer } = await import('./http/metrics-server.js');
        metricsServer = await MetricsServer.open(metricsOptions, figures, health, log);
        context.observePublishAck = metricsServer.observePublishAck;
      }
      // A password or ACL file that does not parse stops the start before anything is opened.
      try {
        await access.start();
      } catch (error) {
        await metricsServer?.close();
        throw error;
      }
      await volatile.open();
      const restoring = openStore({ durable, sessions, distributor, onCorrupt: options.storeOnCorrupt ?? 'fail', log });
      const restored = await restoring.catch(async (error: unknown) => {
        access.close();
        await metricsServer?.close();
        throw error;
      });
      starting = 'starting: the listeners do not accept connections yet';
      try {
        log.info(`restored ${restored.sessions} persistent sessions and ${restored.retained} retained messages`);
        // Before any client is let in: a message published from then on finds the bridges' queues.
        await bridges.restore([...sessions.sessions()].map((session) => session.clientId));
        if (adminEnabled && onDisk) {
          const path = join(dataDir, 'admin.sock');
          try {
            admin = await AdminServer.start({
              path,
              store: onDisk.location,
              inspector: onDisk.inspector(),
              sessions,
              distributor,
              log,
              counters: context.counters,
              bridges,
            });
          } catch (error) {
            // MQTT is served without it; broker-admin then reports the store in use and no admin channel.
            log.warn(`admin channel not available on ${path}: ${errorMessage(error)}`);
          }
        }
        const hooks = { accept, admit, log, handshakeTimeoutMs: connectTimeoutMs, maxPacketSize, allowAnonymous: options.allowAnonymous ?? false };
        for (const listenerOption of listenerOptions) listeners.push(await Listener.open(listenerOption, hooks));
      } catch (error) {
        access.close();
        await Promise.all(listeners.map((listener) => listener.close()));
        listeners = [];
        await admin?.close();
        admin = undefined;
        await durable.close();
        await metricsServer?.close();
        if (error instanceof BrokerError) throw error;
        throw new BrokerError(ErrorCodes.LISTEN_FAILED, `cannot start: ${String(error)}`, { cause: error });
      }
      for (const listener of listeners) log.info(`listening on ${listener.info.name}`);
      bridges.start();
      starting = undefined;
      sysTopics?.start();
      return listeners[0]!.address();
    },

    close() {
      closing ??= (async () => {
        context.shuttingDown = true;
        sysTopics?.stop();
        access.close();
        // First, so admin requests under way end (and close their snapshots) before the store does.
        await admin?.close();
        // Before the sessions and the store: a bridge's session is unlinked and its writes land.
        await bridges.stop();
        const stopped = Promise.all(listeners.map((listener) => listener.close()));
        for (const connection of connections) connection.close('the broker is shutting down');
        await Promise.all([...connections].map((connection) => connection.closed));
        // What the log summarized and has not said yet, said before the broker is gone.
        summaryOf(log).flush();
        await stopped;
        listeners = [];
        await sessions.closeAll();
        await durable.close();
        await volatile.close();
        figures?.close();
        await metricsServer?.close();
      })();
      return closing;
    },

    address() {
      return listeners[0]?.address();
    },

    addresses() {
      return listeners.map((listener) => listener.address());
    },

    metricsAddress() {
      return metricsServer?.address();
    },

    reload() {
      return access.reload();
    },

    publishEphemeral(topic, payload, retain) {
      distributor.publishEphemeral(topic, payload, retain);
    },
  };
}

/**
 * `listeners`, else one listener from `host` and `port`. Beside `listeners`, `host` and `port`
 * replace the first listener's address (as the command line's --host and --port do).
 */
function brokerListeners(options: BrokerOptions): ListenerOptions[] {
  const given = options.listeners ?? [{ port: DEFAULTS.port }];
  const [first, ...rest] = given;
  if (first === undefined) throw new BrokerError(ErrorCodes.BAD_OPTION, 'listeners must hold at least one listener');
  const list = [{ ...first, host: options.host ?? first.host ?? DEFAULTS.host, port: options.port ?? first.port }, ...rest];
  list.forEach((listener, index) => {
    const name = options.listeners ? `listeners[${index}].` : '';
    if (!Number.isInteger(listener.port) || listener.port < 0 || listener.port > 65535) {
      throw new BrokerError(ErrorCodes.BAD_OPTION, `${name}port must be an integer from 0 to 65535, got ${listener.port}`);
    }
    if (listener.path !== undefined && !listener.path.startsWith('/')) {
      throw new BrokerError(ErrorCodes.BAD_OPTION, `${name}path must start with /, got ${JSON.stringify(listener.path)}`);
    }
    if ((listener.path !== undefined || listener.allowedOrigins !== undefined) && listener.websocket !== true) {
      throw new BrokerError(ErrorCodes.BAD_OPTION, `${name}path and allowedOrigins apply to WebSocket listeners only (websocket: true)`);
    }
    const tls = listener.tls;
    // Without a CA of our own, any certificate from a public CA would verify, and with
    // certUsername name a user: client certificates are only checked against an explicit CA.
    if (tls && (tls.requireClientCert === true || tls.certUsername === true) && tls.ca === undefined) {
      throw new BrokerError(ErrorCodes.BAD_OPTION, `${name}tls.ca is required with requireClientCert or certUsername`);
    }
  });
  return list;
}

function inRange(name: RangedOption, value: number): number {
  const { min, max } = OPTION_RANGES[name];
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new BrokerError(ErrorCodes.BAD_OPTION, `${name} must be an integer from ${min} to ${max}, got ${value}`);
  }
  return value;
}
