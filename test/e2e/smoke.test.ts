import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import mqtt from 'mqtt';
import { RawClient } from '../helpers/raw-client.js';
import { startBroker, type RunningBroker } from '../helpers/in-process.js';

describe('smoke', () => {
  let running: RunningBroker;
  beforeEach(async () => {
    running = await startBroker();
  });
  afterEach(async () => {
    await running.stop();
  });

  it('delivers a QoS1 message from an MQTT.js publisher to a raw subscriber', async () => {
    const { client: sub, connack } = await RawClient.session(running.port, { clientId: 'sub', clean: false });
    expect(connack.returnCode).toBe(0);
    sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'a/+', qos: 1 }] });
    expect((await sub.next('suback')).granted).toEqual([1]);
    const pub = await mqtt.connectAsync(`mqtt://127.0.0.1:${running.port}`, { clientId: 'pub' });
    await pub.publishAsync('a/b', 'hello', { qos: 1 });
    const publish = await sub.next('publish');
    expect(publish.topic).toBe('a/b');
    expect(publish.payload.toString()).toBe('hello');
    expect(publish.qos).toBe(1);
    sub.send({ cmd: 'puback', messageId: publish.messageId! });
    await pub.endAsync();
    await sub.disconnect();
  });
});
