import { createHash } from 'node:crypto';
import fc from 'fast-check';
import mqttPacket, { type Packet } from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { type FastPacket, readPackets } from '../../src/protocol/packet-fast-path.js';
import { createStrictParser } from '../../src/protocol/strict-parser.js';
import { controlPacket, mqttString, variableByteInteger } from '../helpers/packet-bytes.js';

interface Reading {
  seen: string[];
  /** Packets the fast path read itself. */
  fast: number;
}

/**
 * What a connection does with its chunks once connected: the fast path first, the rest to the
 * parser; nothing more is read after an error (the connection is closed).
 */
function readWithFastPath(chunks: Buffer[], maxPacketSize: number, publishes = true, mqtt5 = false): Reading {
  const parser = parserFor(maxPacketSize, mqtt5);
  const reading: Reading = { seen: [], fast: 0 };
  let open = true;
  parser.on('packet', (packet: Packet) => reading.seen.push(describePacket(packet)));
  parser.on('error', (error: Error) => {
    reading.seen.push(`error ${error.message}`);
    open = false;
  });
  const options = { maxPacketSize, publishes, mqtt5, reading: () => open };
  const onPacket = (packet: FastPacket) => {
    reading.fast++;
    reading.seen.push(describePacket(packet));
  };
  for (const chunk of chunks) {
    if (!open) break;
    const held = readPackets(chunk, parser, options, onPacket);
    expect(held).toBe((parser as unknown as { _list: { length: number } })._list.length);
  }
  return reading;
}

function readWithParserOnly(chunks: Buffer[], maxPacketSize: number, mqtt5 = false): string[] {
  const parser = parserFor(maxPacketSize, mqtt5);
  const seen: string[] = [];
  let open = true;
  parser.on('packet', (packet: Packet) => seen.push(describePacket(packet)));
  parser.on('error', (error: Error) => {
    seen.push(`error ${error.message}`);
    open = false;
  });
  for (const chunk of chunks) if (open) parser.parse(chunk);
  return seen;
}

/**
 * A server's parser after an MQTT 5 CONNECT reads PUBLISH with the same rules as one made for
 * MQTT 5 from the start (the bridge's), which needs no CONNECT to get there.
 */
function parserFor(maxPacketSize: number, mqtt5: boolean) {
  return mqtt5 ? createStrictParser(maxPacketSize, { protocolVersion: 5 }) : createStrictParser(maxPacketSize);
}

/** Everything a handler reads of a packet, the payload hashed, the properties as they are. */
function describePacket(packet: Packet): string {
  const fields = packet as Packet & { messageId?: number; topic?: string; payload?: Buffer; qos?: number; dup?: boolean; retain?: boolean; length?: number; properties?: object };
  const payload = fields.payload === undefined || fields.payload === null ? undefined : `${fields.payload.length}:${createHash('sha1').update(fields.payload).digest('hex').slice(0, 8)}`;
  if (packet.cmd !== 'publish') return [packet.cmd, fields.messageId].filter((part) => part !== undefined).join(' ');
  const properties = fields.properties === undefined ? undefined : Object.entries(fields.properties).map(([name, value]) => [name, Buffer.isBuffer(value) ? `bytes ${value.toString('hex')}` : value]);
  return JSON.stringify([packet.cmd, fields.messageId, fields.topic, fields.qos, fields.dup, fields.retain, fields.length, payload, Buffer.isBuffer(fields.payload), properties]);
}

