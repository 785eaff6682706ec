/**
 * A damaged store at start: bin/broker.js as a child process on a store written by the broker's
 * own repository and then damaged the way a disk or a careless hand damages files. The broker
 * must never start silently empty (or silently short of records): it exits 1 naming the store,
 * what is wrong, `broker-admin verify`, and the way out; with --move-corrupt-store-aside it moves
 * the store aside (kept on disk) and starts empty. A store locked by a running broker, or written
 * by a newer one, is not damage and is never moved.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ClassicLevel } from 'classic-level';
import { afterEach, describe, expect, it } from 'vitest';
import { checkedRecord, encode, encodeRecord } from '../../src/store/codec.js';
import { FORMAT_KEY, keys } from '../../src/store/key-layout.js';
import { LevelRepository } from '../../src/store/level-repository.js';
import { BrokerProcess, makeDataDir, removeDataDir, runBroker } from '../helpers/broker-process.js';
import { runAdmin } from '../admin/fixture.js';
import { RawClient } from '../helpers/raw-client.js';
import { subscribe } from '../helpers/wait.js';

const cleanup: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

function dataDir(): string {
  const dir = makeDataDir('broker-corrupt-store-');
  cleanup.push(() => removeDataDir(dir));
  return dir;
}

function storeOf(dir: string): string {
  return path.join(dir, 'store');
}

/**
 * A store with a persistent session ("old-client", subscribed to t/#) holding queued messages and
 * a retained message, written by the broker's repository. `compacted`: moved from the write-ahead
 * log into a table file (.ldb), as LevelDB does on its own once the log grows; otherwise left in
 * the log, as a crash leaves it (a clean close moves the log into a table too).
 */
async function writeStore(dir: string, options: { compacted: boolean }): Promise<void> {
  let raw: ClassicLevel<string, Uint8Array> | undefined;
  const repository = new LevelRepository({ location: storeOf(dir), instrument: (db) => (raw = db) });
  await repository.open();
  await repository.createSession('old-client');
  await repository.subscribe('old-client', [{ filter: 't/#', qos: 1 }]);
  for (let i = 0; i < 20; i++) {
    await repository.publish({
      message: { topic: 't/x', payload: Buffer.from(`queued ${i}`), qos: 1 },
      deliveries: [{ clientId: 'old-client', qos: 1, retain: false }],
      ...(i === 0 ? { retained: 'set' as const } : {}),
    });
  }
  if (!options.compacted) {
    // Every write above was awaited: closing LevelDB under the repository is a crash without one.
    await raw!.close();
    return;
  }
  await repository.close();
  await withRawDb(dir, (db) => db.compactRange('\u0000', '\uffff'));
}

async function withRawDb<T>(dir: string, body: (db: ClassicLevel<string, Uint8Array>) => Promise<T>): Promise<T> {
  const db = new ClassicLevel<string, Uint8Array>(storeOf(dir), { keyEncoding: 'utf8', valueEncoding: 'view' });
  await db.open();
  try {
    return await body(db);
  } finally {
    await db.close();
  }
}

function filesOf(dir: string, pattern: RegExp): string[] {
  const files = fs.readdirSync(storeOf(dir)).filter((name) => pattern.test(name));
  expect(files.length, `files matching ${pattern} in ${fs.readdirSync(storeOf(dir)).join(', ')}`).toBeGreaterThan(0);
  return files.map((name) => path.join(storeOf(dir), name));
}

/** Flips bits in `count` bytes every `step` bytes from `from` (negative: from the end). */
function garble(file: string, from: number, count = 1, step = 1): void {
  const bytes = fs.readFileSync(file);
  const start = from < 0 ? bytes.length + from : from;
  for (let i = 0; i < count; i++) bytes[start + i * step]! ^= 0x5a;
  fs.writeFileSync(file, bytes);
}

/** Every file of the store with its contents, to show a failed start changed nothing. */
function snapshot(dir: string): Map<string, string> {
  const store = storeOf(dir);
  // LOG and LOCK are LevelDB's own diary and lock: they change on every open attempt.
  const names = fs.readdirSync(store).filter((name) => !/^(LOG|LOG\.old|LOCK)$/.test(name));
  return new Map(names.map((name) => [name, fs.readFileSync(path.join(store, name)).toString('base64')]));
}

function movedAside(dir: string): string[] {
  return fs.readdirSync(dir).filter((name) => name.startsWith('store.corrupt-'));
}

interface Damage {
  name: string;
  compacted: boolean;
  damage: (dir: string) => Promise<void> | void;
  /** What the message must say about the problem. */
  problem: RegExp;
  /**
   * Found before LevelDB changed a file: the store stays byte for byte as it was. Damage found in
   * what LevelDB read after opening comes after its recovery, which rewrites its own bookkeeping.
   */
  untouched: boolean;
}

