import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BundleLoader } from './bundle-loader.js';

/**
 * `npm run build`'s last step: starts the broker from dist/bundle as bin/broker.js does, on a
 * scratch store, has one client connect, subscribe, publish at QoS 1 and take its message, stops
 * it, and keeps what V8 compiled meanwhile as each chunk's code cache (bundle-loader.ts). A start
 * then skips most of its compiling: the cache holds the functions a start and a first client run,
 * not only the modules' top level.
 *
 * V8 accepts a cache only under the flags it was made with, so this runs with bin/broker.js's
 * (package.json's build script; test/cli/bundle-loader.test.ts checks they agree).
 */
const GIVE_UP_MS = 20_000;

const loader = new BundleLoader(fileURLToPath(new URL('../bundle/', import.meta.url)));
const { main } = loader.load('broker-cli.cjs') as { main(argv: string[]): Promise<void> };

const data = mkdtempSync(join(tmpdir(), 'broker-code-cache-'));
// The broker ends with process.exit once its store is closed; the cache is written then.
process.once('exit', (code) => {
  rmSync(data, { recursive: true, force: true });
  if (code === 0) {
    loader.writeCodeCache();
    console.log(`code cache written for ${[...loader.cacheOutcomes().keys()].join(', ')}`);
    return;
  }
  // The broker could not start here (it said why above: its port taken, its scratch store). The
  // cache only speeds up a start, so the build goes on without one; test/cli/bundle-loader.test.ts
  // fails when a build has none. process.exit(code) reads exitCode again after this event.
  console.warn('code cache: not written, the warm-up broker did not start; a start compiles the bundle as before');
  process.exitCode = 0;
});

const port = await freePort();
await main([process.execPath, 'broker', '--host', '127.0.0.1', '--port', String(port), '--data', data, '--log-level', 'warn']);
try {
  await warmUp(port);
} catch (error) {
  // The cache still covers loading the modules; only the first client's code compiles at start.
  console.warn(`code cache: the warm-up client failed (${String(error)}); caching what loading compiled`);
}
process.kill(process.pid, 'SIGTERM');

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address !== null ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

/** An MQTT string: two length bytes, then UTF-8. */
function text(value: string): Buffer {
  const bytes = Buffer.from(value, 'utf8');
  return Buffer.concat([Buffer.from([bytes.length >> 8, bytes.length & 0xff]), bytes]);
}

/** A packet whose remaining length fits in one byte (all of them here). */
function packet(firstByte: number, ...parts: Buffer[]): Buffer {
  const body = Buffer.concat(parts);
  return Buffer.concat([Buffer.from([firstByte, body.length]), body]);
}

/**
 * CONNECT (persistent session), SUBSCRIBE at QoS 1, PUBLISH at QoS 1 to it, PUBACK the delivery,
 * DISCONNECT: the paths every start and first client take. Resolves once the broker acknowledged
 * the publish and delivered it.
 */
function warmUp(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket: Socket = connect(port, '127.0.0.1');
    const timer = setTimeout(() => socket.destroy(new Error(`no answer within ${GIVE_UP_MS} ms`)), GIVE_UP_MS);
    let pending = Buffer.alloc(0);
    let acknowledged = false;
    let delivered = false;
    socket.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 2 && pending.length >= 2 + pending[1]!) {
        const type = pending[0]! >> 4;
        const body = pending.subarray(2, 2 + pending[1]!);
        pending = pending.subarray(2 + pending[1]!);
        if (type === 2) socket.write(packet(0x82, Buffer.from([0, 1]), text('warm/#'), Buffer.from([1])));
        if (type === 9) socket.write(packet(0x32, text('warm/up'), Buffer.from([0, 2]), Buffer.from('x')));
        if (type === 4) acknowledged = true;
        if (type === 3) {
          const topicLength = body.readUInt16BE(0);
          socket.write(packet(0x40, body.subarray(2 + topicLength, 4 + topicLength)));
          delivered = true;
        }
      }
      if (acknowledged && delivered) {
        clearTimeout(timer);
        socket.end(Buffer.from([0xe0, 0]), () => resolve());
      }
    });
    socket.write(packet(0x10, text('MQTT'), Buffer.from([4, 0, 0, 60]), text('code-cache')));
  });
}
