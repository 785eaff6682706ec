/**
 * The trivial sink: the least an MQTT 3.1.1 server can do and still look like a broker to the load
 * generator. It answers CONNECT and SUBSCRIBE, acknowledges every PUBLISH at once and forwards it,
 * in memory, to the connections subscribed to exactly that topic. No session, no store, no
 * retransmission, no wildcards: what the bench measures against it is the load generator's own
 * capacity on this machine (see bench/README.md).
 *
 * `node bench/dist/peers/sink-server.js --port <n>`; prints `listening on 127.0.0.1:<port>` when it
 * accepts connections; SIGTERM/SIGINT close it.
 */
import { createServer, type Socket } from 'node:net';
import { parseArgs } from 'node:util';
import { Outbox, PacketCutter, PUBACK, PUBCOMP, PUBREC, PUBREL, remainingLengthBytes, writeRemainingLength } from '../lib/wire.js';

const { values } = parseArgs({
  options: { port: { type: 'string' }, host: { type: 'string', default: '127.0.0.1' }, data: { type: 'string' } },
});
if (!values.port) {
  console.error('usage: sink-server --port <n>');
  process.exit(2);
}

interface Subscription {
  connection: SinkConnection;
  qos: number;
}

/** Exact topic → its subscribers. */
const routes = new Map<string, Subscription[]>();

const CONNACK = Buffer.from([0x20, 0x02, 0x00, 0x00]);
const PINGRESP = Buffer.from([0xd0, 0x00]);

class SinkConnection {
  readonly outbox: Outbox;
  readonly #socket: Socket;
  #nextId = 0;
  /** The topic of the last PUBLISH this connection sent, and its subscribers: a stream repeats it. */
  #lastTopic = Buffer.alloc(0);
  #lastRoute: Subscription[] | undefined;

