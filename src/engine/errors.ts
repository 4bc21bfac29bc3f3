/**
 * Typed engine errors. Every error the engine throws on purpose is an EngineError with a stable
 * `code`; upper layers map codes, never messages (src/errors.ts lists the maps).
 */
import { FlashcsiError } from '../errors.js';

export const ErrorCode = {
  /** The volume directory does not exist or holds no volume. */
  VolumeNotFound: 'VOLUME_NOT_FOUND',
  /** The target of a create already exists. */
  AlreadyExists: 'ALREADY_EXISTS',
  /** No checkpoint of that name. */
  CheckpointNotFound: 'CHECKPOINT_NOT_FOUND',
  /** Bad argument: size, grain, offset/length out of range, name. */
  InvalidArgument: 'INVALID_ARGUMENT',
  /** Access beyond the end of the volume or checkpoint. */
  OutOfRange: 'OUT_OF_RANGE',
  /** Another process holds the volume's lock. */
  Locked: 'LOCKED',
  /** The operation conflicts with the volume's state (e.g. a transaction is open). */
  FailedPrecondition: 'FAILED_PRECONDITION',
  /** The volume is read-only (opened read-only, or a checkpoint image). */
  ReadOnly: 'READ_ONLY',
  /** The disk is full (ENOSPC / EDQUOT / EFBIG from the file system). */
  NoSpace: 'NO_SPACE',
  /** An I/O error from the file system. */
  Io: 'IO',
  /** On-disk metadata failed a magic, version, length or checksum check. */
  Corrupt: 'CORRUPT',
  /** The volume is closed or closing. */
  Closed: 'CLOSED',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export class EngineError extends FlashcsiError<ErrorCode> {}

export function isEngineError(err: unknown, code?: ErrorCode): err is EngineError {
  return err instanceof EngineError && (code === undefined || err.code === code);
}

/** Turns a Node system error from a file operation into a typed EngineError. */
export function fromSystemError(err: unknown, what: string): EngineError {
  if (err instanceof EngineError) return err;
  const sys = err as NodeJS.ErrnoException;
  switch (sys?.code) {
    case 'ENOSPC':
    case 'EDQUOT':
    case 'EFBIG':
      return new EngineError(ErrorCode.NoSpace, `${what}: no space left (${sys.code})`, { cause: err });
    case 'ENOENT':
      return new EngineError(ErrorCode.VolumeNotFound, `${what}: not found`, { cause: err });
    default:
      return new EngineError(ErrorCode.Io, `${what}: ${sys?.message ?? String(err)}`, { cause: err });
  }
}
