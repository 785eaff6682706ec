import { BrokerError, ErrorCodes } from '../errors.js';
import type { Logger } from '../logger.js';
import type { SubscriberOptions } from '../session/distributor.js';
import { Bridge, type BridgeDependencies, type BridgeStatus } from './bridge.js';
import { bridgeProblems, bridgeSetProblems, bridgeSettings, type BridgeOptions, type BridgeSettings } from './bridge-options.js';
import { isBridgeClientId } from '../session/bridge-client-id.js';

/**
 * Checks the bridges of createBroker's options before anything starts; every problem at once,
 * each named by its key (`bridges[0].topics[1].pattern: …`).
 */
export function checkBridges(bridges: readonly BridgeOptions[]): BridgeSettings[] {
  const problems = [
    ...bridges.flatMap((bridge, index) => bridgeProblems(bridge).map(({ key, message }) => `bridges[${index}].${key}: ${message}`)),
    ...bridgeSetProblems(bridges).map(({ key, message }) => `bridges${key}: ${message}`),
  ];
  if (problems.length > 0) throw new BrokerError(ErrorCodes.BAD_OPTION, problems.join('\n'));
  return bridges.map(bridgeSettings);
}

/** Every bridge of the broker: their sessions, their connections, what broker-admin shows of them. */
export class Bridges {
  readonly #bridges: Bridge[];
  readonly #byClientId: Map<string, Bridge>;
  readonly #dependencies: BridgeDependencies;

  constructor(settings: readonly BridgeSettings[], dependencies: BridgeDependencies) {
    this.#dependencies = dependencies;
    this.#bridges = settings.map((bridge) => new Bridge(bridge, dependencies));
    this.#byClientId = new Map(this.#bridges.map((bridge) => [bridge.sessionId, bridge]));
  }

  get size(): number {
    return this.#bridges.length;
  }

  /** The distributor's view of a subscriber: a bridge's session has options, a client's none. */
  subscriberOptions(clientId: string): SubscriberOptions | undefined {
    return this.#byClientId.get(clientId)?.subscriberOptions;
  }

  /**
   * After the store is restored and before clients are let in: each bridge's session is kept with
   * its subscriptions, so nothing published from now on misses it. The session of a bridge that
   * is no longer configured keeps its queue (nothing is thrown away behind the operator's back) but
   * loses its subscriptions, so it stops growing; `broker-admin session drop` discards it.
   */
  async restore(storedClientIds: Iterable<string>): Promise<void> {
    const { sessions, log } = this.#dependencies;
    for (const bridge of this.#bridges) await bridge.keepSession();
    for (const clientId of storedClientIds) {
      if (!isBridgeClientId(clientId) || this.#byClientId.has(clientId)) continue;
      const session = await sessions.keep(clientId, []);
      const queued = await session.queueStats();
      log.warn(
        `session ${JSON.stringify(clientId)} belongs to a bridge that is no longer configured: it receives nothing more; ` +
          `its ${queued?.messages ?? 0} queued messages stay until it is configured again or dropped (broker-admin session drop '${clientId}')`,
      );
    }
  }

  start(): void {
    for (const bridge of this.#bridges) bridge.start();
  }

  async stop(): Promise<void> {
    await Promise.all(this.#bridges.map((bridge) => bridge.stop()));
  }

  status(): Promise<BridgeStatus[]> {
    return Promise.all(this.#bridges.map((bridge) => bridge.status()));
  }
}

export type { BridgeStatus, Logger };
