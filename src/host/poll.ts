/**
 * The one poll loop, for conditions that have no event to wait on (a pid file appearing, a sysfs
 * size, a process leaving /proc, a socket answering). Every wait in src/ and test/ goes through it,
 * always with a deadline; the interval is the polling period, never a synchronisation sleep.
 */
import { HostError } from './errors.js';

export interface PollOptions {
  /** Time between checks (default 20 ms). */
  readonly intervalMs?: number;
  /**
   * Treat a throwing check as "not yet" and report its last message on timeout (default: a
   * throwing check ends the wait at once with its error).
   */
  readonly retryErrors?: boolean;
  /**
   * Checked before each try: a reason returned here ends the wait at once with that reason
   * (e.g. a process the condition depends on has exited).
   */
  readonly abortIf?: () => string | undefined | Promise<string | undefined>;
  /** More to say when the wait times out or is aborted (e.g. the tail of a log). */
  readonly detail?: () => string;
}

/**
 * Polls `check` until it returns something other than false or undefined, and resolves that value;
 * rejects HostError TIMEOUT after `timeoutMs`, or FAILED_PRECONDITION as soon as `abortIf` gives a
 * reason.
 */
export async function pollUntil<T>(
  check: () => T | false | undefined | Promise<T | false | undefined>,
  timeoutMs: number,
  what: string,
  opts: PollOptions = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  const more = (): string => (opts.detail === undefined ? '' : `\n${opts.detail()}`);
  let lastError: unknown;
  for (;;) {
    const abort = await opts.abortIf?.();
    if (abort !== undefined) throw new HostError('FAILED_PRECONDITION', `gave up waiting for ${what}: ${abort}${more()}`);
    try {
      const value = await check();
      if (value !== false && value !== undefined) return value;
    } catch (err) {
      if (opts.retryErrors !== true) throw err;
      lastError = err;
    }
    if (Date.now() > deadline) {
      const last = lastError === undefined ? '' : ` (last error: ${lastError instanceof Error ? lastError.message : String(lastError)})`;
      throw new HostError('TIMEOUT', `timed out after ${timeoutMs} ms waiting for ${what}${last}${more()}`, lastError === undefined ? undefined : { cause: lastError });
    }
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 20));
  }
}
