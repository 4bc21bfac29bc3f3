/**
 * A flashcsi volume: a sparse base image plus a cascade of copy-on-write checkpoints.
 *
 * Design notes
 * - The base image holds the live data. Checkpoints C1 (oldest) … Cn (newest) each own a store
 *   (store.ts). After Cn is cut, the first write to a grain copies the grain's old contents into
 *   Cn's store; later writes copy nothing. Reading Ci at grain g looks in Ci, Ci+1, …, Cn and
 *   finally the base: the first store holding g has Ci's content, because g did not change
 *   between Ci and the checkpoint whose store holds it.
 * - Deleting Ci (i > 1) merges into Ci-1 every grain Ci holds that Ci-1 lacks, so Ci-1 still reads
 *   the same bytes; deleting C1 just drops it.
 * - Rollback to Ci writes Ci's content back into every grain some store in Ci…Cn holds (exactly
 *   the grains changed since Ci), through the copy-on-write path, so newer checkpoints survive.
 *   Its cost follows the changed grains, not the volume size.
 * - Concurrency: a write copies only grains the newest store lacks, under those grains' tokens
 *   (tokens.ts), and overwrites the base only once the copy is durable. Checkpoint readers take
 *   the tokens of the grains they would read from the base. Cuts close the gate to writes
 *   (gate.ts), so a write lands entirely before or after a cut; rollback and deletion close it to
 *   all I/O. Metadata operations run one at a time (mutex.ts).
 * - Crash safety: volume.meta is updated atomically (two slots written alternately, one
 *   fdatasync each: meta-file.ts). Multi-step operations first record a pending operation there
 *   and are idempotent, so open() finishes them before the volume is usable. See docs/format.md.
 * - Sizes never shrink. Rollback to a checkpoint smaller than the volume (after an expand) keeps
 *   the current size and zeroes everything past the checkpoint's size.
 */
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { EngineError, ErrorCode, fromSystemError } from './errors.js';
import { nodeFileIO, type FileIO, type IoFile } from './file-io.js';
import {
  CheckpointFlag,
  MAX_BATCH_ENTRIES,
  MAX_GRAIN_SHIFT,
  MIN_GRAIN_SHIFT,
  PendingKind,
  STORE_HEADER_LENGTH,
  TX_HISTORY_LIMIT,
  TxOutcome,
  TxState,
  type CheckpointRecord,
  type VolumeMeta,
} from './format.js';
import { CheckpointStore } from './store.js';
import { META_FILE, MetaFile } from './meta-file.js';
import { TokenTable } from './tokens.js';
import { Gate } from './gate.js';
import { Mutex } from './mutex.js';
import { clip, grainExtents, normalize, subtract, type Extent } from './extents.js';
import { publish } from './events.js';

export const DEFAULT_GRAIN_SIZE = 64 * 1024;
/** 2^53 bytes would overflow exact JS numbers; 8 PiB is far beyond any single-node volume. */
export const MAX_VOLUME_SIZE = 2 ** 53 - 2 ** 20;

const BASE_FILE = 'base.img';
const LOCK_FILE = 'lock';
const STORE_PATTERN = /^cp-(\d{8,})\.store$/;

export function storeFileName(id: number): string {
  return `cp-${String(id).padStart(8, '0')}.store`;
}

const USER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/;
const TXID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$/;
const TX_PREFIX = 'tx:';
const CLONE_PREFIX = 'clone:';

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

export interface WriteOptions {
  /** Forced unit access: durable when the call returns. */
  readonly fua?: boolean;
}

export interface ZeroOptions extends WriteOptions {
  /** Keep the range allocated (NBD_CMD_FLAG_NO_HOLE). */
  readonly noHole?: boolean;
}

export interface CheckpointInfo {
  readonly name: string;
  readonly id: number;
  readonly size: number;
  readonly createdAt: Date;
  /** Cut by a transaction's begin(); released by its commit or abort. */
  readonly internal: boolean;
  /** Grains copied into this checkpoint's store. */
  readonly storedGrains: number;
  /** Bytes of its store file. */
  readonly storeBytes: number;
}

export interface DeferredCheckpoint {
  readonly name: string;
  readonly requestedAt: Date;
  /** The open transaction the cut waits for. */
  readonly txid: string;
}

export type CheckpointResult =
  | { readonly state: 'created'; readonly checkpoint: CheckpointInfo }
  | { readonly state: 'deferred'; readonly deferred: DeferredCheckpoint };

export type TransactionState = 'open' | 'prepared' | 'committing' | 'aborting';

export interface TransactionInfo {
  readonly txid: string;
  readonly state: TransactionState;
  readonly checkpoint: string;
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

export interface RollbackResult {
  /** Bytes of the volume rewritten to match the checkpoint. */
  readonly restoredBytes: number;
}

export interface VolumeCounters {
  /** Grains copied into the newest checkpoint before being overwritten. */
  grainsCopied: number;
  /** Grains written back by rollbacks. */
  grainsRestored: number;
  /** Grains moved into an older checkpoint when a newer one was deleted. */
  grainsMerged: number;
  /** Atomic replacements of volume.meta. */
  metaWrites: number;
}

interface Layer {
  rec: CheckpointRecord;
  readonly store: CheckpointStore;
}

const txStateNames: Record<TxState, TransactionState> = {
  [TxState.Open]: 'open',
  [TxState.Prepared]: 'prepared',
  [TxState.Committing]: 'committing',
  [TxState.Aborting]: 'aborting',
};

function invalid(message: string): EngineError {
  return new EngineError(ErrorCode.InvalidArgument, message);
}

function checkSize(size: number, what: string): void {
  if (!Number.isSafeInteger(size) || size <= 0 || size % 512 !== 0 || size > MAX_VOLUME_SIZE) {
    throw invalid(`${what} ${size} must be a positive multiple of 512 bytes, at most ${MAX_VOLUME_SIZE}`);
  }
}

export function validateCheckpointName(name: string): void {
  if (!USER_NAME.test(name)) {
    throw invalid(`checkpoint name "${name}" must be 1-253 characters of letters, digits, '.', '_' or '-', starting with a letter or digit`);
  }
}

function validateTxid(txid: string): void {
  if (!TXID.test(txid)) throw invalid(`transaction id "${txid}" must be 1-201 characters of letters, digits, '.', '_' or '-'`);
}

function nowNs(): bigint {
  return BigInt(Date.now()) * 1_000_000n;
}

export class Volume {
  readonly counters: VolumeCounters = { grainsCopied: 0, grainsRestored: 0, grainsMerged: 0, metaWrites: 0 };
  private readonly tokens = new TokenTable();
  private readonly gate = new Gate();
  private readonly mutex = new Mutex();
  private readonly zeroGrain: Buffer;
  private closed = false;
  /** Set when a recorded multi-step operation failed midway: only a reopen can finish it. */
  private interrupted: EngineError | null = null;
  private flushing: Promise<void> | null = null;
  /** The next checkpoint's store, being made ahead of time (see prepareSpare). */
  private spare: Promise<CheckpointStore | null> | null = null;
  private flushAgain: Promise<void> | null = null;
  private readonly recovered: string[] = [];

