/**
 * The records broker-admin prints with `--json` (one JSON object per line, NDJSON) and the running
 * broker streams over its admin socket. This is a stable, documented schema (README,
 * "Administration"): fields are only ever added in a new schema version, never renamed or removed
 * within one.
 */

import type { BrokerCounters } from '../protocol/limits.js';
import { namedMessageProperties } from '../protocol/message-properties.js';
import { parseSharedFilter } from '../routing/topic.js';
import { EXPIRY_NEVER } from '../session/session-manager.js';
import type { MessageProperties, Subscription } from '../store/model.js';

export const SCHEMA_VERSION = 1;

/** How many payload bytes a record shows unless `--full`. */
export const PAYLOAD_LIMIT = 64;

export type Mode = 'stopped' | 'running';

export interface PayloadField {
  /** utf8: `data` is the text itself; base64: the payload is not printable UTF-8. */
  encoding: 'utf8' | 'base64';
  data: string;
  /** Bytes of the whole payload. */
  size: number;
  /** true when `data` holds only the first PAYLOAD_LIMIT bytes. */
  truncated: boolean;
}

export interface HeaderRecord {
  type: 'header';
  schema: typeof SCHEMA_VERSION;
  command: string;
  mode: Mode;
  /** Absolute path of the LevelDB store. */
  store: string;
}

export interface SubscriptionField {
  filter: string;
  qos: 0 | 1 | 2;
  /** MQTT 5 subscription options, each present only when set. */
  noLocal?: boolean;
  retainAsPublished?: boolean;
  /** 1: retained messages only for a new subscription; 2: none (0, the default, is absent). */
  retainHandling?: 1 | 2;
  /** MQTT 5 Subscription Identifier. */
  identifier?: number;
  /** For a shared subscription `$share/{group}/{filter}`: its group (ShareName). */
  shareGroup?: string;
}

/** MQTT 5 properties of a message, each present only when the message has it. */
export interface PropertiesField {
  /** Payload Format Indicator: 1, UTF-8 text. */
  payloadFormat?: 0 | 1;
  contentType?: string;
  responseTopic?: string;
  /** Correlation Data, shown like a payload (whole, never truncated). */
  correlationData?: PayloadField;
  /** User Properties in the order they arrived, repeats kept. */
  userProperties?: Array<[string, string]>;
}

/** What a message record adds for MQTT 5 properties: absent fields for a message without them. */
export interface MessagePropertyFields {
  properties?: PropertiesField;
  /** ISO time the message expires (its Message Expiry Interval from when it arrived). */
  expiresAt?: string;
  /** Whole seconds of that left when the record was made; 0 once expired (never delivered then). */
  expiresIn?: number;
}

export interface InflightField {
  seq: number;
  packetId: number;
  /**
   * sent: PUBLISH sent (or marked so just before it is sent), awaiting PUBACK/PUBREC; its next
   * delivery carries DUP=1. released: PUBREC received, PUBREL sent, awaiting PUBCOMP.
   */
  state: 'sent' | 'released';
  topic: string;
  qos: 0 | 1 | 2;
}

export interface InboundField {
  packetId: number;
  /** ISO time the QoS 2 PUBLISH was received; null for a clean session (not stored). */
  receivedAt: string | null;
}

export interface SessionRecord {
  type: 'session';
  clientId: string;
  /** false: CleanSession=1 (running mode only: such sessions are never stored). */
  persistent: boolean;
  /** Whether a client is connected to it now; always false in stopped mode. */
  connected: boolean;
  /** ISO time the persistent session was first stored; null for a clean session. */
  createdAt: string | null;
  /**
   * ISO time its client last connected or disconnected (for a connected client: when it connected);
   * null for a clean session, or a session stored by a broker that did not record it yet.
   */
  lastSeen: string | null;
  /**
   * The user name of the client that created the session (the only user that may connect to it).
   * Absent for a session created by an anonymous client, or stored before owners were recorded.
   */
  owner?: string;
  /**
   * MQTT 5 Session Expiry Interval, seconds (4294967295: never; 0: ends with its connection).
   * Absent for a session without one (3.1.1: the broker's persistent_session_expiry applies) and
   * for a clean session (`persistent: false` says it ends with its connection).
   */
  expiry?: number;
  /**
   * ISO time the session expires unless its client returns (last seen + expiry); null while it is
   * connected or when it never expires. Present when `expiry` is.
   */
  expiresAt?: string | null;
  subscriptions: SubscriptionField[];
  /** Every outbound entry still stored (waiting or in flight) and their payload bytes. */
  queued: { count: number; bytes: number };
  /** Messages refused for this session because its queue was full (queue limits), since it was created. */
  dropped: number;
  inflight: InflightField[];
  /** Inbound QoS 2 packet ids received (PUBREC sent) and awaiting PUBREL. */
  inbound: InboundField[];
}

