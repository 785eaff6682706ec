import mqttPacket, { type Parser } from 'mqtt-packet';

/** Thrown inside the parser; it surfaces as the parser's usual 'error' event. */
const strictDecoder = new TextDecoder('utf-8', { fatal: true });

interface BufferList {
  length: number;
  slice(start: number, end: number): Buffer;
  shallowSlice(start: number, end: number): BufferList;
}

interface ParserInternals {
  _list: BufferList;
  _pos: number;
  packet: { length: number; messageId?: number; cmd?: string };
  error?: unknown;
  _parseNum(): number;
  _parseLength(): boolean;
  _parsePayload(): boolean;
  _parseMessageId(): boolean;
  _emitError(error: Error): void;
}

/** Thrown (as the parser's 'error') when a packet's declared size is over the limit. */
export class PacketTooLarge extends Error {
  constructor(size: number, max: number) {
    super(`packet of ${size} bytes is over max_packet_size (${max})`);
    this.name = 'PacketTooLarge';
  }
}

/**
 * An mqtt-packet parser whose strings are checked as MQTT requires: well-formed UTF-8
 * [MQTT-1.5.3-1] without U+0000 [MQTT-1.5.3-2], or the connection is closed. mqtt-packet decodes
 * with Buffer#toString, which silently turns bad bytes into U+FFFD; we replace its one string
 * reader on this instance. These are mqtt-packet's internals: it is pinned to an exact version in
 * package.json, and test/deps/dependency-internals.test.ts states what this relies on.
 *
 * It also refuses a packet whose total size (fixed header included, as MQTT 5 counts its Maximum
 * Packet Size) is over `maxPacketSize` as soon as the remaining length is decoded, before any of
 * the body is buffered: mqtt-packet would otherwise collect the whole body, up to 256 MiB, first.
 * The length may arrive split over several chunks; mqtt-packet's length state waits for all of it.
 *
 * And it keeps every read inside the packet: mqtt-packet bounds most reads by the bytes it holds,
 * not by the packet's remaining length, so a PUBREL or PUBLISH cut short took its packet id from
 * the next packet's bytes, or got -1 (found by the fuzz suite). A packet identifier must be there
 * and non-zero [MQTT-2.3.1-1].
 */
export function createStrictParser(maxPacketSize: number | (() => number) = Infinity): Parser {
  const limit = typeof maxPacketSize === 'number' ? () => maxPacketSize : maxPacketSize;
  const parser = mqttPacket.parser({ protocolVersion: 4 });
  const internals = parser as unknown as ParserInternals & { _parseString(): string | null };
  const parseLength = internals._parseLength;
  internals._parseLength = function checkedParseLength(this: ParserInternals): boolean {
    const lengthBytesBefore = this._list.length;
    if (!parseLength.call(this)) return false;
    // One byte of header type and flags, the remaining length's own bytes, then the body.
    const size = 1 + (lengthBytesBefore - this._list.length) + this.packet.length;
    const max = limit();
    if (size > max) {
      this._emitError(new PacketTooLarge(size, max));
      return false;
    }
    return true;
  };
  const parsePayload = internals._parsePayload;
  internals._parsePayload = function boundedParsePayload(this: ParserInternals): boolean {
    const all = this._list;
    let done: boolean;
    if (all.length <= this.packet.length) {
      // Not all there yet (mqtt-packet waits), or exactly this packet: nothing to bound.
      done = parsePayload.call(this);
    } else {
      this._list = all.shallowSlice(0, this.packet.length);
      try {
        done = parsePayload.call(this);
      } finally {
        this._list = all;
      }
    }
    // mqtt-packet reads the fields a CONNECT's flags announce and ignores what follows: a user
    // name with its flag 0 [MQTT-3.1.2-18], or a password with its flag 0 [MQTT-3.1.2-20], is
    // a malformed packet, not an anonymous login.
    if (done && this.packet.cmd === 'connect' && !this.error && this._pos < this.packet.length) {
      this._emitError(new Error('CONNECT holds more than its flags announce: a user name or password whose flag is 0 [MQTT-3.1.2-18] [MQTT-3.1.2-20]'));
      return false;
    }
    return done;
  };
  internals._parseMessageId = function checkedParseMessageId(this: ParserInternals): boolean {
    const id = this._parseNum();
    if (id === -1) {
      this._emitError(new Error('packet too short for its packet identifier'));
      return false;
    }
    if (id === 0) {
      this._emitError(new Error('packet identifier 0 [MQTT-2.3.1-1]'));
      return false;
    }
    this.packet.messageId = id;
    return true;
  };
  internals._parseString = function parseString(this: ParserInternals): string | null {
    const length = this._parseNum();
    const end = length + this._pos;
    if (length === -1 || end > this._list.length || end > this.packet.length) return null;
    const bytes = this._list.slice(this._pos, end);
    this._pos += length;
    let text: string;
    try {
      text = strictDecoder.decode(bytes);
    } catch {
      this._emitError(new Error('string is not well-formed UTF-8 [MQTT-1.5.3-1]'));
      return null;
    }
    if (text.includes('\u0000')) {
      this._emitError(new Error('string contains U+0000 [MQTT-1.5.3-2]'));
      return null;
    }
    return text;
  };
  return parser;
}
