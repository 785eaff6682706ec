/**
 * Packets that begin to arrive and never finish (issue 12, item 5): many clients with keepalive 0,
 * each leaving a large PUBLISH unfinished, made the broker hold their sum with nothing timing out.
 * Now max_unfinished_packet_bytes bounds the bytes of unfinished packets across all connections
 * (the connection whose bytes would take the total over it is closed), and packet_timeout_ms
 * closes a connection whose packet has not finished arriving in time, keepalive 0 or not.
 *
 * Limits are configured small so each case runs in seconds; memory is measured by counting the
 * Buffers alive in this process (the broker runs in it) after a full GC. Closes are waited for as
 * events; the only waits are the streaming publisher's pauses, which make time pass, and no
 * assertion is about how long anything took.
 */
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import mqttPacket from 'mqtt-packet';
import { afterEach, describe, expect, it } from 'vitest';
import { runBroker } from '../helpers/broker-process.js';
import { startBroker, type RunningBroker } from '../helpers/in-process.js';
import { RawClient } from '../helpers/raw-client.js';
import { liveBufferBytes, LogLines, MiB } from './hardening-helpers.js';

const KiB = 1024;

let running: RunningBroker | undefined;
const clients: RawClient[] = [];
afterEach(async () => {
  await Promise.all(clients.splice(0).map((client) => client.close()));
  await running?.stop();
  running = undefined;
});

async function connected(port: number, clientId: string): Promise<RawClient> {
  const { client, connack } = await RawClient.session(port, { clientId, keepalive: 0 });
  clients.push(client);
  expect(connack.returnCode).toBe(0);
  return client;
}

/** A QoS 1 PUBLISH of `size` bytes in all, to send in parts. */
function publishOfSize(size: number, messageId: number): Buffer {
  const header = mqttPacket.generate({ cmd: 'publish', topic: 'u', payload: Buffer.alloc(0), qos: 1, messageId, retain: false, dup: false });
  // The remaining length takes more bytes as the payload grows: settle on the payload that fits.
  for (let payload = size - header.length; payload > 0; payload--) {
    const bytes = mqttPacket.generate({ cmd: 'publish', topic: 'u', payload: Buffer.alloc(payload, 0x75), qos: 1, messageId, retain: false, dup: false });
    if (bytes.length === size) return bytes;
  }
  throw new Error(`no PUBLISH of ${size} bytes`);
}

/** Writes and waits until the kernel took it: the broker can read it from then on. */
async function writeAll(client: RawClient, bytes: Buffer): Promise<void> {
  if (!client.socket.write(bytes)) await once(client.socket, 'drain');
}

/** PINGREQs answered on another connection: each one after the broker ran its loop, reading every socket with bytes waiting. */
async function fence(port: number): Promise<void> {
  const other = await connected(port, `fence-${clients.length}`);
  for (let round = 0; round < 16; round++) await other.roundTrip();
}

describe('max_unfinished_packet_bytes: bytes of packets still arriving, across all connections', () => {
  it('closes the connection whose bytes would take the total over it; the others finish their packets and are acknowledged', async () => {
    const log = new LogLines();
    running = await startBroker({ log, maxPacketSize: 256 * KiB, maxUnfinishedPacketBytes: 256 * KiB });
    const { port } = running;
    // Seven clients each leave 40 KiB of a 41 KiB PUBLISH unfinished: six of them fit (240 KiB), seven do not.
    const holders = await Promise.all(Array.from({ length: 7 }, (_, index) => connected(port, `holder-${index}`)));
    const packets = holders.map((_, index) => publishOfSize(41 * KiB, index + 1));
    await Promise.all(holders.map((client, index) => writeAll(client, packets[index]!.subarray(0, 40 * KiB))));

    // Exactly one is closed, whichever's bytes came last; closing it gave its bytes back.
    const firstClosed = await Promise.race(holders.map((client) => client.closed.then(() => client)));
    await fence(port);
    const closed = holders.filter((client) => client.isClosed);
    expect(closed).toEqual([firstClosed]);
    expect(log.matching(/packets still arriving would hold more than max_unfinished_packet_bytes \(262144\) across all connections; closing this one/)).toHaveLength(1);

    // The others finish their PUBLISH and get its PUBACK [MQTT-4.3.2-4].
    const open = holders.filter((client) => !client.isClosed);
    await Promise.all(
      open.map(async (client) => {
        const index = holders.indexOf(client);
        await writeAll(client, packets[index]!.subarray(40 * KiB));
        expect((await client.next('puback')).messageId).toBe(index + 1);
      }),
    );

    // Finished packets gave their bytes back: one client may now hold nearly the whole budget.
    const large = await connected(port, 'large');
    const packet = publishOfSize(256 * KiB, 99);
    await writeAll(large, packet.subarray(0, 250 * KiB));
    await fence(port);
    await writeAll(large, packet.subarray(250 * KiB));
    expect((await large.next('puback')).messageId).toBe(99);
  });

  it('200 clients with keepalive 0 each leaving 200 KiB unfinished: the broker holds no more than the budget, and says so in one line', async () => {
    const log = new LogLines();
    const budget = 2 * MiB;
    running = await startBroker({ log, maxPacketSize: 256 * KiB, maxUnfinishedPacketBytes: budget });
    const { port } = running;
    const holders = await Promise.all(Array.from({ length: 200 }, (_, index) => connected(port, `many-${index}`)));
    const before = liveBufferBytes();

    // Without the budget: 40 MiB held, nothing timing out.
    const partial = publishOfSize(201 * KiB, 1).subarray(0, 200 * KiB);
    await Promise.all(holders.map((client) => writeAll(client, partial)));
    await fence(port);
    const held = liveBufferBytes() - before;
    const closed = holders.filter((client) => client.isClosed).length;
    console.log(`200 clients × 200 KiB unfinished: ${closed} closed; Buffers held ${(held / MiB).toFixed(2)} MiB`);
    expect(held).toBeLessThan(budget + MiB);
    // At most ten hold 200 KiB within the budget; the others were closed.
    expect(closed).toBeGreaterThanOrEqual(190);
    // One line at once; the rest of them counted for the interval's summary (issue 12, item 7).
    expect(log.matching(/^warn .*max_unfinished_packet_bytes/)).toHaveLength(1);
    await running.stop();
    running = undefined;
    const [summary] = log.matching(/^warn unfinished packets over max_unfinished_packet_bytes, connection closed: \d+ more/);
    expect(Number(/: (\d+) more/.exec(summary!)![1])).toBe(closed - 1);
  });
});

