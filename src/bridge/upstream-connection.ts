import type { EventEmitter } from 'node:events';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { IConnackPacket, IConnectPacket, Packet } from 'mqtt-packet';
import mqttPacket from '../protocol/mqtt-packet-loader.js';
import { errorMessage } from '../errors.js';
import { knownReasonName } from '../protocol/reason-codes.js';
import { createStrictParser } from '../protocol/strict-parser.js';
import type { BridgeTlsOptions, UpstreamAddress } from './bridge-options.js';

/**
 * Why a connection to the upstream did not come up, or ended: the bridge decides on it how to log
 * and when to try again.
 *  - unreachable: TCP failed (refused, no route, name not found);
 *  - tls: the handshake failed (certificate not trusted, wrong name, client certificate refused);
 *  - timeout: no CONNACK in time, or no answer to PINGREQ;
 *  - closed: the upstream closed the connection (`beforeConnack` tells whether CONNACK had come);
 *  - refused: CONNACK with a refusal, `returnCode` 1 to 5;
 *  - protocol: the upstream sent something MQTT does not allow.
 */
export type UpstreamFailureKind = 'unreachable' | 'tls' | 'timeout' | 'closed' | 'refused' | 'protocol';

export class UpstreamFailure extends Error {
  readonly kind: UpstreamFailureKind;
  readonly returnCode: number | undefined;
  readonly beforeConnack: boolean;

  constructor(kind: UpstreamFailureKind, message: string, options: { returnCode?: number; beforeConnack?: boolean } = {}) {
    super(message);
    this.kind = kind;
    this.returnCode = options.returnCode;
    this.beforeConnack = options.beforeConnack ?? false;
  }
}

/** CONNACK refusals (MQTT 3.1.1 table 3.1); MQTT 5's are named by reason-codes.ts. */
export const CONNACK_REASONS: Record<number, string> = {
  1: 'unacceptable protocol version',
  2: 'identifier rejected',
  3: 'server unavailable',
  4: 'bad user name or password',
  5: 'not authorized',
};

export interface UpstreamHandlers {
  packet(packet: Packet): void;
  /** Once, when the connection is gone, with why. */
  closed(failure: UpstreamFailure): void;
}

export interface DialOptions {
  tls?: BridgeTlsOptions;
  /** From the start of TCP to CONNACK. */
  connectTimeoutMs: number;
  /** Gives up the attempt (the broker is stopping). */
  signal?: AbortSignal;
}

/**
 * One connection to the upstream, from CONNECT until it ends; a new one is made for every attempt,
 * so nothing of a dead connection acts on the next. Packets that arrive between CONNACK and
 * `listen` are held, in order.
 */
export class UpstreamConnection {
  readonly sessionPresent: boolean;
  /** 4 or 5: every packet both ways is in this version. */
  readonly protocolVersion: 4 | 5;
  /** MQTT 5: what the upstream announced in CONNACK (Receive Maximum, Maximum Packet Size, …); empty for 3.1.1. */
  readonly connackProperties: NonNullable<IConnackPacket['properties']>;
  readonly #socket: Socket;
  readonly #parser: ReturnType<typeof mqttPacket.parser>;
  #handlers: UpstreamHandlers | undefined;
  readonly #held: Packet[] = [];
  #failure: UpstreamFailure | undefined;
  #keepaliveTimer: NodeJS.Timeout | undefined;
  #awaitingPingresp = false;
  #outbox: Buffer[] = [];
  #outboxBytes = 0;

  private constructor(socket: Socket, parser: ReturnType<typeof mqttPacket.parser>, connack: IConnackPacket, protocolVersion: 4 | 5) {
    this.#socket = socket;
    this.#parser = parser;
    this.sessionPresent = connack.sessionPresent;
    this.protocolVersion = protocolVersion;
    this.connackProperties = connack.properties ?? {};
  }

