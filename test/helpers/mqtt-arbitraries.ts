/**
 * fast-check arbitraries for MQTT 3.1.1 input, valid and hostile: packets mqtt-packet can encode
 * (odd values included: packet id 0, empty and wildcard topics, invalid filters), and mutations of
 * their bytes. Used by the fuzz suite.
 */
import fc from 'fast-check';
import mqttPacket, { type Packet } from 'mqtt-packet';

const qos = fc.constantFrom(0 as const, 1 as const, 2 as const);
const messageId = fc.oneof(fc.integer({ min: 1, max: 8 }), fc.integer({ min: 0, max: 65535 }));
const text = fc.string({ unit: 'binary', maxLength: 24 });
const topicName = fc.oneof(fc.constantFrom('fz/a', 'fz/b', 'fz/a/b', 'fz', '$SYS/fz', 'fz/é', 'fz//', '/'), text);
const topicFilter = fc.oneof(fc.constantFrom('#', '+', 'fz/#', 'fz/+', '+/+', '$SYS/#', 'fz/+/b', 'fz/a', '', 'fz/#/a', 'fz+'), text);
const payload = fc.uint8Array({ maxLength: 96 }).map((bytes) => Buffer.from(bytes));
/** Client ids of the fuzz clients; never the well-behaved client's. */
const clientId = fc.oneof(fc.integer({ min: 0, max: 40 }).map((n) => `fz-${n}`), fc.constant(''));

export const connectPacket = fc.record({
  cmd: fc.constant('connect' as const),
  protocolId: fc.constant('MQTT'),
  protocolVersion: fc.constant(4),
  clientId,
  clean: fc.boolean(),
  keepalive: fc.constantFrom(0, 0, 60),
  will: fc.option(fc.record({ topic: topicName, payload, qos, retain: fc.boolean() }), { nil: undefined }),
});

export const packet: fc.Arbitrary<Packet> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ cmd: fc.constant('publish' as const), topic: topicName, payload, qos, retain: fc.boolean(), dup: fc.boolean(), messageId }) },
  {
    weight: 2,
    arbitrary: fc.record({
      cmd: fc.constant('subscribe' as const),
      messageId,
      subscriptions: fc.array(fc.record({ topic: topicFilter, qos }), { minLength: 1, maxLength: 4 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ cmd: fc.constant('unsubscribe' as const), messageId, unsubscriptions: fc.array(topicFilter, { minLength: 1, maxLength: 4 }) }) },
  { weight: 3, arbitrary: fc.record({ cmd: fc.constantFrom('puback' as const, 'pubrec' as const, 'pubrel' as const, 'pubcomp' as const), messageId }) },
  { weight: 1, arbitrary: fc.record({ cmd: fc.constantFrom('pingreq' as const, 'disconnect' as const) }) },
  { weight: 1, arbitrary: connectPacket },
) as fc.Arbitrary<Packet>;

/** mqtt-packet refuses to encode a few shapes (e.g. a too long string): those are left out. */
export function encode(value: Packet): Buffer | undefined {
  try {
    return mqttPacket.generate(value);
  } catch {
    return undefined;
  }
}
export const encodedPacket = packet.map(encode).filter((bytes): bytes is Buffer => bytes !== undefined);
export const encodedConnect = connectPacket.map(encode).filter((bytes): bytes is Buffer => bytes !== undefined);

type Mutation =
  | { kind: 'flip'; at: number; bit: number }
  | { kind: 'truncate'; at: number }
  | { kind: 'length'; packet: number; value: number }
  | { kind: 'splice'; at: number; with: Buffer; from: number }
  | { kind: 'insert'; at: number; bytes: Buffer }
  | { kind: 'repeat'; at: number; length: number; times: number };

export const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('length' as const), packet: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant('splice' as const), at: fc.nat(), with: encodedPacket, from: fc.nat() }),
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }).map((b) => Buffer.from(b)) }),
  fc.record({ kind: fc.constant('repeat' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 16 }), times: fc.integer({ min: 2, max: 5 }) }),
);

/** Applies one mutation; `starts` are the offsets where the original packets began. */
function mutate(bytes: Buffer, starts: number[], change: Mutation): Buffer {
  if (bytes.length === 0) return bytes;
  const at = 'at' in change ? change.at % bytes.length : 0;
  switch (change.kind) {
    case 'flip': {
      const copy = Buffer.from(bytes);
      copy[at] = copy[at]! ^ (1 << change.bit);
      return copy;
    }
    case 'truncate':
      return bytes.subarray(0, at);
    case 'length': {
      // The first remaining-length byte of one of the packets.
      const index = (starts[change.packet % starts.length] ?? 0) + 1;
      if (index >= bytes.length) return bytes;
      const copy = Buffer.from(bytes);
      copy[index] = change.value;
      return copy;
    }
    case 'splice':
      return Buffer.concat([bytes.subarray(0, at), change.with.subarray(change.from % (change.with.length + 1))]);
    case 'insert':
      return Buffer.concat([bytes.subarray(0, at), change.bytes, bytes.subarray(at)]);
    case 'repeat': {
      const segment = bytes.subarray(at, at + change.length);
      return Buffer.concat([bytes.subarray(0, at), ...Array.from({ length: change.times }, () => segment), bytes.subarray(at + change.length)]);
    }
  }
}

export const mutatedPackets = fc
  .record({ packets: fc.array(encodedPacket, { minLength: 1, maxLength: 6 }), mutations: fc.array(mutation, { minLength: 1, maxLength: 3 }) })
  .map(({ packets, mutations }) => {
    const starts: number[] = [];
    let offset = 0;
    for (const bytes of packets) {
      starts.push(offset);
      offset += bytes.length;
    }
    return mutations.reduce<Buffer>((bytes, change) => mutate(bytes, starts, change), Buffer.concat(packets));
  });

