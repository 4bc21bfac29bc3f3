/**
 * The inside of one open volume, shared by the modules that act on it. Volume (volume.ts) is the
 * public face; it owns one VolumeCore and hands it to:
 *   cow.ts           the copy-on-write data path (live reads, writes, zeroes, flush);
 *   images.ts        checkpoint images and allocation maps (reads of the past);
 *   chain.ts         the checkpoint chain: cut, deferred cuts, delete + merge, rollback;
 *   transactions.ts  the two-phase-commit participant;
 *   recovery.ts      what open() checks and finishes, and lock-free inspection.
 *
 * Design notes
 * - State. `meta` is the durable truth (volume.meta, two slots: meta-file.ts); `layers` mirrors its
 *   checkpoint list, oldest first, each with its open store. Every change of `meta` goes through
 *   persist(), one atomic update that also records each store's durable length, so a later open
 *   refuses a store found shorter than its metadata says.
 * - Concurrency, in three parts that never nest the other way round:
 *   the mutex (mutex.ts) runs metadata operations one at a time (exclusive());
 *   the gate (gate.ts) lets such an operation quiesce writes (cuts, expand, prepare) or all I/O
 *   (rollback, deletion, commit, abort) without a lock on the I/O path (quiesce());
 *   grain tokens (tokens.ts) keep a first write's copy and a checkpoint reader of the same grain
 *   apart.
 * - Failure. A multi-step operation records its intent in `meta.pending` (or `meta.tx`) before
 *   its first step and runs the steps through recorded(): if one fails, the volume refuses all
 *   further I/O (`interrupted`) until it is reopened, and open() finishes the operation from the
 *   record (recovery.ts). Every step is idempotent for that reason.
 */
import { EngineError, ErrorCode, fromSystemError } from './errors.js';
import type { SharedVolume } from './fast-path.js';
import type { FileIO, IoFile } from './file-io.js';
import { CheckpointFlag, TxState, type CheckpointRecord, type VolumeMeta } from './format.js';
import { Gate } from './gate.js';
import type { MetaFile } from './meta-file.js';
import { Mutex } from './mutex.js';
import { publish } from './events.js';
import type { CheckpointStore } from './store.js';
import { TokenTable } from './tokens.js';

export const BASE_FILE = 'base.img';
export const LOCK_FILE = 'lock';
export const STORE_PATTERN = /^cp-(\d{8,})\.store$/;

export function storeFileName(id: number): string {
  return `cp-${String(id).padStart(8, '0')}.store`;
}

/** 2^53 bytes would overflow exact JS numbers; 8 PiB is far beyond any single-node volume. */
export const MAX_VOLUME_SIZE = 2 ** 53 - 2 ** 20;

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

export type TransactionState = 'open' | 'prepared' | 'committing' | 'aborting';

export const txStateNames: Record<TxState, TransactionState> = {
  [TxState.Open]: 'open',
  [TxState.Prepared]: 'prepared',
  [TxState.Committing]: 'committing',
  [TxState.Aborting]: 'aborting',
};

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

/** A checkpoint as the open volume holds it: its record and its store. */
export interface Layer {
  rec: CheckpointRecord;
  readonly store: CheckpointStore;
}

export function invalid(message: string): EngineError {
  return new EngineError(ErrorCode.InvalidArgument, message);
}

export function checkSize(size: number, what: string): void {
  if (!Number.isSafeInteger(size) || size <= 0 || size % 512 !== 0 || size > MAX_VOLUME_SIZE) {
    throw invalid(`${what} ${size} must be a positive multiple of 512 bytes, at most ${MAX_VOLUME_SIZE}`);
  }
}

export function nowNs(): bigint {
  return BigInt(Date.now()) * 1_000_000n;
}

export class VolumeCore {
  readonly counters: VolumeCounters = { grainsCopied: 0, grainsRestored: 0, grainsMerged: 0, metaWrites: 0 };
  readonly tokens = new TokenTable();
  readonly gate = new Gate();
  readonly mutex = new Mutex();
  /** One grain of zeros, to recognise zero data. */
  readonly zeroGrain: Buffer;
  closed = false;
  /** Set when a recorded multi-step operation failed midway: only a reopen can finish it. */
  interrupted: EngineError | null = null;
  flushing: Promise<void> | null = null;
  flushAgain: Promise<void> | null = null;
  /** The next checkpoint's store, being made ahead of time (chain.ts prepareSpare). */
  spare: Promise<CheckpointStore | null> | null = null;
  /** What open() finished (recovery.ts), for info(). */
  readonly recovered: string[] = [];
  /** State shared with worker threads, once Volume.fastPath() was asked for (fast-path.ts). */
  shared: SharedVolume | null = null;

