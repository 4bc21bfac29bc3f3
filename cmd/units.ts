import { CliError } from './errors.js';

/** Sizes with binary units, as the CLI reads and prints them: 512, 4K, 512M, 10G, 1T (or KiB, MiB…). */
const UNITS: Record<string, number> = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40, P: 2 ** 50 };

export function parseSize(text: string, what = 'size'): number {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:i?B)?$/i.exec(text.trim());
  if (!m) throw new CliError(`${what} "${text}" is not a size (examples: 4096, 64K, 512M, 10G, 1T)`);
  const bytes = Number(m[1]) * (UNITS[(m[2] ?? '').toUpperCase()] ?? 1);
  if (!Number.isSafeInteger(bytes)) throw new CliError(`${what} "${text}" is not a whole number of bytes`);
  return bytes;
}

/** A whole-number flag value of at least `min`; otherwise an error saying `complaint`. */
export function parseWholeNumber(text: string, min: number, complaint: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < min) throw new CliError(complaint);
  return n;
}

/** An integer flag value from `min` to `max` (decimal digits only); otherwise an error naming the flag and the range. */
export function parseIntegerIn(text: string, min: number, max: number, flag: string): number {
  const n = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!(n >= min && n <= max)) throw new CliError(`${flag} must be an integer from ${min} to ${max}, got ${JSON.stringify(text)}`);
  return n;
}

export function formatSize(bytes: number): string {
  for (const unit of ['P', 'T', 'G', 'M', 'K']) {
    const scale = UNITS[unit] as number;
    if (bytes >= scale) {
      const v = bytes / scale;
      return `${Number.isInteger(v) ? v : v.toFixed(1)} ${unit}iB`;
    }
  }
  return `${bytes} B`;
}
