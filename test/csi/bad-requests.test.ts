/**
 * Bad requests against a real plugin process get exactly the gRPC code the CSI spec asks for, and
 * leave no state behind: after every case the state directory is byte-for-byte what it was (every
 * file's path, size, mode and mtime), so no failed call created, opened, or half-created anything.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import { join, relative } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { status } from '@grpc/grpc-js';
import { TOPOLOGY_NODE_KEY } from '../../src/constants.js';
import { BLOCK_CAP, call, callError, MiB, MOUNT_CAP, shortTempDir, startPlugin, sweep, type PluginProcess } from './plugin-process.js';

/** Every file and directory under `root`: path → size, mode, mtime. */
async function snapshotTree(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (dir: string): Promise<void> => {
    for (const entry of await fsp.readdir(dir, { withFileTypes: true })) {
      const full = join(dir, entry.name);
      const st = await fsp.lstat(full);
      out[relative(root, full)] = `${st.size} ${st.mode.toString(8)} ${st.mtimeMs}`;
      if (entry.isDirectory()) await walk(full);
    }
  };
  await walk(root);
  return out;
}

type Service = 'controller' | 'node' | 'groupController';

interface Case {
  readonly what: string;
  readonly service: Service;
  readonly method: string;
  readonly req: Record<string, unknown>;
  readonly code: status;
}

const size = String(64 * MiB);
const mount = MOUNT_CAP();
const create = (req: Record<string, unknown>): Record<string, unknown> => ({ name: 'new-vol', volume_capabilities: [mount], ...req });