  constructor(
    readonly dir: string,
    readonly io: FileIO,
    private current: VolumeMeta,
    /** Null when read-only. */
    readonly metaFile: MetaFile | null,
    /** Oldest first, as `meta.checkpoints`. */
    readonly layers: Layer[],
    readonly base: IoFile,
    /** The base image opened with O_DSYNC, for FUA writes. Null when read-only. */
    readonly baseSync: IoFile | null,
    readonly lock: IoFile,
    readonly readOnly: boolean,
    readonly wasDirty: boolean,
  ) {
    this.zeroGrain = Buffer.alloc(1 << current.grainShift);
  }

  /** The metadata as last persisted. */
  get meta(): VolumeMeta {
    return this.current;
  }

  get grainSize(): number {
    return 1 << this.current.grainShift;
  }

  /** Replaces volume.meta atomically with `next` (plus a new generation and the store lengths). */
  async persist(next: VolumeMeta): Promise<void> {
    // Each store's durable length goes along: a later open refuses a store found shorter.
    const kept = new Set(next.checkpoints.map((c) => c.id));
    const storeLengths = new Map(this.layers.filter((l) => kept.has(l.rec.id)).map((l) => [l.rec.id, l.store.bytes] as const));
    const meta = { ...next, generation: this.current.generation + 1n, storeLengths };
    if (!this.metaFile) throw new Error('BUG: metadata update on a read-only volume');
    try {
      await this.metaFile.write(meta);
    } catch (err) {
      throw fromSystemError(err, `update ${this.dir}/volume.meta`);
    }
    this.current = meta;
    this.counters.metaWrites++;
  }

  /** Runs a metadata operation alone; refuses on a closed or read-only volume. */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    return this.mutex.run(async () => {
      this.checkWritable();
      this.checkOpen();
      return fn();
    });
  }

  /** Closes the gate to writes (cuts, expand) or to all I/O (rollback, deletion), reporting waits. */
  quiesce(op: string, scope: 'writes' | 'all'): Promise<void> {
    const onWait = (writers: number, readers: number): void => publish({ type: 'quiesce', dir: this.dir, op, writers, readers });
    return scope === 'writes' ? this.gate.closeWrites(onWait) : this.gate.closeAll(onWait);
  }

  /**
   * Runs the steps of an operation whose intent is already recorded in volume.meta. If a step
   * fails, the volume stops serving I/O: reopening it finishes the operation from the record.
   */
  async recorded<T>(what: string, steps: () => Promise<T>): Promise<T> {
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

  checkOpen(): void {
    if (this.closed) throw new EngineError(ErrorCode.Closed, `volume ${this.dir} is closed`);
    if (this.interrupted) throw this.interrupted;
  }

  checkWritable(): void {
    if (this.readOnly) throw new EngineError(ErrorCode.ReadOnly, `volume ${this.dir} is open read-only`);
  }

  checkRange(offset: number, length: number, limit: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw invalid(`bad range offset=${offset} length=${length}`);
    }
    if (offset + length > limit) {
      throw new EngineError(ErrorCode.OutOfRange, `range ${offset}+${length} is past the end (${limit} bytes)`);
    }
  }

  checkNameFree(name: string): void {
    if (this.layers.some((l) => l.rec.name === name) || this.current.deferred.some((d) => d.name === name)) {
      throw new EngineError(ErrorCode.AlreadyExists, `checkpoint ${name} already exists`);
    }
  }

  layerIndex(name: string): number {
    const i = this.layers.findIndex((l) => l.rec.name === name);
    if (i < 0) throw new EngineError(ErrorCode.CheckpointNotFound, `no checkpoint ${name} in ${this.dir}`);
    return i;
  }

  layerIndexById(id: number): number {
    const i = this.layers.findIndex((l) => l.rec.id === id);
    if (i < 0) throw new EngineError(ErrorCode.Corrupt, `${this.dir}: metadata names missing checkpoint id ${id}`);
    return i;
  }

  layerAt(i: number): Layer {
    const layer = this.layers[i];
    if (!layer) throw new Error(`BUG: no layer ${i}`);
    return layer;
  }

  /** The oldest layer from index `i` on whose store holds `grain`; null means the base. */
  holder(i: number, grain: number): Layer | null {
    for (let k = i; k < this.layers.length; k++) {
      const layer = this.layers[k] as Layer;
      if (layer.store.has(grain)) return layer;
    }
    return null;
  }

  describe(l: Layer): CheckpointInfo {
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

  isZero(buf: Buffer): boolean {
    const z = this.zeroGrain;
    for (let at = 0; at < buf.length; at += z.length) {
      const part = buf.subarray(at, at + z.length);
      if (!part.equals(part.length === z.length ? z : z.subarray(0, part.length))) return false;
    }
    return true;
  }
}