  private constructor(
    readonly dir: string,
    private readonly io: FileIO,
    private meta: VolumeMeta,
    /** Null when read-only. */
    private readonly metaFile: MetaFile | null,
    private readonly layers: Layer[],
    private readonly base: IoFile,
    /** The base image opened with O_DSYNC, for FUA writes. Null when read-only. */
    private readonly baseSync: IoFile | null,
    private readonly lock: IoFile,
    readonly readOnly: boolean,
    private readonly wasDirty: boolean,
  ) {
    this.zeroGrain = Buffer.alloc(1 << meta.grainShift);
  }

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
      const stores = await listStoreFiles(io, dir);
      await refuseStaleMeta(io, dir, meta, stores);
      if (!readOnly) {
        // A crash between extending the base and recording the new size leaves them apart.
        if ((await base.size()) !== meta.size) await base.truncate(meta.size);
        await removeOrphans(io, dir, meta, stores);
      }
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
      const volume = new Volume(dir, io, meta, metaFile, layers, base, baseSync, lock, readOnly, meta.dirty);
      if (!readOnly) {
        await volume.persist({ ...meta, dirty: true });
        await volume.recover();
        volume.prepareSpare();
      }
      return volume;
    } catch (err) {
      for (const layer of layers) await layer.store.close().catch(() => undefined);
      for (const f of opened.reverse()) await f.close().catch(() => undefined);
      throw err instanceof EngineError ? err : fromSystemError(err, `open volume ${dir}`);
    }
  }

  /** Finishes every operation a crash interrupted. Idempotent: a crash here is recovered again. */
  private async recover(): Promise<void> {
    const pending = this.meta.pending;
    const tx = this.meta.tx;
    if (pending?.kind === PendingKind.Rollback) {
      const i = this.layerIndexById(pending.checkpointId);
      await this.restoreTo(i);
      this.recovered.push(`rollback to ${this.layerAt(i).rec.name}`);
      if (tx?.state === TxState.Aborting) {
        await this.persist({ ...this.meta, pending: { kind: PendingKind.Delete, checkpointId: tx.checkpointId } });
        await this.removeLayer(this.layerIndexById(tx.checkpointId), (m) => finishTransaction(m, tx.txid, TxOutcome.Aborted));
        this.recovered.push(`abort of transaction ${tx.txid}`);
      } else {
        await this.persist({ ...this.meta, pending: null });
      }
    } else if (pending?.kind === PendingKind.Delete) {
      const i = this.layerIndexById(pending.checkpointId);
      const name = this.layerAt(i).rec.name;
      if (tx?.state === TxState.Committing || tx?.state === TxState.Aborting) {
        const outcome = tx.state === TxState.Committing ? TxOutcome.Committed : TxOutcome.Aborted;
        await this.removeLayer(i, (m) => finishTransaction(m, tx.txid, outcome));
        this.recovered.push(`${outcome === TxOutcome.Committed ? 'commit' : 'abort'} of transaction ${tx.txid}`);
      } else {
        await this.removeLayer(i);
        this.recovered.push(`deletion of checkpoint ${name}`);
      }
    } else if (tx?.state === TxState.Committing || tx?.state === TxState.Aborting) {
      // The oldest checkpoint needs no merge, so no pending deletion was recorded; an aborting
      // transaction only gets here once its rollback is done.
      const outcome = tx.state === TxState.Committing ? TxOutcome.Committed : TxOutcome.Aborted;
      await this.removeLayer(this.layerIndexById(tx.checkpointId), (m) => finishTransaction(m, tx.txid, outcome));
      this.recovered.push(`${outcomeName(outcome)} transaction ${tx.txid}`);
    }
    // A clone's temporary checkpoint outlives a crash during the copy; nobody can read it any more
    // (we hold the lock), and left alone it would make every later first write copy a grain.
    for (const layer of this.layers.filter((l) => l.rec.name.startsWith(CLONE_PREFIX) && (l.rec.flags & CheckpointFlag.Internal) !== 0)) {
      const i = this.layers.indexOf(layer);
      if (i > 0) await this.persist({ ...this.meta, pending: { kind: PendingKind.Delete, checkpointId: layer.rec.id } });
      await this.removeLayer(i);
      this.recovered.push(`removal of ${layer.rec.name}, the temporary checkpoint of an interrupted clone`);
    }
    // A crash after a transaction ended but before its deferred cuts were made.
    if (!this.meta.tx && this.meta.deferred.length > 0) {
      this.recovered.push(`deferred checkpoints ${this.meta.deferred.map((d) => d.name).join(', ')}`);
      await this.addDeferredLayers();
    }
  }

  /** Flushes, marks the volume clean and releases it. Waits for in-flight I/O. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.mutex.run(async () => {
      if (this.closed) return;
      await this.quiesce('close', 'all');
      this.closed = true;
      this.gate.open(); // callers blocked at the gate now see `closed`
      try {
        const spare = this.spare ? await this.spare : null;
        this.spare = null;
        if (spare) {
          await spare.close();
          await this.io.unlink(spare.path);
        }
        for (const layer of this.layers) await layer.store.drain();
        if (!this.readOnly) {
          await this.base.datasync();
          // Left dirty if anything above failed: the next open then verifies store tails.
          await this.persist({ ...this.meta, dirty: false });
        }
      } finally {
        for (const layer of this.layers) await layer.store.close().catch(() => undefined);
        await this.metaFile?.close().catch(() => undefined);
        await this.baseSync?.close().catch(() => undefined);
        await this.base.close().catch(() => undefined);
        await this.lock.close().catch(() => undefined);
      }
    });
  }

  // ---------------------------------------------------------------- geometry and state

  get size(): number {
    return this.meta.size;
  }

  get grainSize(): number {
    return 1 << this.meta.grainShift;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Token waits so far (a write or checkpoint read found a grain's token taken). */
  get tokenWaits(): number {
    return this.tokens.waits;
  }

  async info(): Promise<VolumeInfo> {
    return {
      dir: this.dir,
      size: this.meta.size,
      grainSize: this.grainSize,
      allocatedBytes: await this.base.allocated(),
      checkpoints: this.checkpoints({ includeInternal: true }),
      deferred: this.deferredCheckpoints(),
      transaction: this.transaction(),
      recovery: { wasDirty: this.wasDirty, completed: [...this.recovered] },
    };
  }

  checkpoints(opts: { includeInternal?: boolean } = {}): CheckpointInfo[] {
    return this.layers
      .filter((l) => opts.includeInternal || !(l.rec.flags & CheckpointFlag.Internal))
      .map((l) => this.describe(l));
  }

  checkpoint(name: string): CheckpointInfo {
    return this.describe(this.layerAt(this.layerIndex(name)));
  }

  deferredCheckpoints(): DeferredCheckpoint[] {
    const txid = this.meta.tx?.txid ?? '';
    return this.meta.deferred.map((d) => ({ name: d.name, requestedAt: new Date(Number(d.requestedNs / 1_000_000n)), txid }));
  }

  transaction(): TransactionInfo | null {
    const tx = this.meta.tx;
    if (!tx) return null;
    return { txid: tx.txid, state: txStateNames[tx.state], checkpoint: this.layerAt(this.layerIndexById(tx.checkpointId)).rec.name };
  }

  private describe(l: Layer): CheckpointInfo {
    return {
      name: l.rec.name,
      id: l.rec.id,
      size: l.rec.size,
      createdAt: new Date(Number(l.rec.createdNs / 1_000_000n)),
      internal: (l.rec.flags & CheckpointFlag.Internal) !== 0,
      storedGrains: l.store.count,
      storeBytes: l.store.bytes,
    };
  }

  // ---------------------------------------------------------------- data path

  async read(offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.alloc(length);
    await this.readInto(buf, offset);
    return buf;
  }

  /** Reads `dest.length` bytes of the live volume at `offset`. */
  async readInto(dest: Buffer, offset: number): Promise<void> {
    this.checkRange(offset, dest.length, this.meta.size);
    await this.gate.enterRead();
    try {
      this.checkOpen();
      await this.base.read(dest, offset);
    } catch (err) {
      throw fromSystemError(err, `read ${this.dir}`);
    } finally {
      this.gate.leaveRead();
    }
  }

  async write(offset: number, data: Buffer, opts: WriteOptions = {}): Promise<void> {
    this.checkWritable();
    this.checkRange(offset, data.length, this.meta.size);
    if (data.length === 0) return;
    try {
      await this.overwrite(offset, data.length, 'data', () => (opts.fua ? (this.baseSync as IoFile) : this.base).write(data, offset));
    } catch (err) {
      throw fromSystemError(err, `write ${this.dir}`);
    }
  }

  /** Zeroes a range. Without `noHole` the range is deallocated (a hole). */
  async writeZeroes(offset: number, length: number, opts: ZeroOptions = {}): Promise<void> {
    this.checkWritable();
    this.checkRange(offset, length, this.meta.size);
    if (length === 0) return;
    try {
      await this.overwrite(offset, length, 'zero', async () => {
        if (opts.noHole) await this.base.zeroRange(offset, length);
        else await this.base.punchHole(offset, length);
        if (opts.fua) await this.base.datasync();
      });
    } catch (err) {
      throw fromSystemError(err, `write zeroes ${this.dir}`);
    }
  }

  /**
   * Copies what the newest checkpoint still needs, then runs `change` on the base image.
   * First try: the copy holds only the read side of the gate (rollback and deletion wait for it;
   * cuts do not), so a cut does not wait for a copy's fdatasync; the change then holds the write
   * side and runs if the newest checkpoint has every grain it needs. If a cut came in during the
   * copy, the second try copies into the new checkpoint holding the write side (the cut that
   * follows waits for it), so a stream of cuts can never starve a write. Either way the write
   * lands after every cut whose checkpoint got a copy of its grains.
   */
  private async overwrite(offset: number, length: number, kind: 'data' | 'zero', change: () => Promise<void>): Promise<void> {
    await this.gate.enterRead();
    try {
      this.checkOpen();
      await this.copyOnWrite(offset, length, kind);
    } finally {
      this.gate.leaveRead();
    }
    await this.gate.enterWrite();
    try {
      this.checkOpen();
      await this.copyOnWrite(offset, length, kind); // nothing to do unless a cut came in meanwhile
      await change();
    } finally {
      this.gate.leaveWrite();
    }
  }

  /** Discards a range: it reads as zeros afterwards and its space is freed. */
  trim(offset: number, length: number, opts: WriteOptions = {}): Promise<void> {
    return this.writeZeroes(offset, length, opts);
  }

  private async zeroRange(offset: number, length: number, keepAllocated: boolean): Promise<void> {
    await this.copyOnWrite(offset, length, 'zero');
    if (keepAllocated) await this.base.zeroRange(offset, length);
    else await this.base.punchHole(offset, length);
  }

  /** Makes every completed write durable. Concurrent callers share one fdatasync where safe. */
  async flush(): Promise<void> {
    this.checkOpen();
    if (this.readOnly) return;
    // A caller must wait for an fdatasync that starts after it arrived.
    if (this.flushing) {
      this.flushAgain ??= this.flushing
        .catch(() => undefined)
        .then(() => {
          this.flushAgain = null;
          return this.flush();
        });
      return this.flushAgain;
    }
    this.flushing = this.base.datasync().finally(() => {
      this.flushing = null;
    });
    try {
      await this.flushing;
    } catch (err) {
      throw fromSystemError(err, `flush ${this.dir}`);
    }
  }

  /**
   * Copies into the newest checkpoint every grain of the range that it lacks, before the caller
   * overwrites the base there. For 'zero' writes, grains that are holes in the base are skipped:
   * zeroing them changes nothing.
   */
  private async copyOnWrite(offset: number, length: number, kind: 'data' | 'zero'): Promise<void> {
    const newest = this.layers.at(-1);
    if (!newest) return;
    const candidates = await this.uncopied(offset, length, kind);
    if (candidates.length === 0) return;
    await this.tokens.acquire(candidates, () => publish({ type: 'token-wait', dir: this.dir, grains: candidates.length }));
    try {
      const needed = candidates.filter((g) => !newest.store.has(g));
      if (needed.length > 0) await this.copyGrains(newest.store, needed);
    } finally {
      this.tokens.release(candidates);
    }
  }

  /**
   * Grains of the range (ascending) that the newest checkpoint covers but has not copied yet. For
   * 'zero' changes, grains that are holes in the base are left out: zeroing them changes nothing.
   */
  private async uncopied(offset: number, length: number, kind: 'data' | 'zero'): Promise<number[]> {
    const newest = this.layers.at(-1);
    if (!newest) return [];
    const G = this.grainSize;
    const lastCovered = Math.ceil(newest.rec.size / G) - 1;
    const grains: number[] = [];
    const consider = (from: number, to: number): void => {
      const first = Math.floor(from / G);
      const last = Math.min(Math.floor((to - 1) / G), lastCovered);
      for (let g = first; g <= last; g++) {
        if (!newest.store.has(g) && grains.at(-1) !== g) grains.push(g);
      }
    };
    if (kind === 'data') consider(offset, offset + length);
    else for (const e of await this.baseDataExtents(offset, offset + length)) consider(e.offset, e.offset + e.length);
    return grains;
  }

  /** Reads grains (ascending) from the base and appends them to a store, durably. */
  private async copyGrains(store: CheckpointStore, grains: readonly number[]): Promise<void> {
    const G = this.grainSize;
    const items: Array<{ grain: number; data: Buffer | null }> = [];
    for (let i = 0; i < grains.length; ) {
      let j = i + 1;
      while (j < grains.length && (grains[j] as number) === (grains[j - 1] as number) + 1 && j - i < MAX_BATCH_ENTRIES) j++;
      const first = grains[i] as number;
      const run = Buffer.allocUnsafe((j - i) * G);
      await this.base.read(run, first * G);
      for (let k = 0; k < j - i; k++) {
        const data = run.subarray(k * G, (k + 1) * G);
        items.push({ grain: first + k, data: data.equals(this.zeroGrain) ? null : data });
      }
      i = j;
    }
    await store.append(items);
    this.counters.grainsCopied += grains.length;
    publish({ type: 'copy', dir: this.dir, grains: grains.length, bytes: grains.length * G });
  }

  /** Data ranges of the base image within [from, to), per SEEK_DATA/SEEK_HOLE. */
  private async baseDataExtents(from: number, to: number): Promise<Extent[]> {
    const out: Extent[] = [];
    let at = from;
    while (at < to) {
      const data = await this.base.seek(at, 'data');
      if (data < 0 || data >= to) break;
      let hole = await this.base.seek(data, 'hole');
      if (hole < 0 || hole > to) hole = to;
      out.push({ offset: data, length: hole - data });
      at = hole;
    }
    return out;
  }

  // ---------------------------------------------------------------- checkpoint images

  async readCheckpoint(name: string, offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.alloc(length);
    await this.readCheckpointInto(name, buf, offset);
    return buf;
  }

  /**
   * Reads a checkpoint's point-in-time image. Safe at any moment, while the volume is written:
   * grains still in the base are read under their tokens, so a concurrent first write cannot
   * overwrite them between the lookup and the read.
   */
  async readCheckpointInto(name: string, dest: Buffer, offset: number): Promise<void> {
    await this.gate.enterRead();
    try {
      this.checkOpen();
      const i = this.layerIndex(name);
      this.checkRange(offset, dest.length, this.layerAt(i).rec.size);
      const G = this.grainSize;
      const fromBase: Array<{ grain: number; at: number; within: number; length: number }> = [];
      const reads: Promise<void>[] = [];
      for (let at = 0; at < dest.length; ) {
        const abs = offset + at;
        const grain = Math.floor(abs / G);
        const within = abs - grain * G;
        const n = Math.min(G - within, dest.length - at);
        const holder = this.holder(i, grain);
        if (holder) reads.push(holder.store.read(grain, within, dest.subarray(at, at + n)));
        else fromBase.push({ grain, at, within, length: n });
        at += n;
      }
      await Promise.all(reads);
      if (fromBase.length === 0) return;
      const grains = fromBase.map((s) => s.grain);
      await this.tokens.acquire(grains, () => publish({ type: 'token-wait', dir: this.dir, grains: grains.length }));
      try {
        const later: Promise<void>[] = [];
        let run: { at: number; length: number } | null = null;
        const flushRun = (): void => {
          if (run) later.push(this.base.read(dest.subarray(run.at, run.at + run.length), offset + run.at));
          run = null;
        };
        for (const s of fromBase) {
          const holder = this.holder(i, s.grain); // a write may have copied it meanwhile
          if (holder) {
            flushRun();
            later.push(holder.store.read(s.grain, s.within, dest.subarray(s.at, s.at + s.length)));
          } else if (run && run.at + run.length === s.at) {
            run.length += s.length;
          } else {
            flushRun();
            run = { at: s.at, length: s.length };
          }
        }
        flushRun();
        await Promise.all(later);
      } finally {
        this.tokens.release(grains);
      }
    } catch (err) {
      throw fromSystemError(err, `read checkpoint ${name} of ${this.dir}`);
    } finally {
      this.gate.leaveRead();
    }
  }

  /** The oldest layer from index `i` on whose store holds `grain`; null means the base. */
  private holder(i: number, grain: number): Layer | null {
    for (let k = i; k < this.layers.length; k++) {
      const layer = this.layers[k] as Layer;
      if (layer.store.has(grain)) return layer;
    }
    return null;
  }

  // ---------------------------------------------------------------- checkpoint operations

  /**
   * Cuts a checkpoint: O(1) in the volume size (a store header and one metadata replacement).
   * While a transaction is open the cut is deferred until the transaction completes.
   */
  async createCheckpoint(name: string): Promise<CheckpointResult> {
    validateCheckpointName(name);
    return this.exclusive(() => this.checkpointOrDefer(name, false));
  }

  /** Cuts a checkpoint, or records it as deferred while a transaction is open. Holds the mutex. */
  private async checkpointOrDefer(name: string, frozen: boolean): Promise<CheckpointResult> {
    this.checkNameFree(name);
    const tx = this.meta.tx;
    if (tx) {
      const requestedNs = nowNs();
      await this.persist({ ...this.meta, deferred: [...this.meta.deferred, { name, requestedNs }] });
      return { state: 'deferred', deferred: { name, requestedAt: new Date(Number(requestedNs / 1_000_000n)), txid: tx.txid } };
    }
    const layer = await this.cut(name, 0, (m) => m, frozen);
    return { state: 'created', checkpoint: this.describe(layer) };
  }

  /**
   * Quiesces writes and holds them until `thaw()`, so the caller can cut checkpoints (or begin a
   * transaction) on several volumes at one instant relative to their write streams: freeze all,
   * cut all, thaw all. Reads continue. Other metadata operations wait until the thaw.
   */
  async freeze(): Promise<FrozenVolume> {
    let frozen!: (f: FrozenVolume) => void;
    const ready = new Promise<FrozenVolume>((resolve) => {
      frozen = resolve;
    });
    let thawed!: () => void;
    const held = new Promise<void>((resolve) => {
      thawed = resolve;
    });
    const done = this.exclusive(async () => {
      await this.quiesce('freeze', 'writes');
      let open = true;
      const whileFrozen = <T>(fn: () => Promise<T>): Promise<T> => {
        if (!open) return Promise.reject(new EngineError(ErrorCode.FailedPrecondition, `volume ${this.dir} is no longer frozen`));
        return fn();
      };
      frozen({
        createCheckpoint: (name) => {
          validateCheckpointName(name);
          return whileFrozen(() => this.checkpointOrDefer(name, true));
        },
        begin: (txid) => {
          validateTxid(txid);
          return whileFrozen(() => this.beginTransaction(txid, true));
        },
        thaw: () => {
          if (!open) return;
          open = false;
          this.gate.open();
          thawed();
        },
      });
      await held;
    });
    return Promise.race([ready, done.then(() => ready)]);
  }

  /** Cuts a checkpoint with writes quiesced; `amend` adds to the same metadata update. */
  private async cut(name: string, flags: number, amend: (m: VolumeMeta) => VolumeMeta, frozen = false): Promise<Layer> {
    const started = process.hrtime.bigint();
    const id = this.meta.nextCheckpointId;
    // The store exists (normally made ahead of time) before writes are held: the held window
    // is only the drain of in-flight writes and one metadata update.
    const store = await this.takeStore(id);
    try {
      const draining = process.hrtime.bigint();
      if (!frozen) await this.quiesce('cut', 'writes');
      try {
        const drained = process.hrtime.bigint();
        const rec: CheckpointRecord = { id, name, size: this.meta.size, createdNs: nowNs(), flags };
        await this.persist(amend({ ...this.meta, nextCheckpointId: id + 1, checkpoints: [...this.meta.checkpoints, rec] }));
        const layer = { rec, store };
        this.layers.push(layer);
        const now = process.hrtime.bigint();
        const micros = (from: bigint, to: bigint): number => Number((to - from) / 1000n);
        publish({ type: 'cut', dir: this.dir, name, micros: micros(started, now), drainMicros: micros(draining, drained), metaMicros: micros(drained, now) });
        return layer;
      } finally {
        if (!frozen) this.gate.open();
      }
    } catch (err) {
      await store.close().catch(() => undefined);
      await this.io.unlink(store.path).catch(() => undefined);
      throw err;
    } finally {
      this.prepareSpare();
    }
  }

  /**
   * Creates the next checkpoint's store, durably, in the background, so a cut finds it ready. A
   * leftover spare is an orphan to the next open, which deletes it.
   */
  private prepareSpare(): void {
    if (this.readOnly || this.closed || this.spare) return;
    const id = this.meta.nextCheckpointId;
    this.spare = CheckpointStore.create(this.io, path.join(this.dir, storeFileName(id)), id, this.meta.grainShift)
      .then(async (store) => {
        await this.io.syncDir(this.dir);
        return store;
      })
      .catch(() => null); // a failed spare is made again, synchronously, by the cut that needs it
  }

  /** The store for checkpoint `id`: the spare if it was made for that id, else a new one. */
  private async takeStore(id: number): Promise<CheckpointStore> {
    const spare = this.spare ? await this.spare : null;
    this.spare = null;
    if (spare?.checkpointId === id) return spare;
    if (spare) {
      await spare.close().catch(() => undefined);
      await this.io.unlink(spare.path).catch(() => undefined);
    }
    const store = await CheckpointStore.create(this.io, path.join(this.dir, storeFileName(id)), id, this.meta.grainShift);
    await this.io.syncDir(this.dir);
    return store;
  }

  /** Resolves when background work (the spare store) is done; for tests that count I/O. */
  async settled(): Promise<void> {
    await this.spare;
  }

  /** Deletes a checkpoint (or a deferred request for one); every other checkpoint stays byte-exact. */
  deleteCheckpoint(name: string): Promise<void> {
    return this.exclusive(async () => {
      if (this.meta.deferred.some((d) => d.name === name)) {
        await this.persist({ ...this.meta, deferred: this.meta.deferred.filter((d) => d.name !== name) });
        return;
      }
      const i = this.layerIndex(name);
      if (this.meta.tx?.checkpointId === this.layerAt(i).rec.id) {
        throw new EngineError(ErrorCode.FailedPrecondition, `checkpoint ${name} belongs to open transaction ${this.meta.tx.txid}`);
      }
      await this.quiesce('delete', 'all');
      try {
        if (i > 0) {
          await this.persist({ ...this.meta, pending: { kind: PendingKind.Delete, checkpointId: this.layerAt(i).rec.id } });
          await this.recorded(`deletion of checkpoint ${name}`, () => this.removeLayer(i));
        } else {
          await this.removeLayer(i);
        }
      } finally {
        this.gate.open();
      }
    });
  }

  /**
   * Removes layer i, first merging into layer i-1 what it needs. The caller has recorded a
   * pending deletion (when i > 0) and quiesced I/O. `finish` amends the final metadata update.
   */
  private async removeLayer(i: number, finish: (m: VolumeMeta) => VolumeMeta = (m) => m): Promise<void> {
    const victim = this.layerAt(i);
    if (i > 0) await this.mergeInto(this.layerAt(i - 1), victim);
    const remaining = this.meta.checkpoints.filter((c) => c.id !== victim.rec.id);
    await this.persist(finish({ ...this.meta, checkpoints: remaining, pending: null }));
    this.layers.splice(i, 1);
    await victim.store.close().catch(() => undefined);
    await this.io.unlink(victim.store.path).catch(() => undefined);
    await this.addDeferredLayers();
  }

  /** Copies into `older` the grains `newer` holds that `older` lacks (and covers). Idempotent. */
  private async mergeInto(older: Layer, newer: Layer): Promise<void> {
    const limit = Math.ceil(older.rec.size / this.grainSize);
    const missing = [...newer.store.grains()].filter((g) => g < limit && !older.store.has(g)).sort((a, b) => a - b);
    for (let i = 0; i < missing.length; i += MAX_BATCH_ENTRIES) {
      const chunk = missing.slice(i, i + MAX_BATCH_ENTRIES);
      const items = await Promise.all(
        chunk.map(async (grain) => {
          if (!newer.store.hasData(grain)) return { grain, data: null };
          const data = Buffer.allocUnsafe(this.grainSize);
          await newer.store.read(grain, 0, data);
          return { grain, data };
        }),
      );
      await older.store.append(items);
      this.counters.grainsMerged += chunk.length;
    }
  }

  /**
   * Rolls the volume back to a checkpoint: afterwards it reads byte-identical to it (and zeros
   * past the checkpoint's size). Crash-safe: an interrupted rollback completes on the next open.
   */
  rollback(name: string): Promise<RollbackResult> {
    return this.exclusive(async () => {
      const i = this.layerIndex(name);
      if (this.meta.tx) {
        throw new EngineError(ErrorCode.FailedPrecondition, `volume is in transaction ${this.meta.tx.txid}; commit or abort it first`);
      }
      await this.quiesce('rollback', 'all');
      try {
        await this.persist({ ...this.meta, pending: { kind: PendingKind.Rollback, checkpointId: this.layerAt(i).rec.id } });
        return await this.recorded(`rollback to ${name}`, async () => {
          const restoredBytes = await this.restoreTo(i);
          await this.persist({ ...this.meta, pending: null });
          return { restoredBytes };
        });
      } finally {
        this.gate.open();
      }
    });
  }

  /** Writes layer i's image back into the base (I/O quiesced by the caller). Idempotent. */
  private async restoreTo(i: number): Promise<number> {
    const target = this.layerAt(i);
    const G = this.grainSize;
    const coveredGrains = Math.ceil(target.rec.size / G);
    const changed = new Set<number>();
    for (let k = i; k < this.layers.length; k++) {
      for (const g of this.layerAt(k).store.grains()) if (g < coveredGrains) changed.add(g);
    }
    const grains = [...changed].sort((a, b) => a - b);
    let restored = 0;
    let done = 0;
    const parallel = 32;
    for (let n = 0; n < grains.length; n += parallel) {
      await Promise.all(
        grains.slice(n, n + parallel).map(async (grain) => {
          const holder = this.holder(i, grain) as Layer;
          const offset = grain * G;
          const length = Math.min(G, this.meta.size - offset);
          if (!holder.store.hasData(grain)) {
            await this.zeroRange(offset, length, false);
          } else {
            const data = Buffer.allocUnsafe(G);
            await holder.store.read(grain, 0, data);
            await this.copyOnWrite(offset, length, 'data');
            await this.base.write(data.subarray(0, length), offset);
          }
          restored += length;
          this.counters.grainsRestored++;
          publish({ type: 'rollback-progress', dir: this.dir, checkpoint: target.rec.name, done: ++done, total: grains.length });
        }),
      );
    }
    // Past the checkpoint's size (the volume grew since): zero whatever holds data.
    const tailStart = coveredGrains * G;
    if (this.meta.size > tailStart) {
      for (const e of await this.baseDataExtents(tailStart, this.meta.size)) {
        await this.zeroRange(e.offset, e.length, false);
        restored += e.length;
      }
    }
    await this.base.datasync();
    return restored;
  }

  /** Grows the volume. Checkpoints keep their own sizes. */
  async expand(newSize: number): Promise<void> {
    checkSize(newSize, 'new size');
    return this.exclusive(async () => {
      if (newSize < this.meta.size) throw invalid(`cannot shrink from ${this.meta.size} to ${newSize} bytes`);
      if (newSize === this.meta.size) return;
      await this.quiesce('expand', 'writes');
      try {
        await this.base.truncate(newSize);
        await this.base.datasync();
        await this.persist({ ...this.meta, size: newSize });
      } finally {
        this.gate.open();
      }
    });
  }

  // ---------------------------------------------------------------- allocation maps

  /**
   * Ranges that may hold data in the live volume (name omitted) or in a checkpoint's image, within
   * [from, to) (default: the whole image). Conservative: a range is left out only where no layer
   * holds data for it. Costs O(extents + copied grains), or O(grains in the range) if fewer.
   */
  async allocated(name?: string, from = 0, to = Number.POSITIVE_INFINITY): Promise<Extent[]> {
    await this.gate.enterRead();
    try {
      this.checkOpen();
      if (name === undefined) return normalize(await this.baseDataExtents(from, Math.min(to, this.meta.size)));
      const i = this.layerIndex(name);
      const size = this.layerAt(i).rec.size;
      const end = Math.min(to, size);
      if (from >= end) return [];
      const G = this.grainSize;
      const first = Math.floor(from / G);
      const last = Math.ceil(end / G) - 1;
      // Which grains of the range a store answers for, and whether with data.
      const resolved = new Map<number, boolean>();
      const stored = this.layers.slice(i).reduce((n, l) => n + l.store.count, 0);
      if (last - first + 1 <= stored) {
        for (let g = first; g <= last; g++) {
          const holder = this.holder(i, g);
          if (holder) resolved.set(g, holder.store.hasData(g));
        }
      } else {
        for (let k = i; k < this.layers.length; k++) {
          const store = this.layerAt(k).store;
          for (const g of store.grains()) if (g >= first && g <= last && !resolved.has(g)) resolved.set(g, store.hasData(g));
        }
      }
      const inRange = (extents: Extent[]): Extent[] =>
        extents
          .map((e) => ({ offset: Math.max(e.offset, from), length: Math.min(e.offset + e.length, end) - Math.max(e.offset, from) }))
          .filter((e) => e.length > 0);
      const overlay = grainExtents(resolved.keys(), G, size);
      const dataGrains = [...resolved].filter(([, hasData]) => hasData).map(([g]) => g);
      const fromBase = subtract(normalize(await this.baseDataExtents(from, Math.min(end, this.meta.size))), overlay);
      return normalize(inRange([...fromBase, ...grainExtents(dataGrains, G, size)]));
    } finally {
      this.gate.leaveRead();
    }
  }

  /**
   * Ranges that changed between checkpoint `from` and checkpoint `to` (or the live volume when
   * `to` is omitted): the grains copied after `from` was cut and before `to` was. O(changed grains).
   */
  changed(from: string, to?: string): Extent[] {
    this.checkOpen();
    const a = this.layerIndex(from);
    const b = to === undefined ? this.layers.length : this.layerIndex(to);
    if (b < a) throw invalid(`checkpoint ${to} is older than ${from}`);
    const limit = to === undefined ? this.meta.size : this.layerAt(b).rec.size;
    const grains = new Set<number>();
    for (let k = a; k < b; k++) for (const g of this.layerAt(k).store.grains()) grains.add(g);
    return clip(grainExtents(grains, this.grainSize, limit), limit);
  }

  /**
   * Copies a checkpoint image (or, with no name, a point-in-time image of the live volume taken
   * through a temporary checkpoint) into a new volume, copying only allocated ranges.
   */
  async clone(destDir: string, opts: { checkpoint?: string; grainSize?: number; io?: FileIO } = {}): Promise<Volume> {
    this.checkOpen();
    let name = opts.checkpoint;
    let temporary: string | null = null;
    if (name === undefined) {
      if (this.meta.tx) throw new EngineError(ErrorCode.FailedPrecondition, `volume is in transaction ${this.meta.tx.txid}`);
      temporary = `${CLONE_PREFIX}${randomBytes(8).toString('hex')}`;
      await this.exclusive(() => this.cut(temporary as string, CheckpointFlag.Internal, (m) => m));
      name = temporary;
    }
    try {
      const size = this.checkpoint(name).size;
      const dest = await Volume.create(destDir, { size, grainSize: opts.grainSize ?? this.grainSize, io: opts.io ?? this.io });
      try {
        await this.copyImage(name, (buf, offset) => dest.write(offset, buf));
        await dest.flush();
        return dest;
      } catch (err) {
        await dest.close().catch(() => undefined);
        await this.io.rmdir(destDir).catch(() => undefined);
        throw err;
      }
    } finally {
      if (temporary) {
        const tmp = temporary;
        await this.exclusive(async () => {
          await this.quiesce('delete', 'all');
          try {
            await this.removeLayer(this.layerIndex(tmp));
          } finally {
            this.gate.open();
          }
        }).catch(() => undefined);
      }
    }
  }

  /** Feeds the allocated ranges of an image (live when name is null) to `sink`, in chunks. */
  async copyImage(name: string | null, sink: (buf: Buffer, offset: number) => Promise<void>, chunk = 4 << 20): Promise<void> {
    const extents = await this.allocated(name ?? undefined);
    for (const e of extents) {
      for (let at = e.offset; at < e.offset + e.length; at += chunk) {
        const n = Math.min(chunk, e.offset + e.length - at);
        const buf = name === null ? await this.read(at, n) : await this.readCheckpoint(name, at, n);
        if (!this.isZero(buf)) await sink(buf, at);
      }
    }
  }

  // ---------------------------------------------------------------- transactions (participant)

  /** Begins a transaction: cuts its checkpoint. Idempotent for the same txid. */
  async begin(txid: string): Promise<TransactionInfo> {
    validateTxid(txid);
    return this.exclusive(() => this.beginTransaction(txid, false));
  }

  private async beginTransaction(txid: string, frozen: boolean): Promise<TransactionInfo> {
    const tx = this.meta.tx;
    if (tx) {
      if (tx.txid === txid) return this.transaction() as TransactionInfo;
      throw new EngineError(ErrorCode.FailedPrecondition, `volume is already in transaction ${tx.txid}`);
    }
    const done = this.meta.history.find((h) => h.txid === txid);
    if (done) throw new EngineError(ErrorCode.FailedPrecondition, `transaction ${txid} already ${outcomeName(done.outcome)}`);
    await this.cut(
      `${TX_PREFIX}${txid}`,
      CheckpointFlag.Internal,
      (m) => ({ ...m, tx: { txid, state: TxState.Open, checkpointId: m.nextCheckpointId - 1 } }),
      frozen,
    );
    return this.transaction() as TransactionInfo;
  }

  /** Votes yes: makes every write so far durable and records PREPARED durably. Idempotent. */
  async prepare(txid: string): Promise<TransactionInfo> {
    validateTxid(txid);
    return this.exclusive(async () => {
      const tx = this.requireTx(txid, 'prepare');
      if (tx.state !== TxState.Open && tx.state !== TxState.Prepared) {
        throw new EngineError(ErrorCode.FailedPrecondition, `transaction ${txid} is ${txStateNames[tx.state]}`);
      }
      await this.quiesce('prepare', 'writes');
      try {
        await this.base.datasync();
        if (tx.state !== TxState.Prepared) await this.persist({ ...this.meta, tx: { ...tx, state: TxState.Prepared } });
      } finally {
        this.gate.open();
      }
      return this.transaction() as TransactionInfo;
    });
  }

  /** Commits: releases the transaction's checkpoint, then cuts deferred checkpoints. Idempotent. */
  async commit(txid: string): Promise<void> {
    validateTxid(txid);
    return this.exclusive(async () => {
      const done = this.meta.history.find((h) => h.txid === txid);
      if (done?.outcome === TxOutcome.Committed) return;
      if (done) throw new EngineError(ErrorCode.FailedPrecondition, `transaction ${txid} was aborted`);
      const tx = this.requireTx(txid, 'commit');
      if (tx.state === TxState.Aborting) throw new EngineError(ErrorCode.FailedPrecondition, `transaction ${txid} is aborting`);
      await this.quiesce('commit', 'all');
      try {
        const i = this.layerIndexById(tx.checkpointId);
        await this.persist({
          ...this.meta,
          tx: { ...tx, state: TxState.Committing },
          pending: i > 0 ? { kind: PendingKind.Delete, checkpointId: tx.checkpointId } : null,
        });
        await this.recorded(`commit of ${txid}`, () => this.removeLayer(i, (m) => finishTransaction(m, txid, TxOutcome.Committed)));
      } finally {
        this.gate.open();
      }
    });
  }

  /**
   * Aborts: rolls back to the transaction's checkpoint, releases it, then cuts deferred
   * checkpoints. Idempotent; aborting a transaction this volume never began records the outcome
   * (presumed abort), so a late begin() of it is refused.
   */
  async abort(txid: string): Promise<void> {
    validateTxid(txid);
    return this.exclusive(async () => {
      const done = this.meta.history.find((h) => h.txid === txid);
      if (done?.outcome === TxOutcome.Aborted) return;
      if (done) throw new EngineError(ErrorCode.FailedPrecondition, `transaction ${txid} was committed`);
      const tx = this.meta.tx;
      if (!tx || tx.txid !== txid) {
        if (tx) throw new EngineError(ErrorCode.FailedPrecondition, `volume is in transaction ${tx.txid}, not ${txid}`);
        await this.persist(finishTransaction(this.meta, txid, TxOutcome.Aborted));
        return;
      }
      if (tx.state === TxState.Committing) throw new EngineError(ErrorCode.FailedPrecondition, `transaction ${txid} is committing`);
      await this.quiesce('abort', 'all');
      try {
        await this.persist({
          ...this.meta,
          tx: { ...tx, state: TxState.Aborting },
          pending: { kind: PendingKind.Rollback, checkpointId: tx.checkpointId },
        });
        await this.recorded(`abort of ${txid}`, async () => {
          await this.restoreTo(this.layerIndexById(tx.checkpointId));
          const i = this.layerIndexById(tx.checkpointId);
          await this.persist({ ...this.meta, pending: i > 0 ? { kind: PendingKind.Delete, checkpointId: tx.checkpointId } : null });
          await this.removeLayer(i, (m) => finishTransaction(m, txid, TxOutcome.Aborted));
        });
      } finally {
        this.gate.open();
      }
    });
  }

  private requireTx(txid: string, what: string): NonNullable<VolumeMeta['tx']> {
    const tx = this.meta.tx;
    if (!tx || tx.txid !== txid) {
      throw new EngineError(ErrorCode.FailedPrecondition, tx ? `volume is in transaction ${tx.txid}, not ${txid}` : `cannot ${what}: no transaction ${txid}`);
    }
    return tx;
  }

  /**
   * Cuts the checkpoints deferred during a transaction, once none is open. Each cut removes its
   * request in the same metadata update, so a crash never cuts one twice or loses one.
   */
  private async addDeferredLayers(): Promise<void> {
    while (!this.meta.tx && this.meta.deferred.length > 0) {
      const [next, ...rest] = this.meta.deferred as [VolumeMeta['deferred'][number], ...VolumeMeta['deferred']];
      const id = this.meta.nextCheckpointId;
      const store = await this.takeStore(id);
      const rec: CheckpointRecord = { id, name: next.name, size: this.meta.size, createdNs: nowNs(), flags: 0 };
      try {
        await this.persist({ ...this.meta, nextCheckpointId: id + 1, checkpoints: [...this.meta.checkpoints, rec], deferred: rest });
      } catch (err) {
        await store.close().catch(() => undefined);
        await this.io.unlink(store.path).catch(() => undefined);
        throw err;
      }
      this.layers.push({ rec, store });
      this.prepareSpare();
    }
  }

  // ---------------------------------------------------------------- helpers

  /** Closes the gate to writes (cuts, expand) or to all I/O (rollback, deletion), reporting waits. */
  private quiesce(op: string, scope: 'writes' | 'all'): Promise<void> {
    const onWait = (writers: number, readers: number): void => publish({ type: 'quiesce', dir: this.dir, op, writers, readers });
    return scope === 'writes' ? this.gate.closeWrites(onWait) : this.gate.closeAll(onWait);
  }

  private isZero(buf: Buffer): boolean {
    const z = this.zeroGrain;
    for (let at = 0; at < buf.length; at += z.length) {
      const part = buf.subarray(at, at + z.length);
      if (!part.equals(part.length === z.length ? z : z.subarray(0, part.length))) return false;
    }
    return true;
  }

  /** Runs a metadata operation alone; refuses on a closed or read-only volume. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    return this.mutex.run(async () => {
      this.checkWritable();
      this.checkOpen();
      return fn();
    });
  }

  private async persist(next: VolumeMeta): Promise<void> {
    // Each store's durable length goes along: a later open refuses a store found shorter.
    const kept = new Set(next.checkpoints.map((c) => c.id));
    const storeLengths = new Map(this.layers.filter((l) => kept.has(l.rec.id)).map((l) => [l.rec.id, l.store.bytes] as const));
    const meta = { ...next, generation: this.meta.generation + 1n, storeLengths };
    if (!this.metaFile) throw new Error('BUG: metadata update on a read-only volume');
    try {
      await this.metaFile.write(meta);
    } catch (err) {
      throw fromSystemError(err, `update ${this.dir}/volume.meta`);
    }
    this.meta = meta;
    this.counters.metaWrites++;
  }

  private checkNameFree(name: string): void {
    if (this.layers.some((l) => l.rec.name === name) || this.meta.deferred.some((d) => d.name === name)) {
      throw new EngineError(ErrorCode.AlreadyExists, `checkpoint ${name} already exists`);
    }
  }

  private layerIndex(name: string): number {
    const i = this.layers.findIndex((l) => l.rec.name === name);
    if (i < 0) throw new EngineError(ErrorCode.CheckpointNotFound, `no checkpoint ${name} in ${this.dir}`);
    return i;
  }

  private layerIndexById(id: number): number {
    const i = this.layers.findIndex((l) => l.rec.id === id);
    if (i < 0) throw new EngineError(ErrorCode.Corrupt, `${this.dir}: metadata names missing checkpoint id ${id}`);
    return i;
  }

  private layerAt(i: number): Layer {
    const layer = this.layers[i];
    if (!layer) throw new Error(`BUG: no layer ${i}`);
    return layer;
  }

  private checkOpen(): void {
    if (this.closed) throw new EngineError(ErrorCode.Closed, `volume ${this.dir} is closed`);
    if (this.interrupted) throw this.interrupted;
  }

  /**
   * Runs the steps of an operation whose intent is already recorded in volume.meta. If a step
   * fails, the volume stops serving I/O: reopening it finishes the operation from the record.
   */
  private async recorded<T>(what: string, steps: () => Promise<T>): Promise<T> {
    try {
      return await steps();
    } catch (err) {
      const cause = fromSystemError(err, what);
      this.interrupted = new EngineError(
        ErrorCode.FailedPrecondition,
        `${what} of ${this.dir} was interrupted (${cause.message}); reopen the volume to complete it`,
        { cause },
      );
      throw cause;
    }
  }

  private checkWritable(): void {
    if (this.readOnly) throw new EngineError(ErrorCode.ReadOnly, `volume ${this.dir} is open read-only`);
  }

  private checkRange(offset: number, length: number, limit: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw invalid(`bad range offset=${offset} length=${length}`);
    }
    if (offset + length > limit) {
      throw new EngineError(ErrorCode.OutOfRange, `range ${offset}+${length} is past the end (${limit} bytes)`);
    }
  }
}

