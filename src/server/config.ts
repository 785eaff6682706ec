/**
 * The config file (`broker --config FILE`): JSON or YAML by extension, snake_case keys, mapped to
 * BrokerOptions. Everything is checked before the broker starts; each problem names the file and
 * the key path (`broker.yaml: listeners[1].tls.cert: file not found: /etc/broker/server.crt`), and
 * all problems are reported at once. Relative paths resolve against the file's directory, so a
 * config works wherever the broker is started from.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { dirname, extname, resolve } from 'node:path';
import { BrokerError, ErrorCodes, errorMessage } from '../errors.js';
import { LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from '../logger.js';
import { BRIDGE_RANGES, bridgeProblems, bridgeSetProblems, type BridgeOptions, type BridgeTlsOptions, type TopicLine } from '../bridge/bridge-options.js';
import { OPTION_RANGES, type BrokerOptions } from './broker.js';
import type { ListenerOptions, TlsListenerOptions } from './listeners.js';

/**
 * What a config file can set: BrokerOptions less the ones only embedders can give (log, repository,
 * admin), plus how the command line's logger prints (an embedder passes a Logger of its own).
 */
export type ConfigOptions = Omit<BrokerOptions, 'log' | 'repository' | 'admin'> & LogOptions;

export interface LogOptions {
  logLevel?: LogLevel;
  logFormat?: LogFormat;
}

const TOP_KEYS = [
  'data_dir',
  'sync',
  'sync_interval_ms',
  'allow_anonymous',
  'password_file',
  'acl_file',
  'store_on_corrupt',
  'log_level',
  'log_format',
  'listeners',
  'limits',
  'bridges',
  'sys_interval',
  'metrics',
] as const;
const LISTENER_KEYS = ['host', 'port', 'allow_anonymous', 'tls', 'websocket', 'path', 'allowed_origins'] as const;
const METRICS_KEYS = ['host', 'port'] as const;
const TLS_KEYS = ['cert', 'key', 'ca', 'require_client_cert', 'cert_username'] as const;

/**
 * `limits` keys → BrokerOptions, with the ranges createBroker accepts (checked here too, so that
 * the message can name the key and the file).
 */
const LIMITS = Object.fromEntries(
  (
    [
      ['max_inflight', 'maxInflight'],
      ['max_queued_messages', 'maxQueuedMessages'],
      ['max_queued_bytes', 'maxQueuedBytes'],
      ['max_retained_messages', 'maxRetainedMessages'],
      ['max_retained_bytes', 'maxRetainedBytes'],
      ['read_window', 'readWindow'],
      ['read_window_bytes', 'readWindowBytes'],
      ['max_total_read_window_bytes', 'maxTotalReadWindowBytes'],
      ['connect_timeout_ms', 'connectTimeoutMs'],
      ['max_packet_size', 'maxPacketSize'],
      ['max_unfinished_packet_bytes', 'maxUnfinishedPacketBytes'],
      ['packet_timeout_ms', 'packetTimeoutMs'],
      ['max_unsent_bytes', 'maxUnsentBytes'],
      ['max_total_unsent_bytes', 'maxTotalUnsentBytes'],
      ['max_connections', 'maxConnections'],
      ['max_topic_length', 'maxTopicLength'],
      ['max_topic_levels', 'maxTopicLevels'],
      ['max_subscriptions_per_client', 'maxSubscriptionsPerClient'],
      ['max_sessions', 'maxSessions'],
      ['max_subscriptions', 'maxSubscriptions'],
      ['max_subscription_bytes', 'maxSubscriptionBytes'],
      ['topic_alias_maximum', 'topicAliasMaximum'],
      ['receive_maximum', 'receiveMaximum'],
      ['max_qos', 'maxQos'],
      ['persistent_session_expiry', 'persistentSessionExpiry'],
    ] as const
  ).map(([key, option]) => [key, { option, ...OPTION_RANGES[option] }]),
) as Record<string, { option: keyof typeof OPTION_RANGES; min: number; max: number }>;

