import { mkdirSync } from 'node:fs';
import { ClassicLevel } from 'classic-level';
import { BrokerError, ErrorCodes } from '../errors.js';
import { decode, encode } from './codec.js';
import { GroupCommitWriter, type BatchBuilder } from './group-commit.js';
import {
  FORMAT_KEY,
  FORMAT_VERSION,
  isBodyValue,
  isFlightValue,
  isNumber,
  isQueueEntryValue,
  isRefCount,
  isRetainedValue,
  isSessionValue,
  isSubscriptionValue,
  keys,
  type BodyValue,
  type FlightValue,
  type QueueEntryValue,
  type RetainedValue,
  type SessionValue,
  type SubscriptionValue,
} from './key-layout.js';
import type {
  Message,
  OutboundEntry,
  PublishTransition,
  RetainedMessage,
  SessionRepository,
  StoredSession,
  Subscription,
} from './repository.js';

export interface LevelRepositoryOptions {
  /** Directory of the LevelDB store. */
  location: string;
  /**
   * true (default): every batch is fsynced before its transitions resolve, so whatever the broker
   * acknowledged survives a crash or power cut. false: the OS flushes when it likes; a crash of
   * the machine (not of the process) can lose recently acknowledged messages.
   */
  sync?: boolean;
}

type Db = ClassicLevel<string, Uint8Array>;

/** The durable repository: LevelDB, msgpack values, one atomic batch per group of transitions. */
export class LevelRepository implements SessionRepository {
  readonly #location: string;
  readonly #sync: boolean;
  #db: Db | undefined;
  #writer: GroupCommitWriter | undefined;
  /** Next outbound seq per stored session; also the set of sessions that exist. */
  readonly #nextSeq = new Map<string, number>();
  #nextMessageId = 1;

  constructor(options: LevelRepositoryOptions) {
    this.#location = options.location;
    this.#sync = options.sync ?? true;
  }

