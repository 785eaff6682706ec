/**
 * Model MQTT peers for the randomized crash test: a persistent publisher and a persistent
 * subscriber on raw `mqtt-packet` sockets that keep their protocol state (packet ids in flight,
 * QoS 2 receiver state) across connections, as a real client library does, and record everything
 * they see. Packets are handled the moment they arrive (no queue), so a test can act at an exact
 * count of events, e.g. SIGKILL the broker on the 137th acknowledgement.
 */
import { connect as netConnect, type Socket } from 'node:net';
import mqttPacket, { type IConnackPacket, type IPublishPacket, type Packet } from 'mqtt-packet';

// ---------------------------------------------------------------------------------------------
// Seeded randomness

/** mulberry32: small, fast, good enough to choose test moves; the same seed gives the same moves. */
export class Random {
  #state: number;

  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Uniform integer in [min, max], both included. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }

  chance(probability: number): boolean {
    return this.next() < probability;
  }

  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)]!;
  }
}

// ---------------------------------------------------------------------------------------------
// Link: one connection, packets pushed to a handler as they are parsed

/** One raw MQTT connection. Everything after the CONNACK goes straight to `onPacket`. */
export class Link {
  readonly socket: Socket;
  readonly closed: Promise<void>;
  #closed = false;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('error', () => {});
    this.closed = new Promise((resolve) =>
      socket.once('close', () => {
        this.#closed = true;
        resolve();
      }),
    );
  }

  /**
   * Connects and completes CONNECT/CONNACK. `onConnack` runs synchronously on the CONNACK, before
   * any packet that follows it (a resumed session's re-sends can share its TCP segment); later
   * packets go to `onPacket`. Resolves undefined when the broker is gone (connection refused, or
   * closed before its CONNACK): the caller treats that peer as offline.
   */
  static async open(
    port: number,
    connect: { clientId: string; clean: boolean },
    handlers: { onConnack: (link: Link, connack: IConnackPacket) => void; onPacket: (packet: Packet, link: Link) => void },
  ): Promise<{ link: Link; connack: IConnackPacket } | undefined> {
    const socket = netConnect(port, '127.0.0.1');
    socket.setNoDelay(true);
    const link = new Link(socket);
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    return new Promise((resolve) => {
      let connack: IConnackPacket | undefined;
      parser.on('packet', (packet: Packet) => {
        if (connack) return handlers.onPacket(packet, link);
        if (packet.cmd !== 'connack') {
          socket.destroy();
          return;
        }
        connack = packet;
        handlers.onConnack(link, connack);
        resolve({ link, connack });
      });
      parser.on('error', () => socket.destroy());
      socket.on('data', (chunk: Buffer) => parser.parse(chunk));
      void link.closed.then(() => {
        if (!connack) resolve(undefined);
      });
      socket.once('connect', () =>
        socket.write(
          mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, keepalive: 0, ...connect }),
        ),
      );
    });
  }

  get isClosed(): boolean {
    return this.#closed;
  }

  send(packet: Packet): void {
    if (this.#closed || this.socket.destroyed) return;
    this.socket.write(mqttPacket.generate(packet));
  }

  /** Drops the connection without DISCONNECT, as a client losing its network does. */
  async destroy(): Promise<void> {
    this.socket.destroy();
    await this.closed;
  }

  /** DISCONNECT, then waits for the broker to close the connection. */
  async disconnect(): Promise<void> {
    this.send({ cmd: 'disconnect' });
    await this.closed;
  }
}

// ---------------------------------------------------------------------------------------------
// Payloads

export interface MessageInfo {
  /** `${publisher}#${packetId}`: unique, publishers never reuse a packet id. */
  uid: string;
  publisher: string;
  topic: string;
  /** Per publisher and topic: 1, 2, 3… in publish order. */
  counter: number;
  qos: 1 | 2;
  marker: boolean;
}

function encode(info: MessageInfo): Buffer {
  return Buffer.from(JSON.stringify(info));
}

function decode(payload: Buffer | string): MessageInfo {
  return JSON.parse(payload.toString()) as MessageInfo;
}

