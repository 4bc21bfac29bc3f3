/**
 * A flashcsi volume: a sparse base image plus a cascade of copy-on-write checkpoints. This is its
 * public face and its lifecycle (create, open, close, expand, clone, freeze); the work is done on
 * one internal VolumeCore (volume-core.ts) by the modules it lists, each with its own design notes.
 *
 * Design notes
 * - The base image holds the live data. Checkpoints C1 (oldest) … Cn (newest) each own a store
 *   (store.ts). After Cn is cut, the first write to a grain copies the grain's old contents into
 *   Cn's store (cow.ts); reading Ci looks in Ci, Ci+1, …, Cn and finally the base (images.ts).
 * - Deleting Ci merges what Ci-1 needs; rollback writes Ci's content back through the
 *   copy-on-write path, so newer checkpoints survive (chain.ts). Transactions are an internal
 *   checkpoint plus durable state records (transactions.ts).
 * - Concurrency: metadata operations run one at a time (mutex); cuts close the I/O gate to writes,
 *   rollback and deletion to all I/O; grain tokens keep first writes and checkpoint readers apart
 *   (volume-core.ts).
 * - Crash safety: volume.meta is updated atomically (two slots written alternately, one
 *   fdatasync each: meta-file.ts). Multi-step operations first record a pending operation there
 *   and are idempotent, so open() finishes them before the volume is usable (recovery.ts). See
 *   docs/format.md.
 * - Sizes never shrink. Rollback to a checkpoint smaller than the volume (after an expand) keeps
 *   the current size and zeroes everything past the checkpoint's size.
 */
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import {
  checkpointOrDefer,
  cut,
  deleteCheckpoint,
  dropSpare,
  prepareSpare,
  removeTemporary,
  rollback,
  validateCheckpointName,
  type CheckpointResult,
  type DeferredCheckpoint,
  type RollbackResult,
} from './chain.js';
import { flush, readInto, write, writeZeroes, type WriteOptions, type ZeroOptions } from './cow.js';
import { EngineError, ErrorCode, fromSystemError } from './errors.js';
import { SharedVolume, fastPathOff, type FastPathHandle } from './fast-path.js';
import type { Extent } from './extents.js';
import { nodeFileIO, type FileIO } from './file-io.js';
import { CheckpointFlag, MAX_GRAIN_SHIFT, MIN_GRAIN_SHIFT, type VolumeMeta } from './format.js';
import { allocated, changed, copyImage, readCheckpointInto } from './images.js';
import { META_FILE, MetaFile } from './meta-file.js';
import { CLONE_PREFIX, checkStoreFiles, recover } from './recovery.js';
import { CheckpointStore } from './store.js';
import { abort, beginTransaction, commit, prepare, transactionInfo, validateTxid, type TransactionInfo } from './transactions.js';
import {
  BASE_FILE,
  LOCK_FILE,
  VolumeCore,
  checkSize,
  invalid,
  storeFileName,
  type CheckpointInfo,
  type Layer,
  type VolumeCounters,
} from './volume-core.js';

export const DEFAULT_GRAIN_SIZE = 64 * 1024;

export interface CreateOptions {
  readonly size: number;
  readonly grainSize?: number;
  readonly io?: FileIO;
}

export interface OpenOptions {
  readonly io?: FileIO;
  /** Shared lock, no writes, no recovery: for inspecting a volume nobody serves. */
  readonly readOnly?: boolean;
}

export interface VolumeInfo {
  readonly dir: string;
  readonly size: number;
  readonly grainSize: number;
  readonly allocatedBytes: number;
  readonly checkpoints: readonly CheckpointInfo[];
  readonly deferred: readonly DeferredCheckpoint[];
  readonly transaction: TransactionInfo | null;
  /** Whether open() found the volume not cleanly closed, and what recovery finished. */
  readonly recovery: { readonly wasDirty: boolean; readonly completed: readonly string[] };
}

/** A volume whose writes are held (see Volume.freeze). */
export interface FrozenVolume {
  createCheckpoint(name: string): Promise<CheckpointResult>;
  begin(txid: string): Promise<TransactionInfo>;
  /** Lets writes through again; idempotent. */
  thaw(): void;
}

