import { performance } from 'node:perf_hooks';
import type { IConnackPacket, IDisconnectPacket, Packet } from 'mqtt-packet';
import { errorMessage, ProtocolViolation } from '../errors.js';
import type { LogFields } from '../logger.js';
import { LogCauses, refusalCause, summaryOf, type LogSummary } from '../log-summary.js';
import type { EndCause, OutboundChannel, OutgoingPublish, SessionLink } from '../session/session.js';
import { type FastPathOptions, readPackets } from './packet-fast-path.js';
import type { BrokerContext, Transport, Will } from './broker-context.js';
import mqttPacket from './mqtt-packet-loader.js';
import { encodeAck, type AckCommand } from './ack-writer.js';
import { encodePublish } from './publish-encoder.js';
import { Mqtt5Link, type ClientAnnouncement } from './mqtt5-link.js';
import { Reason, reasonOfEnd, v3ConnackCode, type ReasonCode } from './reason-codes.js';
import { type Reply, ReplyQueue } from './reply-queue.js';
import { ArrivingPacket, UNSENT_SHARE } from './limits.js';
import type { ListenerInfo } from './listener-info.js';
import { createStrictParser, discardUnfinished, PacketTooLarge, packetUnderway, ProtocolError } from './strict-parser.js';

/**
 * Runs one packet through its handler (the dispatcher); given to each connection by the server, so
 * the connection and the handlers it runs never import each other.
 */
export type Dispatch = (connection: Connection, packet: Packet) => void | Promise<void>;

type State = 'awaiting-connect' | 'connecting' | 'connected' | 'closed';

export type ProtocolVersion = 3 | 4 | 5;

