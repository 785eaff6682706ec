import { BlockList, createServer as createTcpServer, isIP, type AddressInfo, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer, type TlsOptions, type TLSSocket } from 'node:tls';
import { BrokerError, ErrorCodes, errorMessage } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Transport } from '../protocol/broker-context.js';
import type { ListenerInfo } from '../protocol/listener-info.js';

export interface TlsListenerOptions {
  /** The server's certificate chain (PEM). */
  cert: string | Buffer;
  /** The server's private key (PEM). */
  key: string | Buffer;
  /** CA certificates (PEM) that client certificates must chain to. Required with `requireClientCert` or `certUsername`. */
  ca?: string | Buffer;
  /** Refuse clients without a certificate signed by `ca` (default false). */
  requireClientCert?: boolean;
  /**
   * The subject CN of a client certificate verified against `ca` becomes the connection's
   * authenticated user name (default false). Without `requireClientCert`, a certificate is asked
   * for but optional.
   */
  certUsername?: boolean;
}

export interface ListenerOptions {
  /** Interface to listen on (default 127.0.0.1). */
  host?: string;
  /** TCP port; 0 picks a free one. */
  port: number;
  /** Anonymous clients on this listener; overrides BrokerOptions.allowAnonymous. */
  allowAnonymous?: boolean;
  /** Serve MQTT over TLS instead of plain TCP (with `websocket`: over wss). */
  tls?: TlsListenerOptions;
  /** Serve MQTT over WebSocket (default false): HTTP upgrade on `path`, subprotocol `mqtt` or `mqttv3.1`. */
  websocket?: boolean;
  /** With `websocket`: the path of the upgrade request (default `/mqtt`). */
  path?: string;
  /** With `websocket`: the `Origin`s browser pages may connect from (default: any). See WebSocketOptions. */
  allowedOrigins?: string[];
}

export const DEFAULT_WEBSOCKET_PATH = '/mqtt';

/** Receives each new client connection: plain at once, TLS after a successful handshake, WebSocket after its upgrade. */
export type Accept = (transport: Transport, listener: ListenerInfo, certificateUser: string | undefined) => void;

export interface ListenerHooks {
  accept: Accept;
  /**
   * Asked when a TLS client's TCP connection arrives, before its handshake: false closes it at
   * once, so sockets in a handshake count against max_connections too.
   */
  admit(socket: Socket): boolean;
  log: Logger;
  /**
   * A TLS handshake, or a WebSocket's HTTP upgrade request, not finished by then is abandoned (a
   * socket that never speaks holds nothing for long).
   */
  handshakeTimeoutMs: number;
  /** max_packet_size: no WebSocket message may be larger (ws refuses it at its header, before buffering it). */
  maxPacketSize: number;
  /** The broker-wide allow_anonymous, for listeners that do not set their own. */
  allowAnonymous: boolean;
}

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');

/** 127.0.0.0/8, ::1 (any spelling, IPv4-mapped included) and the name `localhost`. */
export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost') return true;
  const family = isIP(host);
  return family !== 0 && LOOPBACK.check(host, family === 6 ? 'ipv6' : 'ipv4');
}

/** `host:port`, with brackets around an IPv6 address. */
export function formatAddress(host: string, port: number): string {
  return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}

/** One listening socket, plain TCP, TLS or WebSocket, handing its clients to the broker. */
export class Listener {
  readonly info: ListenerInfo;
  readonly #server: Server;
  /**
   * TLS sockets still in their handshake, by remote address: not the broker's yet, so this
   * listener closes them at shutdown (they would otherwise hold close() until the handshake timeout).
   */
  readonly #handshaking: Map<string, Socket>;
  /** WebSocket connections not upgraded yet: the same for them. */
  readonly #upgrading: Map<string, Socket>;

  private constructor(server: Server, info: ListenerInfo, handshaking: Map<string, Socket>, upgrading: Map<string, Socket>) {
    this.#server = server;
    this.info = info;
    this.#handshaking = handshaking;
    this.#upgrading = upgrading;
  }

