/**
 * A store written by the previous format (1: plain msgpack values, no retained index) must still
 * open and serve: the broker converts it once when it opens it, broker-admin reads it as it is.
 * The fixture is a store made by a real broker run of that format (fixtures/format-1-store).
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ClassicLevel } from 'classic-level';
import { describe, expect, it } from 'vitest';
import { checkedRecord, decode, decodeRecord, isCheckedRecord } from '../../src/store/codec.js';
import { convertFromFormat1 } from '../../src/store/format-migration.js';
import { FORMAT_KEY, FORMAT_VERSION, RETAINED_TOTALS_KEY, isNumber, isRetainedIndexValue, isRetainedTotalsValue, keys } from '../../src/store/key-layout.js';
import { LevelRepository } from '../../src/store/level-repository.js';
import type { BrokerProcess } from '../helpers/broker-process.js';
import { useBrokerProcesses } from '../helpers/process-harness.js';
import type { RawClient } from '../helpers/raw-client.js';
import { acknowledge, subscribe } from '../helpers/wait.js';
import { ofType, records, runAdmin, storeContents } from '../admin/fixture.js';

const FIXTURE = fileURLToPath(new URL('./fixtures/format-1-store', import.meta.url));
const LEVELDB_FILE = /^(CURRENT|MANIFEST-\d+|\d+\.(log|ldb))$/;

const { freshDataDir, startBroker, connectRaw } = useBrokerProcesses('broker-format-1-');

/** A data directory holding a copy of the fixture as its store. */
function dataDirWithFormat1Store(): string {
  const dir = freshDataDir();
  fs.mkdirSync(path.join(dir, 'store'));
  for (const name of fs.readdirSync(FIXTURE).filter((file) => LEVELDB_FILE.test(file))) {
    fs.copyFileSync(path.join(FIXTURE, name), path.join(dir, 'store', name));
  }
  return dir;
}

async function withRawDb<T>(location: string, body: (db: ClassicLevel<string, Uint8Array>) => Promise<T>): Promise<T> {
  const db = new ClassicLevel<string, Uint8Array>(location, { keyEncoding: 'utf8', valueEncoding: 'view', createIfMissing: false });
  await db.open();
  try {
    return await body(db);
  } finally {
    await db.close();
  }
}

async function connect(broker: BrokerProcess, clientId: string, clean: boolean): Promise<{ client: RawClient; sessionPresent: boolean }> {
  const { client, connack } = await connectRaw(broker, clientId, clean);
  return { client, sessionPresent: connack.sessionPresent };
}

/** What the store of the current format must hold after the conversion, checked record by record. */
async function expectConverted(store: string): Promise<void> {
  const contents = await storeContents(store);
  for (const [key, hex] of Object.entries(contents)) {
    if (key === FORMAT_KEY) continue;
    expect(isCheckedRecord(Buffer.from(hex, 'hex'), key), `${JSON.stringify(key)} is a checked record`).toBe(true);
  }
  const value = (key: string) => Buffer.from(contents[key]!, 'hex');
  expect(decode(value(FORMAT_KEY), FORMAT_KEY, isNumber)).toBe(FORMAT_VERSION);
  expect(decodeRecord(value(keys.retainedIndex('status/gw')), keys.retainedIndex('status/gw'), isRetainedIndexValue)).toEqual({ o: 1, z: 6 });
  expect(decodeRecord(value(keys.retainedIndex('bin/blob')), keys.retainedIndex('bin/blob'), isRetainedIndexValue)).toEqual({ o: 1, z: 100 });
  expect(decodeRecord(value(RETAINED_TOTALS_KEY), RETAINED_TOTALS_KEY, isRetainedTotalsValue)).toEqual({ m: 2, b: 106, d: 0 });
}