/** Reads, parses and checks a config file; rejects with BAD_CONFIG listing every problem found. */
export async function loadConfigFile(file: string): Promise<ConfigOptions> {
  formatOf(file);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new BrokerError(ErrorCodes.BAD_CONFIG, `${file}: cannot read the config file: ${fileProblem(error, resolve(file))}`, { cause: error });
  }
  return configToOptions(await parseConfigText(text, file), file);
}

/**
 * JSON for `.json`, YAML for `.yaml`/`.yml`; a syntax error names the line and column. The YAML
 * parser is loaded only for a YAML file: it is a sizeable module, and start-up time counts.
 */
export async function parseConfigText(text: string, file: string): Promise<unknown> {
  if (formatOf(file) === 'json') {
    try {
      return JSON.parse(text) as unknown;
    } catch (error) {
      const position = /at position (\d+)/.exec(errorMessage(error));
      const at = position ? `${lineAndColumn(text, Number(position[1]))}: ` : '';
      // V8 quotes the text around the error, newlines included: keep the message on one line.
      const what = errorMessage(error).replace(/\s*\n\s*/g, ' ');
      throw new BrokerError(ErrorCodes.BAD_CONFIG, `${file}: ${at}not valid JSON: ${what}`, { cause: error });
    }
  }
  const { parse: parseYaml, YAMLParseError } = await import('yaml');
  try {
    // YAML 1.2 core schema: `yes`/`on` are strings, not booleans; duplicate keys are errors.
    return parseYaml(text, { uniqueKeys: true }) as unknown;
  } catch (error) {
    if (error instanceof YAMLParseError) {
      const at = error.linePos ? `line ${error.linePos[0].line}, column ${error.linePos[0].col}: ` : '';
      const what = error.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '');
      throw new BrokerError(ErrorCodes.BAD_CONFIG, `${file}: ${at}not valid YAML: ${what}`, { cause: error });
    }
    throw new BrokerError(ErrorCodes.BAD_CONFIG, `${file}: not valid YAML: ${errorMessage(error)}`, { cause: error });
  }
}

/**
 * Checks a parsed config and maps it to BrokerOptions: reads the TLS files (the broker takes PEM
 * contents), checks that the password and ACL files exist, resolves relative paths against the
 * directory of `file`. Keys the file does not set are left out, so the broker's defaults apply.
 */
export async function configToOptions(raw: unknown, file: string): Promise<ConfigOptions> {
  const check = new Checker(file, dirname(resolve(file)));
  // An empty YAML file is null: no settings, every default.
  const top = raw === null ? {} : check.mapping(raw, '', TOP_KEYS);
  if (top === undefined) throw check.error();
  const options: ConfigOptions = {};

  const dataDir = check.string(top, 'data_dir', 'data_dir');
  if (dataDir !== undefined) options.dataDir = check.path(dataDir);

  const sync = check.boolean(top, 'sync', 'sync');
  const syncIntervalMs = check.integer(top, 'sync_interval_ms', 'sync_interval_ms', 0, 60_000);
  if (syncIntervalMs !== undefined && syncIntervalMs > 0) {
    // An interval means acknowledging before the fsync, whatever `sync` says (like --sync-interval).
    options.sync = false;
    options.syncIntervalMs = syncIntervalMs;
  } else if (sync !== undefined) {
    options.sync = sync;
    options.syncIntervalMs = 0;
  }

  const allowAnonymous = check.boolean(top, 'allow_anonymous', 'allow_anonymous');
  if (allowAnonymous !== undefined) options.allowAnonymous = allowAnonymous;
  const passwordFile = await check.existingFile(top, 'password_file', 'password_file');
  if (passwordFile !== undefined) options.passwordFile = passwordFile;
  const aclFile = await check.existingFile(top, 'acl_file', 'acl_file');
  if (aclFile !== undefined) options.aclFile = aclFile;
  const storeOnCorrupt = check.oneOf(top, 'store_on_corrupt', 'store_on_corrupt', ['fail', 'move-aside'] as const);
  if (storeOnCorrupt !== undefined) options.storeOnCorrupt = storeOnCorrupt;
  const logLevel = check.oneOf(top, 'log_level', 'log_level', LOG_LEVELS);
  if (logLevel !== undefined) options.logLevel = logLevel;
  const logFormat = check.oneOf(top, 'log_format', 'log_format', LOG_FORMATS);
  if (logFormat !== undefined) options.logFormat = logFormat;

  if (top['listeners'] !== undefined) {
    const listeners = await readListeners(check, top['listeners']);
    if (listeners !== undefined) options.listeners = listeners;
  }

  const sysInterval = check.integer(top, 'sys_interval', 'sys_interval', OPTION_RANGES.sysInterval.min, OPTION_RANGES.sysInterval.max);
  if (sysInterval !== undefined) options.sysInterval = sysInterval;
  if (top['metrics'] !== undefined) {
    const metrics = check.mapping(top['metrics'], 'metrics', METRICS_KEYS);
    if (metrics !== undefined) {
      const port = check.integer(metrics, 'port', 'metrics.port', 0, 65535);
      if (metrics['port'] === undefined) check.problem('metrics.port', 'required (the TCP port of /metrics and /healthz)');
      const host = check.string(metrics, 'host', 'metrics.host');
      if (port !== undefined) options.metrics = { port, ...(host === undefined ? {} : { host }) };
    }
  }

  if (top['limits'] !== undefined) {
    const limits = check.mapping(top['limits'], 'limits', Object.keys(LIMITS));
    if (limits !== undefined) {
      for (const [key, { option, min, max }] of Object.entries(LIMITS)) {
        const value = check.integer(limits, key, `limits.${key}`, min, max);
        if (value !== undefined) options[option] = value;
      }
    }
  }

  if (top['bridges'] !== undefined) {
    const bridges = await readBridges(check, top['bridges']);
    if (bridges !== undefined) options.bridges = bridges;
  }

  if (check.problems.length > 0) throw check.error();
  return options;
}

