/**
 * The one registry of the broker's figures: $SYS (sys-topics.ts) and /metrics (http/) both read
 * the table below, from the same snapshot, so that they cannot disagree. Each figure is read where
 * it is kept (the connections' traffic counters, the limits' counters, the session manager, the
 * retained index, the group commit writer's records) and never counted a second time.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { TrafficCounters } from '../protocol/broker-context.js';
import type { Connection } from '../protocol/connection.js';
import type { BrokerCounters } from '../protocol/limits.js';
import type { RetainedIndex } from '../routing/retained-index.js';
import type { SessionManager } from '../session/session-manager.js';
import { commitChannel, type CommitRecord } from '../store/group-commit.js';

export interface FigureSources {
  traffic: TrafficCounters;
  counters: BrokerCounters;
  sessions: SessionManager;
  retained: RetainedIndex;
  connections: ReadonlySet<Connection>;
  /** The LevelDB store's directory; none for a repository in memory. */
  storeLocation: string | undefined;
  version: string;
}

/** What the group commit writer reported, since start. */
export interface StoreCounts {
  batches: number;
  syncs: number;
  /** Transitions of the batches that were fsynced. */
  syncedTransitions: number;
  /** Time of all batch writes, their fsyncs included. */
  writeSeconds: number;
  failedWrites: number;
  /** The last batch written failed (/healthz). */
  lastWriteFailed: boolean;
}

/** Everything the table reads, taken at once. */
export interface Snapshot {
  uptimeSeconds: number;
  traffic: Readonly<TrafficCounters>;
  counters: Readonly<BrokerCounters>;
  socketsOpened: number;
  clientsConnected: number;
  clientsMaximum: number;
  persistentDisconnected: number;
  subscriptions: number;
  retained: number;
  store: Readonly<StoreCounts>;
  /** Refreshed in the background (see BrokerFigures.refresh): one read per session, a look at the store's files. */
  queuedMessages: number;
  queueDropped: number;
  storeBytes: number;
}

export interface Figure {
  /** The topic under `$SYS/broker/`, Mosquitto's name where it has one; none: /metrics only. */
  sys?: string;
  /** The Prometheus name. */
  metric: string;
  help: string;
  type: 'counter' | 'gauge';
  read(snapshot: Snapshot): number;
}

