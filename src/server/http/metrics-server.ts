/**
 * The `metrics` section: `/metrics` in the Prometheus text format (the broker's figures, the
 * histograms, and prom-client's process and Node.js metrics) and `/healthz` (200 while the broker
 * serves, 503 with a one-line reason while it does not). Plain HTTP: it says nothing a client
 * could use, but it is on loopback unless configured otherwise.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { BrokerError, ErrorCodes, errorMessage } from '../../errors.js';
import type { Logger } from '../../logger.js';
import type { BrokerFigures } from '../figures.js';
import { formatAddress } from '../listeners.js';
import { PrometheusMetrics } from './prometheus.js';

export interface MetricsOptions {
  /** Interface to listen on (default 127.0.0.1). */
  host?: string;
  /** TCP port; 0 picks a free one. */
  port: number;
}

/** Why the broker does not serve (yet, or any more); undefined: it does. */
export type Health = () => string | undefined;

export class MetricsServer {
  readonly #server: Server;
  readonly #metrics: PrometheusMetrics;

  private constructor(server: Server, metrics: PrometheusMetrics) {
    this.#server = server;
    this.#metrics = metrics;
  }

  static async open(options: MetricsOptions, figures: BrokerFigures, health: Health, log: Logger): Promise<MetricsServer> {
    const metrics = new PrometheusMetrics(figures);
    const server = createServer((request, response) => void answer(request, response, metrics, health, log));
    // Scrapers keep their connection; a request that never completes holds nothing for long.
    server.headersTimeout = 10_000;
    server.requestTimeout = 10_000;
    const host = options.host ?? '127.0.0.1';
    try {
      await new Promise<void>((resolveListen, rejectListen) => {
        server.once('error', rejectListen);
        server.listen(options.port, host, () => {
          server.off('error', rejectListen);
          resolveListen();
        });
      });
    } catch (error) {
      metrics.close();
      throw new BrokerError(ErrorCodes.LISTEN_FAILED, `cannot serve metrics on ${formatAddress(host, options.port)}: ${errorMessage(error)}`, { cause: error });
    }
    server.on('error', (error: Error) => log.error(`metrics server: ${error.message}`));
    const bound = server.address() as AddressInfo;
    log.info(`metrics and health on http://${formatAddress(bound.address, bound.port)}/metrics and /healthz`);
    return new MetricsServer(server, metrics);
  }

  /** Arrival of a QoS 1/2 PUBLISH to its PUBACK or PUBREC: the publish-to-acknowledge histogram. */
  get observePublishAck(): (seconds: number) => void {
    return this.#metrics.observePublishAck;
  }

  address(): AddressInfo {
    return this.#server.address() as AddressInfo;
  }

  close(): Promise<void> {
    this.#metrics.close();
    const closed = new Promise<void>((resolveClose) => this.#server.close(() => resolveClose()));
    this.#server.closeAllConnections();
    return closed;
  }
}

async function answer(request: IncomingMessage, response: ServerResponse, metrics: PrometheusMetrics, health: Health, log: Logger): Promise<void> {
  const path = (request.url ?? '/').split('?')[0];
  if (request.method !== 'GET' && request.method !== 'HEAD') {
    reply(response, 405, 'text/plain; charset=utf-8', 'only GET\n', { allow: 'GET, HEAD' });
    return;
  }
  if (path === '/healthz') {
    const problem = health();
    reply(response, problem === undefined ? 200 : 503, 'text/plain; charset=utf-8', `${problem ?? 'ok'}\n`);
    return;
  }
  if (path === '/metrics') {
    try {
      reply(response, 200, metrics.contentType, await metrics.text());
    } catch (error) {
      log.error(`metrics not read: ${errorMessage(error)}`);
      reply(response, 500, 'text/plain; charset=utf-8', 'metrics not read; see the broker log\n');
    }
    return;
  }
  reply(response, 404, 'text/plain; charset=utf-8', 'not found: /metrics and /healthz are served here\n');
}

function reply(response: ServerResponse, status: number, contentType: string, body: string, headers: Record<string, string> = {}): void {
  response.writeHead(status, { 'content-type': contentType, 'cache-control': 'no-store', ...headers });
  response.end(response.req.method === 'HEAD' ? undefined : body);
}
