/**
 * A publication whose target session is discarded between the instant it is routed and the
 * instant it is queued. The distributor meets its targets twice: when it routes the message, and
 * when it submits the store write that queues it for them. Where another store write is awaited in
 * between (the clean subscribers' part of a publication waited for a shared member's share to be
 * handed on; the last part of a hand-over waits for the first, in the other store), a target may be
 * discarded meanwhile: its clean session ended, it expired, a Clean Start took it over. It then has
 * no queue and gets nothing [MQTT-3.1.2-6]; the others still get the message, and the publication
 * completes. It once failed whole with STORE_UNKNOWN_SESSION (the publisher not acknowledged, a will
 * not published), or, where a new session had taken the client id over, queued it for that one.
 *
 * The session manager, the distributor and the routing tree are the broker's own. Persistent
 * sessions live in the real LevelDB repository, or in the real memory repository; clean sessions
 * in the memory repository, as in the broker. The store write the race needs is held, not timed:
 * LevelDB's under a held batch (DiskFaults), the memory repository's by holding back its answer
 * once the transition is applied, as a slow fsync would.
 */
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/logger.js';
import { RetainedIndex } from '../../src/routing/retained-index.js';
import { TopicTree } from '../../src/routing/topic-tree.js';
import { Distributor } from '../../src/session/distributor.js';
import { SessionManager } from '../../src/session/session-manager.js';
import type { OutboundChannel, OutgoingPublish, Session } from '../../src/session/session.js';
import { LevelRepository } from '../../src/store/level-repository.js';
import { MemoryRepository } from '../../src/store/memory-repository.js';
import type { PublishResult, PublishTransition, SessionRepository } from '../../src/store/repository.js';
import { makeDataDir, removeDataDir } from '../helpers/broker-process.js';
import { DiskFaults, touches } from '../helpers/disk-faults.js';

