/**
 * A WebSocket client by hand, over a plain socket, for what a WebSocket library will not do: leave
 * a frame unfinished, not read at all, send a text frame. The framing is RFC 6455's, client side
 * (frames masked); the server's frames are read back unmasked.
 */
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';

export interface Upgraded {
  socket: Socket;
  /** The HTTP status line and headers of the answer. */
  status: number;
  headers: Record<string, string>;
  /** Bytes after the answer's headers (frames the server sent at once). */
  rest: Buffer;
}

/** Sends the upgrade request and reads the answer's head. */
export async function upgrade(port: number, options: { path?: string; protocols?: string; origin?: string } = {}): Promise<Upgraded> {
  const socket = connect(port, '127.0.0.1');
  await once(socket, 'connect');
  const lines = [
    `GET ${options.path ?? '/mqtt'} HTTP/1.1`,
    `Host: 127.0.0.1:${port}`,
    'Upgrade: websocket',
    'Connection: Upgrade',
    `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}`,
    'Sec-WebSocket-Version: 13',
    ...(options.protocols === undefined ? [] : [`Sec-WebSocket-Protocol: ${options.protocols}`]),
    ...(options.origin === undefined ? [] : [`Origin: ${options.origin}`]),
  ];
  socket.write(`${lines.join('\r\n')}\r\n\r\n`);
  let received = Buffer.alloc(0);
  let end = -1;
  while (end === -1) {
    const [chunk] = (await Promise.race([once(socket, 'data'), once(socket, 'close').then(() => [Buffer.alloc(0)])])) as [Buffer];
    if (chunk.length === 0) break;
    received = Buffer.concat([received, chunk]);
    end = received.indexOf('\r\n\r\n');
  }
  const head = received.subarray(0, end === -1 ? received.length : end).toString('latin1').split('\r\n');
  const headers: Record<string, string> = {};
  for (const line of head.slice(1)) {
    const colon = line.indexOf(':');
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  const status = Number(/^HTTP\/1\.1 (\d+)/.exec(head[0] ?? '')?.[1] ?? 0);
  return { socket, status, headers, rest: end === -1 ? Buffer.alloc(0) : received.subarray(end + 4) };
}

/** A client frame (masked): binary by default; `declaredLength` larger than the payload leaves it unfinished. */
export function frame(payload: Buffer, options: { opcode?: number; declaredLength?: number } = {}): Buffer {
  const length = options.declaredLength ?? payload.length;
  const head: number[] = [0x80 | (options.opcode ?? 2)];
  if (length < 126) head.push(0x80 | length);
  else if (length < 65536) head.push(0x80 | 126, length >> 8, length & 0xff);
  else head.push(0x80 | 127, 0, 0, 0, 0, (length >>> 24) & 0xff, (length >> 16) & 0xff, (length >> 8) & 0xff, length & 0xff);
  const mask = randomBytes(4);
  const masked = Buffer.from(payload);
  for (let index = 0; index < masked.length; index++) masked[index]! ^= mask[index % 4]!;
  return Buffer.concat([Buffer.from(head), mask, masked]);
}

/** Server frames (unmasked) in `bytes`: the payloads of the complete ones, and what is left over. */
export function unframe(bytes: Buffer): { payloads: Array<{ opcode: number; payload: Buffer }>; rest: Buffer } {
  const payloads: Array<{ opcode: number; payload: Buffer }> = [];
  let offset = 0;
  for (;;) {
    if (bytes.length - offset < 2) break;
    const opcode = bytes[offset]! & 0x0f;
    let length = bytes[offset + 1]! & 0x7f;
    let start = offset + 2;
    if (length === 126) {
      if (bytes.length - offset < 4) break;
      length = bytes.readUInt16BE(offset + 2);
      start = offset + 4;
    } else if (length === 127) {
      if (bytes.length - offset < 10) break;
      length = Number(bytes.readBigUInt64BE(offset + 2));
      start = offset + 10;
    }
    if (bytes.length < start + length) break;
    payloads.push({ opcode, payload: bytes.subarray(start, start + length) });
    offset = start + length;
  }
  return { payloads, rest: bytes.subarray(offset) };
}
