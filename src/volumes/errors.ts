/**
 * The CSI outcomes the plugin raises on purpose: from its volume bookkeeping (this folder) and from
 * its gRPC surface (request validation, unimplemented features in src/csi). Like EngineError they carry a stable string `code`; src/csi/status.ts maps codes, never
 * messages, to gRPC status codes. The codes are named after the gRPC status each one becomes, so a
 * handler picks the CSI-mandated status by name: `throw new CsiError(CsiErrorCode.NotFound, '…')`.
 * The message is sent to the client as the status details.
 */
import { FlashcsiError } from '../errors.js';

export const CsiErrorCode = {
  /** A required field is missing or a field is malformed (gRPC INVALID_ARGUMENT). */
  InvalidArgument: 'INVALID_ARGUMENT',
  /** The volume, snapshot or node named in the request does not exist (NOT_FOUND). */
  NotFound: 'NOT_FOUND',
  /** An object of that name exists with incompatible parameters (ALREADY_EXISTS). */
  AlreadyExists: 'ALREADY_EXISTS',
  /** The object is not in a state that allows the call (FAILED_PRECONDITION). */
  FailedPrecondition: 'FAILED_PRECONDITION',
  /** Not enough capacity, or a limit on the number of objects is reached (RESOURCE_EXHAUSTED). */
  ResourceExhausted: 'RESOURCE_EXHAUSTED',
  /** The capacity range cannot be satisfied (OUT_OF_RANGE). */
  OutOfRange: 'OUT_OF_RANGE',
  /** Another operation on the same object is in flight; the CO retries (ABORTED). */
  Aborted: 'ABORTED',
  /** The RPC or option is not supported by this plugin (UNIMPLEMENTED). */
  Unimplemented: 'UNIMPLEMENTED',
  /** The plugin cannot serve the call right now, e.g. recovery not finished (UNAVAILABLE). */
  Unavailable: 'UNAVAILABLE',
  /** A bug or an unexpected failure (INTERNAL). */
  Internal: 'INTERNAL',
} as const;
export type CsiErrorCode = (typeof CsiErrorCode)[keyof typeof CsiErrorCode];

export class CsiError extends FlashcsiError<CsiErrorCode> {}

/**
 * A second request for a key (volume id, volume name, snapshot name) while the first one is still
 * running. The CSI spec asks for ABORTED here: "There is already an operation pending for the
 * specified volume"; the CO retries with backoff.
 */
export class OperationInFlightError extends CsiError {
  readonly key: string;
  constructor(key: string) {
    super(CsiErrorCode.Aborted, `an operation on ${JSON.stringify(key)} is already in progress`);
    this.key = key;
  }
}

export function isCsiError(err: unknown, code?: CsiErrorCode): err is CsiError {
  return err instanceof CsiError && (code === undefined || err.code === code);
}

/** Shorthand for the most common validation failure. */
export function invalidArgument(message: string): CsiError {
  return new CsiError(CsiErrorCode.InvalidArgument, message);
}
