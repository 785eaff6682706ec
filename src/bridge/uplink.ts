import type { IPublishPacket, ISubackPacket, Packet } from 'mqtt-packet';
import { errorMessage } from '../errors.js';
import type { Logger } from '../logger.js';
import { messagePropertiesOf } from '../protocol/message-properties.js';
import { encodePublish } from '../protocol/publish-encoder.js';
import { knownReasonName, Reason } from '../protocol/reason-codes.js';
import { isValidTopicName } from '../routing/topic.js';
import type { Distributor } from '../session/distributor.js';
import { MAX_PACKET_ID } from '../session/packet-ids.js';
import type { SessionManager } from '../session/session-manager.js';
import type { OutboundChannel, OutgoingPublish, Session, SessionLink } from '../session/session.js';
import type { Message, QoS } from '../store/repository.js';
import type { BridgeSettings } from './bridge-options.js';
import type { TopicMap } from './topic-map.js';
import { UpstreamFailure, type UpstreamConnection } from './upstream-connection.js';

/** Counts since the broker started, across connections. */
export interface BridgeCounters {
  /** Messages the upstream acknowledged (PUBACK, PUBCOMP), and QoS 0 ones sent. */
  forwarded: number;
  /** Messages from the upstream stored and delivered locally (repeats of a QoS 2 one not counted). */
  received: number;
  /** QoS 0 messages dropped because the upstream was not reading. */
  qos0Dropped: number;
}

export interface UplinkContext {
  settings: BridgeSettings;
  topics: TopicMap;
  sessions: SessionManager;
  distributor: Distributor;
  session: Session;
  counters: BridgeCounters;
  /** QoS 0 messages are dropped while more than this waits unsent to the upstream (the broker's max_unsent_bytes). */
  maxUnsentBytes: number;
  log: Logger;
}

/** Inbound messages awaiting their store write before reading pauses, and where it resumes. */
const UNREPLIED_HIGH_WATER = 1024;

/**
 * One connection of a bridge, from CONNACK until it ends: the bridge's session is linked to it as
 * a client's session is linked to its connection. Outbound, the session's delivery engine
 * (OutboundFlow) writes through this channel to the upstream and the upstream's acknowledgements
 * drive it, so a message leaves the queue only once the upstream acknowledged it, and a QoS 2 one
 * whose PUBREC was stored continues with PUBREL after any restart. Inbound, an upstream PUBLISH is
 * routed through the distributor as a local client's is: stored in every matching session's queue
 * before it is acknowledged upstream, QoS 2 exactly once through the session's inbound packet ids.
 */
export class Uplink implements OutboundChannel {
  /** Resolves once the connection is gone and the session unlinked from it. */
  readonly ended: Promise<UpstreamFailure>;
  readonly #context: UplinkContext;
  readonly #connection: UpstreamConnection;
  #link: SessionLink | undefined;
  /** Our PUBLISHes awaiting the upstream's acknowledgement, by packet id, with their QoS. */
  readonly #inflight = new Map<number, QoS>();
  #replies: Promise<void> = Promise.resolve();
  #unreplied = 0;
  #endedResolve!: (failure: UpstreamFailure) => void;
  /** An upstream message matched no in line / a queued one no out line: each logged once per connection. */
  #unmappedInLogged = false;
  #unmappedOutLogged = false;
  /** MQTT 5: the upstream refused one of our messages with a reason code (logged once per connection). */
  #refusalLogged = false;

