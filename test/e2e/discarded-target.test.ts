/**
 * A subscriber's clean session ends while a message routed to it is on its way to its queue. Over
 * real TCP with raw clients, against a broker on a real LevelDB store whose writes the test holds
 * (DiskFaults), so the window is opened by construction, not by timing:
 *
 * 1. The PUBLISH (or will) is routed; its write for a persistent subscriber is held. Meanwhile the
 *    shared group's chosen member, a clean session, is taken over: its share must go to the
 *    group's persistent member once the clean subscribers' part is queued.
 * 2. That hand-over's write is held in turn; meanwhile a clean subscriber's session is taken over
 *    by a persistent session of its client id.
 *
 * The discarded sessions get nothing [MQTT-3.1.2-6]; everyone else gets the message, the publisher
 * its PUBACK once stored [MQTT-4.3.2-2]. The publication once failed whole here: the broker logged a
 * store error, withheld the PUBACK and closed the publisher's connection, or did not publish the will.
 * A new connection with the same client id is what waits for a session to be discarded: operations
 * on one client id run one at a time, so its CONNACK comes once the earlier session is gone.
 */
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createBroker } from '../../src/server/broker.js';
import { LevelRepository } from '../../src/store/level-repository.js';
import { makeDataDir, removeDataDir } from '../helpers/broker-process.js';
import { DiskFaults, touches } from '../helpers/disk-faults.js';
import type { RawClient } from '../helpers/raw-client.js';
import { Clients, publishQos1, receiveAndAck, subscribe, summary } from '../helpers/wait.js';

const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function brokerWithHeldWrites() {
  const dataDir = makeDataDir('broker-discarded-target-');
  cleanups.push(() => removeDataDir(dataDir));
  const faults = new DiskFaults();
  const errors: string[] = [];
  const repository = new LevelRepository({ location: join(dataDir, 'store'), instrument: faults.instrument });
  const log = { info() {}, warn() {}, error: (message: string) => errors.push(message) };
  const broker = createBroker({ host: '127.0.0.1', port: 0, dataDir, repository, admin: false, log });
  const { port } = await broker.listen();
  cleanups.push(() => broker.close());
  const clients = new Clients(port);
  cleanups.push(() => clients.closeAll());

  // The shared group: a persistent member, away, and a clean one, connected, so chosen first.
  const spare = await clients.rawAccepted({ clientId: 'spare', clean: false });
  expect(await subscribe(spare, 1, [{ topic: '$share/g/race/t', qos: 1 }])).toEqual([1]);
  await spare.disconnect();
  const member = await clients.rawAccepted({ clientId: 'member' });
  expect(await subscribe(member, 1, [{ topic: '$share/g/race/t', qos: 1 }])).toEqual([1]);
  // Plain subscribers: a persistent one (its queue is the write held first), a clean one whose
  // session is taken over, and a clean one that stays.
  const durable = await clients.rawAccepted({ clientId: 'durable', clean: false });
  expect(await subscribe(durable, 1, [{ topic: 'race/t', qos: 1 }])).toEqual([1]);
  const leaving = await clients.rawAccepted({ clientId: 'leaving' });
  expect(await subscribe(leaving, 1, [{ topic: 'race/t', qos: 1 }])).toEqual([1]);
  const staying = await clients.rawAccepted({ clientId: 'staying' });
  expect(await subscribe(staying, 1, [{ topic: 'race/t', qos: 1 }])).toEqual([1]);

  /**
   * Runs the two held windows around a message being routed by `route` (which returns once it is
   * sent): the chosen member's session is taken over by a clean one while the routed write is
   * held, and the leaving subscriber's by a persistent one while the hand-over's write is held.
   * Returns the clients that took over.
   */
  async function race(route: () => Promise<void>): Promise<{ memberAgain: RawClient; leavingAgain: RawClient }> {
    const routed = faults.hold(touches('q', 'durable'));
    await route();
    await routed.reached;
    const memberAgain = await clients.rawAccepted({ clientId: 'member' });
    routed.release();
    // Set at once: the hand-over's write comes only after the released one has landed.
    const handedOn = faults.hold(touches('q', 'spare'));
    await handedOn.reached;
    // A persistent session's CONNACK waits for its store write, behind the held one; the session it
    // takes over is discarded as its connection is ended, before anything of the new one is written.
    const leavingAgain = await clients.socket();
    leavingAgain.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'leaving', clean: false, keepalive: 0 });
    await leaving.closed;
    handedOn.release();
    expect((await leavingAgain.next('connack')).returnCode).toBe(0);
    return { memberAgain, leavingAgain };
  }

  /** What a client got up to the marker PUBLISH on race/t, acknowledged: later than everything before it. */
  async function upToMarker(client: RawClient): Promise<string[]> {
    const received: string[] = [];
    for (;;) {
      const [publish] = await receiveAndAck(client, 1);
      if (publish!.payload.toString() === 'marker') return received;
      received.push(summary(publish!));
    }
  }

  /**
   * After the race: the message, as `sent` (topic=payload), reached the subscribers that stayed,
   * each once and before a marker published now, and the shared group's persistent member, queued
   * for its return; the sessions that took over, which subscribed to nothing, got neither; and the
   * broker logged no error.
   */
  async function expectOnlyTheOthersGotIt(publisher: RawClient, sent: string, { memberAgain, leavingAgain }: Awaited<ReturnType<typeof race>>) {
    await publishQos1(publisher, 8, 'race/t', 'marker');
    expect(await upToMarker(durable)).toEqual([sent]);
    expect(await upToMarker(staying)).toEqual([sent]);
    await memberAgain.roundTrip();
    await leavingAgain.roundTrip();
    expect(memberAgain.received).toEqual([]);
    expect(leavingAgain.received).toEqual([]);
    const spare = await clients.rawAccepted({ clientId: 'spare', clean: false });
    expect((await receiveAndAck(spare, 1)).map(summary)).toEqual([sent]);
    expect(errors).toEqual([]);
  }

  return { clients, member, race, expectOnlyTheOthersGotIt };
}

describe('a target session discarded between routing and queueing', () => {
  it('a QoS 1 PUBLISH still reaches every other subscriber, and the publisher gets its PUBACK', async () => {
    const { clients, member, race, expectOnlyTheOthersGotIt } = await brokerWithHeldWrites();
    const publisher = await clients.raw5Accepted({ clientId: 'publisher' });

    const takenOver = await race(async () => {
      publisher.send({ cmd: 'publish', topic: 'race/t', payload: Buffer.from('job'), qos: 1, messageId: 7, retain: false, dup: false });
    });

    const puback = await publisher.next('puback');
    expect(puback.messageId).toBe(7);
    expect(puback.reasonCode ?? 0).toBe(0);
    // The connection taken over first was closed; the publisher's is not.
    await member.closed;
    expect(publisher.isClosed).toBe(false);
    await expectOnlyTheOthersGotIt(publisher, 'race/t=job', takenOver);
  });

  it('a will is still published to every other subscriber', async () => {
    const { clients, race, expectOnlyTheOthersGotIt } = await brokerWithHeldWrites();
    const dying = await clients.rawAccepted({
      clientId: 'dying',
      will: { topic: 'race/t', payload: Buffer.from('last words'), qos: 1, retain: false },
    });

    const takenOver = await race(async () => {
      // The connection is lost without DISCONNECT: the will is published [MQTT-3.1.2-8].
      dying.socket.destroy();
    });

    const publisher = await clients.rawAccepted({ clientId: 'publisher' });
    await expectOnlyTheOthersGotIt(publisher, 'race/t=last words', takenOver);
  });
});
