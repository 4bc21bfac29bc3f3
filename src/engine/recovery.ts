/**
 * Recovery and inspection: what a writable open checks and finishes before the volume is usable,
 * and reading a volume's metadata without opening it.
 *
 * Design notes (docs/format.md §4)
 * - The dirty flag says the volume was not closed cleanly; open() then verifies every store's tail
 *   batch by batch (store.ts) before trusting it.
 * - Store files are checked against volume.meta first: a store for a checkpoint id not issued yet
 *   that already holds batches means the metadata is a stale fallback (its newer slot was damaged
 *   after it was durable), which is refused as CORRUPT rather than served with wrong data; store
 *   files no checkpoint names are orphans of an interrupted cut and are deleted.
 * - Then every operation a crash interrupted is finished from its record: a pending rollback
 *   (and, for an aborting transaction, the release of its checkpoint), a pending deletion (also a
 *   committing or aborting transaction's), an ended transaction whose checkpoint needed no merge,
 *   an interrupted clone's temporary checkpoint, and cuts deferred until a transaction that has
 *   since ended. Each of these steps is idempotent, so a crash during recovery is recovered again.
 * - inspectVolume() reads volume.meta without the lock: the file is only ever replaced whole (two
 *   slots, meta-file.ts), so it is safe while another process serves the volume.
 */
import * as path from 'node:path';
import { addDeferredLayers, removeLayer, restoreTo } from './chain.js';
import { EngineError, ErrorCode } from './errors.js';
import { nodeFileIO, type FileIO } from './file-io.js';
import { CheckpointFlag, PendingKind, STORE_HEADER_LENGTH, TxOutcome, TxState, type VolumeMeta } from './format.js';
import { META_FILE, MetaFile } from './meta-file.js';
import { finishTransaction, outcomeName } from './transactions.js';
import { STORE_PATTERN, txStateNames, type TransactionState, type VolumeCore } from './volume-core.js';

/** The prefix of a clone's temporary checkpoint (volume.ts clone). */
export const CLONE_PREFIX = 'clone:';

/** Finishes every operation a crash interrupted. Idempotent: a crash here is recovered again. */
export async function recover(core: VolumeCore): Promise<void> {
  const pending = core.meta.pending;
  const tx = core.meta.tx;
  if (pending?.kind === PendingKind.Rollback) {
    const i = core.layerIndexById(pending.checkpointId);
    await restoreTo(core, i);
    core.recovered.push(`rollback to ${core.layerAt(i).rec.name}`);
    if (tx?.state === TxState.Aborting) {
      await core.persist({ ...core.meta, pending: { kind: PendingKind.Delete, checkpointId: tx.checkpointId } });
      await removeLayer(core, core.layerIndexById(tx.checkpointId), (m) => finishTransaction(m, tx.txid, TxOutcome.Aborted));
      core.recovered.push(`abort of transaction ${tx.txid}`);
    } else {
      await core.persist({ ...core.meta, pending: null });
    }
  } else if (pending?.kind === PendingKind.Delete) {
    const i = core.layerIndexById(pending.checkpointId);
    const name = core.layerAt(i).rec.name;
    if (tx?.state === TxState.Committing || tx?.state === TxState.Aborting) {
      const outcome = tx.state === TxState.Committing ? TxOutcome.Committed : TxOutcome.Aborted;
      await removeLayer(core, i, (m) => finishTransaction(m, tx.txid, outcome));
      core.recovered.push(`${outcome === TxOutcome.Committed ? 'commit' : 'abort'} of transaction ${tx.txid}`);
    } else {
      await removeLayer(core, i);
      core.recovered.push(`deletion of checkpoint ${name}`);
    }
  } else if (tx?.state === TxState.Committing || tx?.state === TxState.Aborting) {
    // The oldest checkpoint needs no merge, so no pending deletion was recorded; an aborting
    // transaction only gets here once its rollback is done.
    const outcome = tx.state === TxState.Committing ? TxOutcome.Committed : TxOutcome.Aborted;
    await removeLayer(core, core.layerIndexById(tx.checkpointId), (m) => finishTransaction(m, tx.txid, outcome));
    core.recovered.push(`${outcomeName(outcome)} transaction ${tx.txid}`);
  }
  // A clone's temporary checkpoint outlives a crash during the copy; nobody can read it any more
  // (we hold the lock), and left alone it would make every later first write copy a grain.
  for (const layer of core.layers.filter((l) => l.rec.name.startsWith(CLONE_PREFIX) && (l.rec.flags & CheckpointFlag.Internal) !== 0)) {
    const i = core.layers.indexOf(layer);
    if (i > 0) await core.persist({ ...core.meta, pending: { kind: PendingKind.Delete, checkpointId: layer.rec.id } });
    await removeLayer(core, i);
    core.recovered.push(`removal of ${layer.rec.name}, the temporary checkpoint of an interrupted clone`);
  }
  // A crash after a transaction ended but before its deferred cuts were made.
  if (!core.meta.tx && core.meta.deferred.length > 0) {
    core.recovered.push(`deferred checkpoints ${core.meta.deferred.map((d) => d.name).join(', ')}`);
    await addDeferredLayers(core);
  }
}

/**
 * Checks the store files of a volume directory against its metadata before they are opened:
 * refuses stale metadata (below) and, on a writable open, deletes store files no checkpoint refers
 * to (a crash between creating and recording one).
 */
export async function checkStoreFiles(io: FileIO, dir: string, meta: VolumeMeta, writable: boolean): Promise<void> {
  const stores = await listStoreFiles(io, dir);
  await refuseStaleMeta(io, dir, meta, stores);
  if (!writable) return;
  const known = new Set(meta.checkpoints.map((c) => c.id));
  for (const { name, id } of stores) if (!known.has(id)) await io.unlink(path.join(dir, name));
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