  async open(): Promise<void> {
    mkdirSync(this.#location, { recursive: true });
    const db: Db = new ClassicLevel<string, Uint8Array>(this.#location, {
      keyEncoding: 'utf8',
      valueEncoding: 'view',
    });
    try {
      await db.open();
    } catch (error) {
      throw openError(this.#location, error);
    }
    try {
      await checkFormat(db, this.#location);
      await this.#loadCounters(db);
    } catch (error) {
      await db.close();
      throw error;
    }
    this.#db = db;
    this.#writer = new GroupCommitWriter(db, { sync: this.#sync });
  }

  async close(): Promise<void> {
    const db = this.#db;
    if (!db) return;
    await this.#writer?.close();
    this.#db = undefined;
    this.#writer = undefined;
    this.#nextSeq.clear();
    await db.close();
  }

  async loadSessions(): Promise<StoredSession[]> {
    const db = this.#open();
    const sessions = new Map<string, StoredSession>();
    for await (const key of db.keys(keys.sessions())) {
      const clientId = keys.clientIdOfSession(key);
      sessions.set(clientId, { clientId, subscriptions: [] });
    }
    for await (const [key, value] of db.iterator(keys.allSubscriptions())) {
      const [clientId, filter] = keys.splitSubscription(key);
      const { q } = decode(value, key, isSubscriptionValue);
      sessions.get(clientId)?.subscriptions.push({ filter, qos: q });
    }
    return [...sessions.values()];
  }

  async loadRetained(): Promise<RetainedMessage[]> {
    const db = this.#open();
    const retained: RetainedMessage[] = [];
    for await (const [key, value] of db.iterator(keys.allRetained())) {
      const { p, o } = decode(value, key, isRetainedValue);
      retained.push({ topic: keys.topicOfRetainedKey(key), payload: toBuffer(p), qos: o });
    }
    return retained;
  }

  async readOutbound(clientId: string, afterSeq: number, limit: number): Promise<OutboundEntry[]> {
    const db = this.#open();
    const rows = await db.iterator({ ...keys.queueAfter(clientId, afterSeq), limit }).all();
    if (rows.length === 0) return [];
    const seqs = rows.map(([key]) => keys.seqOfQueueKey(key));
    const flights = await db.getMany(seqs.map((seq) => keys.flight(clientId, seq)));
    const values = rows.map(([key, value]) => decode(value, key, isQueueEntryValue));
    const bodyIds = values.flatMap((value) => (value.m === undefined ? [] : [value.m]));
    const bodies = new Map<number, Message>();
    if (bodyIds.length > 0) {
      const found = await db.getMany(bodyIds.map((id) => keys.body(id)));
      bodyIds.forEach((id, index) => {
        const bytes = found[index];
        if (bytes === undefined) {
          throw new BrokerError(ErrorCodes.STORE_CORRUPT_RECORD, `queue of ${clientId} references missing message ${id}`);
        }
        const body = decode(bytes, keys.body(id), isBodyValue);
        bodies.set(id, { topic: body.t, payload: toBuffer(body.p), qos: body.o });
      });
    }
    return values.map((value, index) => {
      const seq = seqs[index]!;
      const message: Message =
        value.m === undefined ? { topic: value.t!, payload: toBuffer(value.p!), qos: value.o! } : bodies.get(value.m)!;
      const flightBytes = flights[index];
      const entry: OutboundEntry = { seq, message, qos: value.q, retain: value.r, state: 'queued' };
      if (flightBytes !== undefined) {
        const flight = decode(flightBytes, keys.flight(clientId, seq), isFlightValue);
        entry.state = flight.s === 1 ? 'sent' : 'released';
        entry.packetId = flight.i;
      }
      return entry;
    });
  }

  async loadInbound(clientId: string): Promise<number[]> {
    const db = this.#open();
    const ids: number[] = [];
    for await (const key of db.keys(keys.inbounds(clientId))) ids.push(keys.packetIdOfInboundKey(key));
    return ids;
  }

  async createSession(clientId: string): Promise<void> {
    const writer = this.#openWriter();
    if (!this.#nextSeq.has(clientId)) this.#nextSeq.set(clientId, 1);
    await writer.submit({
      prepare: (batch) => {
        if (batch.get(keys.session(clientId), isSessionValue) === undefined) {
          batch.put(keys.session(clientId), { c: Date.now() } satisfies SessionValue);
        }
      },
    });
  }

  async destroySession(clientId: string): Promise<void> {
    const writer = this.#openWriter();
    this.#nextSeq.delete(clientId);
    await writer.submit({
      exclusive: true,
      prepare: async (batch) => {
        batch.del(keys.session(clientId));
        for (const key of await batch.keysIn(keys.subscriptions(clientId))) batch.del(key);
        for (const key of await batch.keysIn(keys.inbounds(clientId))) batch.del(key);
        for (const key of await batch.keysIn(keys.flights(clientId))) batch.del(key);
        for (const key of await batch.keysIn(keys.queue(clientId))) removeQueueEntry(batch, key);
      },
    });
  }

  async subscribe(clientId: string, subscriptions: Subscription[]): Promise<void> {
    const writer = this.#openWriter();
    this.#requireSession(clientId);
    await writer.submit({
      prepare: (batch) => {
        for (const { filter, qos } of subscriptions) {
          batch.put(keys.subscription(clientId, filter), { q: qos } satisfies SubscriptionValue);
        }
      },
    });
  }

  async unsubscribe(clientId: string, filters: string[]): Promise<void> {
    const writer = this.#openWriter();
    this.#requireSession(clientId);
    await writer.submit({
      prepare: (batch) => {
        for (const filter of filters) batch.del(keys.subscription(clientId, filter));
      },
    });
  }

  async publish(transition: PublishTransition): Promise<Map<string, number>> {
    const writer = this.#openWriter();
    const { message, deliveries, retained, inbound } = transition;
    // Seqs and the message id are taken now, synchronously, so commit order is seq order.
    const seqs = new Map<string, number>();
    for (const { clientId } of deliveries) {
      if (seqs.has(clientId)) throw new Error(`publish delivers twice to ${clientId}`);
      seqs.set(clientId, this.#takeSeq(clientId));
    }
    if (inbound) this.#requireSession(inbound.clientId);
    const shared = deliveries.length > 1;
    const messageId = shared ? this.#nextMessageId++ : 0;
    await writer.submit({
      prepare: (batch) => {
        if (shared) {
          batch.put(keys.body(messageId), { t: message.topic, p: message.payload, o: message.qos } satisfies BodyValue);
          batch.put(keys.refCount(messageId), deliveries.length);
        }
        for (const { clientId, qos, retain } of deliveries) {
          const entry: QueueEntryValue = shared
            ? { q: qos, r: retain, m: messageId }
            : { q: qos, r: retain, t: message.topic, p: message.payload, o: message.qos };
          batch.put(keys.queueEntry(clientId, seqs.get(clientId)!), entry);
        }
        if (retained === 'set') {
          batch.put(keys.retained(message.topic), { p: message.payload, o: message.qos } satisfies RetainedValue);
        } else if (retained === 'clear') {
          batch.del(keys.retained(message.topic));
        }
        if (inbound) batch.put(keys.inbound(inbound.clientId, inbound.packetId), { a: Date.now() });
      },
    });
    return seqs;
  }

  async markSent(clientId: string, seq: number, packetId: number): Promise<void> {
    await this.#setFlight(clientId, seq, { s: 1, i: packetId });
  }

  async markReleased(clientId: string, seq: number): Promise<void> {
    await this.#openWriter().submit({
      prepare: (batch) => {
        const flight = batch.get(keys.flight(clientId, seq), isFlightValue);
        if (flight) batch.put(keys.flight(clientId, seq), { s: 2, i: flight.i } satisfies FlightValue);
      },
    });
  }

  async complete(clientId: string, seq: number): Promise<void> {
    await this.#openWriter().submit({
      prepare: (batch) => {
        batch.del(keys.flight(clientId, seq));
        removeQueueEntry(batch, keys.queueEntry(clientId, seq));
      },
    });
  }

