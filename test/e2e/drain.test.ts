import type { IPublishPacket } from 'mqtt-packet';
import { afterEach, describe, expect, it } from 'vitest';
import { startBroker, type RunningBroker } from '../helpers/in-process.js';
import { RawClient } from '../helpers/raw-client.js';
import { subscribe } from '../helpers/wait.js';

/**
 * A persistent subscriber draining a queue with a wide in-flight window, acknowledging in bursts:
 * hundreds of PUBACKs arrive in one read, are handled without waiting, and must neither stall
 * the connection nor lose or repeat a message.
 */
describe('draining a queue with a wide window', { timeout: 60_000 }, () => {
  let running: RunningBroker | undefined;
  afterEach(async () => {
    await running?.stop();
    running = undefined;
  });

  async function fill(port: number, count: number): Promise<void> {
    const { client: subscriber } = await RawClient.session(port, { clientId: 'drainer', clean: false });
    expect(await subscribe(subscriber, 1, [{ topic: 'drain/#', qos: 1 }])).toEqual([1]);
    subscriber.socket.destroy();
    await subscriber.closed;
    const { client: publisher } = await RawClient.session(port, { clientId: 'filler' });
    for (let i = 1; i <= count; i++) {
      publisher.send({ cmd: 'publish', topic: 'drain/t', payload: String(i), qos: 1, messageId: i, retain: false, dup: false });
      if (i % 500 === 0 || i === count) await publisher.take('puback', i % 500 === 0 ? 500 : count % 500);
    }
    publisher.send({ cmd: 'disconnect' });
  }

  /** Acknowledges everything received since the last call in one socket write. */
  function ackBurst(client: RawClient, publishes: IPublishPacket[]): void {
    const bytes = Buffer.concat(publishes.map((publish) => Buffer.from([0x40, 2, publish.messageId! >> 8, publish.messageId! & 0xff])));
    client.socket.write(bytes);
  }

  it('delivers 5,000 queued messages in order, each once, with 1,000 in flight and PUBACKs in bursts [MQTT-4.6.0-2]', async () => {
    running = await startBroker({ maxInflight: 1000 });
    const count = 5000;
    await fill(running.port, count);
    const { client: subscriber } = await RawClient.session(running.port, { clientId: 'drainer', clean: false });
    const payloads: string[] = [];
    while (payloads.length < count) {
      // Take whatever has arrived (at least one), then acknowledge all of it at once.
      const burst = [await subscriber.next('publish')];
      while (subscriber.received.some((packet) => packet.cmd === 'publish')) burst.push(await subscriber.next('publish'));
      for (const publish of burst) {
        expect(publish.dup).toBe(false);
        payloads.push(publish.payload.toString());
      }
      ackBurst(subscriber, burst);
    }
    expect(payloads).toEqual(Array.from({ length: count }, (_, index) => String(index + 1)));
    // Everything acknowledged is completed in the store. A reconnect waits for the session's
    // writes under way before it reads the store back, so the count is final once it is in.
    subscriber.send({ cmd: 'disconnect' });
    await subscriber.closed;
    const { client: again, connack } = await RawClient.session(running.port, { clientId: 'drainer', clean: false });
    expect(connack.sessionPresent).toBe(true);
    expect(await running.broker.sessions.lookup('drainer')!.queueStats()).toEqual({ messages: 0, bytes: 0, dropped: 0 });
    again.socket.destroy();
  });
});
