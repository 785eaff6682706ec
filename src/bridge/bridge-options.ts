import { hostname } from 'node:os';
import { isValidTopicName } from '../routing/topic.js';
import type { QoS } from '../store/repository.js';
import { topicLineProblem, type TopicLine } from './topic-map.js';

export type { TopicDirection, TopicLine } from './topic-map.js';

/** TLS towards the upstream: PEM contents (the config file reads the files). The server is always verified. */
export interface BridgeTlsOptions {
  /** CA certificates to verify the upstream with; default: Node's bundled public CAs. */
  ca?: string | Buffer;
  /** Client certificate and its key, for upstreams that authenticate by certificate (AWS IoT, …). */
  cert?: string | Buffer;
  key?: string | Buffer;
  /** Name the upstream's certificate must carry (SNI too); default: the address's host. */
  servername?: string;
}

/** One bridge, as `createBroker({ bridges })` takes it; the config file's `bridges` keys in camelCase. */
export interface BridgeOptions {
  /** Unique, [A-Za-z0-9_-]+: logs, broker-admin, and the local session `$bridge/<name>`. */
  name: string;
  /** mqtt://host[:1883] or mqtts://host[:8883]; a list is tried in turn, the next one after each failure. */
  address: string | string[];
  /** Client id upstream; default `<hostname>.<name>`. */
  clientId?: string;
  username?: string;
  password?: string;
  tls?: BridgeTlsOptions;
  /**
   * 4 (MQTT 3.1.1, the default) or 5 (MQTT 5: our subscriptions upstream are No Local and Retain
   * As Published, and messages keep their properties both ways).
   */
  protocolVersion?: 4 | 5;
  /** MQTT 3.1.1: set bit 0x80 of the protocol level, so a Mosquitto upstream does not echo our messages back. Default true. */
  tryPrivate?: boolean;
  /** CleanSession towards the upstream; default false (the upstream keeps our subscriptions and queue). */
  cleanSession?: boolean;
  /** Seconds; default 60; 0 turns it off. */
  keepalive?: number;
  /** Exponential backoff between attempts, with jitter; default 1 s to 60 s. */
  reconnect?: { minMs?: number; maxMs?: number };
  /** How long a connection may take until CONNACK (TCP, TLS and CONNECT); default 30 s. */
  connectTimeoutMs?: number;
  /** Our PUBLISHes to the upstream awaiting acknowledgement; default 100. */
  maxInflight?: number;
  /** The out queue's limits, on disk; default the broker's per-session ones. */
  maxQueuedMessages?: number;
  maxQueuedBytes?: number;
  /** Will upstream and state publications; default true. */
  notifications?: boolean;
  /** Upstream topic of the will (`0`) and of the state on connect (`1`); default `$SYS/broker/connection/<client id>/state`. */
  notificationTopic?: string;
  topics: TopicLine[];
}

/** A bridge's options with every default filled in and checked. */
export interface BridgeSettings extends Required<Omit<BridgeOptions, 'address' | 'username' | 'password' | 'tls' | 'reconnect' | 'maxQueuedMessages' | 'maxQueuedBytes'>> {
  addresses: UpstreamAddress[];
  username?: string;
  password?: string;
  tls?: BridgeTlsOptions;
  reconnect: { minMs: number; maxMs: number };
  maxQueuedMessages?: number;
  maxQueuedBytes?: number;
}

export interface UpstreamAddress {
  /** As configured: shown in logs and by broker-admin. */
  text: string;
  host: string;
  port: number;
  tls: boolean;
}

export const BRIDGE_DEFAULTS = {
  tryPrivate: true,
  cleanSession: false,
  keepalive: 60,
  reconnect: { minMs: 1000, maxMs: 60_000 },
  connectTimeoutMs: 30_000,
  maxInflight: 100,
  notifications: true,
} as const;

/** Numeric ranges, checked by the config file (naming the key) and by createBroker alike. */
export const BRIDGE_RANGES = {
  keepalive: { min: 0, max: 65535 },
  connectTimeoutMs: { min: 1, max: 2 ** 31 - 1 },
  maxInflight: { min: 1, max: 65535 },
  minMs: { min: 1, max: 2 ** 31 - 1 },
  maxMs: { min: 1, max: 2 ** 31 - 1 },
  maxQueuedMessages: { min: 1, max: 2 ** 40 },
  maxQueuedBytes: { min: 1, max: 2 ** 50 },
} as const;

const NAME = /^[A-Za-z0-9_-]+$/;

/** A problem with a bridge's options: `key` is the path under the bridge (`topics[1].pattern`). */
export interface BridgeProblem {
  key: string;
  message: string;
}

