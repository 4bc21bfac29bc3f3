/**
 * The one place where errors thrown by an export become NBD errnos (like nbdkit's nbd_errno).
 *
 * Errors are matched duck-typed on a string `code` property, so the engine's EngineError, this
 * layer's ExportError and Node system errors (ENOSPC, EROFS…) all map without the server importing
 * the engine (only its code type, for the compiler). ERRNO_BY_CODE is a Record over the export and
 * engine code unions: a new code that nobody maps here fails the type check. Anything unrecognised
 * is EIO.
 */
import type { ErrorCode as EngineErrorCode } from '../engine/errors.js';
import type { ExportErrorCode } from './export.js';
import { Cmd, Errno } from './protocol.js';

/** The codes an export's errors carry: its own, and the engine's (the volume adapter passes them through). */
export type NbdErrorCode = ExportErrorCode | EngineErrorCode;

/** Export / engine error code → NBD errno. */
export const ERRNO_BY_CODE: Readonly<Record<NbdErrorCode, Errno>> = Object.freeze({
  NO_SPACE: Errno.ENOSPC,
  READ_ONLY: Errno.EPERM,
  OUT_OF_RANGE: Errno.EINVAL,
  INVALID_ARGUMENT: Errno.EINVAL,
  NOT_SUPPORTED: Errno.ENOTSUP,
  IO: Errno.EIO,
  CORRUPT: Errno.EIO,
  LOCKED: Errno.EIO,
  FAILED_PRECONDITION: Errno.EIO,
  ALREADY_EXISTS: Errno.EIO,
  // The export went away under a live connection (volume closing, checkpoint deleted). Nothing
  // the client can retry here: ESHUTDOWN tells it to soft-disconnect.
  CLOSED: Errno.ESHUTDOWN,
  CHECKPOINT_NOT_FOUND: Errno.ESHUTDOWN,
  VOLUME_NOT_FOUND: Errno.ESHUTDOWN,
});

/** Node system error codes, in case an export lets one escape. */
const ERRNO_BY_SYSTEM_CODE: Readonly<Record<string, Errno>> = Object.freeze({
  ENOSPC: Errno.ENOSPC,
  EDQUOT: Errno.ENOSPC,
  EFBIG: Errno.ENOSPC,
  EROFS: Errno.EPERM,
  EPERM: Errno.EPERM,
  EACCES: Errno.EPERM,
  ENOMEM: Errno.ENOMEM,
  EINVAL: Errno.EINVAL,
  ENOTSUP: Errno.ENOTSUP,
  EOPNOTSUPP: Errno.ENOTSUP,
  ESHUTDOWN: Errno.ESHUTDOWN,
});

/** The `code` of an error-like value, if it has a string one. */
export function errorCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const code = (err as { code: unknown }).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}

/**
 * NBD errno for an error thrown while serving command `cmd`. OUT_OF_RANGE on a write-like command
 * is ENOSPC (the spec's convention for writes past the end); on anything else EINVAL.
 */
export function toNbdErrno(err: unknown, cmd?: number): Errno {
  const code = errorCode(err);
  if (code === undefined) return Errno.EIO;
  if (code === 'OUT_OF_RANGE' && (cmd === Cmd.Write || cmd === Cmd.WriteZeroes)) return Errno.ENOSPC;
  if (Object.hasOwn(ERRNO_BY_CODE, code)) return ERRNO_BY_CODE[code as NbdErrorCode];
  return ERRNO_BY_SYSTEM_CODE[code] ?? Errno.EIO;
}
