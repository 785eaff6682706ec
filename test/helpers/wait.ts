import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import mqttPacket, { type IPublishPacket } from 'mqtt-packet';
import { RawClient } from './raw-client.js';

/**
 * The clients one test opens, so `afterEach` can close them all even when the test failed
 * half-way. Raw sockets are destroyed, MQTT.js clients ended with force.
 */
export class Clients {
  readonly #port: number;
  readonly #closers: Array<() => Promise<unknown>> = [];

  constructor(port: number) {
    this.#port = port;
  }

  /** A raw socket that has not sent anything yet. */
  async socket(): Promise<RawClient> {
    const client = await RawClient.connect(this.#port);
    this.#closers.push(() => client.close());
    return client;
  }

  /** A raw client after CONNECT/CONNACK (clean=1, keepalive 0 unless overridden). */
  async raw(connect: Partial<mqttPacket.IConnectPacket> & { clientId: string }) {
    const client = await this.socket();
    client.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 0, ...connect });
    const connack = await client.next('connack');
    return { client, connack };
  }

  /** An MQTT 5 raw client after CONNECT/CONNACK (Clean Start 1, keepalive 0 unless overridden). */
  async raw5(connect: Partial<mqttPacket.IConnectPacket> & { clientId: string }) {
    const client = await RawClient.connect(this.#port, '127.0.0.1', 5);
    this.#closers.push(() => client.close());
    client.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, keepalive: 0, ...connect });
    const connack = await client.next('connack');
    return { client, connack };
  }

  /** An MQTT 5 raw client whose CONNECT must be accepted. */
  async raw5Accepted(connect: Partial<mqttPacket.IConnectPacket> & { clientId: string }): Promise<RawClient> {
    const { client, connack } = await this.raw5(connect);
    if (connack.reasonCode !== 0) throw new Error(`CONNECT of ${connect.clientId} refused with ${connack.reasonCode}`);
    return client;
  }

  /** A raw client whose CONNECT must be accepted. */
  async rawAccepted(connect: Partial<mqttPacket.IConnectPacket> & { clientId: string }): Promise<RawClient> {
    const { client, connack } = await this.raw(connect);
    if (connack.returnCode !== 0) throw new Error(`CONNECT of ${connect.clientId} refused with ${connack.returnCode}`);
    return client;
  }

  /** An MQTT.js client that never reconnects on its own (a reconnect would hide a broker-side close). */
  async mqtt(options: IClientOptions = {}): Promise<MqttClient> {
    const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${this.#port}`, { reconnectPeriod: 0, ...options });
    this.#closers.push(() => client.endAsync(true));
    return client;
  }

  async closeAll(): Promise<void> {
    const closers = this.#closers.splice(0);
    await Promise.allSettled(closers.map((close) => close()));
  }
}

/** Messages an MQTT.js client receives, queued in arrival order so a test can await them one by one. */
export class MessageQueue {
  readonly #queue: IPublishPacket[] = [];
  #waiters: Array<() => void> = [];

  constructor(client: MqttClient) {
    client.on('message', (_topic, _payload, packet) => {
      this.#queue.push(packet);
      const waiters = this.#waiters;
      this.#waiters = [];
      for (const wake of waiters) wake();
    });
  }

  async next(): Promise<IPublishPacket> {
    while (this.#queue.length === 0) await new Promise<void>((resolve) => this.#waiters.push(resolve));
    return this.#queue.shift()!;
  }

  async take(count: number): Promise<IPublishPacket[]> {
    const messages: IPublishPacket[] = [];
    while (messages.length < count) messages.push(await this.next());
    return messages;
  }
}

/**
 * Sends PINGREQ after whatever the test sent and reports whether the broker answered it or closed
 * the connection first. The broker handles a connection's packets in order, so a broker that
 * (wrongly) accepted the earlier packet answers here instead of leaving the test to time out.
 */
export async function answeredOrClosed(client: RawClient): Promise<'answered' | 'closed'> {
  if (client.isClosed) return 'closed';
  client.send({ cmd: 'pingreq' });
  return client.next('pingresp').then(
    () => 'answered',
    () => 'closed',
  );
}

/**
 * Takes the next `count` PUBLISHes of a raw subscriber in arrival order and completes each
 * delivery: PUBACK for QoS 1, PUBREC → (PUBREL) → PUBCOMP for QoS 2.
 */
export async function receiveAndAck(client: RawClient, count: number): Promise<IPublishPacket[]> {
  const publishes: IPublishPacket[] = [];
  while (publishes.length < count) {
    const publish = await client.next('publish');
    publishes.push(publish);
    await acknowledge(client, publish);
  }
  return publishes;
}

/** Completes one delivery to a raw subscriber: PUBACK for QoS 1, PUBREC → (PUBREL) → PUBCOMP for QoS 2. */
export async function acknowledge(client: RawClient, publish: IPublishPacket): Promise<void> {
  if (publish.qos === 1) client.send({ cmd: 'puback', messageId: publish.messageId! });
  if (publish.qos === 2) {
    client.send({ cmd: 'pubrec', messageId: publish.messageId! });
    const pubrel = await client.next('pubrel');
    if (pubrel.messageId !== publish.messageId) throw new Error(`PUBREL ${pubrel.messageId} for PUBLISH ${publish.messageId}`);
    client.send({ cmd: 'pubcomp', messageId: publish.messageId! });
  }
}

/** Publishes from a raw client at QoS 1 and waits for the PUBACK. */
export async function publishQos1(client: RawClient, messageId: number, topic: string, payload: string, retain = false): Promise<void> {
  client.send({ cmd: 'publish', topic, payload, qos: 1, messageId, retain, dup: false });
  const puback = await client.next('puback');
  if (puback.messageId !== messageId) throw new Error(`PUBACK ${puback.messageId}, expected ${messageId}`);
}

/** Subscribes from a raw client and returns the granted codes. */
export async function subscribe(client: RawClient, messageId: number, subscriptions: Array<{ topic: string; qos: 0 | 1 | 2 }>): Promise<number[]> {
  client.send({ cmd: 'subscribe', messageId, subscriptions });
  const suback = await client.next('suback');
  if (suback.messageId !== messageId) throw new Error(`SUBACK ${suback.messageId}, expected ${messageId}`);
  return suback.granted as number[];
}

/** Topic and payload of a PUBLISH, for compact assertions. */
export function summary(publish: IPublishPacket): string {
  return `${publish.topic}=${publish.payload.toString()}`;
}
