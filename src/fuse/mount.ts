/**
 * Mounting and unmounting a FUSE file system without fusermount: open /dev/fuse, mount(2) with
 * `fd=N` (root only), umount2(2). Bound through koffi like src/engine/native.ts; the calls are
 * synchronous so that errno is read on the thread that made the call.
 */
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import { FuseError } from './errors.js';

const require = createRequire(import.meta.url);
const koffi = require('koffi') as typeof import('koffi');

const libc = koffi.load('libc.so.6');
const mountFn = libc.func('int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const char *data)');
const umount2Fn = libc.func('int umount2(const char *target, int flags)');

const MS_NOSUID = 2;
const MS_NODEV = 4;
const MNT_DETACH = 2;
const EBUSY = 16;
const EINVAL = 22;

/** The source name the mount shows in /proc/self/mountinfo (`flashcsi` on type `fuse`). */
export const MOUNT_SOURCE = 'flashcsi';

function errnoName(errno: number): string {
  const name = Object.entries(os.constants.errno).find(([, n]) => n === errno)?.[0];
  return name ?? `errno ${errno}`;
}

/**
 * Opens /dev/fuse and mounts a FUSE file system on `mountpoint` served through the returned fd:
 * root directory mode 040000, owner root, every user may enter (allow_other: the loop device and
 * the pod's processes are not the server), no setuid, no device files.
 */
export function mountFuse(mountpoint: string): number {
  if (process.getuid?.() !== 0) throw new FuseError('NOT_ROOT', `mounting FUSE on ${mountpoint} needs root (running as uid ${process.getuid?.()})`);
  let st: fs.Stats;
  try {
    st = fs.statSync(mountpoint);
  } catch (err) {
    throw new FuseError('MOUNTPOINT_MISSING', `FUSE mount point ${mountpoint} does not exist`, { cause: err });
  }
  if (!st.isDirectory()) throw new FuseError('MOUNTPOINT_MISSING', `FUSE mount point ${mountpoint} is not a directory`);
  let fd: number;
  try {
    fd = fs.openSync('/dev/fuse', 'r+');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    throw new FuseError('NO_DEVICE', `cannot open /dev/fuse (${code}): load the fuse module, or pass /dev/fuse into the container`, { cause: err });
  }
  const data = `fd=${fd},rootmode=40000,user_id=0,group_id=0,allow_other`;
  if (mountFn(MOUNT_SOURCE, mountpoint, 'fuse', MS_NOSUID | MS_NODEV, data) !== 0) {
    const errno = koffi.errno();
    fs.closeSync(fd);
    throw new FuseError('MOUNT_FAILED', `mount -t fuse ${mountpoint} failed: ${errnoName(errno)}`);
  }
  return fd;
}

/**
 * Unmounts the FUSE file system on `mountpoint`. Without `lazy`, a file system whose file is still
 * open (EBUSY) stays mounted and this throws BUSY; with `lazy` (MNT_DETACH) it leaves the name
 * space at once and lives on until the last holder lets go. Returns false when nothing was
 * mounted there (EINVAL: someone else unmounted it).
 */
export function unmountFuse(mountpoint: string, lazy: boolean): boolean {
  if (umount2Fn(mountpoint, lazy ? MNT_DETACH : 0) === 0) return true;
  const errno = koffi.errno();
  if (errno === EINVAL) return false;
  if (errno === EBUSY) throw new FuseError('BUSY', `FUSE mount ${mountpoint} is busy`);
  throw new FuseError('MOUNT_FAILED', `umount ${mountpoint} failed: ${errnoName(errno)}`);
}
