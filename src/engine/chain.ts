/**
 * The checkpoint chain: cutting a checkpoint, deferring cuts during a transaction, deleting one
 * (merging what its older neighbour needs), and rolling the volume back to one.
 *
 * Design notes
 * - A cut is O(1) in the volume size: the new checkpoint's store exists before writes are held
 *   (made ahead of time as the "spare"), so the held window is the drain of in-flight writes plus
 *   one metadata update. Writes are quiesced, not reads: every write lands wholly before or after
 *   the cut.
 * - Deleting Ci (i > 1) merges into Ci-1 every grain Ci holds that Ci-1 lacks (and covers), so
 *   Ci-1 still reads the same bytes; deleting C1 just drops it. The deletion is recorded as pending
 *   first and the merge is idempotent, so a crash midway is finished by the next open
 *   (docs/format.md §6.2).
 * - Rollback to Ci writes Ci's content back into every grain some store in Ci…Cn holds (exactly
 *   the grains changed since Ci), through the copy-on-write path, so newer checkpoints survive. Its
 *   cost follows the changed grains, not the volume size. Past Ci's size (the volume grew since)
 *   the volume is zeroed; sizes never shrink (§6.3).
 * - While a transaction is open, a requested cut is recorded as deferred and made when the
 *   transaction ends; each deferred cut removes its request in the same metadata update, so a
 *   crash never cuts one twice or loses one.
 */
import * as path from 'node:path';
import { baseDataExtents, copyOnWrite, zeroRange } from './cow.js';
import { EngineError, ErrorCode } from './errors.js';
import { publish } from './events.js';
import { MAX_BATCH_ENTRIES, PendingKind, type CheckpointRecord, type VolumeMeta } from './format.js';
import { CheckpointStore } from './store.js';
import { invalid, nowNs, storeFileName, type CheckpointInfo, type Layer, type VolumeCore } from './volume-core.js';

const USER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/;

export interface DeferredCheckpoint {
  readonly name: string;
  readonly requestedAt: Date;
  /** The open transaction the cut waits for. */
  readonly txid: string;
}

export type CheckpointResult =
  | { readonly state: 'created'; readonly checkpoint: CheckpointInfo }
  | { readonly state: 'deferred'; readonly deferred: DeferredCheckpoint };

export interface RollbackResult {
  /** Bytes of the volume rewritten to match the checkpoint. */
  readonly restoredBytes: number;
}

export function validateCheckpointName(name: string): void {
  if (!USER_NAME.test(name)) {
    throw invalid(`checkpoint name "${name}" must be 1-253 characters of letters, digits, '.', '_' or '-', starting with a letter or digit`);
  }
}

/** Cuts a checkpoint, or records it as deferred while a transaction is open. Holds the mutex. */
export async function checkpointOrDefer(core: VolumeCore, name: string, frozen: boolean): Promise<CheckpointResult> {
  core.checkNameFree(name);
  const tx = core.meta.tx;
  if (tx) {
    const requestedNs = nowNs();
    await core.persist({ ...core.meta, deferred: [...core.meta.deferred, { name, requestedNs }] });
    return { state: 'deferred', deferred: { name, requestedAt: new Date(Number(requestedNs / 1_000_000n)), txid: tx.txid } };
  }
  const layer = await cut(core, name, 0, (m) => m, frozen);
  return { state: 'created', checkpoint: core.describe(layer) };
}

/** Cuts a checkpoint with writes quiesced; `amend` adds to the same metadata update. Holds the mutex. */
export async function cut(core: VolumeCore, name: string, flags: number, amend: (m: VolumeMeta) => VolumeMeta, frozen = false): Promise<Layer> {
  const started = process.hrtime.bigint();
  const id = core.meta.nextCheckpointId;
  // The store exists (normally made ahead of time) before writes are held: the held window
  // is only the drain of in-flight writes and one metadata update.
  const store = await takeStore(core, id);
  try {
    const draining = process.hrtime.bigint();
    if (!frozen) await core.quiesce('cut', 'writes');
    try {
      const drained = process.hrtime.bigint();
      const rec: CheckpointRecord = { id, name, size: core.meta.size, createdNs: nowNs(), flags };
      await core.persist(amend({ ...core.meta, nextCheckpointId: id + 1, checkpoints: [...core.meta.checkpoints, rec] }));
      const layer = { rec, store };
      core.layers.push(layer);
      const now = process.hrtime.bigint();
      const micros = (from: bigint, to: bigint): number => Number((to - from) / 1000n);
      publish({ type: 'cut', dir: core.dir, name, micros: micros(started, now), drainMicros: micros(draining, drained), metaMicros: micros(drained, now) });
      return layer;
    } finally {
      if (!frozen) core.gate.open();
    }
  } catch (err) {
    await discardStore(core, store);
    throw err;
  } finally {
    prepareSpare(core);
  }
}

