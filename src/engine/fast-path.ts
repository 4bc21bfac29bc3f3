/// <reference lib="es2024.sharedmemory" />
/**
 * The live volume's fast path for other threads.
 *
 * A data-path process may serve the live volume from worker threads that do synchronous I/O
 * (src/fuse). Such a thread builds a FastPath from the handle Volume.fastPath() returns (the handle
 * is structured-clonable: it goes through workerData) and, for each request, tries the fast path
 * first. `false` means "not here": the request must go to the main thread's Volume, which applies
 * every rule of the engine (copy-on-write, closed gate, range checks, errors).
 *
 * Design notes
 * - What is shared (one SharedArrayBuffer, layout below): the gate's state and the workers' reader
 *   and writer counts (gate.ts keeps the main thread's own), a "disabled" flag, the volume size,
 *   how many grains the newest checkpoint covers, and one bit per grain meaning "the newest
 *   checkpoint's store holds this grain, durably". Only the main thread changes anything but the
 *   two counters; every access is an Atomics operation (sequentially consistent), except the
 *   bitmap's fill on a clear, which a closed gate orders (below).
 * - Gate ordering (Dekker): a worker increments its counter, then loads the state; Gate.close
 *   stores the state, then loads the counters (and waits, with Atomics.waitAsync, until both are
 *   zero). In the single total order of these operations, either the worker's load follows the
 *   closer's store (it sees "closed", decrements and forwards) or its increment precedes the
 *   closer's load (the closer waits for it). A worker's decrement to zero notifies when it then
 *   sees the gate not open; if it sees it open, the closer's store comes later in that order, so
 *   the closer's load of the counter sees the decrement and it does not wait at all.
 * - Writes. A worker writes the base only with the gate open, inside the size, and when no grain
 *   of the range needs a copy: the grain is past what the newest checkpoint covers, or its bit is
 *   set. cow.ts sets a bit only after the copy's store batch is fdatasync'd (store.append resolved)
 *   and only while that store is still the newest, so the crash-safety rule of copy-on-write
 *   (docs/format.md §5) holds for worker writes too. Everything else forwards: first writes after
 *   a cut, zeroes and trims, FUA without an O_DSYNC fd, and any I/O error (the main thread redoes
 *   the request, which is idempotent, and reports the engine's typed error).
 * - Keeping the bits in step: bits are only ever cleared while the gate is closed to writes, and
 *   in one place: Gate.open calls SharedVolume.sync before it reopens. sync compares the newest
 *   layer's store with the one the bits describe; if it changed (a cut, deferred cuts, deletion
 *   of the newest checkpoint, the end of a transaction) it clears the bitmap and sets the bits of
 *   whatever the new newest store already holds (nothing, after a cut). The clear zeroes only the
 *   words that had a bit set (listed as they are set, each after a copy that cost an fdatasync),
 *   or fills the bitmap once they are more than a sixteenth of it: a cut never looks up a store
 *   per grain, and never writes more of the bitmap than the copies since the last cut touched
 *   (at most a memset of size / grain / 8 bytes: 2 MiB at 1 TiB and 64 KiB grains). Rollback keeps
 *   the newest store, whose copies set their bits as they complete. The plain fill is visible to a
 *   worker that then sees the gate open: the reopening Atomics.store follows it.
 * - Expand: the bitmap is a growable SharedArrayBuffer (Node 20 has them; length-tracking views
 *   follow a grow in every thread). sync grows it to the volume's size in grains, under the
 *   closed gate of expand, before it publishes the new size. The buffer's maximum (reserved
 *   address space, committed only as it grows) is 4 GiB of bits, 2^35 grains: 128 TiB at 4 KiB
 *   grains, 2 PiB at the default 64 KiB. A grain past the bitmap (a larger volume, or a grow that
 *   failed) always forwards.
 * - Disabled: a closed volume (its fds are closed, and may be reused by the process) or an
 *   interrupted one (only a reopen may continue) sets "disabled" before its gate reopens; every
 *   method then forwards, and the main thread answers with the engine's error.
 * - Reads: the live volume always reads the base image (cow.ts readInto), so a worker reads it
 *   unless the gate is closed to reads (rollback, deletion, commit, abort, close). Flush enters as
 *   a reader too, so the fd it syncs cannot be closed under it.
 * - Direct I/O: a worker's aligned reads and writes (buffer, offset and length on
 *   DIRECT_IO_ALIGN) use a third fd on the base image opened O_DIRECT; the rest, and the main
 *   thread, use the page cache. This is what a local disk's loop device does (it opens its file
 *   O_DIRECT): the data is not cached twice, once in the pod's file system and again under the
 *   engine, and a write costs no copy into the page cache and no write-back later. The kernel keeps
 *   the two kinds coherent (a direct read writes back dirty cached pages of its range first, a
 *   direct write drops them). A worker writes only grains whose copy is done, and a copy reads the
 *   base only after a cut closed the gate and drained the workers, so no copy reads a range a
 *   direct write is changing. Durability is unchanged: a direct write reaches the disk's volatile
 *   cache, and a flush's fdatasync (per file, not per fd) makes it durable. A file system that
 *   refuses O_DIRECT (tmpfs) gets -1 and every request takes the page cache.
 * - Off: a read-only volume or a FileIO without fds (tests' wrappers) gives a handle with
 *   baseFd -1 and an empty buffer; every method answers false.
 */
