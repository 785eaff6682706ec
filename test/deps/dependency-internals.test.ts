/**
 * Four files lean on the internals of a dependency, below its public API, for speed or for checks
 * the public API cannot make: strict-parser.ts and packet-fast-path.ts (mqtt-packet's parser state and
 * string reader), mqtt-packet-loader.ts (what mqtt-packet requires), group-commit.ts
 * (classic-level's native chained batch). package.json pins both
 * packages to an exact version, and this suite states each assumption on its own, so that an
 * upgrade that breaks one fails here, by name, instead of somewhere inside the broker.
 */
import os from 'node:os';
import path from 'node:path';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import { execFileSync } from 'node:child_process';
import { ClassicLevel } from 'classic-level';
import { ByteQueue } from '../../src/protocol/byte-queue.js';
import { createStrictParser } from '../../src/protocol/strict-parser.js';
import mqttPacket from 'mqtt-packet';
import { describe, expect, it } from 'vitest';

const require = createRequire(import.meta.url);
const packageJson = JSON.parse(fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { dependencies: Record<string, string> };

function installedVersion(name: string): string {
  return (require(`${name}/package.json`) as { version: string }).version;
}

describe('pinned dependencies whose internals we use', () => {
  it.each(['mqtt-packet', 'classic-level'])('%s is pinned to an exact version, and that version is installed', (name) => {
    const wanted = packageJson.dependencies[name];
    expect(wanted, `${name} must be pinned exactly in package.json`).toMatch(/^\d+\.\d+\.\d+$/);
    expect(installedVersion(name)).toBe(wanted);
  });
});

describe('mqtt-packet parser internals (strict-parser.ts, packet-fast-path.ts)', () => {
  interface ParserInternals {
    _list: { length: number; slice(start: number, end: number): Buffer; shallowSlice(start: number, end: number): unknown };
    _pos: number;
    _stateCounter: number;
    packet: { length: number };
    _states: string[];
    error: unknown;
  }

  it('has the state methods strict-parser.ts replaces, called by name from its state table', () => {
    const parser = mqttPacket.parser({ protocolVersion: 4 }) as unknown as ParserInternals & Record<string, unknown>;
    expect(parser._states).toEqual(['_parseHeader', '_parseLength', '_parsePayload', '_newPacket']);
    for (const method of ['_parseLength', '_parsePayload', '_parseMessageId', '_parseString', '_parseNum', '_emitError', '_resetState']) {
      expect(typeof parser[method], method).toBe('function');
    }
  });

  it('holds unparsed bytes in _list and is between packets exactly when _list is empty and _stateCounter is 0', () => {
    const parser = mqttPacket.parser({ protocolVersion: 4 }) as unknown as ParserInternals & { parse(bytes: Buffer): number };
    expect(parser._list.length).toBe(0);
    expect(parser._stateCounter).toBe(0);
    const publish = mqttPacket.generate({ cmd: 'publish', topic: 'a/b', payload: Buffer.from('xyz'), qos: 1, messageId: 7, dup: false, retain: false });
    parser.parse(publish.subarray(0, 3));
    expect(parser._list.length > 0 || parser._stateCounter !== 0).toBe(true);
    expect(typeof parser._list.shallowSlice).toBe('function');
    parser.parse(publish.subarray(3));
    expect(parser._list.length).toBe(0);
    expect(parser._stateCounter).toBe(0);
    expect(parser.error ?? null).toBeNull();
  });

  it('waits for a body in state 2 with the packet\'s remaining length in packet.length and only body bytes in _list', () => {
    const parser = mqttPacket.parser({ protocolVersion: 4 }) as unknown as ParserInternals & { parse(bytes: Buffer): number };
    const publish = mqttPacket.generate({ cmd: 'publish', topic: 'a/b', payload: Buffer.alloc(200), qos: 1, messageId: 7, dup: false, retain: false });
    // Two bytes of remaining length; ten bytes of the body.
    parser.parse(publish.subarray(0, 13));
    expect([parser._stateCounter, parser.packet.length, parser._list.length]).toEqual([2, publish.length - 3, 10]);
    parser.parse(publish.subarray(13));
    expect([parser._stateCounter, parser._list.length]).toEqual([0, 0]);
  });

  it('reads its byte list only through what ByteQueue offers (strict-parser.ts gives it one in place of bl)', () => {
    const source = fs.readFileSync(createRequire(import.meta.url).resolve('mqtt-packet/parser.js'), 'utf8');
    const used = new Set([...source.matchAll(/this\._list\.(\w+)/g)].map((match) => match[1]));
    expect([...used].sort()).toEqual(['append', 'consume', 'length', 'readUInt16BE', 'readUInt32BE', 'readUInt8', 'slice', 'toString']);
    const strict = createStrictParser() as unknown as ParserInternals & { _resetState(): void };
    expect(strict._list).toBeInstanceOf(ByteQueue);
    strict._resetState();
    expect(strict._list).toBeInstanceOf(ByteQueue);
  });

  it('requires bl and debug as mqtt-packet-loader.ts provides them: bl() called for each byte list, debug(namespace) for a logger', () => {
    const read = (file: string) => fs.readFileSync(createRequire(import.meta.url).resolve(`mqtt-packet/${file}`), 'utf8');
    const parser = read('parser.js');
    expect(parser).toContain("const bl = require('bl')");
    // Its one require (two mentions), and otherwise only calls.
    expect([...parser.matchAll(/\bbl\b/g)].length, 'bl is used only as required and called as bl()').toBe([...parser.matchAll(/\bbl\(\)/g)].length + 2);
    for (const file of ['parser.js', 'writeToStream.js']) {
      expect(read(file)).toMatch(/const debug = require\('debug'\)\('mqtt-packet:\w+'\)/);
      expect(read(file), `${file} only calls its logger`).not.toMatch(/debug\.(enabled|extend|log)/);
    }
  });

  it('loaded through mqtt-packet-loader.ts, neither bl (with readable-stream) nor debug is loaded, and packets still parse and generate', () => {
    const loader = new URL('../../dist/protocol/mqtt-packet-loader.js', import.meta.url).href;
    const script = `
      import { createRequire } from 'node:module';
import { execFileSync } from 'node:child_process';
      const { default: mqttPacket } = await import(${JSON.stringify(loader)});
      const parser = mqttPacket.parser({ protocolVersion: 4 });
      const packets = [];
      parser.on('packet', (packet) => packets.push(packet.cmd + ':' + packet.topic + ':' + packet.payload));
      const publish = mqttPacket.generate({ cmd: 'publish', topic: 'a/b', payload: Buffer.from('xyz'), qos: 1, messageId: 7, dup: false, retain: false });
      parser.parse(publish.subarray(0, 4));
      parser.parse(Buffer.concat([publish.subarray(4), publish]));
      // The loader's own entries stand under bl's and debug's main files; what those would load is absent.
      const loaded = Object.keys(createRequire(import.meta.url).cache).filter((file) => /node_modules[/](readable-stream[/]|ms[/]|bl[/]BufferList|debug[/]src[/](node|common))/.test(file));
      console.log(JSON.stringify({ packets, loaded }));
    `;
    const result = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env: { ...process.env, DEBUG: '' } });
    expect(JSON.parse(result)).toEqual({ packets: ['publish:a/b:xyz', 'publish:a/b:xyz'], loaded: [] });
  });

  it('_resetState drops the bytes of an unfinished packet, so a closed connection lets go of them', () => {
    const parser = mqttPacket.parser({ protocolVersion: 4 }) as unknown as ParserInternals & { parse(bytes: Buffer): number; _resetState(): void };
    parser.parse(Buffer.from([0x30, 0x7f, 0x00, 0x03, 0x61]));
    expect(parser._list.length).toBeGreaterThan(0);
    parser._resetState();
    expect([parser._list.length, parser._stateCounter]).toEqual([0, 0]);
  });

  it('reads strings through _parseString, so replacing it on an instance decides every string of a packet', () => {
    const parser = mqttPacket.parser({ protocolVersion: 4 }) as unknown as Record<string, unknown> & {
      parse(bytes: Buffer): number;
      on(event: string, listener: (packet: { topic?: string }) => void): void;
    };
    const original = parser._parseString as () => string | null;
    let calls = 0;
    parser._parseString = function counted(this: unknown) {
      calls++;
      return original.call(this);
    };
    const topics: (string | undefined)[] = [];
    parser.on('packet', (packet) => topics.push(packet.topic));
    parser.parse(mqttPacket.generate({ cmd: 'publish', topic: 'x/y', payload: Buffer.alloc(0), qos: 0, dup: false, retain: false }));
    expect(topics).toEqual(['x/y']);
    expect(calls).toBe(1);
  });
});

describe('classic-level chained batch internals (group-commit.ts)', () => {
  it('hands out a native batch with _put, _del and _write({ sync }) that writes strings and bytes as they are', async () => {
    const location = fs.mkdtempSync(path.join(os.tmpdir(), 'broker-deps-'));
    const db = new ClassicLevel<string, Uint8Array>(location, { keyEncoding: 'utf8', valueEncoding: 'view' });
    await db.open();
    try {
      await db.put('gone', Uint8Array.of(9));
      const batch = (db as unknown as { _chainedBatch(): Record<string, unknown> })._chainedBatch() as {
        _put(key: string, value: Uint8Array): void;
        _del(key: string): void;
        _write(options: { sync: boolean }): Promise<void>;
        close(): Promise<void>;
      };
      batch._put('k', Uint8Array.of(1, 2, 3));
      batch._del('gone');
      await batch._write({ sync: true });
      await batch.close();
      expect([...(await db.get('k'))!]).toEqual([1, 2, 3]);
      expect(await db.get('gone')).toBeUndefined();
    } finally {
      await db.close();
      fs.rmSync(location, { recursive: true, force: true });
    }
  });
});
