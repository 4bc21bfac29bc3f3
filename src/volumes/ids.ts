/**
 * How CSI names become flashcsi ids. Every id is derived from the CO's name alone, so a retried
 * create finds the object its first attempt made (idempotency without an index), and every id is
 * safe as a file name.
 *
 * - volume id: the CSI name itself when it matches `^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`, else
 *   `v-` + the first 40 hex digits of sha256(name);
 * - checkpoint name of a snapshot: the CSI snapshot name when it is a valid engine checkpoint name
 *   (and within the 128-byte id alphabet), else `s-` + 40 hex digits; the snapshot id is
 *   `<volume id>@<checkpoint name>` (formatSnapshotId, tryParseSnapshotId below);
 * - group snapshot id: `g-` + 40 hex digits of sha256(name). Each member volume gets a checkpoint
 *   of that same name, so a member's snapshot id is `<volume id>@<group id>`.
 */
import { createHash } from 'node:crypto';
import { validateCheckpointName } from '../engine/index.js';
import { invalidArgument } from './errors.js';

/** CSI's size limit for ids and names, in bytes. */
export const MAX_ID_BYTES = 128;

const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const SNAPSHOT_ID_SEPARATOR = '@';

/** Whether `id` has the form of a flashcsi volume id (or checkpoint name). */
export function isValidVolumeId(id: string): boolean {
  return Buffer.byteLength(id, 'utf8') <= MAX_ID_BYTES && ID_PATTERN.test(id);
}

/** A snapshot id taken apart: the volume it belongs to and the checkpoint in that volume. */
export interface SnapshotRef {
  readonly volumeId: string;
  readonly checkpoint: string;
}

/** Builds a snapshot id; throws INVALID_ARGUMENT if either part is outside the id alphabet. */
export function formatSnapshotId(volumeId: string, checkpoint: string): string {
  if (!isValidVolumeId(volumeId)) throw invalidArgument(`volume id ${JSON.stringify(volumeId)} is malformed`);
  if (!isValidVolumeId(checkpoint)) throw invalidArgument(`checkpoint name ${JSON.stringify(checkpoint)} is malformed`);
  return `${volumeId}${SNAPSHOT_ID_SEPARATOR}${checkpoint}`;
}

/** Parses a snapshot id, or returns undefined when it is not one flashcsi could have issued. */
export function tryParseSnapshotId(id: string): SnapshotRef | undefined {
  const at = id.indexOf(SNAPSHOT_ID_SEPARATOR);
  if (at < 0) return undefined;
  const volumeId = id.slice(0, at);
  const checkpoint = id.slice(at + 1);
  if (!isValidVolumeId(volumeId) || !isValidVolumeId(checkpoint)) return undefined;
  return { volumeId, checkpoint };
}

const VOLUME_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const GROUP_PREFIX = 'g-';

function hash40(name: string): string {
  return createHash('sha256').update(name, 'utf8').digest('hex').slice(0, 40);
}

/** The volume id for a CreateVolume name. */
export function volumeIdForName(name: string): string {
  return VOLUME_ID.test(name) ? name : `v-${hash40(name)}`;
}

/** The checkpoint name for a CreateSnapshot name. */
export function checkpointNameForSnapshot(name: string): string {
  if (isValidVolumeId(name)) {
    try {
      validateCheckpointName(name);
      return name;
    } catch {
      // fall through to the hashed form
    }
  }
  return `s-${hash40(name)}`;
}

/** The group snapshot id (and member checkpoint name) for a CreateVolumeGroupSnapshot name. */
export function groupIdForName(name: string): string {
  return `${GROUP_PREFIX}${hash40(name)}`;
}

/** Whether a group snapshot id has the form flashcsi issues. */
export function isGroupId(id: string): boolean {
  return /^g-[0-9a-f]{40}$/.test(id);
}