/** Metadata after a transaction ends: no transaction, its outcome recorded for idempotent retries. */
function finishTransaction(m: VolumeMeta, txid: string, outcome: TxOutcome): VolumeMeta {
  const history = [...m.history.filter((h) => h.txid !== txid), { txid, outcome }].slice(-TX_HISTORY_LIMIT);
  return { ...m, tx: null, history };
}

function outcomeName(outcome: TxOutcome): string {
  return outcome === TxOutcome.Committed ? 'committed' : 'aborted';
}

/** What volume.meta says, read without the volume's lock (the file is only ever replaced whole). */
export interface VolumeSummary {
  readonly dir: string;
  readonly size: number;
  readonly grainSize: number;
  readonly checkpoints: ReadonlyArray<{ readonly name: string; readonly id: number; readonly size: number; readonly createdAt: Date; readonly internal: boolean }>;
  readonly deferred: ReadonlyArray<{ readonly name: string; readonly requestedAt: Date }>;
  readonly transaction: { readonly txid: string; readonly state: TransactionState } | null;
  /** An operation a crash interrupted, finished by the next writable open. */
  readonly pending: 'rollback' | 'delete' | null;
}

/**
 * Reads a volume's metadata without opening it: safe while another process serves the volume,
 * and cheap enough to list every volume on a node.
 */