class RecordingChannel implements OutboundChannel {
  readonly published: OutgoingPublish[] = [];
  #ended!: () => void;
  /** Resolves once the session manager has ended this channel (its session taken over). */
  readonly ended = new Promise<void>((resolve) => (this.#ended = resolve));
  publish(packet: OutgoingPublish): void {
    this.published.push(packet);
  }
  pubrel(): void {}
  end(): void {
    this.#ended();
  }
}

interface Held {
  reached: Promise<void>;
  release: () => void;
}

/**
 * The real memory repository, whose next publish queueing for a chosen client is applied when it
 * is submitted (as always) and answered only once released: a slow disk under that transition.
 */
class SlowMemoryRepository extends MemoryRepository {
  #holding: { clientId: string; reached: () => void; released: Promise<void> } | undefined;

  hold(clientId: string): Held {
    let reached!: () => void;
    let release!: () => void;
    const reachedPromise = new Promise<void>((resolve) => (reached = resolve));
    const released = new Promise<void>((resolve) => (release = resolve));
    this.#holding = { clientId, reached, released };
    return { reached: reachedPromise, release };
  }

  override publish(transition: PublishTransition): Promise<PublishResult> {
    const applied = super.publish(transition);
    const holding = this.#holding;
    if (!holding || !transition.deliveries.some(({ clientId }) => clientId === holding.clientId)) return applied;
    this.#holding = undefined;
    holding.reached();
    return applied.then(async (result) => {
      await holding.released;
      return result;
    });
  }
}

type Backend = 'LevelRepository' | 'MemoryRepository';

interface Fixture {
  sessions: SessionManager;
  distributor: Distributor;
  durable: SessionRepository;
  volatile: MemoryRepository;
  /** Holds the next store write that queues a message for `clientId` (a persistent session). */
  holdDurable(clientId: string): Held;
  /** Holds the answer to the next publish that queues a message for `clientId` (a clean session). */
  holdVolatile(clientId: string): Held;
  /** Faults of the LevelDB store; undefined for the memory one. */
  faults: DiskFaults | undefined;
  /** A connected session of `clientId` with `filters` at QoS 1 (clean: a CleanSession=1 one). */
  connect(clientId: string, clean: boolean, filters: string[]): Promise<{ session: Session; channel: RecordingChannel }>;
  /** A persistent session of `clientId` with `filters`, its client away. */
  away(clientId: string, filters: string[]): Promise<void>;
  /**
   * A connected session 'source' (clean: CleanSession=1) that was the only member of the groups
   * `$share/one/t` and `$share/two/t` when `job` was published: queued for it, for both.
   */
  sourceOfTwoGroups(clean: boolean): Promise<{ session: Session; channel: RecordingChannel }>;
  /** Payloads (and shared tags) in a session's stored queue. */
  queued(repository: SessionRepository, clientId: string): Promise<Array<[string, string[] | undefined]>>;
}

/** The message most cases publish. */
const job = { topic: 't', payload: Buffer.from('job'), qos: 1 as const };

const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function fixture(backend: Backend): Promise<Fixture> {
  let durable: SessionRepository;
  let holdDurable: (clientId: string) => Held;
  let faults: DiskFaults | undefined;
  if (backend === 'LevelRepository') {
    const dataDir = makeDataDir('broker-discarded-target-');
    cleanups.push(() => removeDataDir(dataDir));
    faults = new DiskFaults();
    const level = new LevelRepository({ location: join(dataDir, 'store'), instrument: faults.instrument });
    durable = level;
    const held = faults;
    holdDurable = (clientId) => held.hold(touches('q', clientId));
  } else {
    const memory = new SlowMemoryRepository();
    durable = memory;
    holdDurable = (clientId) => memory.hold(clientId);
  }
  const volatile = new SlowMemoryRepository();
  await durable.open();
  await volatile.open();
  cleanups.push(() => durable.close());
  const subscriptions = new TopicTree();
  // Made after the manager, which calls it only once sessions end.
  let distributor: Distributor;
  const sessions = new SessionManager({
    durable,
    volatile,
    subscriptions,
    policy: { limits: { maxInflight: 10, readWindow: 100, readWindowBytes: 1_000_000 } },
    handOver: (session, filters) => distributor.handOver(session, filters),
    log: silentLogger,
  });
  distributor = new Distributor({ lookup: (clientId) => sessions.lookup(clientId), subscriptions, retained: new RetainedIndex(), durable, volatile });
  cleanups.push(() => sessions.closeAll());
  const connect: Fixture['connect'] = async (clientId, clean, filters) => {
    const channel = new RecordingChannel();
    const { session } = await sessions.start(clientId, clean ? { cleanStart: true, expiry: 0 } : { cleanStart: false, expiry: 3600 }, channel);
    if (filters.length > 0) await sessions.subscribe(session, filters.map((filter) => ({ filter, qos: 1 as const })), channel);
    return { session, channel };
  };
  const queued: Fixture['queued'] = async (repository, clientId) => {
    const entries = await repository.readOutbound(clientId, 0, 100);
    return entries.map((entry) => [entry.message.payload.toString(), entry.shared]);
  };
  return {
    sessions,
    distributor,
    durable,
    volatile,
    holdDurable,
    holdVolatile: (clientId) => volatile.hold(clientId),
    faults,
    connect,
    queued,
    async away(clientId, filters) {
      const { session, channel } = await connect(clientId, false, filters);
      await sessions.close(session, channel);
    },
    async sourceOfTwoGroups(clean) {
      const source = await connect('source', clean, ['$share/one/t', '$share/two/t']);
      const publication = distributor.route(job, { retain: false });
      await publication.stored;
      expect(await publication.deliver()).toBe('delivered');
      const [[payload, tags]] = (await queued(clean ? volatile : durable, 'source')) as [[string, string[]]];
      expect([payload, [...tags].sort()]).toEqual(['job', ['$share/one/t', '$share/two/t']]);
      return source;
    },
  };
}

describe.each<Backend>(['LevelRepository', 'MemoryRepository'])('a target discarded after routing, persistent sessions in %s', (backend) => {
  it.each([
    ['its connection closes', undefined],
    ['a clean session of its client id takes over', true],
    ['a persistent session of its client id takes over', false],
  ] as const)(
    "a clean subscriber whose session ends (%s) while a shared member's share is handed on: the others get the message, the publication completes",
    async (_ending, successorClean) => {
      const { sessions, distributor, durable, volatile, holdDurable, connect, away, queued } = await fixture(backend);
      // The shared group: a persistent member, away, and a clean one, connected (so it is chosen).
      await away('spare', ['$share/g/t']);
      const member = await connect('member', true, ['$share/g/t']);
      // Plain subscribers: one clean that will end, one clean and one persistent that stay.
      const leaving = await connect('leaving', true, ['t']);
      const staying = await connect('staying', true, ['t']);
      await connect('durable', false, ['t']);

      const publication = distributor.route(job, { retain: false });
      await publication.stored;
      // The chosen member's connection ends: its share goes to the spare when the message is queued.
      await sessions.close(member.session, member.channel);
      const held = holdDurable('spare');
      const delivered = publication.deliver();
      await held.reached;
      // While the spare's entry is being written, another clean subscriber's session ends. A
      // persistent successor's CONNACK waits for its store write, behind the held one: the old
      // session is discarded as its channel is ended, before the successor is created.
      let successor: Promise<unknown> = Promise.resolve();
      if (successorClean === undefined) await sessions.close(leaving.session, leaving.channel);
      else successor = connect('leaving', successorClean, []);
      await Promise.race([successor, leaving.channel.ended]);
      expect(sessions.lookup('leaving')).not.toBe(leaving.session);
      held.release();
      await successor;

      expect(await delivered).toBe('delivered');
      expect(await queued(volatile, 'staying')).toEqual([['job', undefined]]);
      expect(await queued(durable, 'durable')).toEqual([['job', undefined]]);
      expect(await queued(durable, 'spare')).toEqual([['job', ['$share/g/t']]]);
      // The discarded session got nothing; a session that took its client id over is another one
      // [MQTT-3.1.2-6], and nothing of it lands in that one's queue either.
      expect(leaving.channel.published).toEqual([]);
      expect(member.channel.published).toEqual([]);
      if (successorClean === undefined) expect(await volatile.queueStats('leaving')).toBeUndefined();
      else expect(await queued(successorClean ? volatile : durable, 'leaving')).toEqual([]);
      expect(staying.session.connected).toBe(true);
    },
  );

  it('a will routed the same way is still published to the remaining subscribers', async () => {
    const { sessions, distributor, volatile, durable, holdDurable, connect, away, queued } = await fixture(backend);
    await away('spare', ['$share/g/will']);
    const member = await connect('member', true, ['$share/g/will']);
    const leaving = await connect('leaving', true, ['will']);
    await connect('staying', true, ['will']);
    await connect('durable', false, ['will']);

    // A will is published whole (Distributor.publish): routed, stored, then queued for clean sessions.
    const stored = holdDurable('durable');
    const published = distributor.publish({ topic: 'will', payload: Buffer.from('gone'), qos: 1 }, { retain: false, origin: 'dying' });
    await stored.reached;
    await sessions.close(member.session, member.channel);
    stored.release();
    const handedOn = holdDurable('spare');
    await handedOn.reached;
    await sessions.close(leaving.session, leaving.channel);
    handedOn.release();

    expect(await published).toBe('delivered');
    expect(await queued(volatile, 'staying')).toEqual([['gone', undefined]]);
    expect(await queued(durable, 'durable')).toEqual([['gone', undefined]]);
    expect(await queued(durable, 'spare')).toEqual([['gone', ['$share/g/will']]]);
    expect(leaving.channel.published).toEqual([]);
    expect(member.channel.published).toEqual([]);
  });

  it('a clean session ending hands its shared message on while the member chosen for it ends too: another member gets it, the hand-over completes', async () => {
    const { sessions, volatile, durable, holdDurable, connect, away, sourceOfTwoGroups, queued } = await fixture(backend);
    await away('spare', ['$share/one/t']);
    const source = await sourceOfTwoGroups(true);
    const other = await connect('other', true, ['$share/two/t']);

    // The source ends: group one's share goes to the spare (the other store, first), group two's to
    // the other clean member, with the source's entry in the same transition. While the first part
    // is written, the other member's connection ends and a third member joins group two.
    const held = holdDurable('spare');
    const closing = sessions.close(source.session, source.channel);
    await held.reached;
    await sessions.close(other.session, other.channel);
    await connect('third', true, ['$share/two/t']);
    held.release();

    await closing;
    expect(sessions.lookup('source')).toBeUndefined();
    expect(await volatile.queueStats('source')).toBeUndefined();
    expect(await queued(durable, 'spare')).toEqual([['job', ['$share/one/t']]]);
    expect(await queued(volatile, 'third')).toEqual([['job', ['$share/two/t']]]);
    expect(other.channel.published).toEqual([]);
    expect(await volatile.queueStats('other')).toBeUndefined();
  });

  it('a persistent shared member taken over with Clean Start while the other part of a hand-over is written: skipped, the hand-over completes', async () => {
    const { volatile, durable, holdVolatile, connect, away, sourceOfTwoGroups, queued } = await fixture(backend);
    // Group one has a clean member that stays; group two a persistent one, away, that a Clean Start
    // discards while group one's part is written.
    await away('spare', ['$share/two/t']);
    await sourceOfTwoGroups(false);
    const staying = await connect('staying', true, ['$share/one/t']);

    // The source's session is discarded by a Clean Start of its own client id: group one's share
    // goes to the clean member (written first: the other store), group two's to the spare with the
    // source's entry. The clean member's part is held; meanwhile the spare is taken over too. (The
    // memory repository answers within a few microtasks in the broker, less than a discard takes;
    // held, it stands for any store slower than that.)
    const held = holdVolatile('staying');
    const takingOver = connect('source', true, []);
    await held.reached;
    await connect('spare', true, []);
    held.release();

    await takingOver;
    expect(await queued(volatile, 'staying')).toEqual([['job', ['$share/one/t']]]);
    // Both discarded: nothing queued under either name any more.
    expect(await durable.queueStats('spare')).toBeUndefined();
    expect(await durable.queueStats('source')).toBeUndefined();
  });

  it('a publication whose only subscriber was discarded meanwhile had no subscribers (MQTT 5: 0x10), not a full queue', async () => {
    const { sessions, distributor, connect } = await fixture(backend);
    const only = await connect('only', true, ['t']);
    const publication = distributor.route(job, { retain: false });
    await publication.stored;
    await sessions.close(only.session, only.channel);
    expect(await publication.deliver()).toBe('no-subscribers');
    expect(only.channel.published).toEqual([]);
  });
});

describe('a store failure beside a discarded target still surfaces', () => {
  it('the write queueing a shared member\'s share fails: the publication fails with the store\'s error, as before', async () => {
    const { sessions, distributor, faults, connect, away } = await fixture('LevelRepository');
    await away('spare', ['$share/g/t']);
    const member = await connect('member', true, ['$share/g/t']);
    const leaving = await connect('leaving', true, ['t']);
    const publication = distributor.route(job, { retain: false });
    await publication.stored;
    await sessions.close(member.session, member.channel);
    await sessions.close(leaving.session, leaving.channel);
    faults!.fail({ when: touches('q', 'spare') });
    await expect(publication.deliver()).rejects.toThrow(/No space left on device/);
    expect(faults!.refused).toBe(1);
  });
});
