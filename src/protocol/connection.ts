import type { Socket } from 'node:net';
import mqttPacket, { type Packet } from 'mqtt-packet';
import { errorMessage, ProtocolViolation } from '../errors.js';
import type { AccessControl } from '../auth/access-control.js';
import type { Logger } from '../logger.js';
import type { Distributor } from '../session/distributor.js';
import type { OutboundChannel, OutgoingPublish, SessionLink } from '../session/session.js';
import type { SessionManager } from '../session/session-manager.js';
import type { Message } from '../store/repository.js';
import { readAcks } from './ack-reader.js';
import { encodePublish } from './publish-encoder.js';
import { QOS0_HIGH_WATER, type BrokerCounters, type TopicLimits } from './limits.js';
import type { ListenerInfo } from './listener-info.js';
import { createStrictParser, PacketTooLarge } from './strict-parser.js';

export interface ProtocolOptions extends TopicLimits {
  /** A socket that has not sent CONNECT by then is closed. */
  connectTimeoutMs: number;
  /** Bytes of one packet, fixed header included; a bigger one closes the connection before it is read. */
  maxPacketSize: number;
  /** Filters one session may hold; SUBSCRIBE gets 0x80 for new ones beyond it. */
  maxSubscriptionsPerClient: number;
}

/** What packet handlers work with: the layers below, never the store directly. */
export interface BrokerContext {
  sessions: SessionManager;
  distributor: Distributor;
  log: Logger;
  options: ProtocolOptions;
  counters: BrokerCounters;
  /** Authentication and the ACL: who a client is and what it may publish, subscribe to and receive. */
  access: AccessControl;
  /** Set while the broker shuts down: connections it ends do not publish their wills. */
  shuttingDown: boolean;
}

/**
 * Runs one packet through its handler (the dispatcher); given to each connection by the server, so
 * the connection and the handlers it runs never import each other.
 */
export type Dispatch = (connection: Connection, packet: Packet) => void | Promise<void>;

export interface Will {
  message: Message;
  retain: boolean;
  /** Who publishes it: the ACL's write check applies when it is published, not when it is given. */
  clientId: string;
  user: string | undefined;
}

/**
 * mqtt-packet by default builds a cache of 65,536 two-byte Buffers on the first packet it
 * generates: it delays the first CONNACK and takes megabytes of RSS, to save less per PUBLISH
 * than looking a number up in it costs (bench/results/figures-behind-code.md).
 */
mqttPacket.writeToStream.cacheNumbers = false;

type State = 'awaiting-connect' | 'connecting' | 'connected' | 'closed';

/** CONNACK's accepting return code (3.1.1 table 3.1). */
const ACCEPTED = 0;

/** Packets queued before the socket is paused: bounds what a fast sender can make us buffer. */
const INBOX_HIGH_WATER = 256;
/** The same in bytes: 256 packets of max_packet_size each would be a quarter GiB per client. */
const INBOX_HIGH_WATER_BYTES = 1024 * 1024;
/**
 * PUBLISHes (and PUBRELs) whose store write or reply is still pending before the socket is
 * paused: handlers return as soon as the write is submitted, so the inbox alone would let a client
 * that pipelines QoS 1/2 faster than the disk writes pile up pending writes without bound.
 */
const UNREPLIED_HIGH_WATER = 1024;
/** The same in payload bytes held until their write is done. */
const UNREPLIED_HIGH_WATER_BYTES = 8 * 1024 * 1024;
/**
 * The largest CONNECT 3.1.1 allows (client id, will topic and payload, user name, password: five
 * strings of at most 65,535 bytes, plus headers): before CONNECT, nothing bigger is buffered.
 */
const MAX_CONNECT_SIZE = 5 * (2 + 65_535) + 64;
/** Up to this many bytes, the packets of one tick are copied into one buffer for one socket write. */
const OUTBOX_COPY_LIMIT = 64 * 1024;

