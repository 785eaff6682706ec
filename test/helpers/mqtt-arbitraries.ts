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
const topicFilter = fc.oneof(fc.constantFrom('#', '+', 'fz/#', 'fz/+', '+/+', '$SYS/#', 'fz/+/b', 'fz/a', '', 'fz/#/a', 'fz+', '$share/g/fz/#', '$share/g'), text);
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


// ---- MQTT 5: the same packets with properties and reason codes --------------------------------

const userProperties = fc.dictionary(fc.constantFrom('a', 'b', 'é', ''), fc.oneof(text, fc.array(text, { minLength: 1, maxLength: 3 })), { maxKeys: 3 });
const publishProperties = fc.record(
  {
    payloadFormatIndicator: fc.boolean(),
    messageExpiryInterval: fc.oneof(fc.integer({ min: 0, max: 5 }), fc.constant(0xffff_ffff)),
    topicAlias: fc.integer({ min: 0, max: 12 }),
    responseTopic: topicName,
    correlationData: payload,
    contentType: text,
    userProperties,
    subscriptionIdentifier: fc.integer({ min: 0, max: 268_435_455 }),
  },
  { requiredKeys: [] },
);
const reasonCode = fc.constantFrom(0x00, 0x04, 0x10, 0x80, 0x83, 0x87, 0x8e, 0x91, 0x92, 0x97, 0x99);
const ackProperties = fc.option(fc.record({ reasonString: text, userProperties }, { requiredKeys: [] }), { nil: undefined });

export const connectPacket5 = fc.record({
  cmd: fc.constant('connect' as const),
  protocolId: fc.constant('MQTT'),
  protocolVersion: fc.constant(5),
  clientId,
  clean: fc.boolean(),
  keepalive: fc.constantFrom(0, 0, 60),
  properties: fc.record(
    {
      sessionExpiryInterval: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 3 }), fc.constant(0xffff_ffff)),
      receiveMaximum: fc.integer({ min: 0, max: 4 }),
      maximumPacketSize: fc.oneof(fc.integer({ min: 0, max: 64 }), fc.constant(1 << 20)),
      topicAliasMaximum: fc.integer({ min: 0, max: 4 }),
      requestProblemInformation: fc.boolean(),
      requestResponseInformation: fc.boolean(),
      authenticationMethod: text,
      userProperties,
    },
    { requiredKeys: [] },
  ),
  will: fc.option(
    fc.record({
      topic: topicName,
      payload,
      qos,
      retain: fc.boolean(),
      properties: fc.record({ willDelayInterval: fc.integer({ min: 0, max: 3 }), messageExpiryInterval: fc.integer({ min: 0, max: 3 }), contentType: text, userProperties }, { requiredKeys: [] }),
    }),
    { nil: undefined },
  ),
});

export const packet5: fc.Arbitrary<Packet> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({ cmd: fc.constant('publish' as const), topic: topicName, payload, qos, retain: fc.boolean(), dup: fc.boolean(), messageId, properties: publishProperties }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      cmd: fc.constant('subscribe' as const),
      messageId,
      subscriptions: fc.array(fc.record({ topic: fc.oneof(topicFilter, fc.constantFrom('$share/g/fz/#', '$share//x', '$share/g')), qos, nl: fc.boolean(), rap: fc.boolean(), rh: fc.constantFrom(0, 1, 2) }), {
        minLength: 1,
        maxLength: 4,
      }),
      properties: fc.option(fc.record({ subscriptionIdentifier: fc.integer({ min: 0, max: 268_435_455 }), userProperties }, { requiredKeys: [] }), { nil: undefined }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ cmd: fc.constant('unsubscribe' as const), messageId, unsubscriptions: fc.array(topicFilter, { minLength: 1, maxLength: 4 }) }) },
  {
    weight: 3,
    arbitrary: fc.record({ cmd: fc.constantFrom('puback' as const, 'pubrec' as const, 'pubrel' as const, 'pubcomp' as const), messageId, reasonCode, properties: ackProperties }),
  },
  { weight: 1, arbitrary: fc.record({ cmd: fc.constant('disconnect' as const), reasonCode, properties: fc.option(fc.record({ sessionExpiryInterval: fc.integer({ min: 0, max: 5 }), reasonString: text }, { requiredKeys: [] }), { nil: undefined }) }) },
  { weight: 1, arbitrary: fc.record({ cmd: fc.constant('auth' as const), reasonCode: fc.constantFrom(0x00, 0x18, 0x19), properties: fc.record({ authenticationMethod: text }) }) },
  { weight: 1, arbitrary: fc.record({ cmd: fc.constant('pingreq' as const) }) },
  { weight: 1, arbitrary: connectPacket5 },
) as fc.Arbitrary<Packet>;

function encode5(value: Packet): Buffer | undefined {
  try {
    return mqttPacket.generate(value, { protocolVersion: 5 });
  } catch {
    return undefined;
  }
}
export const encodedPacket5 = packet5.map(encode5).filter((bytes): bytes is Buffer => bytes !== undefined);
export const encodedConnect5 = connectPacket5.map(encode5).filter((bytes): bytes is Buffer => bytes !== undefined);

export const mutatedPackets5 = fc
  .record({ packets: fc.array(encodedPacket5, { minLength: 1, maxLength: 6 }), mutations: fc.array(mutation, { minLength: 1, maxLength: 3 }) })
  .map(({ packets, mutations }) => {
    const starts: number[] = [];
    let offset = 0;
    for (const bytes of packets) {
      starts.push(offset);
      offset += bytes.length;
    }
    return mutations.reduce<Buffer>((bytes, change) => mutate(bytes, starts, change), Buffer.concat(packets));
  });
