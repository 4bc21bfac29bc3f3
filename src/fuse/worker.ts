/**
 * A worker thread of the FUSE export (export.ts has the design notes). It blocks in read(2) on
 * /dev/fuse, answers the file system's metadata itself (one directory holding one regular file,
 * `disk`), serves READ/WRITE/FSYNC through the engine's fast path when it says yes, and forwards
 * everything else that touches data to the main thread without waiting for it: the main thread
 * writes that reply to /dev/fuse itself. ENODEV from read(2) means the file system is gone
 * (unmounted, or the connection aborted): the thread ends.
 */
import * as fs from 'node:fs';
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { FastPath } from '../engine/fast-path.js';
import { alignedBuffer } from '../engine/native.js';
import { DISK_ID, DISK_NAME, MAX_IO, writeReply, type WorkerData, type WorkerMessage } from './channel.js';
import { FuseCounter, statOp } from './stats.js';
import {
  Attr,
  AttrOut,
  Errno,
  EntryOut,
  FATTR_SIZE,
  Falloc,
  FallocateIn,
  InHeader,
  InitFlag,
  InitIn,
  InitOut,
  KERNEL_MINOR_VERSION,
  KERNEL_VERSION,
  MIN_MINOR,
  MIN_READ_BUFFER,
  Op,
  OpenFlag,
  OpenIn,
  OpenOut,
  OutHeader,
  ROOT_ID,
  ReadIn,
  SetattrIn,
  StatfsOut,
  WriteIn,
  WriteOut,
  writeOutHeader,
} from './wire.js';

/** Entry and attribute timeouts are 0: every stat asks again, so a grown volume shows at once. */
const TIMEOUT_S = 0n;
const MAX_BACKGROUND = 64;
const CONGESTION_THRESHOLD = 48;
const WANTED_FLAGS = InitFlag.AsyncRead | InitFlag.BigWrites | InitFlag.AsyncDio | InitFlag.MaxPages;

/**
 * INIT: answers the kernel's fuse_init_in (`initIn`, its first 16 bytes) in `initOut` (a 64-byte
 * fuse_init_out) and returns the reply's errno. The connection runs at the lower of the two minor
 * versions, with only the flags the kernel offers; a kernel with a newer major gets ours and sends
 * INIT again; one older than 7.MIN_MINOR is refused (EPROTO).
 */
export function answerInit(initIn: Buffer, initOut: Buffer): number {
  const major = initIn.readUInt32LE(InitIn.major);
  const minor = initIn.readUInt32LE(InitIn.minor);
  initOut.fill(0, 0, InitOut.size);
  initOut.writeUInt32LE(KERNEL_VERSION, InitOut.major);
  initOut.writeUInt32LE(KERNEL_MINOR_VERSION, InitOut.minor);
  if (major > KERNEL_VERSION) return 0;
  if (major < KERNEL_VERSION || minor < MIN_MINOR) return Errno.EPROTO;
  initOut.writeUInt32LE(Math.min(minor, KERNEL_MINOR_VERSION), InitOut.minor);
  initOut.writeUInt32LE(initIn.readUInt32LE(InitIn.maxReadahead), InitOut.maxReadahead);
  initOut.writeUInt32LE(initIn.readUInt32LE(InitIn.flags) & WANTED_FLAGS, InitOut.flags);
  initOut.writeUInt16LE(MAX_BACKGROUND, InitOut.maxBackground);
  initOut.writeUInt16LE(CONGESTION_THRESHOLD, InitOut.congestionThreshold);
  initOut.writeUInt32LE(MAX_IO, InitOut.maxWrite);
  initOut.writeUInt32LE(1, InitOut.timeGran);
  initOut.writeUInt16LE(MAX_IO / 4096, InitOut.maxPages);
  return 0;
}

