/**
 * LevelDB-only behaviour of LevelRepository: what the shared contract cannot see, because it is
 * about the directory and the bytes on disk rather than the transitions.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ClassicLevel } from 'classic-level';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { BrokerError, ErrorCodes, type ErrorCode } from '../../src/errors.js';
import { decode, decodeRecord, encode, encodeRecord, isCheckedRecord } from '../../src/store/codec.js';
import {
  FORMAT_KEY,
  FORMAT_VERSION,
  RETAINED_TOTALS_KEY,
  isNumber,
  isRetainedIndexValue,
  isRetainedTotalsValue,
  isRetainedValue,
  isReleaseValue,
  isQueueEntryValue,
  isQueueStatsValue,
  isRefCount,
  isDupMarkValue,
  isSessionValue,
  keys,
} from '../../src/store/key-layout.js';
import { LevelRepository } from '../../src/store/level-repository.js';
import { packetIdOf } from '../../src/session/packet-ids.js';
import type { QueueLimits } from '../../src/store/queue-limits.js';
import type { Delivery, Message, OutboundEntry, SessionRepository } from '../../src/store/repository.js';

type RawDb = ClassicLevel<string, Uint8Array>;

const directories: string[] = [];
const repositories: SessionRepository[] = [];

function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'broker-level-specific-'));
  directories.push(dir);
  return dir;
}

async function openRepository(location: string, limits?: QueueLimits): Promise<LevelRepository> {
  const repository = new LevelRepository(limits ? { location, limits } : { location });
  repositories.push(repository);
  await repository.open();
  return repository;
}

/** Opens the directory with classic-level directly, to look at (or tamper with) the raw keys. */
async function withRawDb<T>(location: string, body: (db: RawDb) => Promise<T>): Promise<T> {
  const db: RawDb = new ClassicLevel<string, Uint8Array>(location, { keyEncoding: 'utf8', valueEncoding: 'view' });
  await db.open();
  try {
    return await body(db);
  } finally {
    await db.close();
  }
}

async function rawEntries(location: string): Promise<Map<string, Uint8Array>> {
  return withRawDb(location, async (db) => new Map(await db.iterator().all()));
}

function keysWithPrefix(entries: Map<string, Uint8Array>, prefix: string): string[] {
  return [...entries.keys()].filter((key) => key.startsWith(prefix));
}

/** Everything here settles in well under a second; the bound only limits how long a hung transition holds up the run. */
const TIMEOUT = { timeout: 10_000 };

const BODY_PREFIX = 'm\u0000';
const COUNT_PREFIX = 'c\u0000';

async function expectRejection(promise: Promise<unknown>, code: ErrorCode): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error, `expected a rejection with ${code}`).toBeInstanceOf(BrokerError);
  expect((error as BrokerError).code).toBe(code);
}

function message(topic: string, payload: string, qos: 0 | 1 | 2 = 1): Message {
  return { topic, payload: Buffer.from(payload), qos };
}

function seqOf(seqs: Map<string, number>, clientId: string): number {
  const seq = seqs.get(clientId);
  if (seq === undefined) throw new Error(`no seq for ${clientId}`);
  return seq;
}

