/**
 * Attach an NBD export as a local block device, the way the CSI node plugin will:
 *
 * - kernel path (only when /dev/nbd* exists, i.e. the nbd module is loaded): `nbd-client -unix
 *   SOCK /dev/nbdX -N NAME -b 4096 -C n -t 0` (netlink; `-t 0` = wait for ever on a stuck server,
 *   never fail I/O), readiness = /sys/block/nbdX/size > 0, detach with `nbd-client -d`;
 * - fallback: nbdfuse exposes the export as one file on a private FUSE mount (`-P pidfile` signals
 *   readiness), and `losetup --find --show --direct-io=on` turns it into /dev/loopN. Direct I/O
 *   avoids double page caching. Teardown order: umount (the caller's job) → `losetup -d` → wait
 *   for the loop device to let go → `fusermount3 -u`, which makes nbdfuse exit cleanly (it must
 *   never be killed).
 *
 * Caveat (nbd.md §5.10): a user-space server serving a block device on the same host can
 * deadlock under memory pressure; nbdfuse+loop even more so. This is the fallback, not the goal.
 *
 * No sleeps: readiness and teardown wait on real conditions (pid file, sysfs, process exit) with
 * deadlines.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';

import { ensurePrivateDir } from './server.js';

export type AttachMethod = 'kernel' | 'nbdfuse';

export interface AttachOptions {
  /** Unix socket the NBD server listens on. */
  readonly socketPath: string;
  /** Export name ("" = default export). */
  readonly exportName: string;
  /** Private directory for the nbdfuse mountpoint and pid file; created 0700 if missing. */
  readonly workDir: string;
  /** Attach read-only (nbd-client -R, nbdfuse -r, losetup --read-only). */
  readonly readOnly?: boolean;
  /** NBD connections (nbd-client -C, nbdfuse -C); default 1 for the kernel, 4 for nbdfuse. */
  readonly connections?: number;
  /** Kernel block size, 512…4096 (default 4096). */
  readonly blockSize?: number;
  /** How long attach/detach steps may take (default 30 s). */
  readonly timeoutMs?: number;
}

export interface Attachment {
  readonly method: AttachMethod;
  /** The block device to format and mount: /dev/nbdN or /dev/loopN. */
  readonly device: string;
  /**
   * Detaches. Refuses (AttachError BUSY) while the device is still mounted: unmount first.
   * Idempotent once it succeeded.
   */
  detach(): Promise<void>;
}

export class AttachError extends Error {
  constructor(
    readonly code: 'NO_DEVICE' | 'BUSY' | 'TIMEOUT' | 'COMMAND_FAILED' | 'INVALID_ARGUMENT',
    message: string,
  ) {
    super(message);
    this.name = 'AttachError';
  }
}

const DEFAULT_TIMEOUT_MS = 30_000;
const POLL_MS = 20;

// ─── Method choice ────────────────────────────────────────────────────────────────────────────

/** True if the kernel nbd driver is usable here: some /dev/nbdN exists. */
export async function hasKernelNbd(devDir = '/dev'): Promise<boolean> {
  const names = await fsp.readdir(devDir).catch(() => [] as string[]);
  return names.some((n) => /^nbd\d+$/.test(n));
}

/** The method `attach()` will use. */
export async function chooseAttachMethod(devDir = '/dev'): Promise<AttachMethod> {
  return (await hasKernelNbd(devDir)) ? 'kernel' : 'nbdfuse';
}

/** Attaches with the kernel client if available, else nbdfuse + loop. */
export async function attach(opts: AttachOptions): Promise<Attachment> {
  return (await chooseAttachMethod()) === 'kernel' ? attachKernel(opts) : attachNbdfuse(opts);
}

/** An NBD URI for a Unix socket and export name (nbd+unix:///NAME?socket=PATH). */
export function nbdUnixUri(socketPath: string, exportName: string): string {
  return `nbd+unix:///${encodeURIComponent(exportName)}?socket=${encodeURIComponent(socketPath)}`;
}

// ─── Kernel path ──────────────────────────────────────────────────────────────────────────────

export interface KernelAttachArgs {
  readonly socketPath: string;
  readonly device: string;
  readonly exportName: string;
  readonly blockSize?: number;
  readonly connections?: number;
  readonly readOnly?: boolean;
}

