/**
 * Request validation, kept apart from the handlers (aws-ebs `validation.go`): each RPC body starts
 * with one `validate…Request` call that either throws a CsiError with the status the CSI spec asks
 * for, or returns the request's fields parsed into domain values. int64 fields arrive as decimal
 * strings (the proto is loaded with `longs: String`) and are parsed to `bigint` here, so byte
 * counts are never rounded through a JS number.
 *
 * Status choices:
 * - a missing required field or a malformed value → INVALID_ARGUMENT;
 * - an unsupported volume capability → INVALID_ARGUMENT (CreateVolume, Node*), while
 *   ValidateVolumeCapabilities reports it as "not confirmed" instead of failing;
 * - a capacity range that is well-formed but cannot be met → OUT_OF_RANGE;
 * - an id that cannot have been issued by flashcsi (bad characters, too long) → NOT_FOUND, since no
 *   such object can exist; Delete* callers treat that as "already deleted" (idempotency).
 *
 * Id formats (flashcsi chooses them; COs treat them as opaque):
 * - volume id: 1–128 bytes of `[A-Za-z0-9._-]`, starting with a letter or digit;
 * - snapshot id: `<volume id>@<checkpoint name>`, the checkpoint name in the same alphabet.
 */
import { K8S_CSI_PARAMETER_PREFIX, Parameter } from '../constants.js';
import { SUPPORTED_FS_TYPES, type FsType } from '../host/mounter.js';
import { CsiError, CsiErrorCode, invalidArgument } from '../volumes/errors.js';
import { isValidVolumeId, MAX_ID_BYTES, tryParseSnapshotId, type SnapshotRef } from '../volumes/ids.js';
import {
  SUPPORTED_ACCESS_MODES,
  type AccessMode,
  type ContentSource,
  type ParsedCapability,
  type ParsedCapacityRange,
  type VolumeParameters,
} from '../volumes/spec.js';
import type { CapacityRange__Output } from './generated/csi/v1/CapacityRange.js';
import type { ControllerExpandVolumeRequest__Output } from './generated/csi/v1/ControllerExpandVolumeRequest.js';
import type { CreateSnapshotRequest__Output } from './generated/csi/v1/CreateSnapshotRequest.js';
import type { CreateVolumeGroupSnapshotRequest__Output } from './generated/csi/v1/CreateVolumeGroupSnapshotRequest.js';
import type { CreateVolumeRequest__Output } from './generated/csi/v1/CreateVolumeRequest.js';
import type { DeleteSnapshotRequest__Output } from './generated/csi/v1/DeleteSnapshotRequest.js';
import type { DeleteVolumeRequest__Output } from './generated/csi/v1/DeleteVolumeRequest.js';
import type { NodeExpandVolumeRequest__Output } from './generated/csi/v1/NodeExpandVolumeRequest.js';
import type { NodeGetVolumeStatsRequest__Output } from './generated/csi/v1/NodeGetVolumeStatsRequest.js';
import type { NodePublishVolumeRequest__Output } from './generated/csi/v1/NodePublishVolumeRequest.js';
import type { NodeStageVolumeRequest__Output } from './generated/csi/v1/NodeStageVolumeRequest.js';
import type { NodeUnpublishVolumeRequest__Output } from './generated/csi/v1/NodeUnpublishVolumeRequest.js';
import type { NodeUnstageVolumeRequest__Output } from './generated/csi/v1/NodeUnstageVolumeRequest.js';
import type { TopologyRequirement__Output } from './generated/csi/v1/TopologyRequirement.js';
import type { ValidateVolumeCapabilitiesRequest__Output } from './generated/csi/v1/ValidateVolumeCapabilitiesRequest.js';
import type { VolumeCapability__Output } from './generated/csi/v1/VolumeCapability.js';

// ---- Limits and formats ----

export const MIN_GRAIN_SIZE = 4096;
export const MAX_GRAIN_SIZE = 1024 * 1024;
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;


// ---- Primitive checks ----

/** The value of a required string field; INVALID_ARGUMENT when it is missing or empty. */
export function requireString(value: string | null | undefined, field: string): string {
  if (typeof value !== 'string' || value === '') throw invalidArgument(`${field} is required`);
  return value;
}

/** A required name (CreateVolume/CreateSnapshot `name`): non-empty, at most 128 bytes. */
export function validateName(value: string | null | undefined, field = 'name'): string {
  const name = requireString(value, field);
  if (Buffer.byteLength(name, 'utf8') > MAX_ID_BYTES) throw invalidArgument(`${field} is longer than ${MAX_ID_BYTES} bytes`);
  return name;
}

