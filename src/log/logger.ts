/**
 * The pino logger factory. `cmd/` builds the one root logger with `createLogger`; every module takes
 * a logger and derives its own with `componentLogger(parent, 'csi')`, so every line names its
 * component. Output is JSON lines (pino's format) on stderr by default.
 *
 * Secrets: pino's `redact` censors the CSI `secrets` maps at the paths below as a last line of
 * defence. The CSI layer also strips secrets before logging a request (src/csi/sanitize.ts), which
 * covers any depth and the secret-reference keys in `parameters`.
 */
import { pino, type DestinationStream, type Logger, type LevelWithSilent } from 'pino';

export type { Logger } from 'pino';

/** What every redacted value is replaced with. */
export const REDACTED = '[REDACTED]';

/** Paths pino censors in every log record (pino allows one `*` per segment). */
export const REDACT_PATHS: readonly string[] = [
  'secrets',
  '*.secrets',
  '*.*.secrets',
  'req.secrets',
  'request.secrets',
  'req.*.secrets',
];

export interface LoggerOptions {
  /** Minimum level; `info` unless set. */
  readonly level?: LevelWithSilent;
  /** Where JSON lines go; stderr (fd 2, synchronous writes, so nothing is lost on a crash) unless set. Tests pass a stream to capture output. */
  readonly destination?: DestinationStream;
  /** Bound to every record as `name`. */
  readonly name?: string;
}

/** Builds the root logger. Only `cmd/` (and tests) should call this. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const config = {
    level: options.level ?? 'info',
    redact: { paths: [...REDACT_PATHS], censor: REDACTED },
    ...(options.name === undefined ? {} : { name: options.name }),
  };
  return pino(config, options.destination ?? pino.destination({ fd: 2, sync: true }));
}

/** A child logger whose records carry `component` (and any extra bindings). */
export function componentLogger(parent: Logger, component: string, bindings: Record<string, unknown> = {}): Logger {
  return parent.child({ ...bindings, component });
}
