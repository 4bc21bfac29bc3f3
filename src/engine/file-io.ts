/**
 * The engine's only door to the file system. Tests wrap it to count operations (cost tests) or to
 * inject ENOSPC/EIO at a chosen step (fault tests); production uses {@link nodeFileIO}.
 * Offsets and lengths are byte counts below 2^53.
 */
import * as fs from 'node:fs';
import * as native from './native.js';

export interface IoFile {
  readonly path: string;
  /** The file descriptor, for worker threads' synchronous I/O (fast-path.ts); absent in wrappers. */
  readonly fd?: number;
  /** Reads exactly `buf.length` bytes at `offset`; bytes past end of file read as zeros. */
  read(buf: Buffer, offset: number): Promise<void>;
  /** Writes all of `bufs`, back to back, starting at `offset`. */
  write(bufs: Buffer | readonly Buffer[], offset: number): Promise<void>;
  datasync(): Promise<void>;
  truncate(length: number): Promise<void>;
  size(): Promise<number>;
  /** Bytes the file system has allocated to the file. */
  allocated(): Promise<number>;
  /** Deallocates a range, which then reads as zeros. */
  punchHole(offset: number, length: number): Promise<void>;
  /** Zeroes a range, keeping it allocated. */
  zeroRange(offset: number, length: number): Promise<void>;
  /** Next data (or hole) offset at or after `offset`, or -1 at end of file. */
  seek(offset: number, what: 'data' | 'hole'): Promise<number>;
  /** Advisory whole-file lock, released on close or process death. Throws EngineError(LOCKED). */
  lock(mode: 'exclusive' | 'shared', what: string): void;
  close(): Promise<void>;
}

export type OpenMode =
  /** read-only */
  | 'read'
  /** read-write, must exist */
  | 'readwrite'
  /** read-write with O_DSYNC: each write is durable when it returns (FUA writes) */
  | 'readwrite-dsync'
  /** read-write, created, must not exist */
  | 'create';

export interface FileIO {
  open(file: string, mode: OpenMode): Promise<IoFile>;
  /** Atomically replaces `to` by `from`. */
  rename(from: string, to: string): Promise<void>;
  unlink(file: string): Promise<void>;
  /** Makes directory entries (creates, renames, unlinks) in `dir` durable. */
  syncDir(dir: string): Promise<void>;
  readdir(dir: string): Promise<string[]>;
  mkdir(dir: string): Promise<void>;
  rmdir(dir: string): Promise<void>;
  exists(file: string): Promise<boolean>;
}

const flagsFor: Record<OpenMode, number> = {
  read: fs.constants.O_RDONLY,
  readwrite: fs.constants.O_RDWR,
  'readwrite-dsync': fs.constants.O_RDWR | fs.constants.O_DSYNC,
  create: fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL,
};

