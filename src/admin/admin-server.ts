import { chmodSync, existsSync, unlinkSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import type { BridgeStatus } from '../bridge/bridge.js';
import type { Logger } from '../logger.js';
import { subscriptionOf } from '../routing/topic-tree.js';
import type { BrokerCounters } from '../protocol/limits.js';
import type { Distributor } from '../session/distributor.js';
import type { Session } from '../session/session.js';
import type { SessionManager } from '../session/session-manager.js';
import type { LevelInspector } from '../store/level-inspector.js';
import type { OutboundEntry } from '../store/repository.js';
import { AdminError, AdminErrorCodes, errorCode, errorMessage } from '../errors.js';
import { probeSocket } from './admin-client.js';
import { parseRequest, runOperation, type AdminTarget, type LiveSession } from './operations.js';

/**
 * The running broker's admin channel: a Unix socket in the data directory that only its owner can
 * use (mode 0600). One request per connection, a JSON line `{"op": …}`; the answer is NDJSON:
 * records as they stream, `{"progress": {…}}` now and then, and last `{"done": true}` or
 * `{"error": {"code", "message"}}`. Writes wait for 'drain', so a slow reader holds back the
 * reading of the store, never memory, and the broker's clients are not stalled.
 */

const MAX_REQUEST_BYTES = 64 * 1024;
const PAGE = 500;

export interface AdminServerOptions {
  path: string;
  inspector: LevelInspector;
  sessions: SessionManager;
  /** Where retained messages are cleared (store, then memory). */
  distributor: Distributor;
  store: string;
  log: Logger;
  /** The broker's counters, shown by `stats`. */
  counters?: Readonly<BrokerCounters>;
  /** The broker's bridges, shown by `bridges`. */
  bridges?: { status(): Promise<BridgeStatus[]> };
}

export class AdminServer {
  readonly path: string;
  readonly #server: Server;
  readonly #target: AdminTarget;
  readonly #log: Logger;
  readonly #handlers = new Set<Promise<void>>();
  readonly #sockets = new Set<Socket>();

  private constructor(options: AdminServerOptions, server: Server) {
    this.path = options.path;
    this.#server = server;
    this.#target = new RunningTarget(options);
    this.#log = options.log;
    server.on('connection', (socket) => this.#accept(socket));
  }

  /** Listens on `path`; a stale socket file is removed, but never one that something answers on. */
  static async start(options: AdminServerOptions): Promise<AdminServer> {
    if (existsSync(options.path)) {
      if (await probeSocket(options.path)) {
        throw new AdminError(AdminErrorCodes.SOCKET_IN_USE, `another process answers on ${options.path}`);
      }
      unlinkSync(options.path);
    }
    // Half-open: a client that shuts down its side after the request still gets the whole answer.
    const server = createServer({ allowHalfOpen: true });
    const admin = new AdminServer(options, server);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      // The socket file is created by bind(), synchronously inside listen(): a restrictive umask
      // makes it 0600 from its first instant, and chmod makes sure (umask is not available in a
      // worker thread).
      let previous: number | undefined;
      try {
        previous = process.umask(0o177);
      } catch {
        previous = undefined;
      }
      try {
        server.listen(options.path, () => {
          server.off('error', reject);
          resolve();
        });
        if (existsSync(options.path)) chmodSync(options.path, 0o600);
      } finally {
        if (previous !== undefined) process.umask(previous);
      }
    });
    chmodSync(options.path, 0o600);
    return admin;
  }

  /** Stops accepting, ends requests under way (their snapshots are closed) and removes the socket file. */
  async close(): Promise<void> {
    const stopped = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    for (const socket of this.#sockets) socket.destroy();
    await Promise.allSettled([...this.#handlers]);
    await stopped;
    if (existsSync(this.path)) {
      try {
        unlinkSync(this.path);
      } catch {
        // Already gone.
      }
    }
  }

  #accept(socket: Socket): void {
    this.#sockets.add(socket);
    socket.on('error', () => {});
    const handler = this.#serve(socket).finally(() => {
      this.#sockets.delete(socket);
      this.#handlers.delete(handler);
    });
    this.#handlers.add(handler);
  }

  async #serve(socket: Socket): Promise<void> {
    const line = await readLine(socket);
    if (line === undefined) {
      socket.destroy();
      return;
    }
    let lastProgress = 0;
    const progress = (label: string, count: number) => {
      if (socket.destroyed) throw new AdminError(AdminErrorCodes.PROTOCOL, 'the admin client went away');
      const now = Date.now();
      if (now - lastProgress < 200 || socket.writableNeedDrain) return;
      lastProgress = now;
      socket.write(`${JSON.stringify({ progress: { label, count } })}\n`);
    };
    try {
      const request = parseRequest(JSON.parse(line));
      for await (const record of runOperation(request, this.#target, progress)) {
        if (!(await writeLine(socket, JSON.stringify(record)))) return;
      }
      await writeLine(socket, JSON.stringify({ done: true }));
    } catch (error) {
      if (socket.destroyed) return;
      const code = error instanceof SyntaxError ? AdminErrorCodes.BAD_REQUEST : errorCode(error);
      if (code === AdminErrorCodes.INTERNAL) this.#log.error(`admin request failed: ${errorMessage(error)}`);
      await writeLine(socket, JSON.stringify({ error: { code, message: errorMessage(error) } }));
    }
    socket.end();
    // Reading again lets the client's own end (or close) arrive, so the socket is released.
    socket.resume();
  }
}

