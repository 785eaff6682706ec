/**
 * Shared subscriptions where the e2e suites cannot aim: a clean member whose session ends between
 * the instant a message is routed to it and the instant it is queued (the publishing connection's
 * `deliver`). The session manager, the distributor and the routing tree are the broker's own, on
 * two real MemoryRepository instances; the channel stands in for a connection.
 */
import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/logger.js';
import { TopicTree } from '../../src/routing/topic-tree.js';
import { Distributor } from '../../src/session/distributor.js';
import { SessionManager } from '../../src/session/session-manager.js';
import type { OutboundChannel, OutgoingPublish } from '../../src/session/session.js';
import { RetainedIndex } from '../../src/routing/retained-index.js';
import { MemoryRepository } from '../../src/store/memory-repository.js';

class RecordingChannel implements OutboundChannel {
  readonly published: OutgoingPublish[] = [];
  publish(packet: OutgoingPublish): void {
    this.published.push(packet);
  }
  pubrel(): void {}
  end(): void {}
}

describe('shared subscriptions: a clean member ending while a message is on its way to it', () => {
  it('the message goes to another member when it is queued, not to the ended session (MQTT 5.0 4.8.2)', async () => {
    const durable = new MemoryRepository();
    const volatile = new MemoryRepository();
    await durable.open();
    await volatile.open();
    const subscriptions = new TopicTree();
    const limits = { maxInflight: 10, readWindow: 100, readWindowBytes: 1_000_000 };
    // Made after the manager, which calls it only once sessions end.
    let distributor: Distributor;
    const sessions = new SessionManager({
      durable,
      volatile,
      subscriptions,
      policy: { limits },
      handOver: (session, filters) => distributor.handOver(session, filters),
      log: silentLogger,
    });
    distributor = new Distributor({ lookup: (clientId) => sessions.lookup(clientId), subscriptions, retained: new RetainedIndex(), durable, volatile });

    // The persistent member, away; the clean member, connected (so it is chosen).
    const spareChannel = new RecordingChannel();
    const spare = await sessions.start('spare', { cleanStart: false, expiry: 3600 }, spareChannel);
    await sessions.subscribe(spare.session, [{ filter: '$share/g/t', qos: 1 }], spareChannel);
    await sessions.close(spare.session, spareChannel);
    const cleanChannel = new RecordingChannel();
    const clean = await sessions.start('clean', { cleanStart: true, expiry: 0 }, cleanChannel);
    await sessions.subscribe(clean.session, [{ filter: '$share/g/t', qos: 1 }], cleanChannel);

    const publication = distributor.route({ topic: 't', payload: Buffer.from('job'), qos: 1 }, { retain: false });
    await publication.stored;
    // The clean member's connection ends now: its session is discarded and its (empty) queue handed over.
    await sessions.close(clean.session, cleanChannel);
    expect(await publication.deliver()).toBe('delivered');

    expect(cleanChannel.published).toEqual([]);
    const queued = await durable.readOutbound('spare', 0, 10);
    expect(queued.map((entry) => [entry.message.payload.toString(), entry.qos, entry.shared])).toEqual([['job', 1, ['$share/g/t']]]);
  });
});
