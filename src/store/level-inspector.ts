import { BrokerError, ErrorCodes } from '../errors.js';
import { decodeFormat1, decodeRecord, type RecordDecoder } from './codec.js';
import {
  isBodyValue,
  isReleaseValue,
  isInboundValue,
  isQueueEntryValue,
  isQueueStatsValue,
  isRetainedValue,
  isDupMarkValue,
  isSessionValue,
  isSubscriptionValue,
  bodyMessage,
  inlineMessage,
  keys,
  outboundMarksOf,
  outboundStateOf,
  type OutboundMarks,
  parseKey,
  propertiesOf,
  subscriptionOfValue,
  toBuffer,
  type QueueEntryValue,
  type SessionValue,
} from './key-layout.js';
import type { Message, OutboundState, QoS, RetainedMessage, Subscription } from './model.js';
import { verifyStore, type VerifyEvent } from './level-verify.js';
import type { LevelDatabase } from './level-database.js';
import { openLevelStore, readFormat } from './store-opening.js';

/**
 * Read-only access to the raw LevelDB store, for broker-admin. Everything it shows is read
 * through here, so a change of key layout touches the store layer only.
 *
 * Reads go through an explicit LevelDB snapshot (`view()`): every transition is one atomic batch,
 * so a view of a running broker is a consistent state, never a torn read. Everything streams
 * (async iterators over key ranges): a queue is never loaded whole into memory.
 */

type Snapshot = ReturnType<LevelDatabase['snapshot']>;

export interface InspectedSession {
  clientId: string;
  /** Milliseconds since the epoch: when the persistent session was first stored. */
  createdAt: number;
  /**
   * Milliseconds since the epoch: when its client last connected or disconnected; undefined for a
   * record written before last-seen was stored.
   */
  lastSeen?: number;
  /** The user name that created the session; undefined for an anonymous client or an older record. */
  owner?: string;
  /** MQTT 5 Session Expiry Interval, seconds; undefined when none is stored (a 3.1.1 session). */
  expiry?: number;
}

export interface InspectedEntry {
  seq: number;
  message: Message;
  /** QoS of this delivery. */
  qos: QoS;
  retain: boolean;
  state: OutboundState;
  /**
   * Stored for 'released' entries with a release record only; the packet id of a 'dup' entry, and
   * of one released under the released-through mark, is derived from its seq by the session layer.
   */
  packetId?: number;
  /** Id of the shared body (m\0…) when the message is stored once for several sessions. */
  sharedBody?: number;
  /** MQTT 5 Subscription Identifiers of this delivery. */
  subscriptionIds?: number[];
  /** The shared subscriptions (`$share/...`) this delivery was made for. */
  shared?: string[];
}

/** An outbound QoS 2 entry whose PUBREC arrived: PUBREL sent, awaiting PUBCOMP. */
export interface InspectedRelease {
  seq: number;
  packetId: number;
}

/** A session's stored queue counters. */
export interface InspectedQueueStats {
  /** Entries in the queue, in flight included. */
  messages: number;
  /** Their payload bytes. */
  bytes: number;
  /** Messages refused because the queue was full, since the session was created. */
  dropped: number;
}

export interface InspectedInbound {
  packetId: number;
  receivedAt: number;
}

/** Counts and sizes of a whole store. */
export interface StoreTotals {
  sessions: number;
  subscriptions: number;
  /** Outbound entries still stored, those in flight included. */
  queued: number;
  /** Payload bytes of those entries (a shared body counts once per entry). */
  queuedBytes: number;
  /** Outbound entries sent and not yet acknowledged. */
  inflight: number;
  inbound: number;
  sharedBodies: number;
  retained: number;
  retainedBytes: number;
  keys: number;
  keyBytes: number;
  valueBytes: number;
}

/** The whole key space: every key of the layout is ASCII-led UTF-8, so 0xFF sorts after it. */
const ALL = { start: Buffer.alloc(0), end: Buffer.from([0xff]) };

