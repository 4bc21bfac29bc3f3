/**
 * Power loss at the device level: durability must not depend on the page cache surviving.
 *
 * There is no dm-flakey here (no device-mapper in this kernel) and the page cache cannot be dropped
 * (/proc/sys/vm/drop_caches is read-only), so the disk itself is simulated, below a real kernel
 * stack: volatile-disk.ts is an NBD server whose writes land in a volatile cache that only FLUSH
 * (or FUA) makes durable. It is attached exactly as flashcsi attaches volumes here (nbdfuse +
 * loop with direct I/O), ext4 is made and mounted on it, and a flashcsi volume lives in that ext4.
 * power-child.ts runs the power-loss model's operations on the volume (page-aligned writes, FUA
 * writes, trims, flushes, cuts, deletions, rollbacks). At a random acknowledged operation the
 * workload is stopped (SIGSTOP) and the power "fails": the disk writes out what it holds durably,
 * plus a random subset of its cached pages (half the cycles keep none), and fails every request
 * after. That image is then mounted (ext4 replays its journal) and the volume opened on it; it is
 * checked with test/engine/power-model.ts: no flushed write lost, every acknowledged checkpoint
 * present and within its promise, an interrupted rollback complete or not started. The ext4 itself
 * must come back clean (`e2fsck -f -n` after the check).
 *
 * Every fsync the engine issues travels ext4 → loop → FUSE fsync → nbdfuse → NBD FLUSH; the disk
 * counts them, and the test asserts there were some.
 * FLASHCSI_DEVICE_POWER_CUTS sets the number of power cuts (default 4).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Volume } from '../../src/engine/index.js';
import type { Attachment } from '../../src/host/attachment.js';
import { attachNbdfuse } from '../../src/host/nbdfuse.js';
import { seededRandom } from '../engine/helpers.js';
import { apply, checkAfterPowerLoss, Model, PAGE, type Op } from '../engine/power-model.js';
import { exec, lines, quiet } from './helpers.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PAGES = 1024; // a 4 MiB volume
const DISK = 128 * 1024 * 1024;

async function oneCycle(cycle: number, seed: number, figures: { acked: number; flushes: number; dirty: number; kept: number; during: Map<string, number> }): Promise<void> {
  const rnd = seededRandom(seed);
  const work = await mkdtemp(path.join(tmpdir(), 'fcsi-pl-'));
  const mnt = path.join(work, 'mnt');
  const mnt2 = path.join(work, 'after');
  await fsp.mkdir(mnt);
  await fsp.mkdir(mnt2);
  const disk = spawn(process.execPath, [path.join(HERE, 'volatile-disk.js'), path.join(work, 'run', 'disk.sock'), String(DISK)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const diskOut = lines(disk.stdout);
  let att: Attachment | undefined;
  let mounted: string | undefined;
  let imageLoop: string | undefined;
  let child: ReturnType<typeof spawn> | undefined;
  try {
    assert.deepEqual(await diskOut.next(), { ready: true });
    att = await attachNbdfuse({ socketPath: path.join(work, 'run', 'disk.sock'), exportName: '', workDir: path.join(work, 'att') });
    await exec('mkfs.ext4', ['-q', '-E', 'nodiscard', att.device]);
    await exec('mount', [att.device, mnt]);
    mounted = mnt;
    const dir = path.join(mnt, 'vol');
    await (await Volume.create(dir, { size: PAGES * PAGE, grainSize: PAGE })).close();

    const model = new Model(PAGES);
    child = spawn(process.execPath, [path.join(HERE, 'power-child.js'), dir, String(PAGES), String(seed)], { stdio: ['ignore', 'pipe', 'inherit'] });
    const childExited = new Promise<void>((resolve) => child?.once('exit', () => resolve()));
    const out = lines(child.stdout as NodeJS.ReadableStream);
    assert.deepEqual(await out.next(), { e: 'ready' });
    const cutAfter = 20 + Math.floor(rnd() * 250); // acknowledged operations before the power fails
    let issued: { t: number; op: Op } | undefined;
    let acked = 0;
    let cut: Record<string, unknown> | undefined;
    for (;;) {
      const ev = await out.next();
      if (ev === undefined) break; // the child is gone: every line it wrote has been read
      if (ev['e'] === 'issue') issued = { t: ev['t'] as number, op: ev['op'] as Op };
      else if (ev['e'] === 'ack') {
        assert.equal(ev['t'], issued?.t);
        apply(model, (issued as { op: Op }).op, issued?.t as number, false);
        issued = undefined;
        acked++;
      }
      if (acked === cutAfter && cut === undefined) {
        // Freeze the application, fail the power, then read whatever it had written before.
        child.kill('SIGSTOP');
        disk.stdin?.write(`cut ${rnd() < 0.5 ? 0 : rnd().toFixed(3)} ${path.join(work, 'image.raw')}\n`);
        cut = await diskOut.next();
        child.kill('SIGKILL');
      }
    }
    await childExited;
    assert.ok(cut?.['cut'] === true, `cycle ${cycle}: the child stopped before the power cut`);
    figures.acked += acked;
    figures.flushes += cut['flushes'] as number;
    figures.dirty += cut['dirty'] as number;
    figures.kept += cut['kept'] as number;
    const crashed: Op = issued?.op ?? { kind: 'flush' };
    if (issued) apply(model, issued.op, issued.t, true);
    figures.during.set(crashed.kind, (figures.during.get(crashed.kind) ?? 0) + 1);

    // Take the dead stack down: the mount (its device fails every request now), loop, nbdfuse, disk.
    await exec('umount', [mnt]).catch(() => exec('umount', ['-l', mnt]));
    mounted = undefined;
    await att.detach();
    att = undefined;
    disk.stdin?.end();

    // The machine after the reboot: the surviving image, its journal replayed by the mount.
    imageLoop = (await exec('losetup', ['--find', '--show', path.join(work, 'image.raw')])).stdout.trim();
    await exec('mount', [imageLoop, mnt2]);
    mounted = mnt2;
    const where = `cycle ${cycle} (seed ${seed}): power cut after ${acked} acknowledged operations, during ${JSON.stringify(crashed)}`;
    const vol = await Volume.open(path.join(mnt2, 'vol')).catch((err: unknown) => {
      throw new Error(`${where}: the volume does not open: ${String(err)}`);
    });
    try {
      await checkAfterPowerLoss(vol, model, crashed, (issued?.t ?? acked + 1), where);
    } finally {
      await vol.close();
    }
    await exec('umount', [mnt2]);
    mounted = undefined;
    await exec('e2fsck', ['-f', '-n', imageLoop]).catch((err: { stdout?: string }) => {
      throw new Error(`${where}: e2fsck of the surviving ext4 is not clean:\n${err.stdout ?? ''}`);
    });
  } finally {
    child?.kill('SIGKILL');
    if (mounted !== undefined) await quiet('umount', ['-l', mounted]);
    if (att !== undefined) await att.detach().catch(() => quiet('fusermount3', ['-u', '-z', path.join(work, 'att', 'fuse')]));
    if (imageLoop !== undefined) await quiet('losetup', ['-d', imageLoop]);
    disk.kill('SIGKILL');
    await fsp.rm(work, { recursive: true, force: true });
  }
}

test('device-level power loss (volatile disk cache under nbdfuse + loop + ext4): nothing flushed lost', async () => {
  const cycles = Number(process.env.FLASHCSI_DEVICE_POWER_CUTS ?? 4);
  const base = Number(process.env.FLASHCSI_SEED ?? Date.now() % 2 ** 31);
  const figures = { acked: 0, flushes: 0, dirty: 0, kept: 0, during: new Map<string, number>() };
  for (let i = 1; i <= cycles; i++) await oneCycle(i, base + i, figures);
  console.log(
    `device power loss: ${cycles} power cuts (seed ${base}) after ${figures.acked} acknowledged operations; the disk saw ${figures.flushes} FLUSHes; ` +
      `${figures.dirty} cached pages lost or kept at random (${figures.kept} kept); 0 violations, ext4 clean every time; cut during: ${JSON.stringify(Object.fromEntries(figures.during))}`,
  );
  assert.ok(figures.flushes > cycles, 'FLUSH reached the disk through ext4, loop, FUSE and nbdfuse');
});
