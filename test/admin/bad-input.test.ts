/**
 * broker-admin on bad input: a clear message, a non-zero exit, nothing written. Also the admin
 * socket itself (mode 0600, stale file, a store locked with nobody answering) and --help.
 *
 * "Nothing written": where no LevelDB gets opened, every file is compared byte for byte. Opening a
 * LevelDB makes LevelDB itself rotate its LOG and rewrite its MANIFEST and log files even when no
 * key is written, so for those cases the logical contents (every key and value) are compared, and
 * the files outside the store byte for byte.
 */
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createBroker } from '../../src/server/broker.js';
import { encode } from '../../src/store/codec.js';
import { BrokerProcess, makeDataDir, removeDataDir } from '../helpers/broker-process.js';
import { directoryState, records, runAdmin, setUp, stopBroker, storeContents, tearDown, withStore } from './fixture.js';

const dirs: string[] = [];
afterEach(async () => {
  await tearDown();
  for (const dir of dirs.splice(0)) removeDataDir(dir);
});

function scratch(): string {
  const dir = makeDataDir('broker-admin-bad-');
  dirs.push(dir);
  return dir;
}

const READS = [['dump'], ['sessions'], ['stats'], ['verify'], ['retained', 'list'], ['session', 'show', 'x']];

/** Files of the data directory other than the store's own (admin.sock is a socket, not compared). */
function outsideStore(dataDir: string): Record<string, string> {
  return Object.fromEntries(Object.entries(directoryState(dataDir)).filter(([name]) => !name.startsWith('store/')));
}

describe('broker-admin on bad input', { timeout: 120_000 }, () => {
  it('a missing data directory: exit 1, a clear message, the directory is not created', async () => {
    const missing = join(scratch(), 'nope');
    for (const command of [...READS, ['session', 'drop', 'x'], ['retained', 'clear', 'a'], ['compact']]) {
      const run = await runAdmin([...command, '--data', missing]);
      expect(run.code, command.join(' ')).toBe(1);
      expect(run.stderr).toBe(`broker-admin: the data directory ${missing} does not exist\n`);
      expect(run.stdout).toBe('');
      expect(existsSync(missing)).toBe(false);
    }
  });

  it('a directory without a store: exit 1, nothing written', async () => {
    const dir = scratch();
    mkdirSync(join(dir, 'other'));
    const before = directoryState(dir);
    for (const command of [...READS, ['session', 'drop', 'x'], ['retained', 'clear', 'a'], ['compact']]) {
      const run = await runAdmin([...command, '--data', dir]);
      expect(run.code, command.join(' ')).toBe(1);
      expect(run.stderr).toBe(`broker-admin: there is no broker store at ${dir}/store\n`);
      expect(directoryState(dir)).toEqual(before);
    }
  });

  it('a LevelDB that is not a broker store, or of an unsupported format: exit 1, no key written', async () => {
    const dir = scratch();
    const store = join(dir, 'store');
    const { ClassicLevel } = await import('classic-level');
    const foreign = new ClassicLevel(store);
    await foreign.put('hello', 'world');
    await foreign.close();
    const contents = await storeContents(store);
    const outside = outsideStore(dir);
    for (const command of [...READS.filter(([name]) => name !== 'verify'), ['session', 'drop', 'x'], ['retained', 'clear', 'a'], ['compact']]) {
      const run = await runAdmin([...command, '--data', dir]);
      expect(run.code, command.join(' ')).toBe(1);
      expect(run.stderr).toContain(`${store} holds a LevelDB database that is not a broker store (no format marker)`);
    }
    expect(await storeContents(store)).toEqual(contents);
    expect(outsideStore(dir)).toEqual(outside);

    await withStore(store, (db) => db.put('!format', encode(7)));
    const run = await runAdmin(['dump', '--data', dir]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`${store} has store format 7; this broker reads format 1`);
  });

  it('an unknown client id or retained topic, an invalid filter: exit 1, nothing changed, stopped and running', async () => {
    const fixture = await setUp();
    const data = ['--data', fixture.dataDir];
    const check = async () => {
      const before = await runAdmin(['dump', '--messages', '--json', ...data]);
      for (const command of [['session', 'show', 'nobody'], ['session', 'drop', 'nobody'], ['dump', '--client', 'nobody']]) {
        const run = await runAdmin([...command, ...data]);
        expect(run.code, command.join(' ')).toBe(1);
        expect(run.stderr).toMatch(/broker-admin: there is no session for client id "nobody"\n$/);
      }
      const clear = await runAdmin(['retained', 'clear', 'no/such/topic', ...data]);
      expect(clear.code).toBe(1);
      expect(clear.stderr).toMatch(/there is no retained message on "no\/such\/topic"\n$/);
      const badTopic = await runAdmin(['retained', 'clear', 'a/#', ...data]);
      expect(badTopic.code).toBe(1);
      expect(badTopic.stderr).toMatch(/"a\/#" is not a valid topic name\n$/);
      const badFilter = await runAdmin(['retained', 'list', 'a/#/b', ...data]);
      expect(badFilter.code).toBe(1);
      expect(badFilter.stderr).toMatch(/"a\/#\/b" is not a valid topic filter\n$/);
      const after = await runAdmin(['dump', '--messages', '--json', ...data]);
      expect(records(after)).toEqual(records(before));
    };
    await check();
    await stopBroker(fixture);
    const store = join(fixture.dataDir, 'store');
    const contents = await storeContents(store);
    await check();
    expect(await storeContents(store)).toEqual(contents);
  });

  it('a store in use by a broker whose admin channel is off: exit 1, says so', async () => {
    const dataDir = scratch();
    const broker = createBroker({ host: '127.0.0.1', port: 0, dataDir, admin: false });
    await broker.listen();
    try {
      expect(existsSync(join(dataDir, 'admin.sock'))).toBe(false);
      const run = await runAdmin(['sessions', '--data', dataDir]);
      expect(run.code).toBe(1);
      expect(run.stderr).toContain(`is in use by another process, and nothing answers on ${dataDir}/admin.sock`);
    } finally {
      await broker.close();
    }
  });
});