const damages: Damage[] = [
  {
    name: 'CURRENT names a MANIFEST that does not exist',
    compacted: false,
    damage: (dir) => fs.writeFileSync(path.join(storeOf(dir), 'CURRENT'), 'MANIFEST-000099\n'),
    problem: /MANIFEST-000099: No such file or directory/,
    untouched: true,
  },
  {
    name: 'CURRENT is empty',
    compacted: false,
    damage: (dir) => fs.writeFileSync(path.join(storeOf(dir), 'CURRENT'), ''),
    problem: /Corruption: CURRENT file does not end with newline/,
    untouched: true,
  },
  {
    // LevelDB alone would create a new, empty database here and later delete the old files.
    name: 'CURRENT is missing',
    compacted: true,
    damage: (dir) => fs.rmSync(path.join(storeOf(dir), 'CURRENT')),
    problem: /CURRENT file is missing although it holds data/,
    untouched: true,
  },
  {
    name: 'the MANIFEST is truncated',
    compacted: true,
    damage: (dir) => {
      for (const file of filesOf(dir, /^MANIFEST-/)) fs.truncateSync(file, 10);
    },
    problem: /Corruption: /,
    untouched: true,
  },
  {
    name: 'the MANIFEST is missing',
    compacted: true,
    damage: (dir) => {
      for (const file of filesOf(dir, /^MANIFEST-/)) fs.rmSync(file);
    },
    problem: /MANIFEST-\d+: No such file or directory/,
    untouched: true,
  },
  {
    name: 'the footer of a table file (.ldb) is garbled',
    compacted: true,
    damage: (dir) => {
      for (const file of filesOf(dir, /\.ldb$/)) garble(file, -8, 8);
    },
    problem: /Corruption: not an sstable \(bad magic number\)/,
    untouched: false,
  },
  {
    name: 'a table file (.ldb) is truncated',
    compacted: true,
    damage: (dir) => {
      for (const file of filesOf(dir, /\.ldb$/)) fs.truncateSync(file, 100);
    },
    problem: /Corruption|\.ldb: Invalid argument/,
    untouched: false,
  },
  {
    name: 'a table file (.ldb) is missing',
    compacted: true,
    damage: (dir) => {
      for (const file of filesOf(dir, /\.ldb$/)) fs.rmSync(file);
    },
    problem: /Corruption: 1 missing files/,
    untouched: true,
  },
  {
    // LevelDB alone would drop the damaged record and the rest of its block without a word.
    name: 'a record in the middle of the write-ahead log (.log) is garbled',
    compacted: false,
    damage: (dir) => {
      for (const file of filesOf(dir, /\.log$/)) garble(file, 40);
    },
    problem: /write-ahead log \d+\.log is damaged at byte \d+ \((checksum mismatch|bad record length)\)/,
    untouched: true,
  },
  {
    name: 'the format marker does not decode',
    compacted: false,
    damage: (dir) => withRawDb(dir, (db) => db.put(FORMAT_KEY, Uint8Array.of(0xc1))),
    problem: /format marker does not decode/,
    untouched: false,
  },
  {
    name: 'the format marker holds no format number',
    compacted: false,
    damage: (dir) => withRawDb(dir, (db) => db.put(FORMAT_KEY, encode(0))),
    problem: /format marker holds 0/,
    untouched: false,
  },
  {
    name: 'the format marker is gone from a store holding broker data',
    compacted: false,
    damage: (dir) => withRawDb(dir, (db) => db.del(FORMAT_KEY)),
    problem: /format marker is missing although it holds broker data/,
    untouched: false,
  },
  {
    name: 'a session record does not decode',
    compacted: false,
    damage: (dir) => withRawDb(dir, (db) => db.put(keys.session('old-client'), checkedRecord(keys.session('old-client'), Uint8Array.of(0xc1)))),
    problem: /store record "s\\u0000old-client" (does not decode|has an unexpected shape)/,
    untouched: false,
  },
  {
    name: 'a subscription record has the wrong shape',
    compacted: false,
    damage: (dir) => withRawDb(dir, (db) => db.put(keys.subscription('old-client', 't/#'), encodeRecord(keys.subscription('old-client', 't/#'), { q: 7 }))),
    problem: /store record "b\\u0000old-client\\u0000t\/#" has an unexpected shape/,
    untouched: false,
  },
];