/**
 * A required volume id. Missing → INVALID_ARGUMENT; malformed → NOT_FOUND (no such volume can exist).
 */
export function validateVolumeId(value: string | null | undefined, field = 'volume_id'): string {
  const id = requireString(value, field);
  if (!isValidVolumeId(id)) throw new CsiError(CsiErrorCode.NotFound, `volume ${JSON.stringify(id)} not found (malformed ${field})`);
  return id;
}

/** A required snapshot id. Missing → INVALID_ARGUMENT; malformed → NOT_FOUND. */
export function parseSnapshotId(value: string | null | undefined, field = 'snapshot_id'): SnapshotRef {
  const id = requireString(value, field);
  const ref = tryParseSnapshotId(id);
  if (ref === undefined) throw new CsiError(CsiErrorCode.NotFound, `snapshot ${JSON.stringify(id)} not found (malformed ${field})`);
  return ref;
}

/** An absolute path on the node (staging or target path). */
export function validatePath(value: string | null | undefined, field: string): string {
  const path = requireString(value, field);
  if (!path.startsWith('/')) throw invalidArgument(`${field} must be an absolute path, got ${JSON.stringify(path)}`);
  if (path.includes('\0')) throw invalidArgument(`${field} contains a NUL byte`);
  return path;
}

/** Parses a proto int64 (a decimal string under `longs: String`) to bigint without rounding. */
export function parseInt64(value: string | number | null | undefined, field: string): bigint {
  if (value === null || value === undefined || value === '') return 0n;
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) throw invalidArgument(`${field} ${value} is not an exact integer`);
    return BigInt(value);
  }
  if (!/^-?\d{1,20}$/.test(value)) throw invalidArgument(`${field} ${JSON.stringify(value)} is not an int64`);
  const n = BigInt(value);
  if (n < INT64_MIN || n > INT64_MAX) throw invalidArgument(`${field} ${value} is out of the int64 range`);
  return n;
}

// ---- Volume capabilities ----

function isOneOf<T extends string>(list: readonly T[], value: string): value is T {
  return (list as readonly string[]).includes(value);
}

/** Why a capability is unsupported, or undefined when flashcsi supports it. Never throws. */
export function capabilityProblem(cap: VolumeCapability__Output | null | undefined): string | undefined {
  if (cap === null || cap === undefined) return 'volume capability is empty';
  const mode = cap.access_mode?.mode ?? 'UNKNOWN';
  if (!isOneOf(SUPPORTED_ACCESS_MODES, String(mode))) {
    return `access mode ${String(mode)} is not supported (supported: ${SUPPORTED_ACCESS_MODES.join(', ')})`;
  }
  if (cap.block) return undefined;
  if (cap.mount) {
    const fsType = cap.mount.fs_type ?? '';
    if (fsType !== '' && !isOneOf(SUPPORTED_FS_TYPES, fsType)) {
      return `fs_type ${JSON.stringify(fsType)} is not supported (supported: ${SUPPORTED_FS_TYPES.join(', ')})`;
    }
    return undefined;
  }
  return 'volume capability has neither block nor mount access type';
}

/** A supported capability, or INVALID_ARGUMENT naming the problem. */
export function parseVolumeCapability(cap: VolumeCapability__Output | null | undefined, field = 'volume_capability'): ParsedCapability {
  if (cap === null || cap === undefined) throw invalidArgument(`${field} is required`);
  const problem = capabilityProblem(cap);
  if (problem !== undefined) throw invalidArgument(`${field}: ${problem}`);
  const accessMode = String(cap.access_mode?.mode) as AccessMode;
  if (cap.block) return { kind: 'block', accessMode };
  const mount = cap.mount ?? { fs_type: '', mount_flags: [], volume_mount_group: '' };
  return {
    kind: 'mount',
    accessMode,
    fsType: (mount.fs_type ?? '') as FsType | '',
    mountFlags: [...(mount.mount_flags ?? [])],
    volumeMountGroup: mount.volume_mount_group ?? '',
  };
}

/** A non-empty list of supported capabilities. */
export function parseVolumeCapabilities(
  caps: readonly VolumeCapability__Output[] | null | undefined,
  field = 'volume_capabilities',
): ParsedCapability[] {
  if (caps === null || caps === undefined || caps.length === 0) throw invalidArgument(`${field} is required`);
  return caps.map((cap, i) => parseVolumeCapability(cap, `${field}[${i}]`));
}

