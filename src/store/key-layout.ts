/**
 * LevelDB key layout. Every key is `<kind>\0<parts…>`; NUL separates parts because MQTT strings
 * never contain U+0000 [MQTT-1.5.3-2] (the protocol layer rejects any that do), so a client id or
 * topic can never run into the next part, and a range `<prefix>\0` … `<prefix>\x01` covers exactly
 * one client's keys. Numbers are fixed-width hex so that byte order is numeric order.
 *
 *   !format                      store format version (plain msgpack, the one value without a check)
 *   !retained                    retained messages: count, payload bytes, refusals at the limits  { m, b, d }
 *   !synced-at                   time of the last periodic fsync (only with a sync interval)
 *   s\0<client>                  persistent session            { c: createdAt, l: lastSeen, u?: owner, e?: expiry seconds }
 *   b\0<client>\0<filter>        subscription                  { q: qos, n?: no local, a?: retain as published, h?: retain handling, i?: identifier }
 *   q\0<client>\0<seq>           outbound queue entry          { q, r, m, z, s?, g? } or { q, r, t, p, o, x?, s?, g? }  (s: subscription ids, g: shared subscriptions)
 *   n\0<client>                  queue size and drops          { m: messages, b: bytes, d: dropped }
 *   w\0<client>                  outbound marks: DUP mark, QoS2 released-through    { s: seq, r?: seq }
 *   f\0<client>\0<seq>           outbound QoS2 entry released by PUBREC, above r    { s: 2, i: packetId }
 *   i\0<client>\0<packetId>      inbound QoS2 awaiting PUBREL  { a: receivedAt }
 *   m\0<messageId>               message body shared by ≥ 2 queue entries { t, p, o, x? }
 *   c\0<messageId>               how many queue entries still reference that body
 *   r\0<topic>                   retained message              { p, o, x? }
 *   t\0<topic>                   its index record: what routing keeps in memory  { o: qos, z: payload bytes }
 *
 * Every value but the format marker is a checked record (codec.ts): a CRC-32 of key and value.
 *
 * `x` is a message's MQTT 5 properties, absent for a message without any (every 3.1.1 message, so
 * their records are as small as before MQTT 5):  { f?: payload format, e?: expires at (ms since
 * the epoch), c?: content type, r?: response topic, d?: correlation data, u?: [[name, value], …],
 * w?: the properties but the expiry as MQTT 5 encodes them (MessageProperties.encoded; then none of
 * f, c, r, d, u) }. A message the broker received keeps its properties as `w`.
 *
 * Retained payloads stay on disk: at start the broker reads the small t\0 records (their range
 * holds no payload), and a payload is read only when a new subscription matches its topic.
 *
 * A message delivered to one session is stored inline in its queue entry (one key, no count);
 * only fan-out stores the body once and counts references.
 *
 * The DUP mark is one number per session rather than a record per message, since a session sends
 * its entries in seq order: it is raised before a PUBLISH leaves (written ahead over the whole
 * window in memory), so every entry at or below it may have reached the client and is delivered
 * with DUP=1 from then on [MQTT-3.3.1-1]; an entry above it has certainly never been sent.
 *
 * PUBRECs mostly arrive in seq order too, so the same record holds a released-through mark `r`:
 * every QoS2 entry at or below it had its PUBREC stored, and is sent PUBREL, with the packet id its
 * seq gives, rather than the PUBLISH again. A PUBREC that arrives while an older QoS2 entry still
 * waits for its own gets a record of its own under f\0, as every PUBREC did before the mark. The
 * mark spares a QoS2 delivery a record written at PUBREC and deleted at PUBCOMP: half its writes.
 * It never passes the DUP mark (a PUBREC answers a PUBLISH sent), so seqs given after a restart,
 * which start above the DUP mark, stay above it too.
 *
 * This file is the one place that knows how keys are built and taken apart (`keys`, `parseKey`).
 */

import type { Message, MessageProperties, OutboundState, Subscription } from './model.js';

