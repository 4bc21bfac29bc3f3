/**
 * Runs inside the test guest: the real node plugin (`flashcsi plugin --mode all`) on the guest's
 * kernel, where /dev/nbd* exists, so it stages through the kernel nbd path. Each command prints one
 * JSON line and exits; the plugin and the volume's `flashcsi serve` keep running between commands.
 *
 *   start DIR       start the plugin (state in DIR/state), create and stage + publish one ext4
 *                   volume → {"pid":…,"target":…,"staging":…,"volumeId":…}
 *   restart DIR     start the plugin again on the same state (after it was killed); wait for ready
 *                   → {"pid":…}
 *   stats DIR       NodeGetVolumeStats of the published volume → {"abnormal":…,"message":…}
 *   teardown DIR    unpublish, unstage, delete the volume, stop the plugin → {"left":[…]}
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';

import { clients } from '../csi/helpers.js';
import { call, MiB, MOUNT_CAP, startPlugin } from '../csi/plugin-process.js';

const VOLUME = 'kvol';
/** Deadline of each CSI call: staging makes a file system, slow under TCG on a busy host. */
const CALL_MS = 600_000;

/** Starts the plugin, records its pid in DIR/plugin.pid and waits until it is ready. */
async function started(dir: string): Promise<Awaited<ReturnType<typeof startPlugin>>> {
  const p = await startPlugin(dir, { metadataSocket: null, nodeId: 'guest' });
  await fsp.writeFile(path.join(dir, 'plugin.pid'), String(p.child.pid));
  await p.waitReady(300_000);
  return p;
}

/** The volume's staging and publish paths. */
function paths(dir: string): { staging: string; target: string } {
  return { staging: path.join(dir, 'staging', VOLUME), target: path.join(dir, 'pods', VOLUME, 'mnt') };
}

function done(result: object): never {
  process.stdout.write(`${JSON.stringify(result)}\n`);
  // The plugin is our child but must outlive us: exit without waiting for it.
  process.exit(0);
}

/** Runs one command; every path ends in done(), which exits. */
async function main(cmd: string | undefined, dir: string | undefined): Promise<never> {
  if (dir === undefined) throw new Error('usage: guest-plugin.js start|restart|stats|teardown DIR');
  switch (cmd) {
    case 'start': {
      await fsp.mkdir(dir, { recursive: true });
      const p = await started(dir);
      const cap = MOUNT_CAP('ext4');
      await call(p.c.controller, 'CreateVolume', { name: VOLUME, capacity_range: { required_bytes: 256 * MiB }, volume_capabilities: [cap] }, CALL_MS);
      const { staging, target } = paths(dir);
      await fsp.mkdir(staging, { recursive: true });
      await fsp.mkdir(path.dirname(target), { recursive: true });
      await call(p.c.node, 'NodeStageVolume', { volume_id: VOLUME, staging_target_path: staging, volume_capability: cap }, CALL_MS);
      await call(p.c.node, 'NodePublishVolume', { volume_id: VOLUME, staging_target_path: staging, target_path: target, volume_capability: cap, readonly: false }, CALL_MS);
      return done({ pid: p.child.pid, staging, target, volumeId: VOLUME });
    }
    case 'restart': {
      const p = await started(dir);
      return done({ pid: p.child.pid });
    }
    case 'stats': {
      const c = clients(path.join(dir, 'csi.sock'));
      const res = await call<{ volume_condition?: { abnormal: boolean; message: string } }>(c.node, 'NodeGetVolumeStats', { volume_id: VOLUME, volume_path: paths(dir).target }, CALL_MS);
      return done({ abnormal: res.volume_condition?.abnormal ?? null, message: res.volume_condition?.message ?? '' });
    }
    case 'teardown': {
      const c = clients(path.join(dir, 'csi.sock'));
      const { staging, target } = paths(dir);
      await call(c.node, 'NodeUnpublishVolume', { volume_id: VOLUME, target_path: target }, CALL_MS);
      await call(c.node, 'NodeUnstageVolume', { volume_id: VOLUME, staging_target_path: staging }, CALL_MS);
      await call(c.controller, 'DeleteVolume', { volume_id: VOLUME }, CALL_MS);
      const pid = Number((await fsp.readFile(path.join(dir, 'plugin.pid'), 'utf8')).trim());
      process.kill(pid, 'SIGTERM');
      return done({ left: await fsp.readdir(path.join(dir, 'state', 'volumes')) });
    }
    default:
      throw new Error(`unknown command ${cmd ?? ''}`);
  }
}

const [cmd, dir] = process.argv.slice(2);
await main(cmd, dir);
