import { connect as tcpConnect, type Socket } from 'node:net';
import * as mqtt from 'mqtt-packet';
import type { IPublishPacket, Packet, QoS } from 'mqtt-packet';

// mqtt-packet otherwise builds a 65,536-entry number cache on the first generate (~180 ms),
// which would land inside timings such as "process start → first CONNACK".
mqtt.writeToStream.cacheNumbers = false;

/**
 * A minimal MQTT 3.1.1 client over a raw socket, for the load generator: no retries, no queues,
 * no timers. PUBLISH and the four ack packets are encoded by hand (they are on the hot path);
 * everything else goes through mqtt-packet. Writes of one tick are corked into one syscall.
 */
export class RawClient {
  onPublish: (packet: IPublishPacket) => void = () => {};
  onPuback: (id: number) => void = () => {};
  onPubrec: (id: number) => void = () => {};
  onPubrel: (id: number) => void = () => {};
  onPubcomp: (id: number) => void = () => {};
  /** Resolves once the socket is closed, with the error that closed it if any. */
  readonly closed: Promise<Error | undefined>;

  readonly #socket: Socket;
  #corked = false;
  #pending = new Map<string, (packet: Packet) => void>();
  #isClosed = false;

  private constructor(socket: Socket) {
    this.#socket = socket;
    socket.setNoDelay(true);
    const parser = mqtt.parser({ protocolVersion: 4 });
    parser.on('packet', (packet: Packet) => this.#dispatch(packet));
    parser.on('error', (error: Error) => socket.destroy(error));
    const reader = new PacketReader(
      (packet) => this.onPublish(packet),
      (frame) => parser.parse(frame),
      (error) => socket.destroy(error),
    );
    socket.on('data', (chunk: Buffer) => reader.push(chunk));
    let failure: Error | undefined;
    socket.on('error', (error) => (failure = error));
    this.closed = new Promise((resolve) =>
      socket.once('close', () => {
        this.#isClosed = true;
        for (const waiter of this.#pending.values()) waiter({ cmd: 'disconnect' });
        this.#pending.clear();
        resolve(failure);
      }),
    );
  }

  get isClosed(): boolean {
    return this.#isClosed;
  }

  /** Opens a TCP connection and sends CONNECT; rejects on refusal, error or timeout. */
  static async connect(
    port: number,
    options: { clientId: string; clean: boolean; timeoutMs?: number; setup?: (client: RawClient) => void },
  ): Promise<{ client: RawClient; sessionPresent: boolean; connackAt: number }> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const socket = tcpConnect({ host: '127.0.0.1', port });
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(socket);
      });
      socket.once('error', reject);
    });
    const client = new RawClient(socket);
    // Handlers go in before CONNECT: queued messages may arrive in the same segment as CONNACK.
    options.setup?.(client);
    const connack = client.#expect('connack');
    client.#write(
      mqtt.generate({
        cmd: 'connect',
        protocolId: 'MQTT',
        protocolVersion: 4,
        clientId: options.clientId,
        clean: options.clean,
        keepalive: 0,
      }),
    );
    const timeoutMs = options.timeoutMs ?? 30_000;
    let timer: NodeJS.Timeout | undefined;
    const packet = await Promise.race([
      connack,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no CONNACK within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]).finally(() => clearTimeout(timer));
    const connackAt = performance.timeOrigin + performance.now();
    if (packet.cmd !== 'connack') {
      client.destroy();
      throw new Error('connection closed before CONNACK');
    }
    if (packet.returnCode !== 0) {
      client.destroy();
      throw new Error(`CONNACK return code ${packet.returnCode}`);
    }
    return { client, sessionPresent: packet.sessionPresent, connackAt };
  }

  async subscribe(topic: string, qos: QoS, messageId = 1): Promise<number> {
    const suback = this.#expect('suback');
    this.#write(mqtt.generate({ cmd: 'subscribe', messageId, subscriptions: [{ topic, qos }] }));
    const packet = await suback;
    if (packet.cmd !== 'suback') throw new Error('connection closed before SUBACK');
    const granted = packet.granted[0];
    if (typeof granted !== 'number' || granted > 2) throw new Error(`subscription refused (${String(granted)})`);
    return granted;
  }

  publish(topic: Buffer, payload: Buffer, qos: QoS, messageId: number): void {
    const variable = topic.length + 2 + (qos > 0 ? 2 : 0) + payload.length;
    const header = Buffer.allocUnsafe(1 + varintLength(variable) + 2 + topic.length + (qos > 0 ? 2 : 0));
    let offset = 0;
    header[offset++] = 0x30 | (qos << 1);
    let remaining = variable;
    do {
      let byte = remaining % 128;
      remaining = Math.floor(remaining / 128);
      if (remaining > 0) byte |= 0x80;
      header[offset++] = byte;
    } while (remaining > 0);
    header.writeUInt16BE(topic.length, offset);
    offset += 2;
    topic.copy(header, offset);
    offset += topic.length;
    if (qos > 0) header.writeUInt16BE(messageId, offset);
    this.#write(header);
    this.#write(payload);
  }

  puback(id: number): void {
    this.#ack(0x40, id);
  }
  pubrec(id: number): void {
    this.#ack(0x50, id);
  }
  pubrel(id: number): void {
    this.#ack(0x62, id);
  }
  pubcomp(id: number): void {
    this.#ack(0x70, id);
  }

  /** Sends DISCONNECT and waits (bounded) for the socket to close. */
  async disconnect(timeoutMs = 5_000): Promise<void> {
    if (this.#isClosed) return;
    this.#write(Buffer.from([0xe0, 0x00]));
    this.#socket.end();
    const timer = setTimeout(() => this.#socket.destroy(), timeoutMs);
    await this.closed;
    clearTimeout(timer);
  }

  destroy(): void {
    this.#socket.destroy();
  }

  #ack(type: number, id: number): void {
    this.#write(Buffer.from([type, 2, id >> 8, id & 0xff]));
  }

  #write(buffer: Buffer): void {
    if (this.#isClosed) return;
    if (!this.#corked) {
      this.#corked = true;
      this.#socket.cork();
      process.nextTick(() => {
        this.#corked = false;
        this.#socket.uncork();
      });
    }
    this.#socket.write(buffer);
  }

  #expect<C extends Packet['cmd']>(cmd: C): Promise<Extract<Packet, { cmd: C }> | { cmd: 'disconnect' }> {
    return new Promise((resolve) => {
      if (this.#isClosed) resolve({ cmd: 'disconnect' });
      else this.#pending.set(cmd, resolve as (packet: Packet) => void);
    });
  }

  #dispatch(packet: Packet): void {
    switch (packet.cmd) {
      case 'puback':
        this.onPuback(packet.messageId ?? 0);
        return;
      case 'pubrec':
        this.onPubrec(packet.messageId ?? 0);
        return;
      case 'pubrel':
        this.onPubrel(packet.messageId ?? 0);
        return;
      case 'pubcomp':
        this.onPubcomp(packet.messageId ?? 0);
        return;
      default: {
        const waiter = this.#pending.get(packet.cmd);
        if (waiter) {
          this.#pending.delete(packet.cmd);
          waiter(packet);
        }
      }
    }
  }
}

