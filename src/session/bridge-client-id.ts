/**
 * A bridge is, to this broker, a persistent session under a reserved client id. No client may
 * connect with an id of that form, whether or not a bridge of that name is configured: a bridge
 * added later must not find a client's session under its id (CONNACK 0x02, see connect.ts).
 * It lives with the sessions, below the protocol layer and the bridge, which both ask it.
 */
export const BRIDGE_CLIENT_ID_PREFIX = '$bridge/';

/** The local session of the bridge named `name`. */
export function bridgeClientId(name: string): string {
  return BRIDGE_CLIENT_ID_PREFIX + name;
}

export function isBridgeClientId(clientId: string): boolean {
  return clientId.startsWith(BRIDGE_CLIENT_ID_PREFIX);
}
