import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import type { TlsOptions } from 'node:tls';
import { WebSocketServer, type WebSocket } from 'ws';
import { WebSocketTransport } from './websocket-transport.js';

/** MQTT over WebSocket, on one listener (`listeners[].websocket`). */
export interface WebSocketOptions {
  /** The HTTP path of the upgrade request (default `/mqtt`); others get 404. */
  path: string;
  /**
   * The `Origin`s a browser page may connect from (`https://dash.example.com`); without the list,
   * any. A request without `Origin` is not from a browser page and is let in: the check keeps
   * other web sites' pages out, it proves nothing about other clients.
   */
  allowedOrigins?: readonly string[];
}

/** The subprotocols offered, in the order we choose: `mqtt` [MQTT-6.0.0-4], then MQTT 3.1's name. */
const SUBPROTOCOLS = ['mqtt', 'mqttv3.1'] as const;

export interface WebSocketHooks {
  /** Asked for each TCP connection as it arrives: false has closed it. */
  admit(socket: Socket): boolean;
  /** The upgraded connection; `socket` is the one it runs on (TLS for wss). */
  accept(transport: WebSocketTransport, socket: Socket): void;
  /** An upgrade refused, and why (for the log). */
  refused(socket: Socket, why: string): void;
  /**
   * Sockets not upgraded yet, by remote address (the TCP socket under a TLS one has the same):
   * they count against max_connections until they are upgraded, or gone.
   */
  pending: Map<string, Socket>;
  /** Bytes of one WebSocket message at most (max_packet_size): ws refuses a bigger one at its header, before buffering it. */
  maxMessageBytes: number;
  /** The HTTP request must be complete by then (connect_timeout_ms). */
  handshakeTimeoutMs: number;
}

/**
 * An HTTP (or, with `tls`, HTTPS) server whose one use is the WebSocket upgrade on `path`.
 * permessage-deflate stays off: it costs CPU per message on a small board and would let a small
 * frame inflate into a large one.
 */
export function webSocketServer(options: WebSocketOptions, hooks: WebSocketHooks, tls: TlsOptions | undefined): HttpServer {
  const wss = new WebSocketServer({
    noServer: true,
    perMessageDeflate: false,
    clientTracking: false,
    maxPayload: hooks.maxMessageBytes,
    handleProtocols: (offered) => SUBPROTOCOLS.find((protocol) => offered.has(protocol)) ?? false,
  });
  const answer = (request: IncomingMessage, response: ServerResponse) => {
    const status = pathOf(request) === options.path ? 426 : 404;
    response.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', connection: 'close' });
    response.end(status === 426 ? `MQTT over WebSocket: connect with a WebSocket client to ${options.path}\n` : 'not found\n');
  };
  const server = tls ? createHttpsServer(tls, answer) : createHttpServer(answer);
  server.headersTimeout = hooks.handshakeTimeoutMs;
  server.requestTimeout = hooks.handshakeTimeoutMs;
  server.keepAliveTimeout = 1000;

  server.on('connection', (socket: Socket) => {
    if (!hooks.admit(socket)) return;
    const key = remoteKey(socket);
    hooks.pending.set(key, socket);
    socket.once('close', () => {
      if (hooks.pending.get(key) === socket) hooks.pending.delete(key);
    });
  });
  server.on('clientError', (_error: Error, socket: Socket) => socket.destroy());
  server.on('upgrade', (request: IncomingMessage, socket: Socket, head: Buffer) => {
    const refusal = refusalOf(request, options);
    if (refusal) {
      hooks.refused(socket, refusal.why);
      socket.end(`HTTP/1.1 ${refusal.status} ${refusal.reason}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      socket.destroySoon();
      return;
    }
    wss.handleUpgrade(request, socket, head, (ws: WebSocket) => {
      // Upgraded: a connection of the broker's from now on, which admits it again as one.
      hooks.pending.delete(remoteKey(socket));
      hooks.accept(new WebSocketTransport(ws, socket), socket);
    });
  });
  return server;
}

/** Why an upgrade request is refused, with its HTTP status; undefined when it is let in. */
function refusalOf(request: IncomingMessage, options: WebSocketOptions): { status: number; reason: string; why: string } | undefined {
  const path = pathOf(request);
  if (path !== options.path) return { status: 404, reason: 'Not Found', why: `path ${JSON.stringify(path)} is not ${options.path}` };
  const origin = request.headers.origin;
  if (origin !== undefined && options.allowedOrigins !== undefined && !options.allowedOrigins.includes(origin)) {
    return { status: 403, reason: 'Forbidden', why: `origin ${JSON.stringify(origin)} is not in allowed_origins` };
  }
  const offered = request.headers['sec-websocket-protocol'];
  if (offered !== undefined && !offered.split(',').some((name) => (SUBPROTOCOLS as readonly string[]).includes(name.trim()))) {
    return { status: 400, reason: 'Bad Request', why: `subprotocols ${JSON.stringify(offered)} offered, none of ${SUBPROTOCOLS.join(', ')}` };
  }
  return undefined;
}

function remoteKey(socket: Socket): string {
  return `${socket.remoteAddress}|${socket.remotePort}`;
}

function pathOf(request: IncomingMessage): string {
  const url = request.url ?? '/';
  const query = url.indexOf('?');
  return query === -1 ? url : url.slice(0, query);
}
