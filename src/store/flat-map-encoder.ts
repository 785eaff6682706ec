type Fields = Record<string, unknown>;

/**
 * The msgpack of the flat maps the broker writes for every message (queue entries, queue counts,
 * shared bodies and their reference counts' neighbours, release and dup marks), written straight
 * into the record that holds it. msgpackr's general encoder (its buffer, its type dispatch, then a
 * copy into the record) was a tenth of the busy time of a QoS 1 message.
 *
 * A flat map here: a plain object of at most 15 fields whose names are ASCII and shorter than 32
 * characters, and whose values are numbers, booleans, ASCII strings shorter than 64 KiB, byte
 * arrays, or (one level down: a message's properties in a queue entry) a flat map of those.
 * Anything else (arrays such as user properties, deeper maps, text beyond ASCII, an undefined
 * field) makes `flatMapSize` answer -1, and the caller uses msgpackr. Numbers are written as
 * msgpackr writes them: integers from 0 to 2^32 - 1 in the smallest form, any other (a timestamp,
 * a negative or fractional one) as a float 64. The bytes differ from msgpackr's in two ways: a
 * fixmap header where msgpackr always writes map 16, and a negative integer as a float 64. Both
 * are msgpack and read back as the same values by both decoders the broker uses (msgpackr's, and
 * readFields for queue entries); a test checks that every flat map reads back as itself.
 */
export function flatMapSize(value: unknown, depth = 0): number {
  if (typeof value !== 'object' || value === null || Object.getPrototypeOf(value) !== Object.prototype) return -1;
  let size = 1;
  let count = 0;
  for (const name in value) {
    if (++count > 15 || name.length >= 32 || !isAscii(name)) return -1;
    size += 1 + name.length;
    const field = (value as Fields)[name];
    switch (typeof field) {
      case 'number':
        size += field >>> 0 !== field ? 9 : field < 0x80 ? 1 : field < 0x100 ? 2 : field < 0x10000 ? 3 : 5;
        break;
      case 'boolean':
        size += 1;
        break;
      case 'string':
        if (field.length >= 0x10000 || !isAscii(field)) return -1;
        size += (field.length < 0x20 ? 1 : field.length < 0x100 ? 2 : 3) + field.length;
        break;
      case 'object': {
        if (field instanceof Uint8Array) {
          size += (field.length < 0x100 ? 2 : field.length < 0x10000 ? 3 : 5) + field.length;
          break;
        }
        const nested = depth === 0 ? flatMapSize(field, 1) : -1;
        if (nested === -1) return -1;
        size += nested;
        break;
      }
      default:
        return -1;
    }
  }
  return size;
}

/** Writes the msgpack of `value`, a flat map whose `flatMapSize` is not -1, at `at`; returns where it ends. */
export function writeFlatMap(value: Fields, target: Buffer, at: number): number {
  const header = at++;
  let count = 0;
  for (const name in value) {
    count++;
    at = writeString(name, target, at);
    const field = value[name];
    if (typeof field === 'number') {
      if (field >>> 0 !== field) {
        target[at++] = 0xcb;
        at = target.writeDoubleBE(field, at);
      } else if (field < 0x80) {
        target[at++] = field;
      } else if (field < 0x100) {
        target[at++] = 0xcc;
        target[at++] = field;
      } else if (field < 0x10000) {
        target[at++] = 0xcd;
        at = target.writeUInt16BE(field, at);
      } else {
        target[at++] = 0xce;
        at = target.writeUInt32BE(field, at);
      }
    } else if (typeof field === 'boolean') {
      target[at++] = field ? 0xc3 : 0xc2;
    } else if (typeof field === 'string') {
      at = writeString(field, target, at);
    } else if (!(field instanceof Uint8Array)) {
      at = writeFlatMap(field as Fields, target, at);
    } else {
      const bytes = field as Uint8Array;
      if (bytes.length < 0x100) {
        target[at++] = 0xc4;
        target[at++] = bytes.length;
      } else if (bytes.length < 0x10000) {
        target[at++] = 0xc5;
        at = target.writeUInt16BE(bytes.length, at);
      } else {
        target[at++] = 0xc6;
        at = target.writeUInt32BE(bytes.length, at);
      }
      target.set(bytes, at);
      at += bytes.length;
    }
  }
  target[header] = 0x80 | count;
  return at;
}

/** An ASCII string (checked by flatMapSize) shorter than 64 KiB: fixstr, str 8 or str 16. */
function writeString(text: string, target: Buffer, at: number): number {
  const length = text.length;
  if (length < 0x20) {
    target[at++] = 0xa0 | length;
  } else if (length < 0x100) {
    target[at++] = 0xd9;
    target[at++] = length;
  } else {
    target[at++] = 0xda;
    at = target.writeUInt16BE(length, at);
  }
  // Short strings (names, topics) byte by byte: a native write costs more than the loop.
  if (length < 64) {
    for (let index = 0; index < length; index++) target[at + index] = text.charCodeAt(index);
  } else {
    target.write(text, at, length, 'latin1');
  }
  return at + length;
}

function isAscii(text: string): boolean {
  for (let index = 0; index < text.length; index++) if (text.charCodeAt(index) >= 0x80) return false;
  return true;
}
