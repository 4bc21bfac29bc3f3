/**
 * The one place where errors from the engine become the errno of a FUSE reply (compare
 * src/nbd/errno.ts). ERRNO_BY_CODE is a Record over the engine's ErrorCode union: a new code that
 * nobody maps here fails the type check. A Node system error keeps its own errno; anything else
 * is EIO.
 */
import * as os from 'node:os';
import { isEngineError, type ErrorCode } from '../engine/errors.js';
import { Errno, Op } from './wire.js';

/** Engine error code → errno. */
export const ERRNO_BY_CODE: Readonly<Record<ErrorCode, Errno>> = Object.freeze({
  NO_SPACE: Errno.ENOSPC,
  READ_ONLY: Errno.EROFS,
  OUT_OF_RANGE: Errno.EINVAL,
  INVALID_ARGUMENT: Errno.EINVAL,
  IO: Errno.EIO,
  CORRUPT: Errno.EIO,
  LOCKED: Errno.EIO,
  FAILED_PRECONDITION: Errno.EIO,
  ALREADY_EXISTS: Errno.EIO,
  CHECKPOINT_NOT_FOUND: Errno.EIO,
  // The volume went away under the mount (closing): the loop device turns it into an I/O error.
  CLOSED: Errno.ESHUTDOWN,
  VOLUME_NOT_FOUND: Errno.ESHUTDOWN,
});

/**
 * The errno for an error thrown while serving opcode `op`. OUT_OF_RANGE on a write-like opcode is
 * ENOSPC (a fixed-size file cannot grow; NBD's convention too), on a read EINVAL.
 */
export function toFuseErrno(err: unknown, op: number): number {
  if (isEngineError(err)) {
    if (err.code === 'OUT_OF_RANGE' && (op === Op.Write || op === Op.Fallocate)) return Errno.ENOSPC;
    return ERRNO_BY_CODE[err.code];
  }
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (typeof code === 'string' && Object.hasOwn(os.constants.errno, code)) return os.constants.errno[code as keyof typeof os.constants.errno];
  return Errno.EIO;
}