describe('a damaged store at start', () => {
  it.each(damages)('$name: exit 1 naming the store, the problem, broker-admin verify and the way out; nothing moved', async ({ compacted, damage, problem, untouched }) => {
    const dir = dataDir();
    await writeStore(dir, { compacted });
    await damage(dir);
    const before = snapshot(dir);

    const { code, output } = await runBroker(['--host', '127.0.0.1', '--port', '0', '--data', dir]);
    expect(code, output).toBe(1);
    expect(output).not.toMatch(/listening on/);
    expect(output).toContain(`the store at ${storeOf(dir)} is damaged`);
    expect(output).toMatch(problem);
    expect(output).toContain(`broker-admin verify --data ${dir}`);
    expect(output).toContain('--move-corrupt-store-aside');
    expect(output).toContain('store_on_corrupt: move-aside');
    expect(movedAside(dir)).toEqual([]);
    // Never a silent repair either: what LevelDB would have dropped is still there.
    if (untouched) expect(snapshot(dir)).toEqual(before);

    // The check the message points to reports the damage too, and repairs nothing behind our back.
    const verify = await runAdmin(['verify', '--data', dir]);
    expect(verify.code, verify.stdout + verify.stderr).not.toBe(0);
    if (untouched) {
      expect(verify.stderr).toMatch(problem);
      expect(snapshot(dir)).toEqual(before);
    }
  });

  it.each(damages)('$name, with --move-corrupt-store-aside: moved aside (kept on disk), logged, a new empty store serves', async ({ compacted, damage, untouched }) => {
    const dir = dataDir();
    await writeStore(dir, { compacted });
    await damage(dir);
    const before = snapshot(dir);

    const broker = await BrokerProcess.start(dir, ['--move-corrupt-store-aside']);
    cleanup.push(async () => {
      if (broker.child.exitCode === null && broker.child.signalCode === null) broker.child.kill('SIGKILL');
      await broker.exited;
    });
    const [aside] = movedAside(dir);
    expect(aside, broker.output).toMatch(/^store\.corrupt-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}Z$/);
    expect(broker.output).toMatch(new RegExp(`warn .*is damaged.*moved it aside to ${escape(path.join(dir, aside!))}`));
    // The damaged store is kept on disk under its new name (as it was, where LevelDB had not opened it).
    const kept = path.join(dir, aside!);
    expect(fs.readdirSync(kept)).toEqual(expect.arrayContaining([...before.keys()].filter((name) => name.endsWith('.ldb') || untouched)));
    if (untouched) {
      for (const [name, contents] of before) expect(fs.readFileSync(path.join(kept, name)).toString('base64'), name).toBe(contents);
    }

    // A new, empty store: the old session is not there [MQTT-3.2.2-2], new ones work.
    const { client, connack } = await RawClient.session(broker.port, { clientId: 'old-client', clean: false });
    cleanup.push(() => client.close());
    expect(connack.returnCode).toBe(0);
    expect(connack.sessionPresent).toBe(false);
    expect(await subscribe(client, 1, [{ topic: 'new/#', qos: 1 }])).toEqual([1]);
    client.send({ cmd: 'publish', topic: 'new/x', payload: 'hello', qos: 1, messageId: 1, retain: false, dup: false });
    expect((await client.next('puback')).messageId).toBe(1);
    const publish = await client.next('publish');
    expect(`${publish.topic}=${publish.payload.toString()}`).toBe('new/x=hello');

    const { code } = await broker.stop();
    expect(code, broker.output).toBe(0);
  });

  it('a store locked by a running broker is not damage: the second broker exits 1 and nothing is moved, even with --move-corrupt-store-aside', async () => {
    const dir = dataDir();
    await writeStore(dir, { compacted: false });
    const running = await BrokerProcess.start(dir);
    cleanup.push(async () => {
      if (running.child.exitCode === null && running.child.signalCode === null) running.child.kill('SIGKILL');
      await running.exited;
    });

    const { code, output } = await runBroker(['--host', '127.0.0.1', '--port', '0', '--data', dir, '--move-corrupt-store-aside']);
    expect(code, output).toBe(1);
    expect(output).toMatch(/in use by another process/);
    expect(output).not.toMatch(/damaged|moved it aside/);
    expect(movedAside(dir)).toEqual([]);

    // The running broker still has its store and its session.
    const { client, connack } = await RawClient.session(running.port, { clientId: 'old-client', clean: false });
    cleanup.push(() => client.close());
    expect(connack.sessionPresent).toBe(true);
    expect((await client.next('publish')).payload.toString()).toBe('queued 0');
  });

  it('a store of a newer format is not damage: exit 1 naming the format, nothing moved, even with --move-corrupt-store-aside', async () => {
    const dir = dataDir();
    await writeStore(dir, { compacted: false });
    await withRawDb(dir, (db) => db.put(FORMAT_KEY, encode(4)));
    const { code, output } = await runBroker(['--host', '127.0.0.1', '--port', '0', '--data', dir, '--move-corrupt-store-aside']);
    expect(code, output).toBe(1);
    expect(output).toContain('has store format 4; this broker reads format 1, 2 or 3');
    expect(movedAside(dir)).toEqual([]);
  });

  it('a write-ahead log cut short at its end, as a crash in the middle of a write leaves it, is not damage: the broker starts with what was whole', async () => {
    const dir = dataDir();
    await writeStore(dir, { compacted: false });
    for (const file of filesOf(dir, /\.log$/)) fs.truncateSync(file, fs.statSync(file).size - 5);
    const broker = await BrokerProcess.start(dir);
    cleanup.push(async () => {
      if (broker.child.exitCode === null && broker.child.signalCode === null) broker.child.kill('SIGKILL');
      await broker.exited;
    });
    expect(movedAside(dir)).toEqual([]);
    const { client, connack } = await RawClient.session(broker.port, { clientId: 'old-client', clean: false });
    cleanup.push(() => client.close());
    expect(connack.sessionPresent).toBe(true);
    // Only the last batch (the 20th message) was cut; the 19 before it are whole.
    const first = await client.next('publish');
    expect(first.payload.toString()).toBe('queued 0');
    const { code } = await broker.stop();
    expect(code, broker.output).toBe(0);
  });
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
