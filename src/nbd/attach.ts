/**
 * Attach an NBD export as a local block device, the way the CSI node plugin does:
 *
 * - kernel path (only when /dev/nbd* exists, i.e. the nbd module is loaded): `nbd-client -unix
 *   SOCK /dev/nbdX -N NAME -b 4096 -C n -t 0` (netlink; `-t 0` = wait for ever on a stuck server,
 *   never fail I/O), readiness = /sys/block/nbdX/size > 0, detach with `nbd-client -d`. The device
 *   cannot grow while attached (nbd-client 3.24 has no resize), so NodeExpandVolume refuses there.
 * - fallback: nbdfuse exposes the export as one file on a private FUSE mount (`-P pidfile` signals
 *   readiness), and `losetup --find --show --direct-io=on [--sizelimit=N]` turns it into
 *   /dev/loopN. Direct I/O avoids double page caching. With `sizeLimit` the caller attaches a
 *   larger export (the volume's hidden `.attach` export, 1 PiB) and the loop device shows exactly
 *   `sizeLimit` bytes; `setLoopSizeLimit` raises that limit later (LOOP_SET_STATUS64), which is how
 *   an attached volume grows online. Teardown order: umount (the caller's job) → `losetup -d` →
 *   wait for the loop device to let go → `fusermount3 -u`, which makes nbdfuse exit cleanly (it must
 *   never be killed).
 *
 * nbdfuse outlives whoever attached it: it is spawned detached (own session), with stderr going to
 * a log file (never a pipe: a pipe whose reader died would kill it with SIGPIPE). Everything needed
 * to check on it or tear it down later, from another process, is in the JSON-serialisable
 * AttachmentRecord; `detachRecord` and `attachmentProblems` work from that alone.
 *
 * Caveat (nbd.md §5.10): a user-space server serving a block device on the same host can
 * deadlock under memory pressure; nbdfuse+loop even more so. This is the fallback, not the goal.
 *
 * No sleeps: readiness and teardown wait on real conditions (pid file, sysfs, process exit) with
 * deadlines.
 */
