/**
 * Power loss under the serve-fuse attach method: what an application fsynced survives the node
 * losing power while `flashcsi serve` answers its FUSE file from worker threads.
 *
 * The node's disk is volatile-disk.ts (an NBD disk whose writes stay in a volatile cache until
 * FLUSH or FUA), attached with nbdfuse + loop as power-loss.test.ts does; its ext4 is the node's
 * state directory. A flashcsi volume is created in it and served as the plugin serves it: a
 * `flashcsi serve` process (serveLauncher) and attachServeFuse (serve mounts its FUSE file, a loop
 * device with direct I/O on top). The application's ext4 is made and mounted on that loop device,
 * and fsync-writer.ts writes, rewrites and deletes files in it, announcing each fsync that
 * returned. Meanwhile the test cuts checkpoints over serve's control socket, so the first writes
 * after each go through the engine's copy-on-write on serve's main thread, the others through the
 * fast path.
 *
 * After a random number of fsynced files: the writer is stopped (SIGSTOP), serve SIGKILLed, and
 * the power cut (the disk keeps what was flushed plus a random subset of its cache; half the
 * cycles none). In half the cycles the node's dirty pages of the volume's files are first written
 * to the disk without a FLUSH (sync_file_range), as writeback may do at any moment: without that
 * the disk's cache is nearly always empty at the cut, since the node's page cache (lost with the
 * power) holds what serve wrote and did not fdatasync. The dead stack is taken down; the surviving image is mounted (node ext4 journal
 * replay), the volume opened by the engine (recovery), every checkpoint acknowledged before the cut
 * must be there and readable, then it is served and attached again and the application's ext4
 * mounted (its journal replay): every file whose last fsync returned must read back with its
 * sha256. `e2fsck -f -n` of the application's ext4 and of the node's must be clean.
 *
 * Every fsync travels ext4 → loop → FUSE FSYNC (serve) → fdatasync of the base image → node ext4
 * → loop → FUSE → nbdfuse → NBD FLUSH; the disk counts FLUSHes, and each cycle must see some while
 * the writer runs. FLASHCSI_SERVE_FUSE_POWER_CUTS sets the cycles (default 6), FLASHCSI_SEED the
 * first seed.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fsp, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { mkdtemp } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Volume } from '../../src/engine/index.js';
import type { Attachment } from '../../src/host/attachment.js';
import { attachNbdfuse } from '../../src/host/nbdfuse.js';
import { pollUntil } from '../../src/host/poll.js';
import { isProcessAlive, waitForProcessExit } from '../../src/host/process.js';
import { attachServeFuse } from '../../src/host/serve-fuse.js';
import { serveLauncher, type ServeProcess } from '../../src/host/serve-process.js';
import { controlCall } from '../../src/nbd/control.js';
import { BIN } from '../csi/plugin-process.js';
import { seededRandom } from '../engine/helpers.js';
import { exec, lines, quiet } from './helpers.js';

const require = createRequire(import.meta.url);
const koffi = require('koffi') as typeof import('koffi');
const syncFileRange = koffi.load('libc.so.6').func('int sync_file_range(int fd, int64_t offset, int64_t nbytes, unsigned int flags)');
const SYNC_FILE_RANGE_WRITE_AND_WAIT = 1 | 2 | 4;

const HERE = path.dirname(fileURLToPath(import.meta.url));
const DISK = 256 * 1024 * 1024;
const VOLUME = 64 * 1024 * 1024;
const TIMEOUT = 60_000;

/** Unmounts; a mount whose device fails every request may refuse, and is then detached lazily. */
async function unmount(mnt: string): Promise<void> {
  await exec('umount', [mnt]).catch(() => exec('umount', ['-l', mnt]));
}

async function e2fsckClean(device: string, what: string): Promise<void> {
  await exec('e2fsck', ['-f', '-n', device]).catch((err: { stdout?: string; stderr?: string }) => {
    throw new Error(`${what}: e2fsck -f -n is not clean:\n${err.stdout ?? ''}${err.stderr ?? ''}`);
  });
}

/**
 * Writes the node's dirty pages of every file under `dir` to the disk without a FLUSH, as the
 * kernel's writeback may at any moment: what serve wrote but did not fdatasync then sits in the
 * disk's volatile cache, of which the cut keeps a random subset. Returns the files written back.
 */