const qos = fc.constantFrom<0 | 1 | 2>(0, 1, 2);
/** Topics: plain ASCII, empty, UTF-8 beyond ASCII, with U+0000, and bytes that are not UTF-8 at all. */
const topicBytes = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom('a', 'b/c', 'x/y/z', 'bench/q', '').map((topic) => Buffer.from(topic)) },
  { weight: 1, arbitrary: fc.constantFrom('é/ü', 'a\u0000b', 'ok').map((topic) => Buffer.from(topic)) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 6 }).map((bytes) => Buffer.from(bytes)) },
);
/** A PUBLISH as bytes, built by hand so that flags, packet ids and lengths can be anything. */
const publish = fc
  .record({
    qosBits: fc.oneof({ weight: 12, arbitrary: qos }, { weight: 1, arbitrary: fc.constant(3) }),
    dup: fc.boolean(),
    retain: fc.boolean(),
    topic: topicBytes,
    id: fc.oneof({ weight: 12, arbitrary: fc.integer({ min: 1, max: 65535 }) }, { weight: 1, arbitrary: fc.constant(0) }),
    size: fc.oneof(fc.integer({ min: 0, max: 300 }), fc.constantFrom(127, 128, 16_383, 16_384, 20_000)),
    // Remaining length off by this much: the packet cut short, or longer than its fields.
    lengthError: fc.oneof({ weight: 10, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: -4, max: 3 }) }),
  })
  .map(({ qosBits, dup, retain, topic, id, size, lengthError }) => {
    const idBytes = qosBits > 0 ? Buffer.from([id >> 8, id & 0xff]) : Buffer.alloc(0);
    const body = Buffer.concat([mqttString(topic), idBytes, Buffer.alloc(size, size & 0xff)]);
    const length = Math.max(0, body.length + lengthError);
    const header = Buffer.from([0x30 | (dup ? 8 : 0) | (qosBits << 1) | (retain ? 1 : 0), ...variableByteInteger(length)]);
    return Buffer.concat([header, body.subarray(0, length), Buffer.alloc(Math.max(0, length - body.length))]);
  });

/** One property of an MQTT 5 PUBLISH as bytes: the allowed ones with any value, and some that are not allowed or not valid. */
const propertyText = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom('text/plain', 'reply/to', '', 'k').map((text) => Buffer.from(text)) },
  { weight: 1, arbitrary: fc.constantFrom('é', 'a\u0000b').map((text) => Buffer.from(text)) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 4 }).map((bytes) => Buffer.from(bytes)) },
);
const property: fc.Arbitrary<Buffer> = fc.oneof(
  fc.integer({ min: 0, max: 2 }).map((flag) => Buffer.from([0x01, flag])),
  fc.nat().map((seconds) => Buffer.from([0x02, seconds >>> 24, (seconds >>> 16) & 0xff, (seconds >>> 8) & 0xff, seconds & 0xff])),
  propertyText.map((text) => Buffer.concat([Buffer.from([0x03]), mqttString(text)])),
  propertyText.map((text) => Buffer.concat([Buffer.from([0x08]), mqttString(text)])),
  fc.uint8Array({ maxLength: 6 }).map((bytes) => Buffer.concat([Buffer.from([0x09]), mqttString(Buffer.from(bytes))])),
  fc.integer({ min: 0, max: 300 }).map((id) => Buffer.from([0x0b, ...variableByteInteger(id)])),
  fc.integer({ min: 0, max: 65535 }).map((alias) => Buffer.from([0x23, alias >> 8, alias & 0xff])),
  fc.tuple(propertyText, propertyText).map(([key, value]) => Buffer.concat([Buffer.from([0x26]), mqttString(key), mqttString(value)])),
  // Not allowed in a PUBLISH: Session Expiry Interval, Receive Maximum.
  fc.constantFrom(Buffer.from([0x11, 0, 0, 0, 1]), Buffer.from([0x21, 0, 1])),
);
const publishV5 = fc
  .record({
    qosBits: fc.oneof({ weight: 12, arbitrary: qos }, { weight: 1, arbitrary: fc.constant(3) }),
    topic: topicBytes,
    id: fc.integer({ min: 1, max: 65535 }),
    properties: fc.array(property, { maxLength: 5 }),
    // Property length off by this much.
    propertiesError: fc.oneof({ weight: 8, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: -3, max: 3 }) }),
    size: fc.integer({ min: 0, max: 100 }),
  })
  .map(({ qosBits, topic, id, properties, propertiesError, size }) => {
    const list = Buffer.concat(properties);
    const idBytes = qosBits > 0 ? Buffer.from([id >> 8, id & 0xff]) : Buffer.alloc(0);
    const body = Buffer.concat([mqttString(topic), idBytes, Buffer.from(variableByteInteger(Math.max(0, list.length + propertiesError))), list, Buffer.alloc(size, 9)]);
    return controlPacket(0x30 | (qosBits << 1), body);
  });