class Server {
  /** A WRITE's data and a READ reply's data start on a DIRECT_IO_ALIGN boundary, so the fast path can use O_DIRECT on them as they are. */
  private readonly req = alignedBuffer(Math.max(MAX_IO + 4096, MIN_READ_BUFFER), InHeader.size + WriteIn.size);
  private readonly out = alignedBuffer(OutHeader.size + MAX_IO, OutHeader.size);
  private readonly fast: FastPath;
  private readonly size: Float64Array;
  private readonly created = BigInt(Math.floor(Date.now() / 1000));
  private readonly counter: FuseCounter;
  /** The request being answered: when it was read, and for a data request its stats.ts operation and bytes (reply() counts it). */
  private start = 0n;
  private countedOp = -1;
  private bytes = 0;

  constructor(
    private readonly data: WorkerData,
    private readonly post: (msg: WorkerMessage) => void,
    private readonly transfer: (msg: WorkerMessage, list: ArrayBuffer[]) => void,
  ) {
    this.fast = new FastPath(data.fastPath);
    this.size = new Float64Array(data.size);
    this.counter = new FuseCounter(data.stats);
  }

  /** Serves until the file system goes away. */
  run(): void {
    for (;;) {
      let n: number;
      try {
        n = fs.readSync(this.data.fuseFd, this.req, 0, this.req.length, null);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENODEV') return;
        // EINTR: a signal; ENOENT: the request was interrupted before we read it; EAGAIN: another
        // thread took it.
        if (code === 'EINTR' || code === 'ENOENT' || code === 'EAGAIN') continue;
        throw err;
      }
      const unique = this.req.readBigUInt64LE(InHeader.unique);
      this.start = process.hrtime.bigint();
      this.countedOp = -1;
      this.bytes = 0;
      try {
        this.dispatch(this.req.readUInt32LE(InHeader.opcode), unique, n);
      } catch (err) {
        this.post({ kind: 'log', msg: 'FUSE request failed in worker', fields: { opcode: this.req.readUInt32LE(InHeader.opcode), error: String(err) } });
        this.reply(unique, Errno.EIO, 0);
      }
    }
  }