  constructor(socket: Socket) {
    this.#socket = socket;
    this.outbox = new Outbox((bytes) => {
      if (!socket.destroyed) socket.write(bytes);
    });
    const cutter = new PacketCutter(this.#onPacket, (error) => socket.destroy(error));
    socket.on('data', (chunk: Buffer) => cutter.push(chunk));
    socket.on('error', () => {});
    socket.once('close', () => this.#forget());
  }

  /** A packet id for a message to this connection (no tracking: the sink never retransmits). */
  nextId(): number {
    this.#nextId = (this.#nextId % 65535) + 1;
    return this.#nextId;
  }

  readonly #onPacket = (data: Buffer, frameStart: number, bodyStart: number, end: number): void => {
    const first = data[frameStart]!;
    switch (first >> 4) {
      case 3:
        this.#publish(data, frameStart, bodyStart, end, first);
        return;
      case 4: // PUBACK from a subscriber
      case 7: // PUBCOMP from a subscriber
        return;
      case 5: // PUBREC from a subscriber
        this.outbox.ack(PUBREL, (data[bodyStart]! << 8) | data[bodyStart + 1]!);
        return;
      case 6: // PUBREL from a publisher
        this.outbox.ack(PUBCOMP, (data[bodyStart]! << 8) | data[bodyStart + 1]!);
        return;
      case 1:
        this.outbox.append(CONNACK);
        return;
      case 8:
        this.#subscribe(data, bodyStart, end);
        return;
      case 10: // UNSUBSCRIBE: acknowledged, the subscription stays (the bench never unsubscribes)
        this.outbox.append(Buffer.from([0xb0, 0x02, data[bodyStart]!, data[bodyStart + 1]!]));
        return;
      case 12:
        this.outbox.append(PINGRESP);
        return;
      case 14:
        this.#socket.end();
        return;
      default:
        this.#socket.destroy();
    }
  };

  #publish(data: Buffer, frameStart: number, bodyStart: number, end: number, first: number): void {
    const qos = (first >> 1) & 3;
    const topicLength = (data[bodyStart]! << 8) | data[bodyStart + 1]!;
    const topicStart = bodyStart + 2;
    const topicEnd = topicStart + topicLength;
    if (!this.#sameTopic(data, topicStart, topicEnd)) {
      this.#lastTopic = Buffer.from(data.subarray(topicStart, topicEnd));
      this.#lastRoute = routes.get(this.#lastTopic.toString('utf8'));
    }
    const idAt = topicEnd;
    const payloadStart = qos > 0 ? idAt + 2 : idAt;
    if (qos === 1) this.outbox.ack(PUBACK, (data[idAt]! << 8) | data[idAt + 1]!);
    else if (qos === 2) this.outbox.ack(PUBREC, (data[idAt]! << 8) | data[idAt + 1]!);
    const route = this.#lastRoute;
    if (route === undefined) return;
    for (const { connection, qos: granted } of route) {
      const outQos = qos < granted ? qos : granted;
      const outbox = connection.outbox;
      if (outQos === qos) {
        // Same shape: the frame as it came, with this subscriber's packet id, DUP and RETAIN cleared.
        const at = outbox.claim(end - frameStart);
        const slab = outbox.slab;
        data.copy(slab, at, frameStart, end);
        slab[at] = 0x30 | (qos << 1);
        if (qos > 0) {
          const id = connection.nextId();
          slab[at + idAt - frameStart] = id >> 8;
          slab[at + idAt - frameStart + 1] = id & 0xff;
        }
      } else {
        const remaining = 2 + topicLength + (outQos > 0 ? 2 : 0) + (end - payloadStart);
        const at = outbox.claim(1 + remainingLengthBytes(remaining) + remaining);
        const slab = outbox.slab;
        slab[at] = 0x30 | (outQos << 1);
        let to = writeRemainingLength(slab, at + 1, remaining);
        to += data.copy(slab, to, bodyStart, topicEnd);
        if (outQos > 0) {
          const id = connection.nextId();
          slab[to++] = id >> 8;
          slab[to++] = id & 0xff;
        }
        data.copy(slab, to, payloadStart, end);
      }
    }
  }

  #sameTopic(data: Buffer, start: number, end: number): boolean {
    const last = this.#lastTopic;
    if (last.length !== end - start || this.#lastRoute === undefined) return false;
    for (let i = 0; i < last.length; i++) if (last[i] !== data[start + i]) return false;
    return true;
  }

  #subscribe(data: Buffer, bodyStart: number, end: number): void {
    const granted: number[] = [];
    let at = bodyStart + 2;
    while (at + 2 < end) {
      const length = (data[at]! << 8) | data[at + 1]!;
      const topic = data.toString('utf8', at + 2, at + 2 + length);
      const qos = Math.min(2, data[at + 2 + length]! & 3);
      at += 2 + length + 1;
      const route = routes.get(topic) ?? [];
      routes.set(topic, [...route.filter((subscription) => subscription.connection !== this), { connection: this, qos }]);
      granted.push(qos);
    }
    this.outbox.append(Buffer.from([0x90, 2 + granted.length, data[bodyStart]!, data[bodyStart + 1]!, ...granted]));
    // Publishers cache their route: a new subscription must be seen by the next PUBLISH.
    for (const connection of connections) connection.#lastRoute = undefined;
  }

  #forget(): void {
    connections.delete(this);
    for (const [topic, route] of routes) {
      const kept = route.filter((subscription) => subscription.connection !== this);
      if (kept.length === 0) routes.delete(topic);
      else routes.set(topic, kept);
    }
    for (const connection of connections) connection.#lastRoute = undefined;
  }
}

const connections = new Set<SinkConnection>();
const server = createServer({ noDelay: true }, (socket) => connections.add(new SinkConnection(socket)));
server.listen(Number(values.port), values.host, () => console.log(`listening on ${values.host}:${values.port}`));

const stop = () => {
  server.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