export const FORMAT_KEY = '!format';
/**
 * 3: records may hold MQTT 5 fields (message properties, subscription options, session expiry),
 * which a broker of format 2 would drop without a word. A store of format 2 is converted by its
 * marker alone: every record of it is a record of format 3.
 */
export const FORMAT_VERSION = 3;
/** 2: every value is a checked record, and retained messages have index records and totals. */
export const CHECKED_FORMAT_VERSION = 2;
/** 1: plain msgpack values, no retained index. The broker converts such a store once, when it opens it. */
export const PREVIOUS_FORMAT_VERSION = 1;
/** The totals of the retained messages, kept in the batch of every change like a session's queue counts. */
export const RETAINED_TOTALS_KEY = '!retained';
/** Written by the periodic sync; its only purpose is to carry an fsync. */
export const SYNC_MARK_KEY = '!synced-at';

const SEP = '\u0000';
const END = '\u0001';

export interface KeyRange {
  gt: string;
  lt: string;
}

function hex(n: number, width: number): string {
  return n.toString(16).padStart(width, '0');
}

export const keys = {
  session: (clientId: string) => `s${SEP}${clientId}`,
  sessions: (): KeyRange => ({ gt: `s${SEP}`, lt: `s${END}` }),
  clientIdOfSession: (key: string) => key.slice(2),

  subscription: (clientId: string, filter: string) => `b${SEP}${clientId}${SEP}${filter}`,
  subscriptions: (clientId: string): KeyRange => ({ gt: `b${SEP}${clientId}${SEP}`, lt: `b${SEP}${clientId}${END}` }),
  allSubscriptions: (): KeyRange => ({ gt: `b${SEP}`, lt: `b${END}` }),
  /** [clientId, filter] of a subscription key. */
  splitSubscription(key: string): [string, string] {
    const at = key.indexOf(SEP, 2);
    return [key.slice(2, at), key.slice(at + 1)];
  },

  queueEntry: (clientId: string, seq: number) => `q${SEP}${clientId}${SEP}${hex(seq, 12)}`,
  queue: (clientId: string): KeyRange => ({ gt: `q${SEP}${clientId}${SEP}`, lt: `q${SEP}${clientId}${END}` }),
  queueAfter: (clientId: string, seq: number): KeyRange => ({
    gt: `q${SEP}${clientId}${SEP}${hex(seq, 12)}`,
    lt: `q${SEP}${clientId}${END}`,
  }),
  /** The seq of a queue entry or release key (both end in the same 12 hex digits). */
  seqOfQueueKey: (key: string) => parseInt(key.slice(key.length - 12), 16),

  dupMark: (clientId: string) => `w${SEP}${clientId}`,
  isDupMarkKey: (key: string) => key.charCodeAt(0) === 0x77 && key.charCodeAt(1) === 0,
  queueStats: (clientId: string) => `n${SEP}${clientId}`,
  isQueueStatsKey: (key: string) => key.charCodeAt(0) === 0x6e && key.charCodeAt(1) === 0,
  allQueueStats: (): KeyRange => ({ gt: `n${SEP}`, lt: `n${END}` }),
  clientIdOfQueueStats: (key: string) => key.slice(2),

  release: (clientId: string, seq: number) => `f${SEP}${clientId}${SEP}${hex(seq, 12)}`,
  releases: (clientId: string): KeyRange => ({ gt: `f${SEP}${clientId}${SEP}`, lt: `f${SEP}${clientId}${END}` }),

  inbound: (clientId: string, packetId: number) => `i${SEP}${clientId}${SEP}${hex(packetId, 4)}`,
  inbounds: (clientId: string): KeyRange => ({ gt: `i${SEP}${clientId}${SEP}`, lt: `i${SEP}${clientId}${END}` }),
  packetIdOfInboundKey: (key: string) => parseInt(key.slice(key.length - 4), 16),

  body: (messageId: number) => `m${SEP}${hex(messageId, 12)}`,
  bodies: (): KeyRange => ({ gt: `m${SEP}`, lt: `m${END}` }),
  messageIdOfBodyKey: (key: string) => parseInt(key.slice(2), 16),
  refCount: (messageId: number) => `c${SEP}${hex(messageId, 12)}`,
  isRefCountKey: (key: string) => key.charCodeAt(0) === 0x63 && key.charCodeAt(1) === 0,

  retained: (topic: string) => `r${SEP}${topic}`,
  allRetained: (): KeyRange => ({ gt: `r${SEP}`, lt: `r${END}` }),
  topicOfRetainedKey: (key: string) => key.slice(2),
  retainedIndex: (topic: string) => `t${SEP}${topic}`,
  allRetainedIndex: (): KeyRange => ({ gt: `t${SEP}`, lt: `t${END}` }),
  topicOfRetainedIndexKey: (key: string) => key.slice(2),
};