  private dispatch(opcode: number, unique: bigint, n: number): void {
    const nodeid = Number(this.req.readBigUInt64LE(InHeader.nodeid));
    const arg = InHeader.size;
    const req = this.req;
    switch (opcode) {
      case Op.Init:
        return this.init(unique);
      case Op.Lookup: {
        const name = req.toString('utf8', arg, n - 1); // NUL-terminated
        if (nodeid !== ROOT_ID || name !== DISK_NAME) return this.reply(unique, Errno.ENOENT, 0);
        const o = OutHeader.size;
        this.out.fill(0, o, o + EntryOut.size);
        this.out.writeBigUInt64LE(BigInt(DISK_ID), o + EntryOut.nodeid);
        this.out.writeBigUInt64LE(TIMEOUT_S, o + EntryOut.entryValid);
        this.out.writeBigUInt64LE(TIMEOUT_S, o + EntryOut.attrValid);
        this.attr(o + EntryOut.attr, DISK_ID);
        return this.reply(unique, 0, EntryOut.size);
      }
      case Op.Getattr:
        return this.attrReply(unique, nodeid);
      case Op.Setattr: {
        const valid = req.readUInt32LE(arg + SetattrIn.valid);
        // The size is the volume's: it changes only through the engine's expand.
        if ((valid & FATTR_SIZE) !== 0 && Number(req.readBigUInt64LE(arg + SetattrIn.size)) !== this.volumeSize()) return this.reply(unique, Errno.EPERM, 0);
        return this.attrReply(unique, nodeid);
      }
      case Op.Open: {
        if (nodeid !== DISK_ID) return this.reply(unique, Errno.EINVAL, 0);
        // A read-only volume refuses write opens, so `losetup` falls back to a read-only loop device.
        if (this.data.readOnly && (req.readUInt32LE(arg + OpenIn.flags) & OpenFlag.AccessMode) !== OpenFlag.ReadOnly) return this.reply(unique, Errno.EROFS, 0);
        return this.openReply(unique);
      }
      case Op.Opendir:
        return this.openReply(unique);
      case Op.Read: {
        this.countedOp = statOp(opcode);
        const offset = Number(req.readBigUInt64LE(arg + ReadIn.offset));
        const size = this.volumeSize();
        // The kernel asks for whole pages; the reply is short at the end of the file.
        const length = Math.max(0, Math.min(req.readUInt32LE(arg + ReadIn.length), size - offset));
        this.bytes = length;
        if (length === 0) return this.reply(unique, 0, 0);
        if (this.fast.read(this.out.subarray(OutHeader.size, OutHeader.size + length), offset)) return this.reply(unique, 0, length);
        return this.post({ kind: 'request', request: { op: Op.Read, unique, start: this.start, offset, length } });
      }
      case Op.Write: {
        this.countedOp = statOp(opcode);
        if (this.data.readOnly) return this.reply(unique, Errno.EROFS, 0);
        const offset = Number(req.readBigUInt64LE(arg + WriteIn.offset));
        const length = req.readUInt32LE(arg + WriteIn.length);
        const fua = (req.readUInt32LE(arg + WriteIn.flags) & OpenFlag.Dsync) !== 0;
        const start = arg + WriteIn.size;
        this.bytes = length;
        if (this.fast.write(req.subarray(start, start + length), offset, fua)) return this.writeReply(unique, length);
        const data = new Uint8Array(length);
        data.set(req.subarray(start, start + length));
        return this.transfer({ kind: 'request', request: { op: Op.Write, unique, start: this.start, offset, data, fua } }, [data.buffer]);
      }
      case Op.Fsync:
        this.countedOp = statOp(opcode);
        if (this.data.readOnly || this.fast.flush()) return this.reply(unique, 0, 0);
        return this.post({ kind: 'request', request: { op: Op.Fsync, unique, start: this.start } });
      case Op.Fallocate: {
        const mode = req.readUInt32LE(arg + FallocateIn.mode);
        this.countedOp = statOp(opcode, mode);
        if (this.data.readOnly) return this.reply(unique, Errno.EROFS, 0);
        // Trim (the loop device's discard) and zeroing that keeps the allocation (its write-zeroes).
        if (mode !== (Falloc.PunchHole | Falloc.KeepSize) && mode !== Falloc.ZeroRange && mode !== (Falloc.ZeroRange | Falloc.KeepSize)) {
          return this.reply(unique, Errno.EOPNOTSUPP, 0);
        }
        const offset = Number(req.readBigUInt64LE(arg + FallocateIn.offset));
        const length = Number(req.readBigUInt64LE(arg + FallocateIn.length));
        return this.post({ kind: 'request', request: { op: Op.Fallocate, unique, start: this.start, offset, length, mode } });
      }
      case Op.Statfs:
        return this.statfs(unique);
      case Op.Flush:
      case Op.Release:
      case Op.Releasedir:
      case Op.Fsyncdir:
      case Op.Destroy:
        return this.reply(unique, 0, 0);
      case Op.Forget:
      case Op.BatchForget:
      case Op.Interrupt:
        return; // no reply
      default:
        return this.reply(unique, Errno.ENOSYS, 0);
    }
  }

  private init(unique: bigint): void {
    const a = InHeader.size;
    const errno = answerInit(this.req.subarray(a, a + InitIn.size), this.out.subarray(OutHeader.size, OutHeader.size + InitOut.size));
    if (errno !== 0) {
      const kernel = `${this.req.readUInt32LE(a + InitIn.major)}.${this.req.readUInt32LE(a + InitIn.minor)}`;
      this.post({ kind: 'log', msg: 'FUSE kernel protocol too old', fields: { kernel, needed: `${KERNEL_VERSION}.${MIN_MINOR}` } });
    }
    this.reply(unique, errno, errno === 0 ? InitOut.size : 0);
  }

