/**
 * $SYS/broker/…: the broker's figures (figures.ts) published every sys_interval seconds, with
 * Mosquitto's names and payload forms where it has them, so that an operator's `mosquitto_sub -t
 * '$SYS/#' -v` and dashboards read the same. They are memory-only retained messages at QoS 0
 * (Distributor.publishEphemeral): never written to the store, so watching them wears no SD card.
 * The ACL applies to them as to any topic.
 */
import { AccessControl } from '../auth/access-control.js';
import { FIGURES, type BrokerFigures, type Snapshot } from './figures.js';

export const SYS_PREFIX = '$SYS/broker/';

/** Moving averages per minute over these windows, as Mosquitto's `load/…/1min` (5min, 15min). */
const WINDOWS = [
  { name: '1min', seconds: 60 },
  { name: '5min', seconds: 300 },
  { name: '15min', seconds: 900 },
] as const;

/** `load/<name>/…` averages the increase of these counters. */
const LOADS: ReadonlyArray<{ name: string; read: (snapshot: Snapshot) => number }> = [
  { name: 'messages/received', read: (s) => s.traffic.packetsReceived },
  { name: 'messages/sent', read: (s) => s.traffic.packetsSent },
  { name: 'publish/received', read: (s) => s.traffic.publishesReceived },
  { name: 'publish/sent', read: (s) => s.traffic.publishesSent },
  { name: 'publish/dropped', read: (s) => s.counters.qos0Dropped + s.queueDropped },
  { name: 'bytes/received', read: (s) => s.traffic.bytesReceived },
  { name: 'bytes/sent', read: (s) => s.traffic.bytesSent },
  { name: 'connections', read: (s) => s.traffic.connects },
  { name: 'sockets', read: (s) => s.socketsOpened },
];

/** Topics whose first level is `$SYS` belong to the broker: a client's PUBLISH there is dropped (as Mosquitto does). */
export function isSysTopic(topic: string): boolean {
  return topic === '$SYS' || topic.startsWith('$SYS/');
}

export class SysTopics {
  readonly #figures: BrokerFigures;
  readonly #publish: (topic: string, payload: string) => void;
  readonly #intervalMs: number;
  #timer: NodeJS.Timeout | undefined;
  #previous: { at: number; snapshot: Snapshot } | undefined;
  readonly #averages = new Map<string, number>();

  /** `publish` hands one retained memory-only message to the distributor. */
  constructor(figures: BrokerFigures, intervalSeconds: number, publish: (topic: string, payload: string) => void) {
    this.#figures = figures;
    this.#intervalMs = intervalSeconds * 1000;
    this.#publish = publish;
  }

  /** Publishes the version and a first set of figures now, then every interval. */
  start(): void {
    this.#publish(`${SYS_PREFIX}version`, `durable-mqtt-broker version ${this.#figures.version}`);
    // The first averages and means are over the time to the first tick.
    this.#previous = { at: Date.now(), snapshot: this.#figures.snapshot() };
    void this.#tick();
    this.#timer = setInterval(() => void this.#tick(), this.#intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  async #tick(): Promise<void> {
    await this.#figures.refresh().catch(() => undefined);
    const now = Date.now();
    const snapshot = this.#figures.snapshot();
    for (const figure of FIGURES) {
      if (figure.sys === undefined) continue;
      const value = figure.read(snapshot);
      this.#publish(SYS_PREFIX + figure.sys, figure.sys === 'uptime' ? `${value} seconds` : String(value));
    }
    const previous = this.#previous!;
    const elapsed = (now - previous.at) / 1000;
    if (elapsed <= 0) return;
    this.#previous = { at: now, snapshot };
    for (const load of LOADS) {
      const perMinute = ((load.read(snapshot) - load.read(previous.snapshot)) * 60) / elapsed;
      for (const window of WINDOWS) {
        const topic = `${SYS_PREFIX}load/${load.name}/${window.name}`;
        // An exponentially weighted average: the older an interval, the less it counts.
        const decay = Math.exp(-elapsed / window.seconds);
        const average = (this.#averages.get(topic) ?? 0) * decay + perMinute * (1 - decay);
        this.#averages.set(topic, average);
        this.#publish(topic, average.toFixed(2));
      }
    }
    const store = snapshot.store;
    const before = previous.snapshot.store;
    const syncs = store.syncs - before.syncs;
    const batches = store.batches - before.batches;
    // Means over the interval; 0 when it had none.
    this.#publish(`${SYS_PREFIX}store/sync/batch`, (syncs === 0 ? 0 : (store.syncedTransitions - before.syncedTransitions) / syncs).toFixed(2));
    this.#publish(`${SYS_PREFIX}store/write/latency`, (batches === 0 ? 0 : ((store.writeSeconds - before.writeSeconds) * 1000) / batches).toFixed(2));
  }
}

/**
 * The access control of the broker's clients, with one rule above the password and ACL files: no
 * client publishes on a `$SYS` topic, whatever the ACL grants, as in Mosquitto. Such a PUBLISH
 * (or will) is refused as one the ACL refuses: dropped, acknowledged, counted, logged.
 */
export class SysTopicsGuard extends AccessControl {
  override canPublish(clientId: string, user: string | undefined, topic: string): boolean {
    return !isSysTopic(topic) && super.canPublish(clientId, user, topic);
  }
}
