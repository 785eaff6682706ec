/**
 * Crash: the broker runs as a child process (bin/broker.js → dist/) and is killed with SIGKILL, so
 * no shutdown code runs; a new broker process then starts on the same data directory. Whatever the
 * broker acknowledged before the kill (PUBACK, PUBREC, SUBACK, UNSUBACK, and the PUBLISH/PUBREL it
 * sent, which go out only after their state is stored) must be there after the restart.
 *
 * No sleeps and no timed assertions: the kill point is chosen by counting acknowledgements, and
 * absence is shown by publishing a marker afterwards and checking that it is what arrives next.
 */
import { describe, expect, it } from 'vitest';
import type { BrokerProcess } from '../helpers/broker-process.js';
import {
  drainUntil,
  range,
  subscribe,
  summary,
  useBrokerProcesses,
  type Outgoing,
} from '../helpers/process-harness.js';
import { acknowledge, receiveAndAck } from '../helpers/wait.js';

const { freshDataDir, startBroker, connectRaw, publishAll, expectMarkerNext } = useBrokerProcesses('broker-crash-');

/** SIGKILL (no shutdown code runs), then a new broker process on the same directory. */
async function crash(broker: BrokerProcess, dataDir: string): Promise<BrokerProcess> {
  await broker.kill();
  expect((await broker.exited).signal).toBe('SIGKILL');
  return startBroker(dataDir);
}