// ---------------------------------------------------------------------------------------------
// Publisher

interface Outgoing {
  info: MessageInfo;
  packetId: number;
  /** 'published': PUBLISH sent, no PUBACK/PUBREC yet; 'released': PUBREC came, PUBREL sent. */
  state: 'published' | 'released';
}

export interface PublisherOptions {
  clientId: string;
  /**
   * On reconnect, re-send unacknowledged PUBLISHes with DUP=1 and their original packet ids, as
   * [MQTT-4.4.0-1] asks. false: give them up (they were never acknowledged, losing them is allowed).
   */
  resendUnacknowledged: boolean;
}

/**
 * A CleanSession=0 publisher of QoS 1/2 messages, windowed. Packet ids go 1, 2, 3… and are never
 * reused. After a reconnect it sends PUBREL for every QoS 2 message that got PUBREC but no PUBCOMP
 * and (optionally) re-sends what was never acknowledged, in the original order.
 */
export class Publisher {
  readonly clientId: string;
  readonly #resend: boolean;
  #link: Link | undefined;
  #nextPacketId = 1;
  readonly #counters = new Map<string, number>();
  /** Packet id → message whose flow is not complete, in packet id (= send) order. */
  readonly #flows = new Map<number, Outgoing>();
  /** Every message published (first sends), by uid. */
  readonly published = new Map<string, MessageInfo>();
  /** Messages acknowledged by PUBACK (QoS 1) or PUBREC (QoS 2), by uid. */
  readonly acknowledged = new Map<string, MessageInfo>();
  /** Unacknowledged messages given up on reconnect. */
  readonly abandoned = new Set<string>();
  /** Messages re-sent (DUP=1) after a reconnect: the broker may hold two copies of them. */
  readonly resentUids = new Set<string>();
  resent = 0;
  connections = 0;
  readonly anomalies: string[] = [];

  /** Messages still to publish in this round, and the window of unacknowledged PUBLISHes. */
  #plan: Array<{ topic: string; qos: 1 | 2; marker?: boolean }> = [];
  #window = 1;
  #waiters: Array<() => void> = [];
  /** Called on every PUBACK/PUBREC of a message not acknowledged before. */
  onAcknowledged: (() => void) | undefined;

  constructor(options: PublisherOptions) {
    this.clientId = options.clientId;
    this.#resend = options.resendUnacknowledged;
  }

  get connected(): boolean {
    return this.#link !== undefined && !this.#link.isClosed;
  }

  get link(): Link | undefined {
    return this.#link;
  }

  get packetIdsUsed(): number {
    return this.#nextPacketId - 1;
  }

  /** Incomplete flows (published and unacknowledged, or released and awaiting PUBCOMP). */
  get inFlight(): number {
    return this.#flows.size;
  }

  get planned(): number {
    return this.#plan.length;
  }