const CASES: readonly Case[] = [
  // CreateVolume
  { what: 'CreateVolume without a name', service: 'controller', method: 'CreateVolume', req: { volume_capabilities: [mount] }, code: status.INVALID_ARGUMENT },
  { what: 'CreateVolume without capabilities', service: 'controller', method: 'CreateVolume', req: { name: 'x' }, code: status.INVALID_ARGUMENT },
  { what: 'CreateVolume with a multi-node access mode', service: 'controller', method: 'CreateVolume', req: create({ volume_capabilities: [MOUNT_CAP('ext4', 'MULTI_NODE_MULTI_WRITER')] }), code: status.INVALID_ARGUMENT },
  { what: 'CreateVolume with fs_type btrfs', service: 'controller', method: 'CreateVolume', req: create({ volume_capabilities: [MOUNT_CAP('btrfs')] }), code: status.INVALID_ARGUMENT },
  { what: 'CreateVolume with neither block nor mount', service: 'controller', method: 'CreateVolume', req: create({ volume_capabilities: [{ access_mode: { mode: 'SINGLE_NODE_WRITER' } }] }), code: status.INVALID_ARGUMENT },
  { what: 'CreateVolume with required > limit', service: 'controller', method: 'CreateVolume', req: create({ capacity_range: { required_bytes: String(2 * MiB), limit_bytes: String(MiB) } }), code: status.INVALID_ARGUMENT },
  { what: 'CreateVolume with a negative size', service: 'controller', method: 'CreateVolume', req: create({ capacity_range: { required_bytes: '-1' } }), code: status.INVALID_ARGUMENT },
  { what: 'CreateVolume whose limit fits no 1 MiB-aligned size', service: 'controller', method: 'CreateVolume', req: create({ capacity_range: { limit_bytes: '1000' } }), code: status.OUT_OF_RANGE },
  { what: 'CreateVolume beyond the largest volume', service: 'controller', method: 'CreateVolume', req: create({ capacity_range: { required_bytes: String(2n ** 62n) } }), code: status.OUT_OF_RANGE },
  { what: 'CreateVolume with an unknown parameter', service: 'controller', method: 'CreateVolume', req: create({ parameters: { colour: 'blue' } }), code: status.INVALID_ARGUMENT },
  { what: 'CreateVolume with a bad grainSize', service: 'controller', method: 'CreateVolume', req: create({ parameters: { grainSize: '3000' } }), code: status.INVALID_ARGUMENT },
  { what: 'CreateVolume with fsType ntfs', service: 'controller', method: 'CreateVolume', req: create({ parameters: { fsType: 'ntfs' } }), code: status.INVALID_ARGUMENT },
  { what: 'CreateVolume from an unknown snapshot', service: 'controller', method: 'CreateVolume', req: create({ volume_content_source: { snapshot: { snapshot_id: 'vol@nope' } } }), code: status.NOT_FOUND },
  { what: 'CreateVolume from a snapshot of an unknown volume', service: 'controller', method: 'CreateVolume', req: create({ volume_content_source: { snapshot: { snapshot_id: 'nope@snap1' } } }), code: status.NOT_FOUND },
  { what: 'CreateVolume from a malformed snapshot id', service: 'controller', method: 'CreateVolume', req: create({ volume_content_source: { snapshot: { snapshot_id: 'not a snapshot' } } }), code: status.NOT_FOUND },
  { what: 'CreateVolume from an unknown volume', service: 'controller', method: 'CreateVolume', req: create({ volume_content_source: { volume: { volume_id: 'nope' } } }), code: status.NOT_FOUND },
  { what: 'CreateVolume smaller than its source snapshot', service: 'controller', method: 'CreateVolume', req: create({ capacity_range: { required_bytes: String(32 * MiB) }, volume_content_source: { snapshot: { snapshot_id: 'vol@snap1' } } }), code: status.OUT_OF_RANGE },
  { what: 'CreateVolume with a limit below its source snapshot', service: 'controller', method: 'CreateVolume', req: create({ capacity_range: { limit_bytes: String(32 * MiB) }, volume_content_source: { snapshot: { snapshot_id: 'vol@snap1' } } }), code: status.OUT_OF_RANGE },
  { what: 'CreateVolume from a snapshot with another grain size', service: 'controller', method: 'CreateVolume', req: create({ parameters: { grainSize: '4096' }, volume_content_source: { snapshot: { snapshot_id: 'vol@snap1' } } }), code: status.INVALID_ARGUMENT },
  { what: 'CreateVolume with an existing name and another size', service: 'controller', method: 'CreateVolume', req: { name: 'vol', volume_capabilities: [mount], capacity_range: { required_bytes: String(128 * MiB), limit_bytes: String(128 * MiB) } }, code: status.ALREADY_EXISTS },
  { what: 'CreateVolume with an existing name and another source', service: 'controller', method: 'CreateVolume', req: { name: 'vol', volume_capabilities: [mount], volume_content_source: { volume: { volume_id: 'vol2' } } }, code: status.ALREADY_EXISTS },
  { what: 'CreateVolume required on another node', service: 'controller', method: 'CreateVolume', req: create({ accessibility_requirements: { requisite: [{ segments: { [TOPOLOGY_NODE_KEY]: 'elsewhere' } }] } }), code: status.RESOURCE_EXHAUSTED },
  // Other controller RPCs
  { what: 'DeleteVolume without an id', service: 'controller', method: 'DeleteVolume', req: {}, code: status.INVALID_ARGUMENT },
  { what: 'ControllerExpandVolume without an id', service: 'controller', method: 'ControllerExpandVolume', req: { capacity_range: { required_bytes: size } }, code: status.INVALID_ARGUMENT },
  { what: 'ControllerExpandVolume without a range', service: 'controller', method: 'ControllerExpandVolume', req: { volume_id: 'vol' }, code: status.INVALID_ARGUMENT },
  { what: 'ControllerExpandVolume of an unknown volume', service: 'controller', method: 'ControllerExpandVolume', req: { volume_id: 'nope', capacity_range: { required_bytes: size } }, code: status.NOT_FOUND },
  { what: 'ControllerExpandVolume with a limit below the size (no shrinking)', service: 'controller', method: 'ControllerExpandVolume', req: { volume_id: 'vol', capacity_range: { limit_bytes: String(32 * MiB) } }, code: status.OUT_OF_RANGE },
  { what: 'ValidateVolumeCapabilities of an unknown volume', service: 'controller', method: 'ValidateVolumeCapabilities', req: { volume_id: 'nope', volume_capabilities: [mount] }, code: status.NOT_FOUND },
  { what: 'ValidateVolumeCapabilities without capabilities', service: 'controller', method: 'ValidateVolumeCapabilities', req: { volume_id: 'vol' }, code: status.INVALID_ARGUMENT },
  { what: 'ControllerGetVolume of an unknown volume', service: 'controller', method: 'ControllerGetVolume', req: { volume_id: 'nope' }, code: status.NOT_FOUND },
  { what: 'ControllerGetVolume without an id', service: 'controller', method: 'ControllerGetVolume', req: {}, code: status.INVALID_ARGUMENT },
  { what: 'CreateSnapshot without a name', service: 'controller', method: 'CreateSnapshot', req: { source_volume_id: 'vol' }, code: status.INVALID_ARGUMENT },
  { what: 'CreateSnapshot of an unknown volume', service: 'controller', method: 'CreateSnapshot', req: { name: 's', source_volume_id: 'nope' }, code: status.NOT_FOUND },
  { what: 'CreateSnapshot with a name taken on another volume', service: 'controller', method: 'CreateSnapshot', req: { name: 'snap1', source_volume_id: 'vol2' }, code: status.ALREADY_EXISTS },
  { what: 'CreateSnapshot with an unknown parameter', service: 'controller', method: 'CreateSnapshot', req: { name: 's', source_volume_id: 'vol', parameters: { x: 'y' } }, code: status.INVALID_ARGUMENT },
  { what: 'GetSnapshot of an unknown snapshot', service: 'controller', method: 'GetSnapshot', req: { snapshot_id: 'vol@nope' }, code: status.NOT_FOUND },
  { what: 'GetSnapshot of a malformed id', service: 'controller', method: 'GetSnapshot', req: { snapshot_id: 'nope' }, code: status.NOT_FOUND },
  { what: 'GetSnapshot without an id', service: 'controller', method: 'GetSnapshot', req: {}, code: status.INVALID_ARGUMENT },
  { what: 'ListVolumes with a token flashcsi never issued', service: 'controller', method: 'ListVolumes', req: { starting_token: 'abc' }, code: status.ABORTED },
  { what: 'ListSnapshots with a token past the end', service: 'controller', method: 'ListSnapshots', req: { starting_token: '99' }, code: status.ABORTED },
  { what: 'ListSnapshots with negative max_entries', service: 'controller', method: 'ListSnapshots', req: { max_entries: -1 }, code: status.INVALID_ARGUMENT },
  { what: 'ControllerPublishVolume (no attach step)', service: 'controller', method: 'ControllerPublishVolume', req: { volume_id: 'vol', node_id: 'test-node' }, code: status.UNIMPLEMENTED },
  { what: 'ControllerModifyVolume (no mutable parameters)', service: 'controller', method: 'ControllerModifyVolume', req: { volume_id: 'vol' }, code: status.UNIMPLEMENTED },
  // Node
  { what: 'NodeStageVolume of an unknown volume', service: 'node', method: 'NodeStageVolume', req: { volume_id: 'nope', staging_target_path: '/tmp/fcsi-nowhere', volume_capability: mount }, code: status.NOT_FOUND },
  { what: 'NodeStageVolume without a capability', service: 'node', method: 'NodeStageVolume', req: { volume_id: 'vol', staging_target_path: '/tmp/fcsi-nowhere' }, code: status.INVALID_ARGUMENT },
  { what: 'NodeStageVolume with a relative staging path', service: 'node', method: 'NodeStageVolume', req: { volume_id: 'vol', staging_target_path: 'relative', volume_capability: mount }, code: status.INVALID_ARGUMENT },
  { what: 'NodeStageVolume with a multi-node access mode', service: 'node', method: 'NodeStageVolume', req: { volume_id: 'vol', staging_target_path: '/tmp/fcsi-nowhere', volume_capability: BLOCK_CAP('MULTI_NODE_READER_ONLY') }, code: status.INVALID_ARGUMENT },
  { what: 'NodePublishVolume of a volume that is not staged', service: 'node', method: 'NodePublishVolume', req: { volume_id: 'vol', staging_target_path: '/tmp/fcsi-nowhere', target_path: '/tmp/fcsi-nowhere-t', volume_capability: mount }, code: status.FAILED_PRECONDITION },
  { what: 'NodePublishVolume without a target', service: 'node', method: 'NodePublishVolume', req: { volume_id: 'vol', staging_target_path: '/tmp/fcsi-nowhere', volume_capability: mount }, code: status.INVALID_ARGUMENT },
  { what: 'NodeUnstageVolume of an unknown volume', service: 'node', method: 'NodeUnstageVolume', req: { volume_id: 'nope', staging_target_path: '/tmp/fcsi-nowhere' }, code: status.NOT_FOUND },
  { what: 'NodeGetVolumeStats of an unknown volume', service: 'node', method: 'NodeGetVolumeStats', req: { volume_id: 'nope', volume_path: '/tmp' }, code: status.NOT_FOUND },
  { what: 'NodeGetVolumeStats of a volume not staged here', service: 'node', method: 'NodeGetVolumeStats', req: { volume_id: 'vol', volume_path: '/tmp' }, code: status.NOT_FOUND },
  { what: 'NodeExpandVolume of an unknown volume', service: 'node', method: 'NodeExpandVolume', req: { volume_id: 'nope', volume_path: '/tmp' }, code: status.NOT_FOUND },
  // GroupController
  { what: 'CreateVolumeGroupSnapshot without sources', service: 'groupController', method: 'CreateVolumeGroupSnapshot', req: { name: 'g' }, code: status.INVALID_ARGUMENT },
  { what: 'CreateVolumeGroupSnapshot with a source twice', service: 'groupController', method: 'CreateVolumeGroupSnapshot', req: { name: 'g', source_volume_ids: ['vol', 'vol'] }, code: status.INVALID_ARGUMENT },
  { what: 'CreateVolumeGroupSnapshot with an unknown source', service: 'groupController', method: 'CreateVolumeGroupSnapshot', req: { name: 'g', source_volume_ids: ['vol', 'nope'] }, code: status.NOT_FOUND },
  { what: 'GetVolumeGroupSnapshot of an unknown group', service: 'groupController', method: 'GetVolumeGroupSnapshot', req: { group_snapshot_id: 'g-0000000000000000000000000000000000000000' }, code: status.NOT_FOUND },
];

describe('bad requests: exact codes, no state left behind', () => {
  let dir: string;
  let p: PluginProcess;
  let baseline: Record<string, string>;

  before(async () => {
    dir = await shortTempDir();
    p = await startPlugin(dir);
    await p.waitReady();
    for (const name of ['vol', 'vol2']) await call(p.c.controller, 'CreateVolume', { name, capacity_range: { required_bytes: size }, volume_capabilities: [mount] });
    await call(p.c.controller, 'CreateSnapshot', { name: 'snap1', source_volume_id: 'vol' });
    baseline = await snapshotTree(p.stateDir);
  });
  after(async () => {
    await p.stop().catch(() => undefined);
    await sweep(dir);
  });

  for (const c of CASES) {
    it(`failure case - ${c.what} → ${status[c.code]}`, async () => {
      const err = await callError(p.c[c.service], c.method, c.req);
      assert.equal(status[err.code], status[c.code], err.details);
      assert.deepEqual(await snapshotTree(p.stateDir), baseline, 'the state directory is unchanged');
    });
  }
});