const BRIDGE_KEYS = [
  'name',
  'address',
  'client_id',
  'username',
  'password',
  'password_file',
  'tls',
  'protocol_version',
  'try_private',
  'clean_session',
  'keepalive',
  'reconnect',
  'connect_timeout_ms',
  'max_inflight',
  'max_queued_messages',
  'max_queued_bytes',
  'notifications',
  'notification_topic',
  'topics',
] as const;
const BRIDGE_TLS_KEYS = ['ca', 'cert', 'key', 'servername'] as const;
const TOPIC_LINE_KEYS = ['pattern', 'direction', 'qos', 'local_prefix', 'remote_prefix'] as const;

/** `bridges`: types here, naming the key; what they mean is checked by bridgeProblems, as createBroker does. */
async function readBridges(check: Checker, value: unknown): Promise<BridgeOptions[] | undefined> {
  if (!Array.isArray(value)) return check.problem('bridges', `expected a list of bridges, got ${describe(value)}`);
  const bridges: BridgeOptions[] = [];
  for (const [index, item] of value.entries()) {
    const path = `bridges[${index}]`;
    const entry = check.mapping(item, path, BRIDGE_KEYS);
    if (entry === undefined) continue;
    const problems = check.problems.length;
    const name = check.string(entry, 'name', `${path}.name`);
    if (entry['name'] === undefined) check.problem(`${path}.name`, 'required');
    const address = readAddresses(check, entry['address'], `${path}.address`);
    const bridge: BridgeOptions = { name: name ?? '', address: address ?? [], topics: readTopicLines(check, entry['topics'], `${path}.topics`) ?? [] };
    const clientId = check.string(entry, 'client_id', `${path}.client_id`);
    if (clientId !== undefined) bridge.clientId = clientId;
    const username = check.string(entry, 'username', `${path}.username`);
    if (username !== undefined) bridge.username = username;
    const password = await readBridgePassword(check, entry, path);
    if (password !== undefined) bridge.password = password;
    if (entry['tls'] !== undefined) {
      const tls = await readBridgeTls(check, entry['tls'], `${path}.tls`);
      if (tls !== undefined) bridge.tls = tls;
    }
    const protocolVersion = check.integer(entry, 'protocol_version', `${path}.protocol_version`, 4, 5);
    if (protocolVersion !== undefined) bridge.protocolVersion = protocolVersion === 5 ? 5 : 4;
    for (const [key, option] of [
      ['try_private', 'tryPrivate'],
      ['clean_session', 'cleanSession'],
      ['notifications', 'notifications'],
    ] as const) {
      const flag = check.boolean(entry, key, `${path}.${key}`);
      if (flag !== undefined) bridge[option] = flag;
    }
    for (const [key, option] of [
      ['keepalive', 'keepalive'],
      ['connect_timeout_ms', 'connectTimeoutMs'],
      ['max_inflight', 'maxInflight'],
      ['max_queued_messages', 'maxQueuedMessages'],
      ['max_queued_bytes', 'maxQueuedBytes'],
    ] as const) {
      const { min, max } = BRIDGE_RANGES[option];
      const number = check.integer(entry, key, `${path}.${key}`, min, max);
      if (number !== undefined) bridge[option] = number;
    }
    if (entry['reconnect'] !== undefined) {
      const reconnect = check.mapping(entry['reconnect'], `${path}.reconnect`, ['min_ms', 'max_ms']);
      if (reconnect !== undefined) {
        const minMs = check.integer(reconnect, 'min_ms', `${path}.reconnect.min_ms`, BRIDGE_RANGES.minMs.min, BRIDGE_RANGES.minMs.max);
        const maxMs = check.integer(reconnect, 'max_ms', `${path}.reconnect.max_ms`, BRIDGE_RANGES.maxMs.min, BRIDGE_RANGES.maxMs.max);
        bridge.reconnect = { ...(minMs === undefined ? {} : { minMs }), ...(maxMs === undefined ? {} : { maxMs }) };
      }
    }
    const notificationTopic = check.string(entry, 'notification_topic', `${path}.notification_topic`);
    if (notificationTopic !== undefined) bridge.notificationTopic = notificationTopic;
    // What the values mean, once they have the right types.
    if (check.problems.length === problems) {
      for (const { key, message } of bridgeProblems(bridge)) check.problem(`${path}.${key}`, message);
    }
    bridges.push(bridge);
  }
  for (const { key, message } of bridgeSetProblems(bridges)) check.problem(`bridges${key}`, message);
  return bridges;
}

