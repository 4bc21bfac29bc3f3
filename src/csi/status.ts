/**
 * The one place where errors become gRPC status codes. Every domain error (EngineError from
 * src/engine/errors.ts, HostError from src/host/errors.ts, CsiError from src/volumes/errors.ts, the
 * ControlError of a served volume's control socket, which carries engine codes, and the
 * NbdClientError of the kernel path's handshake with a volume's server) is matched by
 * its string `code` through STATUS_BY_CODE; messages are never parsed. The table is typed as a Record over the code unions,
 * so adding a code to any of them without mapping it here fails the type check.
 *
 * Anything else becomes INTERNAL, except an error that already carries a numeric gRPC status
 * (e.g. a ServiceError from a nested gRPC client call), which passes through, and an AbortError
 * caused by the client cancelling, which becomes CANCELLED.
 */
import { status } from '@grpc/grpc-js';
import type { ErrorCode as EngineErrorCode } from '../engine/errors.js';
import type { HostErrorCode } from '../host/errors.js';
import type { NbdClientErrorCode } from '../nbd/client.js';
import type { ControlErrorCode } from '../nbd/control.js';
import type { CsiErrorCode } from '../volumes/errors.js';

/** Every code a CSI call can meet: the plugin's, the engine's, the host's, and a served volume's. */
export type DomainErrorCode = EngineErrorCode | CsiErrorCode | HostErrorCode | ControlErrorCode | NbdClientErrorCode;

/** Domain error code → gRPC status code. */
export const STATUS_BY_CODE: Readonly<Record<DomainErrorCode, status>> = Object.freeze({
  // CSI codes (src/volumes/errors.ts); those shared with the engine sit here once.
  INVALID_ARGUMENT: status.INVALID_ARGUMENT,
  NOT_FOUND: status.NOT_FOUND,
  ALREADY_EXISTS: status.ALREADY_EXISTS,
  FAILED_PRECONDITION: status.FAILED_PRECONDITION,
  RESOURCE_EXHAUSTED: status.RESOURCE_EXHAUSTED,
  OUT_OF_RANGE: status.OUT_OF_RANGE,
  ABORTED: status.ABORTED,
  UNIMPLEMENTED: status.UNIMPLEMENTED,
  UNAVAILABLE: status.UNAVAILABLE,
  INTERNAL: status.INTERNAL,
  // Engine-only codes (src/engine/errors.ts).
  VOLUME_NOT_FOUND: status.NOT_FOUND,
  CHECKPOINT_NOT_FOUND: status.NOT_FOUND,
  /** Another process holds the volume's lock: an operation is pending, the CO should retry. */
  LOCKED: status.ABORTED,
  READ_ONLY: status.FAILED_PRECONDITION,
  NO_SPACE: status.RESOURCE_EXHAUSTED,
  IO: status.INTERNAL,
  CORRUPT: status.INTERNAL,
  /** The volume is closing (e.g. during shutdown): retryable. */
  CLOSED: status.UNAVAILABLE,
  // Host codes (src/host/errors.ts).
  /** No free /dev/nbd* device: the node has no room for another volume. */
  NO_DEVICE: status.RESOURCE_EXHAUSTED,
  /** The device is still mounted. */
  BUSY: status.FAILED_PRECONDITION,
  /** A device, process or mount did not come up or go away in time; the CO retries. */
  TIMEOUT: status.DEADLINE_EXCEEDED,
  /** A host command failed: nbdfuse, losetup, fusermount3, mount, mkfs, `flashcsi serve`… */
  COMMAND_FAILED: status.INTERNAL,
  /** The kernel's nbd driver refused a netlink request (attach, reconnect, detach). */
  NETLINK_FAILED: status.INTERNAL,
  // The kernel path's handshake with the volume's own server (src/nbd/client.ts).
  /** The volume's server did not answer on its socket: it may be restarting; the CO retries. */
  UNREACHABLE: status.UNAVAILABLE,
  /** The volume's server broke the protocol or refused its own export: a bug. */
  PROTOCOL_ERROR: status.INTERNAL,
  REFUSED: status.INTERNAL,
});

export interface GrpcStatus {
  readonly code: status;
  readonly details: string;
}

function isDomainErrorCode(code: unknown): code is DomainErrorCode {
  return typeof code === 'string' && Object.hasOwn(STATUS_BY_CODE, code);
}

function messageOf(err: unknown): string {
  if (err instanceof Error) return err.message;
  if (typeof err === 'string') return err;
  try {
    return JSON.stringify(err) ?? String(err);
  } catch {
    return String(err);
  }
}

/** Maps any thrown value to the gRPC status sent to the client. Never throws. */
export function toGrpcStatus(err: unknown): GrpcStatus {
  if (typeof err === 'object' && err !== null) {
    const { code, details, name } = err as { code?: unknown; details?: unknown; name?: unknown };
    if (isDomainErrorCode(code)) {
      return { code: STATUS_BY_CODE[code], details: messageOf(err) };
    }
    if (typeof code === 'number' && Number.isInteger(code) && code > status.OK && code <= status.UNAUTHENTICATED) {
      return { code, details: typeof details === 'string' ? details : messageOf(err) };
    }
    if (name === 'AbortError') {
      return { code: status.CANCELLED, details: messageOf(err) };
    }
  }
  return { code: status.INTERNAL, details: `internal error: ${messageOf(err)}` };
}

/** The name of a gRPC status code, e.g. `NOT_FOUND`, for logs. */
export function statusName(code: status): string {
  return status[code] ?? String(code);
}
