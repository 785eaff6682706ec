/**
 * Store writes that fail (a full disk, an I/O error), injected under the repository: the real
 * LevelDB stays underneath, its writes are made to fail on demand (test/helpers/disk-faults.ts).
 * A failed transition must leave no trace, neither on disk nor in the repository's own memory,
 * and the writer must go on once the disk is back.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { BrokerError, ErrorCodes } from '../../src/errors.js';
import type { Logger } from '../../src/logger.js';
import { LevelRepository } from '../../src/store/level-repository.js';
import type { Message } from '../../src/store/repository.js';
import { DiskFaults, touches } from '../helpers/disk-faults.js';

const directories: string[] = [];
const repositories: LevelRepository[] = [];

afterEach(async () => {
  await Promise.allSettled(repositories.splice(0).map((repository) => repository.close()));
  for (const dir of directories.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

class LogLines implements Logger {
  readonly lines: Array<{ level: 'info' | 'warn' | 'error'; message: string }> = [];
  info(message: string): void {
    this.lines.push({ level: 'info', message });
  }
  warn(message: string): void {
    this.lines.push({ level: 'warn', message });
  }
  error(message: string): void {
    this.lines.push({ level: 'error', message });
  }
  at(level: 'info' | 'warn' | 'error'): string[] {
    return this.lines.filter((line) => line.level === level).map((line) => line.message);
  }
}

async function setup(): Promise<{ repository: LevelRepository; faults: DiskFaults; log: LogLines; location: string }> {
  const location = fs.mkdtempSync(path.join(os.tmpdir(), 'broker-write-failure-'));
  directories.push(location);
  const faults = new DiskFaults();
  const log = new LogLines();
  const repository = new LevelRepository({ location, instrument: faults.instrument, log });
  repositories.push(repository);
  await repository.open();
  return { repository, faults, log, location };
}

/** The same directory opened again by a fresh repository: what is really on disk. */
async function reopened(location: string): Promise<LevelRepository> {
  const repository = new LevelRepository({ location });
  repositories.push(repository);
  await repository.open();
  return repository;
}

function message(text: string, qos: 1 | 2 = 1): Message {
  return { topic: 't/x', payload: Buffer.from(text), qos };
}

async function payloads(repository: LevelRepository, clientId: string): Promise<string[]> {
  return (await repository.readOutbound(clientId, 0, 1000)).map((entry) => `${entry.seq}:${entry.message.payload.toString()}`);
}

async function writeFailure(promise: Promise<unknown>): Promise<BrokerError> {
  const error = await promise.then(
    () => undefined,
    (rejection: unknown) => rejection,
  );
  expect(error).toBeInstanceOf(BrokerError);
  expect((error as BrokerError).code).toBe(ErrorCodes.STORE_WRITE_FAILED);
  return error as BrokerError;
}

