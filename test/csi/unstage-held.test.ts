/**
 * NodeUnstageVolume when another mount namespace holds a copy of the volume's file system, through
 * a real `flashcsi plugin` (serve-fuse + loop + ext4). The holder is `unshare -m --propagation
 * private sleep infinity`, started while the volume is staged. Unstaging waits its 30 s for the
 * loop device, then answers FAILED_PRECONDITION naming the holder's pid, its command and the
 * staging path. Once the holder is gone, the retry (what the kubelet does) unstages, and nothing is
 * left.
 */
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { status } from '@grpc/grpc-js';
import { readMounts } from '../../src/host/mounts.js';
import { type Holder, startHolder, stopHolder } from '../host/holder.js';
import { assertNothingLeft, call, callError, MiB, MOUNT_CAP, shortTempDir, startPlugin, sweep, type PluginProcess } from './plugin-process.js';

describe('NodeUnstageVolume while another mount namespace holds the file system', () => {
  let dir: string;
  let p: PluginProcess;
  let holder: Holder | undefined;

  before(async () => {
    assert.equal(process.getuid?.(), 0, 'staging needs root');
    dir = await shortTempDir();
    p = await startPlugin(dir);
    await p.waitReady();
  });
  after(async () => {
    if (holder !== undefined) await stopHolder(holder.child);
    await p.stop().catch(() => undefined);
    await sweep(dir);
  });

  it('fails FAILED_PRECONDITION naming the holder; the retry after it is gone unstages', async (t) => {
    const cap = MOUNT_CAP('ext4');
    const volumeId = 'held';
    await call(p.c.controller, 'CreateVolume', { name: volumeId, capacity_range: { required_bytes: String(64 * MiB) }, volume_capabilities: [cap] });
    const staging = join(dir, 'staging-held');
    await mkdir(staging);
    await call(p.c.node, 'NodeStageVolume', { volume_id: volumeId, staging_target_path: staging, volume_capability: cap });
    const mount = (await readMounts()).find((m) => m.mountPoint === staging);
    assert.ok(mount !== undefined && /^\/dev\/loop\d+$/.test(mount.source), `staged on a loop device: ${JSON.stringify(mount)}`);
    holder = await startHolder(mount.source);

    const err = await callError(p.c.node, 'NodeUnstageVolume', { volume_id: volumeId, staging_target_path: staging });
    t.diagnostic(`${status[err.code]}: ${err.details}`);
    assert.equal(err.code, status.FAILED_PRECONDITION, err.details);
    for (const part of [`${mount.source} is still in use`, holder.namespace, `pid ${holder.pid} sleep`, `at ${staging}`, `nsenter -t ${holder.pid} -m umount -l ${staging}`]) {
      assert.ok(err.details.includes(part), `the error names ${part}: ${err.details}`);
    }

    await stopHolder(holder.child);
    await call(p.c.node, 'NodeUnstageVolume', { volume_id: volumeId, staging_target_path: staging });
    await call(p.c.controller, 'DeleteVolume', { volume_id: volumeId });
    await p.stop();
    await assertNothingLeft(dir);
  });
});