function callback<T>(fn: (cb: (err: NodeJS.ErrnoException | null, res: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => fn((err, res) => (err ? reject(err) : resolve(res))));
}

/** Largest read tried synchronously from the page cache (bounds how long the event loop is held). */
const CACHED_READ_LIMIT = 1024 * 1024;

/**
 * Small buffered writes go straight into the page cache from the calling thread. Handing a 4 KiB
 * write to libuv's thread pool costs two thread wake-ups (to the worker and back), which on a busy
 * node is most of the cost of the write: measured per 4 KiB NBD write, 41–57 µs of CPU through the
 * pool against 22–29 µs direct (docs/performance.md). ext4 has no non-blocking buffered writes
 * (pwritev2 RWF_NOWAIT answers EOPNOTSUPP), so a direct write can block when the kernel throttles
 * dirty pages or waits for its journal; a write that held the thread longer than
 * WRITE_STALL_MS sends every write through the pool for the next WRITE_STALL_BACKOFF_MS.
 * O_DSYNC files (FUA writes) always use the pool: each of their writes waits for the disk.
 */
const DIRECT_WRITE_LIMIT = 64 * 1024;
const WRITE_STALL_MS = 2;
const WRITE_STALL_BACKOFF_MS = 1000;
/** performance.now() until which writes avoid the calling thread (a direct write stalled). */
let directWritesPausedUntil = 0;

/** Writes `buf` at `offset` on this thread if that is cheap and safe; false when the pool must do it. */
function writeDirect(fd: number, buf: Buffer, offset: number): boolean {
  if (buf.length > DIRECT_WRITE_LIMIT) return false;
  const started = performance.now();
  if (started < directWritesPausedUntil) return false;
  for (let done = 0; done < buf.length; ) done += fs.writeSync(fd, buf, done, buf.length - done, offset + done);
  const ended = performance.now();
  if (ended - started > WRITE_STALL_MS) directWritesPausedUntil = ended + WRITE_STALL_BACKOFF_MS;
  return true;
}

class NodeFile implements IoFile {
  constructor(
    readonly path: string,
    readonly fd: number,
    /** Opened O_DSYNC: every write waits for the disk, so never on the calling thread. */
    private readonly dsync: boolean,
  ) {}

  async read(buf: Buffer, offset: number): Promise<void> {
    // Small reads that the page cache can answer at once skip the thread pool entirely.
    let done = buf.length <= CACHED_READ_LIMIT ? native.readCached(this.fd, buf, offset) : 0;
    while (done < buf.length) {
      const n = await callback<number>((cb) => fs.read(this.fd, buf, done, buf.length - done, offset + done, cb));
      if (n === 0) {
        buf.fill(0, done);
        return;
      }
      done += n;
    }
  }

  async write(bufs: Buffer | readonly Buffer[], offset: number): Promise<void> {
    if (!this.dsync && Buffer.isBuffer(bufs) && writeDirect(this.fd, bufs, offset)) return;
    let list = Buffer.isBuffer(bufs) ? [bufs] : bufs.filter((b) => b.length > 0);
    let at = offset;
    while (list.length > 0) {
      const n =
        list.length === 1
          ? await callback<number>((cb) => fs.write(this.fd, list[0] as Buffer, 0, (list[0] as Buffer).length, at, cb))
          : await callback<number>((cb) => fs.writev(this.fd, list as Buffer[], at, cb));
      at += n;
      list = advance(list, n);
    }
  }

  datasync(): Promise<void> {
    return callback<undefined>((cb) => fs.fdatasync(this.fd, (err) => cb(err, undefined)));
  }

  truncate(length: number): Promise<void> {
    return callback<undefined>((cb) => fs.ftruncate(this.fd, length, (err) => cb(err, undefined)));
  }

  async size(): Promise<number> {
    const st = await callback<fs.Stats>((cb) => fs.fstat(this.fd, cb));
    return st.size;
  }

  async allocated(): Promise<number> {
    const st = await callback<fs.Stats>((cb) => fs.fstat(this.fd, cb));
    return st.blocks * 512;
  }

  async punchHole(offset: number, length: number): Promise<void> {
    native.punchHole(this.fd, offset, length);
  }

  async zeroRange(offset: number, length: number): Promise<void> {
    if (native.zeroRange(this.fd, offset, length)) return;
    // File systems without ZERO_RANGE: write zeros in bounded chunks.
    const chunk = Buffer.alloc(Math.min(length, 1 << 20));
    for (let at = offset; at < offset + length; at += chunk.length) {
      await this.write(chunk.subarray(0, Math.min(chunk.length, offset + length - at)), at);
    }
  }

  async seek(offset: number, what: 'data' | 'hole'): Promise<number> {
    return native.seek(this.fd, offset, what);
  }

  lock(mode: 'exclusive' | 'shared', what: string): void {
    native.lockFile(this.fd, mode, what);
  }

  close(): Promise<void> {
    return callback<undefined>((cb) => fs.close(this.fd, (err) => cb(err, undefined)));
  }
}

/** Drops the first `n` bytes from a list of buffers. */
function advance(list: readonly Buffer[], n: number): Buffer[] {
  const out: Buffer[] = [];
  let skip = n;
  for (const b of list) {
    if (skip >= b.length) {
      skip -= b.length;
      continue;
    }
    out.push(skip > 0 ? b.subarray(skip) : b);
    skip = 0;
  }
  return out;
}

export const nodeFileIO: FileIO = {
  async open(file, mode) {
    const fd = await callback<number>((cb) => fs.open(file, flagsFor[mode], 0o600, cb));
    return new NodeFile(file, fd, mode === 'readwrite-dsync');
  },
  rename: (from, to) => fs.promises.rename(from, to),
  unlink: (file) => fs.promises.unlink(file),
  async syncDir(dir) {
    const fd = await callback<number>((cb) => fs.open(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY, cb));
    try {
      await callback<undefined>((cb) => fs.fsync(fd, (err) => cb(err, undefined)));
    } finally {
      fs.closeSync(fd);
    }
  },
  readdir: (dir) => fs.promises.readdir(dir),
  mkdir: async (dir) => {
    await fs.promises.mkdir(dir, { mode: 0o700 });
  },
  rmdir: (dir) => fs.promises.rm(dir, { recursive: true, force: true }),
  async exists(file) {
    try {
      await fs.promises.access(file);
      return true;
    } catch {
      return false;
    }
  },
};