  /**
   * Connects, sends CONNECT and waits for CONNACK. Rejects with an UpstreamFailure; a refusing
   * CONNACK rejects with kind 'refused' and its code.
   */
  static dial(address: UpstreamAddress, connect: IConnectPacket, options: DialOptions): Promise<UpstreamConnection> {
    return new Promise((resolve, reject) => {
      const socket = address.tls
        ? tlsConnect({
            host: address.host,
            port: address.port,
            servername: options.tls?.servername ?? (isIp(address.host) ? undefined : address.host),
            ...(options.tls?.ca === undefined ? {} : { ca: options.tls.ca }),
            ...(options.tls?.cert === undefined ? {} : { cert: options.tls.cert, key: options.tls.key }),
          })
        : netConnect({ host: address.host, port: address.port });
      const protocolVersion = connect.protocolVersion === 5 ? 5 : 4;
      // MQTT 5: the strict parser, which keeps User Properties in their order (mqtt-packet groups them by name).
      const parser = protocolVersion === 5 ? createStrictParser(Infinity, { protocolVersion: 5 }) : mqttPacket.parser({ protocolVersion });
      let settled = false;
      let connected = false;
      /** Every listener of the attempt, removed together once it is settled. */
      const listeners: Array<[EventEmitter, string, Listener]> = [];
      const settle = () => {
        settled = true;
        clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
        for (const [emitter, event, listener] of listeners) emitter.off(event, listener as (...args: unknown[]) => void);
      };
      const fail = (failure: UpstreamFailure) => {
        if (settled) return;
        settle();
        socket.on('error', () => {}); // whatever the destroyed socket still reports
        socket.destroy();
        reject(failure);
      };
      const timer = setTimeout(
        () => fail(new UpstreamFailure('timeout', connected ? 'no CONNACK in time' : 'no connection in time', { beforeConnack: true })),
        options.connectTimeoutMs,
      );
      const onAbort = () => fail(new UpstreamFailure('closed', 'attempt given up', { beforeConnack: true }));
      if (options.signal?.aborted) queueMicrotask(onAbort);
      options.signal?.addEventListener('abort', onAbort, { once: true });
      const onConnect = () => {
        connected = true;
        socket.write(mqttPacket.generate(connect, { protocolVersion }));
      };
      const onError = (error: NodeJS.ErrnoException) => {
        const tls = address.tls && !connected && (error.code === undefined || !NETWORK_CODES.has(error.code));
        fail(new UpstreamFailure(tls ? 'tls' : connected ? 'closed' : 'unreachable', describeSocketError(error), { beforeConnack: true }));
      };
      const onClose = () => fail(new UpstreamFailure('closed', connected ? 'closed by the upstream before CONNACK' : 'connection closed', { beforeConnack: true }));
      const onData = (chunk: Buffer) => {
        if (!settled) parser.parse(chunk);
      };
      const onMalformed = (error: Error) => fail(new UpstreamFailure('protocol', `malformed packet: ${error.message}`, { beforeConnack: true }));
      const onPacket = (packet: Packet) => {
        if (packet.cmd !== 'connack') {
          fail(new UpstreamFailure('protocol', `${packet.cmd.toUpperCase()} before CONNACK`, { beforeConnack: true }));
          return;
        }
        const connack = packet as IConnackPacket;
        // MQTT 5 says reasonCode (0x80 and above refuse), 3.1.1 returnCode (1 to 5).
        const returnCode = (protocolVersion === 5 ? connack.reasonCode : connack.returnCode) ?? 0;
        if (returnCode !== 0) {
          const reason = (protocolVersion === 5 ? knownReasonName(returnCode) : CONNACK_REASONS[returnCode]) ?? 'unknown code';
          const text = connack.properties?.reasonString === undefined ? '' : `: ${JSON.stringify(connack.properties.reasonString)}`;
          fail(new UpstreamFailure('refused', `refused with CONNACK ${formatCode(returnCode, protocolVersion)} (${reason})${text}`, { returnCode }));
          return;
        }
        settle();
        // Packets in the same chunk as CONNACK are parsed on in this same call, into the new listener.
        const connection = new UpstreamConnection(socket, parser, connack, protocolVersion);
        connection.#attach(connect.keepalive ?? 0);
        resolve(connection);
      };
      const listen = (emitter: EventEmitter, event: string, listener: Listener) => {
        emitter.on(event, listener as (...args: unknown[]) => void);
        listeners.push([emitter, event, listener]);
      };
      socket.setNoDelay(true);
      listen(socket, address.tls ? 'secureConnect' : 'connect', onConnect);
      listen(socket, 'error', onError);
      listen(socket, 'close', onClose);
      listen(socket, 'data', onData);
      listen(parser, 'error', onMalformed);
      listen(parser, 'packet', onPacket);
    });
  }

