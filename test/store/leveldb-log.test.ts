/**
 * The write-ahead log check (src/store/leveldb-log.ts) against LevelDB itself: on logs written by
 * the real LevelDB and then damaged at random (bytes flipped, the file cut short), the check
 * reports damage exactly when LevelDB's own recovery drops records with a corruption report in
 * its LOG file ("dropping N bytes; Corruption: …"), and only then. A cut at the end of the log, as
 * a crash in the middle of a write leaves it, is no damage for either.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ClassicLevel } from 'classic-level';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { crc32c, findLogDamage } from '../../src/store/leveldb-log.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'broker-leveldb-log-'));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));
let cases = 0;

/** A database whose data is all in its write-ahead log: batches of the given value sizes, then closed. */
async function writeLog(batches: number[][]): Promise<{ dir: string; log: string }> {
  const dir = path.join(root, `case-${cases++}`);
  const db = new ClassicLevel<string, Uint8Array>(dir, { valueEncoding: 'view' });
  await db.open();
  let key = 0;
  for (const sizes of batches) {
    await db.batch(sizes.map((size) => ({ type: 'put' as const, key: `k${key++}`, value: new Uint8Array(size).fill(key % 251) })));
  }
  await db.close();
  const [log] = fs.readdirSync(dir).filter((name) => name.endsWith('.log'));
  return { dir, log: path.join(dir, log!) };
}

/** What LevelDB's recovery says about the log: the corruption it reports (and skips), if any. */
async function levelDbVerdict(dir: string): Promise<string | undefined> {
  const db = new ClassicLevel<string, Uint8Array>(dir, { valueEncoding: 'view' });
  await db.open();
  await db.close();
  // LevelDB's diary of that open (the previous one's is LOG.old now).
  const log = fs.readFileSync(path.join(dir, 'LOG'), 'utf8');
  expect(log).toMatch(/Recovering log #\d+/);
  return /dropping \d+ bytes; Corruption: [^\n]*/.exec(log)?.[0];
}

const batches = fc.array(fc.array(fc.oneof(fc.integer({ min: 0, max: 200 }), fc.integer({ min: 1000, max: 70_000 })), { minLength: 1, maxLength: 4 }), {
  minLength: 1,
  maxLength: 12,
});

describe('the write-ahead log check', () => {
  it('computes CRC-32C (the RFC 3720 check value)', () => {
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
  });

  it('an intact log, one record or records spread over many blocks, has no damage', async () => {
    await fc.assert(
      fc.asyncProperty(batches, async (written) => {
        const { dir, log } = await writeLog(written);
        expect(findLogDamage(log)).toBeUndefined();
        expect(await levelDbVerdict(dir)).toBeUndefined();
      }),
      { numRuns: 25 },
    );
  });

  it('flipped bytes: damage reported exactly when LevelDB would drop records', async () => {
    let damaged = 0;
    await fc.assert(
      fc.asyncProperty(batches, fc.array(fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }), { minLength: 1, maxLength: 3 }), async (written, where) => {
        const { dir, log } = await writeLog(written);
        const bytes = fs.readFileSync(log);
        for (const at of where) bytes[Math.floor(at * bytes.length)]! ^= 0x41;
        fs.writeFileSync(log, bytes);
        const ours = findLogDamage(log);
        const theirs = await levelDbVerdict(dir);
        if (ours) damaged++;
        expect(ours === undefined, `ours: ${JSON.stringify(ours)}, LevelDB: ${theirs}`).toBe(theirs === undefined);
        if (ours) expect(theirs).toContain(`dropping ${ours.bytes} bytes; Corruption: ${ours.reason}`);
      }),
      { numRuns: 60 },
    );
    // The property is about damage: most cases must have some.
    expect(damaged).toBeGreaterThan(30);
  });

  it('a log cut short anywhere is no damage to either (a crash in the middle of a write)', async () => {
    await fc.assert(
      fc.asyncProperty(batches, fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }), async (written, where) => {
        const { dir, log } = await writeLog(written);
        fs.truncateSync(log, Math.floor(where * fs.statSync(log).size));
        expect(findLogDamage(log)).toBeUndefined();
        expect(await levelDbVerdict(dir)).toBeUndefined();
      }),
      { numRuns: 30 },
    );
  });
});