/**
 * Creates the next checkpoint's store, durably, in the background, so a cut finds it ready. A
 * leftover spare is an orphan to the next open, which deletes it.
 */
export function prepareSpare(core: VolumeCore): void {
  if (core.readOnly || core.closed || core.spare) return;
  const id = core.meta.nextCheckpointId;
  core.spare = CheckpointStore.create(core.io, path.join(core.dir, storeFileName(id)), id, core.meta.grainShift)
    .then(async (store) => {
      await core.io.syncDir(core.dir);
      return store;
    })
    .catch(() => null); // a failed spare is made again, synchronously, by the cut that needs it
}

/** Closes and removes the spare store, if one is being made (on close). */
export async function dropSpare(core: VolumeCore): Promise<void> {
  const spare = core.spare ? await core.spare : null;
  core.spare = null;
  if (spare) {
    await spare.close();
    await core.io.unlink(spare.path);
  }
}

/** The store for checkpoint `id`: the spare if it was made for that id, else a new one. */
async function takeStore(core: VolumeCore, id: number): Promise<CheckpointStore> {
  const spare = core.spare ? await core.spare : null;
  core.spare = null;
  if (spare?.checkpointId === id) return spare;
  if (spare) await discardStore(core, spare);
  const store = await CheckpointStore.create(core.io, path.join(core.dir, storeFileName(id)), id, core.meta.grainShift);
  await core.io.syncDir(core.dir);
  return store;
}

/** Closes and unlinks a store no checkpoint refers to; never fails (an orphan is removed by the next open). */
async function discardStore(core: VolumeCore, store: CheckpointStore): Promise<void> {
  await store.close().catch(() => undefined);
  await core.io.unlink(store.path).catch(() => undefined);
}

/**
 * Cuts the checkpoints deferred during a transaction, once none is open. Each cut removes its
 * request in the same metadata update, so a crash never cuts one twice or loses one.
 */
export async function addDeferredLayers(core: VolumeCore): Promise<void> {
  while (!core.meta.tx && core.meta.deferred.length > 0) {
    const [next, ...rest] = core.meta.deferred as [VolumeMeta['deferred'][number], ...VolumeMeta['deferred']];
    const id = core.meta.nextCheckpointId;
    const store = await takeStore(core, id);
    const rec: CheckpointRecord = { id, name: next.name, size: core.meta.size, createdNs: nowNs(), flags: 0 };
    try {
      await core.persist({ ...core.meta, nextCheckpointId: id + 1, checkpoints: [...core.meta.checkpoints, rec], deferred: rest });
    } catch (err) {
      await discardStore(core, store);
      throw err;
    }
    core.layers.push({ rec, store });
    prepareSpare(core);
  }
}

/** Deletes a checkpoint (or a deferred request for one); every other checkpoint stays byte-exact. Holds the mutex. */
export async function deleteCheckpoint(core: VolumeCore, name: string): Promise<void> {
  if (core.meta.deferred.some((d) => d.name === name)) {
    await core.persist({ ...core.meta, deferred: core.meta.deferred.filter((d) => d.name !== name) });
    return;
  }
  const i = core.layerIndex(name);
  if (core.meta.tx?.checkpointId === core.layerAt(i).rec.id) {
    throw new EngineError(ErrorCode.FailedPrecondition, `checkpoint ${name} belongs to open transaction ${core.meta.tx.txid}`);
  }
  await core.quiesce('delete', 'all');
  try {
    if (i > 0) {
      await core.persist({ ...core.meta, pending: { kind: PendingKind.Delete, checkpointId: core.layerAt(i).rec.id } });
      await core.recorded(`deletion of checkpoint ${name}`, () => removeLayer(core, i));
    } else {
      await removeLayer(core, i);
    }
  } finally {
    core.gate.open();
  }
}

/** Removes a checkpoint that needs no merge record: a clone's temporary one. Holds the mutex. */
export async function removeTemporary(core: VolumeCore, name: string): Promise<void> {
  await core.quiesce('delete', 'all');
  try {
    await removeLayer(core, core.layerIndex(name));
  } finally {
    core.gate.open();
  }
}

