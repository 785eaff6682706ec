/**
 * What the server gives every connection: the transport it reads and writes, the broker's parts it
 * works with and the options it applies (connection.ts).
 */

import type { AccessControl } from '../auth/access-control.js';
import type { Logger } from '../logger.js';
import type { ByteBudget } from '../session/byte-budget.js';
import type { Distributor } from '../session/distributor.js';
import type { SessionManager } from '../session/session-manager.js';
import type { Message } from '../store/repository.js';
import type { BrokerCounters, TopicLimits } from './limits.js';

/**
 * What a connection reads from and writes to: a net.Socket (TCP, TLS) is one as it is, a
 * WebSocket is adapted to it (src/server/websocket-transport.ts). The limits rely on what it
 * promises: after pause() no 'data' arrives until resume(); writableLength is the bytes written
 * and not yet handed to the kernel, and 'drain' follows once it went down; end() sends what was
 * written before it closes.
 */
export interface Transport {
  readonly remoteAddress?: string | undefined;
  readonly remotePort?: number | undefined;
  readonly destroyed: boolean;
  readonly writableLength: number;
  /**
   * Bytes received and held below the MQTT byte stream, not yet given as 'data' (a WebSocket
   * frame still arriving); 'held' is emitted when it changed. They count against the budget of
   * unfinished packets and run the packet clock like the parser's own. A socket has none.
   */
  readonly heldBelow?: number;
  /** `done` runs once the bytes are handed on below (to the kernel), or failed to be. */
  write(bytes: Buffer, done?: (error?: Error | null) => void): unknown;
  cork(): void;
  uncork(): void;
  pause(): unknown;
  resume(): unknown;
  end(): unknown;
  destroy(): unknown;
  on(event: 'data', listener: (chunk: Buffer) => void): unknown;
  /** 'end': the peer finished sending (a socket's FIN); nothing written after it can reach the peer. */
  on(event: 'drain' | 'close' | 'held' | 'end', listener: () => void): unknown;
  on(event: 'error', listener: (error: Error) => void): unknown;
}

/**
 * Traffic across all connections since start, counted where it passes (MQTT bytes and packets,
 * not TCP, TLS or WebSocket framing): read by $SYS and /metrics (src/server/figures.ts).
 */
export interface TrafficCounters {
  bytesReceived: number;
  bytesSent: number;
  /** Packets of every type. */
  packetsReceived: number;
  packetsSent: number;
  publishesReceived: number;
  publishesSent: number;
  /** CONNECT packets received, accepted or not. */
  connects: number;
}

export function newTrafficCounters(): TrafficCounters {
  return { bytesReceived: 0, bytesSent: 0, packetsReceived: 0, packetsSent: 0, publishesReceived: 0, publishesSent: 0, connects: 0 };
}

export interface ProtocolOptions extends TopicLimits {
  /** A socket that has not sent CONNECT by then is closed. */
  connectTimeoutMs: number;
  /** Bytes of one packet, fixed header included; a bigger one closes the connection before it is read. */
  maxPacketSize: number;
  /** A packet must be complete this long after its first byte arrived, or the connection is closed. */
  packetTimeoutMs: number;
  /**
   * Bytes that may wait unsent to a client (on its socket, and in the outbox of this tick) before
   * it counts as not reading: QoS 0 deliveries to it are dropped, and its socket is not read until
   * half of it has gone, so a client that never reads cannot make the broker buffer replies without
   * bound (PINGRESPs to a PINGREQ flood, PUBACKs to QoS 1 PUBLISHes). QoS 1/2 deliveries need no
   * mark of their own: the inflight window bounds them, the rest waits in the store.
   */
  maxUnsentBytes: number;
  /** Filters one session may hold; SUBSCRIBE gets 0x80 for new ones beyond it. */
  maxSubscriptionsPerClient: number;
  /** MQTT 5: Topic Aliases an MQTT 5 client may set on one connection (announced in CONNACK; 0: none). */
  topicAliasMaximum: number;
  /** MQTT 5: QoS 1 and 2 PUBLISHes a client may have unacknowledged at once (announced; more: DISCONNECT 0x93). */
  receiveMaximum: number;
  /** The highest QoS the broker takes and grants (2 unless configured lower; announced to MQTT 5 clients). */
  maxQos: 0 | 1 | 2;
}

/** What packet handlers work with: the layers below, never the store directly. */
export interface BrokerContext {
  sessions: SessionManager;
  distributor: Distributor;
  log: Logger;
  options: ProtocolOptions;
  counters: BrokerCounters;
  /**
   * Bytes of packets still arriving, across all connections (max_unfinished_packet_bytes):
   * max_packet_size bounds one packet, this bounds them all together, so many clients that each
   * leave a large packet unfinished cannot make the broker hold their sum (ArrivingPacket).
   */
  unfinishedPackets: ByteBudget;
  /** Bytes written to clients and not yet taken by the kernel (max_total_unsent_bytes): while it is over, a client with more than UNSENT_SHARE waiting counts as not reading. */
  unsent: ByteBudget;
  /** Authentication and the ACL: who a client is and what it may publish, subscribe to and receive. */
  access: AccessControl;
  /** Set while the broker shuts down: connections it ends do not publish their wills. */
  shuttingDown: boolean;
  traffic: TrafficCounters;
  /**
   * Hears, for each QoS 1/2 PUBLISH acknowledged, the seconds from its arrival to its PUBACK or
   * PUBREC: mostly the wait for its store write. Unset, nothing is timed.
   */
  observePublishAck?: (seconds: number) => void;
}

export interface Will {
  message: Message;
  retain: boolean;
  /** MQTT 5 Will Delay Interval, seconds: the will waits this long for the client to come back [MQTT-3.1.3-9]. */
  delaySeconds?: number;
  /** MQTT 5 Message Expiry Interval of the will, seconds, counted from when it is published. */
  expirySeconds?: number;
  /** Who publishes it: the ACL's write check applies when it is published, not when it is given. */
  clientId: string;
  user: string | undefined;
}