/** nbd-client arguments to attach `device` to the export (validated). */
export function nbdClientAttachArgs(a: KernelAttachArgs): string[] {
  const bs = a.blockSize ?? 4096;
  if (![512, 1024, 2048, 4096].includes(bs)) throw new AttachError('INVALID_ARGUMENT', `block size must be 512…4096, got ${bs}`);
  const conns = a.connections ?? 1;
  if (!Number.isInteger(conns) || conns < 1 || conns > 64) throw new AttachError('INVALID_ARGUMENT', `connections must be 1…64, got ${conns}`);
  if (!/^\/dev\/nbd\d+$/.test(a.device)) throw new AttachError('INVALID_ARGUMENT', `not an nbd device: ${a.device}`);
  if (!path.isAbsolute(a.socketPath)) throw new AttachError('INVALID_ARGUMENT', `socket path must be absolute: ${a.socketPath}`);
  const args = ['-unix', a.socketPath, a.device, '-N', a.exportName, '-b', String(bs), '-C', String(conns), '-t', '0'];
  if (a.readOnly === true) args.push('-R');
  return args;
}

/** nbd-client arguments to detach `device`. */
export function nbdClientDetachArgs(device: string): string[] {
  if (!/^\/dev\/nbd\d+$/.test(device)) throw new AttachError('INVALID_ARGUMENT', `not an nbd device: ${device}`);
  return ['-d', device];
}

/** The first /dev/nbdN whose sysfs size is 0 and that has no owner pid (i.e. not connected). */
export async function findFreeNbdDevice(sysBlock = '/sys/block'): Promise<string | undefined> {
  const names = (await fsp.readdir(sysBlock).catch(() => [] as string[])).filter((n) => /^nbd\d+$/.test(n));
  names.sort((a, b) => Number(a.slice(3)) - Number(b.slice(3)));
  for (const n of names) {
    const size = await fsp.readFile(path.join(sysBlock, n, 'size'), 'utf8').catch(() => '');
    const pid = await fsp.readFile(path.join(sysBlock, n, 'pid'), 'utf8').catch(() => '');
    if (size.trim() === '0' && pid.trim() === '') return `/dev/${n}`;
  }
  return undefined;
}

/** Attaches through the kernel nbd driver with nbd-client. */
export async function attachKernel(opts: AttachOptions): Promise<Attachment> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const device = await findFreeNbdDevice();
  if (device === undefined) throw new AttachError('NO_DEVICE', 'no free /dev/nbd* device');
  const args = nbdClientAttachArgs({
    socketPath: opts.socketPath,
    device,
    exportName: opts.exportName,
    ...(opts.blockSize !== undefined ? { blockSize: opts.blockSize } : {}),
    ...(opts.connections !== undefined ? { connections: opts.connections } : {}),
    ...(opts.readOnly !== undefined ? { readOnly: opts.readOnly } : {}),
  });
  await exec('nbd-client', args, timeoutMs);
  const sizeFile = path.join('/sys/block', path.basename(device), 'size');
  await pollUntil(async () => Number((await fsp.readFile(sizeFile, 'utf8').catch(() => '0')).trim()) > 0, timeoutMs, `${device} to come up`);
  let detached = false;
  return {
    method: 'kernel',
    device,
    detach: async () => {
      if (detached) return;
      await assertNotMounted(device);
      await exec('nbd-client', nbdClientDetachArgs(device), timeoutMs);
      await pollUntil(async () => (await fsp.readFile(sizeFile, 'utf8').catch(() => '0')).trim() === '0', timeoutMs, `${device} to detach`);
      detached = true;
    },
  };
}

// ─── nbdfuse + loop path ──────────────────────────────────────────────────────────────────────

