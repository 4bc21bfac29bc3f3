/**
 * Incremental framing over a stream of chunks, tolerant of arbitrary splits.
 *
 * Socket 'data' events deliver chunks of any size. ByteQueue keeps them in a list and hands out
 * exactly N bytes on demand: a zero-copy `subarray` when the bytes sit in one chunk (the common
 * case for headers and small writes), one allocation and copy when they straddle chunks. It never
 * concatenates the whole backlog, so a 32 MiB WRITE arriving in 64 KiB pieces costs one copy,
 * not O(n²).
 *
 * Memory: the queue holds exactly the bytes pushed and not yet taken or skipped (`length`), plus
 * the unconsumed tail of the first chunk's backing buffer. The caller bounds `length` by pausing
 * the socket (see server.ts).
 */

const EMPTY = Buffer.alloc(0);
/** Compact the chunk array once this many consumed slots accumulate at its head. */
const COMPACT_AFTER = 64;

export class ByteQueue {
  private chunks: Buffer[] = [];
  /** Index of the first live chunk in `chunks`. */
  private head = 0;
  /** Read offset inside chunks[head]. */
  private offset = 0;
  private size = 0;

  /** Bytes available. */
  get length(): number {
    return this.size;
  }

  /** Live chunks held (for tests and diagnostics). */
  get chunkCount(): number {
    return this.chunks.length - this.head;
  }

  /** Appends a chunk. The queue keeps a reference; the caller must not modify it afterwards. */
  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.size += chunk.length;
  }

  /**
   * Takes exactly `n` bytes, or returns undefined (and takes nothing) if fewer are queued. The
   * result may be a view into a received chunk; when the bytes straddle chunks they are copied
   * into a buffer from `alloc` (default Buffer.allocUnsafe).
   */
  take(n: number, alloc: (n: number) => Buffer = Buffer.allocUnsafe): Buffer | undefined {
    if (n > this.size) return undefined;
    if (n === 0) return EMPTY;
    const first = this.chunks[this.head] as Buffer;
    const avail = first.length - this.offset;
    if (avail >= n) {
      const out = first.subarray(this.offset, this.offset + n);
      this.consume(n);
      return out;
    }
    const out = alloc(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.chunks[this.head] as Buffer;
      const want = Math.min(n - filled, chunk.length - this.offset);
      chunk.copy(out, filled, this.offset, this.offset + want);
      filled += want;
      this.consume(want);
    }
    return out;
  }

  /** Discards up to `n` bytes; returns how many were discarded. */
  skip(n: number): number {
    let left = Math.min(n, this.size);
    const done = left;
    while (left > 0) {
      const chunk = this.chunks[this.head] as Buffer;
      const want = Math.min(left, chunk.length - this.offset);
      this.consume(want);
      left -= want;
    }
    return done;
  }

  /** Drops everything. */
  clear(): void {
    this.chunks = [];
    this.head = 0;
    this.offset = 0;
    this.size = 0;
  }

  /** Advances past `n` bytes that lie within chunks[head]. */
  private consume(n: number): void {
    this.size -= n;
    this.offset += n;
    const chunk = this.chunks[this.head] as Buffer;
    if (this.offset < chunk.length) return;
    this.offset = 0;
    this.chunks[this.head] = EMPTY; // release the consumed chunk now, not at compaction
    this.head++;
    if (this.head === this.chunks.length) {
      this.chunks = [];
      this.head = 0;
    } else if (this.head >= COMPACT_AFTER && this.head * 2 >= this.chunks.length) {
      this.chunks = this.chunks.slice(this.head);
      this.head = 0;
    }
  }
}
