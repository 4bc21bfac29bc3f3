/**
 * A checkpoint's store: the grains copied out of the base image after the checkpoint was cut
 * (or merged in from a deleted newer checkpoint). One append-only file per checkpoint.
 *
 * Design notes
 * - The file is a 4 KiB header followed by batches. A batch is a 4 KiB header listing up to
 *   MAX_BATCH_ENTRIES grains (grain number, ZERO flag, CRC-32 of the data), then the data of its
 *   non-ZERO entries back to back, in entry order. docs/format.md has the byte tables.
 * - Group commit: appends queue up while a batch is being written; the next batch takes all of
 *   them (up to the limit). Each batch costs one write and one fdatasync, however many grains it
 *   carries, and no batch is written before the previous one's fdatasync returned. So a valid
 *   batch header proves that every earlier batch is durable; only the last batch's data can be
 *   torn, and recovery checks exactly that batch's data CRCs (dropping it whole if any fails).
 * - An append resolves only after its batch is durable and published in the in-memory index. The
 *   volume overwrites the base only after that, which is the crash-safety rule of copy-on-write.
 * - The index is a Map from grain to file offset (or ZERO). Its memory grows with the number of
 *   copied grains, never with the volume's size.
 * - A grain is stored at most once: the first copy is the checkpoint-time content. Duplicates in
 *   a damaged file are ignored (first one wins).
 * - Damage is refused, never served: the first read of a grain's data in a process checks the whole
 *   grain against its CRC-32 (then it is trusted), and an open finding fewer valid batches than
 *   volume.meta last recorded (`minLength`) refuses the store. Both are CORRUPT errors.
 */
import { EngineError, ErrorCode, fromSystemError } from './errors.js';
import type { FileIO, IoFile } from './file-io.js';
import {
  BATCH_HEADER_LENGTH,
  corruptStore,
  MAX_BATCH_ENTRIES,
  STORE_HEADER_LENGTH,
  checkStoreHeader,
  crc32,
  decodeBatchHeader,
  isLaterBatchHeader,
  encodeBatchHeader,
  encodeStoreHeader,
  type BatchEntry,
} from './format.js';

/** Index value of a grain that was all zeros when copied. */
const ZERO = -1;

interface QueuedAppend {
  readonly grain: number;
  readonly data: Buffer | null;
  readonly done: { resolve: () => void; reject: (err: unknown) => void };
}

export interface StoreCounters {
  /** Batches written (each one fdatasync). */
  batches: number;
  /** Grains appended with data. */
  dataGrains: number;
  /** Grains appended as ZERO entries. */
  zeroGrains: number;
}

export class CheckpointStore {
  private readonly index = new Map<number, number>();
  /** CRC-32 of stored grains whose data no read has checked yet (checked ones are dropped). */
  private readonly unverified = new Map<number, number>();
  private readonly queued = new Set<number>();
  private queue: QueuedAppend[] = [];
  /** The running batch writer, if any. */
  private writer: Promise<void> | null = null;
  /** Set after an fdatasync failure: the page cache state is unknown, so no more appends. */
  private poisoned: EngineError | null = null;
  readonly counters: StoreCounters = { batches: 0, dataGrains: 0, zeroGrains: 0 };

  private constructor(
    private readonly file: IoFile,
    readonly checkpointId: number,
    private readonly grainSize: number,
    private tail: number,
    private nextSequence: bigint,
  ) {}

  /** Creates an empty store file and makes it durable (the caller syncs the directory). */
  static async create(io: FileIO, path: string, checkpointId: number, grainShift: number): Promise<CheckpointStore> {
    let file: IoFile | undefined;
    try {
      file = await io.open(path, 'create');
      await file.write(encodeStoreHeader(checkpointId, grainShift), 0);
      await file.datasync();
      return new CheckpointStore(file, checkpointId, 1 << grainShift, STORE_HEADER_LENGTH, 1n);
    } catch (err) {
      await file?.close().catch(() => undefined);
      await io.unlink(path).catch(() => undefined);
      throw fromSystemError(err, `create checkpoint store ${path}`);
    }
  }