const packet: fc.Arbitrary<Buffer> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ cmd: fc.constantFrom('puback', 'pubrec', 'pubcomp'), id: fc.integer({ min: 1, max: 65535 }) }).map(({ cmd, id }) => mqttPacket.generate({ cmd, messageId: id } as Packet)) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 65535 }).map((id) => mqttPacket.generate({ cmd: 'pubrel', messageId: id })) },
  { weight: 1, arbitrary: fc.constant(mqttPacket.generate({ cmd: 'pingreq' })) },
  { weight: 8, arbitrary: publish },
  { weight: 8, arbitrary: publishV5 },
  // A PUBACK with a wrong remaining length or reserved flags set: the parser's to judge [MQTT-2.2.2-2].
  { weight: 1, arbitrary: fc.constantFrom(Buffer.from([0x40, 3, 0, 1, 0]), Buffer.from([0x41, 2, 0, 1]), Buffer.from([0x40, 0]), Buffer.from([0x40, 2, 0, 0])) },
  // PUBLISHes ending inside their own fields: a remaining length of five bytes, one byte of the
  // topic's length, a QoS 1 topic with no room for its packet id.
  {
    weight: 2,
    arbitrary: fc.constantFrom(Buffer.from([0x30, 0x80, 0x80, 0x80, 0x80, 0x01]), Buffer.from([0x30, 0x85, 0x80, 0x80, 0x80, 0x00, 0, 1, 0x61, 7, 7]), Buffer.from([0x30, 1, 0]), Buffer.from([0x32, 3, 0, 1, 0x61])),
  },
);

/** The same bytes cut at arbitrary places. */
const chunked = fc.array(packet, { minLength: 1, maxLength: 30 }).chain((packets) => {
  const bytes = Buffer.concat(packets);
  return fc
    .uniqueArray(fc.integer({ min: 1, max: Math.max(1, bytes.length - 1) }), { maxLength: 8 })
    .map((cuts) => {
      const points = [0, ...cuts.filter((cut) => cut < bytes.length).sort((a, b) => a - b), bytes.length];
      return points.slice(1).map((end, index) => bytes.subarray(points[index], end));
    });
});

const maxPacketSize = fc.constantFrom(1_048_576, 20_000, 200, 4);