/** Stored value shapes (short names keep small messages small on disk). */
export interface SessionValue {
  /** When the session was first stored (ms since the epoch). */
  c: number;
  /**
   * When its client last connected or disconnected (ms since the epoch). Absent in records written
   * before it was stored.
   */
  l?: number;
  /** The user name that created the session; absent for an anonymous client and in older records. */
  u?: string;
  /** MQTT 5 Session Expiry Interval, seconds; absent: a 3.1.1 session (persistent_session_expiry applies). */
  e?: number;
}
export interface SubscriptionValue {
  q: 0 | 1 | 2;
  /** MQTT 5 options, each absent when off (as in every 3.1.1 subscription). */
  n?: true;
  a?: true;
  h?: 1 | 2;
  i?: number;
}
/** A message's MQTT 5 properties (see the table above). */
export interface PropertiesValue {
  f?: 0 | 1;
  e?: number;
  c?: string;
  r?: string;
  d?: Uint8Array;
  u?: Array<[string, string]>;
  w?: Uint8Array;
}
export interface QueueEntryValue {
  q: 0 | 1 | 2;
  r: boolean;
  /** Shared body id, when the body lives under m\0, and its payload size (for the queue's byte count). */
  m?: number;
  z?: number;
  /** Inline body, when this entry is the only reference. */
  t?: string;
  p?: Uint8Array;
  o?: 0 | 1 | 2;
  x?: PropertiesValue;
  /** MQTT 5 Subscription Identifiers of this delivery. */
  s?: number[];
  /** The shared subscriptions this delivery was made for (Delivery.shared). */
  g?: string[];
}
export interface QueueStatsValue {
  m: number;
  b: number;
  d: number;
}
export interface DupMarkValue {
  s: number;
  /** Released-through: QoS2 entries at or below this seq had their PUBREC stored; absent: 0. */
  r?: number;
}
export interface ReleaseValue {
  /** Always 2 (released); 1 (sent) belonged to per-message sent records, replaced by the watermark. */
  s: 2;
  i: number;
}
export interface InboundValue {
  a: number;
}
export interface BodyValue {
  t: string;
  p: Uint8Array;
  o: 0 | 1 | 2;
  x?: PropertiesValue;
}
export interface RetainedValue {
  p: Uint8Array;
  o: 0 | 1 | 2;
  x?: PropertiesValue;
}
export interface RetainedIndexValue {
  o: 0 | 1 | 2;
  /** Payload bytes of the retained message. */
  z: number;
}
export interface RetainedTotalsValue {
  m: number;
  b: number;
  /** Retained messages refused at the limits, ever. */
  d: number;
}

/** Shape checks for decoded values, so a corrupt record is reported as such, not as a TypeError. */
type Fields = Record<string, unknown>;
const isObject = (value: unknown): value is Fields => typeof value === 'object' && value !== null && !Array.isArray(value);
const isQoS = (value: unknown): value is 0 | 1 | 2 => value === 0 || value === 1 || value === 2;
const isBytes = (value: unknown): value is Uint8Array => value instanceof Uint8Array;
const isCount = (value: unknown): value is number => Number.isInteger(value) && (value as number) >= 0;