import * as fs from 'node:fs';
import { DIRECT_IO_ALIGN, directAligned } from './native.js';
import type { CheckpointStore } from './store.js';
import type { VolumeCore } from './volume-core.js';

/** Layout of the shared buffer: Int32 words 0–4, BigInt64 words 3–4 (bytes 24–39), then the bitmap. */
const Word = {
  /** GateCode below. */
  State: 0,
  /** Workers inside the write side of the gate. */
  Writers: 1,
  /** Workers inside the read side of the gate. */
  Readers: 2,
  /** 1 once the volume is closed or interrupted: forward everything. */
  Disabled: 3,
  /** log2 of the grain size. */
  GrainShift: 4,
} as const;
const Word64 = {
  /** The live volume's size in bytes. */
  Size: 3,
  /** Grains the newest checkpoint covers (0: no checkpoint, nothing needs a copy). */
  Covered: 4,
} as const;
/** The bitmap starts here: bit g%32 of Int32 word g/32 is grain g ("the newest store holds g"). */
const HEADER_BYTES = 64;
/** Largest growable SharedArrayBuffer Node 20's V8 accepts. */
const MAX_SHARED_BYTES = 2 ** 32;

/** The gate's state as workers see it; a side is closed to workers at its code or beyond. */
export const GateCode = { Open: 0, WritesClosed: 1, AllClosed: 2 } as const;
export type GateCode = (typeof GateCode)[keyof typeof GateCode];
/** The gate's shared words (gate.ts). */
export const GateWord = { State: Word.State, Writers: Word.Writers, Readers: Word.Readers } as const;
type Side = typeof Word.Writers | typeof Word.Readers;

export interface FastPathHandle {
  /** The engine's shared state (gate counters, volume size, copied-grain bits). */
  readonly shared: SharedArrayBuffer;
  /** The base image, opened read-write by the volume; -1 when the fast path is off. */
  readonly baseFd: number;
  /** The base image opened with O_DSYNC, for FUA writes; -1 when there is none. */
  readonly baseSyncFd: number;
  /** The base image opened with O_DIRECT, for aligned reads and writes; -1 when there is none. */
  readonly baseDirectFd: number;
}

/** The handle of a volume without a fast path: every method of its FastPath answers false. */
export function fastPathOff(): FastPathHandle {
  return { shared: new SharedArrayBuffer(0), baseFd: -1, baseSyncFd: -1, baseDirectFd: -1 };
}

/** Leaves one side of the gate; wakes a waiting close when the count reaches zero. */
function leave(words: Int32Array, side: Side): void {
  if (Atomics.sub(words, side, 1) === 1 && Atomics.load(words, Word.State) !== GateCode.Open) Atomics.notify(words, side);
}

/** Worker side of the fast path. Every method is synchronous and never throws for I/O errors: it returns false. */
export class FastPath {
  private readonly words: Int32Array | null;
  private readonly words64: BigInt64Array | null;
  /** Length-tracking: follows the buffer when an expand grows it. */
  private readonly bits: Int32Array | null;

  constructor(readonly handle: FastPathHandle) {
    const on = handle.baseFd >= 0 && handle.shared.byteLength >= HEADER_BYTES;
    this.words = on ? new Int32Array(handle.shared, 0, HEADER_BYTES / 4) : null;
    this.words64 = on ? new BigInt64Array(handle.shared, 0, HEADER_BYTES / 8) : null;
    this.bits = on ? new Int32Array(handle.shared, HEADER_BYTES) : null;
  }

