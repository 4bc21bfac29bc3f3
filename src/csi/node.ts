/**
 * The CSI Node service. Every volume-changing RPC (stage, unstage, publish, unpublish, expand)
 * holds the volume's in-flight key: a second call on the same volume while one runs gets ABORTED
 * and the CO retries. Each of them is idempotent (src/volumes/stager.ts). NodeGetVolumeStats takes no lock: it
 * only reads. NodeGetInfo reports this node and its topology segment, which every volume created
 * here carries.
 */
import { nodeCapabilitiesResponse } from './capabilities.js';
import type { NodeHandlers } from './generated/csi/v1/Node.js';
import type { VolumeUsage } from './generated/csi/v1/VolumeUsage.js';
import type { InFlight } from '../volumes/locks.js';
import { conditionMessage, nodeTopology } from './responses.js';
import type { NodeVolumes } from '../volumes/stager.js';
import type { AsyncService } from './unary.js';
import {
  validateNodeExpandVolumeRequest,
  validateNodeGetVolumeStatsRequest,
  validateNodePublishVolumeRequest,
  validateNodeStageVolumeRequest,
  validateNodeUnpublishVolumeRequest,
  validateNodeUnstageVolumeRequest,
} from './validation.js';

export interface NodeServiceOptions {
  readonly volumes: NodeVolumes;
  readonly inflight: InFlight;
  readonly nodeId: string;
  /** NodeGetInfo.max_volumes_per_node; 0 = no limit. */
  readonly maxVolumesPerNode?: number;
}

export function createNodeService(options: NodeServiceOptions): AsyncService<NodeHandlers> {
  const { volumes, inflight, nodeId } = options;
  return {
    NodeGetCapabilities: async () => nodeCapabilitiesResponse(),

    NodeGetInfo: async () => ({
      node_id: nodeId,
      max_volumes_per_node: String(options.maxVolumesPerNode ?? 0),
      accessible_topology: nodeTopology(nodeId),
    }),

    NodeStageVolume: async (req) => {
      const args = validateNodeStageVolumeRequest(req);
      await inflight.run(args.volumeId, () => volumes.stage({ volumeId: args.volumeId, stagingPath: args.stagingTargetPath, capability: args.capability }));
      return {};
    },

    NodeUnstageVolume: async (req) => {
      const args = validateNodeUnstageVolumeRequest(req);
      await inflight.run(args.volumeId, () => volumes.unstage(args.volumeId, args.stagingTargetPath));
      return {};
    },

    NodePublishVolume: async (req) => {
      const args = validateNodePublishVolumeRequest(req);
      await inflight.run(args.volumeId, () =>
        volumes.publish({
          volumeId: args.volumeId,
          stagingPath: args.stagingTargetPath,
          targetPath: args.targetPath,
          capability: args.capability,
          readOnly: args.readonly,
        }),
      );
      return {};
    },

    NodeUnpublishVolume: async (req) => {
      const args = validateNodeUnpublishVolumeRequest(req);
      await inflight.run(args.volumeId, () => volumes.unpublish(args.volumeId, args.targetPath));
      return {};
    },

    NodeGetVolumeStats: async (req) => {
      const args = validateNodeGetVolumeStatsRequest(req);
      const stats = await volumes.stats(args.volumeId, args.volumePath);
      const usage: VolumeUsage[] =
        stats.fs !== undefined
          ? [
              { unit: 'BYTES', total: String(stats.fs.totalBytes), available: String(stats.fs.availableBytes), used: String(stats.fs.usedBytes) },
              { unit: 'INODES', total: String(stats.fs.totalInodes), available: String(stats.fs.freeInodes), used: String(stats.fs.usedInodes) },
            ]
          : [{ unit: 'BYTES', total: String(stats.deviceBytes ?? 0) }];
      const abnormal = stats.problems.length > 0;
      return { usage, volume_condition: conditionMessage({ abnormal, message: stats.problems.join('; ') }) };
    },

    NodeExpandVolume: async (req) => {
      const args = validateNodeExpandVolumeRequest(req);
      const size = await inflight.run(args.volumeId, () => volumes.expand(args.volumeId, args.volumePath, args.capacity?.requiredBytes ?? 0n));
      return { capacity_bytes: String(size) };
    },
  };
}
