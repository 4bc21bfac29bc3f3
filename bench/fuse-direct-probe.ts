/**
 * A measurement probe, not a data path: how fast can a Node process serve a volume's file over FUSE
 * itself, with worker threads doing synchronous I/O (docs/performance.md, "What to build next")?
 *
 *     node dist/bench/fuse-direct-probe.js MOUNTDIR BACKING_FILE WORKERS
 *
 * mounts FUSE on MOUNTDIR (mount(2) with fd=, so it runs as root) showing MOUNTDIR/disk, the size of
 * BACKING_FILE, and serves it from WORKERS threads that each block in read(2) on /dev/fuse and answer
 * with one write(2): READ and WRITE are pread/pwrite on the backing file, FSYNC is fdatasync. There
 * is no copy-on-write, no checkpoint, no error recovery: it measures the transport the real design
 * would use on its fast path (a live volume whose newest checkpoint already holds the grains written).
 * Put a loop device with direct I/O and a file system on MOUNTDIR/disk as the stager does, run fio
 * inside, and compare with F, K and L. Unmount with `fusermount3 -u MOUNTDIR` (the probe then exits).
 */
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import { Worker, isMainThread, workerData } from 'node:worker_threads';

interface ProbeData {
  readonly fuseFd: number;
  readonly backFd: number;
  readonly size: number;
}

// Opcodes and sizes from <linux/fuse.h> (protocol 7.31).
const Op = { Lookup: 1, Forget: 2, Getattr: 3, Open: 14, Read: 15, Write: 16, Statfs: 17, Release: 18, Fsync: 20, Flush: 25, Init: 26, Opendir: 27, Releasedir: 29, Interrupt: 36, Destroy: 38, BatchForget: 42 } as const;
const IN_HEADER = 40;
const OUT_HEADER = 16;
const ATTR = 88;
const ROOT = 1;
const DISK = 2;
const MAX_WRITE = 1 << 20;
const INIT_FLAGS = (1 << 0) /* ASYNC_READ */ | (1 << 5) /* BIG_WRITES */ | (1 << 15) /* ASYNC_DIO */ | (1 << 22) /* MAX_PAGES */;
const ENOENT = 2;
const ENOSYS = 38;

