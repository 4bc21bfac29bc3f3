/**
 * The flashcsi.io/v1alpha1 API as TypeScript types, mirroring charts/flashcsi/crds/*.yaml
 * (docs/api.md documents the fields). Only the fields flashcsi reads or writes are typed.
 */

export const GROUP = 'flashcsi.io';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;

export interface Resource {
  readonly group: string;
  readonly version: string;
  readonly plural: string;
  readonly kind: string;
}

export const VolumeRollbackResource: Resource = { group: GROUP, version: VERSION, plural: 'volumerollbacks', kind: 'VolumeRollback' };
export const VolumeTransactionResource: Resource = { group: GROUP, version: VERSION, plural: 'volumetransactions', kind: 'VolumeTransaction' };
export const ParticipantResource: Resource = {
  group: GROUP,
  version: VERSION,
  plural: 'volumetransactionparticipants',
  kind: 'VolumeTransactionParticipant',
};
export const VolumeSnapshotResource: Resource = { group: 'snapshot.storage.k8s.io', version: 'v1', plural: 'volumesnapshots', kind: 'VolumeSnapshot' };
export const VolumeSnapshotContentResource: Resource = {
  group: 'snapshot.storage.k8s.io',
  version: 'v1',
  plural: 'volumesnapshotcontents',
  kind: 'VolumeSnapshotContent',
};
/** Served as v1 by external-snapshotter v8.6 and later (the version its sidecar watches). */
export const VolumeGroupSnapshotContentResource: Resource = {
  group: 'groupsnapshot.storage.k8s.io',
  version: 'v1',
  plural: 'volumegroupsnapshotcontents',
  kind: 'VolumeGroupSnapshotContent',
};

export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  finalizers?: string[];
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  ownerReferences?: Array<{ apiVersion: string; kind: string; name: string; uid: string; controller?: boolean; blockOwnerDeletion?: boolean }>;
}

export interface Condition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  observedGeneration?: number;
  lastTransitionTime: string;
  reason: string;
  message: string;
}

// ---------------------------------------------------------------- VolumeRollback

export type RollbackPhase = 'Pending' | 'WaitingForDetach' | 'RollingBack' | 'Completed' | 'Failed';

export interface VolumeRollback {
  apiVersion: typeof API_VERSION;
  kind: 'VolumeRollback';
  metadata: ObjectMeta;
  spec: { volumeSnapshotName: string };
  status?: {
    phase?: RollbackPhase;
    message?: string;
    persistentVolumeClaimName?: string;
    volumeHandle?: string;
    node?: string;
    checkpoint?: string;
    restoredBytes?: number;
    startTime?: string;
    completionTime?: string;
    observedGeneration?: number;
    conditions?: Condition[];
  };
}

// ---------------------------------------------------------------- VolumeTransaction

export type TransactionPhase = 'Pending' | 'Open' | 'Preparing' | 'Committed' | 'RollingBack' | 'RolledBack' | 'Failed';
export type Decision = 'Commit' | 'Rollback';

export type ParticipantState =
  | 'Pending'
  | 'Frozen'
  | 'Begun'
  | 'Prepared'
  | 'Committed'
  | 'WaitingForDetach'
  | 'RolledBack'
  | 'Released'
  | 'Failed';

export interface ParticipantSummary {
  persistentVolumeClaimName: string;
  volumeHandle?: string;
  node?: string;
  state?: ParticipantState;
  checkpoint?: string;
  message?: string;
}

export interface VolumeTransactionStatus {
  phase?: TransactionPhase;
  message?: string;
  txid?: string;
  /** Begin attempt; a failed attempt (a freeze lost or timed out) is released and retried. */
  attempt?: number;
  attemptStartTime?: string;
  /** The durable decision: recorded here before any participant acts on it. */
  decision?: Decision;
  decisionReason?: string;
  decisionTime?: string;
  openTime?: string;
  prepareStartTime?: string;
  completionTime?: string;
  observedGeneration?: number;
  participants?: ParticipantSummary[];
  deferredSnapshots?: Array<{ persistentVolumeClaimName: string; checkpoint: string }>;
  conditions?: Condition[];
}

export interface VolumeTransaction {
  apiVersion: typeof API_VERSION;
  kind: 'VolumeTransaction';
  metadata: ObjectMeta;
  spec: { persistentVolumeClaims: string[]; decision?: '' | Decision; timeoutSeconds?: number };
  status?: VolumeTransactionStatus;
}

// ---------------------------------------------------------------- VolumeTransactionParticipant

export type ParticipantAction = 'Freeze' | 'Begin' | 'Prepare' | 'Commit' | 'Rollback' | 'Release';

export interface ParticipantSpec {
  transaction: string;
  txid: string;
  attempt: number;
  persistentVolumeClaimName: string;
  volumeHandle: string;
  node: string;
  action: ParticipantAction;
}

export interface ParticipantStatus {
  state?: ParticipantState;
  observedAction?: ParticipantAction;
  observedAttempt?: number;
  checkpoint?: string;
  message?: string;
  deferredCheckpoints?: string[];
  lastUpdateTime?: string;
}

export interface VolumeTransactionParticipant {
  apiVersion: typeof API_VERSION;
  kind: 'VolumeTransactionParticipant';
  metadata: ObjectMeta;
  spec: ParticipantSpec;
  status?: ParticipantStatus;
}

/** Sets (or replaces) a condition, keeping lastTransitionTime when the status did not change. */
export function setCondition(conditions: readonly Condition[] | undefined, next: Omit<Condition, 'lastTransitionTime'>, now: string): Condition[] {
  const old = conditions?.find((c) => c.type === next.type);
  const merged: Condition = { ...next, lastTransitionTime: old && old.status === next.status ? old.lastTransitionTime : now };
  return [...(conditions ?? []).filter((c) => c.type !== next.type), merged];
}
