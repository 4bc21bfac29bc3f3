/**
 * File systems and mounts on the node, behind one small interface (aws-ebs `mounter`), so the node
 * logic reads as steps and the commands live here: probe for a file system (`blkid -p`), make one,
 * mount, bind-mount, unmount, grow online or offline, and statfs.
 *
 * Every command runs with a deadline; a failure is a CommandError (COMMAND_FAILED) naming the
 * command and its stderr, except the few outcomes callers must tell apart (see `growFs`).
 */
import { promises as fsp } from 'node:fs';
import { CommandError, HostError } from './errors.js';
import { run } from './exec.js';
import { isMountPoint, readMounts, type MountEntry } from './mounts.js';
import { CAP_SYS_RESOURCE, hasCapability } from './process.js';

/** File systems the node plugin can create and mount. */
export const SUPPORTED_FS_TYPES = ['ext4', 'xfs'] as const;
export type FsType = (typeof SUPPORTED_FS_TYPES)[number];

export interface FsStats {
  readonly totalBytes: bigint;
  readonly availableBytes: bigint;
  readonly usedBytes: bigint;
  readonly totalInodes: bigint;
  readonly freeInodes: bigint;
  readonly usedInodes: bigint;
}

export interface Mounter {
  /** The file system type on a device (`blkid -p`), or undefined when it is blank. */
  probeFsType(device: string): Promise<string | undefined>;
  /** Creates a file system (no discard: a fresh flashcsi volume is all holes anyway). */
  makeFs(device: string, fsType: FsType): Promise<void>;
  mount(source: string, target: string, fsType: string, options: readonly string[]): Promise<void>;
  /** Bind-mounts `source` on `target`, then remounts read-only if asked. */
  bindMount(source: string, target: string, readOnly: boolean): Promise<void>;
  unmount(target: string): Promise<void>;
  mounts(): Promise<MountEntry[]>;
  isMountPoint(path: string): Promise<boolean>;
  /** File system size in bytes as the file system sees it (ext4 via dumpe2fs); undefined if unknown. */
  fsSize(device: string, fsType: string): Promise<number | undefined>;
  /** Grows an unmounted ext4 file system to fill its device (e2fsck -f -p, then resize2fs). */
  growFsOffline(device: string, fsType: string): Promise<void>;
  /**
   * Grows a mounted file system to fill its device: resize2fs (ext4) or xfs_growfs (xfs).
   * Throws HostError FAILED_PRECONDITION when the kernel refuses because this process lacks
   * CAP_SYS_RESOURCE (ext4 online resize needs it).
   */
  growFs(device: string, mountPoint: string, fsType: string): Promise<void>;
  statfs(path: string): Promise<FsStats>;
}

function exitCodeOf(err: unknown): number | undefined {
  return err instanceof CommandError ? err.exitCode : undefined;
}

export const linuxMounter: Mounter = {
  async probeFsType(device) {
    try {
      const { stdout } = await run('blkid', ['-p', '-s', 'TYPE', '-o', 'value', device]);
      return stdout.trim() || undefined;
    } catch (err) {
      if (exitCodeOf(err) === 2) return undefined; // blkid: nothing found
      throw err;
    }
  },

  async makeFs(device, fsType) {
    if (fsType === 'ext4') await run('mkfs.ext4', ['-q', '-F', '-E', 'nodiscard', device]);
    else await run('mkfs.xfs', ['-q', '-f', '-K', device]);
  },

  async mount(source, target, fsType, options) {
    const args = ['-t', fsType];
    if (options.length > 0) args.push('-o', options.join(','));
    await run('mount', [...args, source, target]);
  },

  async bindMount(source, target, readOnly) {
    await run('mount', ['--bind', source, target]);
    if (readOnly) {
      try {
        await run('mount', ['-o', 'remount,bind,ro', target]);
      } catch (err) {
        await run('umount', [target]).catch(() => undefined);
        throw err;
      }
    }
  },

  async unmount(target) {
    await run('umount', [target]);
  },

  mounts: readMounts,

  isMountPoint,

  async fsSize(device, fsType) {
    if (fsType !== 'ext4') return undefined;
    const { stdout } = await run('dumpe2fs', ['-h', device]);
    const count = /^Block count:\s*(\d+)$/m.exec(stdout)?.[1];
    const size = /^Block size:\s*(\d+)$/m.exec(stdout)?.[1];
    return count !== undefined && size !== undefined ? Number(count) * Number(size) : undefined;
  },

  async growFsOffline(device, fsType) {
    if (fsType !== 'ext4') return;
    // resize2fs insists on a freshly checked file system; -p repairs only what is safe. Exit
    // codes 0 (clean) and 1 (errors corrected) let the resize go ahead.
    await run('e2fsck', ['-f', '-p', device]).catch((err: unknown) => {
      if (exitCodeOf(err) !== 1) throw err;
    });
    await run('resize2fs', [device]);
  },

  async growFs(device, mountPoint, fsType) {
    try {
      if (fsType === 'xfs') await run('xfs_growfs', ['-d', mountPoint]);
      else await run('resize2fs', [device]);
    } catch (err) {
      if (fsType === 'ext4' && err instanceof CommandError && /Permission denied|Operation not permitted/.test(err.stderr) && !hasCapability(CAP_SYS_RESOURCE)) {
        throw new HostError(
          'FAILED_PRECONDITION',
          `growing the mounted ext4 file system on ${device} needs CAP_SYS_RESOURCE, which the flashcsi node plugin does not have; ` +
            'the block device has been grown, and the file system grows to fill it the next time the volume is staged ' +
            '(or run the plugin with CAP_SYS_RESOURCE, e.g. as a privileged container)',
          { cause: err },
        );
      }
      throw err;
    }
  },

  async statfs(path) {
    const s = await fsp.statfs(path, { bigint: true });
    return {
      totalBytes: s.blocks * s.bsize,
      availableBytes: s.bavail * s.bsize,
      usedBytes: (s.blocks - s.bfree) * s.bsize,
      totalInodes: s.files,
      freeInodes: s.ffree,
      usedInodes: s.files - s.ffree,
    };
  },
};
