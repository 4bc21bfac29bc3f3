/**
 * Every name flashcsi shows to Kubernetes or to a CSI client, in one place: the driver name, the
 * topology key, StorageClass parameter keys, and the labels, annotations and finalizers the
 * controllers put on objects. Code elsewhere imports these and never spells a key inline.
 */

/** CSI driver name (GetPluginInfo.name, CSIDriver object name, provisioner of the StorageClass). */
export const DRIVER_NAME = 'flashcsi.io';

/** Prefix of every flashcsi label, annotation and finalizer key. */
export const KEY_PREFIX = `${DRIVER_NAME}/` as const;

/** Topology segment key: the node that holds a volume's data (volumes are node-local). */
export const TOPOLOGY_NODE_KEY = `topology.${DRIVER_NAME}/node` as const;

/** StorageClass `parameters` keys that flashcsi understands (validated in src/csi/validation.ts). */
export const Parameter = {
  /** Copy-on-write grain in bytes: a power of two, 4 KiB … 1 MiB. Optional; the engine has a default. */
  GrainSize: 'grainSize',
  /** File system for mount-mode volumes: `ext4` or `xfs`. Optional; the volume capability's fs_type wins. */
  FsType: 'fsType',
} as const;
export type Parameter = (typeof Parameter)[keyof typeof Parameter];

/**
 * Prefix reserved by Kubernetes for keys the sidecars add to or read from `parameters`
 * (e.g. `csi.storage.k8s.io/pvc/name` with --extra-create-metadata, `…/provisioner-secret-name`).
 */
export const K8S_CSI_PARAMETER_PREFIX = 'csi.storage.k8s.io/';

/** Labels flashcsi puts on objects it creates. */
export const Label = {
  /** Marks objects created by flashcsi (value: DRIVER_NAME). */
  ManagedBy: 'app.kubernetes.io/managed-by',
  /** The CSI volume id an object refers to. */
  VolumeId: `${KEY_PREFIX}volume-id`,
  /** On a VolumeTransactionParticipant: the node whose agent carries it out (agents watch only theirs). */
  Node: `${KEY_PREFIX}node`,
  /** On a VolumeTransactionParticipant: the VolumeTransaction it belongs to. */
  Transaction: `${KEY_PREFIX}transaction`,
} as const;
export type Label = (typeof Label)[keyof typeof Label];

/** Labels of other projects that flashcsi sets. */
export const ForeignLabel = {
  /**
   * external-snapshotter's distributed snapshotting: the node whose csi-snapshotter (--node-deployment)
   * handles a VolumeSnapshotContent or VolumeGroupSnapshotContent; a sidecar sees only its node's.
   */
  SnapshotManagedBy: 'snapshot.storage.kubernetes.io/managed-by',
} as const;

/** Annotations flashcsi puts on objects it does not own. */
export const Annotation = {
  /** On a PVC in a VolumeTransaction: that transaction's name (one transaction per PVC at a time). */
  Transaction: `${KEY_PREFIX}transaction`,
  /** On a PVC being rolled back: the VolumeRollback's name (one rollback per PVC at a time). */
  Rollback: `${KEY_PREFIX}rollback`,
} as const;
export type Annotation = (typeof Annotation)[keyof typeof Annotation];

/** Finalizers flashcsi adds to objects. */
export const Finalizer = {
  /** On VolumeRollbacks and VolumeTransactions: held until the coordinator has cleaned up after them. */
  Cleanup: `${KEY_PREFIX}cleanup`,
  /** On a PVC in a transaction or a rollback: it cannot disappear until that has completed. */
  Protection: `${KEY_PREFIX}protection`,
} as const;
export type Finalizer = (typeof Finalizer)[keyof typeof Finalizer];
