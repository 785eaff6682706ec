/**
 * The bridge scenarios' ids and rows (issue 13): a gateway broker bridging to an upstream
 * Mosquitto, ours beside Mosquitto's own bridge. Kept apart from metrics.ts so that the scenario
 * lists there only gain a spread.
 */
import type { BrokerId } from './brokers.js';
import type { MetricDef } from './metrics.js';

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

export const BRIDGE_TITLES: Record<BridgeScenarioId, string> = {
  bridge: 'Bridge QoS1: local publisher → gateway → upstream Mosquitto → persistent subscriber',
  'bridge-outage': 'Bridge outage (upstream down, QoS1 into the gateway, gateway SIGKILLed and restarted, upstream back)',
};

const bridge = 'bridge' as const;
const outage = 'bridge-outage' as const;

export const BRIDGE_METRICS: MetricDef[] = [
  { key: 'bridge.rate', scenario: bridge, label: 'Bridge: forwarding throughput (delivered upstream)', unit: 'msg/s', better: 'higher', format: 'rate', aggregate: 'median', throughput: true },
  { key: 'bridge.p50', scenario: bridge, label: 'Bridge: end-to-end latency p50', unit: 'ms', better: 'lower', format: 'ms', aggregate: 'median' },
  { key: 'bridge.p99', scenario: bridge, label: 'Bridge: end-to-end latency p99', unit: 'ms', better: 'lower', format: 'ms', aggregate: 'median' },
  { key: 'bridge.cpuPerMsg', scenario: bridge, label: 'Bridge: gateway CPU per forwarded message (user+sys)', unit: 'µs', better: 'lower', format: 'us', aggregate: 'median' },
  { key: 'bridge.upstreamCpuPerMsg', scenario: bridge, label: 'Bridge: upstream Mosquitto CPU per message (user+sys)', unit: 'µs', better: 'none', format: 'us', aggregate: 'median' },
  { key: 'bridge.peakRss', scenario: bridge, label: 'Bridge: gateway peak RSS', unit: 'MiB', better: 'lower', format: 'mib', aggregate: 'median' },
  { key: 'bridge.undelivered', scenario: bridge, label: 'Bridge: never delivered upstream', unit: 'msgs', better: 'lower', format: 'count', aggregate: 'sum' },
  { key: 'bridge.duplicates', scenario: bridge, label: 'Bridge: delivered twice upstream', unit: 'msgs', better: 'lower', format: 'count', aggregate: 'sum' },
  { key: 'bridge.loadBusy', scenario: bridge, label: 'Bridge: load generator busy (share of one core)', unit: '%', better: 'none', format: 'percent', aggregate: 'median' },
  { key: 'bridge-outage.acked', scenario: outage, label: 'Bridge outage: acknowledged by the gateway, upstream down', unit: 'msgs', better: 'none', format: 'count', aggregate: 'sum' },
  { key: 'bridge-outage.fillRate', scenario: outage, label: 'Bridge outage: gateway acknowledgements, upstream down', unit: 'msg/s', better: 'higher', format: 'rate', aggregate: 'median', throughput: true },
  { key: 'bridge-outage.fillCpuPerMsg', scenario: outage, label: 'Bridge outage: gateway CPU per message acknowledged, upstream down (user+sys)', unit: 'µs', better: 'lower', format: 'us', aggregate: 'median' },
  { key: 'bridge-outage.receivedAcked', scenario: outage, label: 'Bridge outage: of those, reached the upstream subscriber', unit: 'msgs', better: 'higher', format: 'count', aggregate: 'sum' },
  { key: 'bridge-outage.lost', scenario: outage, label: 'Bridge outage: lost (acknowledged by the gateway, never reached upstream)', unit: 'msgs', better: 'lower', format: 'count', aggregate: 'sum' },
  { key: 'bridge-outage.duplicates', scenario: outage, label: 'Bridge outage: delivered twice upstream', unit: 'msgs', better: 'none', format: 'count', aggregate: 'sum' },
  { key: 'bridge-outage.outOfOrder', scenario: outage, label: 'Bridge outage: arrived out of order upstream', unit: 'msgs', better: 'lower', format: 'count', aggregate: 'sum' },
  { key: 'bridge-outage.catchUpRate', scenario: outage, label: 'Bridge outage: catch-up (upstream back → last message, reconnect wait included)', unit: 'msg/s', better: 'higher', format: 'rate', aggregate: 'median', throughput: true },
];
