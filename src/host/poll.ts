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
}

/**
 * Polls `check` until it returns something other than false or undefined, and resolves that value;
 * rejects HostError TIMEOUT after `timeoutMs`.
 */
export async function pollUntil<T>(
  check: () => T | false | undefined | Promise<T | false | undefined>,
  timeoutMs: number,
  what: string,
  opts: PollOptions = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== false && value !== undefined) return value;
    } catch (err) {
      if (opts.retryErrors !== true) throw err;
      lastError = err;
    }
    if (Date.now() > deadline) {
      const last = lastError === undefined ? '' : ` (last error: ${lastError instanceof Error ? lastError.message : String(lastError)})`;
      throw new HostError('TIMEOUT', `timed out after ${timeoutMs} ms waiting for ${what}${last}`, lastError === undefined ? undefined : { cause: lastError });
    }
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 20));
  }
}
