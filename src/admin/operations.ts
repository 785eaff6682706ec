import type { BridgeStatus } from '../bridge/bridge.js';
import { BRIDGE_CLIENT_ID_PREFIX, isBridgeClientId } from '../session/bridge-client-id.js';
import { isValidTopicFilter, isValidTopicName, topicMatches } from '../routing/topic.js';
import { packetIdOf } from '../session/packet-ids.js';
import type { InspectedEntry, InspectedSession, LevelInspector, StoreView } from '../store/level-inspector.js';
import type { OutboundEntry, Subscription } from '../store/repository.js';
import { AdminError, AdminErrorCodes } from '../errors.js';
import type { BrokerCounters } from '../protocol/limits.js';
import {
  isoTime,
  messagePropertyFields,
  payloadField,
  SCHEMA_VERSION,
  sessionExpiryFields,
  subscriptionField,
  type AdminRecord,
  type BridgeRecord,
  type HeaderRecord,
  type InflightField,
  type MessageRecord,
  type Mode,
  type SessionRecord,
} from './records.js';

/**
 * The operations of broker-admin, the same in both modes: the CLI runs them on a stopped store,
 * the running broker runs them for its admin socket. Each is an async generator of records, so
 * that output streams (and a slow reader holds back the reading, not memory).
 */

export type AdminRequest =
  | { op: 'dump'; client?: string; messages?: boolean; full?: boolean }
  | { op: 'sessions' }
  | { op: 'session-show'; clientId: string; full?: boolean }
  | { op: 'session-drop'; clientId: string }
  | { op: 'retained-list'; filter?: string; full?: boolean }
  | { op: 'retained-clear'; topic: string }
  | { op: 'stats' }
  | { op: 'bridges' }
  | { op: 'verify' }
  | { op: 'compact' };

/** A session as the running broker holds it in memory. */
export interface LiveSession {
  clientId: string;
  clean: boolean;
  connected: boolean;
  /** The user name that created the session; undefined for an anonymous client. */
  owner: string | undefined;
  /** Its Session Expiry Interval, seconds; undefined: none (3.1.1), or a clean session. */
  expiry: number | undefined;
  subscriptions: Subscription[];
  /** The outbound queue in seq order (clean sessions: from memory). */
  entries(): AsyncIterable<OutboundEntry>;
  inbound(): Promise<number[]>;
  queueStats(): Promise<{ dropped: number } | undefined>;
}

/** What the operations work on: a stopped store opened by broker-admin, or the running broker. */
export interface AdminTarget {
  readonly mode: Mode;
  /** Absolute path of the store. */
  readonly store: string;
  inspector(): Promise<LevelInspector>;
  /** Running mode only: the sessions in memory. */
  readonly live?: {
    lookup(clientId: string): LiveSession | undefined;
    /** CleanSession=1 sessions, which the store never sees. */
    clean(): Iterable<LiveSession>;
  };
  /** Running mode only: the broker's counters since it started. */
  counters?(): BrokerCounters;
  /** Running mode only: the bridges and their state. */
  bridges?(): Promise<BridgeStatus[]>;
  /** Discards a session known to exist; ends its connection, if any. */
  dropSession(clientId: string): Promise<void>;
  /** Removes a retained message known to exist. */
  clearRetained(topic: string): Promise<void>;
}

export type Progress = (label: string, count: number) => void;

const OPS = new Set(['dump', 'sessions', 'session-show', 'session-drop', 'retained-list', 'retained-clear', 'stats', 'bridges', 'verify', 'compact']);

/** Checks a request that arrived as JSON. */
export function parseRequest(value: unknown): AdminRequest {
  const bad = (message: string) => new AdminError(AdminErrorCodes.BAD_REQUEST, message);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw bad('a request is a JSON object');
  const request = value as Record<string, unknown>;
  if (typeof request.op !== 'string' || !OPS.has(request.op)) throw bad(`unknown op ${JSON.stringify(request.op)}`);
  for (const field of ['client', 'clientId', 'filter', 'topic']) {
    if (request[field] !== undefined && typeof request[field] !== 'string') throw bad(`${field} must be a string`);
  }
  for (const field of ['messages', 'full']) {
    if (request[field] !== undefined && typeof request[field] !== 'boolean') throw bad(`${field} must be a boolean`);
  }
  if ((request.op === 'session-show' || request.op === 'session-drop') && typeof request.clientId !== 'string') {
    throw bad(`${request.op} needs a clientId`);
  }
  if (request.op === 'retained-clear' && typeof request.topic !== 'string') throw bad('retained-clear needs a topic');
  return request as AdminRequest;
}