/**
 * One client connection: parses bytes into packets, runs them through the dispatcher one at a
 * time, and writes responses. Handlers that only need their acknowledgement ordered (PUBLISH,
 * PUBREL) start their store write at once and queue the reply with `reply`, so one client's
 * writes share group commits while its acks still go out in order [MQTT-4.6.0-2] [MQTT-4.6.0-3].
 */
export class Connection implements OutboundChannel {
  readonly context: BrokerContext;
  readonly remote: string;
  /** The listener that accepted this connection (loopback, TLS, its allow_anonymous). */
  readonly listener: ListenerInfo;
  /** The subject CN of the client certificate verified on a TLS listener with cert_username: an authenticated user name. */
  readonly certificateUser: string | undefined;

  /** Written only by the verbs below: beginConnect, accept, refuse (through close), close. */
  #state: State = 'awaiting-connect';
  #link: SessionLink | undefined;
  #will: Will | undefined;
  #protocolVersion: 3 | 4 = 4;
  readonly #dispatch: Dispatch;
  readonly #socket: Socket;
  readonly #parser;
  readonly #inbox: Packet[] = [];
  #processing: Promise<void> | undefined;
  #replies: Promise<void> = Promise.resolve();
  #unreplied = 0;
  #unrepliedBytes = 0;
  /** Remaining lengths of the packets in #inbox. */
  #inboxBytes = 0;
  /** QoS 0 deliveries are being dropped because the socket is not draining (logged once per episode). */
  #droppingQos0 = false;
  /** Packets written in this tick, sent together at its end (see #write). */
  #outbox: Buffer[] = [];
  #outboxBytes = 0;
  #keepaliveTimer: NodeJS.Timeout | undefined;
  #connectTimer: NodeJS.Timeout | undefined;
  #closedResolve!: () => void;
  readonly closed = new Promise<void>((resolve) => (this.#closedResolve = resolve));

  constructor(socket: Socket, context: BrokerContext, dispatch: Dispatch, listener: ListenerInfo, certificateUser?: string) {
    this.#socket = socket;
    this.#dispatch = dispatch;
    this.context = context;
    this.listener = listener;
    this.certificateUser = certificateUser;
    this.remote = `${socket.remoteAddress}:${socket.remotePort}`;
    socket.setNoDelay(true);
    const { maxPacketSize } = context.options;
    this.#parser = createStrictParser(() =>
      this.#state === 'awaiting-connect' ? Math.min(maxPacketSize, MAX_CONNECT_SIZE) : maxPacketSize,
    );
    this.#parser.on('packet', (packet: Packet) => this.#receive(packet));
    this.#parser.on('error', (error: Error) => this.#malformed(error));
    // Not after close: the socket is read until it is destroyed, and the parser would start afresh.
    socket.on('data', (chunk: Buffer) => this.#read(chunk));
    socket.on('error', () => this.close('socket error'));
    socket.on('close', () => this.close('connection lost'));
    this.#connectTimer = setTimeout(() => this.close('no CONNECT in time'), context.options.connectTimeoutMs);
  }

  get isClosed(): boolean {
    return this.#state === 'closed';
  }

  /** CONNECT was accepted and the connection not closed since. */
  get isConnected(): boolean {
    return this.#state === 'connected';
  }

  get clientId(): string | undefined {
    return this.#link?.session.clientId;
  }

  /** A CONNECT arrived: only the first one is allowed [MQTT-3.1.0-2]; from now on reading waits for its outcome. */
  beginConnect(): void {
    if (this.#state !== 'awaiting-connect') throw new ProtocolViolation('second CONNECT');
    this.#state = 'connecting';
  }

  /** The protocol level the CONNECT asked for: packets are written in it from now on. */
  useProtocolVersion(version: 3 | 4): void {
    this.#protocolVersion = version;
  }

  /**
   * The CONNECT is accepted: the connection now belongs to its session (and keeps its will until
   * it ends) and CONNACK goes out. false, having done nothing: the connection closed while the
   * session started, and the caller hands the session back.
   */
  accept(link: SessionLink, will: Will | undefined, sessionPresent: boolean): boolean {
    if (this.#state === 'closed') return false;
    this.#link = link;
    this.#will = will;
    this.#state = 'connected';
    // MQTT 3.1's CONNACK has no session present flag: its first byte is reserved and 0.
    this.send({ cmd: 'connack', returnCode: ACCEPTED, sessionPresent: this.#protocolVersion === 3 ? false : sessionPresent });
    return true;
  }

  /**
   * CONNACK with a refusal code and session present 0 [MQTT-3.2.2-4], then close [MQTT-3.2.2-5];
   * nothing the client sent after the CONNECT is processed [MQTT-3.1.4-5], and a refused
   * connection has no will to publish.
   */
  refuse(returnCode: number, reason: string): void {
    this.#will = undefined;
    this.send({ cmd: 'connack', returnCode, sessionPresent: false });
    this.context.log.warn(`${this.describe()}: CONNECT refused: ${reason}`);
    this.close(`CONNECT refused: ${reason}`);
  }

  /** DISCONNECT: the will is discarded [MQTT-3.14.4-3]. */
  discardWill(): void {
    this.#will = undefined;
  }

  /** The session this connection belongs to; the dispatcher lets no packet but CONNECT through before there is one. */
  requireLink(): SessionLink {
    if (!this.#link) throw new ProtocolViolation('no session');
    return this.#link;
  }

  send(packet: Packet): void {
    this.#write(mqttPacket.generate(packet, { protocolVersion: this.#protocolVersion }));
  }

  /**
   * Packets written in one tick (a burst of PUBLISHes, a run of acks) leave in one socket write of
   * one buffer: a stream write per packet, even corked, cost more than encoding the packet.
   */
  #write(bytes: Buffer): void {
    if (this.#state === 'closed' || this.#socket.destroyed) return;
    this.#outbox.push(bytes);
    this.#outboxBytes += bytes.length;
    if (this.#outbox.length === 1) process.nextTick(() => this.#flush());
  }

  #flush(): void {
    const outbox = this.#outbox;
    const size = this.#outboxBytes;
    if (outbox.length === 0) return;
    this.#outbox = [];
    this.#outboxBytes = 0;
    if (this.#socket.destroyed) return;
    if (outbox.length === 1) {
      this.#socket.write(outbox[0]!);
    } else if (size <= OUTBOX_COPY_LIMIT) {
      this.#socket.write(Buffer.concat(outbox, size));
    } else {
      // Large payloads: copying them into one buffer would cost more than the writes.
      this.#socket.cork();
      for (const bytes of outbox) this.#socket.write(bytes);
      this.#socket.uncork();
    }
  }

  publish(packet: OutgoingPublish): void {
    if (packet.qos === 0 && this.#socket.writableLength + this.#outboxBytes > QOS0_HIGH_WATER) {
      this.context.counters.qos0Dropped++;
      if (!this.#droppingQos0) {
        this.#droppingQos0 = true;
        this.context.log.warn(`${this.describe()}: not reading; QoS 0 messages for it are dropped until it catches up`);
      }
      return;
    }
    this.#droppingQos0 = false;
    this.#write(encodePublish(packet));
  }

  pubrel(packetId: number): void {
    this.send({ cmd: 'pubrel', messageId: packetId });
  }

  end(reason: string): void {
    this.close(reason);
  }

  /**
   * Runs `send` once `work` is done and every earlier `send` has run, so replies (and the
   * deliveries they follow) keep the order in which packets arrived. A failure of `work` (a store
   * write) means no reply: the connection is closed instead, and the client re-sends what was not
   * acknowledged when it reconnects.
   */
  reply<T>(work: Promise<T>, send: (result: T) => void | Promise<void>, onFailure?: () => void, heldBytes = 0): void {
    work.catch(() => {}); // handled below, in order; keeps an early rejection from going unhandled
    this.#unreplied++;
    this.#unrepliedBytes += heldBytes;
    this.#replies = this.#replies.then(() =>
      work
        .then(send)
        .catch((error: unknown) => {
          onFailure?.();
          // Once per connection: the writes behind a failed one fail too, and the store logs the failure itself.
          if (this.#state === 'closed') return;
          this.context.log.error(`${this.describe()}: ${errorMessage(error)}; nothing acknowledged, closing the connection`);
          this.close('store failure');
        })
        .finally(() => {
          this.#unreplied--;
          this.#unrepliedBytes -= heldBytes;
          this.#flowControl();
        }),
    );
  }

  /**
   * Runs a store transition that has no reply of its own (PUBACK, PUBREC, PUBCOMP from the client)
   * without holding up the packets behind it: the store applies transitions in submission order,
   * so awaiting each would only make every acknowledgement wait for its own fsync.
   */
  background(work: Promise<unknown>): void {
    work.catch((error: unknown) => {
      if (this.#state === 'closed') return; // once per connection, as in reply()
      this.context.log.error(`${this.describe()}: ${errorMessage(error)}; closing the connection`);
      this.close('store failure');
    });
  }

  /** Resolves when every reply queued so far is sent (or abandoned). */
  repliesSent(): Promise<void> {
    return this.#replies;
  }

  /** Keepalive: close after 1.5 times the interval without a packet [MQTT-3.1.2-24]. Zero turns it off. */
  startKeepalive(seconds: number): void {
    if (this.#connectTimer) clearTimeout(this.#connectTimer);
    this.#connectTimer = undefined;
    if (seconds > 0) {
      this.#keepaliveTimer = setTimeout(() => this.close('keepalive expired'), seconds * 1500);
    }
  }

  describe(): string {
    return this.clientId === undefined ? `connection ${this.remote}` : `client ${JSON.stringify(this.clientId)}`;
  }

  /** Graceful (after DISCONNECT) closes discard the will [MQTT-3.14.4-3]; all others publish it. */
  close(reason: string, options: { graceful?: boolean } = {}): void {
    if (this.#state === 'closed') return;
    const wasConnected = this.#state === 'connected';
    this.#state = 'closed';
    clearTimeout(this.#keepaliveTimer);
    clearTimeout(this.#connectTimer);
    this.#inbox.length = 0;
    this.#inboxBytes = 0;
    // end() sends what was written (a refusing CONNACK) before the FIN; a peer that never
    // finishes its side is cut off shortly after.
    if (this.context.shuttingDown) {
      this.#socket.destroy();
    } else {
      this.#flush();
      this.#socket.end();
      setTimeout(() => this.#socket.destroy(), 1000).unref();
    }
    if (wasConnected) this.context.log.info(`${this.describe()} disconnected: ${reason}`);
    void this.#finish(options.graceful === true).finally(() => this.#closedResolve());
  }

  async #finish(graceful: boolean): Promise<void> {
    const { sessions, distributor, log, shuttingDown } = this.context;
    const will = this.#will;
    this.#will = undefined;
    if (will && !graceful && !shuttingDown) {
      try {
        if (this.context.access.canPublish(will.clientId, will.user, will.message.topic)) {
          await distributor.publish(will.message, { retain: will.retain });
        } else {
          this.context.counters.publishesRefused++;
          log.warn(`${this.describe()}: will message on ${JSON.stringify(will.message.topic)} not published: the ACL does not allow it`);
        }
      } catch (error) {
        log.error(`${this.describe()}: will message not published: ${errorMessage(error)}`);
      }
    }
    await Promise.allSettled([this.#processing, this.#replies]);
    if (this.#link) {
      try {
        await sessions.close(this.#link.session, this);
      } catch (error) {
        log.error(`${this.describe()}: session not closed cleanly: ${errorMessage(error)}`);
      }
    }
  }

  #read(chunk: Buffer): void {
    if (this.#state === 'closed') return;
    const parsed = this.#state === 'connected' ? readAcks(chunk, this.#parser, (packet) => this.#receive(packet)) : 0;
    if (parsed < chunk.length && !this.isClosed) this.#parser.parse(parsed === 0 ? chunk : chunk.subarray(parsed));
  }

  #receive(packet: Packet): void {
    if (this.#state === 'closed') return;
    this.#inbox.push(packet);
    this.#inboxBytes += packet.length ?? 0;
    this.#flowControl();
    if (this.#processing === undefined) this.#startProcessing();
  }

  #startProcessing(): void {
    const waiting = this.#process();
    if (!waiting) return;
    this.#processing = waiting.finally(() => {
      this.#processing = undefined;
      // Packets that arrived after the last look at the inbox, before this ran.
      if (this.#inbox.length > 0) this.#startProcessing();
    });
  }

  /**
   * Runs the inbox's packets in order, one at a time. Handlers with nothing to wait for (the
   * acknowledgements) run inline, without a promise per packet; at the first handler that must
   * wait, the rest continues after it, and the returned promise covers all of it.
   */
  #process(): Promise<void> | undefined {
    while (this.#inbox.length > 0 && this.#state !== 'closed') {
      const packet = this.#inbox.shift()!;
      this.#inboxBytes -= packet.length ?? 0;
      this.#keepaliveTimer?.refresh();
      let handled: void | Promise<void>;
      try {
        handled = this.#dispatch(this, packet);
      } catch (error) {
        this.#handlerFailed(error);
        return undefined;
      }
      if (handled) {
        this.#flowControl(); // a CONNECT being handled holds reading from here on
        return handled.then(
          () => {
            this.#flowControl();
            return this.#process();
          },
          (error: unknown) => this.#handlerFailed(error),
        );
      }
      this.#flowControl();
    }
    return undefined;
  }

  #handlerFailed(error: unknown): void {
    if (error instanceof ProtocolViolation) {
      this.context.log.warn(`${this.describe()}: protocol violation: ${error.message}`);
      this.close(`protocol violation: ${error.message}`);
    } else {
      this.context.log.error(`${this.describe()}: ${errorMessage(error)}`);
      this.close(errorMessage(error));
    }
  }

  /**
   * Pauses reading while too much of this client's input waits (see the high-water marks), resumes
   * at half. Also while its CONNECT is handled: authentication can take a while (scrypt), and a
   * client not yet let in must not make us hold what it sends behind it.
   */
  #flowControl(): void {
    if (this.#state === 'closed') return;
    if (
      this.#state === 'connecting' ||
      this.#inbox.length >= INBOX_HIGH_WATER ||
      this.#inboxBytes >= INBOX_HIGH_WATER_BYTES ||
      this.#unreplied >= UNREPLIED_HIGH_WATER ||
      this.#unrepliedBytes >= UNREPLIED_HIGH_WATER_BYTES
    ) {
      this.#socket.pause();
    } else if (
      this.#socket.isPaused() &&
      this.#inbox.length < INBOX_HIGH_WATER / 2 &&
      this.#inboxBytes < INBOX_HIGH_WATER_BYTES / 2 &&
      this.#unreplied < UNREPLIED_HIGH_WATER / 2 &&
      this.#unrepliedBytes < UNREPLIED_HIGH_WATER_BYTES / 2
    ) {
      this.#socket.resume();
    }
  }

  #malformed(error: Error): void {
    if (this.#state === 'closed') return;
    if (this.#state === 'awaiting-connect' && /protocol version/i.test(error.message)) {
      // An unsupported protocol level gets CONNACK 0x01 before the close [MQTT-3.1.2-2].
      this.send({ cmd: 'connack', returnCode: 1, sessionPresent: false });
    }
    if (error instanceof PacketTooLarge) this.context.counters.packetsTooLarge++;
    this.context.log.warn(`${this.describe()}: malformed packet: ${error.message}`);
    this.close(`malformed packet: ${error.message}`);
  }
}