  constructor(context: UplinkContext, connection: UpstreamConnection) {
    this.#context = context;
    this.#connection = connection;
    this.ended = new Promise((resolve) => (this.#endedResolve = resolve));
  }

  get inflight(): number {
    return this.#inflight.size;
  }

  /**
   * Links the bridge's session and starts both directions: what was in flight goes again (DUP=1,
   * or PUBREL), the queue drains, then the upstream subscriptions are made (again: an upstream
   * that lost our session, session present 0, has none).
   */
  async start(): Promise<void> {
    const { session, sessions, settings } = this.#context;
    try {
      if (!this.#connection.sessionPresent) await forgetInbound(session);
      const started = await sessions.start(session.clientId, { cleanStart: false, expiry: undefined }, this);
      this.#link = started.link;
      await session.resume(started.link);
    } catch (error) {
      this.#connection.close(`the bridge's session could not start: ${errorMessage(error)}`);
    }
    this.#connection.listen({ packet: (packet) => this.#receive(packet), closed: (failure) => void this.#closed(failure) });
    if (this.#connection.isClosed) return;
    const subscriptions = this.#context.topics.remoteSubscriptions;
    if (subscriptions.length > 0) {
      // A packet id no PUBLISH or PUBREL of ours holds now [MQTT-2.3.1-1]. The delivery engine
      // picks its ids from seqs without knowing this one, so one could coincide while the SUBACK
      // is on its way; packet types keep them apart on both sides, as every broker we know does.
      let packetId = MAX_PACKET_ID;
      while (this.#inflight.has(packetId)) packetId--;
      // MQTT 5: No Local keeps the upstream from sending our own messages back, and Retain As
      // Published keeps their RETAIN flag: what the bridge bit asks of a 3.1.1 upstream [MQTT-3.8.3-3].
      const v5 = this.#connection.protocolVersion === 5;
      this.#connection.send({
        cmd: 'subscribe',
        messageId: packetId,
        subscriptions: subscriptions.map(({ filter, qos }) => ({ topic: filter, qos, ...(v5 ? { nl: true, rap: true } : {}) })),
      });
    }
    if (settings.notifications) {
      this.#connection.send({ cmd: 'publish', topic: settings.notificationTopic, payload: Buffer.from('1'), qos: 0, retain: true, dup: false });
    }
  }

  // --- OutboundChannel: the session's engine writes upstream ----------------------------------------

  /**
   * Writes a PUBLISH upstream. MQTT 5: with the message's properties (what remains of its expiry),
   * never our own Subscription Identifiers (a client's PUBLISH has none [MQTT-3.3.4-6]); false,
   * unsent, when it is larger than the upstream's Maximum Packet Size [MQTT-3.1.2-24].
   */
  publish(packet: OutgoingPublish): boolean {
    const { counters } = this.#context;
    const topic = this.#remoteTopic(packet.topic);
    const v5 = this.#connection.protocolVersion === 5;
    const bytes = v5 ? encodePublish({ ...packet, topic, subscriptionIds: undefined }, { now: Date.now() }) : encodePublish({ ...packet, topic });
    if (bytes.length > (this.#connection.connackProperties.maximumPacketSize ?? Infinity)) return false;
    if (packet.qos === 0) {
      if (this.#connection.backlog > this.#context.maxUnsentBytes) {
        counters.qos0Dropped++;
        return true;
      }
      counters.forwarded++;
    } else {
      this.#inflight.set(packet.packetId!, packet.qos);
    }
    this.#connection.write(bytes);
    return true;
  }

  /** MQTT 5: the upstream's Receive Maximum bounds what we have in flight to it [MQTT-3.3.4-9] (OutboundChannel). */
  get receiveMaximum(): number | undefined {
    return this.#connection.connackProperties.receiveMaximum;
  }

  /** What the upstream may be sent before it holds max_unsent_bytes of ours (OutboundChannel). */
  get room(): number {
    return this.#context.maxUnsentBytes - this.#connection.backlog;
  }

  whenDrained(resume: () => void): void {
    this.#connection.whenDrained(resume);
  }

  pubrel(packetId: number): void {
    // A QoS 2 message whose PUBREC was stored: in flight until PUBCOMP, also after a restart.
    this.#inflight.set(packetId, 2);
    this.#connection.send({ cmd: 'pubrel', messageId: packetId });
  }

  end(reason: string): void {
    this.#connection.close(reason);
  }

  // --- From the upstream ------------------------------------------------------------------------

  #receive(packet: Packet): void {
    const link = this.#link;
    if (!link) return;
    switch (packet.cmd) {
      case 'puback':
        if (!this.#checkAck(link, packet.messageId!, 'puback')) return;
        // MQTT 5: 0x80 and above, the upstream did not take it; the delivery is over all the same.
        if ((packet.reasonCode ?? 0) >= 0x80) this.#refusedUpstream(packet.messageId!, packet.reasonCode!, () => link.outbound.acknowledge(packet.messageId!));
        else this.#acknowledged(packet.messageId!, () => link.outbound.acknowledge(packet.messageId!));
        return;
      case 'pubrec':
        if (!this.#checkAck(link, packet.messageId!, 'pubrec')) return;
        // A PUBREC of 0x80 or more ends the exchange: no PUBREL [MQTT-4.3.3-4].
        if ((packet.reasonCode ?? 0) >= 0x80) this.#refusedUpstream(packet.messageId!, packet.reasonCode!, () => link.outbound.refused(packet.messageId!));
        else link.outbound.received(packet.messageId!); // a failed write ends the link, as for completions
        return;
      case 'pubcomp':
        if (this.#checkAck(link, packet.messageId!, 'pubcomp')) this.#acknowledged(packet.messageId!, () => link.outbound.completed(packet.messageId!));
        return;
      case 'publish':
        this.#publishFromUpstream(link, packet);
        return;
      case 'pubrel':
        this.#reply(link.inbound.release(packet.messageId!), () => this.#connection.send({ cmd: 'pubcomp', messageId: packet.messageId! }));
        return;
      case 'suback':
        this.#subscribed(packet);
        return;
      case 'disconnect':
        // MQTT 5: a server may close with a reason [MQTT-3.14.0-1]; 3.1.1 servers never send one.
        if (this.#connection.protocolVersion === 5) {
          const code = packet.reasonCode ?? 0;
          const text = packet.properties?.reasonString === undefined ? '' : `: ${JSON.stringify(packet.properties.reasonString)}`;
          this.#connection.close(`the upstream disconnected with 0x${code.toString(16).padStart(2, '0')} (${knownReasonName(code) ?? 'unknown reason'})${text}`);
          return;
        }
        this.#connection.close('the upstream sent DISCONNECT, which a server never sends', 'protocol');
        return;
      default:
        // CONNACK again, SUBSCRIBE, PINGREQ…: not what a server sends to a client.
        this.#connection.close(`the upstream sent ${packet.cmd.toUpperCase()}, which a server never sends`, 'protocol');
    }
  }

  /**
   * An acknowledgement of the wrong type is a protocol error for that message. RabbitMQ answers a
   * QoS 2 PUBLISH with PUBACK: such upstreams are bridged at QoS 1 (README). The message stays
   * queued, and goes again with DUP=1 on the next connection.
   */
  #checkAck(link: SessionLink, packetId: number, ack: 'puback' | 'pubrec' | 'pubcomp'): boolean {
    if (link.outbound.acceptsAck(packetId, ack)) return true;
    const qos = this.#inflight.get(packetId);
    this.#context.log.error(
      `bridge ${this.#context.settings.name}: the upstream answered our QoS ${qos ?? '?'} PUBLISH ${packetId} with ${ack.toUpperCase()}: ` +
        `it does not speak QoS ${qos ?? '?'} correctly (RabbitMQ answers QoS 2 with PUBACK); the message stays queued. ` +
        `Bridge to this upstream at QoS 1 (qos: 1 on every topic line)`,
    );
    this.#connection.close(`${ack.toUpperCase()} for a message of the other QoS`, 'protocol');
    return false;
  }

  #acknowledged(packetId: number, complete: () => void): void {
    if (this.#inflight.delete(packetId)) this.#context.counters.forwarded++;
    complete();
  }

  /** The upstream answered with a refusal: the message leaves our queue unforwarded (it would be refused again), logged once per connection. */
  #refusedUpstream(packetId: number, code: number, complete: () => void): void {
    this.#inflight.delete(packetId);
    if (!this.#refusalLogged) {
      this.#refusalLogged = true;
      const { settings, log } = this.#context;
      log.warn(
        `bridge ${settings.name}: the upstream refused a message with reason 0x${code.toString(16)} (${knownReasonName(code) ?? 'unknown reason'}); ` +
          'it is dropped from the out queue (and any others it refuses on this connection, not logged)',
      );
    }
    complete();
  }

  #publishFromUpstream(link: SessionLink, packet: IPublishPacket): void {
    const { topics, distributor, session, counters, log, settings } = this.#context;
    const { qos, messageId: packetId } = packet;
    if (!isValidTopicName(packet.topic)) {
      this.#connection.close(`the upstream sent a PUBLISH on the invalid topic ${JSON.stringify(packet.topic)}`, 'protocol');
      return;
    }
    const acknowledgement = qos === 1 ? 'puback' : qos === 2 ? 'pubrec' : undefined;
    const acknowledge = () => {
      if (acknowledgement) this.#connection.send({ cmd: acknowledgement, messageId: packetId! });
    };
    const topic = topics.toLocal(packet.topic);
    if (topic === undefined) {
      // A subscription of an earlier configuration, kept by the upstream's persistent session.
      if (!this.#unmappedInLogged) {
        this.#unmappedInLogged = true;
        log.warn(`bridge ${settings.name}: a message on ${JSON.stringify(packet.topic)} matches no in/both topic line: acknowledged and dropped (and any others like it)`);
      }
      this.#reply(Promise.resolve(), acknowledge);
      return;
    }
    if (qos === 2 && !link.inbound.claim(packetId!)) {
      // Received before and not released: acknowledge again, deliver nothing again [MQTT-4.3.3-2].
      this.#reply(Promise.resolve(), acknowledge);
      return;
    }
    const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
    const message: Message = { topic, payload, qos };
    if (this.#connection.protocolVersion === 5) {
      // The message keeps its properties (the upstream's Subscription Identifiers are not its).
      const properties = messagePropertiesOf(packet.properties, payload, Date.now());
      if (properties === 'payload-format-invalid') {
        // Not routed, nothing stored; a PUBREC of 0x80 or more ends a QoS 2 exchange [MQTT-4.3.3-4].
        if (qos === 2) link.inbound.abandon(packetId!);
        this.#reply(Promise.resolve(), () => {
          if (acknowledgement) this.#connection.send({ cmd: acknowledgement, messageId: packetId!, reasonCode: Reason.PAYLOAD_FORMAT_INVALID });
        });
        return;
      }
      if (properties) message.properties = properties;
    }
    const publication = distributor.route(message, {
      retain: packet.retain,
      origin: session.clientId,
      ...(qos === 2 ? { inbound: { session, packetId: packetId! } } : {}),
    });
    if (qos === 2) session.track(publication.stored);
    this.#reply(
      publication.stored,
      async () => {
        await publication.deliver();
        counters.received++;
        acknowledge();
      },
      () => {
        if (qos === 2) link.inbound.abandon(packetId!);
      },
    );
  }

