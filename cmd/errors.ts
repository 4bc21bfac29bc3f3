/**
 * How the flashcsi binary ends on an error: one line on stderr (`flashcsi: error: <message>`) and an
 * exit status chosen by the error's code (sysexits.h), so a script can tell bad input from "busy,
 * try again" from a broken volume without reading the message. EXIT_STATUS_BY_CODE is a Record over
 * every code the binary's commands can meet: a new code that nobody maps fails the type check.
 * Anything without a code exits 1. (kubectl-flashcsi exits 1 for every error, as kubectl does.)
 */
import type { CsiErrorCode } from '../src/volumes/errors.js';
import type { EndpointErrorCode } from '../src/csi/server.js';
import type { ErrorCode as EngineErrorCode } from '../src/engine/errors.js';
import { FlashcsiError } from '../src/errors.js';
import type { HostErrorCode } from '../src/host/errors.js';
import type { KubeErrorCode } from '../src/k8s/kube.js';
import type { NbdClientErrorCode } from '../src/nbd/client.js';
import type { ControlErrorCode } from '../src/nbd/control.js';
import type { ExportErrorCode } from '../src/nbd/export.js';
import type { NbdServerErrorCode } from '../src/nbd/server.js';

/** A flag the command line got wrong. */
export class CliError extends FlashcsiError<'USAGE'> {
  constructor(message: string) {
    super('USAGE', message);
  }
}

type CliErrorCode =
  | CliError['code']
  | EngineErrorCode
  | ExportErrorCode
  | NbdServerErrorCode
  | ControlErrorCode
  | NbdClientErrorCode
  | HostErrorCode
  | CsiErrorCode
  | EndpointErrorCode
  | KubeErrorCode;

/** sysexits.h */
const EX = {
  FAILURE: 1,
  USAGE: 64,
  DATAERR: 65,
  NOINPUT: 66,
  UNAVAILABLE: 69,
  SOFTWARE: 70,
  OSERR: 71,
  CANTCREAT: 73,
  IOERR: 74,
  TEMPFAIL: 75,
  PROTOCOL: 76,
  NOPERM: 77,
} as const;

export const EXIT_STATUS_BY_CODE: Readonly<Record<CliErrorCode, number>> = Object.freeze({
  USAGE: EX.USAGE,
  // The input names something malformed or impossible.
  INVALID_ARGUMENT: EX.DATAERR,
  OUT_OF_RANGE: EX.DATAERR,
  INVALID_ENDPOINT: EX.DATAERR,
  // What it names does not exist.
  VOLUME_NOT_FOUND: EX.NOINPUT,
  CHECKPOINT_NOT_FOUND: EX.NOINPUT,
  NOT_FOUND: EX.NOINPUT,
  ALREADY_EXISTS: EX.CANTCREAT,
  // Busy or going away: the same command may succeed later.
  LOCKED: EX.TEMPFAIL,
  ABORTED: EX.TEMPFAIL,
  BUSY: EX.TEMPFAIL,
  TIMEOUT: EX.TEMPFAIL,
  CLOSED: EX.TEMPFAIL,
  ADDRESS_IN_USE: EX.TEMPFAIL,
  CONFLICT: EX.TEMPFAIL,
  // The volume's state does not allow it (e.g. an open transaction).
  FAILED_PRECONDITION: EX.FAILURE,
  READ_ONLY: EX.NOPERM,
  INSECURE_PATH: EX.NOPERM,
  // Storage trouble.
  IO: EX.IOERR,
  CORRUPT: EX.IOERR,
  NO_SPACE: EX.IOERR,
  RESOURCE_EXHAUSTED: EX.IOERR,
  // Not available here.
  UNIMPLEMENTED: EX.UNAVAILABLE,
  NOT_SUPPORTED: EX.UNAVAILABLE,
  NO_DEVICE: EX.UNAVAILABLE,
  UNAVAILABLE: EX.UNAVAILABLE,
  NOT_LISTENING: EX.UNAVAILABLE,
  API_ERROR: EX.UNAVAILABLE,
  UNREACHABLE: EX.UNAVAILABLE,
  REFUSED: EX.UNAVAILABLE,
  // A peer broke its protocol.
  PROTOCOL_ERROR: EX.PROTOCOL,
  // A command or system call the host ran failed.
  COMMAND_FAILED: EX.OSERR,
  LISTEN_FAILED: EX.OSERR,
  NETLINK_FAILED: EX.OSERR,
  INTERNAL: EX.SOFTWARE,
});

/** The exit status for an error that ends the binary. */
export function exitStatusOf(err: unknown): number {
  if (err instanceof FlashcsiError && Object.hasOwn(EXIT_STATUS_BY_CODE, err.code)) return EXIT_STATUS_BY_CODE[err.code as CliErrorCode];
  return EX.FAILURE;
}
