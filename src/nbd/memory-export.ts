/**
 * A sparse in-memory export: a Map of 64 KiB chunks, absent chunks read as zeroes. Used by the
 * NBD tests and as a handy peer; all operations are synchronous inside, so each call is atomic
 * with respect to the others. Whole chunks covered by trim/writeZeroes are freed (holes); partial
 * ones are zero-filled. flush() is a no-op that counts calls.
 */
import { ExportError, ExportErrorCode, type BlockSizeConstraints, type Extent, type NbdExport, type WriteZeroesOptions } from './export.js';

export interface MemoryExportOptions {
  readonly name?: string;
  readonly description?: string;
  /** Size in bytes. */
  readonly size: number;
  readonly readOnly?: boolean;
  /** Chunk size, a power of two (default 64 KiB). */
  readonly chunkSize?: number;
  /** Whether writeZeroes counts as fast (default true). */
  readonly fastZero?: boolean;
  readonly blockSize?: BlockSizeConstraints;
}

/** Operation counters, for tests. */
export interface MemoryExportCounters {
  reads: number;
  writes: number;
  fuaWrites: number;
  zeroes: number;
  trims: number;
  flushes: number;
  caches: number;
  blockStatus: number;
}

export class MemoryExport implements NbdExport {
  readonly name: string;
  readonly description?: string;
  readonly readOnly: boolean;
  readonly fastZero: boolean;
  readonly blockSize?: BlockSizeConstraints;
  readonly counters: MemoryExportCounters = { reads: 0, writes: 0, fuaWrites: 0, zeroes: 0, trims: 0, flushes: 0, caches: 0, blockStatus: 0 };
  private sizeValue: number;
  private readonly chunkSize: number;
  private readonly chunks = new Map<number, Buffer>();

  constructor(opts: MemoryExportOptions) {
    this.name = opts.name ?? '';
    if (opts.description !== undefined) this.description = opts.description;
    if (opts.blockSize !== undefined) this.blockSize = opts.blockSize;
    this.readOnly = opts.readOnly ?? false;
    this.fastZero = opts.fastZero ?? true;
    this.chunkSize = opts.chunkSize ?? 64 * 1024;
    if (!Number.isSafeInteger(opts.size) || opts.size < 0) throw new ExportError(ExportErrorCode.InvalidArgument, `bad size ${opts.size}`);
    if ((this.chunkSize & (this.chunkSize - 1)) !== 0) throw new ExportError(ExportErrorCode.InvalidArgument, 'chunk size must be a power of two');
    this.sizeValue = opts.size;
  }

  size(): number {
    return this.sizeValue;
  }

  /** Grows (or shrinks) the export; connections opened afterwards see the new size. */
  resize(size: number): void {
    if (!Number.isSafeInteger(size) || size < 0) throw new ExportError(ExportErrorCode.InvalidArgument, `bad size ${size}`);
    if (size < this.sizeValue) {
      for (const idx of [...this.chunks.keys()]) if (idx * this.chunkSize >= size) this.chunks.delete(idx);
      const tail = size % this.chunkSize;
      const last = this.chunks.get(Math.floor(size / this.chunkSize));
      if (last !== undefined && tail !== 0) last.fill(0, tail);
    }
    this.sizeValue = size;
  }

  /**
   * A copy of this export's current content under another name, e.g. a read-only "checkpoint"
   * for tests. Chunks are copied, so later writes to either side are independent.
   */
  clone(opts: { name: string; readOnly?: boolean; description?: string }): MemoryExport {
    const copy = new MemoryExport({
      name: opts.name,
      size: this.sizeValue,
      readOnly: opts.readOnly ?? this.readOnly,
      chunkSize: this.chunkSize,
      fastZero: this.fastZero,
      ...(opts.description !== undefined ? { description: opts.description } : {}),
      ...(this.blockSize !== undefined ? { blockSize: this.blockSize } : {}),
    });
    for (const [idx, chunk] of this.chunks) copy.chunks.set(idx, Buffer.from(chunk));
    return copy;
  }

