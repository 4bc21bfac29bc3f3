/**
 * One way to act on a volume, whoever holds it. A controller, group or metadata operation first
 * opens the engine volume itself (`Volume.open`, which takes the volume's exclusive lock and runs
 * crash recovery) and closes it when done. If the engine answers LOCKED, the volume is being served
 * (it is staged on this node): the operation goes to the `flashcsi serve` process that holds it,
 * through the control socket named in the volume's serve.json. VolumeHandle hides the difference.
 *
 * Handles are short-lived: open, act, close. The plugin never keeps a volume open between calls,
 * so NodeStageVolume can always start the volume's server.
 */
import { Volume, isEngineError, ErrorCode, subscribeEngineEvents, type CheckpointResult, type Extent } from '../engine/index.js';
import { ControlClient, readServeInfo } from '../nbd/control.js';
import { CsiError, CsiErrorCode } from './errors.js';

/** A checkpoint as the CSI layer needs it (Dates survive the control socket as strings). */
export interface CheckpointView {
  readonly name: string;
  readonly size: number;
  readonly createdAt: Date;
}

export interface VolumeView {
  readonly size: number;
  readonly grainSize: number;
  /** User checkpoints, oldest first (internal ones left out). */
  readonly checkpoints: readonly CheckpointView[];
  /** Checkpoints requested during a transaction, cut when it ends. */
  readonly deferred: readonly { readonly name: string; readonly txid: string }[];
  readonly transaction: { readonly txid: string; readonly state: string } | null;
}

/** A volume whose writes are held: cut checkpoints (or begin a transaction) under it, then thaw. */
export interface FrozenHandle {
  checkpoint(name: string): Promise<CheckpointResult>;
  begin(txid: string): Promise<void>;
  /** Lets writes through again; idempotent. */
  thaw(): Promise<void>;
}

/** A transaction participant's steps on a volume (docs/format.md §6.4); each is idempotent. */
export type TransactionStep = 'begin' | 'prepare' | 'commit' | 'abort';

/** An open volume: local (this process holds the lock) or served (via its control socket). */
export interface VolumeHandle {
  readonly mode: 'local' | 'served';
  view(): Promise<VolumeView>;
  createCheckpoint(name: string): Promise<CheckpointResult>;
  /** Deletes a checkpoint, or a still-deferred request for one. */
  deleteCheckpoint(name: string): Promise<void>;
  expand(size: number): Promise<void>;
  /** Data ranges of a checkpoint (or of the live volume). */
  allocated(checkpoint?: string): Promise<Extent[]>;
  /** Ranges changed from checkpoint `from` to checkpoint `to`. O(changed grains). */
  changed(from: string, to: string): Promise<Extent[]>;
  /** Copies a checkpoint (or a point-in-time image of the live volume) into a new volume at `dest`. */
  clone(dest: string, checkpoint?: string): Promise<{ readonly size: number }>;
  /** Holds the volume's writes until thaw(), or until `timeoutMs` passes (served volumes). */
  freeze(timeoutMs?: number): Promise<FrozenHandle>;
  transaction(step: TransactionStep, txid: string): Promise<void>;
  /**
   * Rolls the volume back to a checkpoint, in place. Only for a volume nobody serves (a mounted
   * file system must never change under its user): a served one is FAILED_PRECONDITION.
   */
  rollback(checkpoint: string, onProgress?: (restoredGrains: number, totalGrains: number) => void): Promise<{ readonly restoredBytes: number }>;
  close(): Promise<void>;
}

/** Opens volumes for one operation; `withVolume` closes them again. */
export interface VolumeAccess {
  open(dir: string): Promise<VolumeHandle>;
}

function viewOf(checkpoints: readonly { name: string; size: number; createdAt: Date | string; internal: boolean }[]): CheckpointView[] {
  return checkpoints.filter((c) => !c.internal).map((c) => ({ name: c.name, size: c.size, createdAt: new Date(c.createdAt) }));
}

class LocalHandle implements VolumeHandle {
  readonly mode = 'local';
  constructor(private readonly volume: Volume) {}

  async view(): Promise<VolumeView> {
    const tx = this.volume.transaction();
    return {
      size: this.volume.size,
      grainSize: this.volume.grainSize,
      checkpoints: viewOf(this.volume.checkpoints({ includeInternal: true })),
      deferred: this.volume.deferredCheckpoints().map((d) => ({ name: d.name, txid: d.txid })),
      transaction: tx === null ? null : { txid: tx.txid, state: tx.state },
    };
  }

  createCheckpoint(name: string): Promise<CheckpointResult> {
    return this.volume.createCheckpoint(name);
  }

  deleteCheckpoint(name: string): Promise<void> {
    return this.volume.deleteCheckpoint(name);
  }

  expand(size: number): Promise<void> {
    return this.volume.expand(size);
  }

  allocated(checkpoint?: string): Promise<Extent[]> {
    return this.volume.allocated(checkpoint);
  }

  async changed(from: string, to: string): Promise<Extent[]> {
    return this.volume.changed(from, to);
  }

