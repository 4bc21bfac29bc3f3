/**
 * Domain descriptions → CSI messages, and list pagination: shared by the Controller, GroupController
 * and Node services so every message of one kind is built in one place.
 */
import { TOPOLOGY_NODE_KEY } from '../constants.js';
import { CsiError, CsiErrorCode, invalidArgument } from '../volumes/errors.js';
import type { Snapshot } from './generated/csi/v1/Snapshot.js';
import type { Timestamp } from './generated/google/protobuf/Timestamp.js';
import type { Topology } from './generated/csi/v1/Topology.js';
import type { Volume } from './generated/csi/v1/Volume.js';
import type { VolumeCondition } from './generated/csi/v1/VolumeCondition.js';
import type { VolumeContentSource } from './generated/csi/v1/VolumeContentSource.js';
import type { Condition, SnapshotDescription, VolumeDescription } from '../volumes/local-volumes.js';

export function timestamp(date: Date): Timestamp {
  const ms = date.getTime();
  return { seconds: String(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 };
}

/** The topology of everything on this node. */
export function nodeTopology(nodeId: string): Topology {
  return { segments: { [TOPOLOGY_NODE_KEY]: nodeId } };
}

export function conditionMessage(c: Condition): VolumeCondition {
  return { abnormal: c.abnormal, message: c.message };
}

function contentSourceMessage(src: VolumeDescription['contentSource']): VolumeContentSource | null {
  if (src === null) return null;
  return src.kind === 'snapshot' ? { snapshot: { snapshot_id: src.id } } : { volume: { volume_id: src.id } };
}

export function volumeMessage(v: VolumeDescription, nodeId: string): Volume {
  return {
    volume_id: v.volumeId,
    capacity_bytes: String(v.capacityBytes),
    volume_context: {},
    content_source: contentSourceMessage(v.contentSource),
    accessible_topology: [nodeTopology(nodeId)],
  };
}

export function snapshotMessage(s: SnapshotDescription): Snapshot {
  return {
    snapshot_id: s.snapshotId,
    source_volume_id: s.sourceVolumeId,
    size_bytes: String(s.sizeBytes),
    creation_time: timestamp(s.createdAt),
    ready_to_use: true,
    group_snapshot_id: s.groupSnapshotId,
  };
}

/**
 * One page of `items`. The token is the decimal offset of the next entry (opaque to the CO); a
 * token that is not one flashcsi issued is ABORTED, as the spec asks. max_entries 0 means all.
 */
export function paginate<T>(items: readonly T[], startingToken: string, maxEntries: number): { page: T[]; nextToken: string } {
  if (maxEntries < 0) throw invalidArgument('max_entries must not be negative');
  let start = 0;
  if (startingToken !== '') {
    if (!/^\d{1,9}$/.test(startingToken) || Number(startingToken) > items.length) {
      throw new CsiError(CsiErrorCode.Aborted, `starting_token ${JSON.stringify(startingToken)} is not valid (list again from the start)`);
    }
    start = Number(startingToken);
  }
  const end = maxEntries === 0 ? items.length : Math.min(items.length, start + maxEntries);
  return { page: items.slice(start, end), nextToken: end < items.length ? String(end) : '' };
}
