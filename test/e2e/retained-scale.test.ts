/**
 * Many retained messages, and big ones, against bin/broker.js as a child process: their payloads
 * live on disk, so a restart loads the index, not the bytes; and a SUBSCRIBE whose filters reach
 * many of them costs that subscriber time, not every other client.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { IPublishPacket } from 'mqtt-packet';
import type { BrokerProcess } from '../helpers/broker-process.js';
import { useBrokerProcesses } from '../helpers/process-harness.js';
import type { RawClient } from '../helpers/raw-client.js';
import { subscribe } from '../helpers/wait.js';

const { freshDataDir, startBroker: start, connectRaw } = useBrokerProcesses('broker-retained-scale-');

async function connect(broker: BrokerProcess, clientId: string): Promise<RawClient> {
  return (await connectRaw(broker, clientId, true)).client;
}

/** Anonymous memory of a process (the heap and the native allocations: not the file pages LevelDB maps), in bytes. */
function anonymousMemory(pid: number): number {
  const match = /^RssAnon:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!match) throw new Error(`no RssAnon for ${pid}`);
  return Number(match[1]) * 1024;
}

/** Publishes retained QoS 1 messages, pipelined, and waits until every one is acknowledged (so stored). */
async function publishRetained(client: RawClient, messages: Array<{ topic: string; payload: Buffer }>): Promise<void> {
  const window = 200;
  for (let start = 0; start < messages.length; start += window) {
    const slice = messages.slice(start, start + window);
    slice.forEach(({ topic, payload }, index) => {
      client.send({ cmd: 'publish', topic, payload, qos: 1, retain: true, dup: false, messageId: index + 1 });
    });
    await client.take('puback', slice.length);
  }
}

const MiB = 1024 * 1024;

describe('retained messages at scale', { timeout: 120_000 }, () => {
  it('a restart loads their index, not their payloads: the memory after a restart does not grow with the retained bytes', async () => {
    const dataDir = freshDataDir();
    const fresh = await start(dataDir);
    const idle = anonymousMemory(fresh.child.pid!);
    const publisher = await connect(fresh, 'publisher');
    const count = 64;
    const size = 1_000_000;
    await publishRetained(
      publisher,
      Array.from({ length: count }, (_, index) => ({ topic: `big/${index}`, payload: randomBytes(size) })),
    );
    await publisher.disconnect();
    expect((await fresh.stop()).code).toBe(0);

    const restarted = await start(dataDir);
    expect(restarted.output).toContain(`restored 0 persistent sessions and ${count} retained messages`);
    const afterRestart = anonymousMemory(restarted.child.pid!);
    // 61 MB of payloads in the store; holding them would show as that much more memory at least.
    expect(afterRestart - idle).toBeLessThan(24 * MiB);

    // They are all still there, read from the store when a subscription matches them (one at a
    // time: QoS 0 messages for a client with more than 1 MiB unread are dropped, by design).
    const reader = await connect(restarted, 'reader');
    for (let index = 0; index < count; index++) {
      await subscribe(reader, index + 1, [{ topic: `big/${index}`, qos: 0 }]);
      const publish = await reader.next('publish');
      expect([publish.topic, publish.retain, publish.payload.length]).toEqual([`big/${index}`, true, size]);
    }
  });

  it('a SUBSCRIBE of many wildcard filters over many retained messages does not hold up another client', async () => {
    const dataDir = freshDataDir();
    const broker = await start(dataDir);
    const publisher = await connect(broker, 'publisher');
    const count = 5000;
    await publishRetained(publisher, [
      ...Array.from({ length: count }, (_, index) => ({ topic: `fleet/device-${index}/state`, payload: Buffer.from('on') })),
      { topic: 'marker/last', payload: Buffer.from('last') },
    ]);
    await publisher.disconnect();

    const bystander = await connect(broker, 'bystander');
    const wide = await connect(broker, 'wide');
    // 999 filters that each reach every device and match nothing, then one that matches the marker:
    // the marker is sent once the broker has gone through all the others.
    const filters = Array.from({ length: 999 }, (_, index) => ({ topic: `fleet/+/nothing-${index}`, qos: 0 as const }));
    wide.send({ cmd: 'subscribe', messageId: 1, subscriptions: [...filters, { topic: 'marker/last', qos: 0 }] });
    expect((await wide.next('suback')).granted).toHaveLength(1000);

    const order: string[] = [];
    bystander.send({ cmd: 'pingreq' });
    await Promise.all([
      bystander.next('pingresp').then(() => order.push('bystander answered')),
      wide.next('publish').then((publish: IPublishPacket) => order.push(`wide got ${publish.topic}`)),
    ]);
    expect(order).toEqual(['bystander answered', 'wide got marker/last']);
  });

  it('a persistent QoS 1 SUBSCRIBE matching many retained messages queues them in shared store batches, not one fsync each', async () => {
    const broker = await start(freshDataDir(), ['--metrics-port', '0']);
    const metricsPort = Number(/metrics and health on http:\/\/127\.0\.0\.1:(\d+)\/metrics/.exec(broker.output)![1]);
    const syncs = async () => {
      const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      return Number(/^mqtt_store_syncs_total (\d+)$/m.exec(text)![1]);
    };
    const count = 2_000;
    const publisher = await connect(broker, 'publisher');
    await publishRetained(
      publisher,
      Array.from({ length: count }, (_, index) => ({ topic: `wide/${index}`, payload: Buffer.from(`r${index}`) })),
    );
    const before = await syncs();
    const subscriber = (await connectRaw(broker, 'wide-subscriber', false)).client;
    expect(await subscribe(subscriber, 1, [{ topic: 'wide/#', qos: 1 }])).toEqual([1]);
    // Packets of one connection are handled in order: PINGRESP comes once the SUBSCRIBE, its
    // retained messages queued, is done. They were queued one store write (and fsync) each,
    // which held the client's own acknowledgements back for as many fsyncs.
    subscriber.send({ cmd: 'pingreq' });
    await subscriber.next('pingresp');
    const queued = (await syncs()) - before;
    expect(queued).toBeGreaterThan(0);
    expect(queued).toBeLessThan(count / 10);
  });
});