// ---- Capacity ----

/**
 * Parses a capacity range. Undefined when the request has none. INVALID_ARGUMENT for a negative
 * value, for a range with neither field set, or for required_bytes > limit_bytes.
 */
export function parseCapacityRange(
  range: CapacityRange__Output | null | undefined,
  field = 'capacity_range',
): ParsedCapacityRange | undefined {
  if (range === null || range === undefined) return undefined;
  const requiredBytes = parseInt64(range.required_bytes, `${field}.required_bytes`);
  const limitBytes = parseInt64(range.limit_bytes, `${field}.limit_bytes`);
  if (requiredBytes < 0n) throw invalidArgument(`${field}.required_bytes must not be negative`);
  if (limitBytes < 0n) throw invalidArgument(`${field}.limit_bytes must not be negative`);
  if (requiredBytes === 0n && limitBytes === 0n) throw invalidArgument(`${field} must set required_bytes or limit_bytes`);
  if (limitBytes !== 0n && requiredBytes > limitBytes) {
    throw invalidArgument(`${field}.required_bytes ${requiredBytes} exceeds limit_bytes ${limitBytes}`);
  }
  return { requiredBytes, limitBytes };
}

// ---- Parameters ----

const SIZE_SUFFIX: Readonly<Record<string, number>> = { '': 1, Ki: 1024, Mi: 1024 * 1024 };

/** Parses a grain size: bytes, optionally with a Ki/Mi suffix; a power of two, 4 KiB … 1 MiB. */
export function parseGrainSize(value: string, field: string = Parameter.GrainSize): number {
  const m = /^(\d{1,8})(Ki|Mi)?$/.exec(value);
  if (m === null) throw invalidArgument(`${field} ${JSON.stringify(value)} is not a size (bytes, or a number with Ki/Mi)`);
  const bytes = Number(m[1]) * (SIZE_SUFFIX[m[2] ?? ''] ?? 1);
  if (bytes < MIN_GRAIN_SIZE || bytes > MAX_GRAIN_SIZE || (bytes & (bytes - 1)) !== 0) {
    throw invalidArgument(`${field} ${value} must be a power of two between ${MIN_GRAIN_SIZE} and ${MAX_GRAIN_SIZE} bytes`);
  }
  return bytes;
}

/**
 * Parses StorageClass parameters. Keys under `csi.storage.k8s.io/` (added by the sidecars) are
 * ignored; any other unknown key is INVALID_ARGUMENT, so a typo in a StorageClass is reported
 * instead of silently ignored.
 */
export function parseVolumeParameters(params: Readonly<Record<string, string>> | null | undefined, field = 'parameters'): VolumeParameters {
  let grainSize: number | undefined;
  let fsType: FsType | undefined;
  const known = Object.values(Parameter) as string[];
  for (const [key, value] of Object.entries(params ?? {})) {
    if (key.startsWith(K8S_CSI_PARAMETER_PREFIX)) continue;
    switch (key) {
      case Parameter.GrainSize:
        grainSize = parseGrainSize(value, `${field}.${key}`);
        break;
      case Parameter.FsType:
        if (!isOneOf(SUPPORTED_FS_TYPES, value)) {
          throw invalidArgument(`${field}.${key} ${JSON.stringify(value)} is not supported (supported: ${SUPPORTED_FS_TYPES.join(', ')})`);
        }
        fsType = value;
        break;
      default:
        throw invalidArgument(`${field}: unknown key ${JSON.stringify(key)} (known: ${known.join(', ')})`);
    }
  }
  return { grainSize, fsType };
}

/** Parameters where flashcsi accepts none of its own (VolumeSnapshotClass, group snapshot class). */
export function rejectUnknownParameters(params: Readonly<Record<string, string>> | null | undefined, field = 'parameters'): void {
  for (const key of Object.keys(params ?? {})) {
    if (!key.startsWith(K8S_CSI_PARAMETER_PREFIX)) throw invalidArgument(`${field}: unknown key ${JSON.stringify(key)}`);
  }
}

// ---- Controller requests ----

export interface CreateVolumeArgs {
  readonly name: string;
  readonly capabilities: readonly ParsedCapability[];
  readonly capacity: ParsedCapacityRange | undefined;
  readonly parameters: VolumeParameters;
  readonly contentSource: ContentSource | undefined;
  readonly accessibility: TopologyRequirement__Output | null;
}

