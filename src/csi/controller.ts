/**
 * The CSI Controller service. Each handler validates (validation.ts), takes the plugin's in-flight
 * keys where it changes something, calls the storage interfaces (src/volumes/local-volumes.ts) and builds the
 * response (responses.ts). Errors are thrown as typed errors; status.ts maps them.
 *
 * Locks: CreateVolume holds the new volume's id and its source volume's id; DeleteVolume,
 * ControllerExpandVolume and DeleteSnapshot the volume's id; CreateSnapshot the source volume's id
 * and `snapshot:<checkpoint name>` (names are unique across volumes). A second call on a busy key
 * gets ABORTED. The listing and get RPCs (ListVolumes, ListSnapshots, GetSnapshot,
 * ControllerGetVolume, ValidateVolumeCapabilities, GetCapacity) take no lock: they read metadata
 * that is only ever replaced whole, without opening any volume.
 *
 * Not implemented (UNIMPLEMENTED, capabilities not advertised): ControllerPublishVolume and
 * ControllerUnpublishVolume (a node-local volume needs no attach step), ControllerModifyVolume.
 */
import { TOPOLOGY_NODE_KEY } from '../constants.js';
import { controllerCapabilitiesResponse } from './capabilities.js';
import { CsiError, CsiErrorCode } from '../volumes/errors.js';
import type { ControllerHandlers } from './generated/csi/v1/Controller.js';
import type { TopologyRequirement__Output } from './generated/csi/v1/TopologyRequirement.js';
import { checkpointNameForSnapshot, tryParseSnapshotId, volumeIdForName } from '../volumes/ids.js';
import type { InFlight } from '../volumes/locks.js';
import { conditionMessage, paginate, snapshotMessage, volumeMessage } from './responses.js';
import type { AsyncService } from './unary.js';
import {
  capabilityProblem,
  parseVolumeParameters,
  requireString,
  validateControllerExpandVolumeRequest,
  validateCreateSnapshotRequest,
  validateCreateVolumeRequest,
  validateDeleteSnapshotRequest,
  validateDeleteVolumeRequest,
  validateValidateVolumeCapabilitiesRequest,
  validateVolumeId,
  parseSnapshotId,
} from './validation.js';
import { CAPACITY_POLICY, type NodeHooks, type SnapshotProvider, type VolumeProvisioner } from '../volumes/local-volumes.js';
import { chooseCapacity, minimumVolumeBytes } from '../volumes/spec.js';

export interface ControllerServiceOptions {
  readonly volumes: VolumeProvisioner;
  readonly snapshots: SnapshotProvider;
  readonly inflight: InFlight;
  /** This node: every volume created here is accessible from it only. */
  readonly nodeId: string;
  /** Present when this process also serves the node (decides node_expansion_required for block volumes). */
  readonly node?: NodeHooks;
  /**
   * Controller-only mode (beside csi-resizer in the coordinator pod) holds no volumes: volumes live
   * on their nodes. ControllerExpandVolume for a volume this instance does not hold then answers
   * with the new size and node_expansion_required, and NodeExpandVolume on the volume's node grows
   * the volume and its file system.
   */
  readonly delegateExpansion?: boolean;
}

/** RESOURCE_EXHAUSTED unless the requisite topologies (if any) include this node. */
export function checkAccessibility(req: TopologyRequirement__Output | null, nodeId: string): void {
  const requisite = req?.requisite ?? [];
  if (requisite.length === 0) return;
  if (!requisite.some((t) => t.segments[TOPOLOGY_NODE_KEY] === nodeId)) {
    throw new CsiError(
      CsiErrorCode.ResourceExhausted,
      `volumes are node-local: this plugin can only provision on node ${JSON.stringify(nodeId)}, which the requisite topologies do not include`,
    );
  }
}