const isString = (value: unknown): value is string => typeof value === 'string';
const isStringPair = (value: unknown): value is [string, string] => Array.isArray(value) && value.length === 2 && isString(value[0]) && isString(value[1]);
const isSubscriptionId = (value: unknown): value is number => isCount(value) && value >= 1 && value <= 268_435_455;

export const isNumber = (value: unknown): value is number => typeof value === 'number';
export const isSessionValue = (value: unknown): value is SessionValue =>
  isObject(value) &&
  isNumber(value.c) &&
  (value.l === undefined || isNumber(value.l)) &&
  (value.u === undefined || typeof value.u === 'string') &&
  (value.e === undefined || (isCount(value.e) && value.e <= 0xffff_ffff));
export const isSubscriptionValue = (value: unknown): value is SubscriptionValue =>
  isObject(value) &&
  isQoS(value.q) &&
  (value.n === undefined || value.n === true) &&
  (value.a === undefined || value.a === true) &&
  (value.h === undefined || value.h === 1 || value.h === 2) &&
  (value.i === undefined || isSubscriptionId(value.i));
export const isPropertiesValue = (value: unknown): value is PropertiesValue =>
  isObject(value) &&
  (value.f === undefined || value.f === 0 || value.f === 1) &&
  (value.e === undefined || isCount(value.e)) &&
  (value.c === undefined || isString(value.c)) &&
  (value.r === undefined || isString(value.r)) &&
  (value.d === undefined || isBytes(value.d)) &&
  (value.u === undefined || (Array.isArray(value.u) && value.u.every(isStringPair))) &&
  (value.w === undefined || (isBytes(value.w) && value.f === undefined && value.c === undefined && value.r === undefined && value.d === undefined && value.u === undefined));
const hasValidProperties = (value: Fields): boolean => value.x === undefined || isPropertiesValue(value.x);
export const isQueueEntryValue = (value: unknown): value is QueueEntryValue =>
  isObject(value) &&
  isQoS(value.q) &&
  typeof value.r === 'boolean' &&
  ((isCount(value.m) && isCount(value.z) && value.x === undefined) || (typeof value.t === 'string' && isBytes(value.p) && isQoS(value.o) && hasValidProperties(value))) &&
  (value.s === undefined || (Array.isArray(value.s) && value.s.length > 0 && value.s.every(isSubscriptionId))) &&
  (value.g === undefined || (Array.isArray(value.g) && value.g.length > 0 && value.g.every((filter) => typeof filter === 'string')));
export const isQueueStatsValue = (value: unknown): value is QueueStatsValue =>
  isObject(value) && isCount(value.m) && isCount(value.b) && isCount(value.d);
export const isDupMarkValue = (value: unknown): value is DupMarkValue => isObject(value) && isCount(value.s) && (value.r === undefined || isCount(value.r));
export const isReleaseValue = (value: unknown): value is ReleaseValue =>
  isObject(value) && value.s === 2 && isCount(value.i) && (value.i as number) <= 65535;
export const isInboundValue = (value: unknown): value is InboundValue => isObject(value) && isNumber(value.a);
export const isBodyValue = (value: unknown): value is BodyValue =>
  isObject(value) && typeof value.t === 'string' && isBytes(value.p) && isQoS(value.o) && hasValidProperties(value);
export const isRetainedValue = (value: unknown): value is RetainedValue =>
  isObject(value) && isBytes(value.p) && isQoS(value.o) && hasValidProperties(value);
export const isRetainedIndexValue = (value: unknown): value is RetainedIndexValue => isObject(value) && isQoS(value.o) && isCount(value.z);
export const isRetainedTotalsValue = (value: unknown): value is RetainedTotalsValue =>
  isObject(value) && isCount(value.m) && isCount(value.b) && isCount(value.d);
export const isRefCount = isCount;

/** How stored values read back; the repository and broker-admin's inspector share these rules. */

export function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** The message of a queue entry that holds its body inline (no shared body id). */
export function inlineMessage(entry: QueueEntryValue): Message {
  const message: Message = { topic: entry.t!, payload: toBuffer(entry.p!), qos: entry.o! };
  if (entry.x !== undefined) message.properties = propertiesOf(entry.x);
  return message;
}