export async function* runOperation(request: AdminRequest, target: AdminTarget, progress?: Progress): AsyncGenerator<AdminRecord> {
  validate(request);
  const header: HeaderRecord = { type: 'header', schema: SCHEMA_VERSION, command: request.op, mode: target.mode, store: target.store };
  const inspector = await target.inspector();
  switch (request.op) {
    case 'dump':
      yield header;
      yield* dump(inspector, target, request, progress);
      return;
    case 'sessions':
      yield header;
      yield* withView(inspector, (view) => sessions(view, target, { messages: false, full: false }, progress));
      return;
    case 'session-show':
      yield header;
      yield* withView(inspector, (view) => oneSession(view, target, request.clientId, { messages: true, full: request.full ?? false }));
      return;
    case 'session-drop': {
      const view = inspector.view();
      let wasConnected: boolean;
      try {
        const stored = await view.session(request.clientId);
        const live = target.live?.lookup(request.clientId);
        if (!stored && !live) throw unknownSession(request.clientId);
        wasConnected = live?.connected ?? false;
      } finally {
        await view.close();
      }
      await target.dropSession(request.clientId);
      yield header;
      yield { type: 'dropped', clientId: request.clientId, wasConnected };
      return;
    }
    case 'retained-list':
      yield header;
      yield* withView(inspector, (view) => retained(view, request.filter, request.full ?? false));
      return;
    case 'retained-clear': {
      const view = inspector.view();
      try {
        if (!(await view.retainedMessage(request.topic))) {
          throw new AdminError(AdminErrorCodes.UNKNOWN_RETAINED, `there is no retained message on ${JSON.stringify(request.topic)}`);
        }
      } finally {
        await view.close();
      }
      await target.clearRetained(request.topic);
      yield header;
      yield { type: 'retained-cleared', topic: request.topic };
      return;
    }
    case 'stats':
      yield header;
      yield* withView(inspector, (view) => totals(view, inspector, progress));
      if (target.counters) yield { type: 'counters', ...target.counters() };
      return;
    case 'bridges':
      yield header;
      if (target.bridges) {
        for (const status of await target.bridges()) yield runningBridge(status);
      } else {
        yield* withView(inspector, storedBridges);
      }
      return;
    case 'verify': {
      yield header;
      const view = inspector.view();
      try {
        for await (const event of view.verify((count) => progress?.('keys checked', count))) {
          if (event.kind === 'problem') yield { type: 'problem', key: event.key, problem: event.problem, detail: event.detail };
          else yield { type: 'verify', schema: SCHEMA_VERSION, ok: event.problems === 0, keys: event.keys, problems: event.problems };
        }
      } finally {
        await view.close();
      }
      return;
    }
    case 'compact': {
      yield header;
      const diskBytesBefore = await inspector.diskBytes();
      await inspector.compact();
      yield { type: 'compacted', diskBytesBefore, diskBytesAfter: await inspector.diskBytes() };
      return;
    }
  }
}

function validate(request: AdminRequest): void {
  if (request.op === 'retained-list' && request.filter !== undefined && !isValidTopicFilter(request.filter)) {
    throw new AdminError(AdminErrorCodes.BAD_REQUEST, `${JSON.stringify(request.filter)} is not a valid topic filter`);
  }
  if (request.op === 'retained-clear' && !isValidTopicName(request.topic)) {
    throw new AdminError(AdminErrorCodes.BAD_REQUEST, `${JSON.stringify(request.topic)} is not a valid topic name`);
  }
}

/** Runs a generator on one snapshot and closes the snapshot however the generator ends. */
async function* withView<T>(inspector: LevelInspector, body: (view: StoreView) => AsyncGenerator<T>): AsyncGenerator<T> {
  const view = inspector.view();
  try {
    yield* body(view);
  } finally {
    await view.close();
  }
}

interface ShowOptions {
  messages: boolean;
  full: boolean;
}

