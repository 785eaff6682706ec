import { connect as tcpConnect } from 'node:net';
import type { IPublishPacket, QoS } from 'mqtt-packet';
import WebSocket from 'ws';
import { Outbox, PacketCutter, PUBACK, PUBCOMP, PUBREC, PUBREL, type PublishTemplate, writeRemainingLength, remainingLengthBytes } from './wire.js';

/**
 * A PUBLISH as the load generator sees it: the payload is `data[payloadStart, payloadEnd)`, valid
 * only during the call. No packet object is made: at 100,000 messages a second the objects alone
 * would cost the generator more than some brokers spend per message.
 */
export type PublishListener = (data: Buffer, payloadStart: number, payloadEnd: number, qos: number, messageId: number) => void;

const READ_BUFFER_BYTES = 64 * 1024;

/** How the load generator reaches the broker: plain TCP, or WebSocket (binary messages, subprotocol `mqtt`) on `path`. */
export type Transport = { kind: 'tcp' } | { kind: 'websocket'; path: string };

/** MQTT 3.1.1 (protocol level 4) or MQTT 5.0 (level 5). */
export type ProtocolLevel = 4 | 5;

export interface ConnectOptions {
  clientId: string;
  clean: boolean;
  timeoutMs?: number;
  setup?: (client: RawClient) => void;
  /** Default: TCP. */
  transport?: Transport;
  /** Default: 4 (MQTT 3.1.1). */
  protocol?: ProtocolLevel;
}

/** The byte pipe under a client: a TCP socket, or a WebSocket whose binary messages carry the MQTT bytes. */
interface Link {
  write(bytes: Buffer): void;
  end(): void;
  destroy(error?: Error): void;
  /** Resolves once the link is closed, with the error that closed it if any. */
  readonly closed: Promise<Error | undefined>;
}

function openTcp(port: number, cutter: PacketCutter): Promise<Link> {
  return new Promise((resolve, reject) => {
    const socket = tcpConnect({
      host: '127.0.0.1',
      port,
      onread: {
        buffer: Buffer.allocUnsafe(READ_BUFFER_BYTES),
        callback: (bytes: number, buffer: Uint8Array) => {
          cutter.push(buffer as Buffer, bytes);
          return true;
        },
      },
    });
    socket.setNoDelay(true);
    let failure: Error | undefined;
    const closed = new Promise<Error | undefined>((done) => socket.once('close', () => done(failure)));
    socket.once('connect', () => {
      socket.off('error', reject);
      socket.on('error', (error) => (failure = error));
      resolve({ write: (bytes) => socket.write(bytes), end: () => socket.end(), destroy: (error) => socket.destroy(error), closed });
    });
    socket.once('error', reject);
  });
}

/**
 * WebSocket through the `ws` package (its framing and masking are what any Node client pays); the
 * MQTT side stays the hand-written code above it. No permessage-deflate: neither broker offers it.
 */