export function bodyMessage(body: BodyValue): Message {
  const message: Message = { topic: body.t, payload: toBuffer(body.p), qos: body.o };
  if (body.x !== undefined) message.properties = propertiesOf(body.x);
  return message;
}

/** The stored form of a message's properties (absent fields stay absent). */
export function propertiesValue(properties: MessageProperties): PropertiesValue {
  const value: PropertiesValue = {};
  if (properties.payloadFormat !== undefined) value.f = properties.payloadFormat;
  if (properties.expiresAt !== undefined) value.e = properties.expiresAt;
  if (properties.contentType !== undefined) value.c = properties.contentType;
  if (properties.responseTopic !== undefined) value.r = properties.responseTopic;
  if (properties.correlationData !== undefined) value.d = properties.correlationData;
  if (properties.userProperties !== undefined) value.u = properties.userProperties;
  if (properties.encoded !== undefined) value.w = properties.encoded;
  return value;
}

export function propertiesOf(value: PropertiesValue): MessageProperties {
  const properties: MessageProperties = {};
  if (value.f !== undefined) properties.payloadFormat = value.f;
  if (value.e !== undefined) properties.expiresAt = value.e;
  if (value.c !== undefined) properties.contentType = value.c;
  if (value.r !== undefined) properties.responseTopic = value.r;
  if (value.d !== undefined) properties.correlationData = toBuffer(value.d);
  if (value.u !== undefined) properties.userProperties = value.u.map(([name, text]) => [name, text]);
  if (value.w !== undefined) properties.encoded = toBuffer(value.w);
  return properties;
}

/** A subscription's stored form: its QoS, and only the options it has. */
export function subscriptionValue(subscription: Subscription): SubscriptionValue {
  const value: SubscriptionValue = { q: subscription.qos };
  if (subscription.noLocal) value.n = true;
  if (subscription.retainAsPublished) value.a = true;
  if (subscription.retainHandling) value.h = subscription.retainHandling;
  if (subscription.identifier !== undefined) value.i = subscription.identifier;
  return value;
}

export function subscriptionOfValue(filter: string, value: SubscriptionValue): Subscription {
  const subscription: Subscription = { filter, qos: value.q };
  if (value.n) subscription.noLocal = true;
  if (value.a) subscription.retainAsPublished = true;
  if (value.h) subscription.retainHandling = value.h;
  if (value.i !== undefined) subscription.identifier = value.i;
  return subscription;
}

/** A session's outbound marks as stored (0 where none is). */
export interface OutboundMarks {
  dup: number;
  releasedThrough: number;
}

export function outboundMarksOf(value: DupMarkValue | undefined): OutboundMarks {
  return value === undefined ? { dup: 0, releasedThrough: 0 } : { dup: value.s, releasedThrough: value.r ?? 0 };
}

/**
 * An entry is released once PUBREC was stored for it (its own record, or a QoS2 entry under the
 * released-through mark), else 'dup' up to the DUP mark, else queued.
 */
export function outboundStateOf(seq: number, qos: QueueEntryValue['q'], marks: OutboundMarks, release: ReleaseValue | undefined): OutboundState {
  if (release || (qos === 2 && seq <= marks.releasedThrough)) return 'released';
  return seq <= marks.dup ? 'dup' : 'queued';
}

/** A key of the layout, taken apart; `malformed`: one of our kinds with parts that do not fit it. */
export type ParsedKey =
  | { kind: 'format' }
  | { kind: 'sync-mark' }
  | { kind: 'retained-totals' }
  | { kind: 'session'; clientId: string }
  | { kind: 'subscription'; clientId: string; filter: string }
  | { kind: 'queue-entry'; clientId: string; seq: number }
  | { kind: 'queue-stats'; clientId: string }
  | { kind: 'dup-mark'; clientId: string }
  | { kind: 'release'; clientId: string; seq: number }
  | { kind: 'inbound'; clientId: string; packetId: number }
  | { kind: 'body'; messageId: number }
  | { kind: 'ref-count'; messageId: number }
  | { kind: 'retained'; topic: string }
  | { kind: 'retained-index'; topic: string }
  | { kind: 'malformed'; expected: string }
  | { kind: 'unknown' };