export function validateCreateVolumeRequest(req: CreateVolumeRequest__Output): CreateVolumeArgs {
  const name = validateName(req.name);
  const capabilities = parseVolumeCapabilities(req.volume_capabilities);
  const capacity = parseCapacityRange(req.capacity_range);
  const parameters = parseVolumeParameters(req.parameters);
  let contentSource: ContentSource | undefined;
  const src = req.volume_content_source;
  if (src) {
    if (src.snapshot) {
      const snapshotId = requireString(src.snapshot.snapshot_id, 'volume_content_source.snapshot.snapshot_id');
      contentSource = { kind: 'snapshot', snapshotId, snapshot: parseSnapshotId(snapshotId, 'volume_content_source.snapshot.snapshot_id') };
    } else if (src.volume) {
      contentSource = { kind: 'volume', volumeId: validateVolumeId(src.volume.volume_id, 'volume_content_source.volume.volume_id') };
    } else {
      throw invalidArgument('volume_content_source has neither snapshot nor volume');
    }
  }
  return { name, capabilities, capacity, parameters, contentSource, accessibility: req.accessibility_requirements ?? null };
}

/**
 * DeleteVolume: the id is required; `wellFormed` is false for an id flashcsi cannot have issued,
 * which the handler answers with success (the volume does not exist, so it is deleted).
 */
export function validateDeleteVolumeRequest(req: DeleteVolumeRequest__Output): { readonly volumeId: string; readonly wellFormed: boolean } {
  const volumeId = requireString(req.volume_id, 'volume_id');
  return { volumeId, wellFormed: isValidVolumeId(volumeId) };
}

export interface ValidateVolumeCapabilitiesArgs {
  readonly volumeId: string;
  /** Why the capabilities cannot be confirmed; undefined when all are supported. */
  readonly unsupported: string | undefined;
}

/** ValidateVolumeCapabilities: an unsupported capability is a result ("not confirmed"), not an error. */
export function validateValidateVolumeCapabilitiesRequest(req: ValidateVolumeCapabilitiesRequest__Output): ValidateVolumeCapabilitiesArgs {
  const volumeId = validateVolumeId(req.volume_id);
  if (req.volume_capabilities.length === 0) throw invalidArgument('volume_capabilities is required');
  let unsupported: string | undefined;
  for (const [i, cap] of req.volume_capabilities.entries()) {
    const problem = capabilityProblem(cap);
    if (problem !== undefined) {
      unsupported = `volume_capabilities[${i}]: ${problem}`;
      break;
    }
  }
  return { volumeId, unsupported };
}

export interface ControllerExpandVolumeArgs {
  readonly volumeId: string;
  readonly capacity: ParsedCapacityRange;
  readonly capability: ParsedCapability | undefined;
}

export function validateControllerExpandVolumeRequest(req: ControllerExpandVolumeRequest__Output): ControllerExpandVolumeArgs {
  const volumeId = validateVolumeId(req.volume_id);
  const capacity = parseCapacityRange(req.capacity_range);
  if (capacity === undefined) throw invalidArgument('capacity_range is required');
  const capability = req.volume_capability ? parseVolumeCapability(req.volume_capability) : undefined;
  return { volumeId, capacity, capability };
}

export interface CreateSnapshotArgs {
  readonly sourceVolumeId: string;
  readonly name: string;
}

export function validateCreateSnapshotRequest(req: CreateSnapshotRequest__Output): CreateSnapshotArgs {
  const name = validateName(req.name);
  const sourceVolumeId = validateVolumeId(req.source_volume_id, 'source_volume_id');
  rejectUnknownParameters(req.parameters);
  return { sourceVolumeId, name };
}

/**
 * DeleteSnapshot: the id is required; `snapshot` is undefined for an id flashcsi cannot have
 * issued, which the handler answers with success.
 */
export function validateDeleteSnapshotRequest(req: DeleteSnapshotRequest__Output): { readonly snapshotId: string; readonly snapshot: SnapshotRef | undefined } {
  const snapshotId = requireString(req.snapshot_id, 'snapshot_id');
  return { snapshotId, snapshot: tryParseSnapshotId(snapshotId) };
}

export interface CreateVolumeGroupSnapshotArgs {
  readonly name: string;
  readonly sourceVolumeIds: readonly string[];
}

