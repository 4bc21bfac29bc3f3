/**
 * An in-memory FileIO that models a disk under a page cache, for power-loss tests. Every file is a
 * set of 4 KiB pages in two states: durable (on the disk) and cached (what reads see). A write
 * dirties cached pages; `datasync` makes a file's pages and length durable; an O_DSYNC descriptor
 * makes each write's pages durable as it returns; directory entries (create, rename, unlink,
 * mkdir) become durable only when their directory is synced. Background writeback is modelled
 * too: now and then a dirty page is written to the disk early, as the kernel may.
 *
 * `powerCut(rng)` returns what the disk would hold if the power failed now: the durable state
 * plus any subset of the dirty pages (each one independently, newest content), with the length a
 * file last had durably (or its cached length, when writeback got that far). Nothing else of the
 * cache survives. A new SimDisk built from it is the machine after the reboot.
 *
 * Holes are absent pages; SEEK_DATA/SEEK_HOLE work at page granularity. Locks are not modelled
 * (one process).
 */
import * as path from 'node:path';
import type { FileIO, IoFile, OpenMode } from '../../src/engine/index.js';

const PAGE = 4096;

interface Inode {
  /** Cached view: page index → content (absent = hole). */
  cached: Map<number, Buffer>;
  size: number;
  /** Disk view. */
  durable: Map<number, Buffer>;
  durableSize: number;
  /** Pages whose cached content differs from the disk (incl. pages punched to holes: null). */
  dirty: Set<number>;
}

export interface DiskImage {
  readonly files: ReadonlyMap<string, { pages: Map<number, Buffer>; size: number }>;
  readonly dirs: ReadonlySet<string>;
}

function sysError(code: string, what: string): NodeJS.ErrnoException {
  const err = new Error(`${code}: ${what}`) as NodeJS.ErrnoException;
  err.code = code;
  return err;
}

export class SimDisk {
  private inodes = new Map<number, Inode>();
  private nextInode = 1;
  /** Namespace as the cache sees it, and as the disk holds it: path → inode (or 0 for a directory). */
  private names = new Map<string, number>();
  private durableNames = new Map<string, number>();
  /** Counts every file operation; `onOp` may stop the world at a chosen one. */
  ops = 0;
  onOp: ((n: number, what: string) => void) | null = null;
  /** After a power cut nothing more reaches this disk: every operation fails. */
  dead = false;

  constructor(
    private readonly rng: () => number,
    image?: DiskImage,
    /** Probability that a write also writes back one random dirty page of its file early. */
    private readonly writeback = 0.1,
  ) {
    this.names.set('/', 0);
    this.durableNames.set('/', 0);
    if (image) {
      for (const d of image.dirs) {
        this.names.set(d, 0);
        this.durableNames.set(d, 0);
      }
      for (const [p, f] of image.files) {
        const id = this.nextInode++;
        this.inodes.set(id, { cached: new Map(f.pages), size: f.size, durable: new Map(f.pages), durableSize: f.size, dirty: new Set() });
        this.names.set(p, id);
        this.durableNames.set(p, id);
      }
    }
  }

  private step(what: string): void {
    if (this.dead) throw sysError('EIO', `${what}: the power is off`);
    this.ops++;
    this.onOp?.(this.ops, what);
  }

  private inode(id: number): Inode {
    const ino = this.inodes.get(id);
    if (!ino) throw new Error(`BUG: no inode ${id}`);
    return ino;
  }

  private lookup(file: string): number {
    const id = this.names.get(file);
    if (id === undefined) throw sysError('ENOENT', file);
    return id;
  }

  /** What the disk holds if the power fails now (see the module comment). */
  powerCut(keepDirty: number): DiskImage {
    const files = new Map<string, { pages: Map<number, Buffer>; size: number }>();
    const dirs = new Set<string>();
    const cut = new Map<number, { pages: Map<number, Buffer>; size: number }>();
    for (const [id, ino] of this.inodes) {
      const pages = new Map(ino.durable);
      for (const p of ino.dirty) {
        if (this.rng() >= keepDirty) continue;
        const c = ino.cached.get(p);
        if (c) pages.set(p, c);
        else pages.delete(p);
      }
      const size = ino.size !== ino.durableSize && this.rng() < keepDirty ? ino.size : ino.durableSize;
      for (const p of [...pages.keys()]) if (p * PAGE >= size) pages.delete(p);
      cut.set(id, { pages, size });
    }
    // An entry survives only if every directory above it does.
    const reachable = (p: string): boolean => p === '/' || (this.durableNames.get(path.dirname(p)) === 0 && reachable(path.dirname(p)));
    for (const [p, id] of this.durableNames) {
      if (!reachable(p)) continue;
      if (id === 0) dirs.add(p);
      else files.set(p, cut.get(id) as { pages: Map<number, Buffer>; size: number });
    }
    return { files, dirs };
  }