  /**
   * Opens a store and rebuilds its index by walking the batch headers. With `verifyTail` (after an
   * unclean shutdown) the last batch's data is checked and the batch dropped if torn. A torn batch
   * is the last thing written, so a valid batch after the end of the log means damage: refused.
   * Nothing is truncated here (a refused store stays as it was found); a writable open then calls
   * `trimTail()`.
   */
  static async open(
    io: FileIO,
    path: string,
    checkpointId: number,
    grainShift: number,
    opts: { verifyTail: boolean; writable: boolean; minLength?: number },
  ): Promise<CheckpointStore> {
    const file = await io.open(path, opts.writable ? 'readwrite' : 'read').catch((err: unknown) => {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw corruptStore(path, 'the checkpoint store volume.meta names is missing');
      throw fromSystemError(err, `open checkpoint store ${path}`);
    });
    try {
      const fileSize = await file.size();
      if (fileSize < STORE_HEADER_LENGTH) throw corruptStore(path, `truncated to ${fileSize} bytes`);
      const head = Buffer.alloc(STORE_HEADER_LENGTH);
      await file.read(head, 0);
      checkStoreHeader(head, path, checkpointId, grainShift);
      const grainSize = 1 << grainShift;
      const store = new CheckpointStore(file, checkpointId, grainSize, STORE_HEADER_LENGTH, 1n);
      store.fileSize = fileSize;
      const header = Buffer.alloc(BATCH_HEADER_LENGTH);
      let last: { at: number; entries: BatchEntry[] } | null = null;
      for (;;) {
        const at = store.tail;
        if (at + BATCH_HEADER_LENGTH > fileSize) break;
        await file.read(header, at);
        const entries = decodeBatchHeader(header, store.nextSequence, checkpointId);
        if (!entries) break;
        const dataGrains = entries.filter((e) => !e.zero).length;
        const end = at + BATCH_HEADER_LENGTH + dataGrains * grainSize;
        if (end > fileSize) break;
        last = { at, entries };
        store.publish(entries, at + BATCH_HEADER_LENGTH);
        store.tail = end;
        store.nextSequence++;
      }
      if (last && opts.verifyTail && !(await store.batchDataIntact(last.at, last.entries))) {
        for (const e of last.entries) {
          store.index.delete(e.grain);
          store.unverified.delete(e.grain);
        }
        store.tail = last.at;
        store.nextSequence--;
      } else {
        for (let at = store.tail + BATCH_HEADER_LENGTH; at + BATCH_HEADER_LENGTH <= fileSize; at += BATCH_HEADER_LENGTH) {
          await file.read(header, at);
          if (isLaterBatchHeader(header, store.nextSequence, checkpointId)) {
            throw corruptStore(path, `the batch at offset ${store.tail} is damaged and valid batches follow it (one at offset ${at})`);
          }
        }
      }
      if (opts.minLength !== undefined && store.tail < opts.minLength) {
        throw corruptStore(path, `${store.tail} bytes of valid batches, but volume.meta recorded ${opts.minLength}: durable batches were lost`);
      }
      return store;
    } catch (err) {
      await file.close().catch(() => undefined);
      throw err instanceof EngineError ? err : fromSystemError(err, `read checkpoint store ${path}`);
    }
  }

  private fileSize = 0;

  /** Cuts off whatever follows the last valid batch (a torn batch, or a failed write's bytes). */
  async trimTail(): Promise<void> {
    if (this.fileSize <= this.tail) return;
    await this.file.truncate(this.tail);
    await this.file.datasync();
    this.fileSize = this.tail;
  }

  private async batchDataIntact(at: number, entries: readonly BatchEntry[]): Promise<boolean> {
    const buf = Buffer.alloc(this.grainSize);
    let offset = at + BATCH_HEADER_LENGTH;
    for (const e of entries) {
      if (e.zero) continue;
      await this.file.read(buf, offset);
      if (crc32(buf) >>> 0 !== e.dataCrc) return false;
      offset += this.grainSize;
    }
    return true;
  }

  /** Adds a durable batch's entries to the index; the first copy of a grain wins. */
  private publish(entries: readonly BatchEntry[], dataStart: number): void {
    let offset = dataStart;
    for (const e of entries) {
      if (!this.index.has(e.grain)) {
        this.index.set(e.grain, e.zero ? ZERO : offset);
        if (!e.zero) this.unverified.set(e.grain, e.dataCrc);
      }
      if (!e.zero) offset += this.grainSize;
    }
  }

  get path(): string {
    return this.file.path;
  }

  /** Number of grains stored. */
  get count(): number {
    return this.index.size;
  }

  /** File bytes used by durable batches. */
  get bytes(): number {
    return this.tail;
  }

  has(grain: number): boolean {
    return this.index.has(grain);
  }

