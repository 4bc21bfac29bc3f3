/**
 * The data path outlives the plugin, with either FUSE attach method. Three volumes are staged and
 * published: r1 (ext4), r2 (block) and r3 (ext4). The plugin is SIGKILLed; r1's mount keeps working
 * with no plugin at all. While the plugin is down, r2's `flashcsi serve` dies, and r3's serve and
 * the process serving its FUSE file die. The plugin is started again on the same state dir: Probe
 * turns ready once adoption is done; r1 is adopted as it is (normal condition, files intact,
 * writable); r3 is reported abnormal with its deaths named. r2 depends on the method:
 * - nbdfuse: nbdfuse lives on (a block volume nobody does I/O on), so r2's server is restarted on
 *   the same socket, but the volume is reported abnormal (nbdfuse cannot reconnect to a new server);
 * - serve-fuse: serve is the FUSE file's server, so its FUSE mount died with it: r2 is reported
 *   abnormal, naming the dead server, and not restarted (a new serve cannot take over a dead mount).
 * Unpublish/unstage work for all three and leave no process or mount behind. A SIGTERM stop and
 * start first shows that a graceful stop leaves the data path alone too. The plugin runs with
 * --fuse-workers 2, which reaches every serve it starts.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promises as fsp, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { isProcessAlive } from '../../src/host/process.js';
import { pollUntil } from '../../src/host/poll.js';
import type { StageRecord } from '../../src/volumes/state.js';
import {
  assertNothingLeft,
  BLOCK_CAP,
  call,
  MiB,
  MOUNT_CAP,
  sha256File,
  shortTempDir,
  stageAndPublish,
  startPlugin,
  sweep,
  unpublishAndUnstage,
  type PluginProcess,
} from './plugin-process.js';

const exec = promisify(execFile);

function stageRecord(p: PluginProcess, volumeId: string): StageRecord {
  return JSON.parse(readFileSync(join(p.stateDir, 'node', volumeId, 'stage.json'), 'utf8')) as StageRecord;
}

async function writeAndCheck(dir: string, name: string): Promise<void> {
  const data = Buffer.from(`${name} ${Date.now()} `.repeat(5000));
  await fsp.writeFile(join(dir, name), data);
  await exec('sync', ['-f', join(dir, name)]);
  assert.deepEqual(await fsp.readFile(join(dir, name)), data);
}

for (const method of ['serve-fuse', 'nbdfuse'] as const) describe(`plugin restart (--attach ${method}): staged volumes are adopted`, () => {
  const start = (dir: string): Promise<PluginProcess> => startPlugin(dir, { extraArgs: ['--attach', method, '--fuse-workers', '2'] });
  let dir: string;
  let p: PluginProcess;
  const paths = new Map<string, { staging: string; target: string }>();
  let sum: string;

  before(async () => {
    dir = await shortTempDir();
    p = await start(dir);
    await p.waitReady();
    for (const id of ['r1', 'r2', 'r3']) {
      const cap = id === 'r2' ? BLOCK_CAP() : MOUNT_CAP();
      await call(p.c.controller, 'CreateVolume', { name: id, capacity_range: { required_bytes: String(64 * MiB) }, volume_capabilities: [cap] });
      paths.set(id, await stageAndPublish(p, id, cap, { block: id === 'r2' }));
    }
    await writeAndCheck(paths.get('r1')?.target ?? '', 'before.txt');
    sum = await sha256File(join(paths.get('r1')?.target ?? '', 'before.txt'));
  });
  after(async () => {
    await p.stop().catch(() => undefined);
    await sweep(dir);
  });

  it('SIGTERM drains the plugin and exits 0; the data path keeps running', async () => {
    const rec = stageRecord(p, 'r1');
    assert.ok(rec.serve !== null);
    const args = readFileSync(`/proc/${rec.serve.process.pid}/cmdline`, 'utf8').split('\0');
    assert.deepEqual(args.slice(args.indexOf('--fuse-workers'), args.indexOf('--fuse-workers') + 2), ['--fuse-workers', '2'], "serve got the plugin's --fuse-workers");
    assert.equal(await p.stop(), 0);
    assert.ok(rec.serve !== null && isProcessAlive(rec.serve.process), 'serve survives a graceful stop');
    assert.equal(rec.attachment?.method, method);
    assert.ok(rec.attachment?.fuse !== undefined && isProcessAlive(rec.attachment.fuse.process), `the FUSE file's server (${method}) survives a graceful stop`);
    p = await start(dir);
    await p.waitReady();
  });

  it('SIGKILL: the mounts keep working without a plugin', async () => {
    const r1 = stageRecord(p, 'r1');
    await p.kill();
    assert.ok(r1.serve !== null && isProcessAlive(r1.serve.process), 'serve survives SIGKILL of the plugin');
    assert.ok(r1.attachment?.fuse !== undefined && isProcessAlive(r1.attachment.fuse.process), `the FUSE file's server (${method}) survives SIGKILL of the plugin`);
    await writeAndCheck(paths.get('r1')?.target ?? '', 'while-down.txt');
    // While the plugin is down: r2's server dies; r3's server and its FUSE file's server die (one process with serve-fuse).
    const r2 = stageRecord(p, 'r2');
    const r3 = stageRecord(p, 'r3');
    assert.ok(r2.serve !== null && r3.serve !== null && r3.attachment?.fuse !== undefined);
    for (const ref of [r2.serve.process, r3.serve.process, r3.attachment.fuse.process]) {
      if (!isProcessAlive(ref)) continue; // serve-fuse: r3's FUSE server is its serve
      process.kill(ref.pid, 'SIGKILL');
      await pollUntil(() => !isProcessAlive(ref), 10_000, `pid ${ref.pid} to die`);
    }
  });

  it('restarted on the same state dir, Probe turns ready after adoption', async () => {
    p = await start(dir);
    await p.waitReady();
    const log = readFileSync(p.logFile, 'utf8');
    const done = log.split('\n').find((l) => l.includes('start-up recovery done')) ?? '';
    const adoption = (JSON.parse(done) as { adoption: { adopted: string[]; restarted: string[]; abnormal: string[] } }).adoption;
    assert.deepEqual(adoption.adopted, ['r1'], done);
    assert.deepEqual(adoption.restarted, method === 'nbdfuse' ? ['r2'] : [], done);
    assert.deepEqual(adoption.abnormal, ['r2', 'r3'], done);
  });

  it('the healthy volume: normal condition, files intact, still writable', async () => {
    const target = paths.get('r1')?.target ?? '';
    assert.equal(await sha256File(join(target, 'before.txt')), sum);
    await writeAndCheck(target, 'after.txt');
    const stats = await call<{ volume_condition: { abnormal: boolean; message: string } }>(p.c.node, 'NodeGetVolumeStats', { volume_id: 'r1', volume_path: target });
    assert.deepEqual(stats.volume_condition, { abnormal: false, message: '' });
    const vol = await call<{ status: { volume_condition: { abnormal: boolean } } }>(p.c.controller, 'ControllerGetVolume', { volume_id: 'r1' });
    assert.equal(vol.status.volume_condition.abnormal, false);
  });

  it('the volume whose server died: reported abnormal, not silently (nbdfuse: its server restarted)', async () => {
    const rec = stageRecord(p, 'r2');
    assert.equal(rec.serve !== null && isProcessAlive(rec.serve.process), method === 'nbdfuse', 'a new server runs on the same socket only behind nbdfuse');
    const stats = await call<{ volume_condition: { abnormal: boolean; message: string } }>(p.c.node, 'NodeGetVolumeStats', { volume_id: 'r2', volume_path: paths.get('r2')?.target ?? '' });
    assert.equal(stats.volume_condition.abnormal, true);
    assert.match(stats.volume_condition.message, method === 'nbdfuse' ? /cannot reconnect/ : /flashcsi serve.*not running/);
    const vol = await call<{ status: { volume_condition: { abnormal: boolean; message: string } } }>(p.c.controller, 'ControllerGetVolume', { volume_id: 'r2' });
    assert.equal(vol.status.volume_condition.abnormal, true);
  });

  it('the volume whose server and FUSE server died: reported abnormal, the deaths named', async () => {
    const stats = await call<{ volume_condition: { abnormal: boolean; message: string } }>(p.c.node, 'NodeGetVolumeStats', { volume_id: 'r3', volume_path: paths.get('r3')?.target ?? '' });
    assert.equal(stats.volume_condition.abnormal, true);
    assert.match(stats.volume_condition.message, /flashcsi serve.*not running/);
    if (method === 'nbdfuse') assert.match(stats.volume_condition.message, /nbdfuse .*not running/);
  });

  it('unpublish and unstage work for all three; no server, nbdfuse or FUSE mount is left', async () => {
    const pids = ['r1', 'r2', 'r3'].flatMap((id) => {
      const rec = stageRecord(p, id);
      return [rec.serve?.process, rec.attachment?.fuse?.process].filter((x) => x !== undefined);
    });
    for (const [id, pp] of paths) await unpublishAndUnstage(p, id, pp);
    for (const ref of pids) assert.equal(isProcessAlive(ref), false, `pid ${ref.pid} has exited`);
    for (const id of ['r1', 'r2', 'r3']) await call(p.c.controller, 'DeleteVolume', { volume_id: id });
    assert.equal(await p.stop(), 0);
    await assertNothingLeft(dir);
  });
});