function serve({ fuseFd, backFd, size }: ProbeData): void {
  const req = Buffer.alloc(MAX_WRITE + 8192);
  const out = Buffer.alloc(MAX_WRITE + 4096);
  const attr = (at: number, ino: number): void => {
    out.fill(0, at, at + ATTR);
    out.writeBigUInt64LE(BigInt(ino), at);
    if (ino === DISK) {
      out.writeBigUInt64LE(BigInt(size), at + 8);
      out.writeBigUInt64LE(BigInt(Math.ceil(size / 512)), at + 16);
    }
    out.writeUInt32LE(ino === ROOT ? 0o40755 : 0o100600, at + 60); // mode
    out.writeUInt32LE(1, at + 64); // nlink
    out.writeUInt32LE(4096, at + 80); // blksize
  };
  const reply = (unique: bigint, errno: number, length: number): void => {
    out.writeUInt32LE(OUT_HEADER + length, 0);
    out.writeInt32LE(-errno, 4);
    out.writeBigUInt64LE(unique, 8);
    try {
      fs.writeSync(fuseFd, out, 0, OUT_HEADER + length);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err; // the request was interrupted
    }
  };
  for (;;) {
    let n: number;
    try {
      n = fs.readSync(fuseFd, req, 0, req.length, null);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENODEV') return; // unmounted
      if (code === 'EINTR' || code === 'ENOENT' || code === 'EAGAIN') continue;
      throw err;
    }
    const opcode = req.readUInt32LE(4);
    const unique = req.readBigUInt64LE(8);
    const node = Number(req.readBigUInt64LE(16));
    switch (opcode) {
      case Op.Init:
        out.fill(0, OUT_HEADER, OUT_HEADER + 64);
        out.writeUInt32LE(7, 16); // major
        out.writeUInt32LE(31, 20); // minor
        out.writeUInt32LE(128 * 1024, 24); // max_readahead
        out.writeUInt32LE(INIT_FLAGS, 28);
        out.writeUInt16LE(64, 32); // max_background
        out.writeUInt16LE(48, 34); // congestion_threshold
        out.writeUInt32LE(MAX_WRITE, 36);
        out.writeUInt32LE(1, 40); // time_gran
        out.writeUInt16LE(MAX_WRITE / 4096, 44); // max_pages
        reply(unique, 0, 64);
        break;
      case Op.Lookup:
        if (node !== ROOT || req.toString('utf8', IN_HEADER, n - 1) !== 'disk') {
          reply(unique, ENOENT, 0);
          break;
        }
        out.fill(0, OUT_HEADER, OUT_HEADER + 40);
        out.writeBigUInt64LE(BigInt(DISK), 16); // nodeid
        out.writeBigUInt64LE(3600n, 32); // entry_valid
        out.writeBigUInt64LE(3600n, 40); // attr_valid
        attr(OUT_HEADER + 40, DISK);
        reply(unique, 0, 40 + ATTR);
        break;
      case Op.Getattr:
        out.fill(0, OUT_HEADER, OUT_HEADER + 16);
        out.writeBigUInt64LE(3600n, 16);
        attr(OUT_HEADER + 16, node);
        reply(unique, 0, 16 + ATTR);
        break;
      case Op.Open:
      case Op.Opendir:
        out.fill(0, OUT_HEADER, OUT_HEADER + 16);
        reply(unique, 0, 16);
        break;
      case Op.Read: {
        const offset = Number(req.readBigUInt64LE(IN_HEADER + 8));
        const length = req.readUInt32LE(IN_HEADER + 16);
        for (let done = 0; done < length; ) {
          const got = fs.readSync(backFd, out, OUT_HEADER + done, length - done, offset + done);
          if (got === 0) {
            out.fill(0, OUT_HEADER + done, OUT_HEADER + length);
            break;
          }
          done += got;
        }
        reply(unique, 0, length);
        break;
      }
      case Op.Write: {
        const offset = Number(req.readBigUInt64LE(IN_HEADER + 8));
        const length = req.readUInt32LE(IN_HEADER + 16);
        for (let done = 0; done < length; ) done += fs.writeSync(backFd, req, IN_HEADER + 40 + done, length - done, offset + done);
        out.writeUInt32LE(length, 16);
        out.writeUInt32LE(0, 20);
        reply(unique, 0, 8);
        break;
      }
      case Op.Fsync:
        fs.fdatasyncSync(backFd);
        reply(unique, 0, 0);
        break;
      case Op.Flush:
      case Op.Release:
      case Op.Releasedir:
        reply(unique, 0, 0);
        break;
      case Op.Statfs:
        out.fill(0, OUT_HEADER, OUT_HEADER + 80);
        reply(unique, 0, 80);
        break;
      case Op.Forget:
      case Op.BatchForget:
      case Op.Interrupt:
        break; // no reply
      case Op.Destroy:
        reply(unique, 0, 0);
        return;
      default:
        reply(unique, ENOSYS, 0);
    }
  }
}

if (isMainThread) {
  const [mountDir, backing, workers] = process.argv.slice(2);
  if (mountDir === undefined || backing === undefined) throw new Error('usage: fuse-direct-probe MOUNTDIR BACKING_FILE [WORKERS]');
  const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
  const mount = koffi.load('libc.so.6').func('int mount(const char *src, const char *target, const char *fstype, unsigned long flags, const char *data)');
  const fuseFd = fs.openSync('/dev/fuse', 'r+');
  const backFd = fs.openSync(backing, 'r+');
  const MS_NOSUID = 2;
  const MS_NODEV = 4;
  if (mount('flashcsi-probe', mountDir, 'fuse', MS_NOSUID | MS_NODEV, `fd=${fuseFd},rootmode=40000,user_id=0,group_id=0,allow_other`) !== 0) {
    throw new Error(`mount failed: errno ${koffi.errno()}`);
  }
  const data: ProbeData = { fuseFd, backFd, size: fs.fstatSync(backFd).size };
  for (let i = 0; i < Number(workers ?? 3); i++) new Worker(new URL(import.meta.url), { workerData: data });
  process.stdout.write('ready\n');
} else {
  serve(workerData as ProbeData);
}
