/**
 * What the store holds, in the words the layers above use: the values every part of the store
 * layer shares (the repository interface, the key layout, inspection).
 */

export type QoS = 0 | 1 | 2;

export interface Subscription {
  filter: string;
  qos: QoS;
}

/** An application message as the store keeps it: the body is stored once, whatever its fan-out. */
export interface Message {
  topic: string;
  payload: Buffer;
  qos: QoS;
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
}
