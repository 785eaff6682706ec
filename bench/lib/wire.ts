/**
 * The bytes on the wire, for the load generator and the trivial sink: cutting a TCP byte stream
 * into MQTT 3.1.1 packets, and batching outgoing packets into one socket write per tick.
 *
 * Both sides share the machine's cores with the broker under test, so every CPU cycle spent here is
 * taken from it. Nothing on these paths allocates per packet: packets are handed on as offsets into
 * the buffer that was read, and outgoing packets are written straight into a shared slab.
 */

/**
 * Called once per complete packet; `data[frameStart]` is the fixed header's first byte, the
 * variable header starts at `bodyStart`, the packet ends at `end`. The bytes are only valid during
 * the call (the read buffer is reused).
 */
export type PacketHandler = (data: Buffer, frameStart: number, bodyStart: number, end: number) => void;

/** Cuts a byte stream into packets (MQTT 3.1.1, 2.2: fixed header with a 1–4 byte Remaining Length). */
export class PacketCutter {
  /** Bytes of a packet that has not fully arrived (copied: the read buffer is reused). */
  #held: Buffer[] = [];
  #heldBytes = 0;
  /** How many bytes the held packet needs in total; 0 while its length is not known yet. */
  #needed = 0;

  constructor(
    public onPacket: PacketHandler = () => {},
    public onError: (error: Error) => void = () => {},
  ) {}

  /** The next `length` bytes of the stream, at the start of `chunk` (a reused read buffer may be longer). */
  push(chunk: Buffer, length = chunk.length): void {
    let data = chunk;
    let dataEnd = length;
    if (this.#heldBytes > 0) {
      const incoming = chunk.subarray(0, length);
      // A large packet arrives in many chunks: join them once, when it is complete.
      if (this.#needed > 0 && this.#heldBytes + length < this.#needed) {
        this.#held.push(Buffer.from(incoming));
        this.#heldBytes += length;
        return;
      }
      this.#held.push(incoming);
      data = Buffer.concat(this.#held, this.#heldBytes + length);
      dataEnd = data.length;
      this.#held = [];
      this.#heldBytes = 0;
      this.#needed = 0;
    }
    let offset = 0;
    while (offset < dataEnd) {
      // Remaining Length: 7 bits per byte, least significant first, at most 4 bytes.
      let remaining = 0;
      let at = offset + 1;
      let complete = false;
      for (let multiplier = 1; at < dataEnd && at <= offset + 4; multiplier *= 128) {
        const byte = data[at++]!;
        remaining += (byte & 0x7f) * multiplier;
        if ((byte & 0x80) === 0) {
          complete = true;
          break;
        }
      }
      if (!complete && at > offset + 4) {
        this.onError(new Error('malformed remaining length'));
        return;
      }
      const end = at + remaining;
      if (!complete || end > dataEnd) {
        this.#held = [Buffer.from(data.subarray(offset, dataEnd))];
        this.#heldBytes = dataEnd - offset;
        this.#needed = complete ? end - offset : 0;
        return;
      }
      this.onPacket(data, offset, at, end);
      offset = end;
    }
  }
}

const SLAB_BYTES = 64 * 1024;

/** Outboxes with bytes waiting; all are written out once the current callback has returned. */
let dirty: Outbox[] = [];

function flushDirty(): void {
  const outboxes = dirty;
  dirty = [];
  for (const outbox of outboxes) outbox.flush();
}

/**
 * Packets for one socket, gathered into one write per tick: what one read produces (acks, the
 * publishes a freed window allows) leaves in one segment, as a broker batching its own output does.
 * Packets are written into a slab; a flushed range is never written again, so the socket may keep
 * a view of it until the kernel took it.
 */
export class Outbox {
  #slab = Buffer.allocUnsafe(SLAB_BYTES);
  #start = 0;
  #end = 0;
  #scheduled = false;

  constructor(private readonly write: (bytes: Buffer) => void) {}

  /** The slab to fill after `claim`: valid until the next claim. */
  get slab(): Buffer {
    return this.#slab;
  }

  /** Reserves `bytes` bytes and returns their offset in `slab`; the caller fills them now. */
  claim(bytes: number): number {
    if (this.#end + bytes > this.#slab.length) {
      this.flush();
      this.#slab = Buffer.allocUnsafe(Math.max(SLAB_BYTES, bytes));
      this.#start = 0;
      this.#end = 0;
    }
    const at = this.#end;
    this.#end += bytes;
    if (!this.#scheduled) {
      this.#scheduled = true;
      if (dirty.length === 0) process.nextTick(flushDirty);
      dirty.push(this);
    }
    return at;
  }

