import { ProtocolViolation } from '../errors.js';
import { Reason } from './reason-codes.js';

/** What an MQTT 5 client announced in its CONNECT about what it can take (3.1.2.11). */
export interface ClientAnnouncement {
  /** Its Maximum Packet Size: nothing larger is sent to it [MQTT-3.1.2-24]. Absent: no limit beyond the protocol's. */
  maximumPacketSize?: number;
  /** Its Topic Alias Maximum: aliases the broker may assign on what it sends (0: none) [MQTT-3.1.2-26] [MQTT-3.1.2-27]. */
  topicAliasMaximum?: number;
  /** Its Receive Maximum: QoS 1 and 2 PUBLISHes it takes unacknowledged at once [MQTT-3.3.4-9]. Absent: 65,535. */
  receiveMaximum?: number;
  /** Request Problem Information: 0 forbids Reason Strings and User Properties on most packets [MQTT-3.1.2-29]. */
  requestProblemInformation?: boolean;
}

/**
 * The MQTT 5 state of one connection: what its client announced and the topic aliases of both
 * directions. Aliases belong to a network connection and never to a session: they
 * are made with the connection and never stored [MQTT-3.3.2-7].
 */
export class Mqtt5Link {
  readonly maximumPacketSize: number;
  readonly receiveMaximum: number;
  readonly problemInformation: boolean;
  readonly #clientAliasMaximum: number;
  readonly #serverAliasMaximum: number;
  /** Topic → alias assigned on PUBLISHes to the client; kept once assigned (no replacement). */
  readonly #outbound = new Map<string, number>();
  /** Alias → topic set by the client's PUBLISHes. */
  readonly #inbound = new Map<number, string>();

  constructor(announcement: ClientAnnouncement, serverAliasMaximum: number) {
    this.maximumPacketSize = announcement.maximumPacketSize ?? Infinity;
    this.receiveMaximum = announcement.receiveMaximum ?? 65_535;
    this.problemInformation = announcement.requestProblemInformation ?? true;
    this.#clientAliasMaximum = announcement.topicAliasMaximum ?? 0;
    this.#serverAliasMaximum = serverAliasMaximum;
  }

  /**
   * The alias for a PUBLISH to the client on `topic`: one assigned before (the topic is then sent
   * empty), or a new one while the client's maximum allows (sent with the topic, and kept by
   * `confirmAlias` once that PUBLISH was written), or none.
   */
  outboundAlias(topic: string): { alias: number; known: boolean } | undefined {
    const known = this.#outbound.get(topic);
    if (known !== undefined) return { alias: known, known: true };
    if (this.#outbound.size >= this.#clientAliasMaximum) return undefined;
    return { alias: this.#outbound.size + 1, known: false };
  }

  confirmAlias(topic: string, alias: number): void {
    this.#outbound.set(topic, alias);
  }

  /**
   * The topic of a client's PUBLISH once its Topic Alias is applied: a topic with an alias sets
   * it, an empty topic takes it [MQTT-3.3.2-12]. An alias of 0 or over our maximum, or an empty
   * topic with an alias never set, is answered with DISCONNECT 0x94 (0x82 for an empty topic without alias).
   */
  resolveTopic(topic: string, alias: number | undefined): string {
    if (alias === undefined) {
      if (topic.length === 0) throw new ProtocolViolation('PUBLISH with an empty topic and no Topic Alias [MQTT-3.3.2-1]', Reason.PROTOCOL_ERROR);
      return topic;
    }
    if (alias === 0 || alias > this.#serverAliasMaximum) {
      throw new ProtocolViolation(`Topic Alias ${alias} is outside 1..${this.#serverAliasMaximum} [MQTT-3.3.2-9] [MQTT-3.3.2-12]`, Reason.TOPIC_ALIAS_INVALID);
    }
    if (topic.length > 0) {
      this.#inbound.set(alias, topic);
      return topic;
    }
    const known = this.#inbound.get(alias);
    if (known === undefined) throw new ProtocolViolation(`Topic Alias ${alias} was never set on this connection`, Reason.PROTOCOL_ERROR);
    return known;
  }
}
