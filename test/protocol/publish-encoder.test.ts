import fc from 'fast-check';
import mqttPacket, { type IPublishPacket } from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { messagePropertiesOf, namedMessageProperties } from '../../src/protocol/message-properties.js';
import { encodePublish } from '../../src/protocol/publish-encoder.js';
import { createStrictParser } from '../../src/protocol/strict-parser.js';
import type { OutgoingPublish } from '../../src/session/session.js';
import type { MessageProperties } from '../../src/store/model.js';

const outgoing: fc.Arbitrary<OutgoingPublish> = fc
  .record({
    topic: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 40 }).filter((topic) => !/[+#\u0000]/.test(topic)),
    payload: fc.oneof(
      fc.uint8Array({ maxLength: 200 }),
      // Payload sizes around the one-, two- and three-byte Remaining Length boundaries.
      fc.constantFrom(120, 125, 127, 128, 16_370, 16_380, 16_383, 16_384, 20_000).map((size) => new Uint8Array(size).fill(7)),
    ),
    qos: fc.constantFrom(0, 1, 2),
    retain: fc.boolean(),
    dup: fc.boolean(),
    packetId: fc.integer({ min: 1, max: 65535 }),
  })
  .map(({ payload, qos, dup, packetId, ...rest }) => ({
    ...rest,
    payload: Buffer.from(payload),
    qos: qos as 0 | 1 | 2,
    // DUP is 0 and there is no packet identifier at QoS 0 [MQTT-3.3.1-2] [MQTT-2.3.1-5].
    dup: qos === 0 ? false : dup,
    ...(qos === 0 ? {} : { packetId }),
  }));