describe('LevelRepository when store writes fail', () => {
  it('a failed batch stores none of its transitions, on disk or in the repository, and rejects each naming the disk error', async () => {
    const { repository, faults, location } = await setup();
    await repository.createSession('a');
    await repository.createSession('b');
    await repository.subscribe('a', [{ filter: 't/#', qos: 1 }]);
    await repository.publish({ message: message('before'), deliveries: [{ clientId: 'a', qos: 1, retain: false }] });

    faults.fail();
    // Submitted in one tick: one batch, one failure for all of them.
    const failures = await Promise.all([
      writeFailure(repository.publish({ message: message('refused'), deliveries: [{ clientId: 'a', qos: 1, retain: false, raiseDupMark: true }], retained: 'set' })),
      writeFailure(repository.subscribe('b', [{ filter: 'u/#', qos: 2 }])),
      writeFailure(repository.raiseDupMark('a', 1)),
      writeFailure(repository.createSession('c')),
      writeFailure(repository.publish({ message: message('inbound', 2), deliveries: [], inbound: { clientId: 'b', packetId: 7 } })),
    ]);
    for (const failure of failures) expect(failure.message).toContain('No space left on device');
    expect(faults.refused).toBe(1);
    faults.recover();

    const check = async (view: LevelRepository) => {
      expect(await payloads(view, 'a')).toEqual(['1:before']);
      expect((await view.readOutbound('a', 0, 10))[0]!.state).toBe('queued');
      expect(await view.queueStats('a')).toEqual({ messages: 1, bytes: 6, dropped: 0 });
      const sessions = await view.loadSessions();
      expect(sessions.map((session) => session.clientId).sort()).toEqual(['a', 'b']);
      expect(sessions.find((session) => session.clientId === 'b')!.subscriptions).toEqual([]);
      expect(await view.loadRetainedIndex()).toEqual([]);
      expect(await view.loadInbound('b')).toEqual([]);
      // The session whose creation failed does not exist, in memory either: nothing can be queued for it.
      expect(await view.queueStats('c')).toBeUndefined();
      await expect(view.publish({ message: message('x'), deliveries: [{ clientId: 'c', qos: 1, retain: false }] })).rejects.toMatchObject({
        code: ErrorCodes.STORE_UNKNOWN_SESSION,
      });
    };
    await check(repository);
    await check(await closeAndReopen(repository, location));
  });

  it('once the disk is back the next writes go through: the store was reopened, nothing before the failure is lost, seqs go on', async () => {
    const { repository, faults, location } = await setup();
    await repository.createSession('a');
    await repository.publish({ message: message('m0'), deliveries: [{ clientId: 'a', qos: 1, retain: false }] });
    faults.fail();
    await writeFailure(repository.publish({ message: message('m1'), deliveries: [{ clientId: 'a', qos: 1, retain: false }] }));
    faults.recover();
    const seqs = await repository.publish({ message: message('m2'), deliveries: [{ clientId: 'a', qos: 1, retain: false }] });
    // The refused publish left a gap in the seqs, nothing else.
    expect(seqs.get('a')).toBe(3);
    await repository.raiseDupMark('a', 3);
    await repository.complete('a', 1);
    expect(faults.reopens).toBe(1);
    expect(await payloads(repository, 'a')).toEqual(['3:m2']);

    const fresh = await closeAndReopen(repository, location);
    expect(await payloads(fresh, 'a')).toEqual(['3:m2']);
    expect((await fresh.readOutbound('a', 0, 10))[0]!.state).toBe('dup');
    expect(await fresh.queueStats('a')).toEqual({ messages: 1, bytes: 2, dropped: 0 });
  });

  it('the writer is not stuck: a batch queued behind the failing one is written once the store is reopened', async () => {
    const { repository, faults } = await setup();
    await repository.createSession('a');
    await repository.createSession('b');
    // Only batches that queue for a fail: a's and b's publishes land in separate batches.
    faults.fail({ when: touches('q', 'a') });
    const first = repository.publish({ message: message('for a'), deliveries: [{ clientId: 'a', qos: 1, retain: false }] });
    await Promise.resolve();
    await Promise.resolve();
    const second = repository.publish({ message: message('for b'), deliveries: [{ clientId: 'b', qos: 1, retain: false }] });
    await writeFailure(first);
    expect((await second).get('b')).toBe(1);
    expect(faults.refused).toBe(1);
    expect(await payloads(repository, 'b')).toEqual(['1:for b']);
    expect(await payloads(repository, 'a')).toEqual([]);
  });

  it('failures are logged once per episode, not once per batch, and the recovery once', async () => {
    const { repository, faults, log, location } = await setup();
    await repository.createSession('a');
    faults.fail();
    for (let i = 0; i < 5; i++) {
      await writeFailure(repository.publish({ message: message(`m${i}`), deliveries: [{ clientId: 'a', qos: 1, retain: false }] }));
    }
    expect(faults.refused).toBe(5);
    expect(log.at('error')).toHaveLength(1);
    expect(log.at('error')[0]).toContain('No space left on device');
    expect(log.at('error')[0]).toContain(location);
    expect(log.at('error')[0]).toMatch(/none of them is acknowledged/);
    faults.recover();
    await repository.publish({ message: message('after'), deliveries: [{ clientId: 'a', qos: 1, retain: false }] });
    await repository.publish({ message: message('after 2'), deliveries: [{ clientId: 'a', qos: 1, retain: false }] });
    expect(log.at('error')).toHaveLength(1);
    expect(log.at('warn')).toHaveLength(1);
    expect(log.at('warn')[0]).toMatch(/succeed again, after 5 failed batches/);
  });

  it('while the store cannot be reopened (disk still full) every batch is refused; writes resume once it can', async () => {
    const { repository, faults, location } = await setup();
    await repository.createSession('a');
    faults.fail();
    faults.failReopen = true;
    await writeFailure(repository.publish({ message: message('m1'), deliveries: [{ clientId: 'a', qos: 1, retain: false }] }));
    const refused = await writeFailure(repository.publish({ message: message('m2'), deliveries: [{ clientId: 'a', qos: 1, retain: false }] }));
    expect(refused.message).toMatch(/could not be reopened.*No space left on device/);
    // The database is closed meanwhile: reads fail too, rather than read a store nobody can write.
    await expect(repository.readOutbound('a', 0, 10)).rejects.toThrow();
    faults.recover();
    await repository.publish({ message: message('m3'), deliveries: [{ clientId: 'a', qos: 1, retain: false }] });
    expect(await payloads(repository, 'a')).toEqual(['3:m3']);
    expect(await payloads(await closeAndReopen(repository, location), 'a')).toEqual(['3:m3']);
  });

  it('a batch that reached the log before its write failed (a failed fsync) stands: the store says so after the reopen', async () => {
    const { repository, faults, log } = await setup();
    await repository.createSession('a');
    faults.fail({ mode: 'fail-after-write' });
    const seqs = await repository.publish({ message: message('in the log'), deliveries: [{ clientId: 'a', qos: 1, retain: false }] });
    expect(seqs.get('a')).toBe(1);
    expect(faults.refused).toBe(1);
    expect(faults.reopens).toBe(1);
    expect(log.at('warn').join('\n')).toMatch(/yet after reopening the store the batch is in it/);
    faults.recover();
    expect(await payloads(repository, 'a')).toEqual(['1:in the log']);
    // The queue counts go on from what the store holds, that batch included (the writer keeps
    // committed counts in memory: it must not keep the ones from before that batch).
    await repository.publish({ message: message('next'), deliveries: [{ clientId: 'a', qos: 1, retain: false }] });
    expect(await repository.queueStats('a')).toEqual({ messages: 2, bytes: 'in the log'.length + 'next'.length, dropped: 0 });
  });

  it('a failed destroySession leaves the session stored and usable, seqs continuing', async () => {
    const { repository, faults, location } = await setup();
    await repository.createSession('a');
    await repository.subscribe('a', [{ filter: 't/#', qos: 1 }]);
    await repository.publish({ message: message('kept'), deliveries: [{ clientId: 'a', qos: 1, retain: false }] });
    faults.fail();
    await writeFailure(repository.destroySession('a'));
    faults.recover();
    const seqs = await repository.publish({ message: message('next'), deliveries: [{ clientId: 'a', qos: 1, retain: false }] });
    expect(seqs.get('a')).toBe(2);
    const fresh = await closeAndReopen(repository, location);
    expect(await payloads(fresh, 'a')).toEqual(['1:kept', '2:next']);
    expect((await fresh.loadSessions()).map((session) => session.subscriptions)).toEqual([[{ filter: 't/#', qos: 1 }]]);
  });
});

async function closeAndReopen(repository: LevelRepository, location: string): Promise<LevelRepository> {
  await repository.close();
  return reopened(location);
}
