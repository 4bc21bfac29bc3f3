/**
 * The CSI GroupController service: write-order consistent group snapshots (src/volumes/groups.ts does the
 * freeze-all, cut-all, thaw-all). CreateVolumeGroupSnapshot holds `group:<id>` and every member
 * volume's id; DeleteVolumeGroupSnapshot holds `group:<id>` and its members; GetVolumeGroupSnapshot
 * takes no lock (it reads records and metadata only).
 */
import { groupControllerCapabilitiesResponse } from './capabilities.js';
import { CsiError, CsiErrorCode } from '../volumes/errors.js';
import type { GroupControllerHandlers } from './generated/csi/v1/GroupController.js';
import type { VolumeGroupSnapshot } from './generated/csi/v1/VolumeGroupSnapshot.js';
import type { GroupSnapshotDescription, GroupSnapshotProvider } from '../volumes/groups.js';
import { groupIdForName, isGroupId } from '../volumes/ids.js';
import type { InFlight } from '../volumes/locks.js';
import { snapshotMessage, timestamp } from './responses.js';
import type { StateDir } from '../volumes/state.js';
import type { AsyncService } from './unary.js';
import { requireString, validateCreateVolumeGroupSnapshotRequest } from './validation.js';

export interface GroupControllerServiceOptions {
  readonly groups: GroupSnapshotProvider;
  readonly state: StateDir;
  readonly inflight: InFlight;
}

function groupMessage(g: GroupSnapshotDescription): VolumeGroupSnapshot {
  return {
    group_snapshot_id: g.groupSnapshotId,
    snapshots: g.snapshots.map(snapshotMessage),
    creation_time: timestamp(g.createdAt),
    ready_to_use: g.readyToUse,
  };
}

export function createGroupControllerService(options: GroupControllerServiceOptions): AsyncService<GroupControllerHandlers> {
  const { groups, state, inflight } = options;
  return {
    GroupControllerGetCapabilities: async () => groupControllerCapabilitiesResponse(),

    CreateVolumeGroupSnapshot: async (req) => {
      const args = validateCreateVolumeGroupSnapshotRequest(req);
      const groupId = groupIdForName(args.name);
      const group = await inflight.run([`group:${groupId}`, ...args.sourceVolumeIds], () => groups.createGroupSnapshot(args.name, args.sourceVolumeIds));
      return { group_snapshot: groupMessage(group) };
    },

    GetVolumeGroupSnapshot: async (req) => {
      const groupId = requireString(req.group_snapshot_id, 'group_snapshot_id');
      if (!isGroupId(groupId)) throw new CsiError(CsiErrorCode.NotFound, `group snapshot ${JSON.stringify(groupId)} not found`);
      return { group_snapshot: groupMessage(await groups.getGroupSnapshot(groupId, req.snapshot_ids)) };
    },

    DeleteVolumeGroupSnapshot: async (req) => {
      const groupId = requireString(req.group_snapshot_id, 'group_snapshot_id');
      if (!isGroupId(groupId)) return {}; // no such group can exist: already deleted
      const members = (await state.readGroup(groupId))?.volumeIds ?? [];
      await inflight.run([`group:${groupId}`, ...members], () => groups.deleteGroupSnapshot(groupId, req.snapshot_ids));
      return {};
    },
  };
}