function readAddresses(check: Checker, value: unknown, path: string): string | string[] | undefined {
  if (value === undefined) return check.problem(path, 'required (mqtt://host:port or mqtts://host:port, or a list of them)');
  if (typeof value === 'string' && value !== '') return value;
  if (Array.isArray(value) && value.length > 0 && value.every((item) => typeof item === 'string' && item !== '')) return value as string[];
  return check.problem(path, `expected an address or a non-empty list of addresses, got ${describe(value)}`);
}

/** `password`, or the first line of `password_file`; not both. */
async function readBridgePassword(check: Checker, entry: Record<string, unknown>, path: string): Promise<string | undefined> {
  const password = check.string(entry, 'password', `${path}.password`);
  const file = await check.existingFile(entry, 'password_file', `${path}.password_file`);
  if (password !== undefined && entry['password_file'] !== undefined) return check.problem(`${path}.password_file`, 'give password or password_file, not both');
  if (file === undefined) return password;
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    return check.problem(`${path}.password_file`, fileProblem(error, file));
  }
  const line = text.split(/\r?\n/)[0] ?? '';
  return line === '' ? check.problem(`${path}.password_file`, `the first line of ${file} is empty`) : line;
}

async function readBridgeTls(check: Checker, value: unknown, path: string): Promise<BridgeTlsOptions | undefined> {
  const entry = check.mapping(value, path, BRIDGE_TLS_KEYS);
  if (entry === undefined) return undefined;
  const ca = await check.pemFile(entry, 'ca', `${path}.ca`, 'certificate');
  const cert = await check.pemFile(entry, 'cert', `${path}.cert`, 'certificate');
  const key = await check.pemFile(entry, 'key', `${path}.key`, 'private key');
  const servername = check.string(entry, 'servername', `${path}.servername`);
  if (cert !== undefined && key !== undefined && !new X509Certificate(cert).checkPrivateKey(createPrivateKey(key))) {
    return check.problem(`${path}.key`, `does not belong to the certificate in ${check.path(String(entry['cert']))}`);
  }
  return {
    ...(ca === undefined ? {} : { ca }),
    ...(cert === undefined ? {} : { cert }),
    ...(key === undefined ? {} : { key }),
    ...(servername === undefined ? {} : { servername }),
  };
}

