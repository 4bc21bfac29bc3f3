/**
 * Errors of the node's host work (attaching, mounting, processes). Like every flashcsi error they
 * carry a stable string `code`; src/csi/status.ts maps codes, never messages, to gRPC status codes.
 */
import { FlashcsiError } from '../errors.js';

export type HostErrorCode =
  /** No free /dev/nbd* device. */
  | 'NO_DEVICE'
  /** The device is still mounted. */
  | 'BUSY'
  /** A device, process or mount did not come up or go away in time. */
  | 'TIMEOUT'
  /** A command (nbdfuse, losetup, mount, mkfs, `flashcsi serve`…) failed. */
  | 'COMMAND_FAILED'
  /** A netlink request to the kernel's nbd driver failed (the kernel log says why). */
  | 'NETLINK_FAILED'
  | 'INVALID_ARGUMENT'
  /**
   * The host cannot do this as configured (e.g. online ext4 growth without CAP_SYS_RESOURCE; the
   * kernel nbd path without libnl-genl-3 or the nbd module).
   */
  | 'FAILED_PRECONDITION';

export class HostError extends FlashcsiError<HostErrorCode> {}

/** A command that ran and failed: its exit code (undefined when killed or not started) and stderr. */
export class CommandError extends HostError {
  readonly exitCode: number | undefined;
  readonly stderr: string;
  constructor(message: string, exitCode: number | undefined, stderr: string, options?: { cause?: unknown }) {
    super('COMMAND_FAILED', message, options);
    this.exitCode = exitCode;
    this.stderr = stderr;
  }
}
