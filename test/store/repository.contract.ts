/**
 * The SessionRepository contract, shared by every implementation: the same examples
 * (repositoryContract) and the same model-based property (repositoryModelContract) run against the
 * in-memory reference and the LevelDB repository.
 *
 * A factory returns an OPEN repository, built with the given options (queue limits; the
 * implementation's defaults when absent). `reopen`, when given, closes the current repository and
 * opens a new instance on the same backing store with the same options: every test that involves
 * it proves state survives a restart. Tests that need it skip themselves when the factory does
 * not provide it.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BrokerError, ErrorCodes, type ErrorCode } from '../../src/errors.js';
import { packetIdOf } from '../../src/session/packet-ids.js';
import { DEFAULT_QUEUE_LIMITS, type QueueLimits } from '../../src/store/queue-limits.js';
import { DEFAULT_RETAINED_LIMITS, type RetainedLimits, type RetainedStats } from '../../src/store/retained-limits.js';
import type {
  Delivery,
  Message,
  MessageProperties,
  OutboundEntry,
  OutboundState,
  PublishTransition,
  QoS,
  QueueStats,
  RetainedMessage,
  SessionRepository,
  StoredSession,
  Subscription,
} from '../../src/store/repository.js';

export interface RepositoryFixture {
  /** An open repository. */
  repository: SessionRepository;
  /** Closes the current repository and opens a new instance on the same store (same options). */
  reopen?: () => Promise<SessionRepository>;
  /** Releases everything the fixture holds (closing the current repository if still open). */
  cleanup: () => Promise<void>;
}

export interface RepositoryOptions {
  /** Per-session queue limits; DEFAULT_QUEUE_LIMITS when absent. */
  limits?: QueueLimits;
  /** Limits on retained messages; DEFAULT_RETAINED_LIMITS when absent. */
  retainedLimits?: RetainedLimits;
}

export type RepositoryFactory = (options?: RepositoryOptions) => Promise<RepositoryFixture>;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

function describeError(error: unknown): string {
  if (error instanceof BrokerError) return `${error.name} ${error.code}: ${error.message}`;
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}

/**
 * The call must return a promise that rejects with a BrokerError of this code. A synchronous throw
 * is a contract violation of its own: callers chain `.then`/`.catch` on the returned promise.
 */
async function expectRejection(call: () => Promise<unknown>, code: ErrorCode): Promise<void> {
  let promise: Promise<unknown>;
  try {
    promise = call();
  } catch (error) {
    throw new Error(
      `expected a promise rejecting with ${code}, but the call threw synchronously: ${describeError(error)}`,
    );
  }
  const outcome = await promise.then(
    (value) => ({ rejected: false as const, value }),
    (error: unknown) => ({ rejected: true as const, error }),
  );
  if (!outcome.rejected) throw new Error(`expected a rejection with ${code}, but the promise resolved`);
  expect(outcome.error, describeError(outcome.error)).toBeInstanceOf(BrokerError);
  expect((outcome.error as BrokerError).code).toBe(code);
}

type Settled<T> = { ok: true; value: T } | { ok: false; error: unknown };

/** Runs a call, turning a synchronous throw or a rejection into a value. */
async function settle<T>(call: () => Promise<T>): Promise<Settled<T>> {
  try {
    return { ok: true, value: await call() };
  } catch (error) {
    return { ok: false, error };
  }
}

function errorCodeOf(error: unknown): string {
  return error instanceof BrokerError ? error.code : describeError(error);
}

function message(topic: string, payload: string | Buffer, qos: QoS = 1): Message {
  return { topic, payload: typeof payload === 'string' ? Buffer.from(payload) : payload, qos };
}

function to(clientId: string, qos: QoS = 1, retain = false): Delivery {
  return { clientId, qos, retain };
}

function seqOf(seqs: Map<string, number>, clientId: string): number {
  const seq = seqs.get(clientId);
  if (seq === undefined) throw new Error(`publish returned no seq for ${clientId}`);
  return seq;
}

/** A comparable, order-independent view of loadSessions (MQTT 5 subscription options included, where set). */
function normalizeSessions(sessions: StoredSession[]): { clientId: string; subscriptions: Subscription[] }[] {
  return sessions
    .map(({ clientId, subscriptions }) => ({
      clientId,
      subscriptions: subscriptions.map(normalizeSubscription).sort((a, b) => compareStrings(a.filter, b.filter)),
    }))
    .sort((a, b) => compareStrings(a.clientId, b.clientId));
}

/** A subscription with only the options it has: an option that is off is the same as one never set. */
function normalizeSubscription({ filter, qos, noLocal, retainAsPublished, retainHandling, identifier }: Subscription): Subscription {
  return {
    filter,
    qos,
    ...(noLocal ? { noLocal } : {}),
    ...(retainAsPublished ? { retainAsPublished } : {}),
    ...(retainHandling ? { retainHandling } : {}),
    ...(identifier === undefined ? {} : { identifier }),
  };
}

/** Properties as comparable values: correlation data as hex, Buffers checked to be Buffers. */
function normalizeProperties(properties: MessageProperties | undefined): object | undefined {
  if (properties === undefined) return undefined;
  const { correlationData, ...rest } = properties;
  return { ...rest, ...(correlationData === undefined ? {} : { correlationData: Buffer.isBuffer(correlationData) ? correlationData.toString('hex') : 'not a Buffer' }) };
}

interface NormalizedRetained {
  topic: string;
  payloadIsBuffer: boolean;
  payload: string;
  qos: QoS;
  properties?: object | undefined;
}

function normalizeRetained(retained: RetainedMessage[]): NormalizedRetained[] {
  return retained
    .map(({ topic, payload, qos, properties }) => ({
      topic,
      payloadIsBuffer: Buffer.isBuffer(payload),
      payload: Buffer.from(payload).toString('hex'),
      qos,
      properties: normalizeProperties(properties),
    }))
    .sort((a, b) => compareStrings(a.topic, b.topic));
}

interface NormalizedEntry {
  seq: number;
  topic: string;
  payloadIsBuffer: boolean;
  payload: string;
  messageQos: QoS;
  qos: QoS;
  retain: boolean;
  state: OutboundState;
  packetId: number | undefined;
  properties?: object | undefined;
  subscriptionIds?: number[] | undefined;
  shared?: string[] | undefined;
}

function normalizeEntry(entry: OutboundEntry): NormalizedEntry {
  return {
    properties: normalizeProperties(entry.message.properties),
    subscriptionIds: entry.subscriptionIds,
    shared: entry.shared,
    seq: entry.seq,
    topic: entry.message.topic,
    payloadIsBuffer: Buffer.isBuffer(entry.message.payload),
    payload: Buffer.from(entry.message.payload).toString('hex'),
    messageQos: entry.message.qos,
    qos: entry.qos,
    retain: entry.retain,
    state: entry.state,
    packetId: entry.packetId,
  };
}

function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Every retained message, through the two reads the broker makes: the index (topic, QoS, size)
 * at start, then the payloads of the topics a subscription matches. Both must agree.
 */
async function loadRetained(repository: SessionRepository): Promise<RetainedMessage[]> {
  const index = await repository.loadRetainedIndex();
  const read = await repository.readRetained(index.map(({ topic }) => topic));
  return index.map((entry, at) => {
    const message = read[at];
    if (message === undefined || message instanceof Error) throw new Error(`retained ${entry.topic}: indexed, but readRetained gave ${String(message)}`);
    expect({ topic: message.topic, qos: message.qos, size: message.payload.length }, 'index entry').toEqual(entry);
    return message;
  });
}

async function readAll(repository: SessionRepository, clientId: string): Promise<OutboundEntry[]> {
  return repository.readOutbound(clientId, 0, Number.MAX_SAFE_INTEGER);
}

async function inboundOf(repository: SessionRepository, clientId: string): Promise<number[]> {
  return [...(await repository.loadInbound(clientId))].sort((a, b) => a - b);
}

// ---------------------------------------------------------------------------------------------
// The model for the property: plain maps, applied one transition at a time.
// ---------------------------------------------------------------------------------------------

interface ModelEntry {
  seq: number;
  topic: string;
  payload: Buffer;
  messageQos: QoS;
  qos: QoS;
  retain: boolean;
  /** Set by markReleased: the packet id readOutbound returns with the 'released' entry. */
  released?: number;
  properties?: MessageProperties;
  subscriptionIds?: number[];
  shared?: string[];
}

interface ModelSession {
  subscriptions: Map<string, Subscription>;
  /** In seq order. */
  queue: ModelEntry[];
  /**
   * Highest seq given to this session in this run (after a restart: the highest it may have been
   * given). Every later seq must be greater; the DUP mark never goes past it.
   */
  lastSeq: number;
  /** DUP mark: entries up to it read back as 'dup' (unless released), the others as 'queued'. */
  dupMark: number;
  /** Deliveries refused because the queue was full. */
  dropped: number;
  inbound: Set<number>;
}

interface Model {
  limits: QueueLimits;
  retainedLimits: RetainedLimits;
  sessions: Map<string, ModelSession>;
  retained: Map<string, { payload: Buffer; qos: QoS; properties?: MessageProperties }>;
  /** Retained messages refused at the retained limits. */
  retainedRefused: number;
  /** Shared by every run of one property: shows that the runs did exercise refusals. */
  observed: { drops: number; admitted: number; retainedRefused: number };
}

/** A retained 'set' in the model: the topic's previous message goes either way; the new one stays if the limits allow. */
function setRetainedInModel(model: Model, topic: string, payload: Buffer, qos: QoS, properties?: MessageProperties): boolean {
  model.retained.delete(topic);
  const bytes = [...model.retained.values()].reduce((sum, held) => sum + held.payload.length, 0);
  if (model.retained.size + 1 > model.retainedLimits.maxMessages || bytes + payload.length > model.retainedLimits.maxBytes) {
    model.retainedRefused++;
    model.observed.retainedRefused++;
    return false;
  }
  model.retained.set(topic, { payload: Buffer.from(payload), qos, ...(properties ? { properties } : {}) });
  return true;
}

interface Real {
  repository: SessionRepository;
  reopen: (() => Promise<SessionRepository>) | undefined;
}

const CLIENTS = ['alice', 'bob', 'carol', 'dave'] as const;
const FILTERS = ['a/b', 'a/+', '#', 'x/y/z', 'sport/+/score'] as const;
const TOPICS = ['a/b', 'a/c', 'x/y/z', 'sport/tennis/score'] as const;

function newModelSession(): ModelSession {
  return { subscriptions: new Map(), queue: [], lastSeq: 0, dupMark: 0, dropped: 0, inbound: new Set() };
}

function stateOf(session: ModelSession, entry: ModelEntry): OutboundState {
  if (entry.released !== undefined) return 'released';
  return entry.seq <= session.dupMark ? 'dup' : 'queued';
}

function expectedEntry(session: ModelSession, entry: ModelEntry): NormalizedEntry {
  return {
    seq: entry.seq,
    topic: entry.topic,
    payloadIsBuffer: true,
    payload: entry.payload.toString('hex'),
    messageQos: entry.messageQos,
    qos: entry.qos,
    retain: entry.retain,
    state: stateOf(session, entry),
    // Only a released entry carries a packet id: those of sent entries are derived from seq.
    packetId: entry.released,
    properties: normalizeProperties(entry.properties),
    subscriptionIds: entry.subscriptionIds,
    shared: entry.shared,
  };
}

function expectedWindow(model: Model, clientId: string, afterSeq: number, limit: number, maxBytes = Infinity): NormalizedEntry[] {
  const session = model.sessions.get(clientId);
  if (!session) return [];
  const window = session.queue.filter((entry) => entry.seq > afterSeq).slice(0, Math.max(0, limit));
  // Up to and including the entry whose payload brings the total to maxBytes.
  let bytes = 0;
  const end = window.findIndex((entry) => (bytes += entry.payload.length) >= maxBytes);
  return window.slice(0, end === -1 ? window.length : end + 1).map((entry) => expectedEntry(session, entry));
}

function expectedStats(session: ModelSession): QueueStats {
  return {
    messages: session.queue.length,
    bytes: session.queue.reduce((sum, entry) => sum + entry.payload.length, 0),
    dropped: session.dropped,
  };
}

/** Whether the session's queue takes one more message of this size (see QueueLimits). */
function fits(limits: QueueLimits, session: ModelSession, size: number): boolean {
  const { messages, bytes } = expectedStats(session);
  return messages + 1 <= limits.maxMessages && bytes + size <= limits.maxBytes;
}

/** Compares everything observable through the read side of the repository with the model. */
async function expectMatchesModel(model: Model, repository: SessionRepository, context: string): Promise<void> {
  const expectedSessions = [...model.sessions]
    .map(([clientId, session]) => ({
      clientId,
      subscriptions: [...session.subscriptions.values()].map(normalizeSubscription).sort((a, b) => compareStrings(a.filter, b.filter)),
    }))
    .sort((a, b) => compareStrings(a.clientId, b.clientId));
  expect(normalizeSessions(await repository.loadSessions()), `${context}: loadSessions`).toEqual(expectedSessions);

  const expectedRetained = [...model.retained]
    .map(([topic, { payload, qos, properties }]) => ({ topic, payloadIsBuffer: true, payload: payload.toString('hex'), qos, properties: normalizeProperties(properties) }))
    .sort((a, b) => compareStrings(a.topic, b.topic));
  expect(normalizeRetained(await loadRetained(repository)), `${context}: loadRetained`).toEqual(expectedRetained);
  const retainedBytes = [...model.retained.values()].reduce((sum, held) => sum + held.payload.length, 0);
  expect(await repository.retainedStats(), `${context}: retainedStats`).toEqual({
    messages: model.retained.size,
    bytes: retainedBytes,
    refused: model.retainedRefused,
  });

  for (const clientId of CLIENTS) {
    const session = model.sessions.get(clientId);
    const entries = (await readAll(repository, clientId)).map(normalizeEntry);
    expect(entries, `${context}: readOutbound(${clientId})`).toEqual(
      expectedWindow(model, clientId, 0, Number.MAX_SAFE_INTEGER),
    );
    const inbound = [...(session?.inbound ?? [])].sort((a, b) => a - b);
    expect(await inboundOf(repository, clientId), `${context}: loadInbound(${clientId})`).toEqual(inbound);
    expect(await repository.queueStats(clientId), `${context}: queueStats(${clientId})`).toEqual(
      session && expectedStats(session),
    );
  }
}

/**
 * Picks a seq among `candidates` (entries of the session's queue, in seq order): mostly one of them
 * (newest first), and one time in (candidates + 1) a seq that is in no queue: completed before, or
 * never given out.
 */
function pickAmong(session: ModelSession | undefined, candidates: ModelEntry[], pick: number): number {
  const index = pick % (candidates.length + 1);
  if (index < candidates.length) return candidates[candidates.length - 1 - index]!.seq;
  const queue = session?.queue ?? [];
  const lastSeq = session?.lastSeq ?? 0;
  if (pick % 2 === 0) {
    for (let seq = lastSeq; seq > 0; seq--) if (!queue.some((e) => e.seq === seq)) return seq;
  }
  return lastSeq + 1 + pick;
}

/** A seq for complete: any entry of the queue, or a missing seq. */
function pickSeq(model: Model, clientId: string, pick: number): number {
  const session = model.sessions.get(clientId);
  return pickAmong(session, session?.queue ?? [], pick);
}

type Cmd = fc.AsyncCommand<Model, Real>;

/**
 * Commands are generated before the model exists, so a client is named either directly (which may
 * or may not be a stored session at run time) or as "the pick-th stored session", resolved when the
 * command runs: most transitions then hit live sessions, some hit unknown ones.
 */
type ClientRef = { pick: number } | { name: string };

function resolveClient(model: Model, ref: ClientRef): string {
  if ('name' in ref) return ref.name;
  const known = [...model.sessions.keys()].sort(compareStrings);
  return known.length > 0 ? known[ref.pick % known.length]! : CLIENTS[ref.pick % CLIENTS.length]!;
}

function showClient(ref: ClientRef, resolved: string | undefined): string {
  const spec = 'name' in ref ? ref.name : `session#${ref.pick}`;
  return resolved === undefined || resolved === spec ? spec : `${spec}=${resolved}`;
}

const clientArb = fc.constantFrom(...CLIENTS);
const clientRefArb: fc.Arbitrary<ClientRef> = fc.oneof(
  { weight: 4, arbitrary: fc.nat({ max: 5 }).map((pick) => ({ pick })) },
  { weight: 1, arbitrary: clientArb.map((name) => ({ name })) },
);
const qosArb = fc.constantFrom<QoS>(0, 1, 2);
const pickArb = fc.nat({ max: 6 });
const packetIdArb = fc.oneof(fc.integer({ min: 1, max: 4 }), fc.constant(65535));
const payloadArb = fc.uint8Array({ maxLength: 12 }).map((bytes) => Buffer.from(bytes));
const subscriptionIdArb = fc.oneof(fc.integer({ min: 1, max: 300 }), fc.constant(268_435_455));
/** MQTT 5 message properties: any subset, User Properties with repeated names and any order. */
const propertiesArb: fc.Arbitrary<MessageProperties> = fc
  .record(
    {
      payloadFormat: fc.constantFrom<0 | 1>(0, 1),
      expiresAt: fc.integer({ min: 0, max: 2 ** 45 }),
      contentType: fc.string({ maxLength: 8 }),
      responseTopic: fc.constantFrom(...TOPICS),
      correlationData: fc.uint8Array({ maxLength: 8 }).map((bytes) => Buffer.from(bytes)),
      userProperties: fc.array(fc.tuple(fc.constantFrom('a', 'b', 'é'), fc.string({ maxLength: 4 })), { maxLength: 4 }),
    },
    { requiredKeys: [] },
  )
  .map((properties) => properties as MessageProperties);

/** How a rejection is delivered (rejection vs synchronous throw) is checked by the examples; here state matters. */
async function expectUnknownSession(call: () => Promise<unknown>, context: string): Promise<void> {
  const outcome = await settle(call);
  expect(outcome.ok, `${context} should fail: unknown session`).toBe(false);
  if (!outcome.ok) expect(errorCodeOf(outcome.error), context).toBe(ErrorCodes.STORE_UNKNOWN_SESSION);
}

