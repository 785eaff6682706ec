/**
 * What operators see of a bridge: `broker-admin bridges` on the running gateway (state, last
 * error, the out queue, counters) and on its stopped store, the bridge's queue in `session show`,
 * `verify` over it, and the out queue's own limits (max_queued_messages).
 */
import { describe, expect, it } from 'vitest';
import { ofType, runAdmin } from '../admin/fixture.js';
import { receiveAndAck } from '../helpers/wait.js';
import { bridgeConfig, freePort, publishAll, subscriber, summaries, useBridgeHarness } from './harness.js';

const harness = useBridgeHarness();

describe('operators see the bridge', () => {
  it('bridges, session show and verify, running and stopped; the out queue keeps its own limits', async () => {
    const dataDir = harness.freshDir();
    const nowhere = await freePort();
    const gateway = await harness.startGateway(dataDir, [bridgeConfig(nowhere, [{ pattern: 'sensors/#', qos: 1 }], { max_queued_messages: 2 })]);
    await gateway.waitFor(/bridge cloud: cannot connect/);
    const device = await subscriber(gateway.port, 'device', [{ topic: 'sensors/#', qos: 1 }]);
    const messages = ['a', 'b', 'c'].map((payload) => ({ topic: 'sensors/t', payload, qos: 1 as const }));
    await publishAll(gateway.port, messages);
    // The bridge's queue is full after two; the third still reaches every other subscriber.
    expect(summaries(await receiveAndAck(device, 3))).toEqual(messages);
    await device.close();

    const running = await runAdmin(['bridges', '--json', '--data', dataDir]);
    expect(running.code, running.stderr).toBe(0);
    const [bridge] = ofType<Record<string, unknown>>(running, 'bridge');
    expect(bridge).toMatchObject({
      name: 'cloud',
      session: '$bridge/cloud',
      clientId: 'gw-17',
      address: `mqtt://127.0.0.1:${nowhere}`,
      queued: { count: 2, bytes: 2 },
      dropped: 1,
      inflight: 0,
      forwarded: 0,
      received: 0,
    });
    expect(['waiting', 'connecting']).toContain(bridge!.state);
    expect(bridge!.lastError).toMatch(/ECONNREFUSED/);
    expect(gateway.log()).toMatch(/session "\$bridge\/cloud": queue full, new messages for it are dropped/);

    const human = await runAdmin(['bridges', '--data', dataDir]);
    expect(human.stdout).toMatch(/^Bridges\nNAME +ADDRESS +STATE +LAST ERROR +QUEUED +BYTES +DROPPED +INFLIGHT +FORWARDED +RECEIVED +SESSION\n/);
    expect(human.stdout).toMatch(/cloud +mqtt:\/\/127\.0\.0\.1:\d+ +(waiting until \S+|connecting) +.*ECONNREFUSED.* +2 +2 +1 +0 +0 +0 +\$bridge\/cloud\n/);

    const shown = await runAdmin(['session', 'show', '$bridge/cloud', '--json', '--data', dataDir]);
    expect(ofType<{ topic: string; state: string }>(shown, 'message').map(({ topic, state }) => [topic, state])).toEqual([
      ['sensors/t', 'queued'],
      ['sensors/t', 'queued'],
    ]);
    expect(ofType(shown, 'session')).toMatchObject([{ clientId: '$bridge/cloud', subscriptions: [{ filter: 'sensors/#', qos: 1 }], dropped: 1 }]);

    await gateway.broker.stop();
    const stopped = await runAdmin(['bridges', '--json', '--data', dataDir]);
    expect(stopped.code, stopped.stderr).toBe(0);
    expect(ofType(stopped, 'bridge')).toEqual([
      {
        type: 'bridge',
        name: 'cloud',
        session: '$bridge/cloud',
        clientId: null,
        address: null,
        state: 'stopped',
        since: null,
        retryAt: null,
        refusedCode: null,
        lastError: null,
        queued: { count: 2, bytes: 2 },
        dropped: 1,
        inflight: 0,
        forwarded: 0,
        received: 0,
      },
    ]);
    const verify = await runAdmin(['verify', '--json', '--data', dataDir]);
    expect(ofType(verify, 'verify')).toMatchObject([{ ok: true, problems: 0 }]);
  });

  it('a bridge removed from the config: its session keeps its queue, receives nothing more, and says so', async () => {
    const dataDir = harness.freshDir();
    let gateway = await harness.startGateway(dataDir, [bridgeConfig(await freePort(), [{ pattern: 'sensors/#', qos: 1 }])]);
    await publishAll(gateway.port, [{ topic: 'sensors/t', payload: 'kept', qos: 1 }]);
    await gateway.broker.stop();
    gateway = await harness.startGateway(dataDir, []);
    await gateway.waitFor(/session "\$bridge\/cloud" belongs to a bridge that is no longer configured: .* its 1 queued messages stay/);
    await publishAll(gateway.port, [{ topic: 'sensors/t', payload: 'not queued', qos: 1 }]);
    const shown = await runAdmin(['session', 'show', '$bridge/cloud', '--json', '--data', dataDir]);
    expect(ofType(shown, 'session')).toMatchObject([{ subscriptions: [], queued: { count: 1 } }]);
  });
});