  /** A 4-byte acknowledgement (PUBACK 0x40, PUBREC 0x50, PUBREL 0x62, PUBCOMP 0x70). */
  ack(type: number, id: number): void {
    const at = this.claim(4);
    const slab = this.#slab;
    slab[at] = type;
    slab[at + 1] = 2;
    slab[at + 2] = id >> 8;
    slab[at + 3] = id & 0xff;
  }

  /** Appends a whole packet built elsewhere. */
  append(bytes: Uint8Array): void {
    const at = this.claim(bytes.length);
    this.#slab.set(bytes, at);
  }

  flush(): void {
    this.#scheduled = false;
    if (this.#end === this.#start) return;
    const bytes = this.#slab.subarray(this.#start, this.#end);
    this.#start = this.#end;
    this.write(bytes);
  }
}

export const PUBACK = 0x40;
export const PUBREC = 0x50;
export const PUBREL = 0x62;
export const PUBCOMP = 0x70;

/** Bytes a Remaining Length takes (MQTT 3.1.1, 2.2.3). */
export function remainingLengthBytes(value: number): number {
  return value < 128 ? 1 : value < 16_384 ? 2 : value < 2_097_152 ? 3 : 4;
}

/** Writes a Remaining Length at `at`; returns the offset after it. */
export function writeRemainingLength(target: Buffer, at: number, value: number): number {
  let remaining = value;
  do {
    let byte = remaining % 128;
    remaining = Math.floor(remaining / 128);
    if (remaining > 0) byte |= 0x80;
    target[at++] = byte;
  } while (remaining > 0);
  return at;
}

/**
 * One PUBLISH laid out once (topic, QoS, payload size, filler): sending it is a copy and three
 * small writes (packet id, sequence number, send time). `properties` (MQTT 5 only) is the whole
 * property block, its length included; without it the packet is MQTT 3.1.1's.
 */
export class PublishTemplate {
  readonly bytes: Buffer;
  /** Offset of the packet identifier (QoS 1/2), -1 at QoS 0. */
  readonly idAt: number;
  readonly payloadAt: number;

  constructor(topic: string | Buffer, qos: 0 | 1 | 2, payloadSize: number, options: { filler?: number; properties?: Buffer; retain?: boolean } = {}) {
    const topicBytes = typeof topic === 'string' ? Buffer.from(topic) : topic;
    const properties = options.properties ?? Buffer.alloc(0);
    const remaining = 2 + topicBytes.length + (qos > 0 ? 2 : 0) + properties.length + payloadSize;
    this.bytes = Buffer.alloc(1 + remainingLengthBytes(remaining) + remaining, options.filler ?? 0x2e);
    this.bytes[0] = 0x30 | (qos << 1) | (options.retain ? 1 : 0);
    let at = writeRemainingLength(this.bytes, 1, remaining);
    this.bytes.writeUInt16BE(topicBytes.length, at);
    at += 2;
    topicBytes.copy(this.bytes, at);
    at += topicBytes.length;
    this.idAt = qos > 0 ? at : -1;
    if (qos > 0) at += 2;
    at += properties.copy(this.bytes, at);
    this.payloadAt = at;
  }
}

/**
 * An MQTT 5 PUBLISH property block (3.3.2.3) with what a device typically sends: a Message Expiry
 * Interval, a Content Type and one User Property.
 */
export function typicalV5PublishProperties(): Buffer {
  const string = (text: string) => {
    const bytes = Buffer.from(text);
    const out = Buffer.alloc(2 + bytes.length);
    out.writeUInt16BE(bytes.length, 0);
    bytes.copy(out, 2);
    return out;
  };
  const expiry = Buffer.from([0x02, 0, 0, 0x0e, 0x10]); // Message Expiry Interval: 3600 s
  const contentType = Buffer.concat([Buffer.from([0x03]), string('application/octet-stream')]);
  const userProperty = Buffer.concat([Buffer.from([0x26]), string('source'), string('bench')]);
  const body = Buffer.concat([expiry, contentType, userProperty]);
  const length = Buffer.alloc(remainingLengthBytes(body.length));
  writeRemainingLength(length, 0, body.length);
  return Buffer.concat([length, body]);
}