describe('the admin socket', { timeout: 120_000 }, () => {
  it('is created with mode 0600 and removed when the broker stops', async () => {
    const fixture = await setUp();
    const path = join(fixture.dataDir, 'admin.sock');
    const stats = statSync(path);
    expect(stats.isSocket()).toBe(true);
    expect(stats.mode & 0o777).toBe(0o600);
    await stopBroker(fixture);
    expect(existsSync(path)).toBe(false);
  });

  it('a stale socket file left by a killed broker: broker-admin uses the stopped store, the next broker replaces it', async () => {
    const dataDir = scratch();
    const first = await BrokerProcess.start(dataDir);
    await first.kill();
    const path = join(dataDir, 'admin.sock');
    expect(existsSync(path)).toBe(true);

    const stopped = await runAdmin(['sessions', '--data', dataDir]);
    expect(stopped.code, stopped.stderr).toBe(0);
    expect(stopped.stderr).toBe(`broker-admin: using the stopped store ${dataDir}/store\n`);
    expect(stopped.stdout).toBe('No sessions.\n');

    const second = await BrokerProcess.start(dataDir);
    try {
      const running = await runAdmin(['sessions', '--data', dataDir]);
      expect(running.code, running.stderr).toBe(0);
      expect(running.stderr).toBe(`broker-admin: using the running broker via ${path}\n`);
      expect(statSync(path).mode & 0o777).toBe(0o600);
    } finally {
      await second.stop();
    }
  });
});

describe('broker-admin --help', { timeout: 120_000 }, () => {
  const commands = [
    [],
    ['dump'],
    ['sessions'],
    ['session'],
    ['session', 'show'],
    ['session', 'drop'],
    ['retained'],
    ['retained', 'list'],
    ['retained', 'clear'],
    ['stats'],
    ['verify'],
    ['compact'],
  ];
  it.each(commands.map((command) => [command.join(' ') || '(program)', command]))('%s', async (_name, command) => {
    const run = await runAdmin([...(command as string[]), '--help']);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain(`Usage: broker-admin${(command as string[]).length ? ` ${(command as string[]).join(' ')}` : ''}`);
    if ((command as string[]).length > 0 && !['session', 'retained'].includes((command as string[]).join(' '))) {
      expect(run.stdout).toContain('--data <dir>');
      expect(run.stdout).toContain('--json');
    }
  });
});