  /** Reads `dest.length` bytes of the live volume at `offset`; false: ask the main thread. */
  read(dest: Buffer, offset: number): boolean {
    const words = this.words;
    if (!words || !this.enter(words, Word.Readers, GateCode.AllClosed)) return false;
    try {
      if (!this.inside(offset, dest.length)) return false;
      const fd = this.direct(dest, offset) ? this.handle.baseDirectFd : this.handle.baseFd;
      for (let done = 0; done < dest.length; ) {
        const n = fs.readSync(fd, dest, done, dest.length - done, offset + done);
        if (n === 0) {
          dest.fill(0, done); // past the end of the file: a sparse tail reads as zeros
          break;
        }
        done += n;
      }
      return true;
    } catch {
      return false;
    } finally {
      leave(words, Word.Readers);
    }
  }

  /** Writes `data` at `offset` when no copy-on-write is needed; false: ask the main thread. */
  write(data: Buffer, offset: number, fua: boolean): boolean {
    const words = this.words;
    const fd = fua ? this.handle.baseSyncFd : this.direct(data, offset) ? this.handle.baseDirectFd : this.handle.baseFd;
    if (!words || fd < 0 || !this.enter(words, Word.Writers, GateCode.WritesClosed)) return false;
    try {
      if (!this.inside(offset, data.length) || !this.copied(words, offset, data.length)) return false;
      for (let done = 0; done < data.length; ) done += fs.writeSync(fd, data, done, data.length - done, offset + done);
      return true;
    } catch {
      return false;
    } finally {
      leave(words, Word.Writers);
    }
  }

  /** Makes every completed write durable (fdatasync of the base); false: ask the main thread. */
  flush(): boolean {
    const words = this.words;
    if (!words || !this.enter(words, Word.Readers, GateCode.AllClosed)) return false;
    try {
      fs.fdatasyncSync(this.handle.baseFd);
      return true;
    } catch {
      return false;
    } finally {
      leave(words, Word.Readers);
    }
  }

  /** Whether an I/O of `buf` at `offset` can go through the O_DIRECT fd. */
  private direct(buf: Buffer, offset: number): boolean {
    return this.handle.baseDirectFd >= 0 && offset % DIRECT_IO_ALIGN === 0 && buf.length % DIRECT_IO_ALIGN === 0 && directAligned(buf);
  }

  /** Enters one side of the gate unless it is closed to it (`closedAt` or beyond) or disabled. */
  private enter(words: Int32Array, side: Side, closedAt: GateCode): boolean {
    Atomics.add(words, side, 1);
    if (Atomics.load(words, Word.State) < closedAt && Atomics.load(words, Word.Disabled) === 0) return true;
    leave(words, side);
    return false;
  }

  /** A non-empty range inside the volume (empty and bad ranges get the main thread's answer). */
  private inside(offset: number, length: number): boolean {
    const size = Number(Atomics.load(this.words64 as BigInt64Array, Word64.Size));
    return Number.isSafeInteger(offset) && offset >= 0 && length > 0 && offset + length <= size;
  }

  /** Whether the newest checkpoint already holds (or does not cover) every grain of the range. */
  private copied(words: Int32Array, offset: number, length: number): boolean {
    const covered = Number(Atomics.load(this.words64 as BigInt64Array, Word64.Covered));
    const shift = Atomics.load(words, Word.GrainShift);
    const first = Math.floor(offset / 2 ** shift);
    const last = Math.min(Math.floor((offset + length - 1) / 2 ** shift), covered - 1);
    const bits = this.bits as Int32Array;
    for (let g = first; g <= last; g++) {
      const word = Math.floor(g / 32);
      if (word >= bits.length || (Atomics.load(bits, word) & (1 << g % 32)) === 0) return false;
    }
    return true;
  }
}

/**
 * Main-thread side: owns the shared buffer of one open volume, mirrors the gate into it (gate.ts)
 * and keeps the size, the covered grains and the bits in step with the chain (sync, copied).
 */
