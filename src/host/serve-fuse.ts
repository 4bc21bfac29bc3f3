/**
 * The serve-fuse path: the volume's own data-path process (`flashcsi serve`, src/fuse) mounts the
 * FUSE file and answers it from worker threads, and a loop device with direct I/O turns the file
 * into /dev/loopN (fuse-loop.ts). No nbdfuse and no NBD socket on the I/O path: per 4 KiB request,
 * one read of /dev/fuse, one pread or pwrite, one reply (docs/performance.md).
 *
 * The plugin asks serve to mount over serve's control socket (op `fuse.mount`); the mount then
 * belongs to serve's process, which the record names, and lives until the plugin unmounts it or
 * serve exits. Teardown: umount (the caller's job) → `losetup -d` → wait for the loop device to
 * let go → `umount` of the FUSE mount, after which serve's FUSE workers stop and serve goes on
 * serving its control socket until it is stopped. If serve died, the FUSE mount is a dead endpoint
 * (ENOTCONN) and is detached lazily.
 */
import path from 'node:path';
import { controlCall } from '../nbd/control.js';
import { controlSocketPath } from '../nbd/serve.js';
import { DEFAULT_ATTACH_TIMEOUT_MS, type AttachOptions, type Attachment, type AttachmentRecord } from './attachment.js';
import { HostError } from './errors.js';
import { run } from './exec.js';
import { FUSE_FILE_NAME, bindLoop, type FuseDetails, fuseLoopProblems, prepareFuseMountpoint, releaseLoop, unmountWhenReleased } from './fuse-loop.js';
import { assertNotMounted, isMountPoint } from './mounts.js';
import { isProcessAlive, processRef } from './process.js';

/** What serve answers to `fuse.mount`. */
interface FuseMounted {
  readonly file: string;
  readonly pid: number;
}

/** Attaches through serve's own FUSE export and a loop device with direct I/O. */
export async function attachServeFuse(opts: AttachOptions): Promise<Attachment> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_ATTACH_TIMEOUT_MS;
  const mountpoint = await prepareFuseMountpoint(opts);
  const mounted = await controlCall<FuseMounted>(controlSocketPath(opts.socketPath), { op: 'fuse.mount', mountpoint }, timeoutMs);
  if (mounted.file !== path.join(mountpoint, FUSE_FILE_NAME)) throw new HostError('COMMAND_FAILED', `serve mounted ${mounted.file}, not in ${mountpoint}`);
  const fuse = { process: processRef(mounted.pid), mountpoint, file: mounted.file };
  let device: string;
  try {
    device = await bindLoop(fuse.file, opts, timeoutMs);
  } catch (err) {
    await unmountFuse(fuse, timeoutMs).catch(() => undefined);
    throw err;
  }
  const record: AttachmentRecord = { method: 'serve-fuse', device, fuse };
  return { ...record, detach: () => detachServeFuse(record, timeoutMs) };
}

/**
 * Tears down what a record describes, skipping steps already done, so it works after a crash at any
 * point and from a process that did not attach. Refuses (BUSY) while the device is mounted.
 */
export async function detachServeFuse(record: AttachmentRecord, timeoutMs = DEFAULT_ATTACH_TIMEOUT_MS): Promise<void> {
  await assertNotMounted(record.device);
  const fuse = record.fuse;
  if (fuse === undefined) throw new HostError('INVALID_ARGUMENT', `serve-fuse attachment of ${record.device} has no FUSE details`);
  await releaseLoop(record.device, fuse.file, timeoutMs);
  await unmountFuse(fuse, timeoutMs);
}

async function unmountFuse(fuse: FuseDetails, timeoutMs: number): Promise<void> {
  if (!(await isMountPoint(fuse.mountpoint))) return;
  await unmountWhenReleased('umount', [fuse.mountpoint], fuse, timeoutMs).catch(async (err: unknown) => {
    // serve died: the mount is a dead endpoint that only a lazy unmount clears.
    if (isProcessAlive(fuse.process)) throw err;
    await run('umount', ['-l', fuse.mountpoint], timeoutMs);
  });
}

/** What is wrong with a serve-fuse attachment; empty when serve runs, its FUSE file is mounted and the loop device is bound to it. */
export async function serveFuseAttachmentProblems(record: AttachmentRecord): Promise<string[]> {
  const problems = await fuseLoopProblems(record);
  if (record.fuse !== undefined && !isProcessAlive(record.fuse.process)) {
    problems.unshift(`the FUSE file ${record.fuse.file} lost its server with it, so every I/O on ${record.device} fails until the volume is staged again`);
  }
  return problems;
}