  /** Starts handing packets over (those held since CONNACK first). */
  listen(handlers: UpstreamHandlers): void {
    this.#handlers = handlers;
    if (this.#failure) {
      handlers.closed(this.#failure);
      return;
    }
    for (const packet of this.#held.splice(0)) handlers.packet(packet);
  }

  get isClosed(): boolean {
    return this.#failure !== undefined;
  }

  /** Bytes written and not yet taken by the kernel: what a slow upstream makes us hold. */
  /** Calls `resume` once everything written has been handed to the kernel (or the socket is gone). */
  whenDrained(resume: () => void): void {
    if (this.#socket.destroyed || this.backlog === 0) resume();
    else if (this.#socket.writableLength > 0) this.#socket.once('drain', () => this.whenDrained(resume));
    // Only this tick's outbox holds bytes: look again once it is flushed.
    else setImmediate(() => this.whenDrained(resume));
  }

  get backlog(): number {
    return this.#socket.writableLength + this.#outboxBytes;
  }

  send(packet: Packet): void {
    this.write(mqttPacket.generate(packet, { protocolVersion: this.protocolVersion }));
  }

  /** Packets written in one tick leave in one socket write (as a client connection's do). */
  write(bytes: Buffer): void {
    if (this.#failure || this.#socket.destroyed) return;
    this.#outbox.push(bytes);
    this.#outboxBytes += bytes.length;
    if (this.#outbox.length === 1) process.nextTick(() => this.#flush());
  }

  #flush(): void {
    const outbox = this.#outbox;
    const size = this.#outboxBytes;
    this.#outbox = [];
    this.#outboxBytes = 0;
    if (outbox.length === 0 || this.#failure || this.#socket.destroyed) return;
    this.#socket.write(outbox.length === 1 ? outbox[0]! : Buffer.concat(outbox, size));
  }

  /** Stops reading while inbound messages wait for their store writes (TCP then slows the upstream). */
  pauseReading(paused: boolean): void {
    if (paused) this.#socket.pause();
    else this.#socket.resume();
  }

  /**
   * Ends the connection without DISCONNECT: the upstream then publishes our will, which says that
   * the gateway is offline; a DISCONNECT would discard it [MQTT-3.14.4-3].
   */
  close(reason: string, kind: UpstreamFailureKind = 'closed'): void {
    this.#end(new UpstreamFailure(kind, reason));
  }

  #attach(keepalive: number): void {
    const socket = this.#socket;
    this.#parser.on('packet', (packet: Packet) => this.#receive(packet));
    socket.on('data', (chunk: Buffer) => {
      if (!this.#failure) this.#parser.parse(chunk);
    });
    socket.on('error', (error: Error) => this.#end(new UpstreamFailure('closed', describeSocketError(error))));
    socket.on('close', () => this.#end(new UpstreamFailure('closed', 'connection lost')));
    this.#parser.on('error', (error: Error) => this.#end(new UpstreamFailure('protocol', `malformed packet from the upstream: ${error.message}`)));
    if (keepalive > 0) {
      // PINGREQ every keepalive interval; no packet at all by the next one ends the connection.
      this.#keepaliveTimer = setInterval(() => {
        if (this.#awaitingPingresp) {
          this.#end(new UpstreamFailure('timeout', `no answer to PINGREQ within ${keepalive} s`));
          return;
        }
        this.#awaitingPingresp = true;
        this.send({ cmd: 'pingreq' });
      }, keepalive * 1000);
      this.#keepaliveTimer.unref();
    }
  }

  #receive(packet: Packet): void {
    if (this.#failure) return;
    this.#awaitingPingresp = false;
    if (packet.cmd === 'pingresp') return;
    if (this.#handlers) this.#handlers.packet(packet);
    else this.#held.push(packet);
  }

  #end(failure: UpstreamFailure): void {
    if (this.#failure) return;
    this.#failure = failure;
    clearInterval(this.#keepaliveTimer);
    this.#held.length = 0;
    this.#socket.destroy();
    this.#handlers?.closed(failure);
  }
}

type Listener = (...args: never[]) => void;

/** Errors of the network rather than of the TLS handshake. */
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EPIPE']);

function describeSocketError(error: NodeJS.ErrnoException): string {
  const message = errorMessage(error);
  return error.code && !message.includes(error.code) ? `${error.code}: ${message}` : message;
}

/** MQTT 5 reason codes in hex as the spec writes them; 3.1.1 return codes as numbers. */
function formatCode(code: number, protocolVersion: 4 | 5): string {
  return protocolVersion === 5 ? `0x${code.toString(16).padStart(2, '0').toUpperCase()}` : String(code);
}

function isIp(host: string): boolean {
  return /^[\d.]+$/.test(host) || host.includes(':');
}