export async function inspectVolume(dir: string, io: FileIO = nodeFileIO): Promise<VolumeSummary> {
  if (!(await io.exists(path.join(dir, META_FILE)))) throw new EngineError(ErrorCode.VolumeNotFound, `${dir} holds no flashcsi volume`);
  const meta = await MetaFile.read(io, dir);
  const ms = (ns: bigint): Date => new Date(Number(ns / 1_000_000n));
  return {
    dir,
    size: meta.size,
    grainSize: 1 << meta.grainShift,
    checkpoints: meta.checkpoints.map((c) => ({ name: c.name, id: c.id, size: c.size, createdAt: ms(c.createdNs), internal: (c.flags & CheckpointFlag.Internal) !== 0 })),
    deferred: meta.deferred.map((d) => ({ name: d.name, requestedAt: ms(d.requestedNs) })),
    transaction: meta.tx ? { txid: meta.tx.txid, state: txStateNames[meta.tx.state] } : null,
    pending: meta.pending ? (meta.pending.kind === PendingKind.Rollback ? 'rollback' : 'delete') : null,
  };
}

/**
 * Refuses metadata older than the data files. A store for a checkpoint id not yet issued
 * (≥ next_checkpoint_id) is the spare: header only. If one holds batches, a newer generation of
 * volume.meta recorded that checkpoint and writes were copied into it, so these metadata are a
 * stale fallback (the newer slot was damaged after it was durable, docs/format.md §2.4): serving
 * them would give older checkpoints wrong data for the grains copied only into the lost one.
 */
