/**
 * The bytes an mqtt-packet parser holds between socket reads, in place of the `bl` BufferList it
 * creates: the same methods, answering the same (test/protocol/byte-queue.test.ts checks them
 * against bl's), but a read inside the first chunk, which is nearly every read, goes straight to
 * that chunk. bl answers `readUInt8` by slicing out a one-byte Buffer and reading it, and its
 * stream flavour, which mqtt-packet uses, builds a whole Duplex stream for every `shallowSlice`:
 * between them about a fifth of the broker's main-thread time at saturation went to holding bytes.
 *
 * Only what the parser (and strict-parser.ts) calls is here: append, consume, length,
 * readUInt8/readUInt16BE/readUInt32BE, slice, toString and shallowSlice.
 */
export class ByteQueue {
  #chunks: Buffer[];
  length: number;

  constructor(chunks: Buffer[] = [], length = 0) {
    this.#chunks = chunks;
    this.length = length;
  }

  append(chunk: Uint8Array): this {
    if (chunk.length === 0) return this;
    // A view, never a copy, as bl does: the parser's payloads are views of what the socket read.
    this.#chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    this.length += chunk.length;
    return this;
  }

  consume(count: number): this {
    let bytes = Math.trunc(count);
    if (Number.isNaN(bytes) || bytes <= 0) return this;
    const chunks = this.#chunks;
    while (chunks.length > 0) {
      const first = chunks[0]!;
      if (bytes >= first.length) {
        bytes -= first.length;
        this.length -= first.length;
        chunks.shift();
      } else {
        chunks[0] = first.subarray(bytes);
        this.length -= bytes;
        break;
      }
    }
    return this;
  }

  readUInt8(offset = 0): number {
    const first = this.#chunks[0];
    if (first !== undefined && offset >= 0 && offset < first.length) return first[offset]!;
    return this.slice(offset, offset + 1).readUInt8(0);
  }

  readUInt16BE(offset = 0): number {
    const first = this.#chunks[0];
    if (first !== undefined && offset >= 0 && offset + 2 <= first.length) return first.readUInt16BE(offset);
    return this.slice(offset, offset + 2).readUInt16BE(0);
  }

  readUInt32BE(offset = 0): number {
    const first = this.#chunks[0];
    if (first !== undefined && offset >= 0 && offset + 4 <= first.length) return first.readUInt32BE(offset);
    return this.slice(offset, offset + 4).readUInt32BE(0);
  }

  /**
   * The bytes from `start` to `end` (negative counts from the end, out of range is clamped): a view
   * when they lie in one chunk, a copy when they span several.
   */
  slice(start?: number, end?: number): Buffer {
    let from = typeof start === 'number' && start >= 0 ? start : typeof start === 'number' ? start + this.length : 0;
    let to = typeof end === 'number' && end >= 0 ? end : typeof end === 'number' ? end + this.length : this.length;
    if (from < 0) from = 0;
    if (to > this.length) to = this.length;
    if (from >= this.length || to <= 0 || to <= from) return Buffer.alloc(0);
    const chunks = this.#chunks;
    if (from === 0 && to === this.length && chunks.length > 1) return Buffer.concat(chunks, this.length);
    let index = 0;
    let offset = from;
    while (offset >= chunks[index]!.length) offset -= chunks[index++]!.length;
    const chunk = chunks[index]!;
    if (offset + (to - from) <= chunk.length) return chunk.subarray(offset, offset + (to - from));
    const copy = Buffer.allocUnsafe(to - from);
    let written = 0;
    for (; written < copy.length; index++, offset = 0) {
      const piece = chunks[index]!;
      written += piece.copy(copy, written, offset, Math.min(piece.length, offset + copy.length - written));
    }
    return copy;
  }

  toString(encoding?: BufferEncoding, start?: number, end?: number): string {
    return this.slice(start, end).toString(encoding);
  }

  /** A queue of the bytes from `start` to `end` that shares their memory (views, no copies). */
  shallowSlice(start = 0, end = this.length): ByteQueue {
    const from = Math.max(0, start < 0 ? start + this.length : start);
    const to = Math.min(this.length, end < 0 ? end + this.length : end);
    const views: Buffer[] = [];
    let position = 0;
    for (const chunk of this.#chunks) {
      if (position >= to) break;
      const next = position + chunk.length;
      if (next > from) views.push(chunk.subarray(Math.max(0, from - position), Math.min(chunk.length, to - position)));
      position = next;
    }
    return new ByteQueue(views, Math.max(0, to - from));
  }
}
