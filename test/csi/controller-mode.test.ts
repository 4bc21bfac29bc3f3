/**
 * `flashcsi plugin --mode controller` (beside csi-resizer in the coordinator pod) holds no volumes:
 * ControllerExpandVolume for a volume it does not hold answers with the new size and
 * node_expansion_required, so NodeExpandVolume on the volume's node does the growing. The same
 * request in mode `all`, where volumes live, is NOT_FOUND as the spec says.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { status as grpcStatus } from '@grpc/grpc-js';
import { MOUNT_CAP, call, callError, shortTempDir, startPlugin } from './plugin-process.js';

test('controller-only mode delegates expansion of a volume it does not hold to the node', async () => {
  const dir = await shortTempDir();
  const controller = await startPlugin(dir, { extraArgs: ['--mode', 'controller'] });
  try {
    await controller.waitReady();
    const res = await call<{ capacity_bytes: string; node_expansion_required: boolean }>(controller.c.controller, 'ControllerExpandVolume', {
      volume_id: 'pvc-on-another-node',
      capacity_range: { required_bytes: String(3 * 2 ** 30 + 1) },
      volume_capability: MOUNT_CAP(),
    });
    assert.equal(res.node_expansion_required, true);
    assert.equal(res.capacity_bytes, String(3 * 2 ** 30 + 2 ** 20), 'rounded up to whole MiB like CreateVolume');
  } finally {
    await controller.stop();
  }
  const all = await startPlugin(dir, { extraArgs: ['--mode', 'all'] });
  try {
    await all.waitReady();
    const err = await callError(all.c.controller, 'ControllerExpandVolume', {
      volume_id: 'pvc-on-another-node',
      capacity_range: { required_bytes: String(2 ** 30) },
      volume_capability: MOUNT_CAP(),
    });
    assert.equal(err.code, grpcStatus.NOT_FOUND);
  } finally {
    await all.stop();
    await rm(dir, { recursive: true, force: true });
  }
});