async function writeBackWithoutFlush(dir: string): Promise<number> {
  let n = 0;
  for (const entry of await fsp.readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const fh = await fsp.open(path.join(entry.parentPath, entry.name), 'r');
    try {
      if (syncFileRange(fh.fd, 0, 0, SYNC_FILE_RANGE_WRITE_AND_WAIT) !== 0) throw new Error(`sync_file_range of ${entry.name} failed`);
      n++;
    } finally {
      await fh.close();
    }
  }
  return n;
}

/** A process's state letter from /proc (T once a SIGSTOP has taken effect). */
function procState(pid: number): string {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0] ?? '';
}

interface Figures {
  durable: number;
  checked: number;
  checkpoints: number;
  flushes: number;
  writerFlushes: number;
  dirty: number;
  kept: number;
  writebacks: number;
}

async function oneCycle(cycle: number, seed: number, figures: Figures): Promise<void> {
  const rnd = seededRandom(seed);
  const work = await mkdtemp(path.join(tmpdir(), 'fcsi-sfpl-'));
  const launcher = serveLauncher({ cli: BIN, logLevel: 'warn', timeoutMs: TIMEOUT });
  const dirs = { node: path.join(work, 'node'), app: path.join(work, 'app'), node2: path.join(work, 'node2'), app2: path.join(work, 'app2') };
  for (const d of Object.values(dirs)) await fsp.mkdir(d);
  const disk = spawn(process.execPath, [path.join(HERE, 'volatile-disk.js'), path.join(work, 'run', 'disk.sock'), String(DISK)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const diskOut = lines(disk.stdout);
  const diskCall = async (line: string): Promise<Record<string, unknown>> => {
    disk.stdin.write(`${line}\n`);
    const r = await diskOut.next();
    assert.ok(r, `the volatile disk answered nothing to ${line}`);
    return r;
  };
  // What is up, so that the finally block takes down exactly that, innermost first.
  const mounts: string[] = [];
  let nodeAtt: Attachment | undefined;
  let appAtt: Attachment | undefined;
  let serve: ServeProcess | undefined;
  let writer: ChildProcess | undefined;
  let imageLoop: string | undefined;
  let where = `cycle ${cycle} (seed ${seed})`;
  try {
    assert.deepEqual(await diskOut.next(), { ready: true });
    nodeAtt = await attachNbdfuse({ socketPath: path.join(work, 'run', 'disk.sock'), exportName: '', workDir: path.join(work, 'node-att') });
    await exec('mkfs.ext4', ['-q', '-E', 'nodiscard', nodeAtt.device]);
    await exec('mount', [nodeAtt.device, dirs.node]);
    mounts.push(dirs.node);
    const volDir = path.join(dirs.node, 'vol');
    await (await Volume.create(volDir, { size: VOLUME })).close();

    // Served and attached as the plugin does it; the application's ext4 on top.
    const first = await launcher.start({ volumeDir: volDir, socket: path.join(work, 'srv', 's.sock'), logFile: path.join(work, 'serve.log') });
    serve = first;
    appAtt = await attachServeFuse({ socketPath: first.socket, exportName: '', workDir: path.join(work, 'app-att'), timeoutMs: TIMEOUT });
    await exec('mkfs.ext4', ['-q', '-E', 'nodiscard', appAtt.device]);
    await exec('mount', [appAtt.device, dirs.app]);
    mounts.push(dirs.app);
    const before = await diskCall('stats');

    writer = spawn(process.execPath, [path.join(HERE, 'fsync-writer.js'), dirs.app, String(seed)], { stdio: ['ignore', 'pipe', 'inherit'] });
    const writerPid = writer.pid as number;
    const writerExited = new Promise<void>((resolve) => writer?.once('exit', () => resolve()));
    const out = lines(writer.stdout as NodeJS.ReadableStream);
    const cutAfter = 8 + Math.floor(rnd() * 50); // fsynced files before the power fails
    const checkpointEvery = 3 + Math.floor(rnd() * 6);
    const promised = new Map<string, string>();
    const checkpoints: string[] = []; // acknowledged before the cut
    let inFlight: Promise<void> | undefined;
    let durable = 0;
    let cut: Record<string, unknown> | undefined;
    let killed = false;
    let writerError: Record<string, unknown> | undefined;
    for (;;) {
      const ev = await out.next();
      if (ev === undefined) break; // the writer is gone: every line it wrote has been read
      if (ev['e'] === 'begin' || ev['e'] === 'unlink') promised.delete(ev['name'] as string);
      else if (ev['e'] === 'durable') {
        promised.set(ev['name'] as string, ev['sha'] as string);
        durable++;
      } else if (ev['e'] === 'error') writerError = ev;
      if (cut !== undefined) continue;
      if (writerError !== undefined) break;
      if (durable % checkpointEvery === 0 && ev['e'] === 'durable' && inFlight === undefined) {
        const name = `cp${durable}`;
        inFlight = controlCall(first.control, { op: 'checkpoint.create', name }, TIMEOUT).then(
          () => {
            // serve dies before the cut: whatever it acknowledged, it acknowledged before the cut.
            checkpoints.push(name);
            inFlight = undefined;
          },
          (err: unknown) => {
            // Only serve's death may fail it.
            if (!killed) writerError = { e: 'checkpoint', name, message: String(err) };
            inFlight = undefined;
          },
        );
      }
      if (durable >= cutAfter) {
        // Freeze the application, kill the data path, fail the power.
        writer.kill('SIGSTOP');
        await pollUntil(() => procState(writerPid) === 'T', TIMEOUT, `the writer (pid ${writerPid}) to stop`);
        killed = true;
        process.kill(first.process.pid, 'SIGKILL');
        await waitForProcessExit(first.process, TIMEOUT, `flashcsi serve (pid ${first.process.pid}) to die`);
        serve = undefined;
        const writeback = rnd() < 0.5;
        if (writeback) {
          await writeBackWithoutFlush(volDir);
          figures.writebacks++;
        }
        const keep = rnd() < 0.5 ? 0 : rnd();
        cut = await diskCall(`cut ${keep.toFixed(3)} ${path.join(work, 'image.raw')}`);
        where += `: power cut after ${durable} fsynced files, ${checkpoints.length} checkpoints, ${writeback ? 'after a writeback without FLUSH, ' : ''}keeping ${keep.toFixed(3)} of the disk cache`;
        writer.kill('SIGKILL');
      }
    }
    if (writerError !== undefined) {
      writer.kill('SIGKILL');
      assert.fail(`${where}: the application failed before the power cut: ${JSON.stringify(writerError)}`);
    }
    await writerExited;
    writer = undefined;
    await inFlight;
    assert.ok(cut?.['cut'] === true, `${where}: the writer stopped before the power cut`);
    const writerFlushes = (cut['flushes'] as number) - (before['flushes'] as number);
    assert.ok(writerFlushes > 0, `${where}: no FLUSH reached the disk while the application fsynced ${durable} files`);
    figures.durable += durable;
    figures.checkpoints += checkpoints.length;
    figures.flushes += cut['flushes'] as number;
    figures.writerFlushes += writerFlushes;
    figures.dirty += cut['dirty'] as number;
    figures.kept += cut['kept'] as number;

    // Take the dead stack down: the application's mount, the loop device and dead FUSE mount, the node.
    await unmount(dirs.app);
    mounts.pop();
    await appAtt.detach();
    appAtt = undefined;
    await unmount(dirs.node);
    mounts.pop();
    await nodeAtt.detach();
    nodeAtt = undefined;
    disk.stdin.end();

    // The node after the reboot: the surviving image, its journal replayed by the mount.
    imageLoop = (await exec('losetup', ['--find', '--show', path.join(work, 'image.raw')])).stdout.trim();
    await exec('mount', [imageLoop, dirs.node2]);
    mounts.push(dirs.node2);
    const volDir2 = path.join(dirs.node2, 'vol');
    const vol = await Volume.open(volDir2).catch((err: unknown) => {
      throw new Error(`${where}: the volume does not open: ${String(err)}`);
    });
    try {
      const present = new Set(vol.checkpoints().map((c) => c.name));
      for (const name of checkpoints) {
        assert.ok(present.has(name), `${where}: checkpoint ${name}, acknowledged before the cut, is gone (present: ${[...present].join(', ')})`);
        // Taken after mkfs: its image starts with the application's ext4 superblock (magic 0xEF53 at 1080).
        const sb = await vol.readCheckpoint(name, 1024, 1024);
        assert.equal(sb.readUInt16LE(56), 0xef53, `${where}: checkpoint ${name} does not hold the application's ext4`);
      }
    } finally {
      await vol.close();
    }

    // Served and attached again; the application's ext4 replays its journal at mount.
    serve = await launcher.start({ volumeDir: volDir2, socket: path.join(work, 'srv2', 's.sock'), logFile: path.join(work, 'serve2.log') });
    appAtt = await attachServeFuse({ socketPath: serve.socket, exportName: '', workDir: path.join(work, 'app-att2'), timeoutMs: TIMEOUT });
    await exec('mount', [appAtt.device, dirs.app2]);
    mounts.push(dirs.app2);
    const lost: string[] = [];
    for (const [name, sha] of promised) {
      const data = await fsp.readFile(path.join(dirs.app2, name)).catch((err: NodeJS.ErrnoException) => err.code ?? 'unreadable');
      const got = typeof data === 'string' ? data : createHash('sha256').update(data).digest('hex');
      if (got !== sha) lost.push(`${name}: ${typeof data === 'string' ? data : `${data.length} bytes, sha256 ${got.slice(0, 12)}…`}`);
    }
    assert.deepEqual(lost, [], `${where}: files fsynced before the cut lost or changed`);
    figures.checked += promised.size;
    await exec('umount', [dirs.app2]);
    mounts.pop();
    await e2fsckClean(appAtt.device, `${where}: the application's ext4`);
    await appAtt.detach();
    appAtt = undefined;
    await launcher.stop(serve.process);
    serve = undefined;
    await exec('umount', [dirs.node2]);
    mounts.pop();
    await e2fsckClean(imageLoop, `${where}: the node's ext4`);
  } catch (err) {
    // Every failure names its cycle and seed, also one from a step that does not say it.
    if (err instanceof Error && !err.message.includes(`(seed ${seed})`)) err.message = `${where}: ${err.message}`;
    throw err;
  } finally {
    writer?.kill('SIGKILL');
    if (serve !== undefined && isProcessAlive(serve.process)) process.kill(serve.process.pid, 'SIGKILL');
    const appMounts = new Set([dirs.app, dirs.app2]);
    for (const m of mounts.filter((x) => appMounts.has(x))) await quiet('umount', ['-l', m]);
    if (appAtt !== undefined) {
      const att = appAtt;
      await att.detach().catch(async () => {
        await quiet('losetup', ['-d', att.device]);
        if (att.fuse !== undefined) await quiet('umount', ['-l', att.fuse.mountpoint]);
      });
    }
    for (const m of mounts.filter((x) => !appMounts.has(x)).reverse()) await quiet('umount', ['-l', m]);
    if (nodeAtt !== undefined) await nodeAtt.detach().catch(() => quiet('fusermount3', ['-u', '-z', path.join(work, 'node-att', 'fuse')]));
    if (imageLoop !== undefined) await quiet('losetup', ['-d', imageLoop]);
    disk.kill('SIGKILL');
    await fsp.rm(work, { recursive: true, force: true });
  }
}

test('power loss under serve-fuse (volatile node disk, serve SIGKILLed): every file fsynced reads back, checkpoints open, both ext4 clean', async () => {
  const cycles = Number(process.env.FLASHCSI_SERVE_FUSE_POWER_CUTS ?? 6);
  const base = Number(process.env.FLASHCSI_SEED ?? Date.now() % 2 ** 31);
  const figures: Figures = { durable: 0, checked: 0, checkpoints: 0, flushes: 0, writerFlushes: 0, dirty: 0, kept: 0, writebacks: 0 };
  const t0 = Date.now();
  for (let i = 1; i <= cycles; i++) await oneCycle(i, base + i, figures);
  console.log(
    `serve-fuse power loss: ${cycles} power cuts (seeds ${base}+1…${base + cycles}) in ${((Date.now() - t0) / 1000).toFixed(1)} s; ` +
      `${figures.durable} files fsynced, ${figures.checked} promised at the cuts and read back intact; ${figures.checkpoints} checkpoints acknowledged, all present; ` +
      `the disk saw ${figures.flushes} FLUSHes (${figures.writerFlushes} while the application ran); ${figures.dirty} cached pages lost or kept at random (${figures.kept} kept; ${figures.writebacks} cuts after a writeback without FLUSH); ` +
      `e2fsck clean every time (application and node ext4)`,
  );
});
