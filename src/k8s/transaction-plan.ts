/**
 * The coordinator's two-phase commit for a VolumeTransaction, as a pure function: given what the
 * API server shows (the transaction, its participants, its PVCs) and the time, it returns the
 * steps to take, in order. transaction-controller.ts executes them; if it dies midway, the next
 * reconcile plans again from what was actually written. Every step is idempotent.
 *
 * The protocol (docs/design.md has the diagram):
 *   Pending    claim every PVC (annotation + protection finalizer), then begin in attempts:
 *              all participants Freeze (writes held) → all Begin (each cuts its checkpoint under
 *              the freeze, then lets writes go) → Open. A lost or timed-out freeze releases the
 *              attempt's checkpoints (keeping the data) and retries with a new attempt.
 *   Open       waits for spec.decision, or the timeout (which decides Rollback).
 *   Preparing  every participant PREPAREs durably; all yes → decision Commit; any no, or too
 *              slow → decision Rollback.
 *   decided    the decision is written to status first; only a plan that *observes* it there
 *              orders participants to Commit or Rollback. So no participant ever acts on a
 *              decision that a crash could lose, and every participant gets the same one.
 *   RollingBack participants wait until their volume is detached, then roll back.
 *   Committed / RolledBack / Failed: PVCs are released first, then the phase is written, so whoever
 *              sees it can put the PVCs in a new transaction or rollback at once; the finalizer
 *              goes when it is deleted.
 */
import { createHash } from 'node:crypto';
import { DRIVER_NAME, Finalizer, Label } from '../constants.js';
import { canonicalJson } from './steps.js';
import type { CommonStep, PlanOf } from './steps.js';
import {
  API_VERSION,
  setCondition,
  type Decision,
  type ParticipantAction,
  type ParticipantSpec,
  type ParticipantState,
  type ParticipantSummary,
  type TransactionPhase,
  type VolumeTransaction,
  type VolumeTransactionParticipant,
  type VolumeTransactionStatus,
} from './api.js';

/** What the coordinator knows about one PVC of the transaction. */
export interface ClaimView {
  readonly name: string;
  readonly exists: boolean;
  readonly deleting: boolean;
  readonly bound: boolean;
  /** From the bound PV: its CSI driver, volume handle and node. */
  readonly driver?: string;
  readonly volumeHandle?: string;
  readonly node?: string;
  /** Annotation values: the transaction or rollback holding the PVC, if any. */
  readonly transaction?: string;
  readonly rollback?: string;
  readonly protectedByUs: boolean;
}

export interface TransactionLimits {
  /** How long one begin attempt may take before it is released and retried. */
  readonly beginTimeoutMs: number;
  /** How long participants may take to prepare before the decision is Rollback. */
  readonly prepareTimeoutMs: number;
  readonly maxAttempts: number;
}

export const DEFAULT_LIMITS: TransactionLimits = { beginTimeoutMs: 60_000, prepareTimeoutMs: 300_000, maxAttempts: 5 };

export interface TransactionInput {
  readonly vt: VolumeTransaction;
  readonly participants: readonly VolumeTransactionParticipant[];
  readonly claims: ReadonlyMap<string, ClaimView>;
  readonly now: Date;
  readonly limits?: TransactionLimits;
}

export type Step =
  | CommonStep<VolumeTransactionStatus>
  | { readonly kind: 'createParticipant'; readonly participant: VolumeTransactionParticipant }
  /** Set a participant's action; `resourceVersion` is the one planned from (a conflict aborts the plan). */
  | { readonly kind: 'setAction'; readonly name: string; readonly resourceVersion?: string; readonly action: ParticipantAction; readonly attempt: number; readonly txid: string }
  | { readonly kind: 'deleteParticipant'; readonly name: string };

export type Plan = PlanOf<Step>;

const TERMINAL: ReadonlySet<TransactionPhase> = new Set(['Committed', 'RolledBack', 'Failed']);

/** The participant object's name for a PVC: stable, and within the 253-character limit. */
export function participantName(vtName: string, pvc: string): string {
  const hash = createHash('sha256').update(pvc).digest('hex').slice(0, 10);
  return `${vtName.slice(0, 240)}-${hash}`;
}