  #subscribed(packet: ISubackPacket): void {
    const { topics, log, settings } = this.#context;
    const subscriptions = topics.remoteSubscriptions;
    packet.granted.forEach((granted, index) => {
      const code = Number(granted);
      // 0x80 for 3.1.1; MQTT 5 says why with any code from 0x80 up.
      if (code >= 0x80) log.warn(`bridge ${settings.name}: the upstream refused the subscription to ${JSON.stringify(subscriptions[index]?.filter)}`);
    });
    log.info(`bridge ${settings.name}: subscribed upstream to ${subscriptions.map(({ filter }) => JSON.stringify(filter)).join(', ')}`);
  }

  /**
   * Runs `send` once `work` is done and every earlier reply has gone, so acknowledgements keep
   * the upstream's order. A failed store write sends nothing and ends the connection: the upstream
   * sends the message again on the next one.
   */
  #reply(work: Promise<unknown>, send: () => void | Promise<void>, onFailure?: () => void): void {
    work.catch(() => {}); // handled below, in order
    this.#unreplied++;
    if (this.#unreplied === UNREPLIED_HIGH_WATER) this.#connection.pauseReading(true);
    this.#replies = this.#replies.then(() =>
      work
        .then(send)
        .catch((error: unknown) => {
          onFailure?.();
          this.end(`store failure: ${errorMessage(error)}`);
        })
        .finally(() => {
          this.#unreplied--;
          if (this.#unreplied === UNREPLIED_HIGH_WATER / 2) this.#connection.pauseReading(false);
        }),
    );
  }

  #remoteTopic(localTopic: string): string {
    const remote = this.#context.topics.toRemote(localTopic);
    if (remote !== undefined) return remote;
    // Queued under a topic line that has since been removed: it goes under its local name.
    if (!this.#unmappedOutLogged) {
      this.#unmappedOutLogged = true;
      this.#context.log.warn(`bridge ${this.#context.settings.name}: queued message on ${JSON.stringify(localTopic)} matches no out topic line any more: sent under its local name`);
    }
    return localTopic;
  }

  async #closed(failure: UpstreamFailure): Promise<void> {
    // Inbound writes under way land first: the next connection reads the inbound ids back.
    await this.#replies;
    if (this.#link) {
      try {
        await this.#context.sessions.close(this.#context.session, this);
      } catch (error) {
        this.#context.log.error(`bridge ${this.#context.settings.name}: session not closed cleanly: ${errorMessage(error)}`);
      }
    }
    this.#endedResolve(failure);
  }
}

/**
 * The upstream has no session of ours (session present 0): the QoS 2 packet ids it had sent us
 * and not released mean nothing any more, and a new message under one of them must be taken.
 */
async function forgetInbound(session: Session): Promise<void> {
  for (const packetId of await session.inboundPacketIds()) await session.releaseInbound(packetId);
}

export { UpstreamFailure };
