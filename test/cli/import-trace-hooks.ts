/**
 * Module loader hooks that append every resolved module URL to the file named by
 * $FLASHCSI_IMPORT_TRACE (registered by import-trace.ts with `node --import`).
 */
import { appendFileSync } from 'node:fs';

interface Resolved {
  url: string;
}
type NextResolve = (specifier: string, context: unknown) => Promise<Resolved>;

export async function resolve(specifier: string, context: unknown, next: NextResolve): Promise<Resolved> {
  const resolved = await next(specifier, context);
  const file = process.env['FLASHCSI_IMPORT_TRACE'];
  if (file) appendFileSync(file, `${resolved.url}\n`);
  return resolved;
}