describe('a store of format 1', { timeout: 60_000 }, () => {
  it('broker-admin reads it as it is (dump, verify) and writes no key', async () => {
    const dir = dataDirWithFormat1Store();
    const before = await storeContents(path.join(dir, 'store'));
    expect(decode(Buffer.from(before[FORMAT_KEY]!, 'hex'), FORMAT_KEY, isNumber)).toBe(1);

    const dump = await runAdmin(['dump', '--data', dir, '--json', '--messages']);
    expect(dump.code, dump.stderr).toBe(0);
    expect(ofType<{ clientId: string }>(dump, 'session').map(({ clientId }) => clientId)).toEqual(['pub-qos2', 'sub-inflight', 'sub-offline']);
    expect(ofType<{ topic: string }>(dump, 'message').map(({ topic }) => topic)).toEqual([
      'sensors/t1',
      'alerts/fire',
      'sensors/raw',
      'sensors/t1',
      'alerts/fire',
      'sensors/raw',
    ]);
    expect(ofType<{ topic: string; qos: number }>(dump, 'retained').map(({ topic, qos }) => [topic, qos])).toEqual([
      ['bin/blob', 1],
      ['status/gw', 1],
    ]);
    const verify = await runAdmin(['verify', '--data', dir, '--json']);
    expect(verify.code, verify.stdout + verify.stderr).toBe(0);
    expect(records(verify).at(-1)).toMatchObject({ type: 'verify', ok: true, problems: 0 });
    expect(await storeContents(path.join(dir, 'store'))).toEqual(before);
  });

  it('the broker converts it once at start and serves it: queues, messages in flight, inbound QoS 2, retained messages', async () => {
    const dir = dataDirWithFormat1Store();
    const broker = await startBroker(dir);
    expect(broker.output).toContain('restored 3 persistent sessions and 2 retained messages');

    // sub-offline's three queued messages, in order [MQTT-4.6.0-2].
    const offline = await connect(broker, 'sub-offline', false);
    expect(offline.sessionPresent).toBe(true);
    const queued = [];
    for (let index = 0; index < 3; index++) {
      const publish = await offline.client.next('publish');
      queued.push([publish.topic, publish.qos, publish.dup]);
      await acknowledge(offline.client, publish);
    }
    expect(queued).toEqual([
      ['sensors/t1', 1, false],
      ['alerts/fire', 2, false],
      ['sensors/raw', 1, false],
    ]);

    // sub-inflight: PUBLISH resent with DUP=1 and its packet id; the released one continues with PUBREL [MQTT-4.4.0-1].
    const inflight = await connect(broker, 'sub-inflight', false);
    expect(inflight.sessionPresent).toBe(true);
    const resent = await inflight.client.next('publish');
    expect([resent.topic, resent.messageId, resent.dup]).toEqual(['sensors/t1', 1, true]);
    expect((await inflight.client.next('pubrel')).messageId).toBe(2);

    // pub-qos2: its PUBREL for 42 is answered, the message delivered once already.
    const publisher = await connect(broker, 'pub-qos2', false);
    publisher.client.send({ cmd: 'pubrel', messageId: 42 });
    expect((await publisher.client.next('pubcomp')).messageId).toBe(42);

    // The retained messages, read from their converted records [MQTT-3.3.1-8].
    const watcher = await connect(broker, 'watcher', true);
    await subscribe(watcher.client, 1, [{ topic: '#', qos: 0 }]);
    const retained = [await watcher.client.next('publish'), await watcher.client.next('publish')];
    expect(retained.map((publish) => [publish.topic, publish.retain, publish.payload.length]).sort()).toEqual([
      ['bin/blob', true, 100],
      ['status/gw', true, 6],
    ]);

    const { code } = await broker.stop();
    expect(code, broker.output).toBe(0);
    await expectConverted(path.join(dir, 'store'));
    const verify = await runAdmin(['verify', '--data', dir]);
    expect(verify.code, verify.stdout).toBe(0);

    // A second start finds the current format and converts nothing.
    const before = await storeContents(path.join(dir, 'store'));
    const again = await startBroker(dir);
    expect((await again.stop()).code).toBe(0);
    expect(await storeContents(path.join(dir, 'store'))).toEqual(before);
  });

  it('a conversion cut short (a crash between its batches) is finished by the next open, to the same store', async () => {
    const whole = dataDirWithFormat1Store();
    const cut = dataDirWithFormat1Store();
    await withRawDb(path.join(whole, 'store'), (db) => convertFromFormat1(db));
    // What a crash after the first batches leaves: some records converted, the marker still 1.
    await withRawDb(path.join(cut, 'store'), async (db) => {
      const entries = await db.iterator().all();
      for (const [key, value] of entries.filter(([key]) => key !== FORMAT_KEY).slice(0, 12)) await db.put(key, checkedRecord(key, value));
      await db.put(keys.retainedIndex('bin/blob'), Buffer.from(checkedRecord(keys.retainedIndex('bin/blob'), Buffer.from([0x82, 0xa1, 0x6f, 0x01, 0xa1, 0x7a, 0x64]))));
    });
    const repository = new LevelRepository({ location: path.join(cut, 'store') });
    await repository.open();
    expect((await repository.loadRetainedIndex()).map(({ topic }) => topic).sort()).toEqual(['bin/blob', 'status/gw']);
    await repository.close();
    expect(await storeContents(path.join(cut, 'store'))).toEqual(await storeContents(path.join(whole, 'store')));
    await expectConverted(path.join(cut, 'store'));
  });

  it('a retained message of format 1 that does not decode stops the conversion as damage, and nothing is half converted', async () => {
    const dir = dataDirWithFormat1Store();
    const store = path.join(dir, 'store');
    await withRawDb(store, (db) => db.put(keys.retained('status/gw'), Uint8Array.of(0xc1)));
    const before = await storeContents(store);
    const open = new LevelRepository({ location: store }).open();
    await expect(open).rejects.toMatchObject({ code: 'BROKER_ERR_STORE_CORRUPT_RECORD' });
    const after = await storeContents(store);
    expect(decode(Buffer.from(after[FORMAT_KEY]!, 'hex'), FORMAT_KEY, isNumber)).toBe(1);
    // Records before the damaged one may be converted already (the next start resumes); none is lost.
    expect(Object.keys(after).filter((key) => !key.startsWith('t\u0000')).sort()).toEqual(Object.keys(before).sort());
  });
});
