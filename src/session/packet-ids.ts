/** Packet identifiers run from 1 to 65535 [MQTT-2.3.1-1]. */
export const MAX_PACKET_ID = 65535;

/**
 * The packet id of an outbound entry, derived from its seq: it never needs storing, and every
 * redelivery, after any restart, uses the original id [MQTT-4.4.0-1]. Two entries in flight at
 * once never share an id as long as their seqs are less than 65535 apart [MQTT-2.3.1-2]; the
 * session holds back an entry that would break that.
 */
export function packetIdOf(seq: number): number {
  return ((seq - 1) % MAX_PACKET_ID) + 1;
}