async function* dump(
  inspector: LevelInspector,
  target: AdminTarget,
  request: Extract<AdminRequest, { op: 'dump' }>,
  progress?: Progress,
): AsyncGenerator<AdminRecord> {
  const options = { messages: request.messages ?? false, full: request.full ?? false };
  // One snapshot for the whole dump: sessions, retained messages and totals agree with each other.
  const view = inspector.view();
  try {
    if (request.client !== undefined) {
      yield* oneSession(view, target, request.client, options);
      return;
    }
    yield* sessions(view, target, options, progress);
    yield* retained(view, undefined, options.full);
    yield* totals(view, inspector, progress);
  } finally {
    await view.close();
  }
}

async function* sessions(view: StoreView, target: AdminTarget, options: ShowOptions, progress?: Progress): AsyncGenerator<AdminRecord> {
  let count = 0;
  for await (const stored of view.sessions()) {
    yield* storedSession(view, target, stored, options);
    progress?.('sessions', ++count);
  }
  for (const live of target.live?.clean() ?? []) {
    yield* liveSession(live, options);
    progress?.('sessions', ++count);
  }
}

async function* oneSession(view: StoreView, target: AdminTarget, clientId: string, options: ShowOptions): AsyncGenerator<AdminRecord> {
  const stored = await view.session(clientId);
  if (stored) {
    yield* storedSession(view, target, stored, options);
    return;
  }
  const live = target.live?.lookup(clientId);
  if (live?.clean) {
    yield* liveSession(live, options);
    return;
  }
  throw unknownSession(clientId);
}

async function* storedSession(view: StoreView, target: AdminTarget, stored: InspectedSession, options: ShowOptions): AsyncGenerator<AdminRecord> {
  const { clientId } = stored;
  const subscriptions: Subscription[] = [];
  for await (const subscription of view.subscriptions(clientId)) subscriptions.push(subscription);
  // The stored counters spare a scan of the whole queue: only the entries in flight are read.
  const stats = await view.queueStats(clientId);
  const queued = stats ? { count: stats.messages, bytes: stats.bytes } : { count: 0, bytes: 0 };
  const inflight: InflightField[] = [];
  for await (const entry of view.queue(clientId, { inflightOnly: stats !== undefined })) {
    if (!stats) {
      queued.count++;
      queued.bytes += entry.message.payload.byteLength;
    }
    if (entry.state !== 'queued') inflight.push(inflightField(entry));
  }
  const inbound = [];
  for await (const { packetId, receivedAt } of view.inbound(clientId)) inbound.push({ packetId, receivedAt: isoTime(receivedAt) });
  const connected = target.live?.lookup(clientId)?.connected ?? false;
  const record: SessionRecord = {
    type: 'session',
    clientId,
    persistent: true,
    connected,
    createdAt: isoTime(stored.createdAt),
    lastSeen: stored.lastSeen === undefined ? null : isoTime(stored.lastSeen),
    ...(stored.owner === undefined ? {} : { owner: stored.owner }),
    ...sessionExpiryFields(stored.expiry, stored.lastSeen, connected),
    subscriptions: subscriptions.map(subscriptionField),
    queued,
    dropped: stats?.dropped ?? 0,
    inflight,
    inbound,
  };
  yield record;
  if (options.messages) {
    for await (const entry of view.queue(clientId)) yield messageRecord(clientId, entry, options.full);
  }
}

async function* liveSession(live: LiveSession, options: ShowOptions): AsyncGenerator<AdminRecord> {
  const queued = { count: 0, bytes: 0 };
  const inflight: InflightField[] = [];
  for await (const entry of live.entries()) {
    queued.count++;
    queued.bytes += entry.message.payload.byteLength;
    if (entry.state !== 'queued') inflight.push(inflightField(entry));
  }
  const inbound = (await live.inbound()).map((packetId) => ({ packetId, receivedAt: null }));
  const stats = await live.queueStats();
  yield {
    type: 'session',
    clientId: live.clientId,
    persistent: !live.clean,
    connected: live.connected,
    createdAt: null,
    lastSeen: null,
    ...(live.owner === undefined ? {} : { owner: live.owner }),
    ...sessionExpiryFields(live.expiry, undefined, live.connected),
    subscriptions: live.subscriptions.map(subscriptionField),
    queued,
    dropped: stats?.dropped ?? 0,
    inflight,
    inbound,
  };
  if (options.messages) {
    for await (const entry of live.entries()) yield messageRecord(live.clientId, entry, options.full);
  }
}

