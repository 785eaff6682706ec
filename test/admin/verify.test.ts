/**
 * broker-admin verify: a store produced by a real broker run passes, in both modes; the same store
 * corrupted on purpose fails with a precise report (key and problem for each), exit code 2.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { BrokerProcess } from '../helpers/broker-process.js';
import { encode } from '../../src/store/codec.js';
import { keys } from '../../src/store/key-layout.js';
import { ofType, records, runAdmin, setUp, stopBroker, storeContents, tearDown, withStore, type Fixture } from './fixture.js';

afterEach(tearDown);

/** Shared message ids of the fixture, by topic (bodies are stored once for the two subscribers). */
async function bodyIds(location: string): Promise<Record<string, number>> {
  const { decode } = await import('msgpackr');
  const ids: Record<string, number> = {};
  for (const [key, value] of Object.entries(await storeContents(location))) {
    if (!key.startsWith('m\u0000')) continue;
    const body = decode(Buffer.from(value, 'hex')) as { t: string };
    ids[body.t] = keys.messageIdOfBodyKey(key);
  }
  return ids;
}

async function corrupt(fixture: Fixture): Promise<Array<{ key: string; problem: string }>> {
  const store = `${fixture.dataDir}/store`;
  const ids = await bodyIds(store);
  const [t1, fire, raw] = [ids['sensors/t1']!, ids['alerts/fire']!, ids['sensors/raw']!];
  await withStore(store, async (db) => {
    await db.del(keys.body(t1)); // a body that two queue entries reference
    await db.put(keys.refCount(fire), encode(5)); // a count that disagrees with its references
    await db.put(keys.queueEntry('sub-offline', 3), Buffer.from([0xc1, 0x00, 0xff])); // garbage in a queue entry
    await db.put(keys.release('sub-offline', 9), encode({ s: 2, i: 9 })); // released state of no entry
    await db.put(keys.subscription('ghost', 'x/y'), encode({ q: 1 })); // subscription of no session
  });
  return [
    { key: keys.subscription('ghost', 'x/y'), problem: 'no-session' },
    { key: keys.refCount(t1), problem: 'count-without-body' },
    { key: keys.refCount(fire), problem: 'count-mismatch' },
    // sensors/raw: the garbage entry no longer references its body, so one reference of two is left.
    { key: keys.refCount(raw), problem: 'count-mismatch' },
    { key: keys.release('sub-offline', 9), problem: 'flight-without-entry' },
    { key: keys.queueEntry('sub-inflight', 1), problem: 'missing-body' },
    { key: keys.queueEntry('sub-offline', 1), problem: 'missing-body' },
    { key: keys.queueEntry('sub-offline', 3), problem: 'corrupt-record' },
  ];
}

const byKey = (a: { key: string; problem: string }, b: { key: string; problem: string }) =>
  a.key === b.key ? a.problem.localeCompare(b.problem) : a.key < b.key ? -1 : 1;

describe('broker-admin verify', { timeout: 120_000 }, () => {
  it('passes on a store produced by a real run, running and stopped', async () => {
    const fixture = await setUp();
    for (let pass = 0; pass < 2; pass++) {
      const run = await runAdmin(['verify', '--data', fixture.dataDir, '--json']);
      expect(run.code, run.stdout + run.stderr).toBe(0);
      expect(records(run).map((record) => record.type)).toEqual(['header', 'verify']);
      expect(ofType(run, 'verify')[0]).toEqual({ type: 'verify', schema: 1, ok: true, keys: expect.any(Number), problems: 0 });
      const readable = await runAdmin(['verify', '--data', fixture.dataDir]);
      expect(readable.code).toBe(0);
      expect(readable.stdout).toMatch(/^verify: ok, \d+ keys checked, no problem\n$/);
      if (pass === 0) await stopBroker(fixture);
    }
  });

  it('reports each broken invariant with its key and problem and exits 2, stopped and running', async () => {
    const fixture = await setUp();
    await stopBroker(fixture);
    const expected = (await corrupt(fixture)).sort(byKey);

    const stopped = await runAdmin(['verify', '--data', fixture.dataDir, '--json']);
    expect(stopped.code, stopped.stderr).toBe(2);
    const problems = ofType<{ key: string; problem: string; detail: string }>(stopped, 'problem');
    expect(problems.map(({ key, problem }) => ({ key, problem })).sort(byKey)).toEqual(expected);
    for (const { detail } of problems) expect(detail.length).toBeGreaterThan(10);
    expect(ofType(stopped, 'verify')).toEqual([{ type: 'verify', schema: 1, ok: false, keys: expect.any(Number), problems: expected.length }]);
    for (const { detail } of problems.filter(({ problem }) => problem === 'count-mismatch')) {
      expect(detail).toMatch(/^count is \d+ but \d+ queue entries reference message \d+$/);
    }

    // Readable: keys with visible separators, a summary line.
    const readable = await runAdmin(['verify', '--data', fixture.dataDir]);
    expect(readable.code).toBe(2);
    expect(readable.stdout).toMatch(/^q␀sub-offline␀000000000003 +corrupt-record +does not decode/m);
    expect(readable.stdout).toMatch(/^f␀sub-offline␀000000000009 +flight-without-entry +released state for seq 9, which has no queue entry$/m);
    expect(readable.stdout).toContain(`verify: ${expected.length} problems in `);

    // The same report from a running broker (it starts: only queues are broken, not what it loads).
    fixture.broker = await BrokerProcess.start(fixture.dataDir);
    const running = await runAdmin(['verify', '--data', fixture.dataDir, '--json']);
    expect(running.code, running.stderr).toBe(2);
    expect(running.stderr).toContain('using the running broker');
    expect(ofType<{ key: string; problem: string }>(running, 'problem').map(({ key, problem }) => ({ key, problem })).sort(byKey)).toEqual(expected);
  });

  it('reports a missing or unsupported format marker', async () => {
    const fixture = await setUp();
    await stopBroker(fixture);
    const store = `${fixture.dataDir}/store`;
    await withStore(store, (db) => db.put('!format', encode(99)));
    const unsupported = await runAdmin(['verify', '--data', fixture.dataDir, '--json']);
    expect(unsupported.code).toBe(2);
    expect(ofType(unsupported, 'problem')).toEqual([{ type: 'problem', key: '!format', problem: 'format-unsupported', detail: expect.stringContaining('99') }]);

    await withStore(store, (db) => db.del('!format'));
    const missing = await runAdmin(['verify', '--data', fixture.dataDir, '--json']);
    expect(missing.code).toBe(2);
    expect(ofType(missing, 'problem')).toEqual([{ type: 'problem', key: '!format', problem: 'format-missing', detail: expect.any(String) }]);
  });
});