export class SharedVolume {
  readonly handle: FastPathHandle;
  /** The gate's words, for gate.ts. */
  readonly words: Int32Array;
  private readonly words64: BigInt64Array;
  private readonly bits: Int32Array;
  /** The store the bits describe (the newest checkpoint's, as of the last sync). */
  private tracked: CheckpointStore | null = null;
  /** Bitmap words with a bit set, so a clear touches only those; null when so many that a fill is cheaper. */
  private nonZero: number[] | null = [];

  private constructor(private readonly core: VolumeCore, baseFd: number, baseSyncFd: number, baseDirectFd: number) {
    const shift = core.meta.grainShift;
    const maxBytes = Math.min(MAX_SHARED_BYTES, HEADER_BYTES + Math.ceil(2 ** 53 / 2 ** shift / 32) * 4);
    const shared = new SharedArrayBuffer(HEADER_BYTES, { maxByteLength: maxBytes });
    this.handle = { shared, baseFd, baseSyncFd, baseDirectFd };
    this.words = new Int32Array(shared, 0, HEADER_BYTES / 4);
    this.words64 = new BigInt64Array(shared, 0, HEADER_BYTES / 8);
    this.bits = new Int32Array(shared, HEADER_BYTES);
    Atomics.store(this.words, Word.GrainShift, shift);
  }

  /**
   * The fast path of a volume: shares its state with workers from now on (the gate mirrors itself
   * into the buffer and calls sync before every reopening). Off for read-only volumes and FileIOs
   * without fds.
   */
  static attach(core: VolumeCore): SharedVolume | null {
    const baseFd = core.base.fd;
    const baseSyncFd = core.baseSync?.fd;
    if (core.readOnly || baseFd === undefined || baseSyncFd === undefined) return null;
    const shared = new SharedVolume(core, baseFd, baseSyncFd, openDirect(core.base.path));
    shared.sync();
    core.gate.share(shared.words, () => shared.sync());
    return shared;
  }

  /**
   * Brings the shared state in step with the volume. Called when the gate reopens (always after
   * a chain change, an expand or a close), so no worker is writing while bits are cleared.
   */
  sync(): void {
    const core = this.core;
    if (core.closed || core.interrupted) {
      Atomics.store(this.words, Word.Disabled, 1);
      return;
    }
    const shift = core.meta.grainShift;
    const words = Math.ceil(Math.ceil(core.meta.size / 2 ** shift) / 32);
    const shared = this.handle.shared;
    const want = Math.min(shared.maxByteLength, HEADER_BYTES + words * 4);
    try {
      if (shared.byteLength < want) shared.grow(want);
    } catch {
      // Out of memory: grains past the bitmap forward to the main thread, which is always correct.
    }
    const newest = core.layers.at(-1);
    const store = newest?.store ?? null;
    if (store !== this.tracked) {
      this.clear();
      this.tracked = store;
      if (store) this.copied(store, store.grains());
    }
    Atomics.store(this.words64, Word64.Covered, BigInt(newest ? Math.ceil(newest.rec.size / 2 ** shift) : 0));
    Atomics.store(this.words64, Word64.Size, BigInt(core.meta.size));
  }

  /** Records grains that `store` now holds durably (cow.ts, after store.append resolved). */
  copied(store: CheckpointStore, grains: Iterable<number>): void {
    if (store !== this.tracked) return; // a cut or deletion since: sync rebuilt the bits
    const bits = this.bits;
    for (const g of grains) {
      const word = Math.floor(g / 32);
      if (word >= bits.length || Atomics.or(bits, word, 1 << g % 32) !== 0 || !this.nonZero) continue;
      this.nonZero.push(word);
      if (this.nonZero.length > bits.length / 16) this.nonZero = null;
    }
  }

  /** Closes the O_DIRECT fd; Volume.close calls it once the closed volume disabled the fast path. */
  release(): void {
    if (this.handle.baseDirectFd >= 0) fs.closeSync(this.handle.baseDirectFd);
  }

  /** Clears every bit (with no worker writing: the gate is closed to writes). */
  private clear(): void {
    if (this.nonZero) for (const word of this.nonZero) Atomics.store(this.bits, word, 0);
    else this.bits.fill(0);
    this.nonZero = [];
  }
}

/** The base image opened O_DIRECT, or -1 where its file system refuses that (tmpfs answers EINVAL). */
function openDirect(file: string): number {
  try {
    return fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_DIRECT);
  } catch {
    return -1;
  }
}