  async releaseInbound(clientId: string, packetId: number): Promise<void> {
    await this.#openWriter().submit({
      prepare: (batch) => batch.del(keys.inbound(clientId, packetId)),
    });
  }

  async clearRetained(topic: string): Promise<void> {
    await this.#openWriter().submit({
      prepare: (batch) => batch.del(keys.retained(topic)),
    });
  }

  #setFlight(clientId: string, seq: number, flight: FlightValue): Promise<void> {
    return this.#openWriter().submit({
      prepare: (batch) => {
        // An entry completed or destroyed meanwhile must not get a flight record without a body.
        if (batch.get(keys.queueEntry(clientId, seq), isQueueEntryValue) !== undefined) {
          batch.put(keys.flight(clientId, seq), flight);
        }
      },
    });
  }

  #takeSeq(clientId: string): number {
    const seq = this.#requireSession(clientId);
    this.#nextSeq.set(clientId, seq + 1);
    return seq;
  }

  #requireSession(clientId: string): number {
    const next = this.#nextSeq.get(clientId);
    if (next === undefined) {
      throw new BrokerError(ErrorCodes.STORE_UNKNOWN_SESSION, `no stored session for client ${JSON.stringify(clientId)}`);
    }
    return next;
  }

  async #loadCounters(db: Db): Promise<void> {
    for await (const key of db.keys(keys.sessions())) {
      const clientId = keys.clientIdOfSession(key);
      const [last] = await db.keys({ ...keys.queue(clientId), reverse: true, limit: 1 }).all();
      this.#nextSeq.set(clientId, last === undefined ? 1 : keys.seqOfQueueKey(last) + 1);
    }
    const [lastBody] = await db.keys({ ...keys.bodies(), reverse: true, limit: 1 }).all();
    this.#nextMessageId = lastBody === undefined ? 1 : keys.messageIdOfBodyKey(lastBody) + 1;
  }

  #open(): Db {
    if (!this.#db) throw new BrokerError(ErrorCodes.STORE_CLOSED, 'the store is not open');
    return this.#db;
  }

  #openWriter(): GroupCommitWriter {
    if (!this.#writer) throw new BrokerError(ErrorCodes.STORE_CLOSED, 'the store is not open');
    return this.#writer;
  }
}

/** Deletes a queue entry and, when it was the last reference to a shared body, the body too. */
function removeQueueEntry(batch: BatchBuilder, key: string): void {
  const entry = batch.get(key, isQueueEntryValue);
  if (entry === undefined) return;
  batch.del(key);
  if (entry.m === undefined) return;
  const countKey = keys.refCount(entry.m);
  const remaining = (batch.get(countKey, isRefCount) ?? 1) - 1;
  if (remaining > 0) {
    batch.put(countKey, remaining);
  } else {
    batch.del(countKey);
    batch.del(keys.body(entry.m));
  }
}

async function checkFormat(db: Db, location: string): Promise<void> {
  const stored = await db.get(FORMAT_KEY);
  if (stored === undefined) {
    const [anyKey] = await db.keys({ limit: 1 }).all();
    if (anyKey !== undefined) {
      throw new BrokerError(
        ErrorCodes.STORE_NOT_A_BROKER_STORE,
        `${location} holds a LevelDB database that is not a broker store (no format marker)`,
      );
    }
    await db.put(FORMAT_KEY, encode(FORMAT_VERSION), { sync: true });
    return;
  }
  const version = decode(stored, FORMAT_KEY, isNumber);
  if (version !== FORMAT_VERSION) {
    throw new BrokerError(
      ErrorCodes.STORE_UNSUPPORTED_FORMAT,
      `${location} has store format ${version}; this broker reads format ${FORMAT_VERSION}`,
    );
  }
}

function openError(location: string, error: unknown): BrokerError {
  const cause = (error as { cause?: { code?: string } }).cause;
  if (cause?.code === 'LEVEL_LOCKED') {
    return new BrokerError(
      ErrorCodes.STORE_LOCKED,
      `the data directory ${location} is in use by another process (is another broker running on it?)`,
      { cause: error },
    );
  }
  return new BrokerError(ErrorCodes.STORE_OPEN_FAILED, `cannot open the store at ${location}: ${String(error)}`, {
    cause: error,
  });
}

function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
