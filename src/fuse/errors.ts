/** Typed errors of the FUSE export (src/errors.ts lists the layers' unions). */
import { FlashcsiError } from '../errors.js';

export type FuseErrorCode =
  /** mount(2) of FUSE needs root (CAP_SYS_ADMIN). */
  | 'NOT_ROOT'
  /** /dev/fuse is missing or cannot be opened (no fuse module, or not passed into the container). */
  | 'NO_DEVICE'
  /** The mount point does not exist or is not a directory. */
  | 'MOUNTPOINT_MISSING'
  /** mount(2) or umount2(2) failed for another reason (the message has the errno). */
  | 'MOUNT_FAILED'
  /** The FUSE file is still open (a loop device or a process holds it): it cannot be unmounted now. */
  | 'BUSY'
  /** A worker thread failed to start or died. */
  | 'WORKER_FAILED';

export class FuseError extends FlashcsiError<FuseErrorCode> {}