describe('packet_timeout_ms: a packet must finish arriving in time, keepalive 0 or not', () => {
  it('closes a connection whose packet stopped half-way, or after its first byte; an idle connection stays', async () => {
    const log = new LogLines();
    running = await startBroker({ log, packetTimeoutMs: 300 });
    const { port } = running;
    // Idle since before the others began their packets: idle is no unfinished packet.
    const idle = await connected(port, 'idle');
    const halfWay = await connected(port, 'half-way');
    const firstByte = await connected(port, 'first-byte');
    halfWay.sendBytes(publishOfSize(1000, 1).subarray(0, 500));
    firstByte.sendBytes([0x30]);

    await Promise.all([halfWay.closed, firstByte.closed]);
    expect(halfWay.received.filter((packet) => packet.cmd === 'puback')).toEqual([]);
    expect(log.matching(/a packet begun 300 ms ago is not complete \(packet_timeout_ms\); closing the connection/)).toHaveLength(1);
    // The idle one is still served.
    await idle.roundTrip();
    expect(idle.isClosed).toBe(false);
  });

  it('times each packet from its own first byte: a publisher whose writes keep ending inside a packet is not closed', async () => {
    running = await startBroker({ packetTimeoutMs: 1000 });
    const publisher = await connected(running.port, 'streaming');
    // For three times the limit, each write ends half-way through the next PUBLISH.
    const rounds = 60;
    const packets = Array.from({ length: rounds + 1 }, (_, index) => publishOfSize(200, index + 1));
    publisher.sendBytes(packets[0]!.subarray(0, 100));
    for (let index = 1; index <= rounds; index++) {
      await sleep(50);
      publisher.sendBytes(Buffer.concat([packets[index - 1]!.subarray(100), packets[index]!.subarray(0, 100)]));
    }
    publisher.sendBytes(packets[rounds]!.subarray(100));
    const pubacks = await publisher.take('puback', rounds + 1);
    expect(pubacks.map((puback) => puback.messageId)).toEqual(packets.map((_, index) => index + 1));
    expect(publisher.isClosed).toBe(false);
  });
});

describe('the new limits in a config file (broker --check-config)', () => {
  it('takes max_unfinished_packet_bytes, packet_timeout_ms and max_unsent_bytes; a budget below max_packet_size is refused, a budget left out grows with it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'broker-unfinished-config-'));
    try {
      const check = (name: string, limits: string) => {
        const file = join(dir, name);
        writeFileSync(file, `limits:\n${limits}`);
        return runBroker(['--check-config', file]).then(({ code, output }) => ({ code, output: output.trim(), file }));
      };
      const valid = await check('valid.yaml', '  max_unfinished_packet_bytes: 4194304\n  packet_timeout_ms: 5000\n  max_unsent_bytes: 65536\n');
      expect(valid).toEqual({ code: 0, output: `${valid.file}: valid`, file: valid.file });
      // Only max_packet_size, above the budget's default: the budget follows it.
      const grown = await check('grown.yaml', '  max_packet_size: 134217728\n');
      expect(grown.code, grown.output).toBe(0);

      const below = await check('below.yaml', '  max_packet_size: 2097152\n  max_unfinished_packet_bytes: 1048576\n');
      expect(below.code).toBe(1);
      expect(below.output).toContain('max_unfinished_packet_bytes (maxUnfinishedPacketBytes, 1048576) must be at least max_packet_size (2097152)');
      const zero = await check('zero.yaml', '  packet_timeout_ms: 0\n  max_unsent_bytes: 0\n');
      expect(zero.code).toBe(1);
      expect(zero.output).toContain('limits.packet_timeout_ms');
      expect(zero.output).toContain('limits.max_unsent_bytes');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