export class Volume {
  private constructor(private readonly core: VolumeCore) {}

  // ---------------------------------------------------------------- lifecycle

  /** Creates a volume in a new directory (mode 0700) and opens it for writing. */
  static async create(dir: string, opts: CreateOptions): Promise<Volume> {
    const io = opts.io ?? nodeFileIO;
    const grainSize = opts.grainSize ?? DEFAULT_GRAIN_SIZE;
    checkSize(opts.size, 'volume size');
    const grainShift = Math.log2(grainSize);
    if (!Number.isInteger(grainShift) || grainShift < MIN_GRAIN_SHIFT || grainShift > MAX_GRAIN_SHIFT) {
      throw invalid(`grain size ${grainSize} must be a power of two from ${2 ** MIN_GRAIN_SHIFT} to ${2 ** MAX_GRAIN_SHIFT}`);
    }
    try {
      await io.mkdir(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new EngineError(ErrorCode.AlreadyExists, `${dir} already exists`);
      throw fromSystemError(err, `create ${dir}`);
    }
    try {
      const lock = await io.open(path.join(dir, LOCK_FILE), 'create');
      lock.lock('exclusive', dir);
      const base = await io.open(path.join(dir, BASE_FILE), 'create');
      await base.truncate(opts.size);
      await base.datasync();
      await base.close();
      const meta: VolumeMeta = {
        size: opts.size,
        grainShift,
        dirty: false,
        generation: 1n,
        nextCheckpointId: 1,
        checkpoints: [],
        tx: null,
        history: [],
        deferred: [],
        pending: null,
      };
      await MetaFile.create(io, dir, meta);
      // The new directory's own entry: without this a power failure may take the whole volume.
      await io.syncDir(path.dirname(dir));
      await lock.close();
    } catch (err) {
      await io.rmdir(dir).catch(() => undefined);
      throw fromSystemError(err, `create volume ${dir}`);
    }
    return Volume.open(dir, { io });
  }

  /**
   * Opens a volume. A writable open takes the volume's exclusive lock, marks it dirty, and first
   * finishes whatever a crash interrupted (rollback, checkpoint deletion, transaction outcome).
   */
  static async open(dir: string, opts: OpenOptions = {}): Promise<Volume> {
    const io = opts.io ?? nodeFileIO;
    const readOnly = opts.readOnly ?? false;
    if (!(await io.exists(path.join(dir, META_FILE)))) {
      throw new EngineError(ErrorCode.VolumeNotFound, `${dir} holds no flashcsi volume`);
    }
    const lock = await io.open(path.join(dir, LOCK_FILE), readOnly ? 'read' : 'readwrite').catch((err: unknown) => {
      throw fromSystemError(err, `open ${dir}`);
    });
    const opened: Array<{ close(): Promise<void> }> = [lock];
    const layers: Layer[] = [];
    try {
      lock.lock(readOnly ? 'shared' : 'exclusive', `volume ${dir}`);
      let meta: VolumeMeta;
      let metaFile: MetaFile | null = null;
      if (readOnly) {
        meta = await MetaFile.read(io, dir);
      } else {
        ({ metaFile, meta } = await MetaFile.open(io, dir));
        opened.push(metaFile);
      }
      if (readOnly && meta.pending) {
        throw new EngineError(ErrorCode.FailedPrecondition, `volume ${dir} has an interrupted operation; open it read-write to recover`);
      }
      const base = await io.open(path.join(dir, BASE_FILE), readOnly ? 'read' : 'readwrite');
      opened.push(base);
      const baseSync = readOnly ? null : await io.open(path.join(dir, BASE_FILE), 'readwrite-dsync');
      if (baseSync) opened.push(baseSync);
      await checkStoreFiles(io, dir, meta, !readOnly);
      // A crash between extending the base and recording the new size leaves them apart.
      if (!readOnly && (await base.size()) !== meta.size) await base.truncate(meta.size);
      for (const rec of meta.checkpoints) {
        const minLength = meta.storeLengths?.get(rec.id);
        const store = await CheckpointStore.open(io, path.join(dir, storeFileName(rec.id)), rec.id, meta.grainShift, {
          verifyTail: meta.dirty,
          writable: !readOnly,
          ...(minLength === undefined ? {} : { minLength }),
        });
        layers.push({ rec, store });
      }
      if (!readOnly) for (const layer of layers) await layer.store.trimTail();
      const core = new VolumeCore(dir, io, meta, metaFile, layers, base, baseSync, lock, readOnly, meta.dirty);
      if (!readOnly) {
        await core.persist({ ...meta, dirty: true });
        await recover(core);
        prepareSpare(core);
      }
      return new Volume(core);
    } catch (err) {
      for (const layer of layers) await layer.store.close().catch(() => undefined);
      for (const f of opened.reverse()) await f.close().catch(() => undefined);
      throw err instanceof EngineError ? err : fromSystemError(err, `open volume ${dir}`);
    }
  }

  /**
   * What worker threads need to serve the live volume's fast path (fast-path.ts). The same handle
   * every time; it stays valid until the volume is closed (then its FastPath forwards everything).
   * Off (every request goes to this Volume) when read-only or when the FileIO has no fds; refused
   * (CLOSED) on a closed volume.
   */
  fastPath(): FastPathHandle {
    const core = this.core;
    core.checkOpen();
    core.shared ??= SharedVolume.attach(core);
    return core.shared?.handle ?? fastPathOff();
  }

  /** Flushes, marks the volume clean and releases it. Waits for in-flight I/O. */
  async close(): Promise<void> {
    const core = this.core;
    if (core.closed) return;
    await core.mutex.run(async () => {
      if (core.closed) return;
      await core.quiesce('close', 'all');
      core.closed = true;
      core.gate.open(); // callers blocked at the gate now see `closed`
      try {
        await dropSpare(core);
        for (const layer of core.layers) await layer.store.drain();
        if (!core.readOnly) {
          await core.base.datasync();
          // Left dirty if anything above failed: the next open then verifies store tails.
          await core.persist({ ...core.meta, dirty: false });
        }
      } finally {
        for (const layer of core.layers) await layer.store.close().catch(() => undefined);
        await core.metaFile?.close().catch(() => undefined);
        await core.baseSync?.close().catch(() => undefined);
        core.shared?.release();
        await core.base.close().catch(() => undefined);
        await core.lock.close().catch(() => undefined);
      }
    });
  }

  /** Grows the volume. Checkpoints keep their own sizes. */
  async expand(newSize: number): Promise<void> {
    checkSize(newSize, 'new size');
    const core = this.core;
    return core.exclusive(async () => {
      if (newSize < core.meta.size) throw invalid(`cannot shrink from ${core.meta.size} to ${newSize} bytes`);
      if (newSize === core.meta.size) return;
      await core.quiesce('expand', 'writes');
      try {
        await core.base.truncate(newSize);
        await core.base.datasync();
        await core.persist({ ...core.meta, size: newSize });
      } finally {
        core.gate.open();
      }
    });
  }

  /**
   * Copies a checkpoint image (or, with no name, a point-in-time image of the live volume taken
   * through a temporary checkpoint) into a new volume, copying only allocated ranges.
   */
  async clone(destDir: string, opts: { checkpoint?: string; grainSize?: number; io?: FileIO } = {}): Promise<Volume> {
    const core = this.core;
    core.checkOpen();
    let name = opts.checkpoint;
    let temporary: string | null = null;
    if (name === undefined) {
      if (core.meta.tx) throw new EngineError(ErrorCode.FailedPrecondition, `volume is in transaction ${core.meta.tx.txid}`);
      temporary = `${CLONE_PREFIX}${randomBytes(8).toString('hex')}`;
      const tmp = temporary;
      await core.exclusive(() => cut(core, tmp, CheckpointFlag.Internal, (m) => m));
      name = temporary;
    }
    try {
      const size = this.checkpoint(name).size;
      const dest = await Volume.create(destDir, { size, grainSize: opts.grainSize ?? this.grainSize, io: opts.io ?? core.io });
      try {
        await this.copyImage(name, (buf, offset) => dest.write(offset, buf));
        await dest.flush();
        return dest;
      } catch (err) {
        await dest.close().catch(() => undefined);
        await core.io.rmdir(destDir).catch(() => undefined);
        throw err;
      }
    } finally {
      if (temporary) {
        const tmp = temporary;
        await core.exclusive(() => removeTemporary(core, tmp)).catch(() => undefined);
      }
    }
  }

  /**
   * Quiesces writes and holds them until `thaw()`, so the caller can cut checkpoints (or begin a
   * transaction) on several volumes at one instant relative to their write streams: freeze all,
   * cut all, thaw all. Reads continue. Other metadata operations wait until the thaw.
   */
  async freeze(): Promise<FrozenVolume> {
    const core = this.core;
    let frozen!: (f: FrozenVolume) => void;
    const ready = new Promise<FrozenVolume>((resolve) => {
      frozen = resolve;
    });
    let thawed!: () => void;
    const held = new Promise<void>((resolve) => {
      thawed = resolve;
    });
    const done = core.exclusive(async () => {
      await core.quiesce('freeze', 'writes');
      let open = true;
      const whileFrozen = <T>(fn: () => Promise<T>): Promise<T> => {
        if (!open) return Promise.reject(new EngineError(ErrorCode.FailedPrecondition, `volume ${core.dir} is no longer frozen`));
        return fn();
      };
      frozen({
        createCheckpoint: (name) => {
          validateCheckpointName(name);
          return whileFrozen(() => checkpointOrDefer(core, name, true));
        },
        begin: (txid) => {
          validateTxid(txid);
          return whileFrozen(() => beginTransaction(core, txid, true));
        },
        thaw: () => {
          if (!open) return;
          open = false;
          core.gate.open();
          thawed();
        },
      });
      await held;
    });
    return Promise.race([ready, done.then(() => ready)]);
  }

  /** Resolves when background work (the spare store) is done; for tests that count I/O. */
  async settled(): Promise<void> {
    await this.core.spare;
  }

  // ---------------------------------------------------------------- geometry and state

  get dir(): string {
    return this.core.dir;
  }

  get readOnly(): boolean {
    return this.core.readOnly;
  }

  get counters(): VolumeCounters {
    return this.core.counters;
  }

  get size(): number {
    return this.core.meta.size;
  }

  get grainSize(): number {
    return this.core.grainSize;
  }

  get isClosed(): boolean {
    return this.core.closed;
  }

  /** Token waits so far (a write or checkpoint read found a grain's token taken). */
  get tokenWaits(): number {
    return this.core.tokens.waits;
  }

  async info(): Promise<VolumeInfo> {
    const core = this.core;
    return {
      dir: core.dir,
      size: core.meta.size,
      grainSize: core.grainSize,
      allocatedBytes: await core.base.allocated(),
      checkpoints: this.checkpoints({ includeInternal: true }),
      deferred: this.deferredCheckpoints(),
      transaction: this.transaction(),
      recovery: { wasDirty: core.wasDirty, completed: [...core.recovered] },
    };
  }

  checkpoints(opts: { includeInternal?: boolean } = {}): CheckpointInfo[] {
    return this.core.layers.filter((l) => opts.includeInternal || !(l.rec.flags & CheckpointFlag.Internal)).map((l) => this.core.describe(l));
  }

  checkpoint(name: string): CheckpointInfo {
    return this.core.describe(this.core.layerAt(this.core.layerIndex(name)));
  }

  deferredCheckpoints(): DeferredCheckpoint[] {
    const txid = this.core.meta.tx?.txid ?? '';
    return this.core.meta.deferred.map((d) => ({ name: d.name, requestedAt: new Date(Number(d.requestedNs / 1_000_000n)), txid }));
  }

  transaction(): TransactionInfo | null {
    return transactionInfo(this.core);
  }

  // ---------------------------------------------------------------- data path (cow.ts)

  async read(offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.alloc(length);
    await this.readInto(buf, offset);
    return buf;
  }

  /** Reads `dest.length` bytes of the live volume at `offset`. */
  readInto(dest: Buffer, offset: number): Promise<void> {
    return readInto(this.core, dest, offset);
  }

  write(offset: number, data: Buffer, opts: WriteOptions = {}): Promise<void> {
    return write(this.core, offset, data, opts);
  }

  /** Zeroes a range. Without `noHole` the range is deallocated (a hole). */
  writeZeroes(offset: number, length: number, opts: ZeroOptions = {}): Promise<void> {
    return writeZeroes(this.core, offset, length, opts);
  }

  /** Discards a range: it reads as zeros afterwards and its space is freed. */
  trim(offset: number, length: number, opts: WriteOptions = {}): Promise<void> {
    return this.writeZeroes(offset, length, opts);
  }

  /** Makes every completed write durable. Concurrent callers share one fdatasync where safe. */
  flush(): Promise<void> {
    return flush(this.core);
  }

  // ---------------------------------------------------------------- checkpoint images and maps (images.ts)

  async readCheckpoint(name: string, offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.alloc(length);
    await this.readCheckpointInto(name, buf, offset);
    return buf;
  }

  /** Reads a checkpoint's point-in-time image; safe at any moment, while the volume is written. */
  readCheckpointInto(name: string, dest: Buffer, offset: number): Promise<void> {
    return readCheckpointInto(this.core, name, dest, offset);
  }

  /**
   * Ranges that may hold data in the live volume (name omitted) or in a checkpoint's image, within
   * [from, to) (default: the whole image). Conservative: a range is left out only where no layer
   * holds data for it.
   */
  allocated(name?: string, from = 0, to = Number.POSITIVE_INFINITY): Promise<Extent[]> {
    return allocated(this.core, name, from, to);
  }

  /** Ranges that changed between checkpoint `from` and checkpoint `to` (or the live volume). O(changed grains). */
  changed(from: string, to?: string): Extent[] {
    return changed(this.core, from, to);
  }

  /** Feeds the allocated ranges of an image (live when name is null) to `sink`, in chunks. */
  copyImage(name: string | null, sink: (buf: Buffer, offset: number) => Promise<void>, chunk = 4 << 20): Promise<void> {
    return copyImage(this.core, name, sink, chunk);
  }

  // ---------------------------------------------------------------- checkpoint chain (chain.ts)

  /**
   * Cuts a checkpoint: O(1) in the volume size (a store header and one metadata replacement).
   * While a transaction is open the cut is deferred until the transaction completes.
   */
  async createCheckpoint(name: string): Promise<CheckpointResult> {
    validateCheckpointName(name);
    return this.core.exclusive(() => checkpointOrDefer(this.core, name, false));
  }

  /** Deletes a checkpoint (or a deferred request for one); every other checkpoint stays byte-exact. */
  deleteCheckpoint(name: string): Promise<void> {
    return this.core.exclusive(() => deleteCheckpoint(this.core, name));
  }

  /**
   * Rolls the volume back to a checkpoint: afterwards it reads byte-identical to it (and zeros
   * past the checkpoint's size). Crash-safe: an interrupted rollback completes on the next open.
   */
  rollback(name: string): Promise<RollbackResult> {
    return this.core.exclusive(() => rollback(this.core, name));
  }

  // ---------------------------------------------------------------- transactions (transactions.ts)

  /** Begins a transaction: cuts its checkpoint. Idempotent for the same txid. */
  async begin(txid: string): Promise<TransactionInfo> {
    validateTxid(txid);
    return this.core.exclusive(() => beginTransaction(this.core, txid, false));
  }

  /** Votes yes: makes every write so far durable and records PREPARED durably. Idempotent. */
  async prepare(txid: string): Promise<TransactionInfo> {
    validateTxid(txid);
    return this.core.exclusive(() => prepare(this.core, txid));
  }

  /** Commits: releases the transaction's checkpoint, then cuts deferred checkpoints. Idempotent. */
  async commit(txid: string): Promise<void> {
    validateTxid(txid);
    return this.core.exclusive(() => commit(this.core, txid));
  }

  /** Aborts: rolls back to the transaction's checkpoint and releases it. Idempotent (presumed abort). */
  async abort(txid: string): Promise<void> {
    validateTxid(txid);
    return this.core.exclusive(() => abort(this.core, txid));
  }
}
