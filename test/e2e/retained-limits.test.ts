/**
 * max_retained_messages and max_retained_bytes over real TCP: beyond either, a retained message
 * is not kept (and the topic's previous one is discarded [MQTT-3.3.1-7]), but it is delivered to
 * the current subscribers and acknowledged as usual; the operator hears of it once per episode.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { IPublishPacket } from 'mqtt-packet';
import { BrokerProcess, makeDataDir, removeDataDir, runBroker } from '../helpers/broker-process.js';
import { startBroker, type RunningBroker } from '../helpers/in-process.js';
import { RawClient } from '../helpers/raw-client.js';
import { Clients, publishQos1, subscribe } from '../helpers/wait.js';

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

interface LogLine {
  level: 'info' | 'warn' | 'error';
  message: string;
}

function collectingLog(lines: LogLine[]) {
  return {
    info: (message: string) => lines.push({ level: 'info', message }),
    warn: (message: string) => lines.push({ level: 'warn', message }),
    error: (message: string) => lines.push({ level: 'error', message }),
  };
}

/** Subscribes a new clean client to `filter` and returns the retained messages it is sent, as topic=payload. */
async function retainedFor(clients: Clients, filter: string): Promise<string[]> {
  const client = await clients.rawAccepted({ clientId: `probe-${Math.random().toString(36).slice(2)}` });
  await subscribe(client, 1, [{ topic: filter, qos: 0 }]);
  // Retained messages follow the SUBACK; a round trip after them shows nothing else is coming.
  await client.roundTrip();
  const publishes = client.received.filter((packet): packet is IPublishPacket => packet.cmd === 'publish');
  expect(publishes.every((publish) => publish.retain)).toBe(true);
  await client.disconnect();
  return publishes.map((publish) => `${publish.topic}=${publish.payload.toString()}`).sort();
}

describe('retained limits', { timeout: 60_000 }, () => {
  let running: RunningBroker | undefined;
  afterEach(async () => {
    await running?.stop();
    running = undefined;
  });

  it('beyond max_retained_messages a new topic is not kept, yet delivered and acknowledged; replacing and clearing work; one warning per episode', async () => {
    const lines: LogLine[] = [];
    running = await startBroker({ maxRetainedMessages: 2, maxRetainedBytes: 1_000, log: collectingLog(lines) });
    const clients = new Clients(running.port);
    cleanup.push(() => clients.closeAll());
    const live = await clients.rawAccepted({ clientId: 'live' });
    await subscribe(live, 1, [{ topic: 'lim/#', qos: 1 }]);
    const publisher = await clients.rawAccepted({ clientId: 'publisher' });

    let id = 1;
    for (const topic of ['lim/a', 'lim/b', 'lim/c', 'lim/d']) await publishQos1(publisher, id++, topic, `${topic} v1`, true);
    // Every one reached the subscriber that was there, as a live message [MQTT-3.3.1-9].
    const delivered = await live.take('publish', 4);
    expect(delivered.map((publish) => [publish.topic, publish.retain])).toEqual([
      ['lim/a', false],
      ['lim/b', false],
      ['lim/c', false],
      ['lim/d', false],
    ]);
    for (const publish of delivered) live.send({ cmd: 'puback', messageId: publish.messageId! });
    expect(await retainedFor(clients, 'lim/#')).toEqual(['lim/a=lim/a v1', 'lim/b=lim/b v1']);
    const warnings = lines.filter(({ level, message }) => level === 'warn' && message.includes('retained'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.message).toMatch(/retained message on "lim\/c" not kept: the retained limits \(max_retained_messages, max_retained_bytes\) are reached/);

    // Replacing a topic held is kept at the limit; clearing one [MQTT-3.3.1-10] makes room.
    await publishQos1(publisher, id++, 'lim/a', 'lim/a v2', true);
    await publishQos1(publisher, id++, 'lim/b', '', true);
    await publishQos1(publisher, id++, 'lim/e', 'lim/e v1', true);
    expect(await retainedFor(clients, 'lim/#')).toEqual(['lim/a=lim/a v2', 'lim/e=lim/e v1']);
    expect(lines.filter(({ message }) => message.includes('retained messages are kept again'))).toEqual([
      { level: 'info', message: 'retained messages are kept again; 2 were refused at the retained limits meanwhile' },
    ]);
  });

  it("beyond max_retained_bytes a bigger message is refused and the topic's previous one discarded [MQTT-3.3.1-7]", async () => {
    running = await startBroker({ maxRetainedBytes: 10 });
    const clients = new Clients(running.port);
    cleanup.push(() => clients.closeAll());
    const publisher = await clients.rawAccepted({ clientId: 'publisher' });
    await publishQos1(publisher, 1, 'size/a', '123456', true);
    await publishQos1(publisher, 2, 'size/b', '1234', true);
    expect(await retainedFor(clients, 'size/+')).toEqual(['size/a=123456', 'size/b=1234']);
    await publishQos1(publisher, 3, 'size/b', '12345', true);
    // A subscriber never gets a value older than the last one published: size/b has none now.
    expect(await retainedFor(clients, 'size/+')).toEqual(['size/a=123456']);
    await publishQos1(publisher, 4, 'size/b', '1234', true);
    expect(await retainedFor(clients, 'size/+')).toEqual(['size/a=123456', 'size/b=1234']);
  });

  it('the limits keys of a config file apply, and what is held counts against them after a restart', async () => {
    const dataDir = makeDataDir('broker-retained-limits-');
    cleanup.push(() => removeDataDir(dataDir));
    const config = path.join(dataDir, 'broker.json');
    fs.writeFileSync(config, JSON.stringify({ limits: { max_retained_messages: 2, max_retained_bytes: 100 } }));
    const checked = await runBroker(['--check-config', config]);
    expect(checked.code, checked.output).toBe(0);

    const start = async () => {
      const broker = await BrokerProcess.start(dataDir, ['--config', config]);
      cleanup.push(async () => {
        if (broker.child.exitCode === null && broker.child.signalCode === null) broker.child.kill('SIGKILL');
        await broker.exited;
      });
      return broker;
    };
    const publish = async (broker: BrokerProcess, topics: string[]) => {
      const { client } = await RawClient.session(broker.port, { clientId: 'publisher' });
      let id = 1;
      for (const topic of topics) await publishQos1(client, id++, topic, `of ${topic}`, true);
      await client.disconnect();
    };
    const first = await start();
    await publish(first, ['cfg/a', 'cfg/b', 'cfg/c']);
    expect((await first.stop()).code).toBe(0);
    expect(first.output).toMatch(/retained message on "cfg\/c" not kept/);

    const second = await start();
    expect(second.output).toContain('restored 0 persistent sessions and 2 retained messages');
    await publish(second, ['cfg/d']);
    const clients = new Clients(second.port);
    cleanup.push(() => clients.closeAll());
    expect(await retainedFor(clients, 'cfg/#')).toEqual(['cfg/a=of cfg/a', 'cfg/b=of cfg/b']);
    expect((await second.stop()).code).toBe(0);

    fs.writeFileSync(config, JSON.stringify({ limits: { max_retained_messages: -1 } }));
    const refused = await runBroker(['--check-config', config]);
    expect(refused.code).toBe(1);
    expect(refused.output).toMatch(/limits\.max_retained_messages/);
  });
});