function readTopicLines(check: Checker, value: unknown, path: string): TopicLine[] | undefined {
  if (value === undefined) return check.problem(path, 'required (a list of topic lines: pattern, direction, qos, local_prefix, remote_prefix)');
  if (!Array.isArray(value)) return check.problem(path, `expected a list of topic lines, got ${describe(value)}`);
  const lines: TopicLine[] = [];
  for (const [index, item] of value.entries()) {
    const at = `${path}[${index}]`;
    const entry = check.mapping(item, at, TOPIC_LINE_KEYS);
    if (entry === undefined) continue;
    // Empty strings are meaningful here: an empty pattern maps one topic, an empty prefix is none.
    const text = (key: string): string | undefined => {
      const field = entry[key];
      if (field === undefined || typeof field === 'string') return field;
      return check.problem(`${at}.${key}`, `expected a string, got ${describe(field)}`);
    };
    const pattern = text('pattern');
    if (entry['pattern'] === undefined) check.problem(`${at}.pattern`, "required (a topic filter; '' maps local_prefix to remote_prefix)");
    const line: TopicLine = { pattern: pattern ?? '' };
    const direction = check.oneOf(entry, 'direction', `${at}.direction`, ['out', 'in', 'both'] as const);
    if (direction !== undefined) line.direction = direction;
    const qos = check.integer(entry, 'qos', `${at}.qos`, 0, 2);
    if (qos !== undefined) line.qos = qos as TopicLine['qos'];
    const localPrefix = text('local_prefix');
    if (localPrefix !== undefined) line.localPrefix = localPrefix;
    const remotePrefix = text('remote_prefix');
    if (remotePrefix !== undefined) line.remotePrefix = remotePrefix;
    lines.push(line);
  }
  return lines;
}

/**
 * A path given on the command line (`--password-file`, `--acl-file`): resolved against the
 * working directory, and it must be an existing file, like its config file key.
 */
export async function existingFileOption(flag: string, path: string): Promise<string> {
  const absolute = resolve(path);
  const problem = await notAFile(absolute);
  if (problem !== undefined) throw new BrokerError(ErrorCodes.BAD_OPTION, `${flag}: ${problem}`);
  return absolute;
}

async function readListeners(check: Checker, value: unknown): Promise<ListenerOptions[] | undefined> {
  if (!Array.isArray(value)) return check.problem('listeners', `expected a list of listeners, got ${describe(value)}`);
  if (value.length === 0) return check.problem('listeners', 'must hold at least one listener');
  const listeners: ListenerOptions[] = [];
  const seen = new Map<string, number>();
  for (const [index, item] of value.entries()) {
    const path = `listeners[${index}]`;
    const entry = check.mapping(item, path, LISTENER_KEYS);
    if (entry === undefined) continue;
    const host = check.string(entry, 'host', `${path}.host`) ?? '127.0.0.1';
    const port = check.integer(entry, 'port', `${path}.port`, 0, 65535);
    if (port === undefined && entry['port'] === undefined) check.problem(`${path}.port`, 'required');
    const listener: ListenerOptions = { host, port: port ?? 0 };
    const allowAnonymous = check.boolean(entry, 'allow_anonymous', `${path}.allow_anonymous`);
    if (allowAnonymous !== undefined) listener.allowAnonymous = allowAnonymous;
    if (entry['tls'] !== undefined) {
      const tls = await readTls(check, entry['tls'], `${path}.tls`);
      if (tls !== undefined) listener.tls = tls;
    }
    readWebSocket(check, entry, path, listener);
    if (port !== undefined && port !== 0) {
      const key = `${host}|${port}`;
      const earlier = seen.get(key);
      if (earlier !== undefined) check.problem(path, `same host and port as listeners[${earlier}]`);
      else seen.set(key, index);
    }
    listeners.push(listener);
  }
  return listeners;
}

