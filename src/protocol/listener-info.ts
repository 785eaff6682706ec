/** What a connection knows about the listener that accepted it (for authentication rules). */
export interface ListenerInfo {
  /** For logs: the listener's address as configured and bound, e.g. `0.0.0.0:8883 (TLS)`. */
  readonly name: string;
  /** Bound to a loopback address (127.0.0.0/8, ::1, `localhost`): only this machine can connect. */
  readonly loopback: boolean;
  /**
   * The effective `allow_anonymous` of this listener (its own setting, else the broker's, else
   * false). Loopback listeners accept anonymous clients whatever this says; that rule belongs to
   * authentication, not here.
   */
  readonly allowAnonymous: boolean;
  /** Connections arrive over TLS. */
  readonly tls: boolean;
}