export function validateCreateVolumeGroupSnapshotRequest(req: CreateVolumeGroupSnapshotRequest__Output): CreateVolumeGroupSnapshotArgs {
  const name = validateName(req.name);
  if (req.source_volume_ids.length === 0) throw invalidArgument('source_volume_ids is required');
  const seen = new Set<string>();
  for (const [i, id] of req.source_volume_ids.entries()) {
    validateVolumeId(id, `source_volume_ids[${i}]`);
    if (seen.has(id)) throw invalidArgument(`source_volume_ids lists ${JSON.stringify(id)} twice`);
    seen.add(id);
  }
  rejectUnknownParameters(req.parameters);
  return { name, sourceVolumeIds: [...req.source_volume_ids] };
}

// ---- Node requests ----

export interface NodeStageVolumeArgs {
  readonly volumeId: string;
  readonly stagingTargetPath: string;
  readonly capability: ParsedCapability;
  readonly publishContext: Readonly<Record<string, string>>;
  readonly volumeContext: Readonly<Record<string, string>>;
}

export function validateNodeStageVolumeRequest(req: NodeStageVolumeRequest__Output): NodeStageVolumeArgs {
  return {
    volumeId: validateVolumeId(req.volume_id),
    stagingTargetPath: validatePath(req.staging_target_path, 'staging_target_path'),
    capability: parseVolumeCapability(req.volume_capability),
    publishContext: { ...req.publish_context },
    volumeContext: { ...req.volume_context },
  };
}

export function validateNodeUnstageVolumeRequest(req: NodeUnstageVolumeRequest__Output): { readonly volumeId: string; readonly stagingTargetPath: string } {
  return {
    volumeId: validateVolumeId(req.volume_id),
    stagingTargetPath: validatePath(req.staging_target_path, 'staging_target_path'),
  };
}

export interface NodePublishVolumeArgs {
  readonly volumeId: string;
  readonly stagingTargetPath: string;
  readonly targetPath: string;
  readonly capability: ParsedCapability;
  readonly readonly: boolean;
  readonly volumeContext: Readonly<Record<string, string>>;
}

/** NodePublishVolume; staging_target_path is required because flashcsi advertises STAGE_UNSTAGE_VOLUME. */
export function validateNodePublishVolumeRequest(req: NodePublishVolumeRequest__Output): NodePublishVolumeArgs {
  return {
    volumeId: validateVolumeId(req.volume_id),
    stagingTargetPath: validatePath(req.staging_target_path, 'staging_target_path'),
    targetPath: validatePath(req.target_path, 'target_path'),
    capability: parseVolumeCapability(req.volume_capability),
    readonly: req.readonly === true,
    volumeContext: { ...req.volume_context },
  };
}

export function validateNodeUnpublishVolumeRequest(req: NodeUnpublishVolumeRequest__Output): { readonly volumeId: string; readonly targetPath: string } {
  return { volumeId: validateVolumeId(req.volume_id), targetPath: validatePath(req.target_path, 'target_path') };
}

export interface NodeExpandVolumeArgs {
  readonly volumeId: string;
  readonly volumePath: string;
  readonly stagingTargetPath: string | undefined;
  readonly capacity: ParsedCapacityRange | undefined;
  readonly capability: ParsedCapability | undefined;
}

export function validateNodeExpandVolumeRequest(req: NodeExpandVolumeRequest__Output): NodeExpandVolumeArgs {
  return {
    volumeId: validateVolumeId(req.volume_id),
    volumePath: validateVolumePath(req.volume_path),
    stagingTargetPath: req.staging_target_path ? validatePath(req.staging_target_path, 'staging_target_path') : undefined,
    capacity: parseCapacityRange(req.capacity_range),
    capability: req.volume_capability ? parseVolumeCapability(req.volume_capability) : undefined,
  };
}

export function validateNodeGetVolumeStatsRequest(req: NodeGetVolumeStatsRequest__Output): { readonly volumeId: string; readonly volumePath: string } {
  return { volumeId: validateVolumeId(req.volume_id), volumePath: validateVolumePath(req.volume_path) };
}

/**
 * `volume_path` of NodeGetVolumeStats and NodeExpandVolume: required (INVALID_ARGUMENT when
 * missing), but a path that is not absolute is NOT_FOUND rather than malformed: the spec's code
 * for "the volume does not exist on the specified volume_path", and no volume can be at a
 * relative path.
 */
export function validateVolumePath(value: string | null | undefined): string {
  const path = requireString(value, 'volume_path');
  if (!path.startsWith('/') || path.includes('\0')) throw new CsiError(CsiErrorCode.NotFound, `no volume at ${JSON.stringify(path)} (volume_path must be absolute)`);
  return path;
}
