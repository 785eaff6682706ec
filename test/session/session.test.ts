import { setImmediate as turn } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/logger.js';
import { Session, type OutboundChannel, type OutgoingPublish } from '../../src/session/session.js';
import { MemoryRepository } from '../../src/store/memory-repository.js';

/** A connection stand-in that records what the session hands it. */
class RecordingChannel implements OutboundChannel {
  readonly published: OutgoingPublish[] = [];
  readonly pubrels: number[] = [];
  publish(packet: OutgoingPublish): void {
    this.published.push(packet);
  }
  pubrel(packetId: number): void {
    this.pubrels.push(packetId);
  }
  end(): void {}
}

describe('Session and its outbound flow', () => {
  it('holds back an entry whose packet id is still in flight 65,535 seqs earlier, and sends it once that one is acknowledged [MQTT-2.3.1-2]', async () => {
    const repository = new MemoryRepository({ limits: { maxMessages: 100_000, maxBytes: 100_000_000 } });
    await repository.open();
    await repository.createSession('s');
    const count = 65_537;
    for (let index = 1; index <= count; index++) {
      await repository.publish({ message: { topic: 't', payload: Buffer.from(String(index)), qos: 1 }, deliveries: [{ clientId: 's', qos: 1, retain: false }] });
    }
    const session = new Session('s', false, repository, { limits: { maxInflight: 2, readWindow: 1000, readWindowBytes: 1_000_000 } }, silentLogger);
    const channel = new RecordingChannel();
    const link = session.link(channel);
    await session.resume(link);

    // Everything but the first message is acknowledged as soon as it arrives.
    let acknowledged = 0;
    for (;;) {
      await turn();
      const fresh = channel.published.slice(1 + acknowledged);
      if (fresh.length === 0) break;
      for (const publish of fresh) link.outbound.acknowledge(publish.packetId!);
      acknowledged += fresh.length;
    }
    // Seq 65,536 would take packet id 1, still held by seq 1: it waits.
    expect(channel.published).toHaveLength(65_535);
    expect(channel.published[0]!.packetId).toBe(1);
    expect(channel.published[65_534]!.packetId).toBe(65_535);

    link.outbound.acknowledge(1);
    await turn();
    await turn();
    expect(channel.published.slice(65_535).map((publish) => [publish.packetId, publish.payload.toString()])).toEqual([
      [1, '65536'],
      [2, '65537'],
    ]);
  });

  it('a PUBREC handled after the connection was unlinked stores nothing: the entry stays sent, so the next connection sends the PUBLISH again [MQTT-4.4.0-1]', async () => {
    const repository = new MemoryRepository();
    await repository.open();
    await repository.createSession('s');
    await repository.publish({ message: { topic: 't', payload: Buffer.from('m'), qos: 2 }, deliveries: [{ clientId: 's', qos: 2, retain: false }] });
    const session = new Session('s', false, repository, { limits: { maxInflight: 10, readWindow: 10, readWindowBytes: 1_000_000 } }, silentLogger);
    const channel = new RecordingChannel();
    const link = session.link(channel);
    await session.resume(link);
    await turn();
    expect(channel.published.map((publish) => publish.qos)).toEqual([2]);

    // The session is discarded or taken over: its flow is closed first, and the store may be told
    // to trust no entry that flow holds.
    session.unlink(channel);
    link.outbound.received(channel.published[0]!.packetId!);
    // Past the tick in which the PUBRECs of a socket read would be stored together.
    await turn();
    await session.settled();
    expect(channel.pubrels).toEqual([]);
    expect((await repository.readOutbound('s', 0, 10)).map((entry) => entry.state)).toEqual(['dup']);
  });

  it('a PUBACK or PUBCOMP handled after the connection was unlinked stores nothing: the next connection holds the same entries, and the store trusts their handles [MQTT-4.4.0-1]', async () => {
    const repository = new MemoryRepository();
    await repository.open();
    await repository.createSession('s');
    for (const qos of [1, 2] as const) {
      await repository.publish({ message: { topic: 't', payload: Buffer.from(`qos ${qos}`), qos }, deliveries: [{ clientId: 's', qos, retain: false }] });
    }
    const session = new Session('s', false, repository, { limits: { maxInflight: 10, readWindow: 10, readWindowBytes: 1_000_000 } }, silentLogger);
    const channel = new RecordingChannel();
    const link = session.link(channel);
    await session.resume(link);
    await turn();
    const [first, second] = channel.published.map((publish) => publish.packetId!);
    link.outbound.received(second!);
    await turn();
    await session.settled();
    expect(channel.pubrels).toEqual([second]);

    session.unlink(channel);
    link.outbound.acknowledge(first!);
    link.outbound.completed(second!);
    await turn();
    await session.settled();
    expect((await repository.readOutbound('s', 0, 10)).map((entry) => entry.state)).toEqual(['dup', 'released']);
  });
});
