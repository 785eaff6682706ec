/**
 * A client whose socket closes right after what it sent: the packets that arrived before the close
 * are still handled, in order. mosquitto_pub at QoS 0 does exactly this (CONNECT, PUBLISH,
 * DISCONNECT, close), and its PUBLISH and DISCONNECT can arrive while the broker still handles the
 * CONNECT (a persistent session's start waits for its store write).
 */
import { once } from 'node:events';
import { connect } from 'node:net';
import mqttPacket from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { useBrokerProcesses } from '../helpers/process-harness.js';
import { acknowledge, subscribe } from '../helpers/wait.js';

const { freshDataDir, startBroker, connectRaw, expectMarkerNext } = useBrokerProcesses('broker-last-words-');

describe("a client's last words", { timeout: 30_000 }, () => {
  it('CONNECT with a will, PUBLISH, DISCONNECT and FIN in one segment: the message is routed and the will discarded [MQTT-3.14.4-3]', async () => {
    const broker = await startBroker(freshDataDir());
    const { client: subscriber } = await connectRaw(broker, 'listener', true);
    expect(await subscribe(subscriber, 1, [{ topic: 'last/#', qos: 1 }])).toEqual([1]);

    const socket = connect(broker.port, '127.0.0.1');
    await once(socket, 'connect');
    socket.on('error', () => {});
    // A client may send packets right after CONNECT, before its CONNACK (3.1.4).
    socket.end(
      Buffer.concat([
        mqttPacket.generate({
          cmd: 'connect',
          protocolId: 'MQTT',
          protocolVersion: 4,
          clientId: 'leaving',
          clean: false,
          keepalive: 0,
          will: { topic: 'last/will', payload: Buffer.from('gone without a word'), qos: 1, retain: false },
        }),
        mqttPacket.generate({ cmd: 'publish', topic: 'last/words', payload: Buffer.from('bye'), qos: 0, retain: false, dup: false }),
        mqttPacket.generate({ cmd: 'disconnect' }),
      ]),
    );

    const words = await subscriber.next('publish');
    expect({ topic: words.topic, payload: words.payload.toString() }).toEqual({ topic: 'last/words', payload: 'bye' });
    await acknowledge(subscriber, words);
    while (!/client "leaving" disconnected/.test(broker.output)) await once(broker.child.stdout!, 'data');
    expect(broker.output).toContain('client "leaving" disconnected: DISCONNECT');
    // No will after it: the next message is a marker published now.
    await expectMarkerNext(broker, subscriber, 'last/marker');
  });
});
