import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import { BrokerError, ErrorCodes } from '../errors.js';
import { decode } from './codec.js';
import {
  FORMAT_KEY,
  FORMAT_VERSION,
  isBodyValue,
  isFlightValue,
  isInboundValue,
  isNumber,
  isQueueEntryValue,
  isQueueStatsValue,
  isRetainedValue,
  isSentThroughValue,
  isSessionValue,
  isSubscriptionValue,
  bodyMessage,
  inlineMessage,
  keys,
  outboundStateOf,
  toBuffer,
  type QueueEntryValue,
  type SessionValue,
} from './key-layout.js';
import type { Message, OutboundState, QoS, RetainedMessage, Subscription } from './repository.js';
import { verifyStore, type VerifyEvent } from './level-verify.js';
import { checkStoreFiles, isStoreDamage } from './store-damage.js';

/**
 * Read-only access to the raw LevelDB store, for broker-admin. Everything it shows is read
 * through here, so a change of key layout touches the store layer only.
 *
 * Reads go through an explicit LevelDB snapshot (`view()`): every transition is one atomic batch,
 * so a view of a running broker is a consistent state, never a torn read. Everything streams
 * (async iterators over key ranges): a queue is never loaded whole into memory.
 */

export type LevelDb = ClassicLevel<string, Uint8Array>;
type Snapshot = ReturnType<LevelDb['snapshot']>;

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
}

export interface InspectedEntry {
  seq: number;
  message: Message;
  /** QoS of this delivery. */
  qos: QoS;
  retain: boolean;
  state: OutboundState;
  /** Stored for 'released' entries only; a 'sent' entry's packet id is derived from its seq by the session layer. */
  packetId?: number;
  /** Id of the shared body (m\0…) when the message is stored once for several sessions. */
  sharedBody?: number;
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

export interface FormatStatus {
  present: boolean;
  version?: number;
  supported: boolean;
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

/** Opens a stopped broker's store for reading: never creates it, never writes a key. */
export async function openStoreForInspection(location: string, options: { requireFormat?: boolean } = {}): Promise<LevelInspector> {
  // Damage LevelDB's recovery would "repair" by dropping data is reported, not repaired.
  checkStoreFiles(location);
  // LevelDB writes CURRENT when it creates a database: no CURRENT, no database. Checked first so
  // that a wrong directory is left exactly as it was.
  if (!existsSync(join(location, 'CURRENT'))) {
    throw new BrokerError(ErrorCodes.STORE_NOT_A_BROKER_STORE, `there is no broker store at ${location}`);
  }
  const db: LevelDb = new ClassicLevel<string, Uint8Array>(location, {
    keyEncoding: 'utf8',
    valueEncoding: 'view',
    createIfMissing: false,
  });
  try {
    await db.open();
  } catch (error) {
    const cause = (error as { cause?: { code?: string } }).cause;
    if (cause?.code === 'LEVEL_LOCKED') {
      throw new BrokerError(ErrorCodes.STORE_LOCKED, `the store at ${location} is in use by another process`, { cause: error });
    }
    // LevelDB's own words are in the cause ("Database failed to open" says nothing).
    const detail = (error as { cause?: { message?: string } }).cause?.message ?? String(error);
    if (isStoreDamage(error)) {
      throw new BrokerError(ErrorCodes.STORE_CORRUPT, `the store at ${location} is damaged: LevelDB reports "${detail}"`, { cause: error });
    }
    throw new BrokerError(ErrorCodes.STORE_OPEN_FAILED, `cannot open the store at ${location}: ${detail}`, { cause: error });
  }
  const inspector = new LevelInspector(db, { owned: true });
  if (options.requireFormat ?? true) {
    try {
      await inspector.requireFormat(location);
    } catch (error) {
      await inspector.close();
      throw error;
    }
  }
  return inspector;
}

export class LevelInspector {
  readonly #db: LevelDb;
  readonly #owned: boolean;

  /** `owned`: close() closes the database too (stopped mode); a running broker's stays open. */
  constructor(db: LevelDb, options: { owned: boolean } = { owned: false }) {
    this.#db = db;
    this.#owned = options.owned;
  }

