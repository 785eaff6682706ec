/**
 * websocket-transport.ts reads two fields of ws's receiver, which ws has no public word for: how
 * many bytes of a frame still arriving it holds. They count against max_unfinished_packet_bytes and
 * run packet_timeout_ms. ws is pinned to an exact version in package.json; this suite states the
 * assumption over a real connection, so that an upgrade that breaks it fails here, by name.
 */
import { once } from 'node:events';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import type { IncomingMessage } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocketServer, type WebSocket } from 'ws';
import { frame, upgrade, type Upgraded } from '../helpers/raw-websocket.js';

const require = createRequire(import.meta.url);
const packageJson = JSON.parse(fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { dependencies: Record<string, string> };

interface ReceiverInternals {
  _bufferedBytes: number;
  _messageLength: number;
}

let server: WebSocketServer | undefined;
let client: Upgraded | undefined;
afterEach(async () => {
  client?.socket.destroy();
  const closing = server;
  server = undefined;
  if (closing) await new Promise((resolve) => closing.close(resolve));
});

async function pair(): Promise<{ ws: WebSocket; socket: Socket; receiver: ReceiverInternals; client: Upgraded }> {
  server = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await once(server, 'listening');
  const accepted = once(server, 'connection') as Promise<[WebSocket, IncomingMessage]>;
  client = await upgrade((server.address() as AddressInfo).port);
  const [ws, request] = await accepted;
  return { ws, socket: request.socket as Socket, receiver: (ws as unknown as { _receiver: ReceiverInternals })._receiver, client };
}

/** Resolves once ws has read the next chunk: our 'data' listener comes after its own, as in WebSocketTransport. */
function chunkRead(socket: Socket): Promise<unknown> {
  return once(socket, 'data');
}

/** The receiver has parsed what arrived by the time a later message is emitted. */
async function settle(ws: WebSocket, upgraded: Upgraded): Promise<void> {
  const pong = once(ws, 'ping');
  upgraded.socket.write(frame(Buffer.alloc(0), { opcode: 9 }));
  await pong;
}

describe('ws receiver internals (websocket-transport.ts)', () => {
  it('ws is pinned to an exact version, and that version is installed', () => {
    expect(packageJson.dependencies['ws']).toMatch(/^\d+\.\d+\.\d+$/);
    expect((require('ws/package.json') as { version: string }).version).toBe(packageJson.dependencies['ws']);
  });

  it('_bufferedBytes holds the payload of a frame still arriving, and drops to 0 when it is complete', async () => {
    const { ws, socket, receiver, client: upgraded } = await pair();
    const whole = frame(Buffer.alloc(1000, 0x61));
    const read = chunkRead(socket);
    upgraded.socket.write(whole.subarray(0, 8 + 400));
    await read;
    expect(receiver._bufferedBytes).toBe(400);
    const message = once(ws, 'message');
    upgraded.socket.write(whole.subarray(8 + 400));
    await message;
    expect(receiver._bufferedBytes).toBe(0);
    expect(receiver._messageLength).toBe(0);
  });

  it('_messageLength holds the payload of the fragments of a message before its last one', async () => {
    const { ws, receiver, client: upgraded } = await pair();
    // A first fragment (FIN 0, binary), complete: its payload waits in _fragments.
    const first = frame(Buffer.alloc(300, 0x62));
    first[0] = 0x02;
    upgraded.socket.write(first);
    await settle(ws, upgraded);
    expect(receiver._messageLength).toBe(300);
    expect(receiver._bufferedBytes).toBe(0);
    const message = once(ws, 'message');
    upgraded.socket.write(frame(Buffer.alloc(10, 0x62), { opcode: 0 }));
    const [data] = (await message) as [Buffer];
    expect(data.length).toBe(310);
    expect(receiver._messageLength).toBe(0);
  });
});
