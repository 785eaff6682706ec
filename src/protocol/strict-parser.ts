import mqttPacket, { type Parser } from 'mqtt-packet';

/** Thrown inside the parser; it surfaces as the parser's usual 'error' event. */
const strictDecoder = new TextDecoder('utf-8', { fatal: true });

interface ParserInternals {
  _list: { length: number; slice(start: number, end: number): Buffer };
  _pos: number;
  packet: { length: number };
  _parseNum(): number;
  _emitError(error: Error): void;
}

/**
 * An mqtt-packet parser whose strings are checked as MQTT requires: well-formed UTF-8
 * [MQTT-1.5.3-1] without U+0000 [MQTT-1.5.3-2], or the connection is closed. mqtt-packet decodes
 * with Buffer#toString, which silently turns bad bytes into U+FFFD; we replace its one string
 * reader on this instance (the method is internal, so this is pinned to mqtt-packet 9).
 */
export function createStrictParser(): Parser {
  const parser = mqttPacket.parser({ protocolVersion: 4 });
  const internals = parser as unknown as ParserInternals & { _parseString(): string | null };
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
