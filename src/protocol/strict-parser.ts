import type { Parser } from 'mqtt-packet';
import { ByteQueue } from './byte-queue.js';
import mqttPacket from './mqtt-packet-loader.js';
import { TRAVELLING_PROPERTY_IDS } from './message-properties.js';

/** Thrown inside the parser; it surfaces as the parser's usual 'error' event. */
const strictDecoder = new TextDecoder('utf-8', { fatal: true });

interface ParserInternals {
  _list: ByteQueue;
  _pos: number;
  /** The CONNECT once one is parsed: mqtt-packet reads the protocol version from it. */
  settings: { protocolVersion?: number };
  /** 0 between packets; 1 once a packet's first byte is read, 2 once its length is. */
  _stateCounter: number;
  packet: { length: number; messageId?: number; cmd?: string };
  error?: unknown;
  _parseNum(): number;
  _parse4ByteNum(): number;
  _parseByte(): number | undefined;
  _parseBuffer(): Buffer | null;
  _parseVarByteNum(): number | false;
  _parseString(): string | null;
  _parseLength(): boolean;
  _parsePayload(): boolean;
  _parseMessageId(): boolean;
  _emitError(error: Error): void;
  /** What parse() calls after an error: a new empty packet, no error, no bytes held. */
  _resetState(): void;
}

/**
 * Thrown (as the parser's 'error') for a packet that is well formed but breaks a rule of the
 * protocol: an MQTT 5 client is told 0x82 (Protocol Error) rather than 0x81 (Malformed Packet).
 */
export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
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
export function createStrictParser(maxPacketSize: number | (() => number) = Infinity, client?: { protocolVersion: 5 }): Parser {
  const limit = typeof maxPacketSize === 'number' ? () => maxPacketSize : maxPacketSize;
  // A server's parser starts at 4 and follows the CONNECT; a client's (a bridge's, `client`) speaks
  // MQTT 5 from the start and reads what a server sends.
  const parser = mqttPacket.parser({ protocolVersion: client?.protocolVersion ?? 4 });
  const allowed = client ? ALLOWED_FROM_SERVER : ALLOWED;
  const internals = parser as unknown as ParserInternals & { _parseProperties(): unknown };
  useByteQueue(internals);
  internals._parseProperties = function strictParseProperties(this: ParserInternals): Properties | false {
    return parseProperties(this, allowed);
  };
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
    return readCheckedString(this, true);
  };
  return parser;
}

const CHECKED_ONLY = '';

/**
 * Reads the next string and checks it; null when it is cut short or (an error emitted) invalid.
 * Without `build`, a valid string is returned as '' (CHECKED_ONLY): checked, not decoded, for a
 * property whose bytes are kept instead.
 */
function readCheckedString(parser: ParserInternals, build: boolean): string | null {
  const length = parser._parseNum();
  const end = length + parser._pos;
  if (length === -1 || end > parser._list.length || end > parser.packet.length) return null;
  const bytes = parser._list.slice(parser._pos, end);
  parser._pos += length;
  // Nearly every string (topics, client ids, property names) is ASCII without U+0000: valid as
  // it is, read without the decoder's checks; anything else takes the checked path.
  if (isPlainAscii(bytes)) return build ? bytes.toString('latin1') : CHECKED_ONLY;
  let text: string;
  try {
    text = strictDecoder.decode(bytes);
  } catch {
    parser._emitError(new Error('string is not well-formed UTF-8 [MQTT-1.5.3-1]'));
    return null;
  }
  if (text.includes('\u0000')) {
    parser._emitError(new Error('string contains U+0000 [MQTT-1.5.3-2]'));
    return null;
  }
  return text;
}

/** Bytes 0x01–0x7F only: well-formed UTF-8 (each its own character) with no U+0000. */
function isPlainAscii(bytes: Buffer): boolean {
  for (let index = 0; index < bytes.length; index++) {
    const byte = bytes[index]!;
    if (byte === 0 || byte > 0x7f) return false;
  }
  return true;
}