/**
 * Opens a stopped broker's store for reading: never creates it, never writes a key. Without
 * `requireFormat` (verify), a store whose format marker is missing or unknown opens too, so that
 * verify can report it with everything else.
 */
export async function openStoreForInspection(location: string, options: { requireFormat?: boolean } = {}): Promise<LevelInspector> {
  const db = await openLevelStore(location, { purpose: 'inspect', skipFormatCheck: !(options.requireFormat ?? true) });
  // A store of the previous format is read as it is: its values are plain msgpack, without a check.
  const previous = options.requireFormat !== false && (await readFormat(db)).kind === 'previous';
  return new LevelInspector(db, { owned: true, decode: previous ? decodeFormat1 : decodeRecord });
}

export class LevelInspector {
  readonly #db: LevelDatabase;
  readonly #owned: boolean;
  readonly #decode: RecordDecoder;

  /**
   * `owned`: close() closes the database too (stopped mode); a running broker's stays open.
   * `decode`: how its values read (default: checked records, the current format).
   */
  constructor(db: LevelDatabase, options: { owned: boolean; decode?: RecordDecoder } = { owned: false }) {
    this.#db = db;
    this.#owned = options.owned;
    this.#decode = options.decode ?? decodeRecord;
  }

  /** A consistent, read-only view of the store as it is now; close it when done. */
  view(): StoreView {
    return new StoreView(this.#db, this.#db.snapshot(), this.#decode);
  }

  /** Approximate bytes the store takes on disk. */
  diskBytes(): Promise<number> {
    return this.#db.approximateSize(ALL.start, ALL.end, { keyEncoding: 'buffer' });
  }

  /** Compacts the whole key space (LevelDB rewrites its tables; the content does not change). */
  compact(): Promise<void> {
    return this.#db.compactRange(ALL.start, ALL.end, { keyEncoding: 'buffer' });
  }

  async close(): Promise<void> {
    if (this.#owned) await this.#db.close();
  }
}

/** Reads of one snapshot. */
export class StoreView {
  readonly #db: LevelDatabase;
  readonly #snapshot: Snapshot;
  readonly #decode: RecordDecoder;
  #closed = false;

  constructor(db: LevelDatabase, snapshot: Snapshot, decodeValue: RecordDecoder = decodeRecord) {
    this.#db = db;
    this.#snapshot = snapshot;
    this.#decode = decodeValue;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#snapshot.close();
  }

  async *sessions(): AsyncGenerator<InspectedSession> {
    for await (const [key, value] of this.#range(keys.sessions())) {
      yield inspectedSession(keys.clientIdOfSession(key), this.#decode(value, key, isSessionValue));
    }
  }

  async session(clientId: string): Promise<InspectedSession | undefined> {
    const key = keys.session(clientId);
    const bytes = await this.#get(key);
    return bytes === undefined ? undefined : inspectedSession(clientId, this.#decode(bytes, key, isSessionValue));
  }

  async *subscriptions(clientId: string): AsyncGenerator<Subscription> {
    for await (const [key, value] of this.#range(keys.subscriptions(clientId))) {
      yield subscriptionOfValue(keys.splitSubscription(key)[1], this.#decode(value, key, isSubscriptionValue));
    }
  }

  /** Outbound QoS 2 entries released by PUBREC, in seq order. */
  async *releases(clientId: string): AsyncGenerator<InspectedRelease> {
    for await (const [key, value] of this.#range(keys.releases(clientId))) {
      yield { seq: keys.seqOfQueueKey(key), packetId: this.#decode(value, key, isReleaseValue).i };
    }
  }

  /** The session's stored queue counters; undefined when none are stored. */
  async queueStats(clientId: string): Promise<InspectedQueueStats | undefined> {
    const key = keys.queueStats(clientId);
    const bytes = await this.#get(key);
    if (bytes === undefined) return undefined;
    const { m, b, d } = this.#decode(bytes, key, isQueueStatsValue);
    return { messages: m, bytes: b, dropped: d };
  }

  /** The session's DUP mark: entries up to this seq were sent, or marked so just before being sent (0: none). */
  async dupMark(clientId: string): Promise<number> {
    return (await this.outboundMarks(clientId)).dup;
  }

  /** The DUP mark, and the released-through mark: QoS 2 entries up to it had their PUBREC (0: none). */
  async outboundMarks(clientId: string): Promise<OutboundMarks> {
    const key = keys.dupMark(clientId);
    const bytes = await this.#get(key);
    return outboundMarksOf(bytes === undefined ? undefined : this.#decode(bytes, key, isDupMarkValue));
  }

  /**
   * The outbound queue in seq order, with each entry's message and state. `inflightOnly`: only the
   * entries sent and not yet acknowledged (few: at most the in-flight window).
   */
  async *queue(clientId: string, options: { inflightOnly?: boolean } = {}): AsyncGenerator<InspectedEntry> {
    const marks = await this.outboundMarks(clientId);
    const dupMark = marks.dup;
    // Released entries with records of their own are few (at most the in-flight window), so they are read first.
    const releases = new Map<number, number>();
    for await (const { seq, packetId } of this.releases(clientId)) releases.set(seq, packetId);
    const range = options.inflightOnly
      ? { gt: keys.queue(clientId).gt, lte: keys.queueEntry(clientId, dupMark) }
      : keys.queue(clientId);
    if (options.inflightOnly && dupMark === 0) return;
    const bodies = new BodyCache((id) => this.#body(id));
    for await (const [key, value] of this.#db.iterator({ ...range, snapshot: this.#snapshot })) {
      const seq = keys.seqOfQueueKey(key);
      const stored = this.#decode(value, key, isQueueEntryValue);
      const packetId = releases.get(seq);
      const entry: InspectedEntry = {
        seq,
        message: await this.#message(stored, key, bodies),
        qos: stored.q,
        retain: stored.r,
        state: outboundStateOf(seq, stored.q, marks, packetId === undefined ? undefined : { s: 2, i: packetId }),
        ...(packetId === undefined ? {} : { packetId }),
      };
      if (stored.m !== undefined) entry.sharedBody = stored.m;
      if (stored.s !== undefined) entry.subscriptionIds = stored.s;
      if (stored.g !== undefined) entry.shared = stored.g;
      yield entry;
    }
  }

  async *inbound(clientId: string): AsyncGenerator<InspectedInbound> {
    for await (const [key, value] of this.#range(keys.inbounds(clientId))) {
      yield { packetId: keys.packetIdOfInboundKey(key), receivedAt: this.#decode(value, key, isInboundValue).a };
    }
  }

  async *retained(): AsyncGenerator<RetainedMessage> {
    for await (const [key, value] of this.#range(keys.allRetained())) {
      const { p, o, x } = this.#decode(value, key, isRetainedValue);
      yield { topic: keys.topicOfRetainedKey(key), payload: toBuffer(p), qos: o, ...(x === undefined ? {} : { properties: propertiesOf(x) }) };
    }
  }

  async retainedMessage(topic: string): Promise<RetainedMessage | undefined> {
    const key = keys.retained(topic);
    const bytes = await this.#get(key);
    if (bytes === undefined) return undefined;
    const { p, o, x } = this.#decode(bytes, key, isRetainedValue);
    return { topic, payload: toBuffer(p), qos: o, ...(x === undefined ? {} : { properties: propertiesOf(x) }) };
  }

  /** Counts and sizes of the whole store, in one pass; `progress` gets the number of keys read so far. */
  async totals(progress?: (keysRead: number) => void): Promise<StoreTotals> {
    const totals: StoreTotals = {
      sessions: 0,
      subscriptions: 0,
      queued: 0,
      queuedBytes: 0,
      inflight: 0,
      inbound: 0,
      sharedBodies: 0,
      retained: 0,
      retainedBytes: 0,
      keys: 0,
      keyBytes: 0,
      valueBytes: 0,
    };
    const bodies = new BodyCache((id) => this.#body(id));
    // Queue keys of one client are contiguous: its DUP mark is read once per client.
    let dupMarkClient: string | undefined;
    let dupMark = 0;
    for await (const [key, value] of this.#db.iterator({ snapshot: this.#snapshot })) {
      totals.keys++;
      totals.keyBytes += Buffer.byteLength(key);
      totals.valueBytes += value.byteLength;
      if (totals.keys % 1000 === 0) progress?.(totals.keys);
      const parsed = parseKey(key);
      switch (parsed.kind) {
        case 'session':
          totals.sessions++;
          break;
        case 'subscription':
          totals.subscriptions++;
          break;
        case 'inbound':
          totals.inbound++;
          break;
        case 'body':
          totals.sharedBodies++;
          break;
        case 'queue-entry': {
          const stored = this.#decode(value, key, isQueueEntryValue);
          totals.queued++;
          totals.queuedBytes += (await this.#message(stored, key, bodies)).payload.byteLength;
          if (parsed.clientId !== dupMarkClient) {
            dupMarkClient = parsed.clientId;
            dupMark = await this.dupMark(parsed.clientId);
          }
          if (parsed.seq <= dupMark) totals.inflight++;
          break;
        }
        case 'retained':
          totals.retained++;
          totals.retainedBytes += this.#decode(value, key, isRetainedValue).p.byteLength;
          break;
      }
    }
    progress?.(totals.keys);
    return totals;
  }

  /** Checks every invariant of the key layout; see level-verify.ts. */
  verify(progress?: (keysRead: number) => void): AsyncGenerator<VerifyEvent> {
    return verifyStore(
      {
        entries: () => this.#db.iterator({ snapshot: this.#snapshot }),
        get: (key) => this.#get(key),
      },
      progress,
    );
  }

  async #message(stored: QueueEntryValue, key: string, bodies: BodyCache): Promise<Message> {
    if (stored.m === undefined) return inlineMessage(stored);
    const body = await bodies.get(stored.m);
    if (!body) {
      throw new BrokerError(ErrorCodes.STORE_CORRUPT_RECORD, `store record ${JSON.stringify(key)} references missing message ${stored.m}`);
    }
    return body;
  }

  async #body(id: number): Promise<Message | undefined> {
    const key = keys.body(id);
    const bytes = await this.#get(key);
    if (bytes === undefined) return undefined;
    return bodyMessage(this.#decode(bytes, key, isBodyValue));
  }

  #range(range: { gt: string; lt: string }) {
    return this.#db.iterator({ ...range, snapshot: this.#snapshot });
  }

  #get(key: string): Promise<Uint8Array | undefined> {
    return this.#db.get(key, { snapshot: this.#snapshot });
  }
}

/** The last few shared bodies read: entries of one fan-out sit close together in a queue. */
class BodyCache {
  static readonly SIZE = 64;
  readonly #load: (id: number) => Promise<Message | undefined>;
  readonly #cache = new Map<number, Message | undefined>();

  constructor(load: (id: number) => Promise<Message | undefined>) {
    this.#load = load;
  }

  async get(id: number): Promise<Message | undefined> {
    if (this.#cache.has(id)) return this.#cache.get(id);
    const body = await this.#load(id);
    if (this.#cache.size >= BodyCache.SIZE) this.#cache.delete(this.#cache.keys().next().value!);
    this.#cache.set(id, body);
    return body;
  }
}

function inspectedSession(clientId: string, { c, l, u, e }: SessionValue): InspectedSession {
  return { clientId, createdAt: c, ...(l === undefined ? {} : { lastSeen: l }), ...(u === undefined ? {} : { owner: u }), ...(e === undefined ? {} : { expiry: e }) };
}