abstract class ClientCmd implements Cmd {
  protected resolved: string | undefined;
  constructor(readonly client: ClientRef) {}
  check(): boolean {
    return true;
  }
  protected clientId(model: Model): string {
    this.resolved = resolveClient(model, this.client);
    return this.resolved;
  }
  protected get who(): string {
    return showClient(this.client, this.resolved);
  }
  abstract run(model: Model, real: Real): Promise<void>;
  abstract toString(): string;
}

class CreateSessionCmd implements Cmd {
  constructor(readonly clientId: string) {}
  check(): boolean {
    return true;
  }
  async run(model: Model, real: Real): Promise<void> {
    await real.repository.createSession(this.clientId);
    if (!model.sessions.has(this.clientId)) model.sessions.set(this.clientId, newModelSession());
    await expectMatchesModel(model, real.repository, this.toString());
  }
  toString(): string {
    return `createSession(${this.clientId})`;
  }
}

class DestroySessionCmd extends ClientCmd {
  async run(model: Model, real: Real): Promise<void> {
    const clientId = this.clientId(model);
    await real.repository.destroySession(clientId);
    model.sessions.delete(clientId);
    await expectMatchesModel(model, real.repository, this.toString());
  }
  toString(): string {
    return `destroySession(${this.who})`;
  }
}

class SubscribeCmd extends ClientCmd {
  constructor(
    client: ClientRef,
    readonly subscriptions: Subscription[],
  ) {
    super(client);
  }
  async run(model: Model, real: Real): Promise<void> {
    const clientId = this.clientId(model);
    const session = model.sessions.get(clientId);
    const subscriptions = this.subscriptions.map((s) => ({ ...s }));
    if (!session) {
      await expectUnknownSession(() => real.repository.subscribe(clientId, subscriptions), this.toString());
    } else {
      await real.repository.subscribe(clientId, subscriptions);
      for (const subscription of this.subscriptions) session.subscriptions.set(subscription.filter, { ...subscription });
    }
    await expectMatchesModel(model, real.repository, this.toString());
  }
  toString(): string {
    return `subscribe(${this.who}, ${this.subscriptions.map((s) => `${s.filter}:q${s.qos}`).join(' ')})`;
  }
}

class UnsubscribeCmd extends ClientCmd {
  constructor(
    client: ClientRef,
    readonly filters: string[],
  ) {
    super(client);
  }
  async run(model: Model, real: Real): Promise<void> {
    const clientId = this.clientId(model);
    const session = model.sessions.get(clientId);
    if (!session) {
      await expectUnknownSession(() => real.repository.unsubscribe(clientId, [...this.filters]), this.toString());
    } else {
      await real.repository.unsubscribe(clientId, [...this.filters]);
      for (const filter of this.filters) session.subscriptions.delete(filter);
    }
    await expectMatchesModel(model, real.repository, this.toString());
  }
  toString(): string {
    return `unsubscribe(${this.who}, ${this.filters.join(' ')})`;
  }
}

interface DeliverySpec {
  client: ClientRef;
  qos: QoS;
  retain: boolean;
  subscriptionIds?: number[] | undefined;
  shared?: string[] | undefined;
}

class PublishCmd implements Cmd {
  #resolved: { deliveries: string[]; inbound: string | undefined } | undefined;
  constructor(
    readonly topic: string,
    readonly payload: Buffer,
    readonly qos: QoS,
    readonly deliveries: DeliverySpec[],
    readonly retained: 'set' | 'clear' | undefined,
    readonly inbound: { client: ClientRef; packetId: number } | undefined,
    readonly properties: MessageProperties | undefined = undefined,
  ) {}
  check(): boolean {
    return true;
  }
  async run(model: Model, real: Real): Promise<void> {
    // Resolve delivery targets; a session receives a message at most once per publish.
    const deliveries: Delivery[] = [];
    for (const spec of this.deliveries) {
      const clientId = resolveClient(model, spec.client);
      if (!deliveries.some((d) => d.clientId === clientId)) {
        deliveries.push({
          clientId,
          qos: spec.qos,
          retain: spec.retain,
          ...(spec.subscriptionIds ? { subscriptionIds: [...spec.subscriptionIds] } : {}),
          ...(spec.shared ? { shared: [...spec.shared] } : {}),
        });
      }
    }
    const inbound = this.inbound && { clientId: resolveClient(model, this.inbound.client), packetId: this.inbound.packetId };
    this.#resolved = { deliveries: deliveries.map((d) => d.clientId), inbound: inbound?.clientId };

    const transition: PublishTransition = {
      // A copy per run: the model keeps its own bytes.
      message: { topic: this.topic, payload: Buffer.from(this.payload), qos: this.qos, ...(this.properties ? { properties: this.properties } : {}) },
      deliveries: deliveries.map((delivery) => ({ ...delivery })),
    };
    if (this.retained) transition.retained = this.retained;
    if (inbound) transition.inbound = { ...inbound };
    const named = [...deliveries.map((delivery) => delivery.clientId), ...(inbound ? [inbound.clientId] : [])];
    if (named.some((clientId) => !model.sessions.has(clientId))) {
      // One unknown session anywhere: the whole transition fails and nothing lands (no drop is counted either).
      await expectUnknownSession(() => real.repository.publish(transition), this.toString());
      await expectMatchesModel(model, real.repository, this.toString());
      return;
    }
    // A full queue refuses the delivery for its session only; the others of the same publish land.
    const admitted = deliveries.filter(({ clientId }) => fits(model.limits, model.sessions.get(clientId)!, this.payload.length));
    const seqs = await real.repository.publish(transition);
    expect([...seqs.keys()].sort(), `${this}: clients of the returned map (the admitted deliveries)`).toEqual(
      admitted.map((delivery) => delivery.clientId).sort(),
    );
    for (const { clientId } of deliveries) {
      if (admitted.some((delivery) => delivery.clientId === clientId)) continue;
      model.sessions.get(clientId)!.dropped++;
      model.observed.drops++;
    }
    for (const { clientId, qos, retain, subscriptionIds, shared } of admitted) {
      const session = model.sessions.get(clientId)!;
      const seq = seqOf(seqs, clientId);
      expect(Number.isSafeInteger(seq), `${this}: seq of ${clientId} is an integer`).toBe(true);
      expect(seq, `${this}: seq of ${clientId} must exceed every seq given to it before (${session.lastSeq})`).toBeGreaterThan(
        session.lastSeq,
      );
      session.lastSeq = seq;
      session.queue.push({
        seq,
        topic: this.topic,
        payload: Buffer.from(this.payload),
        messageQos: this.qos,
        qos,
        retain,
        ...(this.properties ? { properties: this.properties } : {}),
        ...(subscriptionIds ? { subscriptionIds } : {}),
        ...(shared ? { shared } : {}),
      });
      model.observed.admitted++;
    }
    const kept = this.retained === 'set' ? setRetainedInModel(model, this.topic, this.payload, this.qos, this.properties) : undefined;
    expect(seqs.retainedRefused, `${this}: retainedRefused`).toBe(kept === false ? true : undefined);
    if (this.retained === 'clear') model.retained.delete(this.topic);
    if (inbound) model.sessions.get(inbound.clientId)!.inbound.add(inbound.packetId);
    await expectMatchesModel(model, real.repository, this.toString());
  }
  toString(): string {
    const deliveries = this.deliveries
      .map((d, i) => `${showClient(d.client, this.#resolved?.deliveries[i])}:q${d.qos}${d.retain ? ':r' : ''}`)
      .join(',');
    const extras = [
      this.retained ? `retained=${this.retained}` : '',
      this.inbound ? `inbound=${showClient(this.inbound.client, this.#resolved?.inbound)}#${this.inbound.packetId}` : '',
    ].filter(Boolean);
    if (this.properties) extras.push(`properties=${JSON.stringify(normalizeProperties(this.properties))}`);
    return `publish(${this.topic} q${this.qos} 0x${this.payload.toString('hex')} → [${deliveries}]${extras.length ? ' ' + extras.join(' ') : ''})`;
  }
}

/**
 * Sets the DUP mark: to 0, to an entry's seq (newest ones first), to a completed seq, or past
 * every seq given (the repository caps it there). Never below a released entry: the caller never
 * lowers the DUP mark below an entry that was really sent, and a released entry was.
 */
/** raiseDupMark (raises the DUP mark) or, with `reset`, setDupMark (sets it, also downwards). */
class RaiseDupMarkCmd extends ClientCmd {
  #through: number | undefined;
  constructor(
    client: ClientRef,
    readonly pick: number,
    readonly reset = false,
  ) {
    super(client);
  }
  async run(model: Model, real: Real): Promise<void> {
    const clientId = this.clientId(model);
    const session = model.sessions.get(clientId);
    let through = this.pick === 0 ? 0 : pickSeq(model, clientId, this.pick - 1);
    for (const entry of session?.queue ?? []) if (entry.released !== undefined) through = Math.max(through, entry.seq);
    this.#through = through;
    if (this.reset) {
      await real.repository.setDupMark(clientId, through);
      if (session) session.dupMark = Math.min(through, session.lastSeq);
    } else {
      await real.repository.raiseDupMark(clientId, through);
      if (session) session.dupMark = Math.max(session.dupMark, Math.min(through, session.lastSeq));
    }
    await expectMatchesModel(model, real.repository, this.toString());
  }
  toString(): string {
    const name = this.reset ? 'setDupMark' : 'raiseDupMark';
    return `${name}(${this.who}, pick ${this.pick}${this.#through === undefined ? '' : `=through ${this.#through}`})`;
  }
}

/** PUBREC for a sent (or already released) entry, or for a seq that is in no queue. */
class MarkReleasedCmd extends ClientCmd {
  #seq: number | undefined;
  constructor(
    client: ClientRef,
    readonly pick: number,
    readonly packetId: number,
  ) {
    super(client);
  }
  async run(model: Model, real: Real): Promise<void> {
    const clientId = this.clientId(model);
    const session = model.sessions.get(clientId);
    const inFlight = session?.queue.filter((entry) => stateOf(session, entry) !== 'queued') ?? [];
    const seq = (this.#seq = pickAmong(session, inFlight, this.pick));
    await real.repository.markReleased(clientId, [{ entry: seq, packetId: this.packetId }]);
    const entry = session?.queue.find((e) => e.seq === seq);
    if (entry) entry.released = this.packetId;
    await expectMatchesModel(model, real.repository, this.toString());
  }
  toString(): string {
    return `markReleased(${this.who}, [{ entry: pick ${this.pick}${this.#seq === undefined ? '' : `=seq ${this.#seq}`}, packetId: ${this.packetId} }])`;
  }
}

class CompleteCmd extends ClientCmd {
  #seq: number | undefined;
  constructor(
    client: ClientRef,
    readonly pick: number,
  ) {
    super(client);
  }
  async run(model: Model, real: Real): Promise<void> {
    const clientId = this.clientId(model);
    const seq = (this.#seq = pickSeq(model, clientId, this.pick));
    await real.repository.complete(clientId, seq);
    const session = model.sessions.get(clientId);
    if (session) session.queue = session.queue.filter((e) => e.seq !== seq);
    await expectMatchesModel(model, real.repository, this.toString());
  }
  toString(): string {
    return `complete(${this.who}, pick ${this.pick}${this.#seq === undefined ? '' : `=seq ${this.#seq}`})`;
  }
}

/**
 * A message handed over from one session's entry to another session (a shared subscription's
 * member whose session ends): one transition that removes the entry and queues the message for the
 * target; nothing at all if the entry is gone (a missing seq, an unknown source session).
 */
class HandOverCmd extends ClientCmd {
  #seq: number | undefined;
  constructor(
    client: ClientRef,
    readonly pick: number,
    readonly target: ClientRef,
    readonly qos: QoS,
  ) {
    super(client);
  }
  async run(model: Model, real: Real): Promise<void> {
    const from = this.clientId(model);
    const to = resolveClient(model, this.target);
    const seq = (this.#seq = pickSeq(model, from, this.pick));
    const source = model.sessions.get(from);
    const entry = source?.queue.find((candidate) => candidate.seq === seq);
    const message: Message = entry
      ? { topic: entry.topic, payload: Buffer.from(entry.payload), qos: entry.messageQos, ...(entry.properties ? { properties: entry.properties } : {}) }
      : { topic: 'gone', payload: Buffer.from('gone'), qos: 1 };
    const transition: PublishTransition = { message, deliveries: [{ clientId: to, qos: this.qos, retain: false, shared: ['$share/g/#'] }], handOver: { clientId: from, seq } };
    const target = model.sessions.get(to);
    if (!target) {
      await expectUnknownSession(() => real.repository.publish(transition), this.toString());
      await expectMatchesModel(model, real.repository, this.toString());
      return;
    }
    const seqs = await real.repository.publish(transition);
    if (!entry) {
      expect(seqs.size, `${this}: an entry gone hands over nothing`).toBe(0);
      await expectMatchesModel(model, real.repository, this.toString());
      return;
    }
    source!.queue = source!.queue.filter((candidate) => candidate !== entry);
    if (!fits(model.limits, target, entry.payload.length)) {
      expect(seqs.size, `${this}: refused at the target's limits`).toBe(0);
      target.dropped++;
      model.observed.drops++;
    } else {
      const newSeq = seqOf(seqs, to);
      expect(newSeq, `${this}: seq of ${to}`).toBeGreaterThan(target.lastSeq);
      target.lastSeq = newSeq;
      target.queue.push({
        seq: newSeq,
        topic: entry.topic,
        payload: Buffer.from(entry.payload),
        messageQos: entry.messageQos,
        qos: this.qos,
        retain: false,
        ...(entry.properties ? { properties: entry.properties } : {}),
        shared: ['$share/g/#'],
      });
      model.observed.admitted++;
    }
    await expectMatchesModel(model, real.repository, this.toString());
  }
  toString(): string {
    return `handOver(${this.who}, pick ${this.pick}${this.#seq === undefined ? '' : `=seq ${this.#seq}`} → ${JSON.stringify(this.target)}, q${this.qos})`;
  }
}

class ReleaseInboundCmd extends ClientCmd {
  constructor(
    client: ClientRef,
    readonly packetId: number,
  ) {
    super(client);
  }
  async run(model: Model, real: Real): Promise<void> {
    const clientId = this.clientId(model);
    await real.repository.releaseInbound(clientId, this.packetId);
    model.sessions.get(clientId)?.inbound.delete(this.packetId);
    await expectMatchesModel(model, real.repository, this.toString());
  }
  toString(): string {
    return `releaseInbound(${this.who}, ${this.packetId})`;
  }
}

class ClearRetainedCmd implements Cmd {
  constructor(readonly topic: string) {}
  check(): boolean {
    return true;
  }
  async run(model: Model, real: Real): Promise<void> {
    await real.repository.clearRetained(this.topic);
    model.retained.delete(this.topic);
    await expectMatchesModel(model, real.repository, this.toString());
  }
  toString(): string {
    return `clearRetained(${this.topic})`;
  }
}

/** A paging read: readOutbound(afterSeq, limit, maxBytes) must be exactly the model's window. */
class ReadWindowCmd extends ClientCmd {
  #afterSeq: number | undefined;
  constructor(
    client: ClientRef,
    readonly pick: number,
    readonly limit: number,
    readonly maxBytes: number | undefined,
  ) {
    super(client);
  }
  async run(model: Model, real: Real): Promise<void> {
    const clientId = this.clientId(model);
    const session = model.sessions.get(clientId);
    const queue = session?.queue ?? [];
    const afterSeq = this.pick === 0 ? 0 : (queue[this.pick - 1]?.seq ?? (session?.lastSeq ?? 0) + this.pick);
    this.#afterSeq = afterSeq;
    const entries = await real.repository.readOutbound(clientId, afterSeq, this.limit, this.maxBytes);
    expect(entries.map(normalizeEntry), this.toString()).toEqual(expectedWindow(model, clientId, afterSeq, this.limit, this.maxBytes));
  }
  toString(): string {
    const after = this.#afterSeq === undefined ? `pick ${this.pick}` : `afterSeq ${this.#afterSeq}`;
    return `readOutbound(${this.who}, ${after}, limit ${this.limit}${this.maxBytes === undefined ? '' : `, maxBytes ${this.maxBytes}`})`;
  }
}

class ReopenCmd implements Cmd {
  check(): boolean {
    return true;
  }
  async run(model: Model, real: Real): Promise<void> {
    if (!real.reopen) return;
    real.repository = await real.reopen();
    // Across a restart a seq need only exceed the entries still stored and the DUP mark
    // (see OutboundEntry.seq and raiseDupMark); the DUP mark, the entries and the counts survive.
    for (const session of model.sessions.values()) {
      session.lastSeq = session.queue.reduce((highest, entry) => Math.max(highest, entry.seq), session.dupMark);
    }
    await expectMatchesModel(model, real.repository, 'after reopen');
  }
  toString(): string {
    return 'reopen()';
  }
}

/** `publishes`: how many of the arbitraries are publishes (more make full queues likelier). */
function commandArbitraries(withReopen: boolean, publishes: number): fc.Arbitrary<Cmd>[] {
  // MQTT 5 options on some subscriptions, properties on some messages, identifiers on some deliveries.
  const subscriptionArb = fc
    .record({
      filter: fc.constantFrom(...FILTERS),
      qos: qosArb,
      options: fc.option(
        fc.record({ noLocal: fc.boolean(), retainAsPublished: fc.boolean(), retainHandling: fc.constantFrom<0 | 1 | 2>(0, 1, 2), identifier: fc.option(subscriptionIdArb, { nil: undefined }) }),
        { nil: undefined, freq: 2 },
      ),
    })
    .map(({ filter, qos, options }) => normalizeSubscription({ filter, qos, ...options }));
  const deliveryArb = fc.record({
    client: clientRefArb,
    qos: qosArb,
    retain: fc.boolean(),
    subscriptionIds: fc.option(fc.array(subscriptionIdArb, { minLength: 1, maxLength: 3 }), { nil: undefined, freq: 3 }),
    shared: fc.option(fc.array(fc.constantFrom('$share/g/#', '$share/h/a/+'), { minLength: 1, maxLength: 2 }), { nil: undefined, freq: 4 }),
  });
  const publishArb = fc
    .record({
      topic: fc.constantFrom(...TOPICS),
      payload: payloadArb,
      qos: qosArb,
      deliveries: fc.array(deliveryArb, { maxLength: 4 }),
      retained: fc.constantFrom<'set' | 'clear' | undefined>(undefined, undefined, 'set', 'clear'),
      inbound: fc.option(fc.record({ client: clientRefArb, packetId: packetIdArb }), { nil: undefined, freq: 3 }),
      properties: fc.option(propertiesArb, { nil: undefined, freq: 2 }),
    })
    .map((p) => new PublishCmd(p.topic, p.payload, p.qos, p.deliveries, p.retained, p.inbound, p.properties));
  const raiseDupMarkArb = fc.tuple(clientRefArb, pickArb).map(([client, pick]) => new RaiseDupMarkCmd(client, pick));
  const arbitraries: fc.Arbitrary<Cmd>[] = [
    clientArb.map((clientId) => new CreateSessionCmd(clientId)),
    clientArb.map((clientId) => new CreateSessionCmd(clientId)),
    clientRefArb.map((client) => new DestroySessionCmd(client)),
    fc
      .tuple(clientRefArb, fc.array(subscriptionArb, { minLength: 1, maxLength: 3 }))
      .map(([client, subscriptions]) => new SubscribeCmd(client, subscriptions)),
    fc
      .tuple(clientRefArb, fc.array(fc.constantFrom(...FILTERS), { minLength: 1, maxLength: 2 }))
      .map(([client, filters]) => new UnsubscribeCmd(client, filters)),
    ...Array.from({ length: publishes }, () => publishArb),
    raiseDupMarkArb,
    raiseDupMarkArb,
    fc.tuple(clientRefArb, pickArb).map(([client, pick]) => new RaiseDupMarkCmd(client, pick, true)),
    fc
      .tuple(clientRefArb, pickArb, fc.integer({ min: 1, max: 65535 }))
      .map(([client, pick, packetId]) => new MarkReleasedCmd(client, pick, packetId)),
    fc.tuple(clientRefArb, pickArb).map(([client, pick]) => new CompleteCmd(client, pick)),
    fc.tuple(clientRefArb, pickArb).map(([client, pick]) => new CompleteCmd(client, pick)),
    fc.tuple(clientRefArb, pickArb, clientRefArb, qosArb).map(([client, pick, target, qos]) => new HandOverCmd(client, pick, target, qos)),
    fc.tuple(clientRefArb, packetIdArb).map(([client, packetId]) => new ReleaseInboundCmd(client, packetId)),
    fc.constantFrom(...TOPICS).map((topic) => new ClearRetainedCmd(topic)),
    fc
      .tuple(clientRefArb, fc.nat({ max: 5 }), fc.integer({ min: 0, max: 4 }), fc.option(fc.integer({ min: 1, max: 12 }), { nil: undefined }))
      .map(([client, pick, limit, maxBytes]) => new ReadWindowCmd(client, pick, limit, maxBytes)),
  ];
  if (withReopen) arbitraries.push(...[1, 2, 3].map(() => fc.constant(new ReopenCmd())));
  return arbitraries;
}

// ---------------------------------------------------------------------------------------------
// The contract
// ---------------------------------------------------------------------------------------------

/**
 * Every example settles in milliseconds; the explicit timeout only bounds how long a transition
 * whose promise never settles (a hang is a contract violation too) holds up the suite.
 */
const EXAMPLE_TIMEOUT_MS = 5_000;
const PROPERTY_TIMEOUT_MS = 120_000;

export function repositoryContract(name: string, factory: RepositoryFactory): void {
  describe(`SessionRepository contract: ${name}`, { timeout: EXAMPLE_TIMEOUT_MS }, () => {
    /** Runs a test body on a fresh fixture and always cleans it up. */
    async function withFixture(body: (fixture: RepositoryFixture) => Promise<void>, options?: RepositoryOptions): Promise<void> {
      const fixture = await factory(options);
      try {
        await body(fixture);
      } finally {
        await fixture.cleanup();
      }
    }

    /** Runs a test body that needs reopen; skips the test when the factory has none. */
    function withReopen(
      skip: (note?: string) => never,
      body: (repository: SessionRepository, reopen: () => Promise<SessionRepository>) => Promise<void>,
      options?: RepositoryOptions,
    ): Promise<void> {
      return withFixture(async (fixture) => {
        const reopen = fixture.reopen;
        if (!reopen) skip(`${name} cannot be reopened`);
        await body(fixture.repository, reopen);
      }, options);
    }

    describe('promises settle', () => {
      it('a transition submitted as soon as the previous one has resolved also resolves', () =>
        withFixture(async ({ repository }) => {
          // Each await resumes right when the previous transition resolves, and the next one is
          // submitted from there: it must be written, not left waiting for some later transition.
          await repository.createSession('a');
          await repository.createSession('b');
          await repository.subscribe('a', [{ filter: 'x', qos: 1 }]);
          expect(normalizeSessions(await repository.loadSessions())).toEqual([
            { clientId: 'a', subscriptions: [{ filter: 'x', qos: 1 }] },
            { clientId: 'b', subscriptions: [] },
          ]);
        }));
    });

    describe('sessions and subscriptions', () => {
      it('createSession is idempotent: a second call keeps subscriptions, queue and inbound ids', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          await repository.subscribe('a', [{ filter: 'a/b', qos: 1 }]);
          await repository.publish({ message: message('a/b', 'x'), deliveries: [to('a')], inbound: { clientId: 'a', packetId: 7 } });
          await repository.createSession('a');
          expect(normalizeSessions(await repository.loadSessions())).toEqual([
            { clientId: 'a', subscriptions: [{ filter: 'a/b', qos: 1 }] },
          ]);
          expect(await readAll(repository, 'a')).toHaveLength(1);
          expect(await repository.loadInbound('a')).toEqual([7]);
        }));

      it('a new store holds no sessions and no retained messages', () =>
        withFixture(async ({ repository }) => {
          expect(await repository.loadSessions()).toEqual([]);
          expect(await loadRetained(repository)).toEqual([]);
          expect(await readAll(repository, 'nobody')).toEqual([]);
          expect(await repository.loadInbound('nobody')).toEqual([]);
        }));

      it('loadSessions returns every session with its subscriptions (and [] for none)', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          await repository.createSession('b');
          await repository.createSession('c');
          await repository.subscribe('a', [
            { filter: 'sport/+/score', qos: 2 },
            { filter: '#', qos: 0 },
          ]);
          await repository.subscribe('b', [{ filter: 'a/b', qos: 1 }]);
          expect(normalizeSessions(await repository.loadSessions())).toEqual([
            {
              clientId: 'a',
              subscriptions: [
                { filter: '#', qos: 0 },
                { filter: 'sport/+/score', qos: 2 },
              ],
            },
            { clientId: 'b', subscriptions: [{ filter: 'a/b', qos: 1 }] },
            { clientId: 'c', subscriptions: [] },
          ]);
        }));

      it('client ids and filters that share a prefix stay apart', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          await repository.createSession('ab');
          await repository.createSession('a/b');
          await repository.subscribe('a', [{ filter: 'x', qos: 0 }]);
          await repository.subscribe('ab', [{ filter: 'x/y', qos: 1 }]);
          await repository.subscribe('a/b', [{ filter: 'x', qos: 2 }, { filter: 'x/#', qos: 2 }]);
          await repository.publish({ message: message('x', 'to-ab'), deliveries: [to('ab')], inbound: { clientId: 'ab', packetId: 3 } });
          expect(normalizeSessions(await repository.loadSessions())).toEqual([
            { clientId: 'a', subscriptions: [{ filter: 'x', qos: 0 }] },
            { clientId: 'a/b', subscriptions: [{ filter: 'x', qos: 2 }, { filter: 'x/#', qos: 2 }] },
            { clientId: 'ab', subscriptions: [{ filter: 'x/y', qos: 1 }] },
          ]);
          expect(await readAll(repository, 'a')).toEqual([]);
          expect(await repository.loadInbound('a')).toEqual([]);
          expect((await readAll(repository, 'ab')).map((e) => e.message.payload.toString())).toEqual(['to-ab']);
          await repository.destroySession('a');
          expect(normalizeSessions(await repository.loadSessions()).map((s) => s.clientId)).toEqual(['a/b', 'ab']);
          expect(await readAll(repository, 'ab')).toHaveLength(1);
          expect(await repository.loadInbound('ab')).toEqual([3]);
        }));

      it('subscribe to an existing filter replaces its QoS [MQTT-3.8.4-3]', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          await repository.subscribe('a', [
            { filter: 'a/b', qos: 2 },
            { filter: 'c/d', qos: 1 },
          ]);
          await repository.subscribe('a', [{ filter: 'a/b', qos: 0 }]);
          expect(normalizeSessions(await repository.loadSessions())).toEqual([
            {
              clientId: 'a',
              subscriptions: [
                { filter: 'a/b', qos: 0 },
                { filter: 'c/d', qos: 1 },
              ],
            },
          ]);
        }));

      it('unsubscribe removes the named filters only; an unknown filter is a no-op', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          await repository.subscribe('a', [
            { filter: 'a/b', qos: 1 },
            { filter: 'c/d', qos: 2 },
            { filter: 'e/#', qos: 0 },
          ]);
          await repository.unsubscribe('a', ['a/b', 'e/#', 'not/subscribed']);
          expect(normalizeSessions(await repository.loadSessions())).toEqual([
            { clientId: 'a', subscriptions: [{ filter: 'c/d', qos: 2 }] },
          ]);
        }));