/**
 * mqtt-packet holds unparsed bytes in a bl BufferListStream, which reads slowly (see ByteQueue)
 * and builds a Duplex stream for each shallowSlice the bounded payload read above takes: the
 * parser gets a ByteQueue instead, also after every reset.
 */
function useByteQueue(internals: ParserInternals): void {
  internals._list = new ByteQueue();
  const resetState = internals._resetState;
  internals._resetState = function resetToByteQueue(this: ParserInternals): void {
    resetState.call(this);
    this._list = new ByteQueue();
  };
}

/**
 * Whether a packet has begun to arrive and is not complete: the parser holds bytes of it, or has
 * read its first byte and waits for its length. `parse()` returns the bytes held; this also sees
 * a packet of which only the first byte came. mqtt-packet's internals, as above.
 */
export function packetUnderway(parser: Parser): boolean {
  const internals = parser as unknown as ParserInternals;
  return internals._stateCounter !== 0 || internals._list.length > 0;
}

/**
 * Lets go of the bytes the parser holds (of a packet underway): a closed connection's parser lives
 * on until its socket is gone, and must not keep them meanwhile. Safe within the parser's own
 * callbacks: its loop ends once it holds nothing. mqtt-packet's internals, as above.
 */
export function discardUnfinished(parser: Parser): void {
  (parser as unknown as ParserInternals)._resetState();
}

/**
 * The properties mqtt-packet reports, but User Properties as the ordered pairs they are
 * (userPropertyList), not mqtt-packet's folded object; and for a PUBLISH or a will, the bytes of
 * the properties that travel with the message unchanged (messagePropertyBytes: those of
 * TRAVELLING_PROPERTY_IDS, in the order they came), so that the broker stores and forwards them
 * without encoding them again.
 */
export type Properties = Record<string, unknown> & { userPropertyList?: Array<[string, string]>; messagePropertyBytes?: Buffer };

type PropertyType = 'byte' | 'int8' | 'int16' | 'int32' | 'var' | 'string' | 'pair' | 'binary';

/** MQTT 5.0 table 2-4: identifier → mqtt-packet's name and the value's type. */
const PROPERTIES: Record<number, [string, PropertyType]> = {
  0x01: ['payloadFormatIndicator', 'byte'],
  0x02: ['messageExpiryInterval', 'int32'],
  0x03: ['contentType', 'string'],
  0x08: ['responseTopic', 'string'],
  0x09: ['correlationData', 'binary'],
  0x0b: ['subscriptionIdentifier', 'var'],
  0x11: ['sessionExpiryInterval', 'int32'],
  0x12: ['assignedClientIdentifier', 'string'],
  0x13: ['serverKeepAlive', 'int16'],
  0x15: ['authenticationMethod', 'string'],
  0x16: ['authenticationData', 'binary'],
  0x17: ['requestProblemInformation', 'byte'],
  0x18: ['willDelayInterval', 'int32'],
  0x19: ['requestResponseInformation', 'byte'],
  0x1a: ['responseInformation', 'string'],
  0x1c: ['serverReference', 'string'],
  0x1f: ['reasonString', 'string'],
  0x21: ['receiveMaximum', 'int16'],
  0x22: ['topicAliasMaximum', 'int16'],
  0x23: ['topicAlias', 'int16'],
  0x24: ['maximumQoS', 'int8'],
  0x25: ['retainAvailable', 'byte'],
  0x26: ['userProperties', 'pair'],
  0x27: ['maximumPacketSize', 'int32'],
  0x28: ['wildcardSubscriptionAvailable', 'byte'],
  0x29: ['subscriptionIdentifiersAvailable', 'byte'],
  0x2a: ['sharedSubscriptionAvailable', 'byte'],
};

