/**
 * The broker's figures as Prometheus metrics: one gauge or counter per figure of the table in
 * figures.ts (read from one snapshot per scrape, as $SYS reads them), the two histograms, and
 * prom-client's process and Node.js metrics. Loaded only with a `metrics` section: prom-client
 * costs about 5 MiB of resident memory that a broker without /metrics does not need.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { commitChannel, type CommitRecord } from '../../store/group-commit.js';
import { FIGURES, type BrokerFigures, type Snapshot } from '../figures.js';

/** Histogram buckets in seconds: from a page-cache write to a slow SD card's fsync. */
const SECONDS_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

export class PrometheusMetrics {
  readonly #registry = new Registry();
  readonly #figures: BrokerFigures;
  readonly #publishAck: Histogram<string>;
  readonly #onCommit: (message: unknown) => void;
  /** The snapshot every figure of one scrape reads (see text()). */
  #pinned: Snapshot | undefined;

  constructor(figures: BrokerFigures) {
    this.#figures = figures;
    const registers = [this.#registry];
    for (const figure of FIGURES) {
      const read = () => figure.read(this.#pinned ?? figures.snapshot());
      if (figure.type === 'gauge') {
        new Gauge({ name: figure.metric, help: figure.help, registers, collect: function () { this.set(read()); } });
      } else {
        new Counter({ name: figure.metric, help: figure.help, registers, collect: function () { this.reset(); this.inc(read()); } });
      }
    }
    new Gauge({ name: 'mqtt_broker_info', help: 'The broker and its version (always 1)', labelNames: ['version'], registers }).set({ version: figures.version }, 1);
    this.#publishAck = new Histogram({
      name: 'mqtt_publish_ack_seconds',
      help: 'From a QoS 1/2 PUBLISH arriving to its PUBACK or PUBREC leaving: mostly the wait for its store write',
      buckets: SECONDS_BUCKETS,
      registers,
    });
    const storeWrite = new Histogram({
      name: 'mqtt_store_write_seconds',
      help: 'Time to write one store batch, its fsync included (fsync="true") or not needed (fsync="false")',
      labelNames: ['fsync'],
      buckets: SECONDS_BUCKETS,
      registers,
    });
    this.#onCommit = (message) => {
      const record = message as CommitRecord;
      if (record.location === undefined || record.location !== figures.storeLocation) return;
      storeWrite.observe({ fsync: String(record.synced) }, record.seconds);
    };
    subscribe(commitChannel.name, this.#onCommit);
    collectDefaultMetrics({ register: this.#registry });
    // Gauges whose names end in _total, which Prometheus keeps for counters (promtool check metrics
    // refuses them); nodejs_active_resources says the same per kind of resource.
    for (const misnamed of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
      this.#registry.removeSingleMetric(misnamed);
    }
  }

  get contentType(): string {
    return this.#registry.contentType;
  }

  /** Arrival of a QoS 1/2 PUBLISH to its PUBACK or PUBREC (BrokerContext.observePublishAck). */
  readonly observePublishAck = (seconds: number): void => {
    this.#publishAck.observe(seconds);
  };

  /** The Prometheus text of every figure, read from one snapshot. */
  async text(): Promise<string> {
    await this.#figures.refresh();
    this.#pinned = this.#figures.snapshot();
    try {
      return await this.#registry.metrics();
    } finally {
      this.#pinned = undefined;
    }
  }

  close(): void {
    unsubscribe(commitChannel.name, this.#onCommit);
  }
}
