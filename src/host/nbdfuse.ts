/**
 * The nbdfuse path: nbdfuse exposes the export as one file on a private FUSE mount (`-P pidfile`
 * signals readiness), and a loop device with direct I/O turns it into /dev/loopN (fuse-loop.ts).
 * With `sizeLimit` the caller attaches a larger export (the volume's hidden `.attach` export, 1 PiB)
 * and the loop device shows exactly `sizeLimit` bytes; `setLoopSizeLimit` (loop.ts) raises that
 * limit later, which is how an attached volume grows online. Teardown order: umount (the caller's
 * job) → `losetup -d` → wait for the loop device to let go → `fusermount3 -u`, which makes nbdfuse
 * exit cleanly (it must never be killed).
 *
 * nbdfuse outlives whoever attached it: it is spawned detached (own session), with stderr going to
 * a log file (never a pipe: a pipe whose reader died would kill it with SIGPIPE). Everything needed
 * to check on it or tear it down later, from another process, is in the AttachmentRecord.
 *
 * Caveat (nbd.md §5.10): a user-space server serving a block device on the same host can
 * deadlock under memory pressure; nbdfuse+loop even more so. This is the fallback, not the goal.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync, promises as fsp } from 'node:fs';
import path from 'node:path';
import { DEFAULT_ATTACH_TIMEOUT_MS, type AttachOptions, type Attachment, type AttachmentRecord } from './attachment.js';
import { HostError } from './errors.js';
import { run } from './exec.js';
import { FUSE_FILE_NAME, bindLoop, fuseLoopProblems, prepareFuseMountpoint, releaseLoop, unmountWhenReleased } from './fuse-loop.js';
import { assertNotMounted, isMountPoint } from './mounts.js';
import { pollUntil } from './poll.js';
import { isProcessAlive, processRef, waitForProcessExit } from './process.js';

/**
 * nbdfuse's NBD connections by default. One: its FUSE threads still keep many requests in flight
 * on it, and in alternating runs inside ext4 both serve and nbdfuse spent less CPU per I/O than
 * with 4 connections (of which libnbd 1.14 uses only 3), for the same or more IOPS
 * (docs/performance.md).
 */
export const NBDFUSE_CONNECTIONS = 1;

/** An NBD URI for a Unix socket and export name (nbd+unix:///NAME?socket=PATH). */
export function nbdUnixUri(socketPath: string, exportName: string): string {
  return `nbd+unix:///${encodeURIComponent(exportName)}?socket=${encodeURIComponent(socketPath)}`;
}

/** Attaches through nbdfuse (a FUSE file) and a loop device with direct I/O. */
export async function attachNbdfuse(opts: AttachOptions): Promise<Attachment> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_ATTACH_TIMEOUT_MS;
  const mountpoint = await prepareFuseMountpoint(opts);
  const pidFile = path.join(opts.workDir, 'nbdfuse.pid');
  const logFile = opts.logFile ?? path.join(opts.workDir, 'nbdfuse.log');
  await fsp.rm(pidFile, { force: true });
  const file = path.join(mountpoint, FUSE_FILE_NAME);
  const args = ['-P', pidFile, '-C', String(opts.connections ?? NBDFUSE_CONNECTIONS)];
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
        if (exitedEarly !== undefined) throw new HostError('COMMAND_FAILED', `nbdfuse exited (${exitedEarly}) before becoming ready: ${await logTail()}`);
        return (await fsp.readFile(pidFile, 'utf8').catch(() => '')).trim() !== '';
      },
      timeoutMs,
      'nbdfuse to become ready',
    );
  } catch (err) {
    if (child.pid !== undefined && exitedEarly === undefined) child.kill('SIGTERM'); // never became ready
    await run('fusermount3', ['-u', mountpoint], timeoutMs).catch(() => undefined);
    throw err;
  }
  const fuse = { process: processRef(child.pid as number), mountpoint, file };

  let device: string;
  try {
    device = await bindLoop(file, opts, timeoutMs);
  } catch (err) {
    await run('fusermount3', ['-u', mountpoint], timeoutMs).catch(() => undefined);
    await waitForProcessExit(fuse.process, timeoutMs, 'nbdfuse to exit').catch(() => undefined);
    throw err;
  }
  const record: AttachmentRecord = { method: 'nbdfuse', device, fuse };
  return { ...record, detach: () => detachNbdfuse(record, timeoutMs) };
}

/**
 * Tears down what a record describes, step by step, skipping steps already done, so it works after
 * a crash at any point and from a process that did not attach: losetup -d (if the loop device is
 * still bound to our file) → wait for it to let go → fusermount3 -u (if still mounted) → wait for
 * nbdfuse to exit. Refuses (BUSY) while the device is mounted.
 */
export async function detachNbdfuse(record: AttachmentRecord, timeoutMs = DEFAULT_ATTACH_TIMEOUT_MS): Promise<void> {
  await assertNotMounted(record.device);
  const fuse = record.fuse;
  if (fuse === undefined) throw new HostError('INVALID_ARGUMENT', `nbdfuse attachment of ${record.device} has no FUSE details`);
  await releaseLoop(record.device, fuse.file, timeoutMs);
  if (await isMountPoint(fuse.mountpoint)) {
    await unmountWhenReleased('fusermount3', ['-u', fuse.mountpoint], fuse, timeoutMs).catch(async (err: unknown) => {
      // nbdfuse already died: the mount is a dead endpoint; a lazy unmount clears it.
      if (isProcessAlive(fuse.process)) throw err;
      await run('fusermount3', ['-u', '-z', fuse.mountpoint], timeoutMs);
    });
  }
  await waitForProcessExit(fuse.process, timeoutMs, 'nbdfuse to exit');
}

/** What is wrong with an nbdfuse attachment; empty when nbdfuse runs, is mounted, and the loop device is bound to its file. */
export async function nbdfuseAttachmentProblems(record: AttachmentRecord): Promise<string[]> {
  const problems = await fuseLoopProblems(record);
  if (record.fuse !== undefined && !isProcessAlive(record.fuse.process)) problems.unshift(`nbdfuse (pid ${record.fuse.process.pid}) is not running`);
  return problems;
}
