/**
 * A bit flipped inside a stored payload, in LevelDB's table file on disk (LevelDB checksums its
 * blocks, but classic-level cannot have it verify them on reads): `broker-admin verify` reports
 * it, and the broker never delivers it, neither a queued message nor a retained one.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { IPublishPacket } from 'mqtt-packet';
import { keys } from '../../src/store/key-layout.js';
import type { BrokerProcess } from '../helpers/broker-process.js';
import { useBrokerProcesses } from '../helpers/process-harness.js';
import type { RawClient } from '../helpers/raw-client.js';
import { publishQos1, subscribe } from '../helpers/wait.js';
import { ofType, runAdmin } from '../admin/fixture.js';

const { freshDataDir, startBroker: start, connectRaw } = useBrokerProcesses('broker-checksums-');

async function connect(broker: BrokerProcess, clientId: string, clean: boolean): Promise<RawClient> {
  return (await connectRaw(broker, clientId, clean)).client;
}

/**
 * Flips one bit in the middle of `payload` where it sits in a table file of the store. Random
 * bytes do not compress, so LevelDB keeps them as they are in the block.
 */
function flipBitOnDisk(store: string, payload: Buffer): string {
  const needle = payload.subarray(1000, 1064);
  for (const name of fs.readdirSync(store).filter((file) => file.endsWith('.ldb'))) {
    const file = path.join(store, name);
    const bytes = fs.readFileSync(file);
    const at = bytes.indexOf(needle);
    if (at === -1) continue;
    bytes[at + 32]! ^= 0x10;
    fs.writeFileSync(file, bytes);
    return name;
  }
  throw new Error('payload not found in any table file');
}

describe('a payload damaged on disk', { timeout: 60_000 }, () => {
  it('is reported by verify and never delivered: the queued message closes its session\'s connection, the retained one is left out', async () => {
    const dataDir = freshDataDir();
    const store = path.join(dataDir, 'store');
    const queued = randomBytes(4096);
    const retained = randomBytes(4096);

    const first = await start(dataDir);
    const victim = await connect(first, 'victim', false);
    await subscribe(victim, 1, [{ topic: 'data/queued', qos: 1 }]);
    await victim.disconnect();
    const publisher = await connect(first, 'publisher', true);
    publisher.send({ cmd: 'publish', topic: 'data/queued', payload: queued, qos: 1, messageId: 1, retain: false, dup: false });
    publisher.send({ cmd: 'publish', topic: 'data/retained', payload: retained, qos: 1, messageId: 2, retain: true, dup: false });
    await publisher.take('puback', 2);
    await publishQos1(publisher, 3, 'data/fine', 'fine', true);
    await publisher.disconnect();
    // A clean stop moves everything from LevelDB's log into a table.
    expect((await first.stop()).code).toBe(0);
    flipBitOnDisk(store, queued);
    flipBitOnDisk(store, retained);

    const verify = await runAdmin(['verify', '--data', dataDir, '--json']);
    expect(verify.code, verify.stderr).toBe(2);
    const problems = ofType<{ key: string; problem: string; detail: string }>(verify, 'problem');
    expect(problems.map(({ key, problem }) => [key, problem]).sort()).toEqual([
      [keys.queueEntry('victim', 1), 'corrupt-record'],
      [keys.retained('data/retained'), 'corrupt-record'],
    ]);
    for (const { detail } of problems) expect(detail).toMatch(/fails its checksum/);

    // The broker starts: neither record is read at start.
    const broker = await start(dataDir);
    const watcher = await connect(broker, 'watcher', true);
    await subscribe(watcher, 1, [{ topic: 'data/#', qos: 0 }]);
    await watcher.roundTrip();
    const sent = watcher.received.filter((packet): packet is IPublishPacket => packet.cmd === 'publish');
    expect(sent.map((publish) => `${publish.topic}=${publish.payload.toString()}`)).toEqual(['data/fine=fine']);
    expect(broker.output).toMatch(/the retained message on "data\/retained" is damaged and is not sent: .*fails its checksum.*BROKER_ERR_STORE_CORRUPT_RECORD/);

    // The damaged queue entry is reported and the session's connection closed, never sent.
    const again = await connectRaw(broker, 'victim', false);
    expect(again.connack.sessionPresent).toBe(true);
    await again.client.closed;
    expect(again.client.received.filter((packet) => packet.cmd === 'publish')).toEqual([]);
    expect(broker.output).toMatch(/victim.*fails its checksum/);
  });
});