import { execFile, spawn } from 'node:child_process';
import { closeSync, openSync, promises as fsp, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

import { ensurePrivateDir } from './server.js';

export type AttachMethod = 'kernel' | 'nbdfuse';

export interface AttachOptions {
  /** Unix socket the NBD server listens on. */
  readonly socketPath: string;
  /** Export name ("" = default export). */
  readonly exportName: string;
  /** Private directory for the nbdfuse mountpoint, pid file and log; created 0700 if missing. */
  readonly workDir: string;
  /** Attach read-only (nbd-client -R, nbdfuse -r, losetup --read-only). */
  readonly readOnly?: boolean;
  /** NBD connections (nbd-client -C, nbdfuse -C); default 1 for the kernel, 4 for nbdfuse. */
  readonly connections?: number;
  /** Kernel block size, 512…4096 (default 4096). */
  readonly blockSize?: number;
  /** How long attach/detach steps may take (default 30 s). */
  readonly timeoutMs?: number;
  /** nbdfuse path: the loop device shows only this many bytes of the export (losetup --sizelimit). */
  readonly sizeLimit?: number;
  /** nbdfuse path: where nbdfuse's stderr goes (default `<workDir>/nbdfuse.log`). */
  readonly logFile?: string;
}

/** A running process, identified beyond its pid (pids are reused). */
export interface ProcessRef {
  readonly pid: number;
  /** Field 22 of /proc/PID/stat (clock ticks after boot); a reused pid has another. */
  readonly startTime: string;
}

/** Everything needed to check on or tear down an attachment from another process. JSON-safe. */
export interface AttachmentRecord {
  readonly method: AttachMethod;
  /** The block device to format and mount: /dev/nbdN or /dev/loopN. */
  readonly device: string;
  /** nbdfuse path only. */
  readonly fuse?: {
    readonly process: ProcessRef;
    /** The FUSE mountpoint (a directory in the work dir). */
    readonly mountpoint: string;
    /** The file nbdfuse shows there: the loop device's backing file. */
    readonly file: string;
  };
}

export interface Attachment extends AttachmentRecord {
  /**
   * Detaches. Refuses (AttachError BUSY) while the device is still mounted: unmount first.
   * Idempotent.
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

/** Rebuilds a live Attachment (with detach) from a record, e.g. after a restart. */
export function attachmentFromRecord(record: AttachmentRecord, timeoutMs = DEFAULT_TIMEOUT_MS): Attachment {
  return { ...record, detach: () => detachRecord(record, timeoutMs) };
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

function sysBlockFile(device: string, ...rest: string[]): string {
  return path.join('/sys/block', path.basename(device), ...rest);
}

async function nbdDeviceSize(device: string): Promise<number> {
  return Number((await fsp.readFile(sysBlockFile(device, 'size'), 'utf8').catch(() => '0')).trim());
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
  await pollUntil(async () => (await nbdDeviceSize(device)) > 0, timeoutMs, `${device} to come up`);
  return attachmentFromRecord({ method: 'kernel', device }, timeoutMs);
}

// ─── nbdfuse + loop path ──────────────────────────────────────────────────────────────────────

/** Attaches through nbdfuse (a FUSE file) and a loop device with direct I/O. */
export async function attachNbdfuse(opts: AttachOptions): Promise<Attachment> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (opts.sizeLimit !== undefined && (!Number.isSafeInteger(opts.sizeLimit) || opts.sizeLimit <= 0 || opts.sizeLimit % 512 !== 0)) {
    throw new AttachError('INVALID_ARGUMENT', `size limit must be a positive multiple of 512, got ${opts.sizeLimit}`);
  }
  await ensurePrivateDir(opts.workDir);
  const mountpoint = path.join(opts.workDir, 'fuse');
  const pidFile = path.join(opts.workDir, 'nbdfuse.pid');
  const logFile = opts.logFile ?? path.join(opts.workDir, 'nbdfuse.log');
  await fsp.mkdir(mountpoint, { recursive: true, mode: 0o700 });
  await fsp.rm(pidFile, { force: true });
  const file = path.join(mountpoint, 'disk');
  const args = ['-P', pidFile, '-C', String(opts.connections ?? 4)];
  if (opts.readOnly === true) args.push('-r');
  args.push(file, nbdUnixUri(opts.socketPath, opts.exportName));

  // Detached (own session) with stderr to a file: it must survive whoever started it.
  const logFd = openSync(logFile, 'a', 0o600);
  let exitedEarly: string | undefined;
  let child;
  try {
    child = spawn('nbdfuse', args, { detached: true, stdio: ['ignore', 'ignore', logFd] });
  } finally {
    closeSync(logFd);
  }
  child.once('exit', (code, signal) => (exitedEarly = String(code ?? signal)));
  child.once('error', (err) => (exitedEarly = err.message));
  child.unref();
  const logTail = async (): Promise<string> => (await fsp.readFile(logFile, 'utf8').catch(() => '')).trim().split('\n').slice(-5).join(' | ');
  try {
    // Ready when nbdfuse has written its pid file; failed if it exits first.
    await pollUntil(
      async () => {
        if (exitedEarly !== undefined) throw new AttachError('COMMAND_FAILED', `nbdfuse exited (${exitedEarly}) before becoming ready: ${await logTail()}`);
        return (await fsp.readFile(pidFile, 'utf8').catch(() => '')).trim() !== '';
      },
      timeoutMs,
      'nbdfuse to become ready',
    );
  } catch (err) {
    if (child.pid !== undefined && exitedEarly === undefined) child.kill('SIGTERM'); // never became ready
    await exec('fusermount3', ['-u', mountpoint], timeoutMs).catch(() => undefined);
    throw err;
  }
  const pid = child.pid as number;
  const fuseProcess: ProcessRef = { pid, startTime: processStartTime(pid) ?? '' };
  const fuse = { process: fuseProcess, mountpoint, file };

  let device: string;
  try {
    const losetupArgs = ['--find', '--show', '--direct-io=on'];
    if (opts.sizeLimit !== undefined) losetupArgs.push(`--sizelimit=${opts.sizeLimit}`);
    if (opts.readOnly === true) losetupArgs.push('--read-only');
    losetupArgs.push(file);
    device = (await exec('losetup', losetupArgs, timeoutMs)).trim();
    if (!/^\/dev\/loop\d+$/.test(device)) throw new AttachError('COMMAND_FAILED', `losetup printed ${JSON.stringify(device)}`);
  } catch (err) {
    await exec('fusermount3', ['-u', mountpoint], timeoutMs).catch(() => undefined);
    await waitForProcessExit(fuseProcess, timeoutMs, 'nbdfuse to exit').catch(() => undefined);
    throw err;
  }
  return attachmentFromRecord({ method: 'nbdfuse', device, fuse }, timeoutMs);
}

/** The file a loop device is bound to, or undefined when it is free. */
export async function loopBackingFile(device: string): Promise<string | undefined> {
  const text = await fsp.readFile(sysBlockFile(device, 'loop', 'backing_file'), 'utf8').catch(() => undefined);
  return text?.trim();
}

/**
 * Tears down what a record describes, step by step, skipping steps already done, so it works after
 * a crash at any point and from a process that did not attach: losetup -d (if the loop device is
 * still bound to our file) → wait for it to let go → fusermount3 -u (if still mounted) → wait for
 * nbdfuse to exit. Refuses (BUSY) while the device is mounted.
 */
export async function detachRecord(record: AttachmentRecord, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<void> {
  await assertNotMounted(record.device);
  if (record.method === 'kernel') {
    if ((await nbdDeviceSize(record.device)) > 0) await exec('nbd-client', nbdClientDetachArgs(record.device), timeoutMs);
    await pollUntil(async () => (await nbdDeviceSize(record.device)) === 0, timeoutMs, `${record.device} to detach`);
    return;
  }
  const fuse = record.fuse;
  if (fuse === undefined) throw new AttachError('INVALID_ARGUMENT', `nbdfuse attachment of ${record.device} has no FUSE details`);
  if (isOurBacking(await loopBackingFile(record.device), fuse.file)) {
    await exec('losetup', ['-d', record.device], timeoutMs).catch(async (err: unknown) => {
      // Lost a race with the kernel's autoclear, or already detached: fine if it is gone now.
      if (isOurBacking(await loopBackingFile(record.device), fuse.file)) throw err;
    });
    // The loop device releases the FUSE file asynchronously; fusermount3 -u fails (EBUSY) until then.
    await pollUntil(async () => !isOurBacking(await loopBackingFile(record.device), fuse.file), timeoutMs, `${record.device} to release ${fuse.file}`);
  }
  if (await isMountPoint(fuse.mountpoint)) {
    await exec('fusermount3', ['-u', fuse.mountpoint], timeoutMs).catch(async (err: unknown) => {
      // nbdfuse already died: the mount is a dead endpoint; a lazy unmount clears it.
      if (isProcessAlive(fuse.process)) throw err;
      await exec('fusermount3', ['-u', '-z', fuse.mountpoint], timeoutMs);
    });
  }
  await waitForProcessExit(fuse.process, timeoutMs, 'nbdfuse to exit');
}

function isOurBacking(backing: string | undefined, file: string): boolean {
  return backing !== undefined && (backing === file || backing.startsWith(`${file} `));
}

/**
 * What is wrong with an attachment, as human-readable problems; empty when it looks healthy
 * (nbdfuse alive and mounted, the loop device bound to its file; or the nbd device connected).
 */
export async function attachmentProblems(record: AttachmentRecord): Promise<string[]> {
  const problems: string[] = [];
  if (record.method === 'kernel') {
    if ((await nbdDeviceSize(record.device)) === 0) problems.push(`${record.device} is no longer connected to its NBD server`);
    return problems;
  }
  const fuse = record.fuse;
  if (fuse === undefined) return [`nbdfuse attachment of ${record.device} has no FUSE details`];
  if (!isProcessAlive(fuse.process)) problems.push(`nbdfuse (pid ${fuse.process.pid}) is not running`);
  if (!(await isMountPoint(fuse.mountpoint))) problems.push(`the FUSE mount ${fuse.mountpoint} is gone`);
  if (!isOurBacking(await loopBackingFile(record.device), fuse.file)) problems.push(`${record.device} is no longer bound to ${fuse.file}`);
  return problems;
}

// ─── Loop device size (online growth) ─────────────────────────────────────────────────────────

const LOOP_SET_STATUS64 = 0x4c04;
const LOOP_GET_STATUS64 = 0x4c05;
/** sizeof(struct loop_info64). */
const LOOP_INFO64_SIZE = 232;
/** offsetof(struct loop_info64, lo_sizelimit): after lo_device, lo_inode, lo_rdevice, lo_offset (4 × u64). */
const LO_SIZELIMIT_OFFSET = 32;

interface Libc {
  readonly ioctl: (fd: number, request: number, ...args: unknown[]) => number;
  readonly errno: () => number;
}
let libc: Libc | undefined;

/** ioctl(2) through koffi (bound on first use), as src/engine/native.ts binds its libc calls. */
function ioctl(fd: number, request: number, buf: Buffer, what: string): void {
  if (libc === undefined) {
    const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
    const fn = koffi.load('libc.so.6').func('int ioctl(int fd, unsigned long request, ...)');
    libc = { ioctl: (...args) => fn(...args) as number, errno: () => koffi.errno() };
  }
  if (libc.ioctl(fd, request, 'void *', buf) !== 0) throw new AttachError('COMMAND_FAILED', `${what} failed: errno ${libc.errno()}`);
}

function withLoopStatus<T>(device: string, fn: (fd: number, info: Buffer) => T): T {
  if (!/^\/dev\/loop\d+$/.test(device)) throw new AttachError('INVALID_ARGUMENT', `not a loop device: ${device}`);
  const fd = openSync(device, 'r');
  try {
    const info = Buffer.alloc(LOOP_INFO64_SIZE);
    ioctl(fd, LOOP_GET_STATUS64, info, `LOOP_GET_STATUS64 on ${device}`);
    return fn(fd, info);
  } finally {
    closeSync(fd);
  }
}

/** A loop device's size limit in bytes (0 = none: the backing file's size). */
export function getLoopSizeLimit(device: string): number {
  return withLoopStatus(device, (_fd, info) => Number(info.readBigUInt64LE(LO_SIZELIMIT_OFFSET)));
}

/**
 * Sets a loop device's size limit with LOOP_SET_STATUS64; the kernel then resizes the block device
 * (also while it is mounted, which is how a mounted file system gets room to grow).
 */
export function setLoopSizeLimit(device: string, bytes: number): void {
  if (!Number.isSafeInteger(bytes) || bytes <= 0 || bytes % 512 !== 0) throw new AttachError('INVALID_ARGUMENT', `size limit must be a positive multiple of 512, got ${bytes}`);
  withLoopStatus(device, (fd, info) => {
    if (Number(info.readBigUInt64LE(LO_SIZELIMIT_OFFSET)) === bytes) return;
    info.writeBigUInt64LE(BigInt(bytes), LO_SIZELIMIT_OFFSET);
    ioctl(fd, LOOP_SET_STATUS64, info, `LOOP_SET_STATUS64 on ${device}`);
  });
}

/** A block device's size in bytes, from sysfs (512-byte sectors). */
export async function blockDeviceSize(device: string): Promise<number> {
  return (await nbdDeviceSize(device)) * 512;
}

// ─── Processes ────────────────────────────────────────────────────────────────────────────────

/** /proc/PID/stat fields after the command name: [state, ppid, …]; undefined if there is no such process. */
function procStat(pid: number): string[] | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  return text.slice(text.lastIndexOf(')') + 2).split(' ');
}

/** The start time of a process (field 22 of /proc/PID/stat), or undefined if it does not exist. */
export function processStartTime(pid: number): string | undefined {
  return procStat(pid)?.[19];
}

/** Whether the process runs (a zombie counts as dead) and is the same one (same start time). */
export function isProcessAlive(ref: ProcessRef): boolean {
  const fields = procStat(ref.pid);
  if (fields === undefined) return false;
  const state = fields[0];
  if (state === 'Z' || state === 'X' || state === 'x') return false;
  return ref.startTime === '' || fields[19] === ref.startTime;
}

/** Waits until the process has exited; rejects with TIMEOUT after `timeoutMs`. */
export async function waitForProcessExit(ref: ProcessRef, timeoutMs: number, what: string): Promise<void> {
  await pollUntil(async () => !isProcessAlive(ref), timeoutMs, what);
}

// ─── Helpers ──────────────────────────────────────────────────────────────────────────────────

/** Decodes the octal escapes (\040 etc.) mountinfo uses in paths. */
function unescapeMountPath(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** One line of /proc/self/mountinfo. */
export interface MountEntry {
  /** major:minor of the mounted file system's device. */
  readonly majMin: string;
  /** Root of the mount within its file system ("/" or a subpath for bind mounts). */
  readonly root: string;
  readonly mountPoint: string;
  readonly options: string;
  readonly fsType: string;
  readonly source: string;
}

/** The mount table of this mount namespace. */
export async function readMounts(): Promise<MountEntry[]> {
  const info = await fsp.readFile('/proc/self/mountinfo', 'utf8');
  const out: MountEntry[] = [];
  for (const line of info.split('\n')) {
    const fields = line.split(' ');
    const sep = fields.indexOf('-');
    if (sep < 0 || fields.length < sep + 3) continue;
    out.push({
      majMin: fields[2] ?? '',
      root: unescapeMountPath(fields[3] ?? ''),
      mountPoint: unescapeMountPath(fields[4] ?? ''),
      options: fields[5] ?? '',
      fsType: fields[sep + 1] ?? '',
      source: unescapeMountPath(fields[sep + 2] ?? ''),
    });
  }
  return out;
}

/** Whether something is mounted at `p` (exactly that path). */
export async function isMountPoint(p: string): Promise<boolean> {
  return (await readMounts()).some((m) => m.mountPoint === p);
}

/** major:minor of a device node, as mountinfo writes it. */
export async function deviceMajMin(device: string): Promise<string | undefined> {
  const st = await fsp.stat(device).catch(() => undefined);
  if (st === undefined || !st.isBlockDevice()) return undefined;
  return `${Math.floor(st.rdev / 256) & 0xfff}:${(st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00)}`;
}

/** Throws BUSY if `device` (path or major:minor) is mounted anywhere in this mount namespace. */
export async function assertNotMounted(device: string): Promise<void> {
  const majMin = await deviceMajMin(device);
  for (const m of await readMounts()) {
    if (m.source === device || (majMin !== undefined && m.majMin === majMin)) {
      throw new AttachError('BUSY', `${device} is mounted on ${m.mountPoint}; unmount it first`);
    }
  }
}

/** Polls `cond` every 20 ms until true; rejects with TIMEOUT after `timeoutMs`. */
export async function pollUntil(cond: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new AttachError('TIMEOUT', `timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, POLL_MS));
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