/** The first line the client sends, or undefined if it sends none (or too much). */
function readLine(socket: Socket): Promise<string | undefined> {
  return new Promise((resolve) => {
    let buffered = '';
    const finish = (line: string | undefined) => {
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
      socket.pause();
      resolve(line);
    };
    const onData = (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      const at = buffered.indexOf('\n');
      if (at >= 0) finish(buffered.slice(0, at));
      else if (buffered.length > MAX_REQUEST_BYTES) finish(undefined);
    };
    const onEnd = () => finish(buffered.length > 0 ? buffered : undefined);
    socket.on('data', onData);
    socket.on('end', onEnd);
    socket.on('close', onEnd);
  });
}

/** Writes one line; waits for 'drain' when the socket's buffer is full. false: the socket closed. */
function writeLine(socket: Socket, line: string): Promise<boolean> {
  if (socket.destroyed || !socket.writable) return Promise.resolve(false);
  if (socket.write(`${line}\n`)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const onDrain = () => done(true);
    const onClose = () => done(false);
    const done = (ok: boolean) => {
      socket.off('drain', onDrain);
      socket.off('close', onClose);
      resolve(ok);
    };
    socket.on('drain', onDrain);
    socket.on('close', onClose);
  });
}

/** The running broker as an admin target: the store through the inspector, connections from the SessionManager. */
class RunningTarget implements AdminTarget {
  readonly mode = 'running' as const;
  readonly store: string;
  readonly #inspector: LevelInspector;
  readonly #sessions: SessionManager;
  readonly #distributor: Distributor;
  readonly live: NonNullable<AdminTarget['live']>;
  readonly counters: (() => BrokerCounters) | undefined;
  readonly bridges: (() => Promise<BridgeStatus[]>) | undefined;

  constructor({ store, inspector, sessions, distributor, counters, bridges }: AdminServerOptions) {
    this.store = store;
    this.#inspector = inspector;
    this.#sessions = sessions;
    this.#distributor = distributor;
    this.counters = counters && (() => ({ ...counters }));
    this.bridges = bridges && (() => bridges.status());
    this.live = {
      lookup: (clientId) => {
        const session = sessions.lookup(clientId);
        return session ? liveSession(session) : undefined;
      },
      clean: () => [...sessions.sessions()].filter((session) => session.clean).map(liveSession),
    };
  }

  async inspector(): Promise<LevelInspector> {
    return this.#inspector;
  }

  async dropSession(clientId: string): Promise<void> {
    if (!(await this.#sessions.destroy(clientId, 'session dropped by broker-admin'))) {
      throw new AdminError(AdminErrorCodes.UNKNOWN_SESSION, `there is no session for client id ${JSON.stringify(clientId)}`);
    }
  }

  async clearRetained(topic: string): Promise<void> {
    await this.#distributor.clearRetained(topic);
  }
}

function liveSession(session: Session): LiveSession {
  return {
    clientId: session.clientId,
    clean: session.clean,
    connected: session.connected,
    owner: session.owner,
    // A clean session ends with its connection, which `persistent: false` says already.
    expiry: session.clean ? undefined : session.expiry,
    subscriptions: [...session.subscriptions].map(([filter, route]) => subscriptionOf(filter, route)),
    async *entries(): AsyncGenerator<OutboundEntry> {
      let after = 0;
      for (;;) {
        const page = await session.readQueue(after, PAGE);
        yield* page;
        if (page.length < PAGE) return;
        after = page[page.length - 1]!.seq;
      }
    },
    inbound: () => session.inboundPacketIds(),
    queueStats: () => session.queueStats(),
  };
}