  /** false: the broker is gone. */
  async connect(port: number): Promise<boolean> {
    const opened = await Link.open(
      port,
      { clientId: this.clientId, clean: false },
      { onConnack: (link) => (this.#link = link), onPacket: (packet, link) => this.#onPacket(packet, link) },
    );
    if (!opened) return false;
    const { link, connack } = opened;
    void link.closed.then(() => this.#wake());
    if (connack.returnCode !== 0) {
      this.anomalies.push(`${this.clientId}: CONNACK return code ${connack.returnCode}`);
      await link.destroy();
      return false;
    }
    if (this.connections > 0 && !connack.sessionPresent) {
      this.anomalies.push(`${this.clientId}: CONNACK session present = 0 on reconnect ${this.connections}`);
    }
    this.connections++;
    // Continue every incomplete flow in its original order [MQTT-4.4.0-1].
    for (const [packetId, flow] of [...this.#flows]) {
      if (flow.state === 'released') {
        link.send({ cmd: 'pubrel', messageId: packetId });
      } else if (this.#resend) {
        this.resent++;
        this.resentUids.add(flow.info.uid);
        link.send(this.#publishPacket(flow, true));
      } else {
        this.#flows.delete(packetId);
        this.abandoned.add(flow.info.uid);
      }
    }
    this.#fill();
    return true;
  }

  /** Queues messages to publish, sent with at most `window` PUBLISHes unacknowledged. */
  load(plan: Array<{ topic: string; qos: 1 | 2; marker?: boolean }>, window: number): void {
    this.#plan.push(...plan);
    this.#window = window;
    this.#fill();
  }

  /** Drops the messages planned and not yet sent (they were never published). */
  clearPlan(): void {
    this.#plan = [];
  }

  /** Resolves once everything planned is sent and every flow is complete; rejects if the connection ends first. */
  async settled(): Promise<void> {
    for (;;) {
      if (this.#plan.length === 0 && this.#flows.size === 0) return;
      if (!this.connected) throw new Error(`${this.clientId}: connection closed with ${this.#flows.size} flows incomplete`);
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
  }

  async destroy(): Promise<void> {
    await this.#link?.destroy();
  }

  #fill(): void {
    const link = this.#link;
    if (!link || link.isClosed) return;
    let unacknowledged = 0;
    for (const flow of this.#flows.values()) if (flow.state === 'published') unacknowledged++;
    while (unacknowledged < this.#window && this.#plan.length > 0) {
      const { topic, qos, marker = false } = this.#plan.shift()!;
      const packetId = this.#nextPacketId++;
      if (packetId > 65535) throw new Error(`${this.clientId}: out of packet ids (the test must not reuse them)`);
      const counter = (this.#counters.get(topic) ?? 0) + 1;
      this.#counters.set(topic, counter);
      const info: MessageInfo = { uid: `${this.clientId}#${packetId}`, publisher: this.clientId, topic, counter, qos, marker };
      const flow: Outgoing = { info, packetId, state: 'published' };
      this.#flows.set(packetId, flow);
      this.published.set(info.uid, info);
      link.send(this.#publishPacket(flow, false));
      unacknowledged++;
    }
  }

  #publishPacket(flow: Outgoing, dup: boolean): IPublishPacket {
    const { info, packetId } = flow;
    return { cmd: 'publish', topic: info.topic, payload: encode(info), qos: info.qos, dup, retain: false, messageId: packetId };
  }

  #acknowledge(flow: Outgoing): void {
    if (!this.acknowledged.has(flow.info.uid)) {
      this.acknowledged.set(flow.info.uid, flow.info);
      this.onAcknowledged?.();
    }
  }

  #onPacket(packet: Packet, link: Link): void {
    switch (packet.cmd) {
      case 'puback': {
        const flow = this.#flows.get(packet.messageId!);
        if (!flow || flow.info.qos !== 1) {
          this.anomalies.push(`${this.clientId}: PUBACK ${packet.messageId} for no QoS 1 message in flight`);
          break;
        }
        this.#flows.delete(packet.messageId!);
        this.#acknowledge(flow);
        break;
      }
      case 'pubrec': {
        const flow = this.#flows.get(packet.messageId!);
        if (!flow || flow.info.qos !== 2) {
          this.anomalies.push(`${this.clientId}: PUBREC ${packet.messageId} for no QoS 2 message in flight`);
          break;
        }
        flow.state = 'released';
        link.send({ cmd: 'pubrel', messageId: packet.messageId! });
        this.#acknowledge(flow);
        break;
      }
      case 'pubcomp': {
        const flow = this.#flows.get(packet.messageId!);
        if (flow?.state !== 'released') {
          this.anomalies.push(`${this.clientId}: PUBCOMP ${packet.messageId} for no released QoS 2 message`);
          break;
        }
        this.#flows.delete(packet.messageId!);
        break;
      }
      default:
        this.anomalies.push(`${this.clientId}: unexpected ${packet.cmd}`);
    }
    this.#fill();
    this.#wake();
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }
}

// ---------------------------------------------------------------------------------------------
// Subscriber

export interface Delivery {
  info: MessageInfo;
  /** QoS of the PUBLISH as delivered. */
  qos: number;
  dup: boolean;
  packetId: number;
  /**
   * A new delivery: QoS 1 always (the receiver cannot tell a re-send), QoS 2 unless its packet id
   * is in the receiver state (received, PUBREC sent, no PUBREL yet), which makes it a re-send.
   */
  isNew: boolean;
}

export interface SubscriberOptions {
  clientId: string;
  subscriptions: Array<{ topic: string; qos: 1 | 2 }>;
}

/**
 * A CleanSession=0 subscriber that acknowledges everything (QoS 1 → PUBACK; QoS 2 → PUBREC, and on
 * PUBREL → PUBCOMP) and keeps its QoS 2 receiver state across connections. It records every
 * delivery and flags what a correct broker never does (a QoS 2 message delivered a second time or
 * after its PUBCOMP, a packet id reused while in the receiver state, a wrong QoS).
 */
export class Subscriber {
  readonly clientId: string;
  readonly subscriptions: ReadonlyArray<{ topic: string; qos: 1 | 2 }>;
  #link: Link | undefined;
  #subscribed = false;
  #subackWaiter: ((granted: number[]) => void) | undefined;
  /** QoS 2 receiver state: packet id → uid received, PUBREC sent, PUBREL not yet received. */
  readonly #pendingRelease = new Map<number, string>();
  readonly deliveries: Delivery[] = [];
  /** uid → number of arrivals (any QoS, new or not). */
  readonly arrivals = new Map<string, number>();
  /** uids of QoS 2 deliveries for which PUBCOMP was sent. */
  readonly completed = new Set<string>();
  /** uid → number of new QoS 2 deliveries (must stay 1). */
  readonly #newQos2 = new Map<string, number>();
  readonly violations: string[] = [];
  readonly anomalies: string[] = [];
  connections = 0;
  /** QoS 1 arrivals of a message received before. */
  qos1Duplicates = 0;
  /** Of those, arrivals with DUP=0: a second stored copy (the publisher re-sent it after a crash). */
  qos1Copies = 0;
  /** QoS 2 PUBLISHes re-sent for a packet id still held (PUBREC sent, no PUBREL yet). */
  qos2Resends = 0;
  #waiters: Array<() => void> = [];
  /** Called on every PUBLISH received. */
  onDelivery: ((delivery: Delivery) => void) | undefined;
  /** Called on every PUBREL received (after PUBCOMP was sent). */
  onRelease: (() => void) | undefined;

  constructor(options: SubscriberOptions) {
    this.clientId = options.clientId;
    this.subscriptions = options.subscriptions;
  }

  get connected(): boolean {
    return this.#link !== undefined && !this.#link.isClosed;
  }

  get link(): Link | undefined {
    return this.#link;
  }

  /** The QoS at which this subscriber gets a message on `topic` (exact topic filters only). */
  grantedFor(topic: string): 1 | 2 | undefined {
    return this.subscriptions.find((subscription) => subscription.topic === topic)?.qos;
  }

  /** Connects; the first connection subscribes. false: the broker is gone. */
  async connect(port: number): Promise<boolean> {
    const opened = await Link.open(
      port,
      { clientId: this.clientId, clean: false },
      { onConnack: (link) => (this.#link = link), onPacket: (packet, link) => this.#onPacket(packet, link) },
    );
    if (!opened) return false;
    const { link, connack } = opened;
    void link.closed.then(() => this.#wake());
    if (connack.returnCode !== 0) {
      this.anomalies.push(`${this.clientId}: CONNACK return code ${connack.returnCode}`);
      await link.destroy();
      return false;
    }
    if (this.#subscribed && !connack.sessionPresent) {
      this.anomalies.push(`${this.clientId}: CONNACK session present = 0 on reconnect ${this.connections}`);
    }
    this.connections++;
    if (!this.#subscribed) {
      const granted = new Promise<number[]>((resolve) => (this.#subackWaiter = resolve));
      link.send({ cmd: 'subscribe', messageId: 1, subscriptions: [...this.subscriptions] });
      const result = await Promise.race([granted, link.closed.then(() => undefined)]);
      if (!result) return false;
      const expected = this.subscriptions.map(({ qos }) => qos);
      if (JSON.stringify(result) !== JSON.stringify(expected)) {
        throw new Error(`${this.clientId}: SUBACK granted ${JSON.stringify(result)}, expected ${JSON.stringify(expected)}`);
      }
      this.#subscribed = true;
    }
    return true;
  }

  async destroy(): Promise<void> {
    await this.#link?.destroy();
  }

  async disconnect(): Promise<void> {
    await this.#link?.disconnect();
  }

  /** Resolves once `done()` holds; rejects if the connection ends first. */
  async until(done: () => boolean, what: string): Promise<void> {
    for (;;) {
      if (done()) return;
      if (!this.connected) throw new Error(`${this.clientId}: connection closed while waiting for ${what}`);
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
  }

  #onPacket(packet: Packet, link: Link): void {
    switch (packet.cmd) {
      case 'suback':
        this.#subackWaiter?.(packet.granted as number[]);
        this.#subackWaiter = undefined;
        break;
      case 'publish':
        this.#onPublish(link, packet);
        break;
      case 'pubrel': {
        const packetId = packet.messageId!;
        const uid = this.#pendingRelease.get(packetId);
        this.#pendingRelease.delete(packetId);
        // PUBCOMP also for an id we no longer hold: a re-sent PUBREL after a lost PUBCOMP.
        link.send({ cmd: 'pubcomp', messageId: packetId });
        if (uid !== undefined) this.completed.add(uid);
        this.onRelease?.();
        break;
      }
      default:
        this.anomalies.push(`${this.clientId}: unexpected ${packet.cmd}`);
    }
    this.#wake();
  }

  #onPublish(link: Link, packet: IPublishPacket): void {
    const info = decode(packet.payload);
    const packetId = packet.messageId!;
    const granted = this.grantedFor(info.topic);
    if (granted === undefined) this.violations.push(`${info.uid} on ${info.topic}: not subscribed`);
    const expectedQos = Math.min(info.qos, granted ?? 2);
    if (packet.qos !== expectedQos) this.violations.push(`${info.uid}: delivered at QoS ${packet.qos}, expected ${expectedQos}`);
    this.arrivals.set(info.uid, (this.arrivals.get(info.uid) ?? 0) + 1);

    let isNew = true;
    if (packet.qos === 2) {
      const pending = this.#pendingRelease.get(packetId);
      if (pending !== undefined) {
        // A re-send of a QoS 2 PUBLISH we hold: PUBREC again, not a new delivery [MQTT-4.3.3-2].
        isNew = false;
        this.qos2Resends++;
        if (pending !== info.uid) {
          this.violations.push(`packet id ${packetId} reused for ${info.uid} while ${pending} awaits PUBREL`);
        }
      } else {
        const count = (this.#newQos2.get(info.uid) ?? 0) + 1;
        this.#newQos2.set(info.uid, count);
        if (this.completed.has(info.uid)) {
          this.violations.push(`${info.uid}: QoS 2 delivered again (packet id ${packetId}, dup=${packet.dup}) after its PUBCOMP`);
        } else if (count > 1) {
          this.violations.push(`${info.uid}: QoS 2 delivered ${count} times as a new delivery (packet id ${packetId}, dup=${packet.dup})`);
        }
        this.#pendingRelease.set(packetId, info.uid);
      }
      link.send({ cmd: 'pubrec', messageId: packetId });
    } else {
      if (this.#pendingRelease.has(packetId)) {
        this.violations.push(`packet id ${packetId} reused for QoS ${packet.qos} ${info.uid} while ${this.#pendingRelease.get(packetId)} awaits PUBREL`);
      }
      if ((this.arrivals.get(info.uid) ?? 0) > 1) {
        this.qos1Duplicates++;
        // Without DUP=1 it is another copy of the message (a publisher re-sent it), not a redelivery.
        if (!packet.dup) this.qos1Copies++;
      }
      link.send({ cmd: 'puback', messageId: packetId });
    }
    const delivery: Delivery = { info, qos: packet.qos, dup: packet.dup, packetId, isNew };
    this.deliveries.push(delivery);
    this.onDelivery?.(delivery);
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }
}
