import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import type { WebSocket } from 'ws';
import type { Transport } from '../protocol/broker-context.js';

/**
 * What ws's receiver holds of a frame still arriving: `_bufferedBytes`, bytes read from the socket
 * and not yet parsed into a frame, and `_messageLength`, the payload of the earlier fragments of a
 * fragmented message. ws has no public word for it; ws is pinned to an exact version in
 * package.json, and test/deps/websocket-internals.test.ts states what this relies on.
 */
interface ReceiverInternals {
  _bufferedBytes: number;
  _messageLength: number;
}

/**
 * MQTT over one WebSocket as a connection's Transport. The binary messages are the MQTT byte
 * stream, in which a packet may span messages and a message hold several packets; any other data
 * frame closes the connection [MQTT-6.0.0-1]. What the limits need of it:
 * - pause() really stops reading: the TCP socket under the WebSocket is paused, and the messages
 *   ws still emits from a chunk it was parsing wait here until resume();
 * - writableLength is the bytes not yet handed to the kernel (ws's `bufferedAmount`, frame
 *   headers included), and 'drain' is the TCP socket's;
 * - what ws holds of a frame still arriving, and the messages waiting here, are `heldBelow`: they
 *   count against max_unfinished_packet_bytes and run packet_timeout_ms like a packet underway.
 */
export class WebSocketTransport extends EventEmitter implements Transport {
  readonly remoteAddress: string | undefined;
  readonly remotePort: number | undefined;
  readonly #ws: WebSocket;
  readonly #socket: Socket;
  readonly #receiver: ReceiverInternals;
  #paused = false;
  readonly #waiting: Buffer[] = [];
  #waitingBytes = 0;

  /** `socket` is the one ws upgraded: its 'data' listener must already be in place, so that ours runs after it. */
  constructor(ws: WebSocket, socket: Socket) {
    super();
    this.#ws = ws;
    this.#socket = socket;
    this.#receiver = (ws as unknown as { _receiver: ReceiverInternals })._receiver;
    this.remoteAddress = socket.remoteAddress;
    this.remotePort = socket.remotePort;
    ws.binaryType = 'nodebuffer';
    ws.on('message', (data: Buffer, isBinary: boolean) => this.#message(data, isBinary));
    ws.on('error', (error: Error) => this.emit('error', error));
    ws.on('close', () => this.emit('close'));
    socket.on('drain', () => this.emit('drain'));
    // ws has parsed the chunk by now: a frame may have begun, or gone on, without a message.
    socket.on('data', () => this.emit('held'));
  }

  get destroyed(): boolean {
    return this.#ws.readyState !== this.#ws.OPEN;
  }

  get writableLength(): number {
    return this.#ws.bufferedAmount;
  }

  get heldBelow(): number {
    return this.#receiver._bufferedBytes + this.#receiver._messageLength + this.#waitingBytes;
  }

  write(bytes: Buffer, done?: (error?: Error | null) => void): void {
    this.#ws.send(bytes, { binary: true }, done);
  }

  cork(): void {
    this.#socket.cork();
  }

  uncork(): void {
    this.#socket.uncork();
  }

  pause(): void {
    this.#paused = true;
    this.#ws.pause();
  }

  resume(): void {
    this.#paused = false;
    // A message handed on may pause reading again: the rest waits for the next resume().
    while (!this.#paused && this.#waiting.length > 0) {
      const data = this.#waiting.shift()!;
      this.#waitingBytes -= data.length;
      this.emit('data', data);
    }
    if (!this.#paused) this.#ws.resume();
  }

  /** The closing handshake: what was written goes first. */
  end(): void {
    this.#ws.close(1000);
  }

  destroy(): void {
    this.#ws.terminate();
  }

  #message(data: Buffer, isBinary: boolean): void {
    if (!isBinary) {
      // 1003: a kind of data this endpoint does not accept (RFC 6455, 7.4.1).
      this.#ws.close(1003, 'MQTT takes binary frames only');
      this.emit('error', new Error('a text frame: MQTT over WebSocket takes binary frames only [MQTT-6.0.0-1]'));
      return;
    }
    if (this.#paused) {
      this.#waiting.push(data);
      this.#waitingBytes += data.length;
      return;
    }
    this.emit('data', data);
  }
}