/** Attaches through nbdfuse (a FUSE file) and a loop device with direct I/O. */
export async function attachNbdfuse(opts: AttachOptions): Promise<Attachment> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  await ensurePrivateDir(opts.workDir);
  const mnt = path.join(opts.workDir, 'fuse');
  const pidFile = path.join(opts.workDir, 'nbdfuse.pid');
  await fsp.mkdir(mnt, { recursive: true, mode: 0o700 });
  await fsp.rm(pidFile, { force: true });
  const file = path.join(mnt, 'disk');
  const args = ['-P', pidFile, '-C', String(opts.connections ?? 4)];
  if (opts.readOnly === true) args.push('-r');
  args.push(file, nbdUnixUri(opts.socketPath, opts.exportName));

  const child = spawn('nbdfuse', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (d: string) => {
    if (stderr.length < 64 * 1024) stderr += d;
  });
  const exited = exitPromise(child);
  // Ready when nbdfuse has written its pid file; failed if it exits first.
  const ready = pollUntil(async () => (await fsp.readFile(pidFile, 'utf8').catch(() => '')).trim() !== '', timeoutMs, 'nbdfuse to become ready');
  const early = exited.then((code) => {
    throw new AttachError('COMMAND_FAILED', `nbdfuse exited (${code}) before becoming ready: ${stderr.trim()}`);
  });
  early.catch(() => undefined); // only raced below; a later exit is awaited through `exited`
  try {
    await Promise.race([ready, early]);
  } catch (err) {
    child.kill('SIGTERM'); // it never became ready; clear a mount it may have left half-made
    await exec('fusermount3', ['-u', mnt], timeoutMs).catch(() => undefined);
    throw err;
  }

  let device: string;
  try {
    const losetupArgs = ['--find', '--show', '--direct-io=on'];
    if (opts.readOnly === true) losetupArgs.push('--read-only');
    losetupArgs.push(file);
    device = (await exec('losetup', losetupArgs, timeoutMs)).trim();
    if (!/^\/dev\/loop\d+$/.test(device)) throw new AttachError('COMMAND_FAILED', `losetup printed ${JSON.stringify(device)}`);
  } catch (err) {
    await exec('fusermount3', ['-u', mnt], timeoutMs).catch(() => undefined);
    await withTimeout(exited, timeoutMs).catch(() => undefined);
    throw err;
  }

  let detached = false;
  return {
    method: 'nbdfuse',
    device,
    detach: async () => {
      if (detached) return;
      await assertNotMounted(device);
      await exec('losetup', ['-d', device], timeoutMs);
      // The loop device releases the FUSE file asynchronously; fusermount3 -u would fail (EBUSY)
      // until it has.
      const backing = path.join('/sys/block', path.basename(device), 'loop', 'backing_file');
      await pollUntil(async () => !(await pathExists(backing)), timeoutMs, `${device} to release ${file}`);
      await exec('fusermount3', ['-u', mnt], timeoutMs);
      await withTimeout(exited, timeoutMs);
      detached = true;
    },
  };
}

// ─── Helpers ──────────────────────────────────────────────────────────────────────────────────

/** Throws BUSY if `device` (path or major:minor) is mounted anywhere in this mount namespace. */
export async function assertNotMounted(device: string): Promise<void> {
  const info = await fsp.readFile('/proc/self/mountinfo', 'utf8');
  const st = await fsp.stat(device).catch(() => undefined);
  const majMin = st !== undefined ? `${Math.floor(st.rdev / 256) & 0xfff}:${(st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00)}` : undefined;
  for (const line of info.split('\n')) {
    const fields = line.split(' ');
    const sep = fields.indexOf('-');
    if (sep < 0) continue;
    if (fields[sep + 2] === device || (majMin !== undefined && fields[2] === majMin)) {
      throw new AttachError('BUSY', `${device} is mounted on ${fields[4] ?? '?'}; unmount it first`);
    }
  }
}

async function pathExists(p: string): Promise<boolean> {
  return fsp.access(p).then(
    () => true,
    () => false,
  );
}

/** Polls `cond` every 20 ms until true; rejects with TIMEOUT after `timeoutMs`. */
async function pollUntil(cond: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new AttachError('TIMEOUT', `timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

function exitPromise(child: ChildProcess): Promise<number | string> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) resolve(child.exitCode);
    child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown'));
    child.once('error', (err) => resolve(err.message));
  });
}

async function withTimeout<T>(p: Promise<T>, timeoutMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new AttachError('TIMEOUT', `timed out after ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Runs a command; resolves stdout, rejects COMMAND_FAILED with stderr. */
function exec(cmd: string, args: readonly string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err === null) resolve(stdout);
      else reject(new AttachError('COMMAND_FAILED', `${cmd} ${args.join(' ')}: ${stderr.trim() || err.message}`));
    });
  });
}