export function createControllerService(options: ControllerServiceOptions): AsyncService<ControllerHandlers> {
  const { volumes, snapshots, inflight, nodeId } = options;
  return {
    ControllerGetCapabilities: async () => controllerCapabilitiesResponse(),

    CreateVolume: async (req) => {
      const args = validateCreateVolumeRequest(req);
      checkAccessibility(args.accessibility, nodeId);
      const volumeId = volumeIdForName(args.name);
      const source = args.contentSource?.kind === 'snapshot' ? args.contentSource.snapshot.volumeId : args.contentSource?.volumeId;
      const keys = source === undefined ? [volumeId] : [volumeId, source];
      const created = await inflight.run(keys, () =>
        volumes.createVolume({
          name: args.name,
          capacity: args.capacity,
          parameters: args.parameters,
          rawParameters: { ...req.parameters },
          contentSource: args.contentSource,
          minimum: minimumVolumeBytes(args.capabilities, args.parameters),
        }),
      );
      return { volume: volumeMessage(created, nodeId) };
    },

    DeleteVolume: async (req) => {
      const { volumeId, wellFormed } = validateDeleteVolumeRequest(req);
      if (!wellFormed) return {}; // no such volume can exist: already deleted
      await inflight.run(volumeId, () => volumes.deleteVolume(volumeId));
      return {};
    },

    ControllerGetVolume: async (req) => {
      const volume = await volumes.getVolume(validateVolumeId(req.volume_id));
      return { volume: volumeMessage(volume, nodeId), status: { published_node_ids: [], volume_condition: conditionMessage(volume.condition) } };
    },

    ValidateVolumeCapabilities: async (req) => {
      const args = validateValidateVolumeCapabilitiesRequest(req);
      await volumes.getVolume(args.volumeId); // NOT_FOUND first
      let problem = args.unsupported;
      if (problem === undefined) {
        try {
          parseVolumeParameters(req.parameters);
        } catch (err) {
          problem = (err as Error).message;
        }
      }
      if (problem !== undefined) return { message: problem };
      return {
        confirmed: { volume_context: { ...req.volume_context }, volume_capabilities: req.volume_capabilities, parameters: { ...req.parameters } },
      };
    },

    ListVolumes: async (req) => {
      const all = await volumes.listVolumes();
      const { page, nextToken } = paginate(all, req.starting_token, req.max_entries);
      return {
        entries: page.map((v) => ({ volume: volumeMessage(v, nodeId), status: { published_node_ids: [], volume_condition: conditionMessage(v.condition) } })),
        next_token: nextToken,
      };
    },

    GetCapacity: async (req) => {
      for (const cap of req.volume_capabilities) {
        const problem = capabilityProblem(cap);
        if (problem !== undefined) throw new CsiError(CsiErrorCode.InvalidArgument, `volume_capabilities: ${problem}`);
      }
      // The parameters are not checked here: capacity does not depend on them, and with storage
      // capacity tracking a refused GetCapacity leaves the StorageClass without capacity, so the
      // scheduler would only say "not enough free storage". CreateVolume names the bad parameter
      // (ProvisioningFailed on the PVC).
      const elsewhere = req.accessible_topology !== null && req.accessible_topology.segments[TOPOLOGY_NODE_KEY] !== nodeId;
      const available = elsewhere ? 0n : await volumes.availableCapacity();
      // Volumes are thin, but one larger than the free space could not be filled: report that as the maximum.
      return { available_capacity: String(available), maximum_volume_size: { value: String(available) } };
    },

    ControllerExpandVolume: async (req) => {
      const args = validateControllerExpandVolumeRequest(req);
      if (options.delegateExpansion && !(await volumes.getVolume(args.volumeId).then(() => true, () => false))) {
        return { capacity_bytes: String(chooseCapacity(args.capacity, CAPACITY_POLICY)), node_expansion_required: true };
      }
      const result = await inflight.run(args.volumeId, () => volumes.expandVolume(args.volumeId, args.capacity));
      const block = args.capability !== undefined ? args.capability.kind === 'block' : (await options.node?.isBlock(args.volumeId)) === true;
      // A file system must be grown by the node; a block device needs nothing more once it shows the new size.
      return { capacity_bytes: String(result.capacityBytes), node_expansion_required: !block || !result.deviceGrown };
    },

    CreateSnapshot: async (req) => {
      const args = validateCreateSnapshotRequest(req);
      const snapshot = await inflight.run([args.sourceVolumeId, `snapshot:${checkpointNameForSnapshot(args.name)}`], () =>
        snapshots.createSnapshot(args.sourceVolumeId, args.name),
      );
      return { snapshot: snapshotMessage(snapshot) };
    },

    DeleteSnapshot: async (req) => {
      const { snapshot } = validateDeleteSnapshotRequest(req);
      if (snapshot === undefined) return {}; // no such snapshot can exist: already deleted
      await inflight.run(snapshot.volumeId, () => snapshots.deleteSnapshot(snapshot));
      return {};
    },

    GetSnapshot: async (req) => {
      const ref = parseSnapshotId(requireString(req.snapshot_id, 'snapshot_id'));
      return { snapshot: snapshotMessage(await snapshots.getSnapshot(ref)) };
    },

    ListSnapshots: async (req) => {
      let all = await snapshots.listSnapshots();
      if (req.snapshot_id !== '') {
        const ref = tryParseSnapshotId(req.snapshot_id);
        all = ref === undefined ? [] : all.filter((s) => s.sourceVolumeId === ref.volumeId && s.checkpoint === ref.checkpoint);
      }
      if (req.source_volume_id !== '') all = all.filter((s) => s.sourceVolumeId === req.source_volume_id);
      const { page, nextToken } = paginate(all, req.starting_token, req.max_entries);
      return { entries: page.map((s) => ({ snapshot: snapshotMessage(s) })), next_token: nextToken };
    },
  };
}