  /** Bytes held in allocated chunks. */
  allocatedBytes(): number {
    return this.chunks.size * this.chunkSize;
  }

  /** Synchronous read, for tests. */
  readSync(offset: number, length: number, into?: Buffer): Buffer {
    this.check(offset, length);
    const out = into !== undefined && into.length === length ? into : Buffer.allocUnsafe(length);
    const cs = this.chunkSize;
    let pos = 0;
    while (pos < length) {
      const abs = offset + pos;
      const idx = Math.floor(abs / cs);
      const within = abs - idx * cs;
      const n = Math.min(cs - within, length - pos);
      const chunk = this.chunks.get(idx);
      if (chunk === undefined) out.fill(0, pos, pos + n);
      else chunk.copy(out, pos, within, within + n);
      pos += n;
    }
    return out;
  }

  /** Synchronous write, for tests. */
  writeSync(offset: number, data: Buffer): void {
    this.checkWritable(offset, data.length);
    const cs = this.chunkSize;
    let pos = 0;
    while (pos < data.length) {
      const abs = offset + pos;
      const idx = Math.floor(abs / cs);
      const within = abs - idx * cs;
      const n = Math.min(cs - within, data.length - pos);
      let chunk = this.chunks.get(idx);
      if (chunk === undefined) {
        chunk = Buffer.alloc(cs);
        this.chunks.set(idx, chunk);
      }
      data.copy(chunk, within, pos, pos + n);
      pos += n;
    }
  }

  async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    this.counters.reads++;
    return this.readSync(offset, length, into);
  }

  async write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    this.counters.writes++;
    if (fua) this.counters.fuaWrites++;
    this.writeSync(offset, data);
  }

  async writeZeroes(offset: number, length: number, opts: WriteZeroesOptions): Promise<void> {
    this.counters.zeroes++;
    this.checkWritable(offset, length);
    this.zeroRange(offset, length, !opts.noHole);
  }

  async trim(offset: number, length: number, _fua: boolean): Promise<void> {
    this.counters.trims++;
    this.checkWritable(offset, length);
    this.zeroRange(offset, length, true);
  }

  async flush(): Promise<void> {
    this.counters.flushes++;
  }

  async cache(offset: number, length: number): Promise<void> {
    this.counters.caches++;
    this.check(offset, length);
  }

  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    this.counters.blockStatus++;
    this.check(offset, length);
    const cs = this.chunkSize;
    const end = offset + length;
    const out: Extent[] = [];
    let pos = offset;
    while (pos < end) {
      const idx = Math.floor(pos / cs);
      const n = Math.min((idx + 1) * cs, end) - pos;
      const allocated = this.chunks.has(idx);
      const last = out[out.length - 1];
      if (last !== undefined && last.hole === !allocated) out[out.length - 1] = { ...last, length: last.length + n };
      else out.push({ length: n, hole: !allocated, zero: !allocated });
      pos += n;
    }
    return out;
  }

  /** Zeroes a range; whole chunks are freed when `punch` is set, otherwise kept allocated. */
  private zeroRange(offset: number, length: number, punch: boolean): void {
    const cs = this.chunkSize;
    const end = offset + length;
    let pos = offset;
    while (pos < end) {
      const idx = Math.floor(pos / cs);
      const within = pos - idx * cs;
      const n = Math.min(cs - within, end - pos);
      const chunk = this.chunks.get(idx);
      if (n === cs && punch) this.chunks.delete(idx);
      else if (chunk !== undefined) chunk.fill(0, within, within + n);
      else if (!punch) this.chunks.set(idx, Buffer.alloc(cs));
      pos += n;
    }
  }

  private check(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw new ExportError(ExportErrorCode.InvalidArgument, `bad range ${offset}+${length}`);
    }
    if (offset + length > this.sizeValue) throw new ExportError(ExportErrorCode.OutOfRange, `range ${offset}+${length} beyond ${this.sizeValue}`);
  }

  private checkWritable(offset: number, length: number): void {
    if (this.readOnly) throw new ExportError(ExportErrorCode.ReadOnly, 'export is read-only');
    this.check(offset, length);
  }
}