/** The figures; the moving averages of $SYS (`load/…`) and its per-interval means are derived from the counters here. */
export const FIGURES: readonly Figure[] = [
  { sys: 'uptime', metric: 'mqtt_broker_uptime_seconds', type: 'gauge', help: 'Seconds since the broker started', read: (s) => s.uptimeSeconds },
  { sys: 'clients/connected', metric: 'mqtt_clients_connected', type: 'gauge', help: 'Clients connected now (CONNECT accepted)', read: (s) => s.clientsConnected },
  {
    sys: 'clients/disconnected',
    metric: 'mqtt_clients_disconnected',
    type: 'gauge',
    help: 'Persistent sessions (CleanSession=0) whose client is not connected',
    read: (s) => s.persistentDisconnected,
  },
  {
    sys: 'clients/total',
    metric: 'mqtt_clients_known',
    type: 'gauge',
    help: 'Clients connected now plus persistent sessions whose client is not',
    read: (s) => s.clientsConnected + s.persistentDisconnected,
  },
  {
    sys: 'clients/maximum',
    metric: 'mqtt_clients_connected_max',
    type: 'gauge',
    help: 'The most clients seen connected at once since start (sampled at each read)',
    read: (s) => s.clientsMaximum,
  },
  { sys: 'messages/received', metric: 'mqtt_packets_received_total', type: 'counter', help: 'MQTT packets of any type received', read: (s) => s.traffic.packetsReceived },
  { sys: 'messages/sent', metric: 'mqtt_packets_sent_total', type: 'counter', help: 'MQTT packets of any type sent', read: (s) => s.traffic.packetsSent },
  { sys: 'publish/messages/received', metric: 'mqtt_publish_received_total', type: 'counter', help: 'PUBLISH packets received', read: (s) => s.traffic.publishesReceived },
  { sys: 'publish/messages/sent', metric: 'mqtt_publish_sent_total', type: 'counter', help: 'PUBLISH packets sent', read: (s) => s.traffic.publishesSent },
  {
    sys: 'publish/messages/dropped',
    metric: 'mqtt_publish_dropped_total',
    type: 'counter',
    help: 'Deliveries dropped since start: QoS 0 for clients not reading (max_unsent_bytes) and messages refused at a full queue',
    read: (s) => s.counters.qos0Dropped + s.queueDropped,
  },
  {
    sys: 'messages/stored',
    metric: 'mqtt_messages_queued',
    type: 'gauge',
    help: 'Messages queued for sessions, in flight included (refreshed every sys_interval)',
    read: (s) => s.queuedMessages,
  },
  { sys: 'bytes/received', metric: 'mqtt_bytes_received_total', type: 'counter', help: 'Bytes of MQTT packets received', read: (s) => s.traffic.bytesReceived },
  { sys: 'bytes/sent', metric: 'mqtt_bytes_sent_total', type: 'counter', help: 'Bytes of MQTT packets sent', read: (s) => s.traffic.bytesSent },
  { sys: 'subscriptions/count', metric: 'mqtt_subscriptions', type: 'gauge', help: 'Subscriptions of all sessions', read: (s) => s.subscriptions },
  { sys: 'retained messages/count', metric: 'mqtt_retained_messages', type: 'gauge', help: 'Retained messages in the store', read: (s) => s.retained },
  { metric: 'mqtt_connects_total', type: 'counter', help: 'CONNECT packets received, accepted or not', read: (s) => s.traffic.connects },
  { metric: 'mqtt_sockets_opened_total', type: 'counter', help: 'Client connections opened (TCP, TLS, WebSocket)', read: (s) => s.socketsOpened },
  {
    metric: 'mqtt_connections_refused_total',
    type: 'counter',
    help: 'Connections closed at once because max_connections were open',
    read: (s) => s.counters.connectionsRefused,
  },
  { metric: 'mqtt_packets_too_large_total', type: 'counter', help: 'Connections closed for a packet over max_packet_size', read: (s) => s.counters.packetsTooLarge },
  { metric: 'mqtt_publish_refused_total', type: 'counter', help: 'PUBLISHes and wills the ACL refused (dropped, still acknowledged)', read: (s) => s.counters.publishesRefused },
  { sys: 'store/bytes', metric: 'mqtt_store_bytes', type: 'gauge', help: "Bytes of the store's files on disk (refreshed every sys_interval)", read: (s) => s.storeBytes },
  { sys: 'store/syncs', metric: 'mqtt_store_syncs_total', type: 'counter', help: 'Store batches fsynced', read: (s) => s.store.syncs },
  {
    metric: 'mqtt_store_synced_transitions_total',
    type: 'counter',
    help: 'Transitions (a message stored, an acknowledgement, a subscription…) in fsynced batches',
    read: (s) => s.store.syncedTransitions,
  },
  { metric: 'mqtt_store_batches_total', type: 'counter', help: 'Store batches written', read: (s) => s.store.batches },
  { metric: 'mqtt_store_write_failures_total', type: 'counter', help: 'Store batch writes that failed', read: (s) => s.store.failedWrites },
];

/** Persistent sessions' queue statistics read at once while refreshing: bounded work in the store's thread pool. */
const QUEUE_READS_AT_ONCE = 64;

export class BrokerFigures {
  readonly #sources: FigureSources;
  readonly #startedAt = Date.now();
  readonly #store: StoreCounts = { batches: 0, syncs: 0, syncedTransitions: 0, writeSeconds: 0, failedWrites: 0, lastWriteFailed: false };
  readonly #onCommit: (message: unknown) => void;
  #clientsMaximum = 0;
  #socketsOpened = 0;
  /** Per session, its queue's stored drop count when last read: drops since start are the increases. */
  readonly #dropsSeen = new Map<string, number>();
  #queueDropped = 0;
  #queuedMessages = 0;
  #storeBytes = 0;
  #refreshing: Promise<void> | undefined;