  io(): FileIO {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const disk = this;
    return {
      async open(file: string, mode: OpenMode): Promise<IoFile> {
        disk.step(`open ${file}`);
        let id = disk.names.get(file);
        if (mode === 'create') {
          if (id !== undefined) throw sysError('EEXIST', file);
          if (disk.names.get(path.dirname(file)) !== 0) throw sysError('ENOENT', path.dirname(file));
          id = disk.nextInode++;
          disk.inodes.set(id, { cached: new Map(), size: 0, durable: new Map(), durableSize: 0, dirty: new Set() });
          disk.names.set(file, id);
        }
        if (id === undefined || id === 0) throw sysError(id === 0 ? 'EISDIR' : 'ENOENT', file);
        return disk.file(file, id, mode === 'readwrite-dsync');
      },
      async rename(from, to) {
        disk.step(`rename ${from}`);
        const id = disk.lookup(from);
        disk.names.delete(from);
        disk.names.set(to, id);
      },
      async unlink(file) {
        disk.step(`unlink ${file}`);
        disk.lookup(file);
        disk.names.delete(file);
      },
      async syncDir(dir) {
        disk.step(`syncDir ${dir}`);
        for (const p of new Set([...disk.names.keys(), ...disk.durableNames.keys()])) {
          if (path.dirname(p) !== dir || p === dir) continue;
          const id = disk.names.get(p);
          if (id === undefined) disk.durableNames.delete(p);
          else disk.durableNames.set(p, id);
        }
      },
      async readdir(dir) {
        disk.step(`readdir ${dir}`);
        if (disk.names.get(dir) !== 0) throw sysError('ENOENT', dir);
        return [...disk.names.keys()].filter((p) => path.dirname(p) === dir && p !== dir).map((p) => path.basename(p));
      },
      async mkdir(dir) {
        disk.step(`mkdir ${dir}`);
        if (disk.names.has(dir)) throw sysError('EEXIST', dir);
        disk.names.set(dir, 0);
      },
      async rmdir(dir) {
        disk.step(`rmdir ${dir}`);
        for (const p of [...disk.names.keys()]) if (p === dir || p.startsWith(`${dir}/`)) disk.names.delete(p);
      },
      async exists(file) {
        return !disk.dead && disk.names.has(file);
      },
    };
  }

  private file(name: string, id: number, dsync: boolean): IoFile {
    const ino = this.inode(id);
    const step = (what: string): void => this.step(`${what} ${name}`);
    const setPage = (p: number, content: Buffer | null): void => {
      if (content) ino.cached.set(p, content);
      else ino.cached.delete(p);
      if (dsync) {
        if (content) ino.durable.set(p, content);
        else ino.durable.delete(p);
        ino.dirty.delete(p);
      } else {
        ino.dirty.add(p);
      }
    };
    const writeBytes = (data: Buffer, offset: number): void => {
      for (let at = 0; at < data.length; ) {
        const p = Math.floor((offset + at) / PAGE);
        const within = (offset + at) % PAGE;
        const n = Math.min(PAGE - within, data.length - at);
        const page = Buffer.alloc(PAGE);
        ino.cached.get(p)?.copy(page);
        data.copy(page, within, at, at + n);
        setPage(p, page);
        at += n;
      }
      ino.size = Math.max(ino.size, offset + data.length);
      if (dsync) ino.durableSize = Math.max(ino.durableSize, ino.size);
      if (this.rng() < this.writeback && ino.dirty.size > 0) {
        const dirty = [...ino.dirty];
        const p = dirty[Math.floor(this.rng() * dirty.length)] as number;
        const c = ino.cached.get(p);
        if (c) ino.durable.set(p, c);
        else ino.durable.delete(p);
        ino.dirty.delete(p);
      }
    };
    const zero = (offset: number, length: number, hole: boolean): void => {
      const end = Math.min(offset + length, Math.max(ino.size, offset + length));
      for (let at = offset; at < end; ) {
        const p = Math.floor(at / PAGE);
        const within = at % PAGE;
        const n = Math.min(PAGE - within, end - at);
        if (within === 0 && n === PAGE && hole) setPage(p, null);
        else if (ino.cached.has(p) || !hole) {
          const page = Buffer.alloc(PAGE);
          ino.cached.get(p)?.copy(page);
          page.fill(0, within, within + n);
          setPage(p, page);
        }
        at += n;
      }
    };
    return {
      path: name,
      async read(buf, offset) {
        step('read');
        buf.fill(0);
        for (let at = 0; at < buf.length; ) {
          const p = Math.floor((offset + at) / PAGE);
          const within = (offset + at) % PAGE;
          const n = Math.min(PAGE - within, buf.length - at);
          const page = offset + at < ino.size ? ino.cached.get(p) : undefined;
          if (page) page.copy(buf, at, within, within + Math.min(n, ino.size - (offset + at)));
          at += n;
        }
      },
      async write(bufs, offset) {
        step('write');
        writeBytes(Buffer.isBuffer(bufs) ? bufs : Buffer.concat(bufs as Buffer[]), offset);
      },
      async datasync() {
        step('datasync');
        for (const p of ino.dirty) {
          const c = ino.cached.get(p);
          if (c) ino.durable.set(p, c);
          else ino.durable.delete(p);
        }
        ino.dirty.clear();
        ino.durableSize = ino.size;
      },
      async truncate(length) {
        step('truncate');
        for (const p of [...ino.cached.keys()]) {
          if (p * PAGE >= length) setPage(p, null);
          else if ((p + 1) * PAGE > length) {
            const page = Buffer.from(ino.cached.get(p) as Buffer);
            page.fill(0, length - p * PAGE);
            setPage(p, page);
          }
        }
        ino.size = length;
      },
      async size() {
        return ino.size;
      },
      async allocated() {
        return ino.cached.size * PAGE;
      },
      async punchHole(offset, length) {
        step('punchHole');
        zero(offset, length, true);
      },
      async zeroRange(offset, length) {
        step('zeroRange');
        zero(offset, length, false);
      },
      async seek(offset, what) {
        step('seek');
        if (offset >= ino.size) return -1;
        for (let p = Math.floor(offset / PAGE); p * PAGE < ino.size; p++) {
          if (ino.cached.has(p) === (what === 'data')) return Math.max(offset, p * PAGE);
        }
        return what === 'hole' ? ino.size : -1;
      },
      lock: () => undefined, // one process: locks are not modelled
      async close() {
        // nothing cached per descriptor
      },
    };
  }
}
