/**
 * Every capability flashcsi advertises, in one place: plugin (Identity), controller, node and group
 * controller. The GetCapabilities handlers answer with the builders below and nothing else, so a
 * capability is added or dropped here only.
 */
import type { _csi_v1_ControllerServiceCapability_RPC_Type__Output as ControllerRpcType } from './generated/csi/v1/ControllerServiceCapability.js';
import type { ControllerGetCapabilitiesResponse } from './generated/csi/v1/ControllerGetCapabilitiesResponse.js';
import type { GetPluginCapabilitiesResponse } from './generated/csi/v1/GetPluginCapabilitiesResponse.js';
import type { _csi_v1_GroupControllerServiceCapability_RPC_Type__Output as GroupRpcType } from './generated/csi/v1/GroupControllerServiceCapability.js';
import type { GroupControllerGetCapabilitiesResponse } from './generated/csi/v1/GroupControllerGetCapabilitiesResponse.js';
import type { NodeGetCapabilitiesResponse } from './generated/csi/v1/NodeGetCapabilitiesResponse.js';
import type { _csi_v1_NodeServiceCapability_RPC_Type__Output as NodeRpcType } from './generated/csi/v1/NodeServiceCapability.js';
import type { _csi_v1_PluginCapability_Service_Type__Output as PluginServiceType } from './generated/csi/v1/PluginCapability.js';
import type { _csi_v1_PluginCapability_VolumeExpansion_Type__Output as VolumeExpansionType } from './generated/csi/v1/PluginCapability.js';

/** Plugin services (GetPluginCapabilities). */
export const PLUGIN_SERVICES: readonly PluginServiceType[] = Object.freeze([
  'CONTROLLER_SERVICE',
  'VOLUME_ACCESSIBILITY_CONSTRAINTS',
  'GROUP_CONTROLLER_SERVICE',
  'SNAPSHOT_METADATA_SERVICE',
]);

/** Volume expansion mode (GetPluginCapabilities): volumes grow while in use. */
export const VOLUME_EXPANSION: VolumeExpansionType = 'ONLINE';

/** Controller RPCs (ControllerGetCapabilities). */
export const CONTROLLER_CAPABILITIES: readonly ControllerRpcType[] = Object.freeze([
  'CREATE_DELETE_VOLUME',
  'CREATE_DELETE_SNAPSHOT',
  'LIST_SNAPSHOTS',
  'LIST_VOLUMES',
  'GET_CAPACITY',
  'CLONE_VOLUME',
  'EXPAND_VOLUME',
  'GET_VOLUME',
  'VOLUME_CONDITION',
  'GET_SNAPSHOT',
  'SINGLE_NODE_MULTI_WRITER',
]);

/** Node RPCs (NodeGetCapabilities). */
export const NODE_CAPABILITIES: readonly NodeRpcType[] = Object.freeze([
  'STAGE_UNSTAGE_VOLUME',
  'GET_VOLUME_STATS',
  'EXPAND_VOLUME',
  'VOLUME_CONDITION',
  'SINGLE_NODE_MULTI_WRITER',
]);

/** Group controller RPCs (GroupControllerGetCapabilities). */
export const GROUP_CONTROLLER_CAPABILITIES: readonly GroupRpcType[] = Object.freeze(['CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT']);

export function pluginCapabilitiesResponse(): GetPluginCapabilitiesResponse {
  return {
    capabilities: [
      ...PLUGIN_SERVICES.map((type) => ({ service: { type } })),
      { volume_expansion: { type: VOLUME_EXPANSION } },
    ],
  };
}

export function controllerCapabilitiesResponse(): ControllerGetCapabilitiesResponse {
  return { capabilities: CONTROLLER_CAPABILITIES.map((type) => ({ rpc: { type } })) };
}

export function nodeCapabilitiesResponse(): NodeGetCapabilitiesResponse {
  return { capabilities: NODE_CAPABILITIES.map((type) => ({ rpc: { type } })) };
}

export function groupControllerCapabilitiesResponse(): GroupControllerGetCapabilitiesResponse {
  return { capabilities: GROUP_CONTROLLER_CAPABILITIES.map((type) => ({ rpc: { type } })) };
}