/**
 * Cuts the byte stream into packets. A PUBLISH, nearly all a subscriber reads, is decoded here:
 * mqtt-packet's parser costs the load generator more CPU per message than the work it measures,
 * and that CPU is taken from the broker under test (they share the machine). Every other packet
 * goes to mqtt-packet whole.
 */
export class PacketReader {
  /** Bytes of a packet that has not fully arrived, and how many the packet needs (0: unknown yet). */
  #held: Buffer[] = [];
  #heldBytes = 0;
  #needed = 0;

  constructor(
    private readonly onPublish: (packet: IPublishPacket) => void,
    private readonly onOther: (frame: Buffer) => void,
    private readonly onError: (error: Error) => void,
  ) {}

  push(chunk: Buffer): void {
    let data = chunk;
    if (this.#heldBytes > 0) {
      this.#held.push(chunk);
      this.#heldBytes += chunk.length;
      // A large packet arrives in many chunks: join them once, when it is complete.
      if (this.#needed > 0 && this.#heldBytes < this.#needed) return;
      data = Buffer.concat(this.#held, this.#heldBytes);
      this.#held = [];
      this.#heldBytes = 0;
      this.#needed = 0;
    }
    let offset = 0;
    while (offset < data.length) {
      // Fixed header: the packet type, then the remaining length in 1-4 bytes of 7 bits each.
      let length = 0;
      let at = offset + 1;
      let complete = false;
      for (let multiplier = 1; at < data.length && at <= offset + 4; multiplier *= 128) {
        const byte = data[at++]!;
        length += (byte & 0x7f) * multiplier;
        if ((byte & 0x80) === 0) {
          complete = true;
          break;
        }
      }
      if (!complete && at > offset + 4) {
        this.onError(new Error('malformed remaining length'));
        return;
      }
      const end = at + length;
      if (!complete || end > data.length) {
        this.#held = [data.subarray(offset)];
        this.#heldBytes = data.length - offset;
        this.#needed = complete ? end - offset : 0;
        return;
      }
      if (data[offset]! >> 4 === 3) this.onPublish(decodePublish(data, data[offset]! & 0x0f, at, end));
      else this.onOther(data.subarray(offset, end));
      offset = end;
    }
  }
}

/** A PUBLISH whose variable header starts at `start` and which ends at `end` (MQTT 3.1.1, 3.3). */
function decodePublish(data: Buffer, flags: number, start: number, end: number): IPublishPacket {
  const qos = ((flags >> 1) & 3) as QoS;
  const topicLength = data.readUInt16BE(start);
  let at = start + 2 + topicLength;
  const topic = data.toString('utf8', start + 2, at);
  let messageId: number | undefined;
  if (qos > 0) {
    messageId = data.readUInt16BE(at);
    at += 2;
  }
  return { cmd: 'publish', topic, payload: data.subarray(at, end), qos, dup: (flags & 8) !== 0, retain: (flags & 1) !== 0, messageId };
}

function varintLength(value: number): number {
  return value < 128 ? 1 : value < 16_384 ? 2 : value < 2_097_152 ? 3 : 4;
}

/**
 * Payload layout (little endian): bytes 0–3 sequence number, 4–11 send time (performance.now()
 * of the load process, ms as float64); the rest is filler up to the requested size (min 12).
 */
export function makePayload(size: number, seq: number, sentAt: number): Buffer {
  const payload = Buffer.alloc(Math.max(12, size), 0x2e);
  payload.writeUInt32LE(seq, 0);
  payload.writeDoubleLE(sentAt, 4);
  return payload;
}

export function payloadSeq(payload: Buffer): number {
  return payload.length >= 4 ? payload.readUInt32LE(0) : -1;
}

export function payloadSentAt(payload: Buffer): number {
  return payload.length >= 12 ? payload.readDoubleLE(4) : NaN;
}