/**
 * Removes layer i, first merging into layer i-1 what it needs. The caller has recorded a
 * pending deletion (when i > 0) and quiesced I/O. `finish` amends the final metadata update.
 */
export async function removeLayer(core: VolumeCore, i: number, finish: (m: VolumeMeta) => VolumeMeta = (m) => m): Promise<void> {
  const victim = core.layerAt(i);
  if (i > 0) await mergeInto(core, core.layerAt(i - 1), victim);
  const remaining = core.meta.checkpoints.filter((c) => c.id !== victim.rec.id);
  await core.persist(finish({ ...core.meta, checkpoints: remaining, pending: null }));
  core.layers.splice(i, 1);
  await discardStore(core, victim.store);
  await addDeferredLayers(core);
}

/** Copies into `older` the grains `newer` holds that `older` lacks (and covers). Idempotent. */
async function mergeInto(core: VolumeCore, older: Layer, newer: Layer): Promise<void> {
  const G = core.grainSize;
  const limit = Math.ceil(older.rec.size / G);
  const missing = [...newer.store.grains()].filter((g) => g < limit && !older.store.has(g)).sort((a, b) => a - b);
  for (let i = 0; i < missing.length; i += MAX_BATCH_ENTRIES) {
    const chunk = missing.slice(i, i + MAX_BATCH_ENTRIES);
    const items = await Promise.all(
      chunk.map(async (grain) => {
        if (!newer.store.hasData(grain)) return { grain, data: null };
        const data = Buffer.allocUnsafe(G);
        await newer.store.read(grain, 0, data);
        return { grain, data };
      }),
    );
    await older.store.append(items);
    core.counters.grainsMerged += chunk.length;
  }
}

/**
 * Rolls the volume back to a checkpoint: afterwards it reads byte-identical to it (and zeros
 * past the checkpoint's size). Crash-safe: an interrupted rollback completes on the next open.
 * Holds the mutex.
 */
export async function rollback(core: VolumeCore, name: string): Promise<RollbackResult> {
  const i = core.layerIndex(name);
  if (core.meta.tx) {
    throw new EngineError(ErrorCode.FailedPrecondition, `volume is in transaction ${core.meta.tx.txid}; commit or abort it first`);
  }
  await core.quiesce('rollback', 'all');
  try {
    await core.persist({ ...core.meta, pending: { kind: PendingKind.Rollback, checkpointId: core.layerAt(i).rec.id } });
    return await core.recorded(`rollback to ${name}`, async () => {
      const restoredBytes = await restoreTo(core, i);
      await core.persist({ ...core.meta, pending: null });
      return { restoredBytes };
    });
  } finally {
    core.gate.open();
  }
}

/** Writes layer i's image back into the base (I/O quiesced by the caller). Idempotent. */
export async function restoreTo(core: VolumeCore, i: number): Promise<number> {
  const target = core.layerAt(i);
  const G = core.grainSize;
  const coveredGrains = Math.ceil(target.rec.size / G);
  const changed = new Set<number>();
  for (let k = i; k < core.layers.length; k++) {
    for (const g of core.layerAt(k).store.grains()) if (g < coveredGrains) changed.add(g);
  }
  const grains = [...changed].sort((a, b) => a - b);
  let restored = 0;
  let done = 0;
  const parallel = 32;
  for (let n = 0; n < grains.length; n += parallel) {
    await Promise.all(
      grains.slice(n, n + parallel).map(async (grain) => {
        const holder = core.holder(i, grain) as Layer;
        const offset = grain * G;
        const length = Math.min(G, core.meta.size - offset);
        if (!holder.store.hasData(grain)) {
          await zeroRange(core, offset, length, false);
        } else {
          const data = Buffer.allocUnsafe(G);
          await holder.store.read(grain, 0, data);
          await copyOnWrite(core, offset, length, 'data');
          await core.base.write(data.subarray(0, length), offset);
        }
        restored += length;
        core.counters.grainsRestored++;
        publish({ type: 'rollback-progress', dir: core.dir, checkpoint: target.rec.name, done: ++done, total: grains.length });
      }),
    );
  }
  // Past the checkpoint's size (the volume grew since): zero whatever holds data.
  const tailStart = coveredGrains * G;
  if (core.meta.size > tailStart) {
    for (const e of await baseDataExtents(core, tailStart, core.meta.size)) {
      await zeroRange(core, e.offset, e.length, false);
      restored += e.length;
    }
  }
  await core.base.datasync();
  return restored;
}
