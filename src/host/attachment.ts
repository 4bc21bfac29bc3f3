/**
 * What an attachment is: the options to make one, and the JSON-safe record from which another
 * process (a restarted plugin) can check on it or tear it down.
 */
import type { ProcessRef } from './process.js';

/**
 * kernel: the kernel's nbd client (kernel-nbd.ts); serve-fuse: the volume's serve process mounts a
 * FUSE file itself (serve-fuse.ts); nbdfuse: nbdfuse serves the FUSE file from NBD (nbdfuse.ts).
 * Both FUSE methods put a loop device over the file.
 */
export type AttachMethod = 'kernel' | 'serve-fuse' | 'nbdfuse';

/** What the plugin is told to use (`flashcsi plugin --attach`): `auto` = the kernel where its nbd module is loaded, else serve-fuse. */
export const ATTACH_PREFERENCES = ['auto', 'kernel', 'serve-fuse', 'nbdfuse'] as const;
export type AttachPreference = (typeof ATTACH_PREFERENCES)[number];

export interface AttachOptions {
  /** Unix socket the NBD server listens on. */
  readonly socketPath: string;
  /** Export name ("" = default export). */
  readonly exportName: string;
  /** Private directory for the FUSE mountpoint and nbdfuse's pid file and log; created 0700 if missing. */
  readonly workDir: string;
  /** Attach read-only (kernel: a READ_ONLY device, nbdfuse -r, losetup --read-only). */
  readonly readOnly?: boolean;
  /** NBD connections (kernel: one blk-mq queue each; nbdfuse -C); default 1. */
  readonly connections?: number;
  /** Kernel block size, 512…4096 (default 4096). */
  readonly blockSize?: number;
  /** How long attach/detach steps may take (default 30 s). */
  readonly timeoutMs?: number;
  /** FUSE methods: the loop device shows only this many bytes of the file (losetup --sizelimit). */
  readonly sizeLimit?: number;
  /** nbdfuse path: where nbdfuse's stderr goes (default `<workDir>/nbdfuse.log`). */
  readonly logFile?: string;
  /** Kernel path: the backend identifier (/sys/block/nbdN/backend), required again to reconnect. */
  readonly identifier?: string;
}

/** Everything needed to check on or tear down an attachment from another process. JSON-safe. */
export interface AttachmentRecord {
  readonly method: AttachMethod;
  /** The block device to format and mount: /dev/nbdN or /dev/loopN. */
  readonly device: string;
  /** Kernel path: the backend identifier the device was attached with. */
  readonly identifier?: string;
  /** Kernel path: how many connections the device has (each reconnect hands over that many). */
  readonly connections?: number;
  /** The FUSE methods only. */
  readonly fuse?: {
    /** The process that serves the FUSE file: nbdfuse, or the volume's serve. */
    readonly process: ProcessRef;
    /** The FUSE mountpoint (a directory in the work dir). */
    readonly mountpoint: string;
    /** The file shown there: the loop device's backing file. */
    readonly file: string;
  };
}

export interface Attachment extends AttachmentRecord {
  /**
   * Detaches. Refuses (HostError BUSY) while the device is still mounted: unmount first.
   * Idempotent.
   */
  detach(): Promise<void>;
}

/** How long each attach or detach step may take unless the caller says otherwise. */
export const DEFAULT_ATTACH_TIMEOUT_MS = 30_000;
