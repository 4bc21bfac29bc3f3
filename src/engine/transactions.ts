/**
 * The volume's side of a two-phase commit (docs/design.md "Transaction"): begin, prepare, commit,
 * abort. The coordinator decides; each step here is idempotent, so it may be retried after any
 * failure or crash of either side.
 *
 * Design notes
 * - begin(txid) cuts an internal checkpoint `tx:<txid>` and records the transaction as OPEN in the
 *   same metadata update. While a transaction is open, user checkpoints are deferred (chain.ts).
 * - prepare(txid) quiesces writes, fdatasyncs the base and records PREPARED: every write the
 *   transaction covers is durable before the volume votes yes.
 * - commit(txid) records COMMITTING (and a pending deletion when the checkpoint needs a merge),
 *   then releases the checkpoint; abort(txid) records ABORTING and a pending rollback, rolls back
 *   to the checkpoint, then releases it. A crash in either is finished by the next open
 *   (recovery.ts), from those records (docs/format.md §6.4).
 * - The outcome of the last TX_HISTORY_LIMIT transactions is kept, so a retried commit or abort
 *   answers the same, and a begin() of a transaction this volume already aborted (presumed abort:
 *   abort of a txid never begun) is refused.
 */
import { EngineError, ErrorCode } from './errors.js';
import { cut, removeLayer, restoreTo } from './chain.js';
import { CheckpointFlag, PendingKind, TX_HISTORY_LIMIT, TxOutcome, TxState, type VolumeMeta } from './format.js';
import { invalid, txStateNames, type TransactionState, type VolumeCore } from './volume-core.js';

const TXID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$/;
const TX_PREFIX = 'tx:';

export interface TransactionInfo {
  readonly txid: string;
  readonly state: TransactionState;
  readonly checkpoint: string;
}

export function validateTxid(txid: string): void {
  if (!TXID.test(txid)) throw invalid(`transaction id "${txid}" must be 1-201 characters of letters, digits, '.', '_' or '-'`);
}

/** The open transaction, or null. */
export function transactionInfo(core: VolumeCore): TransactionInfo | null {
  const tx = core.meta.tx;
  if (!tx) return null;
  return { txid: tx.txid, state: txStateNames[tx.state], checkpoint: core.layerAt(core.layerIndexById(tx.checkpointId)).rec.name };
}

/** Begins a transaction: cuts its checkpoint. Idempotent for the same txid. Holds the mutex. */
export async function beginTransaction(core: VolumeCore, txid: string, frozen: boolean): Promise<TransactionInfo> {
  const tx = core.meta.tx;
  if (tx) {
    if (tx.txid === txid) return transactionInfo(core) as TransactionInfo;
    throw new EngineError(ErrorCode.FailedPrecondition, `volume is already in transaction ${tx.txid}`);
  }
  const done = core.meta.history.find((h) => h.txid === txid);
  if (done) throw new EngineError(ErrorCode.FailedPrecondition, `transaction ${txid} already ${outcomeName(done.outcome)}`);
  await cut(
    core,
    `${TX_PREFIX}${txid}`,
    CheckpointFlag.Internal,
    (m) => ({ ...m, tx: { txid, state: TxState.Open, checkpointId: m.nextCheckpointId - 1 } }),
    frozen,
  );
  return transactionInfo(core) as TransactionInfo;
}

/** Votes yes: makes every write so far durable and records PREPARED durably. Idempotent. Holds the mutex. */
export async function prepare(core: VolumeCore, txid: string): Promise<TransactionInfo> {
  const tx = requireTx(core, txid, 'prepare');
  if (tx.state !== TxState.Open && tx.state !== TxState.Prepared) {
    throw new EngineError(ErrorCode.FailedPrecondition, `transaction ${txid} is ${txStateNames[tx.state]}`);
  }
  await core.quiesce('prepare', 'writes');
  try {
    await core.base.datasync();
    if (tx.state !== TxState.Prepared) await core.persist({ ...core.meta, tx: { ...tx, state: TxState.Prepared } });
  } finally {
    core.gate.open();
  }
  return transactionInfo(core) as TransactionInfo;
}