/**
 * `bridges`: one bridge to an upstream broker. Its out queue is the session `session`, which
 * `dump` and `session show` list like any other. In stopped mode only what the store holds is
 * known: `state` is `stopped` and the fields of a running bridge are null or 0.
 */
export interface BridgeRecord {
  type: 'bridge';
  name: string;
  /** The bridge's local session (`$bridge/<name>`). */
  session: string;
  /** Its client id upstream; null in stopped mode. */
  clientId: string | null;
  /** The address connected to or tried now; null in stopped mode. */
  address: string | null;
  state: 'connected' | 'connecting' | 'waiting' | 'refused' | 'stopped';
  /** ISO time the state was entered; null in stopped mode. */
  since: string | null;
  /** ISO time of the next attempt while waiting or refused, else null. */
  retryAt: string | null;
  /** The CONNACK return code of the last refusal while refused, else null. */
  refusedCode: number | null;
  /** The last failure to connect or the reason the last connection ended; null if none. */
  lastError: string | null;
  /** The out queue on disk (in flight included), as for a session. */
  queued: { count: number; bytes: number };
  /** Messages refused for the out queue because it was full (max_queued_messages/bytes). */
  dropped: number;
  /** PUBLISHes sent upstream and not yet acknowledged. */
  inflight: number;
  /** Since the broker started: messages the upstream acknowledged (and QoS 0 ones sent). */
  forwarded: number;
  /** Since the broker started: messages from the upstream stored and delivered locally. */
  received: number;
}

export interface MessageRecord extends MessagePropertyFields {
  type: 'message';
  clientId: string;
  seq: number;
  state: 'queued' | 'sent' | 'released';
  /** null while queued (no packet id yet). */
  packetId: number | null;
  topic: string;
  /** QoS of this delivery (the lower of the message's and the subscription's). */
  qos: 0 | 1 | 2;
  retain: boolean;
  payload: PayloadField;
  /** MQTT 5 Subscription Identifiers of this delivery. */
  subscriptionIds?: number[];
  /** The shared subscriptions (`$share/...`) this delivery was made for: handed to another member if the session ends. */
  shared?: string[];
}

export interface RetainedRecord extends MessagePropertyFields {
  type: 'retained';
  topic: string;
  qos: 0 | 1 | 2;
  payload: PayloadField;
}

export interface TotalsRecord {
  type: 'totals';
  schema: typeof SCHEMA_VERSION;
  sessions: number;
  subscriptions: number;
  queued: number;
  queuedBytes: number;
  inflight: number;
  inbound: number;
  sharedBodies: number;
  retained: number;
  retainedBytes: number;
  keys: number;
  keyBytes: number;
  valueBytes: number;
  /** LevelDB's estimate of the space the store takes on disk. */
  diskBytes: number;
}

/** `stats` of a running broker only: what it refused since it started (see BrokerCounters). */
export interface CountersRecord extends BrokerCounters {
  type: 'counters';
}

export interface ProblemRecord {
  type: 'problem';
  /** The raw store key (NUL separates its parts). */
  key: string;
  /** Stable problem code, see ProblemCode in src/store/level-verify.ts. */
  problem: string;
  detail: string;
}

export interface VerifyRecord {
  type: 'verify';
  schema: typeof SCHEMA_VERSION;
  ok: boolean;
  keys: number;
  problems: number;
}