export function attemptTxid(txid: string, attempt: number): string {
  return `${txid}-a${attempt}`;
}

/** A participant's state as of the current attempt (a report from an older attempt counts as Pending). */
function stateOf(p: VolumeTransactionParticipant | undefined, attempt: number, action?: ParticipantAction): ParticipantState {
  if (!p?.status?.state || p.status.observedAttempt !== attempt) return 'Pending';
  if (action && p.status.observedAction !== action) return 'Pending';
  return p.status.state;
}

export function planTransaction(input: TransactionInput): Plan {
  const { vt, now } = input;
  const limits = input.limits ?? DEFAULT_LIMITS;
  const st: VolumeTransactionStatus = vt.status ?? {};
  const phase: TransactionPhase = st.phase ?? 'Pending';
  const deleting = vt.metadata.deletionTimestamp !== undefined;
  const hasFinalizer = vt.metadata.finalizers?.includes(Finalizer.Cleanup) ?? false;
  const nowIso = now.toISOString();
  const steps: Step[] = [];
  const byPvc = new Map(input.participants.map((p) => [p.spec.persistentVolumeClaimName, p]));
  const pvcs = vt.spec.persistentVolumeClaims;

  /** PVCs carrying any mark of this transaction (to release at the end). */
  const held = (): string[] =>
    pvcs.filter((pvc) => {
      const c = input.claims.get(pvc);
      return c !== undefined && (c.transaction === vt.metadata.name || c.protectedByUs);
    });
  /** PVCs fully claimed: annotated with this transaction and protected by its finalizer. */
  const claimed = (pvc: string): boolean => {
    const c = input.claims.get(pvc);
    return c?.transaction === vt.metadata.name && c.protectedByUs;
  };

  /** A status update, plus an Event when the phase changes. */
  const status = (next: VolumeTransactionStatus, reason: string, message: string, warning = false): void => {
    const full: VolumeTransactionStatus = {
      ...next,
      message,
      observedGeneration: vt.metadata.generation ?? 0,
      participants: summaries(next.attempt ?? st.attempt ?? 1),
      conditions: setCondition(st.conditions, conditionFor(next.phase ?? phase, reason, message), nowIso),
    };
    if (canonicalJson(full) === canonicalJson({ ...st, conditions: full.conditions })) return; // nothing new: no write, no watch event
    steps.push({ kind: 'status', status: full });
    if ((next.phase ?? phase) !== phase) {
      steps.push({ kind: 'event', type: warning ? 'Warning' : 'Normal', reason, message: `${phase} → ${next.phase ?? phase}: ${message}` });
    }
  };

  const summaries = (attempt: number): ParticipantSummary[] =>
    pvcs.map((pvc) => {
      const c = input.claims.get(pvc);
      const p = byPvc.get(pvc);
      const s: ParticipantSummary = { persistentVolumeClaimName: pvc };
      const handle = p?.spec.volumeHandle ?? c?.volumeHandle;
      const node = p?.spec.node ?? c?.node;
      if (handle) s.volumeHandle = handle;
      if (node) s.node = node;
      if (p) s.state = stateOf(p, attempt);
      if (p?.status?.checkpoint) s.checkpoint = p.status.checkpoint;
      if (p?.status?.message) s.message = p.status.message;
      return s;
    });

  /** The end: every PVC released, then the final phase. */
  const finish = (next: VolumeTransactionStatus, reason: string, message: string, warning = false): void => {
    for (const pvc of held()) steps.push({ kind: 'releasePvc', pvc });
    status(next, reason, message, warning);
  };
  const fail = (message: string): Plan => {
    finish({ ...st, phase: 'Failed', completionTime: nowIso }, 'Failed', message, true);
    return { steps };
  };

  // ------------------------------------------------------------ finished
  if (TERMINAL.has(phase)) {
    for (const pvc of held()) steps.push({ kind: 'releasePvc', pvc });
    if (deleting && hasFinalizer) {
      for (const p of input.participants) steps.push({ kind: 'deleteParticipant', name: p.metadata.name });
      steps.push({ kind: 'removeFinalizer' });
    }
    return { steps };
  }
  if (!hasFinalizer) {
    if (deleting) return { steps }; // deleted before we ever acted: nothing to clean up
    return { steps: [{ kind: 'addFinalizer' }] };
  }

  // ------------------------------------------------------------ resolve and claim the PVCs
  if (!st.txid) {
    const waiting: string[] = [];
    for (const pvc of pvcs) {
      const c = input.claims.get(pvc);
      if (!c?.exists) return fail(`PVC ${pvc} not found in namespace ${vt.metadata.namespace ?? ''}`);
      if (c.deleting && !c.protectedByUs) return fail(`PVC ${pvc} is being deleted`);
      if (c.transaction !== undefined && c.transaction !== vt.metadata.name) return fail(`PVC ${pvc} is already in VolumeTransaction ${c.transaction}`);
      if (!c.bound) {
        waiting.push(`PVC ${pvc} is not bound yet`);
        continue;
      }
      if (c.driver !== DRIVER_NAME) return fail(`PVC ${pvc} is not a ${DRIVER_NAME} volume (its PV's driver is ${c.driver ?? 'none'})`);
      if (!c.volumeHandle || !c.node) return fail(`cannot tell which node holds PVC ${pvc}'s volume (no ${DRIVER_NAME} topology on its PV)`);
      if (c.rollback !== undefined) waiting.push(`PVC ${pvc} is being rolled back by VolumeRollback ${c.rollback}`);
    }
    if (deleting) {
      for (const pvc of held()) steps.push({ kind: 'releasePvc', pvc });
      steps.push({ kind: 'removeFinalizer' });
      return { steps };
    }
    if (waiting.length > 0) {
      status({ ...st, phase: 'Pending' }, 'Waiting', waiting.join('; '));
      return { steps };
    }
    const unclaimed = pvcs.filter((pvc) => !claimed(pvc));
    if (unclaimed.length > 0) {
      for (const pvc of unclaimed) steps.push({ kind: 'claimPvc', pvc });
      return { steps, requeueAfterMs: 0 };
    }
    const txid = vt.metadata.uid ?? vt.metadata.name;
    status({ ...st, phase: 'Pending', txid, attempt: 1, attemptStartTime: nowIso }, 'Beginning', 'freezing every volume to cut the transaction checkpoints at one instant');
    return { steps, requeueAfterMs: 0 };
  }

  const txid = st.txid;
  const attempt = st.attempt ?? 1;
  const engineTxid = attemptTxid(txid, attempt);

  /** Makes sure every PVC has its participant object, and that each is at `action` for this attempt. */
  const drive = (action: ParticipantAction, forAttempt = attempt, forTxid = engineTxid): void => {
    for (const pvc of pvcs) {
      const p = byPvc.get(pvc);
      const c = input.claims.get(pvc);
      if (!p) {
        const spec: ParticipantSpec = {
          transaction: vt.metadata.name,
          txid: forTxid,
          attempt: forAttempt,
          persistentVolumeClaimName: pvc,
          volumeHandle: c?.volumeHandle ?? '',
          node: c?.node ?? '',
          action,
        };
        steps.push({ kind: 'createParticipant', participant: participantObject(vt, spec) });
      } else if (p.spec.action !== action || p.spec.attempt !== forAttempt || p.spec.txid !== forTxid) {
        const rv = p.metadata.resourceVersion;
        steps.push({ kind: 'setAction', name: p.metadata.name, ...(rv ? { resourceVersion: rv } : {}), action, attempt: forAttempt, txid: forTxid });
      }
    }
  };
  const states = (action?: ParticipantAction): ParticipantState[] => pvcs.map((pvc) => stateOf(byPvc.get(pvc), attempt, action));
  const failures = (action?: ParticipantAction): string[] =>
    pvcs
      .filter((pvc) => stateOf(byPvc.get(pvc), attempt, action) === 'Failed')
      .map((pvc) => `${pvc}: ${byPvc.get(pvc)?.status?.message ?? 'failed'}`);
  const since = (iso: string | undefined): number => (iso ? now.getTime() - Date.parse(iso) : 0);
  const decide = (decision: Decision, reason: string, message: string): Plan => {
    const next: VolumeTransactionStatus = {
      ...st,
      decision,
      decisionReason: reason,
      decisionTime: nowIso,
      phase: decision === 'Commit' ? 'Preparing' : 'RollingBack',
    };
    status(next, decision === 'Commit' ? 'DecidedCommit' : 'DecidedRollback', message, decision === 'Rollback' && reason !== 'UserRequested');
    return { steps, requeueAfterMs: 0 };
  };

  // ------------------------------------------------------------ carry out a recorded decision
  if (st.decision === 'Commit') {
    drive('Commit');
    if (states('Commit').every((s) => s === 'Committed')) {
      // The snapshots that waited are cut now (each volume cuts them as it completes): none waits any more.
      finish({ ...st, phase: 'Committed', completionTime: nowIso, deferredSnapshots: [] }, 'Committed', 'every volume committed');
    } else {
      status({ ...st }, 'Committing', `committing: ${progress(states('Commit'), 'Committed')}`);
    }
    return { steps };
  }
  if (st.decision === 'Rollback') {
    drive('Rollback');
    const s = states('Rollback');
    if (s.every((x) => x === 'RolledBack')) {
      finish({ ...st, phase: 'RolledBack', completionTime: nowIso, deferredSnapshots: [] }, 'RolledBack', 'every volume rolled back to the transaction checkpoint');
    } else {
      const detach = pvcs.filter((_, i) => s[i] === 'WaitingForDetach');
      const why = detach.length > 0 ? `; waiting for ${detach.join(', ')} to be detached from every pod` : '';
      status({ ...st, phase: 'RollingBack' }, 'RollingBack', `rolling back (${st.decisionReason ?? 'decided'}): ${progress(s, 'RolledBack')}${why}`);
    }
    return { steps };
  }

  // ------------------------------------------------------------ begin, in attempts
  if (phase === 'Pending') {
    const releasing = byPvc.size > 0 && [...byPvc.values()].every((p) => p.spec.action === 'Release' && p.spec.attempt === attempt);
    if (releasing) {
      // A failed attempt is being released (its missing participants too); once it is, retry or give up.
      drive('Release');
      const s = states('Release');
      if (!s.every((x) => x === 'Released')) {
        status({ ...st }, 'Releasing', `releasing begin attempt ${attempt}: ${progress(s, 'Released')}`);
        return { steps };
      }
      if (deleting) return fail('deleted before it opened');
      if (attempt >= limits.maxAttempts) return fail(`could not begin after ${attempt} attempts: ${st.message ?? ''}`);
      const next = attempt + 1;
      status({ ...st, attempt: next, attemptStartTime: nowIso }, 'Beginning', `begin attempt ${next}`);
      drive('Freeze', next, attemptTxid(txid, next));
      return { steps };
    }
    const problems = failures();
    const timedOut = since(st.attemptStartTime) > limits.beginTimeoutMs;
    const s0 = states();
    // Once a volume has cut its checkpoint, every other must still be frozen or have cut too;
    // otherwise this attempt cannot give one instant, and must not be re-frozen and re-begun.
    const broken = s0.includes('Begun') && !s0.every((x) => x === 'Frozen' || x === 'Begun');
    if (problems.length > 0 || timedOut || deleting || broken) {
      const why =
        problems.length > 0 ? problems.join('; ') : timedOut ? `not every volume froze and began within ${limits.beginTimeoutMs / 1000} s` : broken ? 'a volume lost its freeze' : 'deleted';
      status({ ...st }, 'BeginFailed', `begin attempt ${attempt} failed (${why}); releasing it`, true);
      drive('Release');
      return { steps, requeueAfterMs: 0 };
    }
    const s = states();
    if (s.every((x) => x === 'Begun')) {
      status({ ...st, phase: 'Open', openTime: nowIso }, 'Opened', 'every volume has its transaction checkpoint; set spec.decision to Commit or Rollback');
      return { steps };
    }
    // Begin only once every volume's writes are held, so all checkpoints are cut at one instant.
    const allFrozen = s.every((x) => x === 'Frozen' || x === 'Begun');
    drive(allFrozen ? 'Begin' : 'Freeze');
    status({ ...st }, 'Beginning', `begin attempt ${attempt}: ${progress(s, allFrozen ? 'Begun' : 'Frozen')}`);
    return { steps, requeueAfterMs: Math.max(0, limits.beginTimeoutMs - since(st.attemptStartTime)) + 1 };
  }

  // ------------------------------------------------------------ open: wait for the decision
  if (phase === 'Open') {
    const timeoutMs = (vt.spec.timeoutSeconds ?? 3600) * 1000;
    if (deleting) return decide('Rollback', 'Deleted', 'the VolumeTransaction was deleted before a decision: rolling back');
    if (vt.spec.decision === 'Rollback') return decide('Rollback', 'UserRequested', 'spec.decision is Rollback');
    if (vt.spec.decision === 'Commit') {
      status({ ...st, phase: 'Preparing', prepareStartTime: nowIso }, 'Preparing', 'spec.decision is Commit: every volume prepares');
      drive('Prepare');
      return { steps };
    }
    if (since(st.openTime) >= timeoutMs) return decide('Rollback', 'Timeout', `no decision within ${timeoutMs / 1000} s: rolling back`);
    const deferred = pvcs.flatMap((pvc) => (byPvc.get(pvc)?.status?.deferredCheckpoints ?? []).map((checkpoint) => ({ persistentVolumeClaimName: pvc, checkpoint })));
    const note = deferred.length > 0 ? `; ${deferred.length} snapshot(s) wait for this transaction to complete` : '';
    status({ ...st, deferredSnapshots: deferred }, 'Opened', `open: set spec.decision to Commit or Rollback${note}`);
    return { steps, requeueAfterMs: timeoutMs - since(st.openTime) };
  }

  // ------------------------------------------------------------ preparing, no decision yet
  const problems = failures('Prepare');
  if (problems.length > 0) return decide('Rollback', 'PrepareFailed', `a volume could not prepare (${problems.join('; ')}): rolling back`);
  const s = states('Prepare');
  if (s.every((x) => x === 'Prepared')) return decide('Commit', 'AllPrepared', 'every volume prepared: committing');
  if (deleting) return decide('Rollback', 'Deleted', 'the VolumeTransaction was deleted before a decision: rolling back');
  if (since(st.prepareStartTime) > limits.prepareTimeoutMs) {
    const late = pvcs.filter((_, i) => s[i] !== 'Prepared');
    return decide('Rollback', 'PrepareTimeout', `${late.join(', ')} did not prepare within ${limits.prepareTimeoutMs / 1000} s: rolling back`);
  }
  drive('Prepare');
  status({ ...st }, 'Preparing', `preparing: ${progress(s, 'Prepared')}`);
  return { steps, requeueAfterMs: Math.max(0, limits.prepareTimeoutMs - since(st.prepareStartTime)) + 1 };
}

