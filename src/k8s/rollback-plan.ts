/**
 * The coordinator's part of a VolumeRollback, as a pure function (like transaction-plan.ts).
 * It validates the request and finds the target: the VolumeSnapshot (same namespace), its source
 * PVC, that PVC's volume and node, and the checkpoint behind the snapshot. Then it claims the PVC
 * (annotation + protection finalizer) and hands over: phase WaitingForDetach, with the node in
 * status. From there the node agent owns the status (agent.ts): it waits until the volume is
 * detached from every pod, rolls back, and records Completed or Failed. At the end the coordinator
 * releases the PVC, and it lets go of its finalizer when the VolumeRollback is deleted.
 */
import { DRIVER_NAME, Finalizer } from '../constants.js';
import { tryParseSnapshotId } from '../volumes/ids.js';
import { setCondition, type RollbackPhase, type VolumeRollback } from './api.js';
import { canonicalJson, type CommonStep, type PlanOf } from './steps.js';
import type { ClaimView } from './transaction-plan.js';

/** What the coordinator knows about the VolumeSnapshot named by the rollback. */
export interface SnapshotView {
  readonly exists: boolean;
  readonly readyToUse: boolean;
  readonly error?: string;
  /** spec.source.persistentVolumeClaimName (absent for pre-provisioned snapshots). */
  readonly sourcePvc?: string;
  /** From the bound VolumeSnapshotContent. */
  readonly driver?: string;
  readonly snapshotHandle?: string;
}

export interface RollbackInput {
  readonly vr: VolumeRollback;
  readonly snapshot: SnapshotView;
  /** The snapshot's source PVC, when known. */
  readonly claim: ClaimView | null;
  readonly now: Date;
}

export type RollbackStep = CommonStep<NonNullable<VolumeRollback['status']>>;
export type RollbackPlan = PlanOf<RollbackStep>;

const RETRY_MS = 30_000;

export function planRollback(input: RollbackInput): RollbackPlan {
  const { vr, snapshot, claim, now } = input;
  const st = vr.status ?? {};
  const phase: RollbackPhase = st.phase ?? 'Pending';
  const deleting = vr.metadata.deletionTimestamp !== undefined;
  const hasFinalizer = vr.metadata.finalizers?.includes(Finalizer.Cleanup) ?? false;
  const nowIso = now.toISOString();
  const steps: RollbackStep[] = [];
  const pvc = st.persistentVolumeClaimName ?? snapshot.sourcePvc;
  const holdsPvc = claim !== null && (claim.rollback === vr.metadata.name || (claim.protectedByUs && claim.rollback === undefined));

  const status = (next: NonNullable<VolumeRollback['status']>, reason: string, message: string, warning = false): void => {
    const nextPhase = next.phase ?? phase;
    const done = nextPhase === 'Completed' || nextPhase === 'Failed';
    const full = {
      ...next,
      message,
      observedGeneration: vr.metadata.generation ?? 0,
      conditions: setCondition(st.conditions, { type: 'Complete', status: done ? 'True' : 'False', reason, message }, nowIso),
    };
    if (canonicalJson(full) === canonicalJson({ ...st, conditions: full.conditions })) return;
    steps.push({ kind: 'status', status: full });
    if (nextPhase !== phase) steps.push({ kind: 'event', type: warning ? 'Warning' : 'Normal', reason, message: `${phase} → ${nextPhase}: ${message}` });
  };
  const release = (): void => {
    if (pvc && holdsPvc) steps.push({ kind: 'releasePvc', pvc });
  };
  const fail = (message: string): RollbackPlan => {
    status({ ...st, phase: 'Failed', completionTime: nowIso }, 'Failed', message, true);
    release();
    return { steps };
  };
  const wait = (message: string, requeueAfterMs = RETRY_MS): RollbackPlan => {
    status({ ...st, phase: 'Pending' }, 'Waiting', message);
    return { steps, requeueAfterMs };
  };

  if (phase === 'Completed' || phase === 'Failed') {
    release();
    if (deleting && hasFinalizer) steps.push({ kind: 'removeFinalizer' });
    return { steps };
  }
  if (!hasFinalizer) return deleting ? { steps } : { steps: [{ kind: 'addFinalizer' }] };
  if (deleting) {
    // A rollback under way finishes first: the agent is rewriting the volume and holds it.
    if (phase === 'RollingBack') return { steps, requeueAfterMs: RETRY_MS };
    release();
    steps.push({ kind: 'removeFinalizer' });
    return { steps };
  }
  // From WaitingForDetach on, the node agent owns the status.
  if (phase !== 'Pending') return { steps };

  const name = vr.spec.volumeSnapshotName;
  const ns = vr.metadata.namespace ?? '';
  if (!snapshot.exists) return fail(`VolumeSnapshot ${name} not found in namespace ${ns}`);
  if (snapshot.error) return fail(`VolumeSnapshot ${name} failed: ${snapshot.error}`);
  if (!snapshot.sourcePvc) return fail(`VolumeSnapshot ${name} has no source PVC (a pre-provisioned snapshot): there is no volume to roll back in place`);
  if (!snapshot.readyToUse || !snapshot.snapshotHandle) return wait(`waiting for VolumeSnapshot ${name} to be ready`);
  if (snapshot.driver !== DRIVER_NAME) return fail(`VolumeSnapshot ${name} was taken by ${snapshot.driver ?? 'another driver'}, not ${DRIVER_NAME}`);
  const target = tryParseSnapshotId(snapshot.snapshotHandle);
  if (!target) return fail(`VolumeSnapshot ${name} has a snapshot handle flashcsi did not make: ${snapshot.snapshotHandle}`);
  if (!claim?.exists) return fail(`PVC ${snapshot.sourcePvc}, the source of VolumeSnapshot ${name}, not found in namespace ${ns}`);
  if (claim.deleting && !holdsPvc) return fail(`PVC ${claim.name} is being deleted`);
  if (!claim.bound || claim.driver !== DRIVER_NAME || !claim.volumeHandle || !claim.node) {
    return fail(`PVC ${claim.name} is not bound to a ${DRIVER_NAME} volume with a known node`);
  }
  if (claim.volumeHandle !== target.volumeId) {
    return fail(`VolumeSnapshot ${name} belongs to volume ${target.volumeId}, but PVC ${claim.name} is now volume ${claim.volumeHandle}`);
  }
  if (claim.transaction !== undefined) return wait(`PVC ${claim.name} is in VolumeTransaction ${claim.transaction}; the rollback waits for it to complete`);
  if (claim.rollback !== undefined && claim.rollback !== vr.metadata.name) return wait(`PVC ${claim.name} is being rolled back by VolumeRollback ${claim.rollback}`);
  if (claim.rollback !== vr.metadata.name || !claim.protectedByUs) {
    steps.push({ kind: 'claimPvc', pvc: claim.name });
    return { steps, requeueAfterMs: 0 };
  }
  status(
    {
      ...st,
      phase: 'WaitingForDetach',
      persistentVolumeClaimName: claim.name,
      volumeHandle: claim.volumeHandle,
      node: claim.node,
      checkpoint: target.checkpoint,
      startTime: st.startTime ?? nowIso,
    },
    'Resolved',
    `rolling back PVC ${claim.name} (volume ${claim.volumeHandle} on node ${claim.node}) to ${name}, once no pod uses it`,
  );
  return { steps };
}