export interface DroppedRecord {
  type: 'dropped';
  clientId: string;
  wasConnected: boolean;
}

export interface RetainedClearedRecord {
  type: 'retained-cleared';
  topic: string;
}

export interface CompactedRecord {
  type: 'compacted';
  diskBytesBefore: number;
  diskBytesAfter: number;
}

export type AdminRecord =
  | HeaderRecord
  | SessionRecord
  | BridgeRecord
  | MessageRecord
  | RetainedRecord
  | TotalsRecord
  | CountersRecord
  | ProblemRecord
  | VerifyRecord
  | DroppedRecord
  | RetainedClearedRecord
  | CompactedRecord;

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Text when the payload is printable UTF-8, else base64; truncated to PAYLOAD_LIMIT bytes unless full. */
export function payloadField(payload: Uint8Array, full: boolean): PayloadField {
  const size = payload.byteLength;
  let text: string | undefined;
  try {
    text = utf8.decode(payload);
  } catch {
    text = undefined;
  }
  // Control characters other than tab and line breaks make a payload binary for display.
  if (text !== undefined && !/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.test(text)) {
    if (full || size <= PAYLOAD_LIMIT) return { encoding: 'utf8', data: text, size, truncated: false };
    // Cut at a character boundary at or below the limit.
    let data = '';
    let bytes = 0;
    for (const char of text) {
      const length = Buffer.byteLength(char);
      if (bytes + length > PAYLOAD_LIMIT) break;
      data += char;
      bytes += length;
    }
    return { encoding: 'utf8', data, size, truncated: true };
  }
  const shown = full ? payload : payload.subarray(0, PAYLOAD_LIMIT);
  return { encoding: 'base64', data: Buffer.from(shown).toString('base64'), size, truncated: shown.byteLength < size };
}

export function isoTime(millis: number): string {
  return new Date(millis).toISOString();
}

/** A subscription as records show it: its options only where set, and its group if it is shared. */
export function subscriptionField(subscription: Subscription): SubscriptionField {
  const { filter, qos, noLocal, retainAsPublished, retainHandling, identifier } = subscription;
  const field: SubscriptionField = { filter, qos };
  if (noLocal) field.noLocal = true;
  if (retainAsPublished) field.retainAsPublished = true;
  if (retainHandling) field.retainHandling = retainHandling;
  if (identifier !== undefined) field.identifier = identifier;
  const shared = parseSharedFilter(filter);
  if (shared) field.shareGroup = shared.group;
  return field;
}

/** The MQTT 5 fields of a message record at `now` (ms since the epoch); none for a message without properties. */
export function messagePropertyFields(properties: MessageProperties | undefined, now: number): MessagePropertyFields {
  if (properties === undefined) return {};
  const { payloadFormat, expiresAt, contentType, responseTopic, correlationData, userProperties } = namedMessageProperties(properties);
  const shown: PropertiesField = {};
  if (payloadFormat !== undefined) shown.payloadFormat = payloadFormat;
  if (contentType !== undefined) shown.contentType = contentType;
  if (responseTopic !== undefined) shown.responseTopic = responseTopic;
  if (correlationData !== undefined) shown.correlationData = payloadField(correlationData, true);
  if (userProperties !== undefined) shown.userProperties = userProperties.map(([name, value]) => [name, value]);
  const fields: MessagePropertyFields = {};
  if (Object.keys(shown).length > 0) fields.properties = shown;
  if (expiresAt !== undefined) {
    fields.expiresAt = isoTime(expiresAt);
    fields.expiresIn = Math.max(0, Math.floor((expiresAt - now) / 1000));
  }
  return fields;
}

/** The expiry fields of a session record: none without an interval. */
export function sessionExpiryFields(expiry: number | undefined, lastSeen: number | undefined, connected: boolean): Pick<SessionRecord, 'expiry' | 'expiresAt'> {
  if (expiry === undefined) return {};
  const never = expiry >= EXPIRY_NEVER || connected || lastSeen === undefined;
  return { expiry, expiresAt: never ? null : isoTime(lastSeen + expiry * 1000) };
}