describe('packet fast path', () => {
  it('sees exactly the packets, fields, order and first error that the parser alone sees, however the bytes are cut into chunks', () => {
    let fast = 0;
    fc.assert(
      fc.property(chunked, maxPacketSize, fc.boolean(), fc.boolean(), (chunks, max, publishes, mqtt5) => {
        const reading = readWithFastPath(chunks, max, publishes, mqtt5);
        fast += reading.fast;
        expect(reading.seen).toEqual(readWithParserOnly(chunks, max, mqtt5));
      }),
      { numRuns: 3000 },
    );
    // Not a comparison of the parser with itself.
    expect(fast).toBeGreaterThan(1000);
  });

  it('reads whole PUBLISHes and acks at a packet boundary, and hands the rest to the parser', () => {
    const first = mqttPacket.generate({ cmd: 'publish', topic: 'a/b', qos: 1, messageId: 7, payload: Buffer.from('hi'), retain: true, dup: false });
    const second = mqttPacket.generate({ cmd: 'publish', topic: 'c', qos: 0, payload: Buffer.alloc(0), retain: false, dup: false });
    const chunk = Buffer.concat([first, Buffer.from([0x40, 2, 0, 9]), second, Buffer.from([0xc0, 0])]);
    const reading = readWithFastPath([chunk], 1_048_576);
    expect(reading.fast).toBe(3);
    expect(reading.seen).toEqual([
      JSON.stringify(['publish', 7, 'a/b', 1, false, true, first.length - 2, `2:${createHash('sha1').update('hi').digest('hex').slice(0, 8)}`, true, undefined]),
      'puback 9',
      JSON.stringify(['publish', undefined, 'c', 0, false, false, second.length - 2, '0:da39a3ee', true, undefined]),
      'pingreq',
    ]);
  });

  it('completes a packet the parser holds the start of, then reads on itself', () => {
    const publishes = [1, 2, 3].map((id) => mqttPacket.generate({ cmd: 'publish', topic: 't', qos: 1, messageId: id, payload: Buffer.alloc(50), retain: false, dup: false }));
    const bytes = Buffer.concat(publishes);
    const cut = publishes[0]!.length + 10;
    const reading = readWithFastPath([bytes.subarray(0, cut), bytes.subarray(cut)], 1_048_576);
    expect(reading.seen.map((seen) => JSON.parse(seen)[1])).toEqual([1, 2, 3]);
    // The first by the fast path, the second by the parser (begun in the first chunk), the third by the fast path.
    expect(reading.fast).toBe(2);
  });

  it('reads an MQTT 5 PUBLISH with its properties as the parser does: travelling ones as bytes, the others as values', () => {
    const chunk = mqttPacket.generate(
      {
        cmd: 'publish',
        topic: 'a/b',
        qos: 1,
        messageId: 3,
        payload: Buffer.from('x'),
        retain: false,
        dup: false,
        properties: { payloadFormatIndicator: true, messageExpiryInterval: 60, topicAlias: 2, contentType: 'text/plain', userProperties: { k: 'v' } },
      },
      { protocolVersion: 5 },
    );
    const reading = readWithFastPath([chunk], 1_048_576, true, true);
    expect(reading.fast).toBe(1);
    expect(reading.seen).toEqual(readWithParserOnly([chunk], 1_048_576, true));
    expect(reading.seen[0]).toContain('messagePropertyBytes');
  });

  it('agrees with the parser on MQTT 5 property lists that end inside their last property, of each kind', () => {
    const lastProperties = [
      Buffer.from([0x01, 1]),
      Buffer.from([0x02, 0, 0, 0, 9]),
      Buffer.concat([Buffer.from([0x03]), mqttString(Buffer.from('text'))]),
      Buffer.concat([Buffer.from([0x09]), mqttString(Buffer.from([1, 2, 3]))]),
      Buffer.from([0x0b, 0x81, 0x01]),
      Buffer.from([0x23, 0, 5]),
      Buffer.concat([Buffer.from([0x26]), mqttString(Buffer.from('k')), mqttString(Buffer.from('v'))]),
    ];
    for (const last of lastProperties) {
      for (let cut = 1; cut < last.length; cut++) {
        const list = last.subarray(0, last.length - cut);
        const body = Buffer.concat([mqttString(Buffer.from('t')), Buffer.from([0, 1]), Buffer.from([list.length]), last, Buffer.from('payload')]);
        const chunk = controlPacket(0x32, body);
        expect(readWithFastPath([chunk], 1_048_576, true, true).seen).toEqual(readWithParserOnly([chunk], 1_048_576, true));
      }
    }
  });

  it('leaves PUBLISH to the parser until the CONNECT is taken', () => {
    const chunk = mqttPacket.generate({ cmd: 'publish', topic: 'a', qos: 0, payload: Buffer.from('x'), retain: false, dup: false });
    expect(readWithFastPath([chunk], 1_048_576, false).fast).toBe(0);
  });
});