function openWebSocket(port: number, path: string, cutter: PacketCutter): Promise<Link> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`, 'mqtt', { perMessageDeflate: false });
    ws.binaryType = 'nodebuffer';
    let failure: Error | undefined;
    const closed = new Promise<Error | undefined>((done) => ws.once('close', () => done(failure)));
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (isBinary) cutter.push(data);
      else ws.terminate();
    });
    ws.once('open', () => {
      ws.off('error', reject);
      ws.on('error', (error) => (failure = error));
      resolve({
        write: (bytes) => ws.send(bytes, { binary: true }),
        end: () => ws.close(),
        destroy: (error) => {
          failure ??= error;
          ws.terminate();
        },
        closed,
      });
    });
    ws.once('error', reject);
  });
}

/**
 * A minimal MQTT 3.1.1 / 5.0 client over a raw socket or a WebSocket, for the load generator: no
 * retries, no queues, no timers. Every packet is encoded and decoded by hand; a TCP socket is read
 * into one reused buffer (net's `onread`, which skips the stream machinery), and written once per
 * tick (Outbox).
 */
export class RawClient {
  onPublish: PublishListener = () => {};
  onPuback: (id: number) => void = () => {};
  onPubrec: (id: number) => void = () => {};
  onPubrel: (id: number) => void = () => {};
  onPubcomp: (id: number) => void = () => {};
  /** Resolves once the connection is closed, with the error that closed it if any. */
  readonly closed: Promise<Error | undefined>;

  readonly #link: Link;
  readonly #outbox: Outbox;
  /** MQTT 5 packets carry properties after their variable header: the decoder skips them. */
  readonly #v5: boolean;
  #connack: ((reply: { sessionPresent: boolean; returnCode: number } | undefined) => void) | undefined;
  #suback: ((granted: number[] | undefined) => void) | undefined;
  #isClosed = false;

  private constructor(link: Link, cutter: PacketCutter, protocol: ProtocolLevel) {
    this.#link = link;
    this.#v5 = protocol === 5;
    cutter.onPacket = this.#onPacket;
    this.#outbox = new Outbox((bytes) => {
      if (!this.#isClosed) link.write(bytes);
    });
    this.closed = link.closed.then((failure) => {
      this.#isClosed = true;
      this.#connack?.(undefined);
      this.#suback?.(undefined);
      return failure;
    });
  }

  get isClosed(): boolean {
    return this.#isClosed;
  }

  /** Opens the connection (TCP unless said otherwise) and sends CONNECT; rejects on refusal, error or timeout. */
  static async connect(port: number, options: ConnectOptions): Promise<{ client: RawClient; sessionPresent: boolean; connackAt: number }> {
    const cutter = new PacketCutter();
    const transport = options.transport ?? { kind: 'tcp' };
    const protocol = options.protocol ?? 4;
    const link = transport.kind === 'websocket' ? await openWebSocket(port, transport.path, cutter) : await openTcp(port, cutter);
    const client = new RawClient(link, cutter, protocol);
    cutter.onError = (error) => link.destroy(error);
    // Handlers go in before CONNECT: queued messages may arrive in the same segment as CONNACK.
    options.setup?.(client);
    const connack = new Promise<{ sessionPresent: boolean; returnCode: number } | undefined>((resolve) => {
      if (client.#isClosed) resolve(undefined);
      else client.#connack = resolve;
    });
    client.#outbox.append(encodeConnect(options.clientId, options.clean, protocol));
    const timeoutMs = options.timeoutMs ?? 30_000;
    let timer: NodeJS.Timeout | undefined;
    const reply = await Promise.race([
      connack,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no CONNACK within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]).finally(() => clearTimeout(timer));
    const connackAt = performance.timeOrigin + performance.now();
    if (reply === undefined) {
      client.destroy();
      throw new Error('connection closed before CONNACK');
    }
    if (reply.returnCode !== 0) {
      client.destroy();
      throw new Error(`CONNACK return code ${reply.returnCode}`);
    }
    return { client, sessionPresent: reply.sessionPresent, connackAt };
  }

  /** SUBSCRIBE to one filter; resolves with the granted QoS, rejects if it is refused. */
  async subscribe(topic: string, qos: QoS, messageId = 1): Promise<number> {
    const [first] = await this.subscribeAll([topic], qos, messageId);
    if (first === undefined || first > 2) throw new Error(`subscription refused (${String(first)})`);
    return first;
  }

  /** One SUBSCRIBE carrying every filter; resolves with the return codes of SUBACK (0x80 or above: refused). */
  async subscribeAll(filters: string[], qos: QoS, messageId = 1): Promise<number[]> {
    const suback = new Promise<number[] | undefined>((resolve) => {
      if (this.#isClosed) resolve(undefined);
      else this.#suback = resolve;
    });
    this.#outbox.append(encodeSubscribe(filters, qos, messageId, this.#v5));
    const granted = await suback;
    if (granted === undefined) throw new Error('connection closed before SUBACK');
    return granted;
  }

  /** Sends `template` with this packet id, and the sequence number and send time in its payload. */
  publish(template: PublishTemplate, messageId: number, seq: number, sentAt: number): void {
    const outbox = this.#outbox;
    const at = outbox.claim(template.bytes.length);
    const slab = outbox.slab;
    slab.set(template.bytes, at);
    if (template.idAt >= 0) {
      slab[at + template.idAt] = messageId >> 8;
      slab[at + template.idAt + 1] = messageId & 0xff;
    }
    writePayloadStamp(slab, at + template.payloadAt, seq, sentAt);
  }

  puback(id: number): void {
    this.#outbox.ack(PUBACK, id);
  }
  pubrec(id: number): void {
    this.#outbox.ack(PUBREC, id);
  }
  pubrel(id: number): void {
    this.#outbox.ack(PUBREL, id);
  }
  pubcomp(id: number): void {
    this.#outbox.ack(PUBCOMP, id);
  }

  /** Acknowledges an incoming PUBLISH the way its QoS requires (PUBACK, or PUBREC for QoS 2). */
  acknowledge(qos: number, id: number): void {
    if (qos === 1) this.#outbox.ack(PUBACK, id);
    else if (qos === 2) this.#outbox.ack(PUBREC, id);
  }

  /** Sends DISCONNECT and waits (bounded) for the socket to close. */
  async disconnect(timeoutMs = 5_000): Promise<void> {
    if (this.#isClosed) return;
    this.#outbox.append(DISCONNECT);
    this.#outbox.flush();
    this.#link.end();
    const timer = setTimeout(() => this.#link.destroy(), timeoutMs);
    await this.closed;
    clearTimeout(timer);
  }

  destroy(): void {
    this.#link.destroy();
  }

  readonly #onPacket = (data: Buffer, frameStart: number, bodyStart: number, end: number): void => {
    const first = data[frameStart]!;
    switch (first >> 4) {
      case 3: {
        const qos = (first >> 1) & 3;
        let at = bodyStart + 2 + ((data[bodyStart]! << 8) | data[bodyStart + 1]!);
        let id = 0;
        if (qos > 0) {
          id = (data[at]! << 8) | data[at + 1]!;
          at += 2;
        }
        if (this.#v5) at = skipProperties(data, at);
        this.onPublish(data, at, end, qos, id);
        return;
      }
      case 4:
        this.onPuback((data[bodyStart]! << 8) | data[bodyStart + 1]!);
        return;
      case 5:
        this.onPubrec((data[bodyStart]! << 8) | data[bodyStart + 1]!);
        return;
      case 6:
        this.onPubrel((data[bodyStart]! << 8) | data[bodyStart + 1]!);
        return;
      case 7:
        this.onPubcomp((data[bodyStart]! << 8) | data[bodyStart + 1]!);
        return;
      case 2: {
        const resolve = this.#connack;
        this.#connack = undefined;
        resolve?.({ sessionPresent: (data[bodyStart]! & 1) === 1, returnCode: data[bodyStart + 1]! });
        return;
      }
      case 9: {
        const resolve = this.#suback;
        this.#suback = undefined;
        resolve?.([...data.subarray(this.#v5 ? skipProperties(data, bodyStart + 2) : bodyStart + 2, end)]);
        return;
      }
      case 13: // PINGRESP
        return;
      default:
        this.#link.destroy(new Error(`unexpected packet type ${first >> 4} from the broker`));
    }
  };
}

const DISCONNECT = Buffer.from([0xe0, 0x00]);

/** Offset after an MQTT 5 property block (a Variable Byte Integer length, then the properties) at `at`. */
function skipProperties(data: Buffer, at: number): number {
  let length = 0;
  let multiplier = 1;
  let byte: number;
  do {
    byte = data[at++]!;
    length += (byte & 0x7f) * multiplier;
    multiplier *= 128;
  } while ((byte & 0x80) !== 0 && multiplier <= 128 ** 3);
  return at + length;
}

/**
 * Session Expiry Interval 0xFFFFFFFF (MQTT 5, 3.1.2.11.2: the session never expires): what a 3.1.1
 * CleanSession=0 session is, so a v5 run queues for its persistent subscribers as a 3.1.1 run does.
 */
const NEVER_EXPIRES = Buffer.from([0x05, 0x11, 0xff, 0xff, 0xff, 0xff]);
const NO_PROPERTIES = Buffer.from([0x00]);

/**
 * CONNECT, MQTT 3.1.1 (level 4) or 5.0 (level 5, with a property block): no will, no credentials,
 * keep alive 0 (the bench sends no PINGREQ). In 5.0, Clean Start 0 with a never-ending session
 * stands for CleanSession=0.
 */
function encodeConnect(clientId: string, clean: boolean, protocol: ProtocolLevel): Buffer {
  const id = Buffer.from(clientId);
  const properties = protocol === 5 ? (clean ? NO_PROPERTIES : NEVER_EXPIRES) : Buffer.alloc(0);
  const remaining = 10 + properties.length + 2 + id.length;
  const packet = Buffer.alloc(1 + remainingLengthBytes(remaining) + remaining);
  packet[0] = 0x10;
  let at = writeRemainingLength(packet, 1, remaining);
  at = packet.writeUInt16BE(4, at);
  at += packet.write('MQTT', at, 'latin1');
  packet[at++] = protocol;
  packet[at++] = clean ? 0x02 : 0x00;
  at = packet.writeUInt16BE(0, at);
  at += properties.copy(packet, at);
  at = packet.writeUInt16BE(id.length, at);
  id.copy(packet, at);
  return packet;
}

/**
 * SUBSCRIBE with the given filters, all at `qos` (3.8; the fixed header's flags are 0b0010
 * [MQTT-3.8.1-1]); in 5.0 an empty property block follows the packet id and the option byte's
 * other bits stay 0.
 */
function encodeSubscribe(filters: string[], qos: QoS, messageId: number, v5: boolean): Buffer {
  const encoded = filters.map((filter) => Buffer.from(filter));
  const remaining = 2 + (v5 ? 1 : 0) + encoded.reduce((sum, filter) => sum + 2 + filter.length + 1, 0);
  const packet = Buffer.alloc(1 + remainingLengthBytes(remaining) + remaining);
  packet[0] = 0x82;
  let at = writeRemainingLength(packet, 1, remaining);
  at = packet.writeUInt16BE(messageId, at);
  if (v5) packet[at++] = 0;
  for (const filter of encoded) {
    at = packet.writeUInt16BE(filter.length, at);
    at += filter.copy(packet, at);
    packet[at++] = qos;
  }
  return packet;
}

/**
 * Cuts the byte stream into packets and decodes PUBLISH into an mqtt-packet object; every other
 * packet goes to `onOther` whole. The load generator itself works on PacketCutter directly; this
 * object form is for whoever wants packets (and for the property test of the cutting).
 */
export class PacketReader {
  readonly #cutter: PacketCutter;

  constructor(onPublish: (packet: IPublishPacket) => void, onOther: (frame: Buffer) => void, onError: (error: Error) => void) {
    this.#cutter = new PacketCutter((data, frameStart, bodyStart, end) => {
      if (data[frameStart]! >> 4 === 3) onPublish(decodePublish(data, data[frameStart]! & 0x0f, bodyStart, end));
      else onOther(Buffer.from(data.subarray(frameStart, end)));
    }, onError);
  }

  push(chunk: Buffer): void {
    this.#cutter.push(chunk);
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
  return { cmd: 'publish', topic, payload: Buffer.from(data.subarray(at, end)), qos, dup: (flags & 8) !== 0, retain: (flags & 1) !== 0, messageId };
}

/**
 * Payload layout (little endian): bytes 0–3 sequence number, 4–11 send time (performance.now()
 * of the load process, ms as float64); the rest is filler up to the requested size (min 12).
 */
export const PAYLOAD_STAMP_BYTES = 12;

export function writePayloadStamp(target: Buffer, at: number, seq: number, sentAt: number): void {
  target.writeUInt32LE(seq, at);
  target.writeDoubleLE(sentAt, at + 4);
}

/** The sequence number of a payload at data[start, end), -1 if it is too short to carry one. */
export function payloadSeq(data: Buffer, start: number, end: number): number {
  return end - start >= 4 ? data.readUInt32LE(start) : -1;
}

export function payloadSentAt(data: Buffer, start: number, end: number): number {
  return end - start >= PAYLOAD_STAMP_BYTES ? data.readDoubleLE(start + 4) : NaN;
}