function progress(states: readonly ParticipantState[], goal: ParticipantState): string {
  return `${states.filter((s) => s === goal).length}/${states.length} ${goal.toLowerCase()}`;
}

function conditionFor(phase: TransactionPhase, reason: string, message: string): { type: string; status: 'True' | 'False' | 'Unknown'; reason: string; message: string } {
  const done = phase === 'Committed' || phase === 'RolledBack' || phase === 'Failed';
  return { type: 'Complete', status: done ? 'True' : 'False', reason, message };
}

function participantObject(vt: VolumeTransaction, spec: ParticipantSpec): VolumeTransactionParticipant {
  return {
    apiVersion: API_VERSION,
    kind: 'VolumeTransactionParticipant',
    metadata: {
      name: participantName(vt.metadata.name, spec.persistentVolumeClaimName),
      ...(vt.metadata.namespace ? { namespace: vt.metadata.namespace } : {}),
      labels: { [Label.Node]: spec.node, [Label.Transaction]: vt.metadata.name, [Label.ManagedBy]: DRIVER_NAME },
      ownerReferences: [{ apiVersion: API_VERSION, kind: 'VolumeTransaction', name: vt.metadata.name, uid: vt.metadata.uid ?? '', controller: true, blockOwnerDeletion: true }],
    },
    spec,
  };
}