/** Every problem with the semantics of one bridge's options (types are the caller's to check). */
export function bridgeProblems(options: BridgeOptions): BridgeProblem[] {
  const problems: BridgeProblem[] = [];
  const problem = (key: string, message: string) => problems.push({ key, message });
  if (!NAME.test(options.name)) problem('name', `only letters, digits, _ and - are allowed, got ${JSON.stringify(options.name)}`);
  const addresses = Array.isArray(options.address) ? options.address : [options.address];
  if (addresses.length === 0) problem('address', 'at least one address is required');
  addresses.forEach((text, index) => {
    const parsed = parseAddress(text);
    if (typeof parsed === 'string') problem(Array.isArray(options.address) ? `address[${index}]` : 'address', parsed);
    else if (!parsed.tls && options.tls !== undefined) problem('tls', `given for ${text}, which is not mqtts://`);
  });
  if (options.protocolVersion !== undefined && options.protocolVersion !== 4 && options.protocolVersion !== 5) problem('protocol_version', 'must be 4 (MQTT 3.1.1) or 5 (MQTT 5)');
  if (options.password !== undefined && options.username === undefined) problem('password', 'a password needs a username [MQTT-3.1.2-22]');
  if (options.tls && (options.tls.cert === undefined) !== (options.tls.key === undefined)) problem('tls', 'cert and key go together');
  const { minMs, maxMs } = { ...BRIDGE_DEFAULTS.reconnect, ...options.reconnect };
  if (maxMs < minMs) problem('reconnect.max_ms', `must be at least min_ms (${minMs})`);
  if (options.notificationTopic !== undefined && !isValidTopicName(options.notificationTopic)) {
    problem('notification_topic', `not a valid topic name: ${JSON.stringify(options.notificationTopic)}`);
  }
  if (options.topics.length === 0) problem('topics', 'at least one topic line is required');
  options.topics.forEach((line, index) => {
    const lineProblem = topicLineProblem(line);
    if (lineProblem !== undefined) problem(`topics[${index}].${lineProblem.key}`, lineProblem.message);
  });
  return problems;
}

/** Names that appear twice among the bridges, and client ids used by two bridges. */
export function bridgeSetProblems(bridges: readonly BridgeOptions[]): BridgeProblem[] {
  const problems: BridgeProblem[] = [];
  const names = new Set<string>();
  const clientIds = new Set<string>();
  bridges.forEach((bridge, index) => {
    if (names.has(bridge.name)) problems.push({ key: `[${index}].name`, message: `${JSON.stringify(bridge.name)} is the name of another bridge` });
    names.add(bridge.name);
    const clientId = bridge.clientId ?? defaultClientId(bridge.name);
    // Two connections with one client id would take each other over upstream, forever.
    if (clientIds.has(clientId)) problems.push({ key: `[${index}].client_id`, message: `${JSON.stringify(clientId)} is the client id of another bridge` });
    clientIds.add(clientId);
  });
  return problems;
}

/** The options of a bridge already checked (bridgeProblems found nothing), with defaults. */
export function bridgeSettings(options: BridgeOptions): BridgeSettings {
  const clientId = options.clientId ?? defaultClientId(options.name);
  const addresses = (Array.isArray(options.address) ? options.address : [options.address]).map((text) => parseAddress(text) as UpstreamAddress);
  return {
    name: options.name,
    addresses,
    clientId,
    ...(options.username === undefined ? {} : { username: options.username }),
    ...(options.password === undefined ? {} : { password: options.password }),
    ...(options.tls === undefined ? {} : { tls: options.tls }),
    protocolVersion: options.protocolVersion ?? 4,
    tryPrivate: options.tryPrivate ?? BRIDGE_DEFAULTS.tryPrivate,
    cleanSession: options.cleanSession ?? BRIDGE_DEFAULTS.cleanSession,
    keepalive: options.keepalive ?? BRIDGE_DEFAULTS.keepalive,
    reconnect: { ...BRIDGE_DEFAULTS.reconnect, ...options.reconnect },
    connectTimeoutMs: options.connectTimeoutMs ?? BRIDGE_DEFAULTS.connectTimeoutMs,
    maxInflight: options.maxInflight ?? BRIDGE_DEFAULTS.maxInflight,
    ...(options.maxQueuedMessages === undefined ? {} : { maxQueuedMessages: options.maxQueuedMessages }),
    ...(options.maxQueuedBytes === undefined ? {} : { maxQueuedBytes: options.maxQueuedBytes }),
    notifications: options.notifications ?? BRIDGE_DEFAULTS.notifications,
    notificationTopic: options.notificationTopic ?? `$SYS/broker/connection/${clientId}/state`,
    topics: options.topics.map((line) => ({ ...line })),
  };
}

function defaultClientId(name: string): string {
  return `${hostname()}.${name}`;
}

/** mqtt://host[:port] or mqtts://host[:port]; a problem as a string. */
export function parseAddress(text: string): UpstreamAddress | string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return `not an address (mqtt://host:port or mqtts://host:port): ${JSON.stringify(text)}`;
  }
  if (url.protocol !== 'mqtt:' && url.protocol !== 'mqtts:') return `the scheme must be mqtt:// or mqtts://, got ${JSON.stringify(text)}`;
  if (url.hostname === '') return `no host in ${JSON.stringify(text)}`;
  if ((url.pathname !== '' && url.pathname !== '/') || url.search !== '' || url.username !== '') {
    return `only mqtt(s)://host:port, no path, query or credentials (use username and password): ${JSON.stringify(text)}`;
  }
  const tls = url.protocol === 'mqtts:';
  // URL keeps the brackets of an IPv6 host; the socket wants the bare address.
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  return { text, host, port: url.port === '' ? (tls ? 8883 : 1883) : Number(url.port), tls };
}

export type { QoS };
