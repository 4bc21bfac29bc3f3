/**
 * A FileIO wrapper for tests: every file operation first calls a hook, which may count it, delay
 * it (to widen race windows) or throw (to inject ENOSPC/EIO at a chosen step). The wrapped calls
 * then reach the real file system. Files have no `fd` (so a volume's fast path stays off) unless
 * `exposeFds` is set: then worker-side I/O (fast-path.ts) bypasses the hook.
 */
import * as path from 'node:path';
import { nodeFileIO, type FileIO, type IoFile, type OpenMode } from '../../src/engine/index.js';

export type FileOp =
  | 'open'
  | 'read'
  | 'write'
  | 'datasync'
  | 'truncate'
  | 'punchHole'
  | 'zeroRange'
  | 'seek'
  | 'rename'
  | 'unlink'
  | 'syncDir';

/** Which file an operation touches, by role. */
export type FileKind = 'meta' | 'base' | 'store' | 'lock' | 'dir' | 'other';

export function kindOf(file: string): FileKind {
  const name = path.basename(file);
  if (name.startsWith('volume.meta')) return 'meta';
  if (name === 'base.img') return 'base';
  if (name.endsWith('.store')) return 'store';
  if (name === 'lock') return 'lock';
  return 'other';
}

export interface OpInfo {
  readonly op: FileOp;
  readonly file: string;
  readonly kind: FileKind;
  readonly bytes: number;
}

export type Hook = (info: OpInfo) => void | Promise<void>;

class HookedFile implements IoFile {
  readonly fd?: number;
  constructor(private readonly inner: IoFile, private readonly hook: Hook, exposeFd: boolean) {
    if (exposeFd && inner.fd !== undefined) this.fd = inner.fd;
  }
  get path(): string {
    return this.inner.path;
  }
  private async call(op: FileOp, bytes: number): Promise<void> {
    await this.hook({ op, file: this.inner.path, kind: kindOf(this.inner.path), bytes });
  }
  async read(buf: Buffer, offset: number): Promise<void> {
    await this.call('read', buf.length);
    return this.inner.read(buf, offset);
  }
  async write(bufs: Buffer | readonly Buffer[], offset: number): Promise<void> {
    const bytes = Buffer.isBuffer(bufs) ? bufs.length : bufs.reduce((n, b) => n + b.length, 0);
    await this.call('write', bytes);
    return this.inner.write(bufs, offset);
  }
  async datasync(): Promise<void> {
    await this.call('datasync', 0);
    return this.inner.datasync();
  }
  async truncate(length: number): Promise<void> {
    await this.call('truncate', 0);
    return this.inner.truncate(length);
  }
  size(): Promise<number> {
    return this.inner.size();
  }
  allocated(): Promise<number> {
    return this.inner.allocated();
  }
  async punchHole(offset: number, length: number): Promise<void> {
    await this.call('punchHole', length);
    return this.inner.punchHole(offset, length);
  }
  async zeroRange(offset: number, length: number): Promise<void> {
    await this.call('zeroRange', length);
    return this.inner.zeroRange(offset, length);
  }
  async seek(offset: number, what: 'data' | 'hole'): Promise<number> {
    await this.call('seek', 0);
    return this.inner.seek(offset, what);
  }
  lock(mode: 'exclusive' | 'shared', what: string): void {
    this.inner.lock(mode, what);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

export function instrumentedIO(hook: Hook, inner: FileIO = nodeFileIO, opts: { exposeFds?: boolean } = {}): FileIO {
  return {
    async open(file: string, mode: OpenMode) {
      await hook({ op: 'open', file, kind: kindOf(file), bytes: 0 });
      return new HookedFile(await inner.open(file, mode), hook, opts.exposeFds ?? false);
    },
    async rename(from, to) {
      await hook({ op: 'rename', file: to, kind: kindOf(to), bytes: 0 });
      return inner.rename(from, to);
    },
    async unlink(file) {
      await hook({ op: 'unlink', file, kind: kindOf(file), bytes: 0 });
      return inner.unlink(file);
    },
    async syncDir(dir) {
      await hook({ op: 'syncDir', file: dir, kind: 'dir', bytes: 0 });
      return inner.syncDir(dir);
    },
    readdir: (dir) => inner.readdir(dir),
    mkdir: (dir) => inner.mkdir(dir),
    rmdir: (dir) => inner.rmdir(dir),
    exists: (file) => inner.exists(file),
  };
}

/** Counts operations and bytes per (kind, op). */
export class IoCounter {
  readonly ops = new Map<string, { count: number; bytes: number }>();
  readonly hook: Hook = (info) => {
    const key = `${info.kind}.${info.op}`;
    const entry = this.ops.get(key) ?? { count: 0, bytes: 0 };
    entry.count++;
    entry.bytes += info.bytes;
    this.ops.set(key, entry);
  };
  get(kind: FileKind, op: FileOp): { count: number; bytes: number } {
    return this.ops.get(`${kind}.${op}`) ?? { count: 0, bytes: 0 };
  }
  reset(): void {
    this.ops.clear();
  }
  /** Bytes written plus operations on every file, as one comparable figure per kind. */
  total(kind: FileKind): { ops: number; bytes: number } {
    let ops = 0;
    let bytes = 0;
    for (const [key, v] of this.ops) {
      if (key.startsWith(`${kind}.`)) {
        ops += v.count;
        bytes += v.bytes;
      }
    }
    return { ops, bytes };
  }
}

/** Delays base-image I/O by a few event-loop turns, chosen by `rng`, to widen race windows. */
export function jitter(rng: () => number): Hook {
  return async (info) => {
    if (info.kind !== 'base' && info.kind !== 'store') return;
    const turns = Math.floor(rng() * 4);
    for (let i = 0; i < turns; i++) await new Promise((r) => setImmediate(r));
    if (rng() < 0.2) await new Promise((r) => setTimeout(r, 1));
  };
}
