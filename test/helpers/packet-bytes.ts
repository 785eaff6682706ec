/** MQTT packets as bytes, built by hand so that a test can make them any shape, malformed included. */

/** An MQTT string or binary field: 16-bit length, then the bytes (given raw, so they may be ill-formed UTF-8). */
export function mqttString(value: string | Buffer | Uint8Array | number[]): Buffer {
  const bytes = typeof value === 'string' ? Buffer.from(value) : Buffer.from(value);
  const length = Buffer.alloc(2);
  length.writeUInt16BE(bytes.length);
  return Buffer.concat([length, bytes]);
}

/** A variable byte integer [MQTT-1.5.5]: seven bits a byte, the high bit set on all but the last. */
export function variableByteInteger(value: number): number[] {
  const bytes: number[] = [];
  let rest = value;
  do {
    let byte = rest % 128;
    rest = Math.floor(rest / 128);
    if (rest > 0) byte |= 0x80;
    bytes.push(byte);
  } while (rest > 0);
  return bytes;
}

/** A control packet from its first byte and body; the remaining length is encoded here. */
export function controlPacket(firstByte: number, ...body: Buffer[]): Buffer {
  const rest = Buffer.concat(body);
  return Buffer.concat([Buffer.from([firstByte, ...variableByteInteger(rest.length)]), rest]);
}
