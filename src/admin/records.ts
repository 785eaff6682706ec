/**
 * The records broker-admin prints with `--json` (one JSON object per line, NDJSON) and the running
 * broker streams over its admin socket. This is a stable, documented schema (README,
 * "Administration"): fields are only ever added in a new schema version, never renamed or removed
 * within one.
 */

import type { BrokerCounters } from '../protocol/limits.js';

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
  subscriptions: SubscriptionField[];
  /** Every outbound entry still stored (waiting or in flight) and their payload bytes. */
  queued: { count: number; bytes: number };
  /** Messages refused for this session because its queue was full (queue limits), since it was created. */
  dropped: number;
  inflight: InflightField[];
  /** Inbound QoS 2 packet ids received (PUBREC sent) and awaiting PUBREL. */
  inbound: InboundField[];
}

export interface MessageRecord {
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
}

export interface RetainedRecord {
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
