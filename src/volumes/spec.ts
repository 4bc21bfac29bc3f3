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

export type ContentSource =
  | { readonly kind: 'snapshot'; readonly snapshotId: string; readonly snapshot: SnapshotRef }
  | { readonly kind: 'volume'; readonly volumeId: string };