      it('subscribe for an unknown session rejects with STORE_UNKNOWN_SESSION and stores nothing', () =>
        withFixture(async ({ repository }) => {
          await expectRejection(
            () => repository.subscribe('ghost', [{ filter: 'a/b', qos: 1 }]),
            ErrorCodes.STORE_UNKNOWN_SESSION,
          );
          expect(await repository.loadSessions()).toEqual([]);
        }));

      it('unsubscribe for an unknown session rejects with STORE_UNKNOWN_SESSION', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          await expectRejection(() => repository.unsubscribe('ghost', ['a/b']), ErrorCodes.STORE_UNKNOWN_SESSION);
          expect(normalizeSessions(await repository.loadSessions())).toEqual([{ clientId: 'a', subscriptions: [] }]);
        }));

      it('a destroyed session is unknown: subscribe rejects with STORE_UNKNOWN_SESSION', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          await repository.destroySession('a');
          await expectRejection(
            () => repository.subscribe('a', [{ filter: 'a/b', qos: 1 }]),
            ErrorCodes.STORE_UNKNOWN_SESSION,
          );
          expect(await repository.loadSessions()).toEqual([]);
        }));
    });

    describe('publish and readOutbound', () => {
      it('returns a Map of clientId → seq with one seq per delivery', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          await repository.createSession('b');
          await repository.createSession('c');
          const seqs = await repository.publish({ message: message('t', 'p'), deliveries: [to('a'), to('b')] });
          expect(seqs).toBeInstanceOf(Map);
          expect([...seqs.keys()].sort()).toEqual(['a', 'b']);
          for (const seq of seqs.values()) expect(Number.isSafeInteger(seq)).toBe(true);
          expect(await readAll(repository, 'c')).toEqual([]);
        }));

      it('a publish with no deliveries returns an empty Map and queues nothing', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          const seqs = await repository.publish({ message: message('t', 'p'), deliveries: [] });
          expect(seqs.size).toBe(0);
          expect(await readAll(repository, 'a')).toEqual([]);
        }));

      it('seqs of a session strictly increase across publishes, interleaved with other sessions', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          await repository.createSession('b');
          const seen: Record<string, number[]> = { a: [], b: [] };
          const plan: string[][] = [['a'], ['a', 'b'], ['b'], ['b', 'a'], ['a'], ['b']];
          for (const [index, clients] of plan.entries()) {
            const seqs = await repository.publish({
              message: message('t', `m${index}`),
              deliveries: clients.map((clientId) => to(clientId)),
            });
            for (const clientId of clients) seen[clientId]!.push(seqOf(seqs, clientId));
          }
          for (const clientId of ['a', 'b']) {
            const seqs = seen[clientId]!;
            for (let i = 1; i < seqs.length; i++) expect(seqs[i]!).toBeGreaterThan(seqs[i - 1]!);
            expect((await readAll(repository, clientId)).map((entry) => entry.seq)).toEqual(seqs);
          }
        }));

      it('seqs keep increasing after entries are completed (a seq is never reused)', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          const first = seqOf(await repository.publish({ message: message('t', '1'), deliveries: [to('a')] }), 'a');
          const second = seqOf(await repository.publish({ message: message('t', '2'), deliveries: [to('a')] }), 'a');
          await repository.complete('a', second);
          await repository.complete('a', first);
          const third = seqOf(await repository.publish({ message: message('t', '3'), deliveries: [to('a')] }), 'a');
          expect(third).toBeGreaterThan(second);
        }));

      it('readOutbound returns queued entries with message, delivery qos, retain flag, state queued and no packetId', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          const binary = Buffer.from([0x00, 0xff, 0x10, 0x00, 0x7f, 0x80]);
          const s1 = await repository.publish({ message: message('sport/tennis/score', binary, 2), deliveries: [to('a', 1, false)] });
          const s2 = await repository.publish({ message: message('a/b', Buffer.alloc(0), 0), deliveries: [to('a', 0, true)] });
          const s3 = await repository.publish({ message: message('ünï/cødé', 'héllo', 1), deliveries: [to('a', 1, false)] });
          const entries = await readAll(repository, 'a');
          expect(entries).toHaveLength(3);
          const [e1, e2, e3] = entries as [OutboundEntry, OutboundEntry, OutboundEntry];
          expect(e1.seq).toBe(seqOf(s1, 'a'));
          expect(e2.seq).toBe(seqOf(s2, 'a'));
          expect(e3.seq).toBe(seqOf(s3, 'a'));
          for (const entry of entries) {
            expect(Buffer.isBuffer(entry.message.payload)).toBe(true);
            expect(entry.state).toBe('queued');
            expect(entry.packetId).toBeUndefined();
          }
          expect(e1.message.topic).toBe('sport/tennis/score');
          expect(e1.message.payload.equals(binary)).toBe(true);
          expect(e1.message.qos).toBe(2);
          expect(e1.qos).toBe(1);
          expect(e1.retain).toBe(false);
          expect(e2.message.topic).toBe('a/b');
          expect(e2.message.payload.length).toBe(0);
          expect(e2.message.qos).toBe(0);
          expect(e2.qos).toBe(0);
          expect(e2.retain).toBe(true);
          expect(e3.message.topic).toBe('ünï/cødé');
          expect(e3.message.payload.equals(Buffer.from('héllo'))).toBe(true);
        }));

      it('a large payload comes back byte-equal', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          await repository.createSession('b');
          const big = Buffer.alloc(256 * 1024);
          for (let i = 0; i < big.length; i++) big[i] = (i * 31 + 7) & 0xff;
          await repository.publish({ message: message('big', big, 1), deliveries: [to('a')] });
          await repository.publish({ message: message('big', big, 1), deliveries: [to('a'), to('b')] });
          for (const clientId of ['a', 'b']) {
            for (const entry of await readAll(repository, clientId)) expect(entry.message.payload.equals(big)).toBe(true);
          }
        }));

      it('each delivery of a fan-out has its own qos and retain flag; the message is shared', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          await repository.createSession('b');
          await repository.createSession('c');
          await repository.publish({
            message: message('fan/out', 'body', 2),
            deliveries: [to('a', 0, false), to('b', 2, true), to('c', 1, false)],
          });
          const [a] = await readAll(repository, 'a');
          const [b] = await readAll(repository, 'b');
          const [c] = await readAll(repository, 'c');
          expect([a?.qos, b?.qos, c?.qos]).toEqual([0, 2, 1]);
          expect([a?.retain, b?.retain, c?.retain]).toEqual([false, true, false]);
          for (const entry of [a, b, c]) {
            expect(entry?.message.topic).toBe('fan/out');
            expect(entry?.message.qos).toBe(2);
            expect(entry?.message.payload.equals(Buffer.from('body'))).toBe(true);
          }
        }));

      it('readOutbound returns only seq > afterSeq, in seq order, at most limit', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          const seqs: number[] = [];
          for (let i = 0; i < 7; i++) {
            seqs.push(seqOf(await repository.publish({ message: message('t', `m${i}`), deliveries: [to('a')] }), 'a'));
          }
          const payloads = (entries: OutboundEntry[]) => entries.map((e) => e.message.payload.toString());
          expect(payloads(await repository.readOutbound('a', 0, 100))).toEqual(['m0', 'm1', 'm2', 'm3', 'm4', 'm5', 'm6']);
          expect(payloads(await repository.readOutbound('a', 0, 3))).toEqual(['m0', 'm1', 'm2']);
          expect(payloads(await repository.readOutbound('a', seqs[2]!, 2))).toEqual(['m3', 'm4']);
          expect(payloads(await repository.readOutbound('a', seqs[5]!, 10))).toEqual(['m6']);
          expect(await repository.readOutbound('a', seqs[6]!, 10)).toEqual([]);
          expect(await repository.readOutbound('a', 0, 0)).toEqual([]);
          // afterSeq between two seqs (after a completed entry) still works.
          await repository.complete('a', seqs[3]!);
          expect(payloads(await repository.readOutbound('a', seqs[2]!, 2))).toEqual(['m4', 'm5']);
          expect(payloads(await repository.readOutbound('a', seqs[3]!, 1))).toEqual(['m4']);
        }));

      it('readOutbound with maxBytes stops at the entry whose payload brings the total to it; the first entry comes whatever its size', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          await repository.createSession('b');
          // Payload sizes 3, 5, 2, 4; the third is a body shared with b, counted at its own size too.
          await repository.publish({ message: message('t', 'aaa'), deliveries: [to('a')] });
          await repository.publish({ message: message('t', 'bbbbb'), deliveries: [to('a')] });
          await repository.publish({ message: message('t', 'cc'), deliveries: [to('a'), to('b')] });
          await repository.publish({ message: message('t', 'dddd'), deliveries: [to('a')] });
          const payloads = (entries: OutboundEntry[]) => entries.map((e) => e.message.payload.toString());
          expect(payloads(await repository.readOutbound('a', 0, 10, 1))).toEqual(['aaa']);
          expect(payloads(await repository.readOutbound('a', 0, 10, 3))).toEqual(['aaa']);
          expect(payloads(await repository.readOutbound('a', 0, 10, 4))).toEqual(['aaa', 'bbbbb']);
          expect(payloads(await repository.readOutbound('a', 0, 10, 8))).toEqual(['aaa', 'bbbbb']);
          expect(payloads(await repository.readOutbound('a', 0, 10, 9))).toEqual(['aaa', 'bbbbb', 'cc']);
          expect(payloads(await repository.readOutbound('a', 0, 10, 11))).toEqual(['aaa', 'bbbbb', 'cc', 'dddd']);
          expect(payloads(await repository.readOutbound('a', 0, 10, 1000))).toEqual(['aaa', 'bbbbb', 'cc', 'dddd']);
          // The count limit still applies, whichever comes first.
          expect(payloads(await repository.readOutbound('a', 0, 2, 1000))).toEqual(['aaa', 'bbbbb']);
          const [first] = await repository.readOutbound('a', 0, 1);
          expect(payloads(await repository.readOutbound('a', first!.seq, 10, 6))).toEqual(['bbbbb', 'cc']);
        }));

      it('paging with a small limit visits every entry exactly once, in order', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          for (let i = 0; i < 11; i++) await repository.publish({ message: message('t', `m${i}`), deliveries: [to('a')] });
          const seen: string[] = [];
          let after = 0;
          for (;;) {
            const page = await repository.readOutbound('a', after, 3);
            expect(page.length).toBeLessThanOrEqual(3);
            if (page.length === 0) break;
            seen.push(...page.map((e) => e.message.payload.toString()));
            after = page[page.length - 1]!.seq;
          }
          expect(seen).toEqual(Array.from({ length: 11 }, (_, i) => `m${i}`));
        }));

      it('a publish naming one unknown session among known ones rejects with STORE_UNKNOWN_SESSION and stores nothing for anyone', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          await repository.createSession('b');
          await expectRejection(
            () =>
              repository.publish({
                message: message('t', 'lost'),
                deliveries: [to('a'), to('ghost'), to('b')],
                retained: 'set',
                inbound: { clientId: 'a', packetId: 9 },
              }),
            ErrorCodes.STORE_UNKNOWN_SESSION,
          );
          expect(await readAll(repository, 'a')).toEqual([]);
          expect(await readAll(repository, 'b')).toEqual([]);
          expect(await readAll(repository, 'ghost')).toEqual([]);
          expect(await loadRetained(repository)).toEqual([]);
          expect(await repository.loadInbound('a')).toEqual([]);
          expect(normalizeSessions(await repository.loadSessions()).map((s) => s.clientId)).toEqual(['a', 'b']);
          // The sessions still work afterwards.
          const seqs = await repository.publish({ message: message('t', 'ok'), deliveries: [to('a'), to('b')] });
          expect((await readAll(repository, 'a')).map((e) => e.seq)).toEqual([seqOf(seqs, 'a')]);
          expect((await readAll(repository, 'b')).map((e) => e.seq)).toEqual([seqOf(seqs, 'b')]);
        }));

      it('a publish whose only delivery is to an unknown session rejects with STORE_UNKNOWN_SESSION', () =>
        withFixture(async ({ repository }) => {
          await expectRejection(
            () => repository.publish({ message: message('t', 'lost'), deliveries: [to('ghost')], retained: 'set' }),
            ErrorCodes.STORE_UNKNOWN_SESSION,
          );
          expect(await loadRetained(repository)).toEqual([]);
          expect(await repository.loadSessions()).toEqual([]);
        }));

      it('a publish whose inbound packet id names an unknown session rejects and queues nothing', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          await expectRejection(
            () =>
              repository.publish({
                message: message('t', 'lost'),
                deliveries: [to('a')],
                inbound: { clientId: 'ghost', packetId: 1 },
              }),
            ErrorCodes.STORE_UNKNOWN_SESSION,
          );
          expect(await readAll(repository, 'a')).toEqual([]);
          expect(await repository.loadInbound('ghost')).toEqual([]);
        }));
    });

    describe('outbound flight: raiseDupMark, markReleased, complete', () => {
      async function oneEntry(repository: SessionRepository, qos: QoS = 2): Promise<number> {
        await repository.createSession('a');
        return seqOf(await repository.publish({ message: message('t', 'p', qos), deliveries: [to('a', qos)] }), 'a');
      }

      /** Creates session a and publishes `count` messages m0… to it; returns their seqs. */
      async function entries(repository: SessionRepository, count: number, qos: QoS = 1): Promise<number[]> {
        await repository.createSession('a');
        const seqs: number[] = [];
        for (let i = 0; i < count; i++) {
          seqs.push(seqOf(await repository.publish({ message: message('t', `m${i}`, qos), deliveries: [to('a', qos)] }), 'a'));
        }
        return seqs;
      }

      async function statesOf(repository: SessionRepository, clientId = 'a'): Promise<[number, OutboundState, number | undefined][]> {
        return (await readAll(repository, clientId)).map((e) => [e.seq, e.state, e.packetId]);
      }

      it('raiseDupMark(through) makes every entry up to through read back as dup, with no packet id; the others stay queued', () =>
        withFixture(async ({ repository }) => {
          const seqs = await entries(repository, 4);
          await repository.raiseDupMark('a', seqs[1]!);
          for (let i = 0; i < 2; i++) {
            expect(await statesOf(repository)).toEqual([
              [seqs[0], 'dup', undefined],
              [seqs[1], 'dup', undefined],
              [seqs[2], 'queued', undefined],
              [seqs[3], 'queued', undefined],
            ]);
          }
          const [first] = await readAll(repository, 'a');
          expect(first).toMatchObject({ seq: seqs[0], qos: 1, retain: false, state: 'dup' });
          expect(first?.message.payload.equals(Buffer.from('m0'))).toBe(true);
          expect(first?.packetId).toBeUndefined();
        }));

      it('raiseDupMark only raises the DUP mark; setDupMark moves it down and entries above it read back as queued again', () =>
        withFixture(async ({ repository }) => {
          const seqs = await entries(repository, 4);
          await repository.raiseDupMark('a', seqs[3]!);
          expect((await statesOf(repository)).map(([, state]) => state)).toEqual(['dup', 'dup', 'dup', 'dup']);
          await repository.raiseDupMark('a', seqs[0]!);
          expect((await statesOf(repository)).map(([, state]) => state)).toEqual(['dup', 'dup', 'dup', 'dup']);
          await repository.setDupMark('a', seqs[0]!);
          expect((await statesOf(repository)).map(([, state]) => state)).toEqual(['dup', 'queued', 'queued', 'queued']);
          await repository.setDupMark('a', 0);
          expect((await statesOf(repository)).map(([, state]) => state)).toEqual(['queued', 'queued', 'queued', 'queued']);
          await repository.raiseDupMark('a', seqs[2]!);
          await repository.raiseDupMark('a', seqs[2]!);
          expect((await statesOf(repository)).map(([, state]) => state)).toEqual(['dup', 'dup', 'dup', 'queued']);
        }));

      it('a DUP mark between two seqs (over completed entries) covers exactly the entries at or below it', () =>
        withFixture(async ({ repository }) => {
          const seqs = await entries(repository, 5);
          await repository.complete('a', seqs[1]!);
          await repository.complete('a', seqs[2]!);
          await repository.raiseDupMark('a', seqs[2]!);
          expect(await statesOf(repository)).toEqual([
            [seqs[0], 'dup', undefined],
            [seqs[3], 'queued', undefined],
            [seqs[4], 'queued', undefined],
          ]);
        }));

      it('raiseDupMark is capped at the highest seq given: a later publish reads back as queued', () =>
        withFixture(async ({ repository }) => {
          const seqs = await entries(repository, 2);
          await repository.raiseDupMark('a', seqs[1]! + 1000);
          expect((await statesOf(repository)).map(([, state]) => state)).toEqual(['dup', 'dup']);
          const third = seqOf(await repository.publish({ message: message('t', 'later'), deliveries: [to('a')] }), 'a');
          expect(await statesOf(repository)).toEqual([
            [seqs[0], 'dup', undefined],
            [seqs[1], 'dup', undefined],
            [third, 'queued', undefined],
          ]);
          // Moving it up again covers the new entry.
          await repository.raiseDupMark('a', third);
          expect((await statesOf(repository)).map(([, state]) => state)).toEqual(['dup', 'dup', 'dup']);
        }));

      it('raiseDupMark past the last seq of a drained queue, or of a session that never had one, does not cover later entries', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('fresh');
          await repository.raiseDupMark('fresh', 50);
          const seqs = await entries(repository, 2);
          await repository.raiseDupMark('a', Number.MAX_SAFE_INTEGER);
          for (const seq of seqs) await repository.complete('a', seq);
          const after = await repository.publish({ message: message('t', 'after'), deliveries: [to('a'), to('fresh')] });
          expect(await statesOf(repository, 'a')).toEqual([[seqOf(after, 'a'), 'queued', undefined]]);
          expect(await statesOf(repository, 'fresh')).toEqual([[seqOf(after, 'fresh'), 'queued', undefined]]);
        }));

      it('raiseDupMark for an unknown session resolves and changes nothing', () =>
        withFixture(async ({ repository }) => {
          const seq = await oneEntry(repository, 1);
          await repository.raiseDupMark('nobody', seq);
          expect(await statesOf(repository)).toEqual([[seq, 'queued', undefined]]);
          expect(await readAll(repository, 'nobody')).toEqual([]);
          expect(await repository.loadSessions()).toHaveLength(1);
          expect(await repository.queueStats('nobody')).toBeUndefined();
        }));

      it('markReleased turns a sent entry into released with the given packet id, so PUBREL is resent with it [MQTT-4.4.0-1]', () =>
        withFixture(async ({ repository }) => {
          const seqs = await entries(repository, 3, 2);
          await repository.raiseDupMark('a', seqs[1]!);
          await repository.markReleased('a', [{ entry: seqs[0]!, packetId: 7 }]);
          for (let i = 0; i < 2; i++) {
            expect(await statesOf(repository)).toEqual([
              [seqs[0], 'released', 7],
              [seqs[1], 'dup', undefined],
              [seqs[2], 'queued', undefined],
            ]);
          }
          await repository.markReleased('a', [{ entry: seqs[1]!, packetId: 65535 }]);
          expect(await statesOf(repository)).toEqual([
            [seqs[0], 'released', 7],
            [seqs[1], 'released', 65535],
            [seqs[2], 'queued', undefined],
          ]);
        }));

      it('markReleased takes an entry as readOutbound returned it, as complete does; once that entry is completed it gets no release', () =>
        withFixture(async ({ repository }) => {
          const seqs = await entries(repository, 3, 2);
          await repository.raiseDupMark('a', seqs[2]!);
          const [first, second, third] = await readAll(repository, 'a');
          await repository.markReleased('a', [{ entry: first!, packetId: 5 }]);
          expect(await statesOf(repository)).toEqual([
            [seqs[0], 'released', 5],
            [seqs[1], 'dup', undefined],
            [seqs[2], 'dup', undefined],
          ]);
          // Completed first, then a late PUBREC's release: nothing, whether in one batch or after it.
          await repository.complete('a', second!);
          await repository.markReleased('a', [{ entry: second!, packetId: 6 }]);
          await Promise.all([repository.complete('a', third!), repository.markReleased('a', [{ entry: third!, packetId: 7 }])]);
          expect(await statesOf(repository)).toEqual([[seqs[0], 'released', 5]]);
          expect(await repository.queueStats('a')).toEqual({ messages: 1, bytes: 2, dropped: 0 });
        }));

      it('an entry handed out before its session was destroyed names nothing in the session made after it, whose seqs start again', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          await repository.createSession('b');
          // Alone (publish's own handle) and with another session (one body for both, in a store that shares it).
          const alone = to('a', 2);
          const aloneSeq = seqOf(await repository.publish({ message: message('t', 'old alone', 2), deliveries: [alone] }), 'a');
          await repository.publish({ message: message('t', 'old shared', 2), deliveries: [to('a', 2), to('b', 2)] });
          const [, shared] = await readAll(repository, 'a');
          const handles = [{ seq: aloneSeq, stored: alone.stored }, shared!];
          await repository.destroySession('a');
          await repository.createSession('a');
          const seqs = await entries(repository, 2, 2);
          // What makes the case: the new session's entries have the old ones' seqs.
          expect(seqs).toEqual(handles.map(({ seq }) => seq));

          await repository.markReleased('a', handles.map((entry) => ({ entry, packetId: 9 })));
          await repository.complete('a', ...handles);
          expect(await statesOf(repository)).toEqual([
            [seqs[0], 'queued', undefined],
            [seqs[1], 'queued', undefined],
          ]);
          expect((await readAll(repository, 'b')).map((entry) => entry.message.payload.toString())).toEqual(['old shared']);
        }));

      it('markReleased of several entries is one transition: each still queued is released, one completed before is skipped', () =>
        withFixture(async ({ repository }) => {
          const seqs = await entries(repository, 3, 2);
          await repository.raiseDupMark('a', seqs[2]!);
          await repository.complete('a', seqs[1]!);
          await repository.markReleased('a', [{ entry: seqs[0]!, packetId: 3 }, { entry: seqs[1]!, packetId: 4 }, { entry: seqs[2]!, packetId: 5 }]);
          expect(await statesOf(repository)).toEqual([
            [seqs[0], 'released', 3],
            [seqs[2], 'released', 5],
          ]);
        }));

      describe('releasedThrough: the caller\'s word that every QoS 2 entry up to a seq had its PUBREC', () => {
        /** Session a with entries of these QoS, all sent (DUP mark over them), as readOutbound hands them out. */
        async function sentEntries(repository: SessionRepository, qos: QoS[]): Promise<OutboundEntry[]> {
          await repository.createSession('a');
          for (const [index, q] of qos.entries()) await repository.publish({ message: message('t', `m${index}`, q), deliveries: [to('a', q)] });
          const handed = await readAll(repository, 'a');
          await repository.raiseDupMark('a', handed[handed.length - 1]!.seq);
          return handed;
        }
        const release = (entry: OutboundEntry) => ({ entry, packetId: packetIdOf(entry.seq) });
        /** [seq, state, the packet id PUBREL goes with]: the stored one, else the one the seq gives. */
        const flightOf = async (repository: SessionRepository) =>
          (await readAll(repository, 'a')).map((e) => [e.seq, e.state, e.state === 'released' ? (e.packetId ?? packetIdOf(e.seq)) : undefined]);

        it('in order and out of order, each PUBREC\'d QoS 2 entry reads back released with its seq\'s packet id; QoS 1 entries under the mark and entries above it do not', () =>
          withFixture(async ({ repository }) => {
            const handed = await sentEntries(repository, [2, 1, 2, 2, 2]);
            const [q2a, q1, q2b, q2c, q2d] = handed;
            await repository.markReleased('a', [release(q2a!)], q2a!.seq);
            // Out of order: q2b still waits for its PUBREC, so the word stays at q2a.
            await repository.markReleased('a', [release(q2c!)], q2a!.seq);
            expect(await flightOf(repository)).toEqual([
              [q2a!.seq, 'released', packetIdOf(q2a!.seq)],
              [q1!.seq, 'dup', undefined],
              [q2b!.seq, 'dup', undefined],
              [q2c!.seq, 'released', packetIdOf(q2c!.seq)],
              [q2d!.seq, 'dup', undefined],
            ]);
            await repository.markReleased('a', [release(q2b!)], q2c!.seq);
            expect(await flightOf(repository)).toEqual([
              [q2a!.seq, 'released', packetIdOf(q2a!.seq)],
              [q1!.seq, 'dup', undefined],
              [q2b!.seq, 'released', packetIdOf(q2b!.seq)],
              [q2c!.seq, 'released', packetIdOf(q2c!.seq)],
              [q2d!.seq, 'dup', undefined],
            ]);
            // PUBCOMPs and the PUBACK: each entry leaves as it is completed, whichever way it was released.
            await repository.complete('a', q2c!, q2a!);
            expect(await flightOf(repository)).toEqual([
              [q1!.seq, 'dup', undefined],
              [q2b!.seq, 'released', packetIdOf(q2b!.seq)],
              [q2d!.seq, 'dup', undefined],
            ]);
            await repository.complete('a', q1!, q2b!);
            await repository.markReleased('a', [release(q2d!)], q2d!.seq);
            expect(await flightOf(repository)).toEqual([[q2d!.seq, 'released', packetIdOf(q2d!.seq)]]);
            await repository.complete('a', q2d!);
            expect(await readAll(repository, 'a')).toEqual([]);
            expect(await repository.queueStats('a')).toEqual({ messages: 0, bytes: 0, dropped: 0 });
            // What comes after the mark is a new delivery: queued, not released.
            await repository.publish({ message: message('t', 'after', 2), deliveries: [to('a', 2)] });
            expect((await flightOf(repository)).map(([, state]) => state)).toEqual(['queued']);
          }));

        it('with handles of a session destroyed meanwhile it releases nothing in the session made after it, whose seqs start again', () =>
          withFixture(async ({ repository }) => {
            const old = await sentEntries(repository, [2, 2]);
            await repository.destroySession('a');
            const again = await sentEntries(repository, [2, 2]);
            // What makes the case: the new session's entries have the old ones' seqs.
            expect(again.map(({ seq }) => seq)).toEqual(old.map(({ seq }) => seq));
            await repository.markReleased('a', old.map(release), old[1]!.seq);
            expect((await flightOf(repository)).map(([, state]) => state)).toEqual(['dup', 'dup']);
          }));

        it('after a reopen, entries given seqs after everything under the mark was completed are queued, not released', ({ skip }) =>
          withReopen(skip, async (repository, reopen) => {
            const handed = await sentEntries(repository, [2, 2, 2]);
            await repository.markReleased('a', handed.map(release), handed[2]!.seq);
            await repository.complete('a', ...handed);
            // A connection that ends with nothing in flight sets the DUP mark down to what it sent.
            await repository.setDupMark('a', 0);
            const reopened = await reopen();
            await reopened.publish({ message: message('t', 'after', 2), deliveries: [to('a', 2)] });
            const [entry] = await readAll(reopened, 'a');
            expect(entry!.seq).toBeGreaterThan(handed[2]!.seq);
            expect(entry!.state).toBe('queued');
          }));
      });

      it('a released entry stays released with its packet id whatever the DUP mark does at or above it', () =>
        withFixture(async ({ repository }) => {
          const seqs = await entries(repository, 3, 2);
          await repository.raiseDupMark('a', seqs[1]!);
          await repository.markReleased('a', [{ entry: seqs[1]!, packetId: 9 }]);
          await repository.raiseDupMark('a', seqs[2]! + 10);
          expect(await statesOf(repository)).toEqual([
            [seqs[0], 'dup', undefined],
            [seqs[1], 'released', 9],
            [seqs[2], 'dup', undefined],
          ]);
          await repository.setDupMark('a', seqs[1]!);
          expect(await statesOf(repository)).toEqual([
            [seqs[0], 'dup', undefined],
            [seqs[1], 'released', 9],
            [seqs[2], 'queued', undefined],
          ]);
        }));

      it('complete removes the entry and leaves the others', () =>
        withFixture(async ({ repository }) => {
          const seqs = await entries(repository, 4, 2);
          await repository.raiseDupMark('a', seqs[2]!);
          await repository.markReleased('a', [{ entry: seqs[0]!, packetId: 1 }]);
          await repository.complete('a', seqs[1]!);
          expect(await statesOf(repository)).toEqual([
            [seqs[0], 'released', 1],
            [seqs[2], 'dup', undefined],
            [seqs[3], 'queued', undefined],
          ]);
          await repository.complete('a', seqs[0]!);
          expect(await statesOf(repository)).toEqual([
            [seqs[2], 'dup', undefined],
            [seqs[3], 'queued', undefined],
          ]);
          await repository.complete('a', seqs[2]!);
          await repository.complete('a', seqs[3]!);
          expect(await readAll(repository, 'a')).toEqual([]);
        }));

      it('complete of a queued (never sent) entry drops it', () =>
        withFixture(async ({ repository }) => {
          const seq = await oneEntry(repository, 0);
          await repository.complete('a', seq);
          expect(await readAll(repository, 'a')).toEqual([]);
        }));

      it('complete and markReleased of a missing seq, and of an unknown session, are harmless no-ops', () =>
        withFixture(async ({ repository }) => {
          const seq = await oneEntry(repository, 2);
          await repository.raiseDupMark('a', seq);
          const before = (await readAll(repository, 'a')).map(normalizeEntry);
          await repository.complete('a', seq + 1000);
          await repository.markReleased('a', [{ entry: seq + 1000, packetId: 6 }]);
          await repository.complete('nobody', seq);
          await repository.raiseDupMark('nobody', seq);
          await repository.markReleased('nobody', [{ entry: seq, packetId: 6 }]);
          expect((await readAll(repository, 'a')).map(normalizeEntry)).toEqual(before);
          expect(await readAll(repository, 'nobody')).toEqual([]);
          expect(await repository.queueStats('a')).toEqual({ messages: 1, bytes: 1, dropped: 0 });
          // A completed seq stays gone whatever arrives late for it.
          await repository.complete('a', seq);
          await repository.complete('a', seq);
          await repository.markReleased('a', [{ entry: seq, packetId: 9 }]);
          expect(await readAll(repository, 'a')).toEqual([]);
          expect(await repository.queueStats('a')).toEqual({ messages: 0, bytes: 0, dropped: 0 });
          const next = seqOf(await repository.publish({ message: message('t', 'n'), deliveries: [to('a')] }), 'a');
          expect(await statesOf(repository)).toEqual([[next, 'queued', undefined]]);
        }));

      it('transitions submitted without awaiting apply in submission order', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          const seq = seqOf(await repository.publish({ message: message('t', 'p', 2), deliveries: [to('a', 2)] }), 'a');
          const second = seqOf(await repository.publish({ message: message('t', 'q', 2), deliveries: [to('a', 2)] }), 'a');
          const third = seqOf(await repository.publish({ message: message('t', 'r', 2), deliveries: [to('a', 2)] }), 'a');
          await Promise.all([
            repository.raiseDupMark('a', seq),
            repository.markReleased('a', [{ entry: seq, packetId: 11 }]),
            repository.raiseDupMark('a', third),
            repository.markReleased('a', [{ entry: second, packetId: 12 }]),
            repository.complete('a', second),
            repository.setDupMark('a', seq),
          ]);
          expect(await statesOf(repository)).toEqual([
            [seq, 'released', 11],
            [third, 'queued', undefined],
          ]);
        }));

      it('a delivery stored with raiseDupMark: true raises the DUP mark to it in the same transition', () =>
        withFixture(async ({ repository }) => {
          const first = await oneEntry(repository, 1);
          const marked = seqOf(await repository.publish({ message: message('t', 'now'), deliveries: [{ ...to('a'), raiseDupMark: true }] }), 'a');
          const later = seqOf(await repository.publish({ message: message('t', 'later'), deliveries: [to('a')] }), 'a');
          expect(await statesOf(repository)).toEqual([
            [first, 'dup', undefined],
            [marked, 'dup', undefined],
            [later, 'queued', undefined],
          ]);
          // Raise only: a later raiseDupMark below it changes nothing.
          await repository.raiseDupMark('a', first);
          expect((await statesOf(repository)).map(([, state]) => state)).toEqual(['dup', 'dup', 'queued']);
        }));

      it('a publish submitted right after raiseDupMark without awaiting reads back as queued', () =>
        withFixture(async ({ repository }) => {
          const seq = await oneEntry(repository, 1);
          const [, later] = await Promise.all([
            repository.raiseDupMark('a', seq + 1),
            repository.publish({ message: message('t', 'later'), deliveries: [to('a')] }),
          ]);
          expect(await statesOf(repository)).toEqual([
            [seq, 'dup', undefined],
            [seqOf(later, 'a'), 'queued', undefined],
          ]);
        }));

      it('createSession, subscribe and publish submitted without awaiting all apply', () =>
        withFixture(async ({ repository }) => {
          const results = await Promise.all([
            repository.createSession('a'),
            repository.subscribe('a', [{ filter: 't', qos: 1 }]),
            repository.publish({ message: message('t', 'p'), deliveries: [to('a')], inbound: { clientId: 'a', packetId: 4 } }),
          ]);
          const seqs = results[2];
          expect(normalizeSessions(await repository.loadSessions())).toEqual([
            { clientId: 'a', subscriptions: [{ filter: 't', qos: 1 }] },
          ]);
          expect((await readAll(repository, 'a')).map((e) => e.seq)).toEqual([seqOf(seqs, 'a')]);
          expect(await repository.loadInbound('a')).toEqual([4]);
        }));
    });

    describe('queue limits and queueStats', () => {
      const stats = (messages: number, bytes: number, dropped: number): QueueStats => ({ messages, bytes, dropped });

      it('queueStats is undefined for an unknown session and zero for a new one', () =>
        withFixture(async ({ repository }) => {
          expect(await repository.queueStats('nobody')).toBeUndefined();
          await repository.createSession('a');
          expect(await repository.queueStats('a')).toEqual(stats(0, 0, 0));
        }));

      it('queueStats counts queued and in-flight entries and their payload bytes; complete takes an entry out', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          await repository.createSession('b');
          const seqs: number[] = [];
          for (const payload of ['12345', '', 'abc']) {
            seqs.push(seqOf(await repository.publish({ message: message('t', payload, 2), deliveries: [to('a', 2), to('b', 2)] }), 'a'));
          }
          // A shared body counts in full for every session that holds it.
          expect(await repository.queueStats('a')).toEqual(stats(3, 8, 0));
          expect(await repository.queueStats('b')).toEqual(stats(3, 8, 0));
          await repository.raiseDupMark('a', seqs[2]!);
          await repository.markReleased('a', [{ entry: seqs[0]!, packetId: 1 }]);
          expect(await repository.queueStats('a')).toEqual(stats(3, 8, 0));
          await repository.complete('a', seqs[0]!);
          expect(await repository.queueStats('a')).toEqual(stats(2, 3, 0));
          await repository.complete('a', seqs[0]!); // a duplicate PUBCOMP counts once
          await repository.complete('a', seqs[1]!);
          expect(await repository.queueStats('a')).toEqual(stats(1, 3, 0));
          await repository.complete('a', seqs[2]!);
          expect(await repository.queueStats('a')).toEqual(stats(0, 0, 0));
          expect(await repository.queueStats('b')).toEqual(stats(3, 8, 0));
        }));

      it('complete with many seqs is one transition: each entry counted out once, duplicates and unknown seqs ignored', () =>
        withFixture(async ({ repository }) => {
          // 100 entries: more than a batch reads on the main thread, so the off-thread read is used too.
          await repository.createSession('a');
          await repository.createSession('b');
          const seqs: number[] = [];
          for (let i = 0; i < 100; i++) {
            const deliveries = i % 10 === 0 ? [to('a', 2), to('b', 2)] : [to('a', i % 2 === 0 ? 2 : 1)];
            seqs.push(seqOf(await repository.publish({ message: message('t', 'x'.repeat(i), i % 2 === 0 ? 2 : 1), deliveries }), 'a'));
          }
          const bytes = (list: number[]) => list.reduce((sum, seq) => sum + seqs.indexOf(seq), 0);
          expect(await repository.queueStats('a')).toEqual(stats(100, bytes(seqs), 0));
          await repository.raiseDupMark('a', seqs[99]!);
          await repository.markReleased('a', [{ entry: seqs[0]!, packetId: 1 }]);
          const done = seqs.slice(0, 60);
          await repository.complete('a', ...done, seqs[0]!, seqs[1]!, seqs[99]! + 1000);
          const left = seqs.slice(60);
          expect(await repository.queueStats('a')).toEqual(stats(40, bytes(left), 0));
          expect((await readAll(repository, 'a')).map((entry) => entry.seq)).toEqual(left);
          // Completing them again changes nothing; b still holds its shares of the shared bodies.
          await repository.complete('a', ...done);
          expect(await repository.queueStats('a')).toEqual(stats(40, bytes(left), 0));
          const shared = (await readAll(repository, 'b')).map((entry) => entry.message.payload.length);
          expect(shared).toEqual([0, 10, 20, 30, 40, 50, 60, 70, 80, 90]);
          await repository.complete('a');
          expect(await repository.queueStats('a')).toEqual(stats(40, bytes(left), 0));
        }));

      it('complete with entries as readOutbound returned them: counted out once each, shared bodies kept for their other holders', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          await repository.createSession('b');
          for (let i = 0; i < 60; i++) {
            const deliveries = i % 3 === 0 ? [to('a', 1), to('b', 1)] : [to('a', i % 2 === 0 ? 2 : 1)];
            await repository.publish({ message: message('t', 'y'.repeat(i + 1), i % 2 === 0 ? 2 : 1), deliveries });
          }
          const entries = await readAll(repository, 'a');
          const size = (list: OutboundEntry[]) => list.reduce((sum, entry) => sum + entry.message.payload.length, 0);
          expect(await repository.queueStats('a')).toEqual(stats(60, size(entries), 0));
          await repository.raiseDupMark('a', entries[59]!.seq);
          await repository.markReleased('a', [{ entry: entries[0]!.seq, packetId: 1 }]);
          // Entries and bare seqs mixed, in two calls.
          await repository.complete('a', ...entries.slice(0, 20));
          await repository.complete('a', ...entries.slice(20, 40).map((entry) => entry.seq));
          const left = entries.slice(40);
          expect(await repository.queueStats('a')).toEqual(stats(20, size(left), 0));
          expect((await readAll(repository, 'a')).map((entry) => entry.seq)).toEqual(left.map((entry) => entry.seq));
          // b still reads every shared message in full.
          expect((await readAll(repository, 'b')).map((entry) => entry.message.payload.length)).toEqual(
            Array.from({ length: 20 }, (_, i) => 3 * i + 1),
          );
        }));

      it('an entry completed as an entry and as a seq at once, in either order, is counted out once', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          for (let i = 0; i < 6; i++) await repository.publish({ message: message('t', 'w'.repeat(i + 1), 2), deliveries: [to('a', 2)] });
          const entries = await readAll(repository, 'a');
          await repository.raiseDupMark('a', entries[5]!.seq);
          // Released (PUBREC stored): completing it also removes what PUBREC stored.
          await repository.markReleased('a', [{ entry: entries[0]!.seq, packetId: 7 }]);
          await Promise.all([
            repository.complete('a', entries[0]!, entries[1]!),
            repository.complete('a', entries[0]!.seq, entries[1]!.seq, entries[2]!.seq),
            repository.complete('a', entries[2]!, entries[3]!),
          ]);
          expect(await repository.queueStats('a')).toEqual(stats(2, 5 + 6, 0));
          expect((await readAll(repository, 'a')).map((entry) => entry.seq)).toEqual([entries[4]!.seq, entries[5]!.seq]);
        }));

      it('an entry completed with what publish left on its delivery (Delivery.stored) is counted out as by seq, once, beside a shared one', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          await repository.createSession('b');
          const alone = to('a', 2);
          const aloneSeq = (await repository.publish({ message: message('t', 'one', 2), deliveries: [alone] })).get('a')!;
          const sharedA = to('a', 1);
          const sharedSeq = (await repository.publish({ message: message('t', 'two!', 1), deliveries: [sharedA, to('b', 1)] })).get('a')!;
          await repository.raiseDupMark('a', sharedSeq);
          // Released (PUBREC stored): completing it also removes what PUBREC stored.
          await repository.markReleased('a', [{ entry: aloneSeq, packetId: 3 }]);
          await Promise.all([
            repository.complete('a', { seq: aloneSeq, stored: alone.stored }, { seq: sharedSeq, stored: sharedA.stored }),
            repository.complete('a', aloneSeq),
          ]);
          expect(await repository.queueStats('a')).toEqual(stats(0, 0, 0));
          expect(await readAll(repository, 'a')).toEqual([]);
          expect((await readAll(repository, 'b')).map((entry) => entry.message.payload.toString())).toEqual(['two!']);
        }));

      it('an entry handed over to another session, then completed with what was handed out for it, leaves the shared body to its other readers', () =>
        withFixture(async ({ repository }) => {
          for (const clientId of ['a', 'b', 'c']) await repository.createSession(clientId);
          const fromA = to('a', 1);
          const seq = (await repository.publish({ message: message('t', 'shared', 1), deliveries: [fromA, to('c', 1)] })).get('a')!;
          const [entry] = await readAll(repository, 'a');
          await repository.publish({ message: entry!.message, deliveries: [to('b', 1)], handOver: { clientId: 'a', seq } });
          // A completion of a's entry that was on its way when the hand-over took it.
          await repository.complete('a', { seq, stored: fromA.stored }, entry!);
          expect(await repository.queueStats('a')).toEqual(stats(0, 0, 0));
          expect((await readAll(repository, 'b')).map((read) => read.message.payload.toString())).toEqual(['shared']);
          expect((await readAll(repository, 'c')).map((read) => read.message.payload.toString())).toEqual(['shared']);
        }));

      it('entries of a destroyed session complete to nothing: no counts come back, other sessions untouched', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          await repository.createSession('b');
          for (let i = 0; i < 5; i++) {
            await repository.publish({ message: message('t', `z${i}`, 1), deliveries: i < 2 ? [to('a', 1), to('b', 1)] : [to('a', 1)] });
          }
          const entries = await readAll(repository, 'a');
          await repository.destroySession('a');
          await repository.complete('a', ...entries);
          expect(await repository.queueStats('a')).toBeUndefined();
          await repository.createSession('a');
          expect(await repository.queueStats('a')).toEqual(stats(0, 0, 0));
          expect((await readAll(repository, 'b')).map((entry) => entry.message.payload.toString())).toEqual(['z0', 'z1']);
        }));

      it('a delivery that would pass maxMessages is refused for that session only: no entry, no seq, one drop', () =>
        withFixture(
          async ({ repository }) => {
            await repository.createSession('a');
            await repository.createSession('b');
            await repository.publish({ message: message('t', 'm1'), deliveries: [to('a'), to('b')] });
            await repository.publish({ message: message('t', 'm2'), deliveries: [to('a')] });
            const seqs = await repository.publish({ message: message('t', 'm3'), deliveries: [to('a'), to('b')] });
            expect([...seqs.keys()]).toEqual(['b']);
            expect((await readAll(repository, 'a')).map((e) => e.message.payload.toString())).toEqual(['m1', 'm2']);
            expect((await readAll(repository, 'b')).map((e) => e.message.payload.toString())).toEqual(['m1', 'm3']);
            expect(await repository.queueStats('a')).toEqual(stats(2, 4, 1));
            expect(await repository.queueStats('b')).toEqual(stats(2, 4, 0));
            // Every refusal counts; in-flight entries take room as well as queued ones.
            await repository.raiseDupMark('a', Number.MAX_SAFE_INTEGER);
            expect((await repository.publish({ message: message('t', 'm4'), deliveries: [to('a')] })).size).toBe(0);
            expect(await repository.queueStats('a')).toEqual(stats(2, 4, 2));
          },
          { limits: { maxMessages: 2, maxBytes: 1_000_000 } },
        ));

      it('maxBytes limits payload bytes: a message that fits exactly is admitted, one byte more is refused', () =>
        withFixture(
          async ({ repository }) => {
            await repository.createSession('a');
            const sizes = [6, 5, 4, 0, 1];
            const admitted: boolean[] = [];
            for (const size of sizes) {
              const seqs = await repository.publish({ message: message('t', Buffer.alloc(size, 0x61)), deliveries: [to('a')] });
              admitted.push(seqs.has('a'));
            }
            expect(admitted).toEqual([true, false, true, true, false]);
            expect((await readAll(repository, 'a')).map((e) => e.message.payload.length)).toEqual([6, 4, 0]);
            expect(await repository.queueStats('a')).toEqual(stats(3, 10, 2));
          },
          { limits: { maxMessages: 100, maxBytes: 10 } },
        ));

      it('a message larger than maxBytes is refused even by an empty queue', () =>
        withFixture(
          async ({ repository }) => {
            await repository.createSession('a');
            const seqs = await repository.publish({ message: message('t', Buffer.alloc(11)), deliveries: [to('a')] });
            expect(seqs.size).toBe(0);
            expect(await readAll(repository, 'a')).toEqual([]);
            expect(await repository.queueStats('a')).toEqual(stats(0, 0, 1));
          },
          { limits: { maxMessages: 100, maxBytes: 10 } },
        ));

      it("a delivery's own limits replace the repository's for its session alone, tighter or looser", () =>
        withFixture(
          async ({ repository }) => {
            await repository.createSession('bridge');
            await repository.createSession('client');
            const own = { maxMessages: 3, maxBytes: 1_000_000 };
            const tight = { maxMessages: 1, maxBytes: 1_000_000 };
            const admitted: string[][] = [];
            for (const payload of ['m1', 'm2', 'm3', 'm4']) {
              const seqs = await repository.publish({ message: message('t', payload), deliveries: [{ ...to('bridge'), limits: own }, to('client')] });
              admitted.push([...seqs.keys()].sort());
            }
            // The repository's limit (2) binds the client; the bridge's own (3) binds it.
            expect(admitted).toEqual([['bridge', 'client'], ['bridge', 'client'], ['bridge'], []]);
            expect(await repository.queueStats('bridge')).toEqual(stats(3, 6, 1));
            expect(await repository.queueStats('client')).toEqual(stats(2, 4, 2));
            // Tighter than the repository's: refused at once, counted like any other refusal.
            const seqs = await repository.publish({ message: message('t', 'm5'), deliveries: [{ ...to('bridge'), limits: tight }] });
            expect(seqs.size).toBe(0);
            expect(await repository.queueStats('bridge')).toEqual(stats(3, 6, 2));
          },
          { limits: { maxMessages: 2, maxBytes: 1_000_000 } },
        ));

      it('complete makes room again; the drop count stays', () =>
        withFixture(
          async ({ repository }) => {
            await repository.createSession('a');
            const first = seqOf(await repository.publish({ message: message('t', 'one'), deliveries: [to('a')] }), 'a');
            expect((await repository.publish({ message: message('t', 'two'), deliveries: [to('a')] })).has('a')).toBe(false);
            await repository.complete('a', first);
            const third = await repository.publish({ message: message('t', 'three'), deliveries: [to('a')] });
            expect(seqOf(third, 'a')).toBeGreaterThan(first);
            expect((await readAll(repository, 'a')).map((e) => e.message.payload.toString())).toEqual(['three']);
            expect(await repository.queueStats('a')).toEqual(stats(1, 5, 1));
          },
          { limits: { maxMessages: 1, maxBytes: 1_000_000 } },
        ));

      it('a publish whose every delivery is refused still sets the retained message and records the inbound id', () =>
        withFixture(
          async ({ repository }) => {
            await repository.createSession('a');
            await repository.publish({ message: message('t', 'x'), deliveries: [to('a')] });
            const seqs = await repository.publish({
              message: message('r', 'kept', 2),
              deliveries: [to('a', 2)],
              retained: 'set',
              inbound: { clientId: 'a', packetId: 12 },
            });
            expect(seqs.size).toBe(0);
            expect((await loadRetained(repository)).map((r) => r.topic)).toEqual(['r']);
            expect(await repository.loadInbound('a')).toEqual([12]);
            expect(await repository.queueStats('a')).toEqual(stats(1, 1, 1));
          },
          { limits: { maxMessages: 1, maxBytes: 1_000_000 } },
        ));

      it('a publish rejected for an unknown session counts no drop', () =>
        withFixture(
          async ({ repository }) => {
            await repository.createSession('a');
            await repository.publish({ message: message('t', 'x'), deliveries: [to('a')] });
            await expectRejection(
              () => repository.publish({ message: message('t', 'y'), deliveries: [to('a'), to('ghost')] }),
              ErrorCodes.STORE_UNKNOWN_SESSION,
            );
            expect(await repository.queueStats('a')).toEqual(stats(1, 1, 0));
          },
          { limits: { maxMessages: 1, maxBytes: 1_000_000 } },
        ));

      it('destroySession removes the stats; a session created again starts from zero, drops included', () =>
        withFixture(
          async ({ repository }) => {
            await repository.createSession('a');
            for (let i = 0; i < 3; i++) await repository.publish({ message: message('t', 'x'), deliveries: [to('a')] });
            expect(await repository.queueStats('a')).toEqual(stats(1, 1, 2));
            await repository.createSession('a'); // idempotent: keeps the counts
            expect(await repository.queueStats('a')).toEqual(stats(1, 1, 2));
            await repository.destroySession('a');
            expect(await repository.queueStats('a')).toBeUndefined();
            await repository.createSession('a');
            expect(await repository.queueStats('a')).toEqual(stats(0, 0, 0));
            expect((await repository.publish({ message: message('t', 'y'), deliveries: [to('a')] })).has('a')).toBe(true);
          },
          { limits: { maxMessages: 1, maxBytes: 1_000_000 } },
        ));

      it('a complete submitted before a publish without awaiting makes room for it (submission order)', () =>
        withFixture(
          async ({ repository }) => {
            await repository.createSession('a');
            const first = seqOf(await repository.publish({ message: message('t', 'one'), deliveries: [to('a')] }), 'a');
            const [, seqs] = await Promise.all([
              repository.complete('a', first),
              repository.publish({ message: message('t', 'two'), deliveries: [to('a')] }),
            ]);
            expect([...seqs.keys()]).toEqual(['a']);
            expect((await readAll(repository, 'a')).map((e) => e.message.payload.toString())).toEqual(['two']);
            expect(await repository.queueStats('a')).toEqual(stats(1, 3, 0));
          },
          { limits: { maxMessages: 1, maxBytes: 1_000_000 } },
        ));

      it('a complete submitted before destroySession and createSession does not touch the new session\'s counts', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          const old = seqOf(await repository.publish({ message: message('t', 'old'), deliveries: [to('a')] }), 'a');
          await Promise.all([
            repository.complete('a', old),
            repository.destroySession('a'),
            repository.createSession('a'),
            repository.publish({ message: message('t', 'new!'), deliveries: [to('a')] }),
          ]);
          expect((await readAll(repository, 'a')).map((e) => e.message.payload.toString())).toEqual(['new!']);
          expect(await repository.queueStats('a')).toEqual(stats(1, 4, 0));
        }));
    });

    describe('inbound QoS 2 packet ids', () => {
      it('publish with inbound records the packet id; releaseInbound removes it', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          await repository.createSession('b');
          await repository.publish({ message: message('t', 'p', 2), deliveries: [to('b', 2)], inbound: { clientId: 'a', packetId: 10 } });
          await repository.publish({ message: message('t', 'q', 2), deliveries: [to('b', 2)], inbound: { clientId: 'a', packetId: 65535 } });
          expect(await inboundOf(repository, 'a')).toEqual([10, 65535]);
          expect(await repository.loadInbound('b')).toEqual([]);
          await repository.releaseInbound('a', 10);
          expect(await inboundOf(repository, 'a')).toEqual([65535]);
          await repository.releaseInbound('a', 10);
          await repository.releaseInbound('a', 3);
          await repository.releaseInbound('nobody', 3);
          expect(await inboundOf(repository, 'a')).toEqual([65535]);
        }));

      it('a publish with no deliveries still records the inbound packet id', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          const seqs = await repository.publish({
            message: message('nobody/listens', 'p', 2),
            deliveries: [],
            inbound: { clientId: 'a', packetId: 1 },
          });
          expect(seqs.size).toBe(0);
          expect(await repository.loadInbound('a')).toEqual([1]);
          expect(await readAll(repository, 'a')).toEqual([]);
        }));

      it('the same packet id recorded twice is held once', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          for (let i = 0; i < 2; i++) {
            await repository.publish({ message: message('t', 'p', 2), deliveries: [], inbound: { clientId: 'a', packetId: 5 } });
          }
          expect(await repository.loadInbound('a')).toEqual([5]);
          await repository.releaseInbound('a', 5);
          expect(await repository.loadInbound('a')).toEqual([]);
        }));
    });

    describe('retained messages', () => {
      it("publish with retained 'set' stores topic, payload and qos, even with no deliveries", () =>
        withFixture(async ({ repository }) => {
          await repository.publish({ message: message('a/b', Buffer.from([1, 0, 2]), 2), deliveries: [], retained: 'set' });
          const retained = await loadRetained(repository);
          expect(normalizeRetained(retained)).toEqual([
            { topic: 'a/b', payloadIsBuffer: true, payload: '010002', qos: 2 },
          ]);
        }));

      it("a later 'set' on the same topic replaces the retained message; other topics are kept", () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          await repository.publish({ message: message('a/b', 'old', 1), deliveries: [to('a')], retained: 'set' });
          await repository.publish({ message: message('c', 'other', 0), deliveries: [], retained: 'set' });
          await repository.publish({ message: message('a/b', 'new', 0), deliveries: [to('a')], retained: 'set' });
          expect(normalizeRetained(await loadRetained(repository))).toEqual([
            { topic: 'a/b', payloadIsBuffer: true, payload: Buffer.from('new').toString('hex'), qos: 0 },
            { topic: 'c', payloadIsBuffer: true, payload: Buffer.from('other').toString('hex'), qos: 0 },
          ]);
          expect((await readAll(repository, 'a')).map((e) => e.message.payload.toString())).toEqual(['old', 'new']);
        }));

      it("publish with retained 'clear' removes the topic's retained message and still delivers", () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          await repository.publish({ message: message('a/b', 'x', 1), deliveries: [], retained: 'set' });
          await repository.publish({ message: message('keep', 'y', 1), deliveries: [], retained: 'set' });
          await repository.publish({ message: message('a/b', '', 1), deliveries: [to('a')], retained: 'clear' });
          expect((await loadRetained(repository)).map((r) => r.topic)).toEqual(['keep']);
          expect(await readAll(repository, 'a')).toHaveLength(1);
          // Clearing what is not there is harmless.
          await repository.publish({ message: message('never', '', 0), deliveries: [], retained: 'clear' });
          expect((await loadRetained(repository)).map((r) => r.topic)).toEqual(['keep']);
        }));

      it('clearRetained removes the retained message of a topic; an unknown topic is a no-op', () =>
        withFixture(async ({ repository }) => {
          await repository.publish({ message: message('a/b', 'x', 1), deliveries: [], retained: 'set' });
          await repository.publish({ message: message('a/c', 'y', 1), deliveries: [], retained: 'set' });
          await repository.clearRetained('a/b');
          await repository.clearRetained('nothing/here');
          expect((await loadRetained(repository)).map((r) => r.topic)).toEqual(['a/c']);
        }));
    });

    describe('retained index, payload reads and retained limits', () => {
      const retainedStats = (messages: number, bytes: number, refused: number): RetainedStats => ({ messages, bytes, refused });
      const set = (repository: SessionRepository, topic: string, payload: string, qos: QoS = 1, deliveries: Delivery[] = []) =>
        repository.publish({ message: message(topic, payload, qos), deliveries, retained: 'set' });
      const topicsOf = async (repository: SessionRepository) => (await repository.loadRetainedIndex()).map(({ topic }) => topic).sort();

      it('the index gives topic, QoS and payload size without payloads; readRetained gives the messages in the order asked, undefined where there is none', () =>
        withFixture(async ({ repository }) => {
          await set(repository, 'a/b', 'four', 2);
          await set(repository, 'c', '', 1);
          await set(repository, 'd', 'xy', 0);
          const index = [...(await repository.loadRetainedIndex())].sort((x, y) => compareStrings(x.topic, y.topic));
          expect(index).toEqual([
            { topic: 'a/b', qos: 2, size: 4 },
            { topic: 'c', qos: 1, size: 0 },
            { topic: 'd', qos: 0, size: 2 },
          ]);
          for (const entry of index) expect(Object.keys(entry).sort()).toEqual(['qos', 'size', 'topic']);
          const read = await repository.readRetained(['d', 'none', 'a/b']);
          expect(read.map((found) => (found === undefined || found instanceof Error ? found : normalizeRetained([found])[0]))).toEqual([
            { topic: 'd', payloadIsBuffer: true, payload: Buffer.from('xy').toString('hex'), qos: 0 },
            undefined,
            { topic: 'a/b', payloadIsBuffer: true, payload: Buffer.from('four').toString('hex'), qos: 2 },
          ]);
          expect(await repository.readRetained([])).toEqual([]);
        }));

      it('retainedStats counts messages and payload bytes: a replacement counts its new size once; clear and clearRetained take a message out', () =>
        withFixture(async ({ repository }) => {
          expect(await repository.retainedStats()).toEqual(retainedStats(0, 0, 0));
          await set(repository, 'a', '12345');
          await set(repository, 'b', '123');
          expect(await repository.retainedStats()).toEqual(retainedStats(2, 8, 0));
          await set(repository, 'a', '1');
          expect(await repository.retainedStats()).toEqual(retainedStats(2, 4, 0));
          await repository.publish({ message: message('b', ''), deliveries: [], retained: 'clear' });
          expect(await repository.retainedStats()).toEqual(retainedStats(1, 1, 0));
          await repository.clearRetained('a');
          await repository.clearRetained('a');
          expect(await repository.retainedStats()).toEqual(retainedStats(0, 0, 0));
        }));

      it('beyond maxMessages a new topic is not retained: publish says so, its deliveries are still queued, the refusal is counted; replacing a held topic is kept', () =>
        withFixture(
          async ({ repository }) => {
            await repository.createSession('s');
            expect((await set(repository, 'a', 'x')).retainedRefused).toBeUndefined();
            expect((await set(repository, 'b', 'x')).retainedRefused).toBeUndefined();
            const refused = await set(repository, 'c', 'x', 1, [to('s')]);
            expect(refused.retainedRefused).toBe(true);
            expect(seqOf(refused, 's')).toBeGreaterThan(0);
            expect((await readAll(repository, 's')).map((e) => e.message.topic)).toEqual(['c']);
            expect(await topicsOf(repository)).toEqual(['a', 'b']);
            expect((await set(repository, 'b', 'replaced')).retainedRefused).toBeUndefined();
            expect(normalizeRetained(await loadRetained(repository)).map(({ topic, payload }) => [topic, Buffer.from(payload, 'hex').toString()])).toEqual([
              ['a', 'x'],
              ['b', 'replaced'],
            ]);
            expect(await repository.retainedStats()).toEqual(retainedStats(2, 9, 1));
          },
          { retainedLimits: { maxMessages: 2, maxBytes: 1_000_000 } },
        ));

      it('maxBytes limits payload bytes: a message that fits exactly is kept, one byte more is refused', () =>
        withFixture(
          async ({ repository }) => {
            expect((await set(repository, 'a', '123456')).retainedRefused).toBeUndefined();
            expect((await set(repository, 'b', '12345')).retainedRefused).toBe(true);
            expect((await set(repository, 'b', '1234')).retainedRefused).toBeUndefined();
            expect(await repository.retainedStats()).toEqual(retainedStats(2, 10, 1));
          },
          { retainedLimits: { maxMessages: 100, maxBytes: 10 } },
        ));

      it("a refused replacement discards the topic's previous retained message [MQTT-3.3.1-7], and frees its room", () =>
        withFixture(
          async ({ repository }) => {
            await set(repository, 'a', '1234');
            await set(repository, 'b', '123456');
            expect((await set(repository, 'a', '12345')).retainedRefused).toBe(true);
            expect(await topicsOf(repository)).toEqual(['b']);
            expect(await repository.readRetained(['a'])).toEqual([undefined]);
            expect(await repository.retainedStats()).toEqual(retainedStats(1, 6, 1));
            expect((await set(repository, 'a', '1234')).retainedRefused).toBeUndefined();
          },
          { retainedLimits: { maxMessages: 100, maxBytes: 10 } },
        ));

      it('clearing makes room again; with a limit of 0 nothing is retained', async () => {
        await withFixture(
          async ({ repository }) => {
            await set(repository, 'a', 'x');
            expect((await set(repository, 'b', 'x')).retainedRefused).toBe(true);
            await repository.clearRetained('a');
            expect((await set(repository, 'b', 'x')).retainedRefused).toBeUndefined();
            expect(await topicsOf(repository)).toEqual(['b']);
          },
          { retainedLimits: { maxMessages: 1, maxBytes: 1_000_000 } },
        );
        await withFixture(
          async ({ repository }) => {
            expect((await set(repository, 'a', 'x')).retainedRefused).toBe(true);
            expect(await repository.loadRetainedIndex()).toEqual([]);
            expect(await repository.retainedStats()).toEqual(retainedStats(0, 0, 1));
          },
          { retainedLimits: { maxMessages: 0, maxBytes: 1_000_000 } },
        );
      });

      it('limits are decided in submission order: of two new topics submitted without awaiting, with room for one, the first is kept', () =>
        withFixture(
          async ({ repository }) => {
            const first = set(repository, 'first', 'x');
            const second = set(repository, 'second', 'x');
            const cleared = repository.clearRetained('first');
            const third = set(repository, 'third', 'x');
            expect([(await first).retainedRefused, (await second).retainedRefused, (await third).retainedRefused]).toEqual([undefined, true, undefined]);
            await cleared;
            expect(await topicsOf(repository)).toEqual(['third']);
            expect(await repository.retainedStats()).toEqual(retainedStats(1, 1, 1));
          },
          { retainedLimits: { maxMessages: 1, maxBytes: 1_000_000 } },
        ));

      it('the index, the counts and the refusals survive reopen, and the limits still apply', ({ skip }) =>
        withReopen(
          skip,
          async (repository, reopen) => {
            await set(repository, 'a', 'xyz', 2);
            await set(repository, 'b', 'x');
            expect((await set(repository, 'c', 'x')).retainedRefused).toBe(true);
            const again = await reopen();
            expect([...(await again.loadRetainedIndex())].sort((x, y) => compareStrings(x.topic, y.topic))).toEqual([
              { topic: 'a', qos: 2, size: 3 },
              { topic: 'b', qos: 1, size: 1 },
            ]);
            expect(await again.retainedStats()).toEqual(retainedStats(2, 4, 1));
            expect((await set(again, 'c', 'x')).retainedRefused).toBe(true);
            expect(await again.retainedStats()).toEqual(retainedStats(2, 4, 2));
          },
          { retainedLimits: { maxMessages: 2, maxBytes: 1_000_000 } },
        ));
    });

    describe('sessionInfo and touchSession (created, last seen)', () => {
      it('createSession sets both to now; a second createSession keeps them; unknown sessions have none', () =>
        withFixture(async ({ repository }) => {
          const before = Date.now();
          await repository.createSession('a');
          const after = Date.now();
          const info = await repository.sessionInfo('a');
          expect(info?.createdAt).toBeGreaterThanOrEqual(before);
          expect(info?.createdAt).toBeLessThanOrEqual(after);
          expect(info?.lastSeen).toBe(info?.createdAt);
          await repository.createSession('a');
          expect(await repository.sessionInfo('a')).toEqual(info);
          expect(await repository.sessionInfo('nobody')).toBeUndefined();
        }));

      it('touchSession moves last seen to now and keeps createdAt; on an unknown session it does nothing', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          const created = (await repository.sessionInfo('a'))!;
          await new Promise((resolve) => setTimeout(resolve, 5));
          const before = Date.now();
          await repository.touchSession('a');
          const touched = (await repository.sessionInfo('a'))!;
          expect(touched.createdAt).toBe(created.createdAt);
          expect(touched.lastSeen).toBeGreaterThanOrEqual(before);
          expect(touched.lastSeen).toBeGreaterThan(created.lastSeen);
          await repository.touchSession('nobody');
          expect(await repository.sessionInfo('nobody')).toBeUndefined();
          expect(normalizeSessions(await repository.loadSessions())).toEqual([{ clientId: 'a', subscriptions: [] }]);
        }));

      it('destroySession removes it', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          await repository.touchSession('a');
          await repository.destroySession('a');
          expect(await repository.sessionInfo('a')).toBeUndefined();
          await repository.createSession('a');
          const again = (await repository.sessionInfo('a'))!;
          expect(again.lastSeen).toBe(again.createdAt);
        }));

      it('survives reopen', ({ skip }) =>
        withReopen(skip, async (repository, reopen) => {
          await repository.createSession('a');
          await new Promise((resolve) => setTimeout(resolve, 5));
          await repository.touchSession('a');
          const info = (await repository.sessionInfo('a'))!;
          expect(info.lastSeen).toBeGreaterThan(info.createdAt);
          const again = await reopen();
          expect(await again.sessionInfo('a')).toEqual(info);
        }));
    });

    describe('session owner (the user name that created the session)', () => {
      const owners = (sessions: StoredSession[]) =>
        Object.fromEntries(sessions.map(({ clientId, owner }) => [clientId, owner ?? null]));

      it('createSession stores the owner; an anonymous session has none; loadSessions and sessionInfo report it', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a', 'alice');
          await repository.createSession('b');
          await repository.createSession('c', '');
          expect(owners(await repository.loadSessions())).toEqual({ a: 'alice', b: null, c: '' });
          expect((await repository.sessionInfo('a'))?.owner).toBe('alice');
          expect((await repository.sessionInfo('b'))?.owner).toBeUndefined();
          expect((await repository.sessionInfo('c'))?.owner).toBe('');
        }));

      it('a second createSession (with any owner) and touchSession keep the owner', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a', 'alice');
          await repository.createSession('a', 'mallory');
          await repository.createSession('a');
          await repository.touchSession('a');
          expect(owners(await repository.loadSessions())).toEqual({ a: 'alice' });
          expect((await repository.sessionInfo('a'))?.owner).toBe('alice');
        }));

      it('destroySession forgets it: the next session of that client id gets its own owner', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a', 'alice');
          await repository.destroySession('a');
          await repository.createSession('a', 'bob');
          expect(owners(await repository.loadSessions())).toEqual({ a: 'bob' });
        }));

      it('survives reopen, touchSession included', ({ skip }) =>
        withReopen(skip, async (repository, reopen) => {
          await repository.createSession('a', 'alice');
          await repository.createSession('b');
          await repository.touchSession('a');
          const again = await reopen();
          expect(owners(await again.loadSessions())).toEqual({ a: 'alice', b: null });
          expect((await again.sessionInfo('a'))?.owner).toBe('alice');
        }));
    });

    describe('MQTT 5: session expiry, subscription options, message properties, subscription identifiers', () => {
      const every: MessageProperties = {
        payloadFormat: 1,
        expiresAt: 1_900_000_000_123,
        contentType: 'text/plain',
        responseTopic: 'reply/to',
        correlationData: Buffer.from([0, 0xff, 7]),
        userProperties: [
          ['b', '1'],
          ['a', '2'],
          ['b', '3'],
        ],
      };

      it('createSession and touchSession store the Session Expiry Interval; touchSession without one removes it (a 3.1.1 resume)', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a', undefined, 60);
          expect((await repository.sessionInfo('a'))?.expiry).toBe(60);
          expect((await repository.loadSessions())[0]).toMatchObject({ clientId: 'a', expiry: 60 });
          await repository.touchSession('a', 0xffff_ffff);
          expect((await repository.sessionInfo('a'))?.expiry).toBe(0xffff_ffff);
          await repository.touchSession('a');
          expect((await repository.sessionInfo('a'))?.expiry).toBeUndefined();
          expect((await repository.loadSessions())[0]?.lastSeen).toBe((await repository.sessionInfo('a'))?.lastSeen);
        }));

      it('subscriptions keep their options, each only where set; a new SUBSCRIBE of the filter replaces them', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          await repository.subscribe('a', [
            { filter: 'x/#', qos: 1, noLocal: true, retainAsPublished: true, retainHandling: 2, identifier: 268_435_455 },
            { filter: 'plain', qos: 2 },
          ]);
          expect((await repository.loadSessions())[0]?.subscriptions.sort((a, b) => compareStrings(a.filter, b.filter))).toEqual([
            { filter: 'plain', qos: 2 },
            { filter: 'x/#', qos: 1, noLocal: true, retainAsPublished: true, retainHandling: 2, identifier: 268_435_455 },
          ]);
          await repository.subscribe('a', [{ filter: 'x/#', qos: 0, identifier: 5 }]);
          expect((await repository.loadSessions())[0]?.subscriptions.find(({ filter }) => filter === 'x/#')).toEqual({ filter: 'x/#', qos: 0, identifier: 5 });
        }));

      it('a message keeps every property, User Properties in order with repeats, inline, shared and retained; identifiers stay with their delivery', () =>
        withFixture(async ({ repository }) => {
          for (const clientId of ['one', 'two', 'three']) await repository.createSession(clientId);
          await repository.publish({ message: { ...message('solo', 'p'), properties: every }, deliveries: [{ ...to('one'), subscriptionIds: [3, 1] }] });
          await repository.publish({
            message: { ...message('fan', 'q'), properties: every },
            deliveries: [{ ...to('two'), subscriptionIds: [9] }, to('three')],
            retained: 'set',
          });
          const [solo] = await readAll(repository, 'one');
          expect(normalizeProperties(solo!.message.properties)).toEqual(normalizeProperties(every));
          expect(solo!.subscriptionIds).toEqual([3, 1]);
          const [fanTwo] = await readAll(repository, 'two');
          const [fanThree] = await readAll(repository, 'three');
          expect(normalizeProperties(fanTwo!.message.properties)).toEqual(normalizeProperties(every));
          expect(fanTwo!.subscriptionIds).toEqual([9]);
          expect(fanThree!.subscriptionIds).toBeUndefined();
          const [retained] = await repository.readRetained(['fan']);
          expect(normalizeProperties((retained as RetainedMessage).properties)).toEqual(normalizeProperties(every));
          // A message without properties reads back without any.
          await repository.publish({ message: message('bare', 'r'), deliveries: [to('one')] });
          expect((await readAll(repository, 'one'))[1]!.message.properties).toBeUndefined();
        }));

      it("a delivery's shared subscriptions stay with its entry, inline and with a shared body, and survive reopen", ({ skip }) =>
        withReopen(skip, async (repository, reopen) => {
          for (const clientId of ['a', 'b', 'c']) await repository.createSession(clientId);
          await repository.publish({ message: message('solo', 'p'), deliveries: [{ ...to('a'), shared: ['$share/g/solo'] }] });
          await repository.publish({ message: message('fan', 'q'), deliveries: [{ ...to('b'), shared: ['$share/g/#', '$share/h/fan'] }, to('c')] });
          const check = async (store: SessionRepository) => {
            expect((await readAll(store, 'a')).map(({ shared }) => shared)).toEqual([['$share/g/solo']]);
            expect((await readAll(store, 'b')).map(({ shared }) => shared)).toEqual([['$share/g/#', '$share/h/fan']]);
            expect((await readAll(store, 'c')).map(({ shared }) => shared)).toEqual([undefined]);
          };
          await check(repository);
          await check(await reopen());
        }));

      it('handOver moves an entry: gone from the old queue and queued for the new sessions in one transition, counts following', () =>
        withFixture(async ({ repository }) => {
          for (const clientId of ['old', 'other', 'new']) await repository.createSession(clientId);
          // A shared body: the old session's entry and another session's hold the same message.
          await repository.publish({ message: message('t', 'payload'), deliveries: [{ ...to('old'), shared: ['$share/g/t'] }, to('other')] });
          await repository.publish({ message: message('t', 'second', 2), deliveries: [{ ...to('old', 2), shared: ['$share/g/t'] }] });
          const [first, second] = await readAll(repository, 'old');
          await repository.markReleased('old', [{ entry: second!.seq, packetId: 9 }]);
          const moved = await repository.publish({ message: first!.message, deliveries: [{ ...to('new'), shared: ['$share/g/t'] }], handOver: { clientId: 'old', seq: first!.seq } });
          expect([...moved.keys()]).toEqual(['new']);
          await repository.publish({ message: second!.message, deliveries: [{ ...to('new', 2), shared: ['$share/g/t'] }], handOver: { clientId: 'old', seq: second!.seq } });
          expect(await readAll(repository, 'old')).toEqual([]);
          expect(await repository.queueStats('old')).toEqual({ messages: 0, bytes: 0, dropped: 0 });
          const arrived = await readAll(repository, 'new');
          expect(arrived.map((entry) => [entry.message.payload.toString(), entry.qos, entry.state, entry.packetId, entry.shared])).toEqual([
            ['payload', 1, 'queued', undefined, ['$share/g/t']],
            ['second', 2, 'queued', undefined, ['$share/g/t']],
          ]);
          expect(await repository.queueStats('new')).toEqual({ messages: 2, bytes: 'payload'.length + 'second'.length, dropped: 0 });
          // The other holder of the shared body still reads it.
          expect((await readAll(repository, 'other')).map((entry) => entry.message.payload.toString())).toEqual(['payload']);
        }));

      it('handOver of an entry gone already (completed, or its session destroyed) queues nothing', () =>
        withFixture(async ({ repository }) => {
          for (const clientId of ['old', 'new']) await repository.createSession(clientId);
          await repository.publish({ message: message('t', 'a'), deliveries: [to('old')] });
          await repository.publish({ message: message('t', 'b'), deliveries: [to('old')] });
          const [a, b] = await readAll(repository, 'old');
          // Submitted without awaiting, in this order: the complete lands first.
          const completed = repository.complete('old', a!.seq);
          const handed = repository.publish({ message: a!.message, deliveries: [to('new')], handOver: { clientId: 'old', seq: a!.seq } });
          await completed;
          expect((await handed).size).toBe(0);
          await repository.destroySession('old');
          expect((await repository.publish({ message: b!.message, deliveries: [to('new')], handOver: { clientId: 'old', seq: b!.seq } })).size).toBe(0);
          expect(await readAll(repository, 'new')).toEqual([]);
          expect(await repository.queueStats('new')).toEqual({ messages: 0, bytes: 0, dropped: 0 });
        }));

      it('settled resolves once the transitions submitted before it have landed', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          void repository.publish({ message: message('t', 'x'), deliveries: [to('a')] });
          await repository.settled();
          expect((await readAll(repository, 'a')).map((entry) => entry.message.payload.toString())).toEqual(['x']);
        }));

      it('all of it survives reopen', ({ skip }) =>
        withReopen(skip, async (repository, reopen) => {
          await repository.createSession('a', 'alice', 3600);
          await repository.subscribe('a', [{ filter: 'x/#', qos: 1, noLocal: true, identifier: 7 }]);
          await repository.publish({ message: { ...message('x/y', 'v'), properties: every }, deliveries: [{ ...to('a'), subscriptionIds: [7] }], retained: 'set' });
          const again = await reopen();
          const [stored] = await again.loadSessions();
          expect(stored).toMatchObject({ clientId: 'a', owner: 'alice', expiry: 3600, subscriptions: [{ filter: 'x/#', qos: 1, noLocal: true, identifier: 7 }] });
          const [entry] = await readAll(again, 'a');
          expect(normalizeProperties(entry!.message.properties)).toEqual(normalizeProperties(every));
          expect(entry!.subscriptionIds).toEqual([7]);
          const [retained] = await again.readRetained(['x/y']);
          expect(normalizeProperties((retained as RetainedMessage).properties)).toEqual(normalizeProperties(every));
        }));
    });

    describe('destroySession', () => {
      it('removes the session, its subscriptions, queue, inflight and inbound ids; other sessions are untouched', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('gone');
          await repository.createSession('kept');
          await repository.subscribe('gone', [{ filter: 'a/#', qos: 2 }]);
          await repository.subscribe('kept', [{ filter: 'a/#', qos: 1 }]);
          const own = await repository.publish({ message: message('a/1', 'own', 1), deliveries: [to('gone')] });
          const sent = await repository.publish({ message: message('a/2', 'sent', 2), deliveries: [to('gone', 2)] });
          const released = await repository.publish({ message: message('a/3', 'rel', 2), deliveries: [to('gone', 2)] });
          await repository.raiseDupMark('gone', seqOf(released, 'gone'));
          await repository.markReleased('gone', [{ entry: seqOf(released, 'gone'), packetId: 4 }]);
          expect(seqOf(sent, 'gone')).toBeLessThan(seqOf(released, 'gone'));
          const shared = await repository.publish({
            message: message('a/4', 'shared', 1),
            deliveries: [to('gone'), to('kept')],
            inbound: { clientId: 'gone', packetId: 8 },
          });
          await repository.publish({ message: message('a/5', 'mine', 1), deliveries: [to('kept')], inbound: { clientId: 'kept', packetId: 8 } });
          expect(seqOf(own, 'gone')).toBeGreaterThan(0);
          const keptBefore = (await readAll(repository, 'kept')).map(normalizeEntry);

          await repository.destroySession('gone');

          expect(normalizeSessions(await repository.loadSessions())).toEqual([
            { clientId: 'kept', subscriptions: [{ filter: 'a/#', qos: 1 }] },
          ]);
          expect(await readAll(repository, 'gone')).toEqual([]);
          expect(await repository.loadInbound('gone')).toEqual([]);
          expect(await repository.loadInbound('kept')).toEqual([8]);
          expect(await repository.queueStats('gone')).toBeUndefined();
          expect(await repository.queueStats('kept')).toEqual({ messages: 2, bytes: 10, dropped: 0 });
          const keptAfter = await readAll(repository, 'kept');
          expect(keptAfter.map(normalizeEntry)).toEqual(keptBefore);
          // The body shared with the destroyed session is still readable by the survivor.
          expect(keptAfter[0]?.seq).toBe(seqOf(shared, 'kept'));
          expect(keptAfter[0]?.message.payload.equals(Buffer.from('shared'))).toBe(true);
          await repository.complete('kept', seqOf(shared, 'kept'));
          expect((await readAll(repository, 'kept')).map((e) => e.message.payload.toString())).toEqual(['mine']);
        }));

      it('destroying an unknown session is a no-op', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          await repository.destroySession('ghost');
          expect(normalizeSessions(await repository.loadSessions())).toEqual([{ clientId: 'a', subscriptions: [] }]);
        }));

      it('a session created again after destroySession starts empty', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          await repository.subscribe('a', [{ filter: 'x', qos: 1 }]);
          for (const payload of ['old', 'older']) {
            await repository.publish({ message: message('x', payload), deliveries: [to('a')], inbound: { clientId: 'a', packetId: 2 } });
          }
          await repository.raiseDupMark('a', Number.MAX_SAFE_INTEGER);
          await repository.destroySession('a');
          await repository.createSession('a');
          expect(normalizeSessions(await repository.loadSessions())).toEqual([{ clientId: 'a', subscriptions: [] }]);
          expect(await readAll(repository, 'a')).toEqual([]);
          expect(await repository.loadInbound('a')).toEqual([]);
          expect(await repository.queueStats('a')).toEqual({ messages: 0, bytes: 0, dropped: 0 });
          await repository.publish({ message: message('x', 'new'), deliveries: [to('a')] });
          // The old session's DUP mark is gone with it, whatever seq the new entry gets.
          expect((await readAll(repository, 'a')).map((e) => [e.message.payload.toString(), e.state])).toEqual([['new', 'queued']]);
          expect(await repository.queueStats('a')).toEqual({ messages: 1, bytes: 3, dropped: 0 });
        }));

      it('destroySession, createSession and publish submitted without awaiting apply in order', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          await repository.publish({ message: message('x', 'old'), deliveries: [to('a')] });
          const [, , seqs] = await Promise.all([
            repository.destroySession('a'),
            repository.createSession('a'),
            repository.publish({ message: message('x', 'new'), deliveries: [to('a')] }),
          ]);
          expect((await readAll(repository, 'a')).map((e) => [e.seq, e.message.payload.toString()])).toEqual([
            [seqOf(seqs, 'a'), 'new'],
          ]);
          expect(await repository.queueStats('a')).toEqual({ messages: 1, bytes: 3, dropped: 0 });
        }));
    });

    describe('after close()', () => {
      const operations: [string, (repository: SessionRepository, seq: number) => Promise<unknown>][] = [
        ['loadSessions', (r) => r.loadSessions()],
        ['loadRetainedIndex', (r) => r.loadRetainedIndex()],
        ['readRetained', (r) => r.readRetained(['x'])],
        ['retainedStats', (r) => r.retainedStats()],
        ['readOutbound', (r) => r.readOutbound('a', 0, 10)],
        ['loadInbound', (r) => r.loadInbound('a')],
        ['sessionInfo', (r) => r.sessionInfo('a')],
        ['createSession', (r) => r.createSession('b')],
        ['touchSession', (r) => r.touchSession('a')],
        ['destroySession', (r) => r.destroySession('a')],
        ['subscribe', (r) => r.subscribe('a', [{ filter: 'x', qos: 1 }])],
        ['unsubscribe', (r) => r.unsubscribe('a', ['x'])],
        ['publish', (r) => r.publish({ message: message('x', 'p'), deliveries: [to('a')] })],
        ['raiseDupMark', (r, seq) => r.raiseDupMark('a', seq)],
        ['setDupMark', (r, seq) => r.setDupMark('a', seq)],
        ['markReleased', (r, seq) => r.markReleased('a', [{ entry: seq, packetId: 1 }])],
        ['complete', (r, seq) => r.complete('a', seq)],
        ['releaseInbound', (r) => r.releaseInbound('a', 1)],
        ['clearRetained', (r) => r.clearRetained('x')],
        ['queueStats', (r) => r.queueStats('a')],
      ];

      it.each(operations)('%s rejects with STORE_CLOSED', (_, operation) =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          const seq = seqOf(await repository.publish({ message: message('x', 'p'), deliveries: [to('a')] }), 'a');
          await repository.close();
          await expectRejection(() => operation(repository, seq), ErrorCodes.STORE_CLOSED);
        }),
      );

      it('close waits for transitions already submitted', () =>
        withFixture(async ({ repository }) => {
          await repository.createSession('a');
          const pending = [
            repository.subscribe('a', [{ filter: 'x', qos: 1 }]),
            repository.publish({ message: message('x', 'p'), deliveries: [to('a')] }),
          ];
          await repository.close();
          const outcomes = await Promise.allSettled(pending);
          expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'fulfilled']);
        }));
    });

    describe('restart (reopen)', () => {
      it('sessions, subscriptions, queues with flight state, queue stats, inbound ids and retained messages survive reopen', ({ skip }) =>
        withReopen(skip, async (repository, reopen) => {
          await repository.createSession('a');
          await repository.createSession('b');
          await repository.createSession('idle');
          await repository.subscribe('a', [{ filter: 'a/#', qos: 2 }, { filter: 'b', qos: 0 }]);
          await repository.subscribe('b', [{ filter: '#', qos: 1 }]);
          const sent = await repository.publish({ message: message('a/1', 'sent', 2), deliveries: [to('a', 2)] });
          const released = await repository.publish({ message: message('a/2', 'rel', 2), deliveries: [to('a', 2)] });
          const queued = await repository.publish({ message: message('a/3', Buffer.from([0, 1, 2]), 1), deliveries: [to('a')] });
          const shared = await repository.publish({
            message: message('a/4', 'shared', 2),
            deliveries: [to('a', 1, true), to('b', 2)],
            retained: 'set',
            inbound: { clientId: 'b', packetId: 300 },
          });
          await repository.raiseDupMark('a', seqOf(released, 'a'));
          await repository.markReleased('a', [{ entry: seqOf(released, 'a'), packetId: 18 }]);
          await repository.raiseDupMark('b', seqOf(shared, 'b'));
          await repository.publish({ message: message('z', 'retained-only', 0), deliveries: [], retained: 'set' });
          expect(seqOf(sent, 'a')).toBeLessThan(seqOf(queued, 'a'));

          const sessions = normalizeSessions(await repository.loadSessions());
          const retained = normalizeRetained(await loadRetained(repository));
          const queueA = (await readAll(repository, 'a')).map(normalizeEntry);
          const queueB = (await readAll(repository, 'b')).map(normalizeEntry);
          expect(queueA.map((e) => [e.state, e.packetId])).toEqual([
            ['dup', undefined],
            ['released', 18],
            ['queued', undefined],
            ['queued', undefined],
          ]);
          expect(queueB.map((e) => [e.state, e.packetId])).toEqual([['dup', undefined]]);
          expect(retained).toHaveLength(2);
          const statsA = await repository.queueStats('a');
          expect(statsA).toEqual({ messages: 4, bytes: 16, dropped: 0 });

          const again = await reopen();
          expect(normalizeSessions(await again.loadSessions())).toEqual(sessions);
          expect(normalizeRetained(await loadRetained(again))).toEqual(retained);
          expect((await readAll(again, 'a')).map(normalizeEntry)).toEqual(queueA);
          expect((await readAll(again, 'b')).map(normalizeEntry)).toEqual(queueB);
          expect(await again.loadInbound('b')).toEqual([300]);
          expect(await again.loadInbound('a')).toEqual([]);
          expect(await again.queueStats('a')).toEqual(statsA);
          expect(await again.queueStats('b')).toEqual({ messages: 1, bytes: 6, dropped: 0 });
          expect(await again.queueStats('idle')).toEqual({ messages: 0, bytes: 0, dropped: 0 });
          expect(await again.queueStats('nobody')).toBeUndefined();

          // And the reopened store keeps working: transitions on the restored state.
          await again.markReleased('b', [{ entry: seqOf(shared, 'b'), packetId: 1 }]);
          await again.complete('a', seqOf(shared, 'a'));
          await again.releaseInbound('b', 300);
          expect((await readAll(again, 'b')).map((e) => [e.state, e.packetId, e.message.payload.toString()])).toEqual([
            ['released', 1, 'shared'],
          ]);
          expect(await again.loadInbound('b')).toEqual([]);
          expect(await again.queueStats('a')).toEqual({ messages: 3, bytes: 10, dropped: 0 });
        }));

      it('the DUP mark survives reopen, also after it was moved down', ({ skip }) =>
        withReopen(skip, async (repository, reopen) => {
          await repository.createSession('a');
          await repository.createSession('b');
          const seqs: number[] = [];
          const seqsB: number[] = [];
          for (let i = 0; i < 3; i++) {
            const given = await repository.publish({ message: message('t', `${i}`), deliveries: [to('a'), to('b')] });
            seqs.push(seqOf(given, 'a'));
            seqsB.push(seqOf(given, 'b'));
          }
          await repository.raiseDupMark('a', seqs[2]!);
          await repository.setDupMark('a', seqs[0]!);
          await repository.raiseDupMark('b', Number.MAX_SAFE_INTEGER);
          let again = await reopen();
          expect((await readAll(again, 'a')).map((e) => e.state)).toEqual(['dup', 'queued', 'queued']);
          expect((await readAll(again, 'b')).map((e) => e.state)).toEqual(['dup', 'dup', 'dup']);
          // Still capped after the restart: the next publish is not covered.
          const next = await again.publish({ message: message('t', 'next'), deliveries: [to('a'), to('b')] });
          expect(seqOf(next, 'b')).toBeGreaterThan(seqsB[2]!);
          expect((await readAll(again, 'b')).map((e) => e.state)).toEqual(['dup', 'dup', 'dup', 'queued']);
          await again.raiseDupMark('a', seqs[1]!);
          again = await reopen();
          expect((await readAll(again, 'a')).map((e) => e.state)).toEqual(['dup', 'dup', 'queued', 'queued']);
          expect((await readAll(again, 'b')).map((e) => e.state)).toEqual(['dup', 'dup', 'dup', 'queued']);
        }));

      it('after reopen, a new seq is above the DUP mark even when the entries it covered were completed', ({ skip }) =>
        withReopen(skip, async (repository, reopen) => {
          await repository.createSession('a');
          const seqs: number[] = [];
          for (let i = 0; i < 3; i++) seqs.push(seqOf(await repository.publish({ message: message('t', `${i}`), deliveries: [to('a')] }), 'a'));
          await repository.raiseDupMark('a', seqs[2]!);
          await repository.complete('a', seqs[2]!);
          await repository.complete('a', seqs[1]!);
          let again = await reopen();
          const next = seqOf(await again.publish({ message: message('t', 'after'), deliveries: [to('a')] }), 'a');
          expect(next, `DUP mark was ${seqs[2]}`).toBeGreaterThan(seqs[2]!);
          expect((await readAll(again, 'a')).map((e) => [e.message.payload.toString(), e.state])).toEqual([
            ['0', 'dup'],
            ['after', 'queued'],
          ]);
          // The same with the whole queue drained.
          await again.raiseDupMark('a', next);
          await again.complete('a', seqs[0]!);
          await again.complete('a', next);
          again = await reopen();
          const last = seqOf(await again.publish({ message: message('t', 'last'), deliveries: [to('a')] }), 'a');
          expect(last).toBeGreaterThan(next);
          expect((await readAll(again, 'a')).map((e) => [e.message.payload.toString(), e.state])).toEqual([['last', 'queued']]);
        }));

      it('queue stats survive reopen, drops included, and the limits still apply', ({ skip }) =>
        withReopen(
          skip,
          async (repository, reopen) => {
            await repository.createSession('a');
            await repository.createSession('b');
            const first = await repository.publish({ message: message('t', 'one'), deliveries: [to('a'), to('b')] });
            await repository.publish({ message: message('t', 'two'), deliveries: [to('a'), to('b')] });
            await repository.publish({ message: message('t', 'three'), deliveries: [to('a')] });
            await repository.complete('b', seqOf(first, 'b'));
            expect(await repository.queueStats('a')).toEqual({ messages: 2, bytes: 6, dropped: 1 });
            let again = await reopen();
            expect(await again.queueStats('a')).toEqual({ messages: 2, bytes: 6, dropped: 1 });
            expect(await again.queueStats('b')).toEqual({ messages: 1, bytes: 3, dropped: 0 });
            expect((await again.publish({ message: message('t', 'four'), deliveries: [to('a'), to('b')] })).has('a')).toBe(false);
            await again.complete('a', seqOf(first, 'a'));
            again = await reopen();
            expect(await again.queueStats('a')).toEqual({ messages: 1, bytes: 3, dropped: 2 });
            expect(await again.queueStats('b')).toEqual({ messages: 2, bytes: 7, dropped: 0 });
            expect((await again.publish({ message: message('t', 'five'), deliveries: [to('a')] })).has('a')).toBe(true);
            await again.destroySession('b');
            again = await reopen();
            expect(await again.queueStats('a')).toEqual({ messages: 2, bytes: 7, dropped: 2 });
            expect(await again.queueStats('b')).toBeUndefined();
          },
          { limits: { maxMessages: 2, maxBytes: 1_000_000 } },
        ));

      it('a destroyed session, a completed entry, a released id and a cleared retained message stay gone after reopen', ({ skip }) =>
        withReopen(skip, async (repository, reopen) => {
          await repository.createSession('a');
          await repository.createSession('b');
          await repository.subscribe('a', [{ filter: 'x', qos: 1 }]);
          const seqs = await repository.publish({
            message: message('x', 'p'),
            deliveries: [to('a'), to('b')],
            retained: 'set',
            inbound: { clientId: 'b', packetId: 5 },
          });
          await repository.destroySession('a');
          await repository.complete('b', seqOf(seqs, 'b'));
          await repository.releaseInbound('b', 5);
          await repository.clearRetained('x');
          const again = await reopen();
          expect(normalizeSessions(await again.loadSessions())).toEqual([{ clientId: 'b', subscriptions: [] }]);
          expect(await readAll(again, 'a')).toEqual([]);
          expect(await readAll(again, 'b')).toEqual([]);
          expect(await again.loadInbound('b')).toEqual([]);
          expect(await loadRetained(again)).toEqual([]);
          expect(await again.queueStats('a')).toBeUndefined();
          expect(await again.queueStats('b')).toEqual({ messages: 0, bytes: 0, dropped: 0 });
          await expectRejection(() => again.subscribe('a', [{ filter: 'x', qos: 1 }]), ErrorCodes.STORE_UNKNOWN_SESSION);
        }));

      it('the first publish after reopen gets a seq greater than any before (entries still queued)', ({ skip }) =>
        withReopen(skip, async (repository, reopen) => {
          await repository.createSession('a');
          let last = 0;
          for (let i = 0; i < 3; i++) last = seqOf(await repository.publish({ message: message('t', `${i}`), deliveries: [to('a')] }), 'a');
          const again = await reopen();
          const next = seqOf(await again.publish({ message: message('t', 'after'), deliveries: [to('a')] }), 'a');
          expect(next).toBeGreaterThan(last);
          expect((await readAll(again, 'a')).map((e) => e.message.payload.toString())).toEqual(['0', '1', '2', 'after']);
        }));

      it('after reopen of a drained queue, a publish is read back alone and in order with later ones', ({ skip }) =>
        withReopen(skip, async (repository, reopen) => {
          await repository.createSession('a');
          const seqs: number[] = [];
          for (let i = 0; i < 3; i++) seqs.push(seqOf(await repository.publish({ message: message('t', `${i}`), deliveries: [to('a')] }), 'a'));
          for (const seq of seqs) await repository.complete('a', seq);
          const again = await reopen();
          const first = seqOf(await again.publish({ message: message('t', 'after'), deliveries: [to('a')] }), 'a');
          const second = seqOf(await again.publish({ message: message('t', 'later'), deliveries: [to('a')] }), 'a');
          expect(second).toBeGreaterThan(first);
          expect((await readAll(again, 'a')).map((e) => e.message.payload.toString())).toEqual(['after', 'later']);
        }));

      it('the first publish after reopen gets a seq greater than every entry still stored (newest entry completed before the restart)', ({ skip }) =>
        withReopen(skip, async (repository, reopen) => {
          await repository.createSession('a');
          const seqs: number[] = [];
          for (let i = 0; i < 3; i++) seqs.push(seqOf(await repository.publish({ message: message('t', `${i}`), deliveries: [to('a')] }), 'a'));
          await repository.complete('a', seqs[2]!);
          const again = await reopen();
          const next = seqOf(await again.publish({ message: message('t', 'after'), deliveries: [to('a')] }), 'a');
          expect(next, `seq after restart; seqs still stored were ${seqs.slice(0, 2).join(',')}`).toBeGreaterThan(seqs[1]!);
          expect((await readAll(again, 'a')).map((e) => e.message.payload.toString())).toEqual(['0', '1', 'after']);
        }));

      it('a message shared by several sessions survives reopen for each, and completing it everywhere removes it', ({ skip }) =>
        withReopen(skip, async (repository, reopen) => {
          for (const clientId of ['a', 'b', 'c']) await repository.createSession(clientId);
          const seqs = await repository.publish({
            message: message('s', 'shared body', 1),
            deliveries: [to('a'), to('b'), to('c')],
          });
          await repository.complete('a', seqOf(seqs, 'a'));
          let current = await reopen();
          for (const clientId of ['b', 'c']) {
            expect((await readAll(current, clientId)).map((e) => e.message.payload.toString())).toEqual(['shared body']);
          }
          await current.destroySession('b');
          current = await reopen();
          expect((await readAll(current, 'c')).map((e) => e.message.payload.toString())).toEqual(['shared body']);
          await current.complete('c', seqOf(seqs, 'c'));
          current = await reopen();
          expect(await readAll(current, 'c')).toEqual([]);
        }));
    });
  });
}

