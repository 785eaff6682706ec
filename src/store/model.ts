/**
 * What the store holds, in the words the layers above use: the values every part of the store
 * layer shares (the repository interface, the key layout, inspection).
 */

export type QoS = 0 | 1 | 2;

/** What a SUBSCRIBE's Retain Handling asks for at subscribe time (MQTT 5, 3.8.3.1). */
export type RetainHandling = 0 | 1 | 2;

export interface Subscription {
  filter: string;
  qos: QoS;
  /** MQTT 5 No Local: never receives what its own session published [MQTT-3.8.3-3]. */
  noLocal?: boolean;
  /** MQTT 5 Retain As Published: RETAIN as the publisher set it, not 0 [MQTT-3.3.1-12]. */
  retainAsPublished?: boolean;
  /** MQTT 5 Retain Handling: 0 send retained messages, 1 only for a new subscription, 2 never. */
  retainHandling?: RetainHandling;
  /** MQTT 5 Subscription Identifier (1 to 268,435,455), carried by every message it delivers [MQTT-3.3.4-3]. */
  identifier?: number;
}

/**
 * The MQTT 5 properties of an application message that the broker keeps and forwards: stored with
 * the body, so a redelivery after any restart carries them exactly as they arrived.
 */
export interface MessageProperties {
  /** Payload Format Indicator: 1, the payload is UTF-8 text; 0 (or absent), unspecified bytes. */
  payloadFormat?: 0 | 1;
  /**
   * When the message expires, in ms since the epoch: the publisher's Message Expiry Interval added
   * to the time it arrived. A receiver is told what remains of it when its PUBLISH is encoded.
   */
  expiresAt?: number;
  contentType?: string;
  responseTopic?: string;
  correlationData?: Buffer;
  /** User Properties in the order they arrived, duplicates kept [MQTT-3.3.2-18]. */
  userProperties?: Array<[string, string]>;
  /**
   * The properties above but the expiry, as MQTT 5 encodes them in a PUBLISH, in the order they
   * arrived: how the broker keeps the properties of a message it received (stored and forwarded as
   * these bytes, never decoded per message). When present, the fields above but `expiresAt` are
   * absent: these bytes are the whole truth (protocol/message-properties.ts reads them by name).
   */
  encoded?: Buffer;
}

/** An application message as the store keeps it: the body is stored once, whatever its fan-out. */
export interface Message {
  topic: string;
  payload: Buffer;
  qos: QoS;
  /** MQTT 5 properties; absent for a message that has none (every 3.1.1 message). */
  properties?: MessageProperties;
}

/**
 * queued: never sent, its first PUBLISH carries DUP=0. dup: at or below the session's DUP mark, so
 * it may have reached the client: every delivery of it from now on carries DUP=1 [MQTT-3.3.1-1].
 * released: PUBREC received and stored, so PUBREL (never the PUBLISH again) is what goes next.
 */
export type OutboundState = 'queued' | 'dup' | 'released';

export interface RetainedMessage {
  topic: string;
  payload: Buffer;
  qos: QoS;
  properties?: MessageProperties;
}

/** What the broker keeps in memory of a retained message: enough to match and count it; the payload stays in the store. */
export interface RetainedEntry {
  topic: string;
  qos: QoS;
  /** Payload bytes. */
  size: number;
}