/** `websocket`, and the keys that only a WebSocket listener takes: `path`, `allowed_origins`. */
function readWebSocket(check: Checker, entry: Record<string, unknown>, path: string, listener: ListenerOptions): void {
  const websocket = check.boolean(entry, 'websocket', `${path}.websocket`);
  if (websocket !== undefined) listener.websocket = websocket;
  const urlPath = check.string(entry, 'path', `${path}.path`);
  if (urlPath !== undefined) {
    if (!urlPath.startsWith('/') || /[\s?#]/.test(urlPath)) check.problem(`${path}.path`, `expected a URL path such as /mqtt, got ${describe(urlPath)}`);
    else listener.path = urlPath;
  }
  const origins = entry['allowed_origins'];
  if (origins !== undefined) {
    if (!Array.isArray(origins) || !origins.every((origin) => typeof origin === 'string' && origin !== '')) {
      check.problem(`${path}.allowed_origins`, `expected a list of origins such as https://dashboard.example.com, got ${describe(origins)}`);
    } else {
      listener.allowedOrigins = origins as string[];
    }
  }
  if (websocket !== true) {
    for (const key of ['path', 'allowed_origins'] as const) {
      if (entry[key] !== undefined) check.problem(`${path}.${key}`, 'applies to WebSocket listeners only (websocket: true)');
    }
  }
}

async function readTls(check: Checker, value: unknown, path: string): Promise<TlsListenerOptions | undefined> {
  const entry = check.mapping(value, path, TLS_KEYS);
  if (entry === undefined) return undefined;
  const requireClientCert = check.boolean(entry, 'require_client_cert', `${path}.require_client_cert`);
  const certUsername = check.boolean(entry, 'cert_username', `${path}.cert_username`);
  const problems = check.problems.length;
  const cert = await check.pemFile(entry, 'cert', `${path}.cert`, 'certificate');
  const key = await check.pemFile(entry, 'key', `${path}.key`, 'private key');
  const ca = await check.pemFile(entry, 'ca', `${path}.ca`, 'certificate');
  if (entry['cert'] === undefined) check.problem(`${path}.cert`, 'required (the server certificate, PEM)');
  if (entry['key'] === undefined) check.problem(`${path}.key`, 'required (the server private key, PEM)');
  if ((requireClientCert === true || certUsername === true) && entry['ca'] === undefined) {
    // Without a CA of our own, any certificate from a public CA would verify, and name a user.
    check.problem(`${path}.ca`, 'required when require_client_cert or cert_username is true (the CA that signs client certificates)');
  }
  if (cert === undefined || key === undefined || check.problems.length > problems) return undefined;
  if (!new X509Certificate(cert).checkPrivateKey(createPrivateKey(key))) {
    check.problem(`${path}.key`, `does not belong to the certificate in ${check.path(String(entry['cert']))}`);
    return undefined;
  }
  return {
    cert,
    key,
    ...(ca === undefined ? {} : { ca }),
    ...(requireClientCert === undefined ? {} : { requireClientCert }),
    ...(certUsername === undefined ? {} : { certUsername }),
  };
}

/** Collects problems as `file: key.path: message`; each reader returns undefined for a missing or bad value. */
class Checker {
  readonly problems: string[] = [];
  readonly #file: string;
  readonly #baseDir: string;

  constructor(file: string, baseDir: string) {
    this.#file = file;
    this.#baseDir = baseDir;
  }

  error(): BrokerError {
    return new BrokerError(ErrorCodes.BAD_CONFIG, this.problems.join('\n'));
  }

  problem(path: string, message: string): undefined {
    this.problems.push(path === '' ? `${this.#file}: ${message}` : `${this.#file}: ${path}: ${message}`);
    return undefined;
  }

  path(value: string): string {
    return resolve(this.#baseDir, value);
  }

  /** The mapping at `path`; reports every key it does not know. */
  mapping(value: unknown, path: string, known: readonly string[]): Record<string, unknown> | undefined {
    if (!isMapping(value)) {
      return this.problem(path, `expected a mapping of ${path === '' ? 'settings' : 'keys'}, got ${describe(value)}`);
    }
    for (const key of Object.keys(value)) {
      if (!known.includes(key)) this.problem(path === '' ? key : `${path}.${key}`, `unknown key${suggestion(key, known)}`);
    }
    return value;
  }

  boolean(container: Record<string, unknown>, key: string, path: string): boolean | undefined {
    const value = container[key];
    if (value === undefined || typeof value === 'boolean') return value;
    return this.problem(path, `expected true or false, got ${describe(value)}`);
  }

  integer(container: Record<string, unknown>, key: string, path: string, min: number, max: number): number | undefined {
    const value = container[key];
    if (value === undefined) return undefined;
    if (typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max) return value;
    return this.problem(path, `expected an integer from ${min} to ${max}, got ${describe(value)}`);
  }

  oneOf<T extends string>(container: Record<string, unknown>, key: string, path: string, values: readonly T[]): T | undefined {
    const value = container[key];
    if (value === undefined) return undefined;
    if (typeof value === 'string' && (values as readonly string[]).includes(value)) return value as T;
    return this.problem(path, `expected one of ${values.join(', ')}, got ${describe(value)}`);
  }

  string(container: Record<string, unknown>, key: string, path: string): string | undefined {
    const value = container[key];
    if (value === undefined) return undefined;
    if (typeof value === 'string' && value !== '') return value;
    return this.problem(path, `expected a non-empty string, got ${describe(value)}`);
  }

  /** A path that must name an existing file (the broker reads it, now and on reload). */
  async existingFile(container: Record<string, unknown>, key: string, path: string): Promise<string | undefined> {
    const value = this.string(container, key, path);
    if (value === undefined) return undefined;
    const absolute = this.path(value);
    const problem = await notAFile(absolute);
    return problem === undefined ? absolute : this.problem(path, problem);
  }

  /** Reads a PEM file and checks that it holds what it should: the broker only ever sees the contents. */
  async pemFile(container: Record<string, unknown>, key: string, path: string, kind: 'certificate' | 'private key'): Promise<Buffer | undefined> {
    const value = this.string(container, key, path);
    if (value === undefined) return undefined;
    const absolute = this.path(value);
    let contents: Buffer;
    try {
      contents = await readFile(absolute);
    } catch (error) {
      return this.problem(path, fileProblem(error, absolute));
    }
    try {
      if (kind === 'certificate') new X509Certificate(contents);
      else createPrivateKey(contents);
    } catch (error) {
      return this.problem(path, `${absolute} does not hold a PEM ${kind}${kind === 'private key' ? ' (unencrypted)' : ''}: ${errorMessage(error)}`);
    }
    return contents;
  }
}

type Format = 'json' | 'yaml';

function formatOf(file: string): Format {
  const extension = extname(file).toLowerCase();
  if (extension === '.json') return 'json';
  if (extension === '.yaml' || extension === '.yml') return 'yaml';
  throw new BrokerError(ErrorCodes.BAD_CONFIG, `${file}: unknown config file format: the name must end in .json, .yaml or .yml`);
}

async function notAFile(absolute: string): Promise<string | undefined> {
  try {
    const stats = await stat(absolute);
    return stats.isFile() ? undefined : `not a file: ${absolute}`;
  } catch (error) {
    return fileProblem(error, absolute);
  }
}

function fileProblem(error: unknown, absolute: string): string {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return `file not found: ${absolute}`;
  if (code === 'EACCES') return `permission denied: ${absolute}`;
  if (code === 'EISDIR') return `not a file: ${absolute}`;
  return `cannot read ${absolute}: ${errorMessage(error)}`;
}

function lineAndColumn(text: string, offset: number): string {
  const before = text.slice(0, offset).split('\n');
  return `line ${before.length}, column ${before.at(-1)!.length + 1}`;
}

function isMapping(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value);
  return String(value);
}

/** ` (did you mean max_inflight?)` for a key one or two edits away from a known one. */
function suggestion(key: string, known: readonly string[]): string {
  let best: string | undefined;
  let bestDistance = 3;
  for (const candidate of known) {
    const distance = editDistance(key, candidate);
    if (distance < bestDistance) [best, bestDistance] = [candidate, distance];
  }
  return best === undefined ? '' : ` (did you mean ${best}?)`;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, index) => index);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length]!;
}
