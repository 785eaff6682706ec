import type { EndCause } from '../session/session.js';

/**
 * The reason codes this broker sends (MQTT 5.0, 2.4), in one table: what each means and what a
 * 3.1 or 3.1.1 client is told instead, where that version can say it at all. Handlers name a
 * reason; the connection writes it in the client's version.
 */
export const Reason = {
  SUCCESS: 0x00,
  GRANTED_QOS_1: 0x01,
  GRANTED_QOS_2: 0x02,
  DISCONNECT_WITH_WILL: 0x04,
  NO_MATCHING_SUBSCRIBERS: 0x10,
  NO_SUBSCRIPTION_EXISTED: 0x11,
  UNSPECIFIED_ERROR: 0x80,
  MALFORMED_PACKET: 0x81,
  PROTOCOL_ERROR: 0x82,
  IMPLEMENTATION_SPECIFIC_ERROR: 0x83,
  UNSUPPORTED_PROTOCOL_VERSION: 0x84,
  CLIENT_IDENTIFIER_NOT_VALID: 0x85,
  BAD_USER_NAME_OR_PASSWORD: 0x86,
  NOT_AUTHORIZED: 0x87,
  SERVER_UNAVAILABLE: 0x88,
  SERVER_SHUTTING_DOWN: 0x8b,
  BAD_AUTHENTICATION_METHOD: 0x8c,
  KEEP_ALIVE_TIMEOUT: 0x8d,
  SESSION_TAKEN_OVER: 0x8e,
  TOPIC_FILTER_INVALID: 0x8f,
  TOPIC_NAME_INVALID: 0x90,
  PACKET_IDENTIFIER_IN_USE: 0x91,
  PACKET_IDENTIFIER_NOT_FOUND: 0x92,
  RECEIVE_MAXIMUM_EXCEEDED: 0x93,
  TOPIC_ALIAS_INVALID: 0x94,
  PACKET_TOO_LARGE: 0x95,
  QUOTA_EXCEEDED: 0x97,
  PAYLOAD_FORMAT_INVALID: 0x99,
  QOS_NOT_SUPPORTED: 0x9b,
  SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: 0x9e,
  SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED: 0xa1,
  WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED: 0xa2,
} as const;

export type ReasonCode = (typeof Reason)[keyof typeof Reason];

interface ReasonInfo {
  /** The spec's name for it (MQTT 5.0, table 2-6), for logs and tests. */
  name: string;
  /** A CONNACK refusal's 3.1.1 return code (table 3.1); undefined: a 3.1.1 client is only closed. */
  v3Connack?: number;
}

const INFO: Record<ReasonCode, ReasonInfo> = {
  [Reason.SUCCESS]: { name: 'Success', v3Connack: 0 },
  [Reason.GRANTED_QOS_1]: { name: 'Granted QoS 1' },
  [Reason.GRANTED_QOS_2]: { name: 'Granted QoS 2' },
  [Reason.DISCONNECT_WITH_WILL]: { name: 'Disconnect with Will Message' },
  [Reason.NO_MATCHING_SUBSCRIBERS]: { name: 'No matching subscribers' },
  [Reason.NO_SUBSCRIPTION_EXISTED]: { name: 'No subscription existed' },
  [Reason.UNSPECIFIED_ERROR]: { name: 'Unspecified error', v3Connack: 3 },
  [Reason.MALFORMED_PACKET]: { name: 'Malformed Packet' },
  [Reason.PROTOCOL_ERROR]: { name: 'Protocol Error' },
  [Reason.IMPLEMENTATION_SPECIFIC_ERROR]: { name: 'Implementation specific error', v3Connack: 3 },
  [Reason.UNSUPPORTED_PROTOCOL_VERSION]: { name: 'Unsupported Protocol Version', v3Connack: 1 },
  [Reason.CLIENT_IDENTIFIER_NOT_VALID]: { name: 'Client Identifier not valid', v3Connack: 2 },
  [Reason.BAD_USER_NAME_OR_PASSWORD]: { name: 'Bad User Name or Password', v3Connack: 4 },
  [Reason.NOT_AUTHORIZED]: { name: 'Not authorized', v3Connack: 5 },
  [Reason.SERVER_UNAVAILABLE]: { name: 'Server unavailable', v3Connack: 3 },
  [Reason.SERVER_SHUTTING_DOWN]: { name: 'Server shutting down' },
  [Reason.BAD_AUTHENTICATION_METHOD]: { name: 'Bad authentication method', v3Connack: 5 },
  [Reason.KEEP_ALIVE_TIMEOUT]: { name: 'Keep Alive timeout' },
  [Reason.SESSION_TAKEN_OVER]: { name: 'Session taken over' },
  [Reason.TOPIC_FILTER_INVALID]: { name: 'Topic Filter invalid' },
  [Reason.TOPIC_NAME_INVALID]: { name: 'Topic Name invalid' },
  [Reason.PACKET_IDENTIFIER_IN_USE]: { name: 'Packet Identifier in use' },
  [Reason.PACKET_IDENTIFIER_NOT_FOUND]: { name: 'Packet Identifier not found' },
  [Reason.RECEIVE_MAXIMUM_EXCEEDED]: { name: 'Receive Maximum exceeded' },
  [Reason.TOPIC_ALIAS_INVALID]: { name: 'Topic Alias invalid' },
  [Reason.PACKET_TOO_LARGE]: { name: 'Packet too large' },
  [Reason.QUOTA_EXCEEDED]: { name: 'Quota exceeded', v3Connack: 3 },
  [Reason.PAYLOAD_FORMAT_INVALID]: { name: 'Payload format invalid' },
  [Reason.QOS_NOT_SUPPORTED]: { name: 'QoS not supported' },
  [Reason.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED]: { name: 'Shared Subscriptions not supported' },
  [Reason.SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED]: { name: 'Subscription Identifiers not supported' },
  [Reason.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED]: { name: 'Wildcard Subscriptions not supported' },
};

export function reasonName(code: ReasonCode): string {
  return INFO[code].name;
}

/** The name of a reason code another server sent us (a bridge's upstream), if it is one we know. */
export function knownReasonName(code: number): string | undefined {
  return (INFO as Partial<Record<number, ReasonInfo>>)[code]?.name;
}

/** The CONNACK return code a 3.1/3.1.1 client gets for a refusal (3, server unavailable, where 3.1.1 has no closer one). */
export function v3ConnackCode(code: ReasonCode): number {
  return INFO[code].v3Connack ?? 3;
}

/** The MQTT 5 reason for a 3.1.1 CONNACK return code (the authentication layer speaks 3.1.1's). */
export function reasonOfV3Connack(returnCode: number): ReasonCode {
  switch (returnCode) {
    case 1:
      return Reason.UNSUPPORTED_PROTOCOL_VERSION;
    case 2:
      return Reason.CLIENT_IDENTIFIER_NOT_VALID;
    case 4:
      return Reason.BAD_USER_NAME_OR_PASSWORD;
    case 5:
      return Reason.NOT_AUTHORIZED;
    default:
      return Reason.SERVER_UNAVAILABLE;
  }
}

/** The DISCONNECT reason for the session layer's cause of ending a connection. */
export function reasonOfEnd(cause: EndCause): ReasonCode {
  switch (cause) {
    case 'taken-over':
      return Reason.SESSION_TAKEN_OVER;
    case 'shutting-down':
      return Reason.SERVER_SHUTTING_DOWN;
    case 'store-failure':
      return Reason.IMPLEMENTATION_SPECIFIC_ERROR;
    case 'session-ended':
      return Reason.UNSPECIFIED_ERROR;
  }
}