const HEX12 = /^[0-9a-f]{12}$/;
const HEX4 = /^[0-9a-f]{4}$/;

/** `<kind>\0<client>` with no further part, or undefined. */
function clientOnly(key: string): string | undefined {
  const clientId = key.slice(2);
  return clientId.includes(SEP) ? undefined : clientId;
}

/** [client, number] of `<kind>\0<client>\0<fixed-width hex>`, or undefined. */
function clientAndNumber(key: string, width: 12 | 4): [string, number] | undefined {
  const at = key.length - width - 1;
  if (at < 2 || key[at] !== SEP) return undefined;
  const clientId = key.slice(2, at);
  const digits = key.slice(at + 1);
  if (clientId.includes(SEP) || !(width === 12 ? HEX12 : HEX4).test(digits)) return undefined;
  return [clientId, parseInt(digits, 16)];
}

/** A 12-digit hex message id after `<kind>\0`, or undefined. */
function messageIdOf(key: string): number | undefined {
  const digits = key.slice(2);
  return HEX12.test(digits) ? parseInt(digits, 16) : undefined;
}

/**
 * Takes any key of a store apart. Hot paths use the `keys` accessors on keys they built themselves;
 * this is for keys of unknown origin (verify, inspection, the damage checks).
 */
export function parseKey(key: string): ParsedKey {
  if (key === FORMAT_KEY) return { kind: 'format' };
  if (key === SYNC_MARK_KEY) return { kind: 'sync-mark' };
  if (key === RETAINED_TOTALS_KEY) return { kind: 'retained-totals' };
  if (key[1] !== SEP) return { kind: 'unknown' };
  const malformed = (expected: string): ParsedKey => ({ kind: 'malformed', expected });
  switch (key[0]) {
    case 's':
      return { kind: 'session', clientId: key.slice(2) };
    case 'b': {
      const at = key.indexOf(SEP, 2);
      return at < 0 ? malformed('b\\0<client>\\0<filter>') : { kind: 'subscription', clientId: key.slice(2, at), filter: key.slice(at + 1) };
    }
    case 'q': {
      const parts = clientAndNumber(key, 12);
      return parts ? { kind: 'queue-entry', clientId: parts[0], seq: parts[1] } : malformed('q\\0<client>\\0<12 hex digits>');
    }
    case 'f': {
      const parts = clientAndNumber(key, 12);
      return parts ? { kind: 'release', clientId: parts[0], seq: parts[1] } : malformed('f\\0<client>\\0<12 hex digits>');
    }
    case 'i': {
      const parts = clientAndNumber(key, 4);
      return parts ? { kind: 'inbound', clientId: parts[0], packetId: parts[1] } : malformed('i\\0<client>\\0<4 hex digits>');
    }
    case 'n': {
      const clientId = clientOnly(key);
      return clientId === undefined ? malformed('n\\0<client>') : { kind: 'queue-stats', clientId };
    }
    case 'w': {
      const clientId = clientOnly(key);
      return clientId === undefined ? malformed('w\\0<client>') : { kind: 'dup-mark', clientId };
    }
    case 'm': {
      const messageId = messageIdOf(key);
      return messageId === undefined ? malformed('m\\0<12 hex digits>') : { kind: 'body', messageId };
    }
    case 'c': {
      const messageId = messageIdOf(key);
      return messageId === undefined ? malformed('c\\0<12 hex digits>') : { kind: 'ref-count', messageId };
    }
    case 'r':
      return { kind: 'retained', topic: key.slice(2) };
    case 't':
      return { kind: 'retained-index', topic: key.slice(2) };
    default:
      return { kind: 'unknown' };
  }
}

/** Whether a key has the shape of this layout's keys (the test for "broker data" in a store without its marker). */
export function isBrokerKey(key: string): boolean {
  return parseKey(key).kind !== 'unknown';
}