/** Commits: releases the transaction's checkpoint, then cuts deferred checkpoints. Idempotent. Holds the mutex. */
export async function commit(core: VolumeCore, txid: string): Promise<void> {
  const done = core.meta.history.find((h) => h.txid === txid);
  if (done?.outcome === TxOutcome.Committed) return;
  if (done) throw new EngineError(ErrorCode.FailedPrecondition, `transaction ${txid} was aborted`);
  const tx = requireTx(core, txid, 'commit');
  if (tx.state === TxState.Aborting) throw new EngineError(ErrorCode.FailedPrecondition, `transaction ${txid} is aborting`);
  await core.quiesce('commit', 'all');
  try {
    const i = core.layerIndexById(tx.checkpointId);
    await core.persist({
      ...core.meta,
      tx: { ...tx, state: TxState.Committing },
      pending: i > 0 ? { kind: PendingKind.Delete, checkpointId: tx.checkpointId } : null,
    });
    await core.recorded(`commit of ${txid}`, () => removeLayer(core, i, (m) => finishTransaction(m, txid, TxOutcome.Committed)));
  } finally {
    core.gate.open();
  }
}

/**
 * Aborts: rolls back to the transaction's checkpoint, releases it, then cuts deferred
 * checkpoints. Idempotent; aborting a transaction this volume never began records the outcome
 * (presumed abort), so a late begin() of it is refused. Holds the mutex.
 */
export async function abort(core: VolumeCore, txid: string): Promise<void> {
  const done = core.meta.history.find((h) => h.txid === txid);
  if (done?.outcome === TxOutcome.Aborted) return;
  if (done) throw new EngineError(ErrorCode.FailedPrecondition, `transaction ${txid} was committed`);
  const tx = core.meta.tx;
  if (!tx || tx.txid !== txid) {
    if (tx) throw new EngineError(ErrorCode.FailedPrecondition, `volume is in transaction ${tx.txid}, not ${txid}`);
    await core.persist(finishTransaction(core.meta, txid, TxOutcome.Aborted));
    return;
  }
  if (tx.state === TxState.Committing) throw new EngineError(ErrorCode.FailedPrecondition, `transaction ${txid} is committing`);
  await core.quiesce('abort', 'all');
  try {
    await core.persist({
      ...core.meta,
      tx: { ...tx, state: TxState.Aborting },
      pending: { kind: PendingKind.Rollback, checkpointId: tx.checkpointId },
    });
    await core.recorded(`abort of ${txid}`, async () => {
      await restoreTo(core, core.layerIndexById(tx.checkpointId));
      const i = core.layerIndexById(tx.checkpointId);
      await core.persist({ ...core.meta, pending: i > 0 ? { kind: PendingKind.Delete, checkpointId: tx.checkpointId } : null });
      await removeLayer(core, i, (m) => finishTransaction(m, txid, TxOutcome.Aborted));
    });
  } finally {
    core.gate.open();
  }
}

function requireTx(core: VolumeCore, txid: string, what: string): NonNullable<VolumeMeta['tx']> {
  const tx = core.meta.tx;
  if (!tx || tx.txid !== txid) {
    throw new EngineError(ErrorCode.FailedPrecondition, tx ? `volume is in transaction ${tx.txid}, not ${txid}` : `cannot ${what}: no transaction ${txid}`);
  }
  return tx;
}

/** Metadata after a transaction ends: no transaction, its outcome recorded for idempotent retries. */
export function finishTransaction(m: VolumeMeta, txid: string, outcome: TxOutcome): VolumeMeta {
  const history = [...m.history.filter((h) => h.txid !== txid), { txid, outcome }].slice(-TX_HISTORY_LIMIT);
  return { ...m, tx: null, history };
}

export function outcomeName(outcome: TxOutcome): string {
  return outcome === TxOutcome.Committed ? 'committed' : 'aborted';
}