  async clone(dest: string, checkpoint?: string): Promise<{ size: number }> {
    const copy = await this.volume.clone(dest, checkpoint === undefined ? {} : { checkpoint });
    const size = copy.size;
    await copy.close();
    return { size };
  }

  async freeze(): Promise<FrozenHandle> {
    // The freeze lasts while this process holds the volume open; the caller bounds it.
    const frozen = await this.volume.freeze();
    return {
      checkpoint: (name) => frozen.createCheckpoint(name),
      begin: async (txid) => {
        await frozen.begin(txid);
      },
      thaw: async () => frozen.thaw(),
    };
  }

  async transaction(step: TransactionStep, txid: string): Promise<void> {
    await this.volume[step](txid);
  }

  async rollback(checkpoint: string, onProgress?: (restoredGrains: number, totalGrains: number) => void): Promise<{ restoredBytes: number }> {
    const dir = this.volume.dir;
    const stop = onProgress
      ? subscribeEngineEvents((e) => {
          if (e.type === 'rollback-progress' && e.dir === dir) onProgress(e.done, e.total);
        })
      : () => undefined;
    try {
      return await this.volume.rollback(checkpoint);
    } finally {
      stop();
    }
  }

  close(): Promise<void> {
    return this.volume.close();
  }
}

interface ControlInfo {
  size: number;
  grainSize: number;
  checkpoints: Array<{ name: string; size: number; createdAt: string; internal: boolean }>;
  deferred: Array<{ name: string; txid: string }>;
  transaction: { txid: string; state: string } | null;
}

class ServedHandle implements VolumeHandle {
  readonly mode = 'served';
  private readonly client: ControlClient;
  constructor(controlSocket: string) {
    this.client = new ControlClient(controlSocket);
  }

  async view(): Promise<VolumeView> {
    const info = await this.client.call<ControlInfo>({ op: 'info' });
    return {
      size: info.size,
      grainSize: info.grainSize,
      checkpoints: viewOf(info.checkpoints),
      deferred: info.deferred.map((d) => ({ name: d.name, txid: d.txid })),
      transaction: info.transaction === null ? null : { txid: info.transaction.txid, state: info.transaction.state },
    };
  }

  createCheckpoint(name: string): Promise<CheckpointResult> {
    return this.client.call<CheckpointResult>({ op: 'checkpoint.create', name });
  }

  async deleteCheckpoint(name: string): Promise<void> {
    await this.client.call({ op: 'checkpoint.delete', name });
  }

  async expand(size: number): Promise<void> {
    await this.client.call({ op: 'expand', size });
  }

  allocated(checkpoint?: string): Promise<Extent[]> {
    return this.client.call<Extent[]>(checkpoint === undefined ? { op: 'allocated' } : { op: 'allocated', checkpoint });
  }

  changed(from: string, to: string): Promise<Extent[]> {
    return this.client.call<Extent[]>({ op: 'changed', from, to });
  }

  clone(dest: string, checkpoint?: string): Promise<{ size: number }> {
    return this.client.call<{ size: number }>(checkpoint === undefined ? { op: 'clone', dest } : { op: 'clone', dest, checkpoint }, 30 * 60_000);
  }

  async freeze(timeoutMs?: number): Promise<FrozenHandle> {
    // The freeze belongs to this connection; closing it (or its timeout) thaws.
    await this.client.call(timeoutMs === undefined ? { op: 'freeze' } : { op: 'freeze', timeoutMs });
    let thawed = false;
    return {
      checkpoint: (name) => this.client.call<CheckpointResult>({ op: 'frozen.checkpoint', name }),
      begin: async (txid) => {
        await this.client.call({ op: 'frozen.begin', txid });
      },
      thaw: async () => {
        if (thawed) return;
        thawed = true;
        await this.client.call({ op: 'thaw' });
      },
    };
  }

  async transaction(step: TransactionStep, txid: string): Promise<void> {
    await this.client.call({ op: `tx.${step}`, txid });
  }

  async rollback(): Promise<{ restoredBytes: number }> {
    throw new CsiError(CsiErrorCode.FailedPrecondition, 'the volume is staged (served over NBD): it can only be rolled back once it is unstaged');
  }

  async close(): Promise<void> {
    this.client.close();
  }
}

/** The real access: local open first, the serving process's control socket when LOCKED. */
export const engineVolumeAccess: VolumeAccess = {
  async open(dir: string): Promise<VolumeHandle> {
    try {
      return new LocalHandle(await Volume.open(dir));
    } catch (err) {
      if (!isEngineError(err, ErrorCode.Locked)) throw err;
    }
    const served = readServeInfo(dir);
    if (served === null) {
      throw new CsiError(CsiErrorCode.Aborted, `volume ${dir} is held by another process that does not serve it (starting or stopping); retry`);
    }
    return new ServedHandle(served.control);
  },
};

/** Opens a volume, runs `fn`, and closes it (also when `fn` fails). */
export async function withVolume<T>(access: VolumeAccess, dir: string, fn: (handle: VolumeHandle) => Promise<T>): Promise<T> {
  const handle = await access.open(dir);
  try {
    return await fn(handle);
  } finally {
    await handle.close();
  }
}