async function refuseStaleMeta(io: FileIO, dir: string, meta: VolumeMeta, stores: readonly StoreFile[]): Promise<void> {
  for (const { name, id } of stores) {
    if (id < meta.nextCheckpointId) continue;
    const f = await io.open(path.join(dir, name), 'read');
    const size = await f.size().finally(() => f.close());
    if (size > STORE_HEADER_LENGTH) {
      throw new EngineError(
        ErrorCode.Corrupt,
        `${dir}/volume.meta: corrupt metadata (the newest generation is damaged: checkpoint store ${name} holds copied data, but the surviving generation does not know its checkpoint)`,
      );
    }
  }
}

/** Deletes store files no checkpoint refers to (a crash between creating and recording one). */
async function removeOrphans(io: FileIO, dir: string, meta: VolumeMeta, stores: readonly StoreFile[]): Promise<void> {
  const known = new Set(meta.checkpoints.map((c) => c.id));
  for (const { name, id } of stores) if (!known.has(id)) await io.unlink(path.join(dir, name));
}

interface StoreFile {
  readonly name: string;
  readonly id: number;
}

/** The checkpoint store files in a volume directory, with the checkpoint id each is named for. */
async function listStoreFiles(io: FileIO, dir: string): Promise<StoreFile[]> {
  const out: StoreFile[] = [];
  for (const name of await io.readdir(dir)) {
    const m = STORE_PATTERN.exec(name);
    if (m) out.push({ name, id: Number(m[1]) });
  }
  return out;
}