  constructor(sources: FigureSources) {
    this.#sources = sources;
    this.#onCommit = (message) => {
      const record = message as CommitRecord;
      if (record.location !== sources.storeLocation || sources.storeLocation === undefined) return;
      const store = this.#store;
      store.batches++;
      store.writeSeconds += record.seconds;
      store.lastWriteFailed = record.failed;
      if (record.failed) store.failedWrites++;
      else if (record.synced) {
        store.syncs++;
        store.syncedTransitions += record.jobs;
      }
    };
    subscribe(commitChannel.name, this.#onCommit);
  }

  get version(): string {
    return this.#sources.version;
  }

  /** The store's directory, whose commit records (group-commit.ts's channel) are this broker's. */
  get storeLocation(): string | undefined {
    return this.#sources.storeLocation;
  }

  /** A client connection was accepted (TCP, TLS, WebSocket). */
  socketOpened(): void {
    this.#socketsOpened++;
  }

  /** The store's last batch write failed, and none succeeded since. */
  get storeFailing(): boolean {
    return this.#store.lastWriteFailed;
  }

  /** Every figure's source, read now; the background ones as of their last refresh. */
  snapshot(): Snapshot {
    const { traffic, counters, sessions, retained, connections } = this.#sources;
    let clientsConnected = 0;
    for (const connection of connections) if (connection.isConnected) clientsConnected++;
    let persistentConnected = 0;
    for (const session of sessions.sessions()) if (!session.clean && session.connected) persistentConnected++;
    this.#clientsMaximum = Math.max(this.#clientsMaximum, clientsConnected);
    return {
      uptimeSeconds: Math.floor((Date.now() - this.#startedAt) / 1000),
      traffic: { ...traffic },
      counters: { ...counters },
      socketsOpened: this.#socketsOpened,
      clientsConnected,
      clientsMaximum: this.#clientsMaximum,
      persistentDisconnected: sessions.usage.sessions - persistentConnected,
      subscriptions: sessions.usage.subscriptions,
      retained: retained.size,
      store: { ...this.#store },
      queuedMessages: this.#queuedMessages,
      queueDropped: this.#queueDropped,
      storeBytes: this.#storeBytes,
    };
  }

  /**
   * Reads what is not counted as it happens: the queues' sizes and drop counts, as the store keeps
   * them per session (one small read each), and the size of the store's files. One refresh at a
   * time; a caller while one runs gets that one.
   */
  refresh(): Promise<void> {
    this.#refreshing ??= this.#refresh().finally(() => (this.#refreshing = undefined));
    return this.#refreshing;
  }

  close(): void {
    unsubscribe(commitChannel.name, this.#onCommit);
  }

  async #refresh(): Promise<void> {
    const sessions = [...this.#sources.sessions.sessions()];
    let queued = 0;
    const present = new Set<string>();
    for (let start = 0; start < sessions.length; start += QUEUE_READS_AT_ONCE) {
      const slice = sessions.slice(start, start + QUEUE_READS_AT_ONCE);
      const stats = await Promise.all(slice.map((session) => session.queueStats().catch(() => undefined)));
      slice.forEach((session, index) => {
        const read = stats[index];
        if (read === undefined) return;
        queued += read.messages;
        present.add(session.clientId);
        const seen = this.#dropsSeen.get(session.clientId);
        // Drops before the first look at a session (before start, or before it was seen) are not this run's.
        if (seen !== undefined && read.dropped > seen) this.#queueDropped += read.dropped - seen;
        this.#dropsSeen.set(session.clientId, read.dropped);
      });
    }
    for (const clientId of this.#dropsSeen.keys()) if (!present.has(clientId)) this.#dropsSeen.delete(clientId);
    this.#queuedMessages = queued;
    this.#storeBytes = await directoryBytes(this.#sources.storeLocation);
  }
}

/** Bytes of the files in a directory (LevelDB keeps its files in one); 0 when there is none. */
async function directoryBytes(location: string | undefined): Promise<number> {
  if (location === undefined) return 0;
  let total = 0;
  try {
    for (const entry of await readdir(location, { withFileTypes: true })) {
      if (!entry.isFile()) continue;
      // A file LevelDB removed (compaction) between the listing and its stat counts nothing.
      total += await stat(join(location, entry.name)).then((info) => info.size, () => 0);
    }
  } catch {
    return 0;
  }
  return total;
}