/**
 * The model-based property of the contract. Separate from the examples so that a slow backend can
 * run it in a test file of its own (in parallel with its examples).
 */
export function repositoryModelContract(name: string, factory: RepositoryFactory): void {
  describe(`SessionRepository contract, model-based: ${name}`, () => {
    /**
     * One fixture per run; its reopen (if any) also becomes a command of the sequence. Runs are
     * kept few (each transition of the LevelDB repository is an fsync): the property runs twice,
     * with the default limits (nothing is refused) and with tiny ones (refusals are frequent).
     */
    async function agreesWithModel(
      limits: QueueLimits | undefined,
      numRuns: number,
      publishes: number,
      retainedLimits?: RetainedLimits,
    ): Promise<Model['observed']> {
      const options: RepositoryOptions = { ...(limits ? { limits } : {}), ...(retainedLimits ? { retainedLimits } : {}) };
      let withRestarts = false;
      {
        const probe = await factory(options);
        withRestarts = probe.reopen !== undefined;
        await probe.cleanup();
      }
      const observed = { drops: 0, admitted: 0, retainedRefused: 0 };
      await fc.assert(
        fc.asyncProperty(fc.commands(commandArbitraries(withRestarts, publishes), { maxCommands: 40, size: 'max' }), async (commands) => {
          const fixture = await factory(options);
          try {
            const model: Model = {
              limits: limits ?? DEFAULT_QUEUE_LIMITS,
              retainedLimits: retainedLimits ?? DEFAULT_RETAINED_LIMITS,
              sessions: new Map(),
              retained: new Map(),
              retainedRefused: 0,
              observed,
            };
            const real: Real = { repository: fixture.repository, reopen: fixture.reopen };
            // Two sessions to start with, so that most publishes land from the first command on.
            for (const clientId of ['alice', 'bob']) await new CreateSessionCmd(clientId).run(model, real);
            await fc.asyncModelRun(() => ({ model, real }), commands);
            if (real.reopen) {
              real.repository = await real.reopen();
              await expectMatchesModel(model, real.repository, 'final reopen');
            }
          } finally {
            await fixture.cleanup();
          }
        }),
        { numRuns },
      );
      return observed;
    }

    it('random sequences of transitions agree with a simple model (and, when reopen exists, across restarts)', async () => {
      const observed = await agreesWithModel(undefined, 30, 3);
      expect(observed.drops, 'nothing is refused under the default limits').toBe(0);
      expect(observed.retainedRefused, 'no retained message is refused under the default limits').toBe(0);
      expect(observed.admitted).toBeGreaterThan(0);
    }, PROPERTY_TIMEOUT_MS);

    it('with tiny queue and retained limits (3 messages, 20 bytes; 1 retained, 8 bytes), refusals and counts agree with the model', async () => {
      const observed = await agreesWithModel({ maxMessages: 3, maxBytes: 20 }, 30, 8, { maxMessages: 1, maxBytes: 8 });
      // The runs did exercise both outcomes (payloads are up to 12 bytes: every limit binds).
      expect(observed.drops).toBeGreaterThan(0);
      expect(observed.admitted).toBeGreaterThan(0);
      expect(observed.retainedRefused).toBeGreaterThan(0);
    }, PROPERTY_TIMEOUT_MS);
  });
}
