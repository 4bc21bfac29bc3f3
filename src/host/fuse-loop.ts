/**
 * The part the two FUSE attach methods share (nbdfuse.ts, serve-fuse.ts): a file on a private FUSE
 * mount, turned into /dev/loopN by `losetup --find --show --direct-io=on [--sizelimit=N]`. Direct
 * I/O avoids double page caching; the size limit lets the device grow online (loop.ts). Teardown:
 * `losetup -d`, then wait for the loop device to let go of the file (it does so asynchronously, and
 * the FUSE mount cannot be unmounted before), then unmount the FUSE mount.
 */
import path from 'node:path';
import { promises as fsp } from 'node:fs';
import { DISK_NAME } from '../fuse/channel.js';
import { ensurePrivateDir } from '../nbd/server.js';
import type { AttachOptions, AttachmentRecord } from './attachment.js';
import { CommandError, HostError } from './errors.js';
import { run } from './exec.js';
import { loopBackingFile } from './loop.js';
import { explainDeviceWait } from './mount-holders.js';
import { isMountPoint } from './mounts.js';
import { isProcessAlive } from './process.js';
import { pollUntil } from './poll.js';

/** The FUSE half of an attachment record. */
export type FuseDetails = NonNullable<AttachmentRecord['fuse']>;

/** The FUSE mountpoint in an attachment's work dir (also what start-up adoption looks for). */
export const FUSE_MOUNT_DIR = 'fuse';
/** The one file a FUSE attachment shows in its mountpoint: serve's export names it so, and nbdfuse is given the same name. */
export const FUSE_FILE_NAME = DISK_NAME;

/** Checks the options and makes the work dir (0700) and its FUSE mountpoint; returns the mountpoint. */
export async function prepareFuseMountpoint(opts: AttachOptions): Promise<string> {
  if (opts.sizeLimit !== undefined && (!Number.isSafeInteger(opts.sizeLimit) || opts.sizeLimit <= 0 || opts.sizeLimit % 512 !== 0)) {
    throw new HostError('INVALID_ARGUMENT', `size limit must be a positive multiple of 512, got ${opts.sizeLimit}`);
  }
  await ensurePrivateDir(opts.workDir);
  const mountpoint = path.join(opts.workDir, FUSE_MOUNT_DIR);
  await fsp.mkdir(mountpoint, { recursive: true, mode: 0o700 });
  return mountpoint;
}

/** Binds a free loop device to `file` with direct I/O; returns /dev/loopN. */
export async function bindLoop(file: string, opts: AttachOptions, timeoutMs: number): Promise<string> {
  const args = ['--find', '--show', '--direct-io=on'];
  if (opts.sizeLimit !== undefined) args.push(`--sizelimit=${opts.sizeLimit}`);
  if (opts.readOnly === true) args.push('--read-only');
  args.push(file);
  const device = (await run('losetup', args, timeoutMs)).stdout.trim();
  if (!/^\/dev\/loop\d+$/.test(device)) throw new HostError('COMMAND_FAILED', `losetup printed ${JSON.stringify(device)}`);
  return device;
}

/** Whether the loop device is still bound to `file` (its sysfs backing_file, or that followed by a suffix). */
async function loopBoundTo(device: string, file: string): Promise<boolean> {
  const backing = await loopBackingFile(device);
  return backing !== undefined && (backing === file || backing.startsWith(`${file} `));
}

/**
 * `losetup -d` if the device is still bound to `file`, then waits until it has let go of it; a
 * DeviceHeldError (BUSY) if it did not because its file system is mounted in another mount namespace.
 */
export async function releaseLoop(device: string, file: string, timeoutMs: number): Promise<void> {
  if (!(await loopBoundTo(device, file))) return;
  await run('losetup', ['-d', device], timeoutMs).catch(async (err: unknown) => {
    // Lost a race with the kernel's autoclear, or already detached: fine if it is gone now.
    if (await loopBoundTo(device, file)) throw err;
  });
  // The loop device releases the FUSE file asynchronously; unmounting fails (EBUSY) until then.
  // It never does while a copy of its file system is mounted in another mount namespace: say which.
  await pollUntil(async () => !(await loopBoundTo(device, file)), timeoutMs, `${device} to release ${file}`).catch((err: unknown) => explainDeviceWait(device, err));
}

/**
 * Runs an unmount command, again while it fails with "busy" and the file's server still runs: the
 * loop device drops its sysfs backing_file before its close of the FUSE file has finished, so the
 * first try can still find the file open (seen once in about 80 cycles of
 * test/reliability/serve-fuse-power-loss.test.ts). With the server gone the caller's lazy unmount
 * is the way out, so its error comes back at once.
 */
export async function unmountWhenReleased(cmd: string, args: readonly string[], fuse: FuseDetails, timeoutMs: number): Promise<void> {
  await pollUntil(
    async () => {
      try {
        await run(cmd, args, timeoutMs);
        return true;
      } catch (err) {
        if (err instanceof CommandError && /busy/i.test(err.stderr) && isProcessAlive(fuse.process)) return false;
        throw err;
      }
    },
    timeoutMs,
    `${fuse.mountpoint} to be let go so that it can be unmounted`,
  );
}

/** Problems of the loop-and-mount half of a FUSE attachment (the process behind it is the caller's). */
export async function fuseLoopProblems(record: AttachmentRecord): Promise<string[]> {
  const fuse = record.fuse;
  if (fuse === undefined) return [`${record.method} attachment of ${record.device} has no FUSE details`];
  const problems: string[] = [];
  if (!(await isMountPoint(fuse.mountpoint))) problems.push(`the FUSE mount ${fuse.mountpoint} is gone`);
  if (!(await loopBoundTo(record.device, fuse.file))) problems.push(`${record.device} is no longer bound to ${fuse.file}`);
  return problems;
}