/** How long packets that arrived before the client's socket closed are still handled (see #peerGone). */
const PEER_GONE_GRACE_MS = 5_000;

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
  /** The client's IP address (without the port). */
  readonly sourceAddress: string;
  /** The listener that accepted this connection (loopback, TLS, its allow_anonymous). */
  readonly listener: ListenerInfo;
  /** The subject CN of the client certificate verified on a TLS listener with cert_username: an authenticated user name. */
  readonly certificateUser: string | undefined;

  /** Written only by the verbs below: beginConnect, accept, refuse (through close), close. */
  #state: State = 'awaiting-connect';
  #link: SessionLink | undefined;
  #will: Will | undefined;
  #protocolVersion: ProtocolVersion = 4;
  /** Set for an MQTT 5 client from its CONNECT: what it announced, and its topic aliases. */
  #mqtt5: Mqtt5Link | undefined;
  /** MQTT 5 Receive Maximum: the client's QoS 1 PUBLISHes whose PUBACK is not sent yet. */
  #unacknowledgedQos1 = 0;
  #keepaliveSeconds: number | undefined;
  /** Arrival times of the QoS 1/2 PUBLISHes not acknowledged yet, in order (with observePublishAck only). */
  readonly #ackWaits: number[] = [];
  readonly #dispatch: Dispatch;
  /** How a connected client's packets are read (packet-fast-path.ts); PUBLISH too once its CONNECT is taken. */
  readonly #fastPath: FastPathOptions;
  /** Every packet read, by the fast path or the parser. */
  readonly #onPacket = (packet: Packet): void => this.#receive(packet);
  readonly #socket: Transport;
  readonly #parser;
  readonly #inbox: Packet[] = [];
  #processing: Promise<void> | undefined;
  readonly #replies = new ReplyQueue({
    failed: (error) => {
      // Once per connection: the writes behind a failed one fail too, and the store logs the failure itself.
      if (this.#state === 'closed') return;
      this.#storeFailed(`${errorMessage(error)}; nothing acknowledged, closing the connection`);
    },
    settled: () => this.#flowControl(),
  });
  /** Remaining lengths of the packets in #inbox. */
  #inboxBytes = 0;
  /**
   * Set when maxUnsentBytes wait unsent, cleared below half of it: the client is not reading, and
   * is not read (logged once per episode).
   */
  #notReading = false;
  /** Flows waiting for this client to take what it is sent (OutboundChannel.whenDrained). */
  #drainWaiters: Array<() => void> = [];
  /** Paused by #flowControl; the socket is paused exactly while this is true. */
  #readingPaused = false;
  /** The packet underway: its bytes in the broker's budget, its time limit. */
  readonly #arriving: ArrivingPacket;
  /** Packets parsed so far: tells #read whether the packet underway after a chunk is a new one. */
  #packetsReceived = 0;
  /** What the parser held after the last chunk. */
  #parserHeld = 0;
  readonly #summary: LogSummary;
  /** Packets written in this tick, sent together at its end (see #write). */
  #outbox: Buffer[] = [];
  /** The peer sent its FIN: nothing more is written (see the 'end' listener). */
  #peerEnded = false;
  /** Ended because another connection took over the session (see #finish: its delayed will is not published). */
  #takenOver = false;
  #outboxBytes = 0;
  #keepaliveTimer: NodeJS.Timeout | undefined;
  #connectTimer: NodeJS.Timeout | undefined;
  #closedResolve!: () => void;
  readonly closed = new Promise<void>((resolve) => (this.#closedResolve = resolve));

  constructor(socket: Transport, context: BrokerContext, dispatch: Dispatch, listener: ListenerInfo, certificateUser?: string) {
    this.#socket = socket;
    this.#dispatch = dispatch;
    this.context = context;
    this.listener = listener;
    this.certificateUser = certificateUser;
    this.remote = `${socket.remoteAddress}:${socket.remotePort}`;
    this.sourceAddress = socket.remoteAddress ?? '';
    this.#summary = summaryOf(context.log);
    this.#arriving = new ArrivingPacket(context.unfinishedPackets, context.options.packetTimeoutMs, () => this.#packetTimedOut());
    const { maxPacketSize } = context.options;
    this.#parser = createStrictParser(() =>
      this.#state === 'awaiting-connect' ? Math.min(maxPacketSize, MAX_CONNECT_SIZE) : maxPacketSize,
    );
    this.#parser.on('packet', this.#onPacket);
    this.#parser.on('error', (error: Error) => this.#malformed(error));
    this.#fastPath = { maxPacketSize, publishes: false, mqtt5: false, reading: () => this.#state !== 'closed' };
    // Not after close: the socket is read until it is destroyed, and the parser would start afresh.
    socket.on('data', (chunk: Buffer) => this.#read(chunk));
    socket.on('held', () => this.#account(false));
    socket.on('drain', () => this.#checkUnsent());
    socket.on('error', (error: Error) => this.close(`socket error: ${error.message}`));
    // The peer's FIN: what is still written would fail with EPIPE, and the socket's error would
    // close the connection before the packets that came with the FIN are handled (#peerGone).
    socket.on('end', () => (this.#peerEnded = true));
    socket.on('close', () => void this.#peerGone());
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

  /**
   * The protocol level the CONNECT asked for: packets are written in it from now on. For MQTT 5,
   * what the client announced it can take (the strict parser switched to MQTT 5 with the CONNECT).
   */
  useProtocolVersion(version: ProtocolVersion, announcement: ClientAnnouncement = {}): void {
    this.#protocolVersion = version;
    this.#fastPath.publishes = true;
    this.#fastPath.mqtt5 = version === 5;
    if (version === 5) this.#mqtt5 = new Mqtt5Link(announcement, this.context.options.topicAliasMaximum);
  }

  get protocolVersion(): ProtocolVersion {
    return this.#protocolVersion;
  }

  /** The MQTT 5 state of this connection; undefined for 3.1/3.1.1. */
  get mqtt5(): Mqtt5Link | undefined {
    return this.#mqtt5;
  }

  /**
   * The CONNECT is accepted: the connection now belongs to its session (and keeps its will until
   * it ends) and CONNACK goes out, with `properties` for an MQTT 5 client. false, having done
   * nothing: the connection closed while the session started, and the caller hands the session back.
   */
  accept(link: SessionLink, will: Will | undefined, sessionPresent: boolean, properties?: IConnackPacket['properties']): boolean {
    if (this.#state === 'closed') return false;
    this.#link = link;
    this.#will = will;
    this.#state = 'connected';
    if (this.#protocolVersion === 5) {
      this.send({ cmd: 'connack', reasonCode: Reason.SUCCESS, sessionPresent, ...(properties ? { properties } : {}) });
    } else {
      // MQTT 3.1's CONNACK has no session present flag: its first byte is reserved and 0.
      this.send({ cmd: 'connack', returnCode: 0, sessionPresent: this.#protocolVersion === 3 ? false : sessionPresent });
    }
    return true;
  }

  /**
   * CONNACK with a refusal code and session present 0 [MQTT-3.2.2-4], then close [MQTT-3.2.2-5];
   * nothing the client sent after the CONNECT is processed [MQTT-3.1.4-5], and a refused
   * connection has no will to publish. An MQTT 5 client gets the reason code and the reason as its
   * Reason String; a 3.1/3.1.1 client the return code of table 3.1 closest to it.
   */
  refuse(reason: ReasonCode, text: string): void {
    this.#will = undefined;
    const returnCode = v3ConnackCode(reason);
    if (this.#protocolVersion === 5) {
      this.send({ cmd: 'connack', reasonCode: reason, sessionPresent: false, properties: { reasonString: text } });
    } else {
      this.send({ cmd: 'connack', returnCode, sessionPresent: false });
    }
    this.#report('warn', refusalCause(returnCode), `CONNECT refused: ${text}`, { address: this.remote, reason: text });
    this.close(`CONNECT refused: ${text}`);
  }

  /**
   * The broker ends the connection: an MQTT 5 client is sent DISCONNECT with `reason` (and `text`
   * as its Reason String) first [MQTT-4.13.2-1]; a 3.1/3.1.1 connection, which has no such packet
   * from the server, is closed.
   */
  disconnect(reason: ReasonCode, text: string): void {
    if (this.#state === 'closed') return;
    if (this.#protocolVersion === 5 && this.#state === 'connected') {
      this.send({ cmd: 'disconnect', reasonCode: reason, properties: { reasonString: text } });
    }
    this.close(text);
  }

  /**
   * An acknowledgement: with its reason code for an MQTT 5 client (0 is left out, as the spec
   * allows, when there is no reason string to go with it), plain for 3.1/3.1.1.
   */
  acknowledge(cmd: AckCommand, messageId: number, reason: ReasonCode = Reason.SUCCESS, text?: string): void {
    if (this.#protocolVersion !== 5 || (reason === Reason.SUCCESS && text === undefined)) {
      this.#observeAck(cmd);
      this.#write(encodeAck(cmd, messageId));
      return;
    }
    const withText = text !== undefined && this.#mqtt5!.problemInformation;
    this.send({ cmd, messageId, reasonCode: reason, ...(withText ? { properties: { reasonString: text } } : {}) } as Packet);
  }

  /**
   * MQTT 5 Receive Maximum: whether the client, sending one more QoS 1/2 PUBLISH now, would have
   * more unacknowledged than the broker announced [MQTT-3.3.4-7]; QoS 2 ones count until PUBCOMP.
   */
  overReceiveMaximum(unreleasedQos2: number): boolean {
    return this.#mqtt5 !== undefined && this.#unacknowledgedQos1 + unreleasedQos2 >= this.context.options.receiveMaximum;
  }

  /** A QoS 1 PUBLISH is taken: it counts against Receive Maximum until `qos1Acknowledged`. */
  qos1Received(): void {
    this.#unacknowledgedQos1++;
  }

  qos1Acknowledged(): void {
    this.#unacknowledgedQos1--;
  }

  /**
   * What a DISCONNECT changes before the connection closes, whether its handler or the close of a
   * client gone before that handler ran (#closeAfterPeer) applies it: an MQTT 5 client's new
   * Session Expiry Interval, never from 0 [MQTT-3.14.2-2] (a ProtocolViolation, nothing changed),
   * and the will, discarded [MQTT-3.14.4-3] unless the reason is 0x04, Disconnect with Will
   * Message. Returns whether the will stays. Storing the expiry is the caller's.
   */
  applyDisconnect({ reasonCode, properties }: IDisconnectPacket): { withWill: boolean } {
    const expiry = properties?.sessionExpiryInterval;
    const session = this.#link?.session;
    if (expiry !== undefined && session !== undefined) {
      if (session.expiry === 0 && expiry !== 0) throw new ProtocolViolation('DISCONNECT sets a Session Expiry Interval where CONNECT had 0 [MQTT-3.14.2-2]');
      session.expiry = expiry;
    }
    const withWill = this.#protocolVersion === 5 && reasonCode === Reason.DISCONNECT_WITH_WILL;
    if (!withWill) this.#will = undefined;
    return { withWill };
  }

  /** The session this connection belongs to; the dispatcher lets no packet but CONNECT through before there is one. */
  requireLink(): SessionLink {
    if (!this.#link) throw new ProtocolViolation('no session');
    return this.#link;
  }

  send(packet: Packet): void {
    this.#observeAck(packet.cmd);
    this.#write(mqttPacket.generate(packet, { protocolVersion: this.#protocolVersion }));
  }

  #observeAck(cmd: Packet['cmd']): void {
    if ((cmd === 'puback' || cmd === 'pubrec') && this.#ackWaits.length > 0) {
      // Replies leave in the order their PUBLISHes arrived, one PUBACK or PUBREC each.
      this.context.observePublishAck?.((performance.now() - this.#ackWaits.shift()!) / 1000);
    }
  }

  /**
   * Packets written in one tick (a burst of PUBLISHes, a run of acks) leave in one socket write of
   * one buffer: a stream write per packet, even corked, cost more than encoding the packet.
   */
  #write(bytes: Buffer): void {
    if (this.#state === 'closed' || this.#socket.destroyed || this.#peerEnded) return;
    this.context.traffic.packetsSent++;
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
    if (this.#socket.destroyed || this.#peerEnded) return;
    // Counted in the broker-wide budget until the kernel has it (or the socket is gone: the
    // callback runs then too, with an error).
    const { unsent } = this.context;
    unsent.take(size);
    const taken = () => unsent.give(size);
    this.context.traffic.bytesSent += size;
    if (outbox.length === 1) {
      this.#socket.write(outbox[0]!, taken);
    } else if (size <= OUTBOX_COPY_LIMIT) {
      this.#socket.write(Buffer.concat(outbox, size), taken);
    } else {
      // Large payloads: copying them into one buffer would cost more than the writes.
      this.#socket.cork();
      for (let index = 0; index < outbox.length - 1; index++) this.#socket.write(outbox[index]!);
      this.#socket.write(outbox[outbox.length - 1]!, taken);
      this.#socket.uncork();
    }
    // The socket took it all at once (no 'drain' to come) or kept some of it: look at what waits now.
    this.#checkUnsent();
  }

  /**
   * After a flush and on 'drain', when the outbox is empty: is the client keeping up with what it
   * is sent? Not while the socket holds maxUnsentBytes unsent; again once it holds less than half.
   * Not looked at within a tick, whose outbox may briefly hold more than the kernel then takes at once.
   */
  #checkUnsent(): void {
    if (this.#state === 'closed') return;
    const unsent = this.#socket.writableLength;
    const limit = this.#unsentLimit();
    if (unsent >= limit) {
      this.#noteNotReading();
    } else if (unsent < limit / 2) {
      this.#notReading = false;
      if (this.#drainWaiters.length > 0) {
        const waiters = this.#drainWaiters;
        this.#drainWaiters = [];
        for (const resume of waiters) resume();
      }
    }
    this.#flowControl();
  }

  /** What this client may have waiting unsent: max_unsent_bytes, or its share while the broker-wide budget is over. */
  #unsentLimit(): number {
    const { maxUnsentBytes } = this.context.options;
    return this.context.unsent.over ? Math.min(maxUnsentBytes, UNSENT_SHARE) : maxUnsentBytes;
  }

  /** OutboundChannel: an MQTT 5 client's Receive Maximum; undefined for 3.1/3.1.1 (max_inflight alone bounds them). */
  get receiveMaximum(): number | undefined {
    return this.#mqtt5?.receiveMaximum;
  }

  /** OutboundChannel: bytes of deliveries this client may be sent before it holds too much unsent. */
  get room(): number {
    if (this.#notReading) return 0;
    return this.#unsentLimit() - this.#socket.writableLength - this.#outboxBytes;
  }

  /** Resumed from #checkUnsent, once less than half of what this client may hold waits unsent. */
  whenDrained(resume: () => void): void {
    this.#drainWaiters.push(resume);
  }

  publish(packet: OutgoingPublish): boolean {
    // Written and not yet handed to the kernel: on the socket, and in this tick's outbox.
    if (packet.qos === 0 && this.#socket.writableLength + this.#outboxBytes > this.#unsentLimit()) {
      this.context.counters.qos0Dropped++;
      this.#noteNotReading();
      return true;
    }
    const mqtt5 = this.#mqtt5;
    if (mqtt5 === undefined) {
      this.context.traffic.publishesSent++;
      this.#write(encodePublish(packet));
      return true;
    }
    const alias = mqtt5.outboundAlias(packet.topic);
    const bytes = encodePublish(packet, { now: Date.now(), ...(alias ? { topicAlias: alias.alias, omitTopic: alias.known } : {}) });
    if (bytes.length > mqtt5.maximumPacketSize) {
      // Too large for the client: not sent, and the delivery is complete all the same [MQTT-3.1.2-25].
      this.context.counters.publishesOverClientMaximum++;
      return false;
    }
    if (alias && !alias.known) mqtt5.confirmAlias(packet.topic, alias.alias);
    this.context.traffic.publishesSent++;
    this.#write(bytes);
    return true;
  }

  pubrel(packetId: number): void {
    this.#write(encodeAck('pubrel', packetId));
  }

  end(reason: string, cause?: EndCause): void {
    if (cause === 'taken-over') this.#takenOver = true;
    if (cause === undefined) this.close(reason);
    else this.disconnect(reasonOfEnd(cause), reason);
  }

  /**
   * Runs `send` once `work` is done and every earlier `send` has run, so replies (and the
   * deliveries they follow) keep the order in which packets arrived. A failure of `work` (a store
   * write) means no reply: the connection is closed instead, and the client re-sends what was not
   * acknowledged when it reconnects.
   */
  reply<T>(work: Promise<T>, send: (result: T) => void | Promise<void>, onFailure?: () => void, heldBytes = 0): void {
    this.#replies.add(work, send, onFailure, heldBytes);
  }

  /** `reply`, with the reply as an object (see Reply). */
  replyWith<T>(work: Promise<T>, reply: Reply<T>): void {
    this.#replies.addReply(work, reply);
  }

  /**
   * Runs a store transition that has no reply of its own (PUBACK, PUBREC, PUBCOMP from the client)
   * without holding up the packets behind it: the store applies transitions in submission order,
   * so awaiting each would only make every acknowledgement wait for its own fsync.
   */
  background(work: Promise<unknown>): void {
    work.catch((error: unknown) => {
      if (this.#state === 'closed') return; // once per connection, as in reply()
      this.#storeFailed(`${errorMessage(error)}; closing the connection`);
    });
  }

  /** One line per interval for all connections: the store itself reports the failure (WriteFailures). */
  #storeFailed(text: string): void {
    this.#report('error', LogCauses.STORE_FAILURE, text);
    this.close('store failure');
  }

  /**
   * A line about this connection that any client can make us repeat at will: summarized per
   * cause across all connections (the first at once, then a count; see LogSummary).
   */
  #report(level: 'warn' | 'error', cause: string, text: string, fields?: LogFields): void {
    fields ??= { clientId: this.clientId, address: this.remote };
    this.#summary[level](cause, { message: `${this.describe()}: ${text}`, fields, source: this.sourceAddress });
  }

  /** Resolves when every reply queued so far is sent (or abandoned). */
  repliesSent(): Promise<void> {
    return this.#replies.sent();
  }

  /** Keepalive: close after 1.5 times the interval without a packet [MQTT-3.1.2-24]. Zero turns it off. */
  startKeepalive(seconds: number): void {
    this.#keepaliveSeconds = seconds;
    if (this.#connectTimer) clearTimeout(this.#connectTimer);
    this.#connectTimer = undefined;
    if (seconds > 0) {
      this.#keepaliveTimer = setTimeout(() => this.disconnect(Reason.KEEP_ALIVE_TIMEOUT, 'keepalive expired'), seconds * 1500);
    }
  }

  describe(): string {
    return this.clientId === undefined ? `connection ${this.remote}` : `client ${JSON.stringify(this.clientId)}`;
  }

  /**
   * Who this is, from where, with what: the fields of its connect and disconnect lines (see
   * src/logger.ts for the names). The user is the session's owner, who a connected client is.
   */
  logFields(more: LogFields = {}): LogFields {
    const session = this.#link?.session;
    return {
      clientId: this.clientId,
      address: this.remote,
      listener: this.listener.name,
      protocolVersion: this.#protocolVersion,
      ...(session ? { clean: session.clean, user: session.owner } : {}),
      keepalive: this.#keepaliveSeconds,
      ...more,
    };
  }

  /**
   * The client's side of the socket is gone. What it sent before is still its last word, handled
   * in order before the connection closes (nothing can be answered any more): a QoS 0 PUBLISH,
   * DISCONNECT and FIN in a row, as mosquitto_pub sends them, may all arrive while the CONNECT is
   * still being handled (a persistent session's start waits for the store), and the PUBLISH must
   * still be routed and the DISCONNECT still discard the will [MQTT-3.14.4-3] and set the Session
   * Expiry Interval. Bounded: handlers that do not finish in time are not waited for, and a
   * DISCONNECT still waiting behind them is applied as the connection closes (#closeAfterPeer).
   */
  async #peerGone(): Promise<void> {
    let graceOver = false;
    const grace = new Promise<void>((resolve) => {
      setTimeout(() => {
        graceOver = true;
        resolve();
      }, PEER_GONE_GRACE_MS).unref();
    });
    while (!graceOver && this.#state !== 'closed' && (this.#processing !== undefined || this.#inbox.length > 0)) {
      if (this.#processing === undefined) this.#startProcessing();
      await Promise.race([this.#processing?.catch(() => {}), grace]);
    }
    this.#closeAfterPeer();
  }

  /**
   * The client is gone and its packets handled, or no longer waited for. A DISCONNECT among those
   * still waiting was received all the same: the will is discarded (MQTT 5: unless its reason asks
   * for it), its Session Expiry Interval applies, and the close is the DISCONNECT's.
   */
  #closeAfterPeer(): void {
    if (this.#state === 'closed') return;
    const disconnect = this.#state === 'connected' ? this.#inbox.find((packet) => packet.cmd === 'disconnect') : undefined;
    if (disconnect === undefined) {
      this.close('connection lost');
      return;
    }
    // Applied as its handler would; the session manager stores the new expiry as it closes the
    // session (or ends the session now for 0).
    let withWill: boolean;
    try {
      ({ withWill } = this.applyDisconnect(disconnect as IDisconnectPacket));
    } catch (error) {
      this.close(errorMessage(error));
      return;
    }
    this.close('DISCONNECT', { graceful: !withWill });
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
    discardUnfinished(this.#parser);
    this.#arriving.release();
    // end() sends what was written (a refusing CONNACK) before the FIN; a peer that never
    // finishes its side is cut off shortly after.
    if (this.context.shuttingDown) {
      this.#flush(); // a DISCONNECT 0x8B, if one was written: the write is tried at once
      this.#socket.destroy();
    } else {
      this.#flush();
      this.#socket.end();
      setTimeout(() => this.#socket.destroy(), 1000).unref();
    }
    if (wasConnected) this.context.log.info(`${this.describe()} disconnected: ${reason}`, this.logFields({ reason }));
    void this.#finish(options.graceful === true).finally(() => this.#closedResolve());
  }

  async #finish(graceful: boolean): Promise<void> {
    const { sessions, shuttingDown } = this.context;
    const will = this.#will;
    this.#will = undefined;
    if (will && !graceful && !shuttingDown) {
      const session = this.#link?.session;
      // MQTT 5 Will Delay Interval: the will waits, in the session manager, for the client to come
      // back [MQTT-3.1.3-9]; a session that ends with this connection publishes it now [MQTT-3.1.2-8].
      if (will.delaySeconds && session && !session.clean && session.expiry !== 0) {
        // Taken over: a new connection to the session came within the delay, so the will is not
        // published [MQTT-3.1.3-9] (the session manager cancelled pending wills before ending this one).
        if (!this.#takenOver) sessions.deferWill(session.clientId, will.delaySeconds, () => this.#publishWill(will));
      } else {
        await this.#publishWill(will);
      }
    }
    await Promise.allSettled([this.#processing, this.#replies.sent()]);
    if (this.#link) {
      try {
        await sessions.close(this.#link.session, this);
      } catch (error) {
        this.#report('error', LogCauses.STORE_FAILURE, `session not closed cleanly: ${errorMessage(error)}`);
      }
    }
  }

  /** Publishes the will, if the ACL lets its client publish on its topic now. */
  async #publishWill(will: Will): Promise<void> {
    try {
      if (!this.context.access.canPublish(will.clientId, will.user, will.message.topic)) {
        this.context.counters.publishesRefused++;
        this.#report('warn', LogCauses.WILL_REFUSED, `will message on ${JSON.stringify(will.message.topic)} not published: the ACL does not allow it`);
        return;
      }
      let message = will.message;
      if (will.expirySeconds !== undefined) {
        // A will's Message Expiry Interval counts from its publication (MQTT 5.0 3.1.3.2.4).
        message = { ...message, properties: { ...message.properties, expiresAt: Date.now() + will.expirySeconds * 1000 } };
      }
      await this.context.distributor.publish(message, { retain: will.retain, origin: will.clientId });
    } catch (error) {
      this.#report('error', LogCauses.STORE_FAILURE, `will message not published: ${errorMessage(error)}`);
    }
  }

  #read(chunk: Buffer): void {
    // An empty WebSocket message carries nothing, and leaves the parser as it was.
    if (this.#state === 'closed' || chunk.length === 0) return;
    this.context.traffic.bytesReceived += chunk.length;
    const received = this.#packetsReceived;
    // Until the CONNECT is accepted, every byte goes through the parser and its checks.
    const held = this.#state === 'connected' ? readPackets(chunk, this.#parser, this.#fastPath, this.#onPacket) : this.#parser.parse(chunk);
    if (this.isClosed) return;
    this.#parserHeld = held;
    this.#account(this.#packetsReceived !== received);
  }

  /**
   * The bytes of the packet underway, the parser's and those held below it by the transport,
   * against the broker's budget and the packet clock. Over the budget, this connection (whose
   * bytes would take the total over it) is closed: not reading it instead could leave every
   * connection paused halfway through a packet, each waiting for room the others hold.
   */
  #account(newPacket: boolean): void {
    if (this.#state === 'closed') return;
    const below = this.#socket.heldBelow ?? 0;
    if (!this.#arriving.update(this.#parserHeld + below, below > 0 || packetUnderway(this.#parser), newPacket)) {
      const { max } = this.context.unfinishedPackets;
      this.#report(
        'warn',
        LogCauses.UNFINISHED_OVER_BUDGET,
        `packets still arriving would hold more than max_unfinished_packet_bytes (${max}) across all connections; closing this one`,
      );
      this.close('unfinished packets over max_unfinished_packet_bytes');
    }
  }

  #packetTimedOut(): void {
    const { packetTimeoutMs } = this.context.options;
    this.#report('warn', LogCauses.PACKET_TIMEOUT, `a packet begun ${packetTimeoutMs} ms ago is not complete (packet_timeout_ms); closing the connection`);
    this.close('packet not complete in time');
  }

  #receive(packet: Packet): void {
    if (this.#state === 'closed') return;
    this.#packetsReceived++;
    const { traffic } = this.context;
    traffic.packetsReceived++;
    if (packet.cmd === 'publish') {
      traffic.publishesReceived++;
      if (packet.qos > 0 && this.context.observePublishAck) this.#ackWaits.push(performance.now());
    } else if (packet.cmd === 'connect') {
      traffic.connects++;
    }
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
      this.#report('warn', LogCauses.PROTOCOL_VIOLATION, `protocol violation: ${error.message}`);
      this.disconnect(error.reasonCode as ReasonCode, `protocol violation: ${error.message}`);
    } else {
      this.#report('error', LogCauses.HANDLER_FAILED, errorMessage(error));
      this.close(errorMessage(error));
    }
  }

  /**
   * Pauses reading while too much of this client's input waits (see the high-water marks), or too
   * much of its output (it does not read what we send: maxUnsentBytes), and resumes at half.
   * Also while its CONNECT is handled: authentication can take a while (scrypt), and a client not
   * yet let in must not make us hold what it sends behind it.
   */
  #flowControl(): void {
    if (this.#state === 'closed') return;
    if (
      this.#state === 'connecting' ||
      this.#notReading ||
      this.#inbox.length >= INBOX_HIGH_WATER ||
      this.#inboxBytes >= INBOX_HIGH_WATER_BYTES ||
      this.#replies.count >= UNREPLIED_HIGH_WATER ||
      this.#replies.bytes >= UNREPLIED_HIGH_WATER_BYTES
    ) {
      this.#pauseReading();
    } else if (
      this.#readingPaused &&
      this.#inbox.length < INBOX_HIGH_WATER / 2 &&
      this.#inboxBytes < INBOX_HIGH_WATER_BYTES / 2 &&
      this.#replies.count < UNREPLIED_HIGH_WATER / 2 &&
      this.#replies.bytes < UNREPLIED_HIGH_WATER_BYTES / 2
    ) {
      this.#resumeReading();
    }
  }

  #pauseReading(): void {
    if (this.#readingPaused) return;
    this.#readingPaused = true;
    this.#socket.pause();
    this.#arriving.pause();
  }

  #resumeReading(): void {
    this.#readingPaused = false;
    this.#socket.resume();
    this.#arriving.resume(packetUnderway(this.#parser));
  }

  /** maxUnsentBytes reached: QoS 0 for it is dropped and it is not read until it catches up. */
  #noteNotReading(): void {
    if (this.#notReading) return;
    this.#notReading = true;
    const { maxUnsentBytes } = this.context.options;
    this.#report(
      'warn',
      LogCauses.NOT_READING,
      `not reading what it is sent (${maxUnsentBytes} bytes wait unsent, max_unsent_bytes): QoS 0 messages for it are dropped and nothing more is read from it until it catches up`,
    );
  }

  #malformed(error: Error): void {
    if (this.#state === 'closed') return;
    if (this.#state === 'awaiting-connect' && /protocol version/i.test(error.message)) {
      // An unsupported protocol level gets CONNACK 0x01 before the close [MQTT-3.1.2-2].
      this.send({ cmd: 'connack', returnCode: 1, sessionPresent: false });
    }
    if (error instanceof PacketTooLarge) this.context.counters.packetsTooLarge++;
    this.#report('warn', LogCauses.MALFORMED, `malformed packet: ${error.message}`);
    const reason = error instanceof PacketTooLarge ? Reason.PACKET_TOO_LARGE : error instanceof ProtocolError ? Reason.PROTOCOL_ERROR : Reason.MALFORMED_PACKET;
    this.disconnect(reason, `malformed packet: ${error.message}`);
  }
}
