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
 * The layouts are src/fuse/wire.ts's; src/fuse/export.ts is the real thing, with the engine behind it.
 */
import * as fs from 'node:fs';
import { Worker, isMainThread, workerData } from 'node:worker_threads';
import { DISK_ID, MAX_IO } from '../src/fuse/channel.js';
import { mountFuse } from '../src/fuse/mount.js';
import { Attr, AttrOut, EntryOut, Errno, InHeader, InitFlag, InitIn, InitOut, OpenOut, Op, OutHeader, ROOT_ID, ReadIn, StatfsOut, WriteIn, WriteOut, writeOutHeader } from '../src/fuse/wire.js';

interface ProbeData {
  readonly fuseFd: number;
  readonly backFd: number;
  readonly size: number;
}

const ROOT = ROOT_ID;
const DISK = DISK_ID;
const MAX_WRITE = MAX_IO;
const INIT_FLAGS = InitFlag.AsyncRead | InitFlag.BigWrites | InitFlag.AsyncDio | InitFlag.MaxPages;

function serve({ fuseFd, backFd, size }: ProbeData): void {
  const req = Buffer.alloc(MAX_WRITE + 8192);
  const out = Buffer.alloc(MAX_WRITE + 4096);
  const attr = (at: number, ino: number): void => {
    out.fill(0, at, at + Attr.size);
    out.writeBigUInt64LE(BigInt(ino), at + Attr.ino);
    if (ino === DISK) {
      out.writeBigUInt64LE(BigInt(size), at + Attr.fileSize);
      out.writeBigUInt64LE(BigInt(Math.ceil(size / 512)), at + Attr.blocks);
    }
    out.writeUInt32LE(ino === ROOT ? 0o40755 : 0o100600, at + Attr.mode);
    out.writeUInt32LE(1, at + Attr.nlink);
    out.writeUInt32LE(4096, at + Attr.blksize);
  };
  const reply = (unique: bigint, errno: number, length: number): void => {
    writeOutHeader(out, unique, errno, length);
    try {
      fs.writeSync(fuseFd, out, 0, OutHeader.size + length);
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
    const opcode = req.readUInt32LE(InHeader.opcode);
    const unique = req.readBigUInt64LE(InHeader.unique);
    const node = Number(req.readBigUInt64LE(InHeader.nodeid));
    switch (opcode) {
      case Op.Init: {
        const o = OutHeader.size;
        out.fill(0, o, o + InitOut.size);
        out.writeUInt32LE(7, o + InitOut.major);
        out.writeUInt32LE(Math.min(31, req.readUInt32LE(InHeader.size + InitIn.minor)), o + InitOut.minor);
        out.writeUInt32LE(128 * 1024, o + InitOut.maxReadahead);
        out.writeUInt32LE(INIT_FLAGS, o + InitOut.flags);
        out.writeUInt16LE(64, o + InitOut.maxBackground);
        out.writeUInt16LE(48, o + InitOut.congestionThreshold);
        out.writeUInt32LE(MAX_WRITE, o + InitOut.maxWrite);
        out.writeUInt32LE(1, o + InitOut.timeGran);
        out.writeUInt16LE(MAX_WRITE / 4096, o + InitOut.maxPages);
        reply(unique, 0, InitOut.size);
        break;
      }
      case Op.Lookup:
        if (node !== ROOT || req.toString('utf8', InHeader.size, n - 1) !== 'disk') {
          reply(unique, Errno.ENOENT, 0);
          break;
        }
        out.fill(0, OutHeader.size, OutHeader.size + EntryOut.attr);
        out.writeBigUInt64LE(BigInt(DISK), OutHeader.size + EntryOut.nodeid);
        out.writeBigUInt64LE(3600n, OutHeader.size + EntryOut.entryValid);
        out.writeBigUInt64LE(3600n, OutHeader.size + EntryOut.attrValid);
        attr(OutHeader.size + EntryOut.attr, DISK);
        reply(unique, 0, EntryOut.size);
        break;
      case Op.Getattr:
        out.fill(0, OutHeader.size, OutHeader.size + AttrOut.attr);
        out.writeBigUInt64LE(3600n, OutHeader.size + AttrOut.attrValid);
        attr(OutHeader.size + AttrOut.attr, node);
        reply(unique, 0, AttrOut.size);
        break;
      case Op.Open:
      case Op.Opendir:
        out.fill(0, OutHeader.size, OutHeader.size + OpenOut.size);
        reply(unique, 0, OpenOut.size);
        break;
      case Op.Read: {
        const offset = Number(req.readBigUInt64LE(InHeader.size + ReadIn.offset));
        const length = req.readUInt32LE(InHeader.size + ReadIn.length);
        for (let done = 0; done < length; ) {
          const got = fs.readSync(backFd, out, OutHeader.size + done, length - done, offset + done);
          if (got === 0) {
            out.fill(0, OutHeader.size + done, OutHeader.size + length);
            break;
          }
          done += got;
        }
        reply(unique, 0, length);
        break;
      }
      case Op.Write: {
        const offset = Number(req.readBigUInt64LE(InHeader.size + WriteIn.offset));
        const length = req.readUInt32LE(InHeader.size + WriteIn.length);
        const data = InHeader.size + WriteIn.size;
        for (let done = 0; done < length; ) done += fs.writeSync(backFd, req, data + done, length - done, offset + done);
        out.fill(0, OutHeader.size, OutHeader.size + WriteOut.size);
        out.writeUInt32LE(length, OutHeader.size + WriteOut.written);
        reply(unique, 0, WriteOut.size);
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
        out.fill(0, OutHeader.size, OutHeader.size + StatfsOut.size);
        reply(unique, 0, StatfsOut.size);
        break;
      case Op.Forget:
      case Op.BatchForget:
      case Op.Interrupt:
        break; // no reply
      case Op.Destroy:
        reply(unique, 0, 0);
        return;
      default:
        reply(unique, Errno.ENOSYS, 0);
    }
  }
}

if (isMainThread) {
  const [mountDir, backing, workers] = process.argv.slice(2);
  if (mountDir === undefined || backing === undefined) throw new Error('usage: fuse-direct-probe MOUNTDIR BACKING_FILE [WORKERS]');
  const backFd = fs.openSync(backing, 'r+');
  const fuseFd = mountFuse(mountDir);
  const data: ProbeData = { fuseFd, backFd, size: fs.fstatSync(backFd).size };
  for (let i = 0; i < Number(workers ?? 3); i++) new Worker(new URL(import.meta.url), { workerData: data });
  process.stdout.write('ready\n');
} else {
  serve(workerData as ProbeData);
}
