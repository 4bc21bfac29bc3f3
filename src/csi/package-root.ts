/**
 * Finds files that ship next to the compiled code: package.json (for the plugin version) and
 * proto/csi.proto. The module runs from `src/csi/` (sources) or `dist/src/csi/` (build), so the
 * package root is found by walking up to the package.json named "flashcsi" instead of a fixed `../..`.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const PACKAGE_NAME = 'flashcsi';

let root: string | undefined;
let version: string | undefined;

/** Absolute path of the flashcsi package root (the directory holding its package.json). */
export function packageRoot(): string {
  if (root !== undefined) return root;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = join(dir, 'package.json');
    if (existsSync(candidate)) {
      const pkg = JSON.parse(readFileSync(candidate, 'utf8')) as { name?: unknown };
      if (pkg.name === PACKAGE_NAME) return (root = dir);
    }
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`cannot find the ${PACKAGE_NAME} package.json above ${fileURLToPath(import.meta.url)}`);
    dir = parent;
  }
}

/** The `version` field of flashcsi's package.json. */
export function packageVersion(): string {
  if (version !== undefined) return version;
  const pkg = JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version?: unknown };
  if (typeof pkg.version !== 'string' || pkg.version === '') throw new Error('package.json has no version');
  return (version = pkg.version);
}

/** Directory holding the vendored csi.proto. */
export function protoDir(): string {
  return join(packageRoot(), 'proto');
}