describe('crash (SIGKILL, then a new broker process on the same data directory)', () => {
  it('500 QoS1 messages acknowledged with PUBACK for an offline persistent subscriber all arrive after SIGKILL, in order [MQTT-4.3.2-2] [MQTT-3.1.2-5] [MQTT-4.6.0-6]', async () => {
    const dataDir = freshDataDir();
    let broker = await startBroker(dataDir);
    const { client: before } = await connectRaw(broker, 'crash-bulk-sub', false);
    await subscribe(before, [['bulk/#', 1]]);
    await before.disconnect();

    const messages: Outgoing[] = range(500).map((index) => ({ topic: 'bulk/data', payload: `bulk ${index}`, qos: 1 }));
    await publishAll(broker, messages);

    broker = await crash(broker, dataDir);

    const { client: after, connack } = await connectRaw(broker, 'crash-bulk-sub', false);
    expect(connack.sessionPresent).toBe(true);
    const received = await receiveAndAck(after, messages.length);
    expect(received.map((publish) => publish.payload.toString())).toEqual(messages.map(({ payload }) => payload));
    await expectMarkerNext(broker, after, 'bulk/marker');
  });

  it('SIGKILL in the middle of a QoS1 stream: every PUBACKed message arrives, in order, as a gap-free prefix of what was sent [MQTT-4.3.2-2] [MQTT-4.6.0-6]', async () => {
    const dataDir = freshDataDir();
    let broker = await startBroker(dataDir);
    const { client: before } = await connectRaw(broker, 'crash-stream-sub', false);
    await subscribe(before, [['stream/#', 1]]);
    await before.disconnect();

    // A raw publisher keeps WINDOW messages unacknowledged at all times: every PUBACK releases the
    // next PUBLISH. The kill comes once KILL_AFTER PUBACKs arrived, with the stream still flowing.
    const WINDOW = 64;
    const KILL_AFTER = 200;
    const { client: publisher } = await connectRaw(broker, 'crash-stream-pub', true);
    let sent = 0;
    const sendNext = () => {
      const index = sent++;
      publisher.send({
        cmd: 'publish',
        topic: 'stream/data',
        payload: Buffer.from(String(index)),
        qos: 1,
        dup: false,
        retain: false,
        messageId: index + 1,
      });
    };
    for (let index = 0; index < WINDOW; index++) sendNext();
    const acknowledged = new Set<number>();
    while (acknowledged.size < KILL_AFTER) {
      const puback = await publisher.next('puback');
      acknowledged.add(puback.messageId! - 1);
      sendNext();
    }
    await broker.kill();
    await publisher.closed;
    // PUBACKs that arrived between the last one counted and the kill count as acknowledged too.
    for (const packet of publisher.received) if (packet.cmd === 'puback') acknowledged.add(packet.messageId! - 1);

    broker = await startBroker(dataDir);
    await publishAll(broker, [{ topic: 'stream/marker', payload: 'end', qos: 1 }]);
    const { client: after, connack } = await connectRaw(broker, 'crash-stream-sub', false);
    expect(connack.sessionPresent).toBe(true);
    const received = await drainUntil(after, 'stream/marker');
    const payloads = received.slice(0, -1).map((publish) => Number(publish.payload.toString()));
    const distinct = [...new Set(payloads)];
    const duplicates = payloads.length - distinct.length;
    console.log(
      `[crash stream] sent ${sent}, acknowledged ${acknowledged.size}, delivered ${payloads.length} ` +
        `(${distinct.length} distinct, ${duplicates} duplicate${duplicates === 1 ? '' : 's'})`,
    );

    // received ⊇ acknowledged
    const missing = [...acknowledged].filter((index) => !distinct.includes(index)).sort((a, b) => a - b);
    expect(missing, 'acknowledged but not delivered after the crash').toEqual([]);
    // In publish order, and a prefix of what was sent: what was stored is everything up to some point.
    expect(distinct).toEqual(range(distinct.length));
    expect(distinct.length).toBeLessThanOrEqual(sent);
    await expectMarkerNext(broker, after, 'stream/marker');
  });

  it('outbound QoS2 PUBRECs in order and out of order before SIGKILL: PUBREL for every one PUBREC\'d, the PUBLISH (DUP=1) for the one not, original packet ids and order; once completed, nothing comes back after another SIGKILL [MQTT-4.3.3-1] [MQTT-4.4.0-1] [MQTT-4.6.0-1]', async () => {
    // PUBRECs in seq order are stored as one released-through mark, an out-of-order one as a
    // record of its own (key-layout.ts): this crosses both, and the mark rising over a record.
    const dataDir = freshDataDir();
    let broker = await startBroker(dataDir);
    const { client: before } = await connectRaw(broker, 'crash-outbound-qos2', false);
    await subscribe(before, [['outrel/#', 2]]);
    const messages: Outgoing[] = range(6).map((index) => ({ topic: `outrel/${index}`, payload: `message ${index}`, qos: 2 }));
    await publishAll(broker, messages);
    const sent = await before.take('publish', 6);
    expect(sent.map(summary)).toEqual(messages.map(({ topic, payload, qos }) => ({ topic, payload, qos })));
    const id = sent.map((publish) => publish.messageId!);
    const pubrec = async (index: number) => {
      before.send({ cmd: 'pubrec', messageId: id[index]! });
      expect((await before.next('pubrel')).messageId).toBe(id[index]);
    };
    await pubrec(0);
    await pubrec(1);
    before.send({ cmd: 'pubcomp', messageId: id[0]! });
    await before.roundTrip();
    await pubrec(3); // before 2: a record of its own
    await pubrec(2); // now 0 to 3 have theirs: the mark rises over 3
    await pubrec(5); // 4 still waits: a record of its own

    broker = await crash(broker, dataDir);

    const { client: after, connack } = await connectRaw(broker, 'crash-outbound-qos2', false);
    expect(connack.sessionPresent).toBe(true);
    const resent = await after.takeOf(['publish', 'pubrel'], 5);
    const described = resent.map((packet) => (packet.cmd === 'publish' ? `publish ${packet.messageId} dup=${packet.dup} ${packet.payload.toString()}` : `pubrel ${packet.messageId}`));
    expect(described).toEqual([`pubrel ${id[1]}`, `pubrel ${id[2]}`, `pubrel ${id[3]}`, `publish ${id[4]} dup=true message 4`, `pubrel ${id[5]}`]);
    for (const index of [1, 2, 3, 5]) after.send({ cmd: 'pubcomp', messageId: id[index]! });
    after.send({ cmd: 'pubrec', messageId: id[4]! });
    expect((await after.next('pubrel')).messageId).toBe(id[4]);
    after.send({ cmd: 'pubcomp', messageId: id[4]! });
    await after.roundTrip();
    await expectMarkerNext(broker, after, 'outrel/marker');

    broker = await crash(broker, dataDir);
    const { client: third, connack: thirdConnack } = await connectRaw(broker, 'crash-outbound-qos2', false);
    expect(thirdConnack.sessionPresent).toBe(true);
    await expectMarkerNext(broker, third, 'outrel/marker');
  });

  it('inbound QoS2 PUBREC sent before SIGKILL: a re-sent PUBLISH (DUP=1) gets PUBREC, PUBREL gets PUBCOMP, delivered exactly once [MQTT-4.3.3-2] [MQTT-4.4.0-1]', async () => {
    const dataDir = freshDataDir();
    let broker = await startBroker(dataDir);
    const { client: subscriber } = await connectRaw(broker, 'crash-inbound-sub', false);
    await subscribe(subscriber, [['inbound/#', 2]]);
    await subscriber.disconnect();

    const { client: before } = await connectRaw(broker, 'crash-inbound-pub', false);
    before.send({ cmd: 'publish', topic: 'inbound/x', payload: Buffer.from('once'), qos: 2, dup: false, retain: false, messageId: 7 });
    expect((await before.next('pubrec')).messageId).toBe(7);

    broker = await crash(broker, dataDir);

    const { client: publisher, connack } = await connectRaw(broker, 'crash-inbound-pub', false);
    expect(connack.sessionPresent).toBe(true);
    publisher.send({ cmd: 'publish', topic: 'inbound/x', payload: Buffer.from('once'), qos: 2, dup: true, retain: false, messageId: 7 });
    expect((await publisher.next('pubrec')).messageId).toBe(7);
    publisher.send({ cmd: 'pubrel', messageId: 7 });
    expect((await publisher.next('pubcomp')).messageId).toBe(7);
    await publisher.disconnect();

    const { client: after, connack: subConnack } = await connectRaw(broker, 'crash-inbound-sub', false);
    expect(subConnack.sessionPresent).toBe(true);
    const received = await receiveAndAck(after, 1);
    expect(received.map(summary)).toEqual([{ topic: 'inbound/x', payload: 'once', qos: 2 }]);
    await expectMarkerNext(broker, after, 'inbound/marker');
  });

  it('SUBACKed subscriptions and UNSUBACKed unsubscriptions survive SIGKILL of a broker with the client still connected [MQTT-3.1.2-4] [MQTT-3.10.4-2]', async () => {
    const dataDir = freshDataDir();
    let broker = await startBroker(dataDir);
    const { client: before } = await connectRaw(broker, 'crash-subs', false);
    await subscribe(before, [
      ['subs/kept/+', 2],
      ['subs/gone', 1],
    ]);
    before.send({ cmd: 'unsubscribe', messageId: 2, unsubscriptions: ['subs/gone'] });
    expect((await before.next('unsuback')).messageId).toBe(2);

    broker = await crash(broker, dataDir);
    await before.closed;

    await publishAll(broker, [
      { topic: 'subs/gone', payload: 'must not arrive', qos: 1 },
      { topic: 'subs/kept/a', payload: 'kept', qos: 2 },
    ]);
    const { client: after, connack } = await connectRaw(broker, 'crash-subs', false);
    expect(connack.sessionPresent).toBe(true);
    expect((await receiveAndAck(after, 1)).map(summary)).toEqual([{ topic: 'subs/kept/a', payload: 'kept', qos: 2 }]);
    await publishAll(broker, [{ topic: 'subs/gone', payload: 'must not arrive either', qos: 1 }]);
    await expectMarkerNext(broker, after, 'subs/kept/marker');
  });

  it('a persistent session discarded by a CleanSession=1 CONNECT (CONNACK sent) stays discarded after SIGKILL [MQTT-3.1.2-6] [MQTT-3.2.2-3]', async () => {
    const dataDir = freshDataDir();
    let broker = await startBroker(dataDir);
    const { client: persistent } = await connectRaw(broker, 'crash-discarded', false);
    await subscribe(persistent, [['discard/#', 1]]);
    await persistent.disconnect();
    await publishAll(broker, [{ topic: 'discard/queued', payload: 'queued, then discarded', qos: 1 }]);
    const { connack: cleanConnack } = await connectRaw(broker, 'crash-discarded', true);
    expect(cleanConnack.sessionPresent).toBe(false);

    broker = await crash(broker, dataDir);

    await publishAll(broker, [{ topic: 'discard/new', payload: 'must not be routed', qos: 1 }]);
    const { client: after, connack } = await connectRaw(broker, 'crash-discarded', false);
    expect(connack.sessionPresent).toBe(false);
    await subscribe(after, [['marker/discard', 1]]);
    await expectMarkerNext(broker, after, 'marker/discard');
  });

  it('outbound state in flight survives SIGKILL: unacknowledged QoS1 re-sent with DUP=1 and its packet id, PUBREC\'d QoS2 gets PUBREL, PUBCOMP\'d QoS2 is gone [MQTT-4.4.0-1] [MQTT-3.3.1-1] [MQTT-4.3.3-1]', async () => {
    const dataDir = freshDataDir();
    let broker = await startBroker(dataDir);
    const { client: before } = await connectRaw(broker, 'crash-inflight', false);
    await subscribe(before, [['inflight/#', 2]]);
    await publishAll(broker, [
      { topic: 'inflight/completed', payload: 'qos2 completed', qos: 2 },
      { topic: 'inflight/unacked', payload: 'qos1 unacked', qos: 1 },
      { topic: 'inflight/released', payload: 'qos2 released', qos: 2 },
    ]);
    const [completed, unacked, released] = await before.take('publish', 3);
    expect([completed, unacked, released].map((publish) => summary(publish!))).toEqual([
      { topic: 'inflight/completed', payload: 'qos2 completed', qos: 2 },
      { topic: 'inflight/unacked', payload: 'qos1 unacked', qos: 1 },
      { topic: 'inflight/released', payload: 'qos2 released', qos: 2 },
    ]);
    // Completed: PUBREC → PUBREL → PUBCOMP.
    await acknowledge(before, completed!);
    // Released: PUBREC → PUBREL, PUBCOMP withheld. Unacked: no PUBACK. The store applies
    // transitions in the order they are submitted, so this PUBREL (sent once its transition is
    // stored) also shows that the earlier PUBCOMP's transition is stored.
    before.send({ cmd: 'pubrec', messageId: released!.messageId! });
    expect((await before.next('pubrel')).messageId).toBe(released!.messageId);

    broker = await crash(broker, dataDir);

    const { client: after, connack } = await connectRaw(broker, 'crash-inflight', false);
    expect(connack.sessionPresent).toBe(true);
    const resent = await after.next('publish');
    expect({ ...summary(resent), dup: resent.dup, messageId: resent.messageId }).toEqual({
      ...summary(unacked!),
      dup: true,
      messageId: unacked!.messageId,
    });
    expect((await after.next('pubrel')).messageId).toBe(released!.messageId);
    after.send({ cmd: 'puback', messageId: resent.messageId! });
    after.send({ cmd: 'pubcomp', messageId: released!.messageId! });
    await after.roundTrip();
    await expectMarkerNext(broker, after, 'inflight/marker');
  });

  it('retained messages acknowledged before SIGKILL survive, and so does their clearing [MQTT-3.3.1-5] [MQTT-3.3.1-10]', async () => {
    const dataDir = freshDataDir();
    let broker = await startBroker(dataDir);
    await publishAll(broker, [
      { topic: 'ret/kept', payload: 'kept', qos: 1, retain: true },
      { topic: 'ret/cleared', payload: 'soon gone', qos: 2, retain: true },
      { topic: 'ret/cleared', payload: '', qos: 1, retain: true },
    ]);

    broker = await crash(broker, dataDir);

    const { client: subscriber } = await connectRaw(broker, 'crash-retained-sub', true);
    await subscribe(subscriber, [['ret/#', 1]]);
    await subscriber.roundTrip();
    await publishAll(broker, [{ topic: 'ret/marker', payload: 'end', qos: 1 }]);
    const received = await drainUntil(subscriber, 'ret/marker');
    expect(received.map((publish) => ({ ...summary(publish), retain: publish.retain }))).toEqual([
      { topic: 'ret/kept', payload: 'kept', qos: 1, retain: true },
      { topic: 'ret/marker', payload: 'end', qos: 1, retain: false },
    ]);
  });
});
