/**
 * The broker and broker-admin judge every store alike: both open it through store-opening.ts, so
 * a store that one calls damaged, foreign or of a newer format is the same to the other.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ClassicLevel } from 'classic-level';
import { afterEach, describe, expect, it } from 'vitest';
import { BrokerError, ErrorCodes } from '../../src/errors.js';
import { encode, encodeRecord } from '../../src/store/codec.js';
import { FORMAT_KEY, keys } from '../../src/store/key-layout.js';
import { openStoreForInspection } from '../../src/store/level-inspector.js';
import { LevelRepository } from '../../src/store/level-repository.js';

const directories: string[] = [];

afterEach(() => {
  for (const dir of directories.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

async function storeHolding(entries: [string, Uint8Array][]): Promise<string> {
  const location = fs.mkdtempSync(path.join(os.tmpdir(), 'broker-opening-'));
  directories.push(location);
  const db = new ClassicLevel<string, Uint8Array>(location, { keyEncoding: 'utf8', valueEncoding: 'view' });
  await db.open();
  for (const [key, value] of entries) await db.put(key, value);
  await db.close();
  return location;
}

/** The error code opening gives (or 'ok'), and its message. */
async function verdict(open: () => Promise<{ close(): Promise<void> }>): Promise<{ code: string; message: string }> {
  try {
    const opened = await open();
    await opened.close();
    return { code: 'ok', message: '' };
  } catch (error) {
    if (!(error instanceof BrokerError)) throw error;
    return { code: error.code, message: error.message };
  }
}

const CASES: { name: string; entries: [string, Uint8Array][]; code: string; words: RegExp }[] = [
  { name: 'a current store', entries: [[FORMAT_KEY, encode(2)], [keys.session('a'), encodeRecord(keys.session('a'), { c: 1 })]], code: 'ok', words: /^$/ },
  { name: 'a store of the previous format (the broker converts it, broker-admin reads it)', entries: [[FORMAT_KEY, encode(1)], [keys.session('a'), encode({ c: 1 })]], code: 'ok', words: /^$/ },
  {
    name: 'broker data without its format marker',
    entries: [[keys.session('a'), encode({ c: 1 })], [keys.queueEntry('a', 1), encode({ q: 1, r: false, t: 't', p: Buffer.from('x'), o: 1 })]],
    code: ErrorCodes.STORE_CORRUPT,
    words: /is damaged: its format marker is missing although it holds broker data/,
  },
  { name: 'another program\'s LevelDB', entries: [['hello', Buffer.from('world')]], code: ErrorCodes.STORE_NOT_A_BROKER_STORE, words: /not a broker store \(no format marker\)/ },
  { name: 'a format marker that does not decode', entries: [[FORMAT_KEY, Buffer.from([0xc1])]], code: ErrorCodes.STORE_CORRUPT, words: /format marker does not decode/ },
  { name: 'a format marker no format ever had', entries: [[FORMAT_KEY, encode(0)]], code: ErrorCodes.STORE_CORRUPT, words: /format marker holds 0/ },
  { name: 'a newer broker\'s format', entries: [[FORMAT_KEY, encode(99)]], code: ErrorCodes.STORE_UNSUPPORTED_FORMAT, words: /has store format 99; this broker reads format 1, 2 or 3$/ },
];

describe('store opening: the broker and broker-admin agree on every store', () => {
  it.each(CASES)('$name', async ({ entries, code, words }) => {
    const location = await storeHolding(entries);
    const broker = await verdict(async () => {
      const repository = new LevelRepository({ location });
      await repository.open();
      return repository;
    });
    const admin = await verdict(() => openStoreForInspection(location));
    expect(broker.code).toBe(code);
    expect(admin.code).toBe(code);
    expect(broker.message).toMatch(words);
    expect(admin.message).toBe(broker.message);
  });

  it('an empty LevelDB becomes a store for the broker; broker-admin, which never writes, leaves it as it is', async () => {
    const forAdmin = await storeHolding([]);
    const admin = await verdict(() => openStoreForInspection(forAdmin));
    expect(admin.code).toBe(ErrorCodes.STORE_NOT_A_BROKER_STORE);
    const db = new ClassicLevel<string, Uint8Array>(forAdmin, { keyEncoding: 'utf8', valueEncoding: 'view' });
    expect(await db.keys().all()).toEqual([]);
    await db.close();

    const forBroker = await storeHolding([]);
    expect((await verdict(async () => {
      const repository = new LevelRepository({ location: forBroker });
      await repository.open();
      return repository;
    })).code).toBe('ok');
  });
});