  /** Whether the stored copy of a grain holds data (false for ZERO entries and absent grains). */
  hasData(grain: number): boolean {
    const at = this.index.get(grain);
    return at !== undefined && at !== ZERO;
  }

  grains(): IterableIterator<number> {
    return this.index.keys();
  }

  /** Reads `dest.length` bytes of a stored grain, from `within` bytes into the grain. */
  async read(grain: number, within: number, dest: Buffer): Promise<void> {
    const at = this.index.get(grain);
    if (at === undefined) throw new Error(`BUG: grain ${grain} not in store ${this.checkpointId}`);
    if (at === ZERO) {
      dest.fill(0);
      return;
    }
    const crc = this.unverified.get(grain);
    try {
      if (crc === undefined) {
        await this.file.read(dest, at + within);
        return;
      }
      const data = within === 0 && dest.length === this.grainSize ? dest : Buffer.allocUnsafe(this.grainSize);
      await this.file.read(data, at);
      if (crc32(data) >>> 0 !== crc) throw corruptStore(this.path, `grain ${grain} at offset ${at} fails its checksum`);
      this.unverified.delete(grain);
      if (data !== dest) data.copy(dest, 0, within, within + dest.length);
    } catch (err) {
      throw fromSystemError(err, `read checkpoint store ${this.path}`);
    }
  }

  /**
   * Appends copies of grains, resolving when they are durable and visible through has()/read().
   * `data` is the grain's content (exactly one grain long), or null for a grain of zeros.
   * Grains already stored or queued are skipped: the first copy wins.
   */
  append(items: ReadonlyArray<{ grain: number; data: Buffer | null }>): Promise<void> {
    if (this.poisoned) return Promise.reject(this.poisoned);
    const waits: Promise<void>[] = [];
    for (const item of items) {
      if (this.index.has(item.grain) || this.queued.has(item.grain)) continue;
      if (item.data && item.data.length !== this.grainSize) throw new Error('BUG: copy is not one grain long');
      this.queued.add(item.grain);
      waits.push(
        new Promise<void>((resolve, reject) => {
          this.queue.push({ grain: item.grain, data: item.data, done: { resolve, reject } });
        }),
      );
    }
    if (!this.writer && this.queue.length > 0) {
      this.writer = this.writeBatches().finally(() => {
        this.writer = null;
      });
    }
    return Promise.all(waits).then(() => undefined);
  }

  private async writeBatches(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue.slice(0, MAX_BATCH_ENTRIES);
      this.queue = this.queue.slice(batch.length);
      const entries: BatchEntry[] = [];
      const data: Buffer[] = [];
      for (const q of batch) {
        const zero = q.data === null;
        entries.push({ grain: q.grain, zero, dataCrc: zero ? 0 : crc32(q.data) >>> 0 });
        if (q.data) data.push(q.data);
      }
      const at = this.tail;
      const header = encodeBatchHeader(this.nextSequence, this.checkpointId, entries);
      let failure: EngineError | null = null;
      try {
        await this.file.write([header, ...data], at);
      } catch (err) {
        // Nothing of this batch counts; the next batch reuses the same offset and sequence.
        failure = fromSystemError(err, `write checkpoint store ${this.path}`);
      }
      if (!failure) {
        try {
          await this.file.datasync();
        } catch (err) {
          failure = fromSystemError(err, `sync checkpoint store ${this.path}`);
          this.poisoned = new EngineError(
            failure.code === ErrorCode.NoSpace ? ErrorCode.NoSpace : ErrorCode.Io,
            `checkpoint store ${this.path} failed to sync; reopen the volume to recover (${failure.message})`,
          );
        }
      }
      for (const q of batch) this.queued.delete(q.grain);
      if (failure) {
        for (const q of batch) q.done.reject(failure);
        if (this.poisoned) {
          for (const q of this.queue) {
            this.queued.delete(q.grain);
            q.done.reject(this.poisoned);
          }
          this.queue = [];
        }
        continue;
      }
      this.publish(entries, at + BATCH_HEADER_LENGTH);
      this.tail = at + BATCH_HEADER_LENGTH + data.length * this.grainSize;
      this.nextSequence++;
      this.counters.batches++;
      this.counters.dataGrains += data.length;
      this.counters.zeroGrains += entries.length - data.length;
      for (const q of batch) q.done.resolve();
    }
  }

  /** Waits until every queued append is written (or failed). */
  async drain(): Promise<void> {
    while (this.writer) await this.writer;
  }

  async close(): Promise<void> {
    await this.drain();
    await this.file.close();
  }
}
