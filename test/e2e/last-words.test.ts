/**
 * A client whose socket closes right after its DISCONNECT, while the broker is still busy with what
 * came before it (a persistent session's resume waits for the store): the DISCONNECT was received,
 * so the will is discarded [MQTT-3.14.4-3] and the close is logged as the DISCONNECT's.
 */
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import mqttPacket from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { useBrokerProcesses } from '../helpers/process-harness.js';
import { subscribe } from '../helpers/wait.js';

const { freshDataDir, startBroker, connectRaw, expectMarkerNext } = useBrokerProcesses('broker-last-words-');

type Broker = Awaited<ReturnType<typeof startBroker>>;

/** A broker with a clean subscriber on last/#. */
async function brokerWithListener(): Promise<{ broker: Broker; subscriber: Awaited<ReturnType<typeof connectRaw>>['client'] }> {
  const broker = await startBroker(freshDataDir());
  const { client: subscriber } = await connectRaw(broker, 'listener', true);
  expect(await subscribe(subscriber, 1, [{ topic: 'last/#', qos: 1 }])).toEqual([1]);
  return { broker, subscriber };
}

/** A plain TCP socket to the broker: its bytes, and when it ends, are the test's to decide. */
async function rawSocket(broker: Broker): Promise<Socket> {
  const socket = connect(broker.port, '127.0.0.1');
  await once(socket, 'connect');
  socket.on('error', () => {});
  return socket;
}

/** Waits for the broker's line about `clientId`'s connection ending; the reason it gave. */
async function disconnectReason(broker: Broker, clientId: string): Promise<string> {
  const line = new RegExp(`client "${clientId}" disconnected: ([^\\n]*?) clientId=`);
  while (!line.test(broker.output)) await once(broker.child.stdout!, 'data');
  return line.exec(broker.output)![1]!;
}

describe("a client's last words", { timeout: 30_000 }, () => {
  it('connected with a will, then SUBSCRIBE, DISCONNECT and FIN in one segment: the will is discarded [MQTT-3.14.4-3]', async () => {
    const { broker, subscriber } = await brokerWithListener();
    const socket = await rawSocket(broker);
    socket.write(
      mqttPacket.generate({
        cmd: 'connect',
        protocolId: 'MQTT',
        protocolVersion: 4,
        clientId: 'leaving',
        clean: false,
        keepalive: 0,
        will: { topic: 'last/will', payload: Buffer.from('gone without a word'), qos: 1, retain: false },
      }),
    );
    await once(socket, 'data'); // CONNACK: connected, the will held
    // A SUBSCRIBE waits for its store write; the DISCONNECT behind it is read as the socket closes.
    socket.end(
      Buffer.concat([
        mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'leaving/#', qos: 1 }] }),
        mqttPacket.generate({ cmd: 'disconnect' }),
      ]),
    );
    expect(await disconnectReason(broker, 'leaving')).toBe('DISCONNECT');
    // No will: the next message is a marker published now.
    await expectMarkerNext(broker, subscriber, 'last/marker');
  });

  it('CONNECT (persistent session), QoS 0 PUBLISH, DISCONNECT and FIN in one segment, as mosquitto_pub -c sends them: the PUBLISH is still routed', async () => {
    const { broker, subscriber } = await brokerWithListener();
    const socket = await rawSocket(broker);
    // Creating the persistent session waits for the store: the PUBLISH and the DISCONNECT wait
    // behind it when the FIN arrives.
    socket.end(
      Buffer.concat([
        mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'quick-publisher', clean: false, keepalive: 0 }),
        mqttPacket.generate({ cmd: 'publish', topic: 'last/words', payload: Buffer.from('said before leaving'), qos: 0, dup: false, retain: false }),
        mqttPacket.generate({ cmd: 'disconnect' }),
      ]),
    );
    const publish = await subscriber.next('publish');
    expect(publish.topic).toBe('last/words');
    expect(Buffer.from(publish.payload).toString()).toBe('said before leaving');
    expect(await disconnectReason(broker, 'quick-publisher')).toBe('DISCONNECT');
  });

  it('MQTT 5: a DISCONNECT read as the socket closes still sets the Session Expiry Interval: 0 ends the session [MQTT-3.14.2-2] (MQTT 5.0 3.14.2.2.2)', async () => {
    const broker = await startBroker(freshDataDir());
    const connectPacket = mqttPacket.generate(
      { cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clientId: 'leaving5', clean: false, keepalive: 0, properties: { sessionExpiryInterval: 3600 } },
      { protocolVersion: 5 },
    );
    const socket = await rawSocket(broker);
    socket.write(connectPacket);
    await once(socket, 'data'); // CONNACK
    socket.end(
      Buffer.concat([
        mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'leaving5/#', qos: 1 }] }, { protocolVersion: 5 }),
        mqttPacket.generate({ cmd: 'disconnect', reasonCode: 0, properties: { sessionExpiryInterval: 0 } }, { protocolVersion: 5 }),
      ]),
    );
    expect(await disconnectReason(broker, 'leaving5')).toBe('DISCONNECT');

    // Back with Clean Start 0: the session ended with that connection, so none is present [MQTT-3.2.2-2].
    const again = await rawSocket(broker);
    const parser = mqttPacket.parser({ protocolVersion: 5 });
    const connack = new Promise<mqttPacket.IConnackPacket>((resolve) => parser.once('packet', resolve));
    again.on('data', (chunk) => parser.parse(chunk));
    again.write(connectPacket);
    expect((await connack).sessionPresent).toBe(false);
    again.destroy();
  });
});
