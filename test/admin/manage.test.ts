/**
 * broker-admin session drop, retained clear and compact, on a running broker (through its admin
 * socket: the SessionManager ends the connection, memory and store agree) and on a stopped store
 * (through LevelRepository transitions). verify passes after each.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { BrokerProcess } from '../helpers/broker-process.js';
import { connect, ofType, records, runAdmin, setUp, stopBroker, storeContents, tearDown, type Fixture } from './fixture.js';

afterEach(tearDown);

async function sessions(fixture: Fixture): Promise<Array<Record<string, unknown>>> {
  return ofType(await runAdmin(['sessions', '--data', fixture.dataDir, '--json']), 'session');
}

async function expectVerifies(fixture: Fixture): Promise<void> {
  const run = await runAdmin(['verify', '--data', fixture.dataDir, '--json']);
  expect(run.code, run.stdout + run.stderr).toBe(0);
}

describe('broker-admin session drop', { timeout: 120_000 }, () => {
  it('of an online session on a running broker: its connection is closed, its state is gone, other sessions are untouched', async () => {
    const fixture = await setUp();
    const before = await sessions(fixture);

    const run = await runAdmin(['session', 'drop', 'sub-inflight', '--data', fixture.dataDir, '--json']);
    expect(run.code, run.stderr).toBe(0);
    expect(records(run).slice(1)).toEqual([{ type: 'dropped', clientId: 'sub-inflight', wasConnected: true }]);
    await fixture.inflight.closed;

    const after = await sessions(fixture);
    expect(after).toEqual(before.filter((session) => session.clientId !== 'sub-inflight'));
    await expectVerifies(fixture);
    // The other connected clients still work.
    await fixture.publisher.roundTrip();
    await fixture.watcher.roundTrip();

    // Nothing is left to resume: the client starts afresh, and messages are no longer routed to it.
    const again = await connect(fixture.broker, 'sub-inflight', false);
    again.send({ cmd: 'pingreq' });
    await again.next('pingresp');
    expect(again.received).toEqual([]);
    again.socket.destroy();

    // And the readable form says what happened.
    const readable = await runAdmin(['session', 'drop', 'sub-offline', '--data', fixture.dataDir]);
    expect(readable.code).toBe(0);
    expect(readable.stdout).toBe('dropped the session of "sub-offline"\n');
  });

  it('on a stopped store: through the repository, so counts and bodies stay consistent', async () => {
    const fixture = await setUp();
    await stopBroker(fixture);
    const before = await sessions(fixture);
    const run = await runAdmin(['session', 'drop', 'sub-offline', '--data', fixture.dataDir, '--json']);
    expect(run.code, run.stderr).toBe(0);
    expect(ofType(run, 'dropped')).toEqual([{ type: 'dropped', clientId: 'sub-offline', wasConnected: false }]);
    expect(await sessions(fixture)).toEqual(before.filter((session) => session.clientId !== 'sub-offline'));
    await expectVerifies(fixture);
    // Shared bodies are now referenced once (by sub-inflight): still stored.
    const totals = ofType(await runAdmin(['stats', '--data', fixture.dataDir, '--json']), 'totals')[0];
    expect(totals).toMatchObject({ sessions: 2, queued: 3, sharedBodies: 3 });
  });
});

describe('broker-admin retained clear', { timeout: 120_000 }, () => {
  it('on a running broker: gone from the store and from memory (a new subscriber does not get it)', async () => {
    const fixture = await setUp();
    const run = await runAdmin(['retained', 'clear', 'status/gw', '--data', fixture.dataDir, '--json']);
    expect(run.code, run.stderr).toBe(0);
    expect(ofType(run, 'retained-cleared')).toEqual([{ type: 'retained-cleared', topic: 'status/gw' }]);
    expect(ofType(await runAdmin(['retained', 'list', '--data', fixture.dataDir, '--json']), 'retained').map((r) => r.topic)).toEqual(['bin/blob']);

    const subscriber = await connect(fixture.broker, 'late-subscriber', true);
    subscriber.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: '#', qos: 1 }] });
    await subscriber.next('suback');
    await subscriber.roundTrip();
    const retained = subscriber.received.filter((packet) => packet.cmd === 'publish').map((packet) => (packet as { topic: string }).topic);
    expect(retained).toEqual(['bin/blob']);
    subscriber.socket.destroy();
    await expectVerifies(fixture);
  });

  it('on a stopped store: gone after a restart too', async () => {
    const fixture = await setUp();
    await stopBroker(fixture);
    const run = await runAdmin(['retained', 'clear', 'bin/blob', '--data', fixture.dataDir]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toBe('cleared the retained message of "bin/blob"\n');
    await expectVerifies(fixture);

    fixture.broker = await BrokerProcess.start(fixture.dataDir);
    const subscriber = await connect(fixture.broker, 'late-subscriber', true);
    subscriber.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: '#', qos: 1 }] });
    await subscriber.next('suback');
    await subscriber.roundTrip();
    expect(subscriber.received.filter((packet) => packet.cmd === 'publish').map((packet) => (packet as { topic: string }).topic)).toEqual([
      'status/gw',
    ]);
    subscriber.socket.destroy();
  });
});

describe('broker-admin compact', { timeout: 120_000 }, () => {
  it('compacts the store, stopped and running, without changing its contents', async () => {
    const fixture = await setUp();
    const running = await runAdmin(['compact', '--data', fixture.dataDir, '--json']);
    expect(running.code, running.stderr).toBe(0);
    expect(ofType(running, 'compacted')).toEqual([
      { type: 'compacted', diskBytesBefore: expect.any(Number), diskBytesAfter: expect.any(Number) },
    ]);
    await stopBroker(fixture);
    const store = `${fixture.dataDir}/store`;
    const before = await storeContents(store);
    const stopped = await runAdmin(['compact', '--data', fixture.dataDir]);
    expect(stopped.code, stopped.stderr).toBe(0);
    expect(stopped.stdout).toMatch(/^compacted: about .+ on disk before, .+ after\n$/);
    expect(await storeContents(store)).toEqual(before);
    await expectVerifies(fixture);
  });
});