const ACK_PROPERTIES = ['reasonString', 'userProperties'];
const WILL_PROPERTIES = ['willDelayInterval', 'payloadFormatIndicator', 'messageExpiryInterval', 'contentType', 'responseTopic', 'correlationData', 'userProperties'];

/** Which properties a client may send in which packet (MQTT 5.0, 2.2.2.2); any other is a Malformed Packet. */
const ALLOWED: Record<string, ReadonlySet<string>> = {
  connect: new Set([
    'sessionExpiryInterval',
    'receiveMaximum',
    'maximumPacketSize',
    'topicAliasMaximum',
    'requestResponseInformation',
    'requestProblemInformation',
    'userProperties',
    'authenticationMethod',
    'authenticationData',
  ]),
  will: new Set(WILL_PROPERTIES),
  publish: new Set(['payloadFormatIndicator', 'messageExpiryInterval', 'topicAlias', 'responseTopic', 'correlationData', 'userProperties', 'contentType', 'subscriptionIdentifier']),
  puback: new Set(ACK_PROPERTIES),
  pubrec: new Set(ACK_PROPERTIES),
  pubrel: new Set(ACK_PROPERTIES),
  pubcomp: new Set(ACK_PROPERTIES),
  subscribe: new Set(['subscriptionIdentifier', 'userProperties']),
  unsubscribe: new Set(['userProperties']),
  disconnect: new Set(['sessionExpiryInterval', 'reasonString', 'userProperties', 'serverReference']),
  auth: new Set(['authenticationMethod', 'authenticationData', 'reasonString', 'userProperties']),
};

/** Which properties a server may send in which packet (MQTT 5.0, 2.2.2.2): what a bridge's parser reads. */
const ALLOWED_FROM_SERVER: Record<string, ReadonlySet<string>> = {
  connack: new Set([
    'sessionExpiryInterval',
    'receiveMaximum',
    'maximumQoS',
    'retainAvailable',
    'maximumPacketSize',
    'assignedClientIdentifier',
    'topicAliasMaximum',
    'reasonString',
    'userProperties',
    'wildcardSubscriptionAvailable',
    'subscriptionIdentifiersAvailable',
    'sharedSubscriptionAvailable',
    'serverKeepAlive',
    'responseInformation',
    'serverReference',
    'authenticationMethod',
    'authenticationData',
  ]),
  publish: ALLOWED.publish!,
  puback: ALLOWED.puback!,
  pubrec: ALLOWED.pubrec!,
  pubrel: ALLOWED.pubrel!,
  pubcomp: ALLOWED.pubcomp!,
  suback: new Set(ACK_PROPERTIES),
  unsuback: new Set(ACK_PROPERTIES),
  disconnect: ALLOWED.disconnect!,
  auth: ALLOWED.auth!,
};

/**
 * Reads an MQTT 5 property list within its declared length and the packet: each property allowed
 * in its packet (MQTT 5.0 2.2.2.2), each at most once but User Properties (and Subscription
 * Identifier, which a client sends in SUBSCRIBE alone), byte values 0 or 1 where the spec says so,
 * strings checked like all others. mqtt-packet's own reader accepts unknown placements and
 * repeats, and turns User Properties into an object that loses their order.
 */