  /** A consistent, read-only view of the store as it is now; close it when done. */
  view(): StoreView {
    return new StoreView(this.#db, this.#db.snapshot());
  }

  async requireFormat(location: string): Promise<void> {
    const view = this.view();
    try {
      const format = await view.format();
      if (!format.present) {
        throw new BrokerError(
          ErrorCodes.STORE_NOT_A_BROKER_STORE,
          `${location} holds a LevelDB database that is not a broker store (no format marker)`,
        );
      }
      if (!format.supported) {
        throw new BrokerError(
          ErrorCodes.STORE_UNSUPPORTED_FORMAT,
          `${location} has store format ${String(format.version)}; this broker reads format ${FORMAT_VERSION}`,
        );
      }
    } finally {
      await view.close();
    }
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
  readonly #db: LevelDb;
  readonly #snapshot: Snapshot;
  #closed = false;

  constructor(db: LevelDb, snapshot: Snapshot) {
    this.#db = db;
    this.#snapshot = snapshot;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#snapshot.close();
  }

  async format(): Promise<FormatStatus> {
    const bytes = await this.#get(FORMAT_KEY);
    if (bytes === undefined) return { present: false, supported: false };
    const version = decode(bytes, FORMAT_KEY, isNumber);
    return { present: true, version, supported: version === FORMAT_VERSION };
  }

  async *sessions(): AsyncGenerator<InspectedSession> {
    for await (const [key, value] of this.#range(keys.sessions())) {
      yield inspectedSession(keys.clientIdOfSession(key), decode(value, key, isSessionValue));
    }
  }

  async session(clientId: string): Promise<InspectedSession | undefined> {
    const key = keys.session(clientId);
    const bytes = await this.#get(key);
    return bytes === undefined ? undefined : inspectedSession(clientId, decode(bytes, key, isSessionValue));
  }

  async *subscriptions(clientId: string): AsyncGenerator<Subscription> {
    for await (const [key, value] of this.#range(keys.subscriptions(clientId))) {
      yield { filter: keys.splitSubscription(key)[1], qos: decode(value, key, isSubscriptionValue).q };
    }
  }

  /** Outbound QoS 2 entries released by PUBREC, in seq order. */
  async *releases(clientId: string): AsyncGenerator<InspectedRelease> {
    for await (const [key, value] of this.#range(keys.flights(clientId))) {
      yield { seq: keys.seqOfQueueKey(key), packetId: decode(value, key, isFlightValue).i };
    }
  }

  /** The session's stored queue counters; undefined when none are stored. */
  async queueStats(clientId: string): Promise<InspectedQueueStats | undefined> {
    const key = keys.queueStats(clientId);
    const bytes = await this.#get(key);
    if (bytes === undefined) return undefined;
    const { m, b, d } = decode(bytes, key, isQueueStatsValue);
    return { messages: m, bytes: b, dropped: d };
  }

  /** Entries up to this seq have been sent (0: none). */
  async sentThrough(clientId: string): Promise<number> {
    const key = keys.sentThrough(clientId);
    const bytes = await this.#get(key);
    return bytes === undefined ? 0 : decode(bytes, key, isSentThroughValue).s;
  }

  /**
   * The outbound queue in seq order, with each entry's message and state. `inflightOnly`: only the
   * entries sent and not yet acknowledged (few: at most the in-flight window).
   */
  async *queue(clientId: string, options: { inflightOnly?: boolean } = {}): AsyncGenerator<InspectedEntry> {
    const sentThrough = await this.sentThrough(clientId);
    // Released entries are few (at most the in-flight window), so they are read first.
    const releases = new Map<number, number>();
    for await (const { seq, packetId } of this.releases(clientId)) releases.set(seq, packetId);
    const range = options.inflightOnly
      ? { gt: keys.queue(clientId).gt, lte: keys.queueEntry(clientId, sentThrough) }
      : keys.queue(clientId);
    if (options.inflightOnly && sentThrough === 0) return;
    const bodies = new BodyCache((id) => this.#body(id));
    for await (const [key, value] of this.#db.iterator({ ...range, snapshot: this.#snapshot })) {
      const seq = keys.seqOfQueueKey(key);
      const stored = decode(value, key, isQueueEntryValue);
      const packetId = releases.get(seq);
      const entry: InspectedEntry = {
        seq,
        message: await this.#message(stored, key, bodies),
        qos: stored.q,
        retain: stored.r,
        state: outboundStateOf(seq, sentThrough, packetId === undefined ? undefined : { s: 2, i: packetId }),
        ...(packetId === undefined ? {} : { packetId }),
      };
      if (stored.m !== undefined) entry.sharedBody = stored.m;
      yield entry;
    }
  }

  async *inbound(clientId: string): AsyncGenerator<InspectedInbound> {
    for await (const [key, value] of this.#range(keys.inbounds(clientId))) {
      yield { packetId: keys.packetIdOfInboundKey(key), receivedAt: decode(value, key, isInboundValue).a };
    }
  }

  async *retained(): AsyncGenerator<RetainedMessage> {
    for await (const [key, value] of this.#range(keys.allRetained())) {
      const { p, o } = decode(value, key, isRetainedValue);
      yield { topic: keys.topicOfRetainedKey(key), payload: toBuffer(p), qos: o };
    }
  }

  async retainedMessage(topic: string): Promise<RetainedMessage | undefined> {
    const key = keys.retained(topic);
    const bytes = await this.#get(key);
    if (bytes === undefined) return undefined;
    const { p, o } = decode(bytes, key, isRetainedValue);
    return { topic, payload: toBuffer(p), qos: o };
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
    // Queue keys of one client are contiguous: its watermark is read once per client.
    let watermarkClient: string | undefined;
    let watermark = 0;
    for await (const [key, value] of this.#db.iterator({ snapshot: this.#snapshot })) {
      totals.keys++;
      totals.keyBytes += Buffer.byteLength(key);
      totals.valueBytes += value.byteLength;
      if (totals.keys % 1000 === 0) progress?.(totals.keys);
      switch (key[0]) {
        case 's':
          totals.sessions++;
          break;
        case 'b':
          totals.subscriptions++;
          break;
        case 'i':
          totals.inbound++;
          break;
        case 'm':
          totals.sharedBodies++;
          break;
        case 'q': {
          const stored = decode(value, key, isQueueEntryValue);
          totals.queued++;
          totals.queuedBytes += (await this.#message(stored, key, bodies)).payload.byteLength;
          const clientId = key.slice(2, key.length - 13);
          if (clientId !== watermarkClient) {
            watermarkClient = clientId;
            watermark = await this.sentThrough(clientId);
          }
          if (keys.seqOfQueueKey(key) <= watermark) totals.inflight++;
          break;
        }
        case 'r':
          totals.retained++;
          totals.retainedBytes += decode(value, key, isRetainedValue).p.byteLength;
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
    return bodyMessage(decode(bytes, key, isBodyValue));
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

function inspectedSession(clientId: string, { c, l, u }: SessionValue): InspectedSession {
  return { clientId, createdAt: c, ...(l === undefined ? {} : { lastSeen: l }), ...(u === undefined ? {} : { owner: u }) };
}
