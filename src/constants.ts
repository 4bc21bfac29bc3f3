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
} as const;
export type Label = (typeof Label)[keyof typeof Label];

// Annotation keys go here too, as `export const Annotation = { … } as const`, when a controller needs one.

/** Finalizers flashcsi adds to its custom resources. */
export const Finalizer = {
  /** Held by the controller until the backing volume or checkpoint has been removed. */
  Cleanup: `${KEY_PREFIX}cleanup`,
} as const;
export type Finalizer = (typeof Finalizer)[keyof typeof Finalizer];
