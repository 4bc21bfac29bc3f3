/**
 * The one error base. Every error flashcsi throws on purpose is a FlashcsiError: a stable string
 * `code` from its layer's code union, a message for people, the `cause` it wraps, and a `name` that
 * is its class's. Each layer declares its union next to its subclass (EngineError, ExportError,
 * NbdServerError, ControlError, NbdClientError, HostError, CsiError, EndpointError, KubeError, PluginError).
 *
 * Upper layers map codes, never messages, each through one Record over the unions it can meet, so
 * a code that nobody maps fails the type check:
 *   - gRPC status: STATUS_BY_CODE in src/csi/status.ts;
 *   - NBD errno: ERRNO_BY_CODE in src/nbd/errno.ts;
 *   - CLI exit status: EXIT_STATUS_BY_CODE in cmd/errors.ts.
 */
export class FlashcsiError<Code extends string = string> extends Error {
  readonly code: Code;
  constructor(code: Code, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}
