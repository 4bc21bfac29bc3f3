/**
 * A volume as the CO asks for it, in domain terms: access mode and capability, capacity, StorageClass
 * parameters, content source. src/csi/validation.ts parses CSI messages into these; the bookkeeping
 * (local-volumes.ts, stager.ts) works on them and never sees a CSI message.
 */
import type { FsType } from '../host/mounter.js';
import { CsiError, CsiErrorCode } from './errors.js';
import type { SnapshotRef } from './ids.js';

/** Access modes a node-local block device can honour: one node, any number of writers on it. */
export const SUPPORTED_ACCESS_MODES = [
  'SINGLE_NODE_WRITER',
  'SINGLE_NODE_READER_ONLY',
  'SINGLE_NODE_SINGLE_WRITER',
  'SINGLE_NODE_MULTI_WRITER',
] as const;
export type AccessMode = (typeof SUPPORTED_ACCESS_MODES)[number];

/** Used when neither the capability nor the StorageClass names a file system. */
export const DEFAULT_FS_TYPE: FsType = 'ext4';

/** A volume capability flashcsi supports, in domain terms. */
export type ParsedCapability =
  | { readonly kind: 'block'; readonly accessMode: AccessMode }
  | {
      readonly kind: 'mount';
      readonly accessMode: AccessMode;
      /** '' when the CO left the choice to the plugin. */
      readonly fsType: FsType | '';
      readonly mountFlags: readonly string[];
      readonly volumeMountGroup: string;
    };

/** A capacity range in bytes; 0n in a field means "not specified", as in the CSI spec. */
export interface ParsedCapacityRange {
  readonly requiredBytes: bigint;
  readonly limitBytes: bigint;
}

export interface CapacityPolicy {
  /** Size when the range gives no required_bytes. */
  readonly defaultBytes: bigint;
  /** Smallest size to create (a smaller required_bytes is raised to it, within limit_bytes). */
  readonly minBytes?: bigint;
  /** Why minBytes, for the OUT_OF_RANGE message when limit_bytes forbids it. */
  readonly minReason?: string;
  /** Sizes are rounded up to a multiple of this (e.g. the grain or 1 MiB). */
  readonly alignBytes: bigint;
  /** Largest size the plugin can create. */
  readonly maxBytes?: bigint;
}

/**
 * The size to create for a capacity range: required_bytes rounded up to the alignment, or the
 * default (capped at limit_bytes, rounded down) when only a limit is given. OUT_OF_RANGE when no
 * aligned size fits the range or the size exceeds the plugin's maximum.
 */
export function chooseCapacity(range: ParsedCapacityRange | undefined, policy: CapacityPolicy): bigint {
  const align = policy.alignBytes;
  if (align <= 0n) throw new Error('BUG: alignBytes must be positive');
  const roundUp = (n: bigint): bigint => ((n + align - 1n) / align) * align;
  const required = range?.requiredBytes ?? 0n;
  const limit = range?.limitBytes ?? 0n;
  let size: bigint;
  if (required > 0n) {
    size = roundUp(required);
  } else {
    size = roundUp(policy.defaultBytes);
    if (limit > 0n && size > limit) size = (limit / align) * align;
  }
  if (size <= 0n) throw new CsiError(CsiErrorCode.OutOfRange, `no size that is a multiple of ${align} bytes fits limit_bytes ${limit}`);
  const min = roundUp(policy.minBytes ?? 0n);
  if (size < min) {
    if (limit > 0n && min > limit) throw new CsiError(CsiErrorCode.OutOfRange, `limit_bytes ${limit} is below ${min} bytes, the smallest volume ${policy.minReason ?? 'allowed'}`);
    size = min;
  }
  if (limit > 0n && size > limit) {
    throw new CsiError(CsiErrorCode.OutOfRange, `required_bytes ${required} rounded up to ${size} (a multiple of ${align}) exceeds limit_bytes ${limit}`);
  }
  if (policy.maxBytes !== undefined && size > policy.maxBytes) {
    throw new CsiError(CsiErrorCode.OutOfRange, `size ${size} exceeds the maximum volume size ${policy.maxBytes}`);
  }
  return size;
}

/** StorageClass parameters flashcsi understands; undefined means "not given, use the default". */
export interface VolumeParameters {
  readonly grainSize: number | undefined;
  readonly fsType: FsType | undefined;
}

/** The file system to create for a mount capability: the capability's, else the StorageClass's, else ext4. */
export function resolveFsType(cap: ParsedCapability, params: VolumeParameters): FsType | undefined {
  if (cap.kind === 'block') return undefined;
  return cap.fsType !== '' ? cap.fsType : (params.fsType ?? DEFAULT_FS_TYPE);
}

/**
 * The smallest file system each type can be made in: mkfs.xfs (xfsprogs 5.19 and later) refuses
 * data devices under 300 MiB; mkfs.ext4 makes one (without a journal) in 1 MiB, the size granularity.
 */
export const MIN_FS_BYTES: Readonly<Record<FsType, bigint>> = Object.freeze({ ext4: 1024n * 1024n, xfs: 300n * 1024n * 1024n });

/** The smallest volume that serves every capability of a CreateVolume: the largest file-system minimum. */
export function minimumVolumeBytes(capabilities: readonly ParsedCapability[], params: VolumeParameters): { bytes: bigint; reason: string } {
  let out = { bytes: 0n, reason: '' };
  for (const cap of capabilities) {
    const fs = resolveFsType(cap, params);
    if (fs !== undefined && MIN_FS_BYTES[fs] > out.bytes) out = { bytes: MIN_FS_BYTES[fs], reason: `an ${fs} file system can be made in` };
  }
  return out;
}

export type ContentSource =
  | { readonly kind: 'snapshot'; readonly snapshotId: string; readonly snapshot: SnapshotRef }
  | { readonly kind: 'volume'; readonly volumeId: string };