  /** Resolves once the listener accepts connections; rejects with LISTEN_FAILED naming the address. */
  static async open(options: ListenerOptions, hooks: ListenerHooks): Promise<Listener> {
    const host = options.host ?? '127.0.0.1';
    const { port, tls } = options;
    const kind = [options.websocket ? 'WebSocket' : undefined, tls ? 'TLS' : undefined].filter(Boolean).join(', ');
    const suffix = kind === '' ? '' : ` (${kind})`;
    // Set once bound (port 0 picks the port); no socket is accepted before then.
    let info: ListenerInfo | undefined;
    const handshaking = new Map<string, Socket>();
    const upgrading = new Map<string, Socket>();
    const tlsOptions: TlsOptions | undefined = tls && {
      cert: tls.cert,
      key: tls.key,
      ...(tls.ca === undefined ? {} : { ca: tls.ca }),
      requestCert: tls.requireClientCert === true || tls.certUsername === true,
      // Without requireClientCert a certificate is optional; `authorized` still says whether it verified.
      rejectUnauthorized: tls.requireClientCert === true,
      handshakeTimeout: hooks.handshakeTimeoutMs,
    };
    const certificateUser = (socket: Socket) => (tls?.certUsername === true ? verifiedCommonName(socket as TLSSocket) : undefined);
    let server: Server;
    if (options.websocket) {
      // Loaded only here: a broker without WebSocket listeners does not hold ws in memory.
      const { webSocketServer } = await import('./websocket-listener.js');
      server = tlsServer(host, port, suffix, () =>
        webSocketServer(
          { path: options.path ?? DEFAULT_WEBSOCKET_PATH, ...(options.allowedOrigins ? { allowedOrigins: options.allowedOrigins } : {}) },
          {
            admit: (socket) => hooks.admit(socket),
            accept: (transport, socket) => hooks.accept(transport, info!, certificateUser(socket)),
            refused: (socket, why) => hooks.log.info(`listener ${info?.name ?? formatAddress(host, port)}: WebSocket upgrade from ${remoteKey(socket)} refused: ${why}`),
            pending: upgrading,
            maxMessageBytes: hooks.maxPacketSize,
            handshakeTimeoutMs: hooks.handshakeTimeoutMs,
          },
          tlsOptions,
        ),
      );
    } else if (tlsOptions) {
      server = tlsServer(host, port, suffix, () =>
        createTlsServer(tlsOptions, (socket: TLSSocket) => {
          handshaking.delete(remoteKey(socket));
          socket.setNoDelay(true);
          hooks.accept(socket, info!, certificateUser(socket));
        }),
      );
      // 'connection' sees the TCP socket under the TLS one; both have the same remote address.
      server.on('connection', (socket: Socket) => {
        if (!hooks.admit(socket)) return;
        const key = remoteKey(socket);
        handshaking.set(key, socket);
        socket.once('close', () => {
          if (handshaking.get(key) === socket) handshaking.delete(key);
        });
      });
    } else {
      server = createTcpServer((socket) => {
        socket.setNoDelay(true);
        hooks.accept(socket, info!, undefined);
      });
    }
    if (tls) {
      server.on('tlsClientError', (error: Error & { reason?: string }, socket: TLSSocket) => {
        // OpenSSL's `reason` ("wrong version number": a plain client) says it; its message adds source paths.
        const why = error.reason ?? error.message;
        hooks.log.info(`listener ${info?.name ?? formatAddress(host, port)}: TLS handshake with ${remoteKey(socket)} failed: ${why}`);
      });
    }

    try {
      await new Promise<void>((resolveListen, rejectListen) => {
        server.once('error', rejectListen);
        server.listen(port, host, () => {
          server.off('error', rejectListen);
          resolveListen();
        });
      });
    } catch (error) {
      const where = `${formatAddress(host, port)}${suffix}`;
      throw new BrokerError(ErrorCodes.LISTEN_FAILED, `cannot listen on ${where}: ${errorMessage(error)}`, { cause: error });
    }
    const bound = server.address() as AddressInfo;
    const listening: ListenerInfo = {
      name: `${formatAddress(bound.address, bound.port)}${suffix}`,
      loopback: isLoopbackHost(host),
      allowAnonymous: options.allowAnonymous ?? hooks.allowAnonymous,
      tls: tls !== undefined,
    };
    info = listening;
    // An accept error (EMFILE, …) after start-up must not take the broker down.
    server.on('error', (error: Error) => hooks.log.error(`listener ${listening.name}: ${error.message}`));
    return new Listener(server, listening, handshaking, upgrading);
  }

  address(): AddressInfo {
    return this.#server.address() as AddressInfo;
  }

  /** Accepts connections (it stops when closed, or when its server failed). */
  get listening(): boolean {
    return this.#server.listening;
  }

  /** TLS sockets in their handshake, WebSocket ones before their upgrade: connections the broker does not hold yet, but that count. */
  get handshakes(): number {
    return this.#handshaking.size + this.#upgrading.size;
  }

  /**
   * Stops accepting. Resolves once every socket it accepted is closed: the broker ends those
   * (they are its connections); sockets still in a TLS handshake are destroyed here.
   */
  close(): Promise<void> {
    const closed = new Promise<void>((resolveClose) => this.#server.close(() => resolveClose()));
    for (const socket of [...this.#handshaking.values(), ...this.#upgrading.values()]) socket.destroy();
    this.#handshaking.clear();
    this.#upgrading.clear();
    return closed;
  }
}

/** Makes the server, with a bad certificate or key reported as the listener's (BAD_OPTION). */
function tlsServer(host: string, port: number, suffix: string, create: () => Server): Server {
  try {
    return create();
  } catch (error) {
    throw new BrokerError(ErrorCodes.BAD_OPTION, `listener ${formatAddress(host, port)}${suffix}: ${errorMessage(error)}`, { cause: error });
  }
}

function remoteKey(socket: Socket): string {
  return formatAddress(socket.remoteAddress ?? '?', socket.remotePort ?? 0);
}

/** The subject CN of a client certificate that verified against the listener's CA, if any. */
function verifiedCommonName(socket: TLSSocket): string | undefined {
  if (!socket.authorized) return undefined;
  const commonName = socket.getPeerCertificate().subject?.CN;
  // Several CNs (an array) name no one in particular: no certificate user then.
  return typeof commonName === 'string' && commonName !== '' ? commonName : undefined;
}
