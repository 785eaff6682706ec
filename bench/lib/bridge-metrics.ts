/**
 * The bridge scenarios (issue 13: a gateway broker bridging to an upstream Mosquitto, ours beside
 * Mosquitto's own bridge): their ids and which brokers take part. Their rows are in metrics.ts.
 */
import type { BrokerId } from './brokers.js';

export type BridgeScenarioId = 'bridge' | 'bridge-outage';
export const BRIDGE_SCENARIOS: BridgeScenarioId[] = ['bridge', 'bridge-outage'];

/** The brokers that can be the gateway: those with a bridge (Aedes has none; the sink is no broker). */
export const BRIDGE_GATEWAYS: BrokerId[] = ['ours', 'ours-nosync', 'mosquitto'];

export function isBridgeScenario(scenario: string): scenario is BridgeScenarioId {
  return (BRIDGE_SCENARIOS as string[]).includes(scenario);
}

/** Whether a broker takes part in a bridge scenario (every broker takes part in the others). */
export function takesPart(scenario: string, broker: BrokerId): boolean {
  return !isBridgeScenario(scenario) || BRIDGE_GATEWAYS.includes(broker);
}