afterEach(async () => {
  vi.restoreAllMocks();
  for (const repository of repositories.splice(0)) await repository.close();
  for (const dir of directories.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

describe('LevelRepository: the data directory', TIMEOUT, () => {
  it('opening a directory already open by another LevelRepository rejects with STORE_LOCKED', async () => {
    const location = tempDir();
    const first = await openRepository(location);
    await first.createSession('a');
    const second = new LevelRepository({ location });
    await expectRejection(second.open(), ErrorCodes.STORE_LOCKED);
    // The first instance is unaffected, and once it is closed the directory can be opened.
    expect((await first.loadSessions()).map((s) => s.clientId)).toEqual(['a']);
    await first.close();
    const third = await openRepository(location);
    expect((await third.loadSessions()).map((s) => s.clientId)).toEqual(['a']);
  });

  it('a clean close leaves nothing in LevelDB\'s log, and everything in the tables, for a quick next start', async () => {
    const location = tempDir();
    const repository = await openRepository(location);
    await repository.createSession('a');
    for (let i = 0; i < 50; i++) {
      await repository.publish({ message: { topic: 't', payload: Buffer.from(`m${i}`), qos: 1 }, deliveries: [{ clientId: 'a', qos: 1, retain: false }] });
    }
    await repository.close();
    const logs = fs.readdirSync(location).filter((name) => name.endsWith('.log'));
    expect(logs.map((name) => fs.statSync(path.join(location, name)).size)).toEqual([0]);
    const again = await openRepository(location);
    expect((await again.readOutbound('a', 0, 100)).map((entry) => entry.message.payload.toString())).toEqual(
      Array.from({ length: 50 }, (_, i) => `m${i}`),
    );
    await again.close();
  });

  it('a LevelDB database without the format marker rejects with STORE_NOT_A_BROKER_STORE and is left as it was', async () => {
    const location = tempDir();
    await withRawDb(location, async (db) => {
      await db.put('someone-else', Buffer.from('their data'));
    });
    await expectRejection(new LevelRepository({ location }).open(), ErrorCodes.STORE_NOT_A_BROKER_STORE);
    // The failed open released the directory and wrote nothing into it.
    const entries = await rawEntries(location);
    expect([...entries.keys()]).toEqual(['someone-else']);
  });

  it('a store of another format version rejects with STORE_UNSUPPORTED_FORMAT', async () => {
    const location = tempDir();
    await withRawDb(location, async (db) => {
      await db.put(FORMAT_KEY, encode(999));
    });
    await expectRejection(new LevelRepository({ location }).open(), ErrorCodes.STORE_UNSUPPORTED_FORMAT);
  });

  it('an empty directory becomes a broker store with a format marker', async () => {
    const location = tempDir();
    const repository = await openRepository(location);
    await repository.close();
    const entries = await rawEntries(location);
    expect([...entries.keys()]).toEqual([FORMAT_KEY]);
  });

  it('the session owner is an optional field u: records written before it (or before last-seen) still read, with no owner', async () => {
    const location = tempDir();
    const repository = await openRepository(location);
    await repository.createSession('new', 'alice');
    await repository.close();
    await withRawDb(location, async (db) => {
      expect(decodeRecord((await db.get(keys.session('new')))!, keys.session('new'), isSessionValue)).toMatchObject({ u: 'alice' });
      await db.put(keys.session('old'), encodeRecord(keys.session('old'), { c: 1000, l: 2000 }));
      await db.put(keys.session('older'), encodeRecord(keys.session('older'), { c: 1000 }));
      await db.put(keys.session('bad'), encodeRecord(keys.session('bad'), { c: 1000, u: 7 }));
    });
    const reopened = await openRepository(location);
    await expectRejection(reopened.loadSessions(), ErrorCodes.STORE_CORRUPT_RECORD);
    await reopened.close();
    await withRawDb(location, (db) => db.del(keys.session('bad')));
    const fixed = await openRepository(location);
    const sessions = (await fixed.loadSessions()).sort((a, b) => (a.clientId < b.clientId ? -1 : 1));
    // toMatchObject: loadSessions also tells each session's last-seen time (for its expiry).
    expect(sessions).toMatchObject([
      { clientId: 'new', subscriptions: [], owner: 'alice' },
      { clientId: 'old', subscriptions: [] },
      { clientId: 'older', subscriptions: [] },
    ]);
    expect(sessions.map(({ owner }) => owner)).toEqual(['alice', undefined, undefined]);
    expect(sessions.map(({ lastSeen }) => lastSeen).slice(1)).toEqual([2000, 1000]);
    expect(await fixed.sessionInfo('old')).toEqual({ createdAt: 1000, lastSeen: 2000 });
  });
});

describe('LevelRepository: checked records', TIMEOUT, () => {
  it('every value but the format marker is a checked record of its key; the marker is plain msgpack, so an older broker can read it', async () => {
    const location = tempDir();
    const repository = await openRepository(location);
    await repository.createSession('a');
    await repository.createSession('b');
    await repository.subscribe('a', [{ filter: 't/#', qos: 2 }]);
    const seqs = await repository.publish({
      message: message('t/x', 'shared', 2),
      deliveries: [
        { clientId: 'a', qos: 2, retain: false },
        { clientId: 'b', qos: 1, retain: false },
      ],
      retained: 'set',
      inbound: { clientId: 'b', packetId: 7 },
    });
    await repository.raiseDupMark('a', seqOf(seqs, 'a'));
    await repository.markReleased('a', [{ entry: seqOf(seqs, 'a'), packetId: 1 }]);
    await repository.close();
    const entries = await rawEntries(location);
    // Every kind of record the layout has, but the sync mark (only with a sync interval).
    const kinds = new Set([...entries.keys()].map((key) => (key.startsWith('!') ? key : key[0])));
    expect([...kinds].sort()).toEqual(['!format', '!retained', 'b', 'c', 'f', 'i', 'm', 'n', 'q', 'r', 's', 't', 'w']);
    for (const [key, value] of entries) {
      if (key === FORMAT_KEY) expect(decode(value, key, isNumber)).toBe(FORMAT_VERSION);
      else expect(isCheckedRecord(value, key), JSON.stringify(key)).toBe(true);
    }
  });

  it('a record moved to another key fails its check: the key is part of it', async () => {
    const location = tempDir();
    const repository = await openRepository(location);
    await repository.createSession('a');
    await repository.createSession('b');
    await repository.publish({ message: message('t', 'for a'), deliveries: [{ clientId: 'a', qos: 1, retain: false }] });
    await repository.close();
    await withRawDb(location, async (db) => {
      // Byte for byte the entry of a, under b's key: what a damaged key in a table looks like.
      await db.put(keys.queueEntry('b', 1), (await db.get(keys.queueEntry('a', 1)))!);
    });
    const reopened = await openRepository(location);
    expect((await reopened.readOutbound('a', 0, 10)).map((entry) => entry.message.payload.toString())).toEqual(['for a']);
    await expectRejection(reopened.readOutbound('b', 0, 10), ErrorCodes.STORE_CORRUPT_RECORD);
  });
});

describe('LevelRepository: retained messages on disk', TIMEOUT, () => {
  it('a payload under r\\0, its index record under t\\0, the totals under !retained, all in the batch of the change', async () => {
    const location = tempDir();
    const repository = await openRepository(location);
    await repository.publish({ message: message('a/b', 'payload', 2), deliveries: [], retained: 'set' });
    await repository.publish({ message: message('c', 'xy', 0), deliveries: [], retained: 'set' });
    await repository.publish({ message: message('c', '', 0), deliveries: [], retained: 'clear' });
    await repository.close();
    const entries = await rawEntries(location);
    expect(keysWithPrefix(entries, 'r\u0000')).toEqual([keys.retained('a/b')]);
    expect(keysWithPrefix(entries, 't\u0000')).toEqual([keys.retainedIndex('a/b')]);
    const { p, o } = decodeRecord(entries.get(keys.retained('a/b'))!, keys.retained('a/b'), isRetainedValue);
    expect([Buffer.from(p).toString(), o]).toEqual(['payload', 2]);
    expect(decodeRecord(entries.get(keys.retainedIndex('a/b'))!, keys.retainedIndex('a/b'), isRetainedIndexValue)).toEqual({ o: 2, z: 7 });
    expect(decodeRecord(entries.get(RETAINED_TOTALS_KEY)!, RETAINED_TOTALS_KEY, isRetainedTotalsValue)).toEqual({ m: 1, b: 7, d: 0 });
  });

  it('the index is read without the payloads: with every payload record damaged the broker still opens and loads it; readRetained reports the damage per topic', async () => {
    const location = tempDir();
    const repository = await openRepository(location);
    for (const topic of ['x/1', 'x/2', 'x/3']) await repository.publish({ message: message(topic, `payload of ${topic}`), deliveries: [], retained: 'set' });
    await repository.close();
    await withRawDb(location, async (db) => {
      for (const topic of ['x/1', 'x/3']) {
        const key = keys.retained(topic);
        const stored = (await db.get(key))!;
        await db.put(key, flipBit(stored, stored.length - 3));
      }
    });
    const reopened = await openRepository(location);
    expect((await reopened.loadRetainedIndex()).map(({ topic }) => topic).sort()).toEqual(['x/1', 'x/2', 'x/3']);
    const read = await reopened.readRetained(['x/1', 'x/2', 'x/3']);
    expect(read[0]).toMatchObject({ code: ErrorCodes.STORE_CORRUPT_RECORD });
    expect(read[1]).toMatchObject({ topic: 'x/2', qos: 1 });
    expect(read[2]).toMatchObject({ code: ErrorCodes.STORE_CORRUPT_RECORD, message: expect.stringMatching(/fails its checksum/) });
  });
});

describe('LevelRepository: shared message bodies', TIMEOUT, () => {
  it('a message delivered to several sessions is stored once; a single delivery is stored inline', async () => {
    const location = tempDir();
    const repository = await openRepository(location);
    for (const clientId of ['a', 'b', 'c']) await repository.createSession(clientId);
    const shared = await repository.publish({
      message: message('fan/out', 'one body for three', 2),
      deliveries: [
        { clientId: 'a', qos: 2, retain: false },
        { clientId: 'b', qos: 1, retain: false },
        { clientId: 'c', qos: 0, retain: true },
      ],
    });
    const single = await repository.publish({
      message: message('just/a', 'inline'),
      deliveries: [{ clientId: 'a', qos: 1, retain: false }],
    });
    await repository.close();

    const entries = await rawEntries(location);
    const bodies = keysWithPrefix(entries, BODY_PREFIX);
    const counts = keysWithPrefix(entries, COUNT_PREFIX);
    expect(bodies).toHaveLength(1);
    // The count is the body's: under the same message id.
    expect(counts).toEqual([keys.refCount(keys.messageIdOfBodyKey(bodies[0]!))]);
    const count = decodeRecord(entries.get(counts[0]!)!, counts[0]!, isRefCount);
    expect(count).toBe(3);
    // The payload appears once in the whole store: in the body record, not in the queue entries.
    const needle = Buffer.from('one body for three');
    const holders = [...entries].filter(([, value]) => Buffer.from(value).includes(needle)).map(([key]) => key);
    expect(holders).toEqual(bodies);
    for (const clientId of ['a', 'b', 'c']) {
      const key = keys.queueEntry(clientId, seqOf(shared, clientId));
      const value = decodeRecord(entries.get(key)!, key, isQueueEntryValue);
      expect(value.m).toBe(keys.messageIdOfBodyKey(bodies[0]!));
      expect(value.p).toBeUndefined();
    }
    const inlineKey = keys.queueEntry('a', seqOf(single, 'a'));
    const inline = decodeRecord(entries.get(inlineKey)!, inlineKey, isQueueEntryValue);
    expect(inline.m).toBeUndefined();
    expect(Buffer.from(inline.p!).toString()).toBe('inline');
  });

  it('the body and its count disappear once every session has completed it or been destroyed', async () => {
    const location = tempDir();
    let repository = await openRepository(location);
    for (const clientId of ['a', 'b', 'c']) await repository.createSession(clientId);
    const seqs = await repository.publish({
      message: message('fan/out', 'shared'),
      deliveries: ['a', 'b', 'c'].map((clientId) => ({ clientId, qos: 1 as const, retain: false })),
    });
    await repository.raiseDupMark('a', seqOf(seqs, 'a'));
    await repository.complete('a', seqOf(seqs, 'a'));
    await repository.close();

    let entries = await rawEntries(location);
    expect(keysWithPrefix(entries, BODY_PREFIX)).toHaveLength(1);
    const [countKey] = keysWithPrefix(entries, COUNT_PREFIX);
    expect(decodeRecord(entries.get(countKey!)!, countKey!, isRefCount)).toBe(2);

    repository = await openRepository(location);
    await repository.destroySession('b');
    expect((await repository.readOutbound('c', 0, 10)).map((e) => e.message.payload.toString())).toEqual(['shared']);
    await repository.close();
    entries = await rawEntries(location);
    expect(keysWithPrefix(entries, BODY_PREFIX)).toHaveLength(1);
    expect(decodeRecord(entries.get(countKey!)!, countKey!, isRefCount)).toBe(1);

    repository = await openRepository(location);
    await repository.complete('c', seqOf(seqs, 'c'));
    await repository.close();
    entries = await rawEntries(location);
    expect(keysWithPrefix(entries, BODY_PREFIX)).toEqual([]);
    expect(keysWithPrefix(entries, COUNT_PREFIX)).toEqual([]);
    expect(keysWithPrefix(entries, 'q\u0000')).toEqual([]);
    expect(keysWithPrefix(entries, 'f\u0000')).toEqual([]);
  });

  it('completions and destroys of one body submitted without awaiting (one batch) still remove it exactly', async () => {
    const location = tempDir();
    const repository = await openRepository(location);
    for (const clientId of ['a', 'b', 'c', 'd']) await repository.createSession(clientId);
    const deliveries = ['a', 'b', 'c', 'd'].map((clientId) => ({ clientId, qos: 1 as const, retain: false }));
    const first = await repository.publish({ message: message('t', 'first'), deliveries });
    const second = await repository.publish({ message: message('t', 'second'), deliveries });
    await Promise.all([
      repository.complete('a', seqOf(first, 'a')),
      repository.complete('b', seqOf(first, 'b')),
      repository.complete('c', seqOf(first, 'c')),
      repository.destroySession('d'),
      repository.complete('a', seqOf(second, 'a')),
      repository.complete('a', seqOf(second, 'a')), // a duplicate PUBACK must not count twice
    ]);
    expect((await repository.readOutbound('b', 0, 10)).map((e) => e.message.payload.toString())).toEqual(['second']);
    await repository.close();
    let entries = await rawEntries(location);
    expect(keysWithPrefix(entries, BODY_PREFIX)).toHaveLength(1);
    const [countKey] = keysWithPrefix(entries, COUNT_PREFIX);
    expect(decodeRecord(entries.get(countKey!)!, countKey!, isRefCount)).toBe(2);

    const again = await openRepository(location);
    await Promise.all([again.complete('b', seqOf(second, 'b')), again.destroySession('c')]);
    await again.close();
    entries = await rawEntries(location);
    expect(keysWithPrefix(entries, BODY_PREFIX)).toEqual([]);
    expect(keysWithPrefix(entries, COUNT_PREFIX)).toEqual([]);
  });
});

describe('LevelRepository: completing a shared body through the handles it handed out', TIMEOUT, () => {
  /** A repository that counts reads of queue entries on the main thread, where a completion reads them back. */
  async function openCountingEntryReads(location: string): Promise<{ repository: LevelRepository; entryReads: () => number }> {
    let reads = 0;
    const repository = new LevelRepository({
      location,
      instrument: (db) => {
        const getSync = db.getSync.bind(db) as (key: string, options?: object) => Uint8Array | undefined;
        db.getSync = ((key: string, options?: object) => {
          if (key.startsWith('q\u0000')) reads++;
          return getSync(key, options);
        }) as typeof db.getSync;
      },
    });
    repositories.push(repository);
    await repository.open();
    return { repository, entryReads: () => reads };
  }

  /** An entry as the repository handed it out, to complete it with. */
  type Handle = Pick<OutboundEntry, 'seq' | 'stored'>;

  /** Publishes one QoS 1 message to every session of `clientIds`: each gets its entry as publish handed it out. */
  async function fanOut(repository: SessionRepository, payload: string, clientIds: string[]): Promise<Map<string, Handle>> {
    const deliveries: Delivery[] = clientIds.map((clientId) => ({ clientId, qos: 1, retain: false }));
    const seqs = await repository.publish({ message: message('fan/out', payload), deliveries });
    return new Map(deliveries.map(({ clientId, stored }) => [clientId, { seq: seqOf(seqs, clientId), stored }]));
  }

  async function payloadsOf(repository: SessionRepository, clientId: string): Promise<string[]> {
    return (await repository.readOutbound(clientId, 0, 10)).map((entry) => entry.message.payload.toString());
  }

  it('entries handed out by publish or readOutbound are completed without being read back; the body goes with the last', async () => {
    const location = tempDir();
    const { repository, entryReads } = await openCountingEntryReads(location);
    for (const clientId of ['a', 'b', 'c']) await repository.createSession(clientId);
    const published = await fanOut(repository, 'one body', ['a', 'b', 'c']);
    const [readBack] = await repository.readOutbound('b', 0, 10);

    const before = entryReads();
    await repository.complete('a', published.get('a')!);
    await repository.complete('b', readBack!);
    expect(entryReads()).toBe(before);
    expect(await payloadsOf(repository, 'c')).toEqual(['one body']);
    await repository.complete('c', published.get('c')!);
    expect(entryReads()).toBe(before);
    for (const clientId of ['a', 'b', 'c']) expect(await repository.queueStats(clientId)).toEqual({ messages: 0, bytes: 0, dropped: 0 });
    await repository.close();

    const entries = await rawEntries(location);
    expect(keysWithPrefix(entries, BODY_PREFIX)).toEqual([]);
    expect(keysWithPrefix(entries, COUNT_PREFIX)).toEqual([]);
    expect(keysWithPrefix(entries, 'q\u0000')).toEqual([]);
  });

  // Each way a's entry can leave other than through the handle. Were the handle trusted after it,
  // the body's count would go down twice, and b's completion would delete the body under c's entry.
  const elsewhere: Array<[string, (repository: SessionRepository, handle: Handle) => Promise<void>]> = [
    ['completed through the same handle before', (repository, handle) => repository.complete('a', handle)],
    [
      'handed over to another session',
      async (repository, handle) => {
        await repository.publish({ message: message('fan/out', 'shared'), deliveries: [{ clientId: 'd', qos: 1, retain: false }], handOver: { clientId: 'a', seq: handle.seq } });
      },
    ],
    ['its session destroyed', (repository) => repository.destroySession('a')],
    [
      'its session destroyed and made again, with a new entry under the same seq',
      async (repository) => {
        await repository.destroySession('a');
        await repository.createSession('a');
        await repository.publish({ message: message('fan/out', 'new'), deliveries: [{ clientId: 'a', qos: 1, retain: false }] });
      },
    ],
  ];

  it.each(elsewhere)('a handle is not trusted once its entry was %s: the count stays exact', async (_, takeElsewhere) => {
    const location = tempDir();
    const repository = await openRepository(location);
    for (const clientId of ['a', 'b', 'c', 'd']) await repository.createSession(clientId);
    const handles = await fanOut(repository, 'shared', ['a', 'b', 'c']);
    const stale = handles.get('a')!;
    await takeElsewhere(repository, stale);
    const left = await payloadsOf(repository, 'a');
    expect(left).not.toContain('shared');

    // Nor may a PUBREC with it mark whatever the seq names now as released.
    await repository.markReleased('a', [{ entry: stale, packetId: 7 }]);
    await repository.complete('a', stale);
    expect(await payloadsOf(repository, 'a')).toEqual(left);
    expect((await repository.readOutbound('a', 0, 10)).map((entry) => entry.state)).not.toContain('released');
    await repository.complete('b', handles.get('b')!.seq);
    expect(await payloadsOf(repository, 'c')).toEqual(['shared']);
    await repository.complete('c', handles.get('c')!.seq);
    await repository.destroySession('a');
    await repository.close();
    const entries = await rawEntries(location);
    expect(keysWithPrefix(entries, BODY_PREFIX)).toEqual([]);
    expect(keysWithPrefix(entries, COUNT_PREFIX)).toEqual([]);
  });

  it('a handle from before the store was closed and opened again is not trusted: its entry may have been completed by seq since', async () => {
    const location = tempDir();
    let repository = await openRepository(location);
    for (const clientId of ['a', 'b', 'c']) await repository.createSession(clientId);
    const handles = await fanOut(repository, 'shared', ['a', 'b', 'c']);
    await repository.close();
    repository = await openRepository(location);
    await repository.complete('a', handles.get('a')!.seq);
    await repository.complete('a', handles.get('a')!);
    await repository.complete('b', handles.get('b')!.seq);
    expect(await payloadsOf(repository, 'c')).toEqual(['shared']);
  });

  it('a handle completed in the batch of its session\'s destroy is not trusted either', async () => {
    const location = tempDir();
    const repository = await openRepository(location);
    for (const clientId of ['a', 'b', 'c']) await repository.createSession(clientId);
    const handles = await fanOut(repository, 'shared', ['a', 'b', 'c']);
    await Promise.all([repository.destroySession('a'), repository.complete('a', handles.get('a')!)]);
    await repository.complete('b', handles.get('b')!);
    expect(await payloadsOf(repository, 'c')).toEqual(['shared']);
    await repository.close();
    const entries = await rawEntries(location);
    const [countKey] = keysWithPrefix(entries, COUNT_PREFIX);
    expect(decodeRecord(entries.get(countKey!)!, countKey!, isRefCount)).toBe(1);
  });
});

describe('LevelRepository: DUP mark, released entries and queue stats on disk', TIMEOUT, () => {
  const DUP_MARK_PREFIX = 'w\u0000';
  const RELEASE_PREFIX = 'f\u0000';
  const STATS_PREFIX = 'n\u0000';

  it('the DUP mark is one record per session, not one per message; only released entries get a record', async () => {
    const location = tempDir();
    let repository = await openRepository(location);
    await repository.createSession('a');
    const seqs: number[] = [];
    for (let i = 0; i < 5; i++) {
      seqs.push(seqOf(await repository.publish({ message: message('t', `m${i}`, 2), deliveries: [{ clientId: 'a', qos: 2, retain: false }] }), 'a'));
    }
    for (const seq of seqs) await repository.raiseDupMark('a', seq);
    await repository.markReleased('a', [{ entry: seqs[0]!, packetId: 4242 }]);
    await repository.close();

    let entries = await rawEntries(location);
    expect(keysWithPrefix(entries, DUP_MARK_PREFIX)).toEqual([keys.dupMark('a')]);
    expect(decodeRecord(entries.get(keys.dupMark('a'))!, keys.dupMark('a'), isDupMarkValue).s).toBe(seqs[4]);
    expect(keysWithPrefix(entries, RELEASE_PREFIX)).toEqual([keys.release('a', seqs[0]!)]);
    expect(decodeRecord(entries.get(keys.release('a', seqs[0]!))!, keys.release('a', seqs[0]!), isReleaseValue)).toEqual({ s: 2, i: 4242 });

    repository = await openRepository(location);
    await repository.complete('a', seqs[0]!);
    // markReleased of an entry already completed must not leave a record behind.
    await repository.markReleased('a', [{ entry: seqs[0]!, packetId: 1 }]);
    // Nor when it is handed the entry as readOutbound returned it, which it trusts until completed.
    const [held] = await repository.readOutbound('a', seqs[0]!, 1);
    expect(held!.seq).toBe(seqs[1]);
    await repository.complete('a', held!);
    await repository.markReleased('a', [{ entry: held!, packetId: 2 }]);
    await repository.close();
    entries = await rawEntries(location);
    expect(keysWithPrefix(entries, RELEASE_PREFIX)).toEqual([]);

    repository = await openRepository(location);
    await repository.destroySession('a');
    await repository.close();
    entries = await rawEntries(location);
    expect(keysWithPrefix(entries, DUP_MARK_PREFIX)).toEqual([]);
    expect(keysWithPrefix(entries, STATS_PREFIX)).toEqual([]);
  });

  it('PUBRECs in seq order raise the released-through mark and leave no record; an out-of-order one gets a record, deleted with its entry (handle from markReleased or from a read); verify finds nothing wrong', async () => {
    const location = tempDir();
    let repository = await openRepository(location);
    await repository.createSession('a');
    for (let i = 0; i < 5; i++) await repository.publish({ message: message('t', `m${i}`, 2), deliveries: [{ clientId: 'a', qos: 2, retain: false }] });
    const [e0, e1, e2, e3, e4] = await repository.readOutbound('a', 0, 10);
    const seqs = [e0!, e1!, e2!, e3!, e4!].map((entry) => entry.seq);
    const release = (entry: OutboundEntry) => ({ entry, packetId: packetIdOf(entry.seq) });
    await repository.raiseDupMark('a', seqs[4]!);
    await repository.markReleased('a', [release(e0!), release(e2!)], seqs[0]); // e1 waits: e2 gets a record
    await repository.markReleased('a', [release(e1!)], seqs[2]); // the mark rises over e2's record
    await repository.complete('a', e2!);
    await repository.markReleased('a', [release(e4!)], seqs[2]); // e3 waits: e4 gets a record
    await repository.close();

    let entries = await rawEntries(location);
    expect(keysWithPrefix(entries, RELEASE_PREFIX)).toEqual([keys.release('a', seqs[4]!)]);
    expect(decodeRecord(entries.get(keys.dupMark('a'))!, keys.dupMark('a'), isDupMarkValue)).toEqual({ s: seqs[4], r: seqs[2] });

    repository = await openRepository(location);
    const read = await repository.readOutbound('a', 0, 10);
    expect(read.map(({ seq, state, packetId }) => [seq, state, packetId])).toEqual([
      [seqs[0], 'released', undefined],
      [seqs[1], 'released', undefined],
      [seqs[3], 'dup', undefined],
      [seqs[4], 'released', packetIdOf(seqs[4]!)],
    ]);
    await repository.complete('a', read[0]!, read[1]!, read[3]!);
    const view = repository.onDisk!.inspector().view();
    const problems: unknown[] = [];
    try {
      for await (const event of view.verify()) if (event.kind === 'problem') problems.push(event);
    } finally {
      await view.close();
    }
    expect(problems).toEqual([]);
    await repository.close();
    entries = await rawEntries(location);
    expect(keysWithPrefix(entries, RELEASE_PREFIX)).toEqual([]);
    expect(keysWithPrefix(entries, 'q\u0000')).toEqual([keys.queueEntry('a', seqs[3]!)]);
  });

  it('the DUP mark is stored capped at the highest seq given', async () => {
    const location = tempDir();
    const repository = await openRepository(location);
    await repository.createSession('a');
    const seq = seqOf(await repository.publish({ message: message('t', 'p'), deliveries: [{ clientId: 'a', qos: 1, retain: false }] }), 'a');
    await repository.raiseDupMark('a', seq + 1000);
    await repository.close();
    const entries = await rawEntries(location);
    expect(decodeRecord(entries.get(keys.dupMark('a'))!, keys.dupMark('a'), isDupMarkValue).s).toBe(seq);
  });

  it('queue stats are stored under n\\0<client>, drops included, in the batch of the change', async () => {
    const location = tempDir();
    const repository = await openRepository(location, { maxMessages: 2, maxBytes: 1000 });
    await repository.createSession('a');
    await repository.createSession('b');
    const deliveries = ['a', 'b'].map((clientId) => ({ clientId, qos: 1 as const, retain: false }));
    const first = await repository.publish({ message: message('t', 'shared'), deliveries });
    await repository.publish({ message: message('t', 'two'), deliveries: [deliveries[0]!] });
    await repository.publish({ message: message('t', 'three'), deliveries });
    await repository.complete('b', seqOf(first, 'b'));
    await repository.close();
    const entries = await rawEntries(location);
    expect(keysWithPrefix(entries, STATS_PREFIX).sort()).toEqual([keys.queueStats('a'), keys.queueStats('b')]);
    expect(decodeRecord(entries.get(keys.queueStats('a'))!, keys.queueStats('a'), isQueueStatsValue)).toEqual({ m: 2, b: 9, d: 1 });
    expect(decodeRecord(entries.get(keys.queueStats('b'))!, keys.queueStats('b'), isQueueStatsValue)).toEqual({ m: 1, b: 5, d: 0 });
  });
});

/** A copy of `bytes` with the lowest bit of the byte at `at` flipped. */
function flipBit(bytes: Uint8Array, at: number): Buffer {
  expect(at).toBeGreaterThanOrEqual(0);
  const copy = Buffer.from(bytes);
  copy[at]! ^= 0x01;
  return copy;
}

describe('LevelRepository: corrupt records', TIMEOUT, () => {
  const corruptions: [string, (key: string, stored: Uint8Array) => Uint8Array][] = [
    ['bytes that are not msgpack (0xc1, the never-used code)', () => Buffer.from([0xc1])],
    ['truncated msgpack', () => Buffer.from([0x92, 0x01])],
    ['a checked record of valid msgpack that is not a queue entry', (key) => encodeRecord(key, 42)],
    ['a queue entry without its checksum (plain msgpack)', () => encode({ q: 1, r: false, t: 't', p: Buffer.from('fine'), o: 1 })],
    ['its own record with one bit of the payload flipped', (_, stored) => flipBit(stored, Buffer.from(stored).indexOf('fine'))],
  ];

  it.each(corruptions)('a queue record holding %s makes readOutbound reject with STORE_CORRUPT_RECORD', async (_, corrupted) => {
    const location = tempDir();
    let repository = await openRepository(location);
    await repository.createSession('a');
    const seqs = await repository.publish({
      message: message('t', 'fine'),
      deliveries: [{ clientId: 'a', qos: 1, retain: false }],
    });
    await repository.close();
    await withRawDb(location, async (db) => {
      const key = keys.queueEntry('a', seqOf(seqs, 'a'));
      await db.put(key, corrupted(key, (await db.get(key))!));
    });
    repository = await openRepository(location);
    await expectRejection(repository.readOutbound('a', 0, 10), ErrorCodes.STORE_CORRUPT_RECORD);
  });

  it.each([
    ['DUP mark', (clientId: string) => keys.dupMark(clientId)],
    ['queue stats', (clientId: string) => keys.queueStats(clientId)],
  ])('a corrupt %s record makes open reject with STORE_CORRUPT_RECORD and release the directory', async (_, keyOf) => {
    const location = tempDir();
    const repository = await openRepository(location);
    await repository.createSession('a');
    const seqs = await repository.publish({ message: message('t', 'p'), deliveries: [{ clientId: 'a', qos: 1, retain: false }] });
    await repository.raiseDupMark('a', seqOf(seqs, 'a'));
    await repository.close();
    await withRawDb(location, async (db) => {
      expect(await db.get(keyOf('a'))).toBeDefined();
      await db.put(keyOf('a'), encodeRecord(keyOf('a'), { s: -1, m: 'x' }));
    });
    await expectRejection(new LevelRepository({ location }).open(), ErrorCodes.STORE_CORRUPT_RECORD);
    // The failed open closed the database: it can be opened (and repaired) again.
    await withRawDb(location, async (db) => {
      await db.del(keyOf('a'));
    });
    const again = await openRepository(location);
    expect((await again.readOutbound('a', 0, 10)).map((e) => e.message.payload.toString())).toEqual(['p']);
  });
});

describe('LevelRepository: a failed write', TIMEOUT, () => {
  /** Makes the next LevelDB batch fail, as a full disk would (the writer fills classic-level's native batch). */
  function failNextBatch(): void {
    const failing = {
      _put: () => {},
      _del: () => {},
      _write: () => Promise.reject(new Error('simulated: no space left on device')),
      close: () => Promise.resolve(),
    };
    vi.spyOn(ClassicLevel.prototype as unknown as { _chainedBatch: () => typeof failing }, '_chainedBatch').mockImplementationOnce(() => failing);
  }

  it('a publish whose write fails takes no room in the queue counts, in memory or on disk', async () => {
    const location = tempDir();
    let repository = await openRepository(location, { maxMessages: 1, maxBytes: 1000 });
    await repository.createSession('a');
    failNextBatch();
    await expectRejection(
      repository.publish({ message: message('t', 'lost'), deliveries: [{ clientId: 'a', qos: 1, retain: false }] }),
      ErrorCodes.STORE_WRITE_FAILED,
    );
    expect(await repository.readOutbound('a', 0, 10)).toEqual([]);
    expect(await repository.queueStats('a')).toEqual({ messages: 0, bytes: 0, dropped: 0 });
    // The queue is empty, so the next message fits.
    const seqs = await repository.publish({ message: message('t', 'kept'), deliveries: [{ clientId: 'a', qos: 1, retain: false }] });
    expect([...seqs.keys()]).toEqual(['a']);
    await repository.close();
    repository = await openRepository(location, { maxMessages: 1, maxBytes: 1000 });
    expect(await repository.queueStats('a')).toEqual({ messages: 1, bytes: 4, dropped: 0 });
  });

  it('raiseDupMark whose write failed is written when called again with the same DUP mark', async () => {
    const location = tempDir();
    let repository = await openRepository(location);
    await repository.createSession('a');
    const seq = seqOf(await repository.publish({ message: message('t', 'p'), deliveries: [{ clientId: 'a', qos: 1, retain: false }] }), 'a');
    failNextBatch();
    await expectRejection(repository.raiseDupMark('a', seq), ErrorCodes.STORE_WRITE_FAILED);
    await repository.raiseDupMark('a', seq);
    expect((await repository.readOutbound('a', 0, 10)).map((e) => e.state)).toEqual(['dup']);
    await repository.close();
    repository = await openRepository(location);
    expect((await repository.readOutbound('a', 0, 10)).map((e) => e.state)).toEqual(['dup']);
  });
});

/** The keys of every batch the writer fills from now on (through classic-level's native batch), one array per batch. */
function recordBatches(): { key: string }[][] {
  type NativeBatch = { _put(key: string, value: Uint8Array): void; _del(key: string): void };
  const prototype = ClassicLevel.prototype as unknown as { _chainedBatch(): NativeBatch };
  const chainedBatch = prototype._chainedBatch;
  const batches: { key: string }[][] = [];
  vi.spyOn(prototype, '_chainedBatch').mockImplementation(function (this: unknown) {
    const batch = chainedBatch.call(this);
    const operations: { key: string }[] = [];
    batches.push(operations);
    const [put, del] = [batch._put.bind(batch), batch._del.bind(batch)];
    batch._put = (key, value) => {
      operations.push({ key });
      put(key, value);
    };
    batch._del = (key) => {
      operations.push({ key });
      del(key);
    };
    return batch;
  });
  return batches;
}

describe('LevelRepository: group commit', TIMEOUT, () => {
  it('200 transitions submitted without awaiting resolve in submission order, in few batches, and survive reopen', async () => {
    const location = tempDir();
    const repository = await openRepository(location);
    const batches = recordBatches();

    const order: number[] = [];
    const submitted: Promise<unknown>[] = [];
    const publishes: { index: number; clientIds: string[]; promise: Promise<Map<string, number>> }[] = [];
    const submit = <T>(promise: Promise<T>): Promise<T> => {
      const index = submitted.length;
      submitted.push(promise.then(() => order.push(index)));
      return promise;
    };

    submit(repository.createSession('g'));
    submit(repository.createSession('h'));
    submit(repository.subscribe('g', [{ filter: 'gc/#', qos: 2 }]));
    submit(repository.subscribe('h', [{ filter: 'gc/+', qos: 1 }]));
    while (submitted.length < 200) {
      const index = submitted.length;
      if (index % 10 === 7) {
        submit(repository.releaseInbound('g', index - 1));
      } else if (index % 20 === 9) {
        submit(repository.clearRetained(`gc/${index - 5}`));
      } else {
        const clientIds = index % 2 === 0 ? ['g', 'h'] : ['g'];
        const promise = submit(
          repository.publish({
            message: message(`gc/${index}`, `payload ${index}`, 1),
            deliveries: clientIds.map((clientId) => ({ clientId, qos: 1 as const, retain: false })),
            retained: index % 10 === 4 ? 'set' : undefined,
            inbound: index % 10 === 6 || index % 10 === 3 ? { clientId: 'g', packetId: index } : undefined,
          }),
        );
        publishes.push({ index, clientIds, promise });
      }
    }
    expect(submitted).toHaveLength(200);
    await Promise.all(submitted);
    expect(order).toEqual(Array.from({ length: 200 }, (_, i) => i));
    // Grouped: far fewer LevelDB batches (each one fsync) than transitions.
    expect(batches.length).toBeGreaterThan(0);
    expect(batches.length).toBeLessThan(10);
    // One operation per key and batch, holding the key's last value: the queue counts of a session
    // that many transitions of the batch changed are written once.
    const statsKey = keys.queueStats('g');
    for (const operations of batches) {
      const written = operations.map((operation) => operation.key);
      expect(new Set(written).size, 'one operation per key in a batch').toBe(written.length);
    }
    const statsWrites = batches.filter((operations) => operations.some((operation) => operation.key === statsKey));
    expect(statsWrites.length).toBeGreaterThan(0);
    expect(statsWrites.length).toBeLessThan(10);

    // Seqs follow submission order.
    const expected: Record<string, { seq: number; payload: string }[]> = { g: [], h: [] };
    for (const { index, clientIds, promise } of publishes) {
      const seqs = await promise;
      for (const clientId of clientIds) expected[clientId]!.push({ seq: seqOf(seqs, clientId), payload: `payload ${index}` });
    }
    for (const clientId of ['g', 'h']) {
      const seqs = expected[clientId]!.map((e) => e.seq);
      expect([...seqs].sort((a, b) => a - b)).toEqual(seqs);
      expect(new Set(seqs).size).toBe(seqs.length);
    }
    // Recorded at %10 = 3 and 6, the latter released right after; set at %10 = 4, cleared 5 later when %20 = 9.
    const expectedInbound = Array.from({ length: 200 }, (_, i) => i).filter((i) => i >= 4 && i % 10 === 3);
    const expectedRetained = Array.from({ length: 200 }, (_, i) => i)
      .filter((i) => i >= 4 && i % 20 === 14)
      .map((i) => `gc/${i}`)
      .sort();

    await repository.close();
    const reopened = await openRepository(location);
    for (const clientId of ['g', 'h']) {
      const entries = await reopened.readOutbound(clientId, 0, 1000);
      expect(entries.map((e) => ({ seq: e.seq, payload: e.message.payload.toString() }))).toEqual(expected[clientId]);
    }
    expect(
      (await reopened.loadSessions())
        .map((s) => ({ clientId: s.clientId, subscriptions: s.subscriptions }))
        .sort((a, b) => (a.clientId < b.clientId ? -1 : 1)),
    ).toEqual([
      { clientId: 'g', subscriptions: [{ filter: 'gc/#', qos: 2 }] },
      { clientId: 'h', subscriptions: [{ filter: 'gc/+', qos: 1 }] },
    ]);
    for (const clientId of ['g', 'h']) {
      const bytes = expected[clientId]!.reduce((sum, e) => sum + Buffer.byteLength(e.payload), 0);
      expect(await reopened.queueStats(clientId)).toEqual({ messages: expected[clientId]!.length, bytes, dropped: 0 });
    }
    expect([...(await reopened.loadInbound('g'))].sort((a, b) => a - b)).toEqual(expectedInbound);
    expect((await reopened.loadRetainedIndex()).map((r) => r.topic).sort()).toEqual(expectedRetained);
  });

  it('a completion waits for the next transition that must be written and shares its batch (one fsync, not two)', async () => {
    const repository = await openRepository(tempDir());
    await repository.createSession('a');
    const first = seqOf(await repository.publish({ message: message('t', 'first'), deliveries: [{ clientId: 'a', qos: 1, retain: false }] }), 'a');
    const batches = recordBatches();
    const completing = repository.complete('a', first);
    // Later: past the turn in which transitions submitted together share a batch anyway.
    for (let turn = 0; turn < 3; turn++) await Promise.resolve();
    await repository.publish({ message: message('t', 'second'), deliveries: [{ clientId: 'a', qos: 1, retain: false }] });
    await completing;
    expect(batches).toHaveLength(1);
    expect(batches[0]!.map((operation) => operation.key)).toContain(keys.queueEntry('a', first));
    expect((await repository.readOutbound('a', 0, 10)).map((entry) => entry.message.payload.toString())).toEqual(['second']);
  });

  it('a completion with nothing to ride with is written all the same, and close writes one still waiting', async () => {
    const location = tempDir();
    const repository = await openRepository(location);
    await repository.createSession('a');
    const deliveries = [{ clientId: 'a', qos: 1 as const, retain: false }];
    const seqs = [];
    for (const payload of ['one', 'two']) seqs.push(seqOf(await repository.publish({ message: message('t', payload), deliveries }), 'a'));
    await repository.complete('a', seqs[0]!);
    expect((await repository.readOutbound('a', 0, 10)).map((entry) => entry.message.payload.toString())).toEqual(['two']);
    const waiting = repository.complete('a', seqs[1]!);
    await repository.close();
    await waiting;
    const reopened = await openRepository(location);
    expect(await reopened.readOutbound('a', 0, 10)).toEqual([]);
  });
});
