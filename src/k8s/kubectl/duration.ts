/**
 * Durations as kubectl takes and shows them: `--timeout 10m` (Go's time.ParseDuration syntax, or
 * plain seconds), and the AGE column (k8s.io/apimachinery duration.HumanDuration's rounding).
 */
import { PluginError } from './errors.js';

const UNIT_SECONDS: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600 };

/**
 * Parses "90", "90s", "10m", "1h30m", "1.5h" into whole seconds (rounded up). `what` names the flag
 * in the error.
 */
export function parseDurationSeconds(text: string, what: string): number {
  const t = text.trim();
  if (/^\d+$/.test(t)) return Number(t);
  if (!/^(\d+(\.\d+)?(ms|s|m|h))+$/.test(t)) {
    throw new PluginError('INVALID_ARGUMENT', `${what}: invalid duration ${JSON.stringify(text)} (use e.g. 90s, 10m, 1h30m)`);
  }
  let seconds = 0;
  for (const m of t.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) {
    const unit = UNIT_SECONDS[m[2] ?? ''];
    if (unit === undefined) throw new PluginError('INVALID_ARGUMENT', `${what}: invalid duration unit in ${JSON.stringify(text)}`);
    seconds += Number(m[1]) * unit;
  }
  return Math.ceil(seconds);
}

/** A kubectl-style age ("45s", "5m10s", "3h", "2d4h", "400d") for a duration in milliseconds. */
export function humanDuration(ms: number): string {
  const seconds = Math.floor(Math.max(0, ms) / 1000);
  if (seconds < 60 * 2) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 10) {
    const s = seconds % 60;
    return s === 0 ? `${minutes}m` : `${minutes}m${s}s`;
  }
  if (minutes < 60 * 3) return `${minutes}m`;
  const hours = Math.floor(seconds / 3600);
  if (hours < 8) {
    const m = minutes % 60;
    return m === 0 ? `${hours}h` : `${hours}h${m}m`;
  }
  if (hours < 48) return `${hours}h`;
  if (hours < 24 * 8) {
    const h = hours % 24;
    return h === 0 ? `${Math.floor(hours / 24)}d` : `${Math.floor(hours / 24)}d${h}h`;
  }
  if (hours < 24 * 365 * 2) return `${Math.floor(hours / 24)}d`;
  if (hours < 24 * 365 * 8) {
    const dy = Math.floor(hours / 24) % 365;
    return dy === 0 ? `${Math.floor(hours / 24 / 365)}y` : `${Math.floor(hours / 24 / 365)}y${dy}d`;
  }
  return `${Math.floor(hours / 24 / 365)}y`;
}

/** The age of an object created at `timestamp` (RFC 3339), or "<unknown>". */
export function age(timestamp: string | undefined, now: number): string {
  if (timestamp === undefined) return '<unknown>';
  const t = Date.parse(timestamp);
  return Number.isNaN(t) ? '<unknown>' : humanDuration(now - t);
}