async function* retained(view: StoreView, filter: string | undefined, full: boolean): AsyncGenerator<AdminRecord> {
  for await (const message of view.retained()) {
    if (filter !== undefined && !topicMatches(filter, message.topic)) continue;
    yield { type: 'retained', topic: message.topic, qos: message.qos, payload: payloadField(message.payload, full), ...messagePropertyFields(message.properties, Date.now()) };
  }
}

async function* totals(view: StoreView, inspector: LevelInspector, progress?: Progress): AsyncGenerator<AdminRecord> {
  const counted = await view.totals((count) => progress?.('keys counted', count));
  yield { type: 'totals', schema: SCHEMA_VERSION, ...counted, diskBytes: await inspector.diskBytes() };
}

type Entry = Pick<InspectedEntry, 'seq' | 'message' | 'qos' | 'retain' | 'state' | 'packetId' | 'subscriptionIds' | 'shared'>;

/** A 'dup' entry's packet id is not stored: the session derives it from the seq. */
function packetIdOfEntry(entry: Entry): number | null {
  if (entry.state === 'queued') return null;
  return entry.packetId ?? packetIdOf(entry.seq);
}

/**
 * The state as broker-admin has always named it (part of its JSON schema): a 'dup' entry is shown
 * as 'sent', which is what it is for an operator: handed to the client, or about to be.
 */
function shownState(entry: Entry): MessageRecord['state'] {
  return entry.state === 'dup' ? 'sent' : entry.state;
}

function inflightField(entry: Entry): InflightField {
  return {
    seq: entry.seq,
    packetId: packetIdOfEntry(entry)!,
    state: shownState(entry) as InflightField['state'],
    topic: entry.message.topic,
    qos: entry.qos,
  };
}

function messageRecord(clientId: string, entry: Entry, full: boolean): MessageRecord {
  return {
    type: 'message',
    clientId,
    seq: entry.seq,
    state: shownState(entry),
    packetId: packetIdOfEntry(entry),
    topic: entry.message.topic,
    qos: entry.qos,
    retain: entry.retain,
    payload: payloadField(entry.message.payload, full),
    ...messagePropertyFields(entry.message.properties, Date.now()),
    ...(entry.subscriptionIds === undefined ? {} : { subscriptionIds: entry.subscriptionIds }),
    ...(entry.shared === undefined ? {} : { shared: entry.shared }),
  };
}

function unknownSession(clientId: string): AdminError {
  return new AdminError(AdminErrorCodes.UNKNOWN_SESSION, `there is no session for client id ${JSON.stringify(clientId)}`);
}

function runningBridge(status: BridgeStatus): BridgeRecord {
  return {
    type: 'bridge',
    name: status.name,
    session: status.session,
    clientId: status.clientId,
    address: status.address,
    state: status.state,
    since: status.since,
    retryAt: status.retryAt ?? null,
    refusedCode: status.refusedCode ?? null,
    lastError: status.lastError ?? null,
    queued: { count: status.queued.messages, bytes: status.queued.bytes },
    dropped: status.queued.dropped,
    inflight: status.inflight,
    forwarded: status.forwarded,
    received: status.received,
  };
}

/** A stopped store knows the bridges by their sessions: their queues, nothing of their connections. */
async function* storedBridges(view: StoreView): AsyncGenerator<AdminRecord> {
  for await (const stored of view.sessions()) {
    if (!isBridgeClientId(stored.clientId)) continue;
    const stats = await view.queueStats(stored.clientId);
    let inflight = 0;
    for await (const entry of view.queue(stored.clientId, { inflightOnly: true })) if (entry.state !== 'queued') inflight++;
    yield {
      type: 'bridge',
      name: stored.clientId.slice(BRIDGE_CLIENT_ID_PREFIX.length),
      session: stored.clientId,
      clientId: null,
      address: null,
      state: 'stopped',
      since: null,
      retryAt: null,
      refusedCode: null,
      lastError: null,
      queued: { count: stats?.messages ?? 0, bytes: stats?.bytes ?? 0 },
      dropped: stats?.dropped ?? 0,
      inflight,
      forwarded: 0,
      received: 0,
    };
  }
}