function parseProperties(parser: ParserInternals, allowedIn: Record<string, ReadonlySet<string>>): Properties | false {
  const fail = (error: Error): false => {
    parser._emitError(error);
    return false;
  };
  const packet = parser.packet as { cmd?: string; clientId?: string };
  // DISCONNECT (and AUTH) may end after the reason code: no property length means none [MQTT-3.14.2.2.1].
  if ((packet.cmd === 'disconnect' || packet.cmd === 'auth') && parser._pos >= parser.packet.length) return {};
  const length = parser._parseVarByteNum();
  if (length === false) return fail(new Error('property length is not a valid variable byte integer'));
  const end = parser._pos + length;
  if (end > parser.packet.length || end > parser._list.length) return fail(new Error('properties run past the end of the packet'));
  // CONNECT has two lists: its own, before the client id, and the will's, after it.
  const placement = packet.cmd === 'connect' && packet.clientId !== undefined ? 'will' : (packet.cmd ?? '');
  const allowed = allowedIn[placement];
  const result: Properties = {};
  // For a PUBLISH or a will: runs [from, to) of the properties that travel with the message, kept
  // as bytes (one run, unless an expiry, alias or will delay sits
  // between them). Their strings and binary values are checked, not built: nothing reads them.
  const travelling = placement === 'publish' || placement === 'will' ? ([] as number[]) : undefined;
  // Identifiers seen, for "at most once": bit (id % 32) of the first word below 32, of the second from 32.
  let seenBelow32 = 0;
  let seenFrom32 = 0;
  while (parser._pos < end) {
    const at = parser._pos;
    const id = parser._parseByte();
    const known = id === undefined ? undefined : PROPERTIES[id];
    if (id === undefined || known === undefined || allowed === undefined || !allowed.has(known[0])) {
      return fail(new Error(`property ${id === undefined ? '?' : `0x${id.toString(16)}`} is not allowed in ${placement.toUpperCase()}`));
    }
    const [name, type] = known;
    const keptAsBytes = travelling !== undefined && TRAVELLING_PROPERTY_IDS.has(id);
    const build = !keptAsBytes || (type !== 'string' && type !== 'pair' && type !== 'binary');
    if (name === 'userProperties') {
      const key = readCheckedString(parser, build);
      const value = key === null ? null : readCheckedString(parser, build);
      if (key === null || value === null) return parser.error ? false : fail(new Error('User Property cut short'));
      if (build) (result.userPropertyList ??= []).push([key, value]);
    } else {
      const bit = 1 << (id & 31);
      if ((id < 32 ? seenBelow32 : seenFrom32) & bit) return fail(new ProtocolError(`property ${name} appears more than once (MQTT 5.0 2.2.2.2)`));
      if (id < 32) seenBelow32 |= bit;
      else seenFrom32 |= bit;
      const value = type === 'string' ? (readCheckedString(parser, build) ?? undefined) : readValue(parser, type);
      if (value === undefined) return parser.error ? false : fail(new Error(`property ${name} cut short or out of range`));
      if (build) result[name] = value;
    }
    if (parser._pos > end) return fail(new Error('a property runs past the property length'));
    if (keptAsBytes) {
      if (travelling.length > 0 && travelling[travelling.length - 1] === at) travelling[travelling.length - 1] = parser._pos;
      else travelling.push(at, parser._pos);
    }
  }
  if (travelling !== undefined && travelling.length > 0) result.messagePropertyBytes = joinedRuns(parser._list, travelling);
  return result;
}

/** The bytes of `runs`, copied: a view would keep the whole chunk the socket read alive with the message. */
function joinedRuns(list: ByteQueue, runs: number[]): Buffer {
  if (runs.length === 2) return Buffer.from(list.slice(runs[0], runs[1]));
  const pieces: Buffer[] = [];
  for (let index = 0; index < runs.length; index += 2) pieces.push(list.slice(runs[index], runs[index + 1]));
  return Buffer.concat(pieces);
}

function readValue(parser: ParserInternals, type: PropertyType): unknown {
  switch (type) {
    case 'byte': {
      const byte = parser._parseByte();
      // A byte property that is a flag is 0 or 1; any other value is a Protocol Error.
      if (byte === undefined || byte > 1) return undefined;
      return byte === 1;
    }
    case 'int8':
      return parser._parseByte();
    case 'int16': {
      const value = parser._parseNum();
      return value === -1 ? undefined : value;
    }
    case 'int32': {
      const value = parser._parse4ByteNum();
      return value === -1 ? undefined : value;
    }
    case 'var': {
      const value = parser._parseVarByteNum();
      return value === false ? undefined : value;
    }
    case 'binary':
      return parser._parseBuffer() ?? undefined;
    default:
      return undefined;
  }
}