  private volumeSize(): number {
    return this.size[0] ?? 0;
  }

  /** A fuse_attr for the root directory or the file, at `at` in the reply buffer. */
  private attr(at: number, nodeid: number): void {
    const out = this.out;
    out.fill(0, at, at + Attr.size);
    out.writeBigUInt64LE(BigInt(nodeid), at + Attr.ino);
    for (const t of [24, 32, 40]) out.writeBigUInt64LE(this.created, at + t); // atime, mtime, ctime
    if (nodeid === DISK_ID) {
      const size = this.volumeSize();
      out.writeBigUInt64LE(BigInt(size), at + Attr.fileSize);
      out.writeBigUInt64LE(BigInt(Math.ceil(size / 512)), at + Attr.blocks);
      out.writeUInt32LE(this.data.readOnly ? 0o100400 : 0o100600, at + Attr.mode);
      out.writeUInt32LE(1, at + Attr.nlink);
    } else {
      out.writeUInt32LE(0o40755, at + Attr.mode);
      out.writeUInt32LE(2, at + Attr.nlink);
    }
    out.writeUInt32LE(4096, at + Attr.blksize);
  }

  private attrReply(unique: bigint, nodeid: number): void {
    if (nodeid !== ROOT_ID && nodeid !== DISK_ID) return this.reply(unique, Errno.ENOENT, 0);
    const o = OutHeader.size;
    this.out.fill(0, o, o + AttrOut.attr);
    this.out.writeBigUInt64LE(TIMEOUT_S, o + AttrOut.attrValid);
    this.attr(o + AttrOut.attr, nodeid);
    this.reply(unique, 0, AttrOut.size);
  }

  /**
   * OPEN/OPENDIR: no file handle, and neither FOPEN_DIRECT_IO nor FOPEN_KEEP_CACHE, as nbdfuse:
   * the loop device opens with O_DIRECT and so bypasses the page cache anyway, and a cache kept
   * across opens could show another opener data from before a rollback.
   */
  private openReply(unique: bigint): void {
    this.out.fill(0, OutHeader.size, OutHeader.size + OpenOut.size);
    this.reply(unique, 0, OpenOut.size);
  }

  private writeReply(unique: bigint, written: number): void {
    this.out.fill(0, OutHeader.size, OutHeader.size + WriteOut.size);
    this.out.writeUInt32LE(written, OutHeader.size + WriteOut.written);
    this.reply(unique, 0, WriteOut.size);
  }

  private statfs(unique: bigint): void {
    const o = OutHeader.size;
    const blocks = BigInt(Math.ceil(this.volumeSize() / 4096));
    this.out.fill(0, o, o + StatfsOut.size);
    this.out.writeBigUInt64LE(blocks, o + StatfsOut.blocks);
    this.out.writeBigUInt64LE(1n, o + StatfsOut.files);
    this.out.writeUInt32LE(4096, o + StatfsOut.bsize);
    this.out.writeUInt32LE(255, o + StatfsOut.namelen);
    this.out.writeUInt32LE(4096, o + StatfsOut.frsize);
    this.reply(unique, 0, StatfsOut.size);
  }

  /** Writes the reply whose body is already in `out` after the header. */
  private reply(unique: bigint, errno: number, bodyLength: number): void {
    writeOutHeader(this.out, unique, errno, bodyLength);
    // Counted before the reply goes out: whoever has seen a reply finds its request counted.
    this.counter.answered(this.countedOp, false, errno, this.bytes, this.start);
    writeReply(this.data.fuseFd, this.out.subarray(0, OutHeader.size + bodyLength));
  }
}

if (!isMainThread && parentPort !== null) {
  const port = parentPort;
  new Server(
    workerData as WorkerData,
    (msg) => port.postMessage(msg),
    (msg, list) => port.postMessage(msg, list),
  ).run();
}