const text = fc.string({ unit: 'grapheme', maxLength: 12 }).filter((value) => !value.includes('\u0000'));
const messageProperties: fc.Arbitrary<MessageProperties> = fc.record(
  {
    payloadFormat: fc.constantFrom(0 as const, 1 as const),
    expiresAt: fc.integer({ min: 1, max: 100_000 }).map((seconds) => NOW + seconds * 1000 - 1),
    contentType: text,
    responseTopic: text.filter((topic) => topic.length > 0 && !/[+#]/.test(topic)),
    correlationData: fc.uint8Array({ maxLength: 20 }).map((bytes) => Buffer.from(bytes)),
    userProperties: fc.array(fc.tuple(text, text), { maxLength: 4 }),
  },
  { requiredKeys: [] },
);

function parseOne(bytes: Buffer, protocolVersion: 4 | 5 = 4): IPublishPacket {
  const parser = mqttPacket.parser({ protocolVersion });
  const packets: IPublishPacket[] = [];
  parser.on('packet', (packet) => packets.push(packet as IPublishPacket));
  parser.on('error', (error) => {
    throw error;
  });
  parser.parse(bytes);
  expect(packets).toHaveLength(1);
  return packets[0]!;
}

describe('encodePublish', () => {
  it('writes the same bytes as mqtt-packet for any topic, payload, QoS, DUP and RETAIN (spec 3.3)', () => {
    fc.assert(
      fc.property(outgoing, (packet) => {
        const expected = mqttPacket.generate({
          cmd: 'publish',
          topic: packet.topic,
          payload: packet.payload,
          qos: packet.qos,
          retain: packet.retain,
          dup: packet.dup,
          ...(packet.packetId === undefined ? {} : { messageId: packet.packetId }),
        });
        expect(encodePublish(packet).equals(expected)).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });

  it('reads back through a parser as the packet it was given', () => {
    fc.assert(
      fc.property(outgoing, (packet) => {
        const parsed = parseOne(encodePublish(packet));
        expect(parsed).toMatchObject({ cmd: 'publish', topic: packet.topic, qos: packet.qos, retain: packet.retain, dup: packet.dup });
        expect(Buffer.from(parsed.payload).equals(packet.payload)).toBe(true);
        expect(parsed.messageId).toBe(packet.packetId);
      }),
      { numRuns: 500 },
    );
  });

  it('MQTT 5: every message property, what remains of the expiry, alias and identifiers read back through a v5 parser (spec 3.3.2.3)', () => {
    fc.assert(
      fc.property(outgoing, messageProperties, fc.option(fc.integer({ min: 1, max: 65_535 }), { nil: undefined }), fc.array(fc.integer({ min: 1, max: 268_435_455 }), { maxLength: 3 }), (packet, props, alias, ids) => {
        const parsed = parseOne(
          encodePublish({ ...packet, properties: props, ...(ids.length > 0 ? { subscriptionIds: ids } : {}) }, { now: NOW, ...(alias === undefined ? {} : { topicAlias: alias }) }),
          5,
        );
        expect(parsed.topic).toBe(packet.topic);
        expect(Buffer.from(parsed.payload).equals(packet.payload)).toBe(true);
        const got = parsed.properties ?? {};
        expect(got.payloadFormatIndicator).toBe(props.payloadFormat === undefined ? undefined : props.payloadFormat === 1);
        expect(got.messageExpiryInterval).toBe(props.expiresAt === undefined ? undefined : Math.ceil((props.expiresAt - NOW) / 1000));
        expect(got.contentType).toBe(props.contentType);
        expect(got.responseTopic).toBe(props.responseTopic);
        expect(got.correlationData === undefined ? undefined : Buffer.from(got.correlationData)).toEqual(props.correlationData);
        expect(got.topicAlias).toBe(alias);
        const wantedIds = ids.length === 0 ? undefined : ids.length === 1 ? ids[0] : ids;
        expect(got.subscriptionIdentifier).toEqual(wantedIds);
      }),
      { numRuns: 1000 },
    );
  });

  // mqtt-packet folds User Properties into an object (and repeats away); kept as bytes, they keep
  // their order and repeats [MQTT-3.3.2-18].
  it('MQTT 5: properties kept as the bytes they arrived in read back by name as sent, and go out as the same bytes (no expiry, alias or identifier of the sender kept)', () => {
    fc.assert(
      fc.property(outgoing, messageProperties, fc.option(fc.integer({ min: 1, max: 65_535 }), { nil: undefined }), (packet, props, alias) => {
        const strict = createStrictParser() as unknown as { settings: { protocolVersion: number }; parse(bytes: Buffer): void; on(event: string, listener: (packet: IPublishPacket) => void): void };
        strict.settings.protocolVersion = 5;
        let arrived: IPublishPacket | undefined;
        strict.on('packet', (publish) => (arrived = publish));
        strict.parse(encodePublish({ ...packet, properties: props }, { now: NOW, ...(alias === undefined ? {} : { topicAlias: alias }) }));
        const kept = messagePropertiesOf(arrived!.properties, packet.payload, NOW);
        if (props.payloadFormat === 1 && !isUtf8(packet.payload)) {
          expect(kept).toBe('payload-format-invalid');
          return;
        }
        const { expiresAt, ...travelling } = props;
        if (travelling.userProperties?.length === 0) delete travelling.userProperties;
        if (kept === undefined) {
          expect({ expiresAt, ...travelling }).toEqual({ expiresAt: undefined });
          return;
        }
        expect(kept).not.toBe('payload-format-invalid');
        const properties = kept as MessageProperties;
        expect(properties.expiresAt).toBe(expiresAt === undefined ? undefined : NOW + Math.ceil((expiresAt - NOW) / 1000) * 1000);
        expect(properties.encoded !== undefined).toBe(Object.keys(travelling).length > 0);
        const { encoded, ...named } = namedMessageProperties(properties);
        expect(encoded).toBeUndefined();
        expect(named).toEqual({ ...travelling, ...(properties.expiresAt === undefined ? {} : { expiresAt: properties.expiresAt }) });
        const sent = encodePublish({ ...packet, properties }, { now: NOW });
        expect(sent.equals(encodePublish({ ...packet, properties: { ...travelling, ...(properties.expiresAt === undefined ? {} : { expiresAt: properties.expiresAt }) } }, { now: NOW }))).toBe(true);
      }),
      { numRuns: 1000 },
    );
  });
});

function isUtf8(bytes: Buffer): boolean {
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    return true;
  } catch {
    return false;
  }
}

const NOW = 1_800_000_000_000;
