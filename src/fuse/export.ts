/**
 * A volume's FUSE file, served by the data-path process itself: `${mountpoint}/disk`, which the
 * stager turns into a block device with `losetup --direct-io=on` (docs/performance.md, "What to
 * build next"). It replaces nbdfuse and the NBD socket on that path.
 *
 * Design notes
 * - Threads. `workers` threads (worker.ts) all block in read(2) on the one /dev/fuse fd; the
 *   kernel hands each request to one of them. A worker answers the metadata (INIT, LOOKUP,
 *   GETATTR, OPEN, STATFS…) itself, and READ/WRITE/FSYNC through the engine's fast path
 *   (src/engine/fast-path.ts: synchronous pread/pwrite/fdatasync on the base image when no
 *   copy-on-write is needed). Whatever the fast path declines, and every FALLOCATE, goes to the
 *   main thread as a message (a WRITE's payload copied into a buffer whose ownership moves with
 *   it); the worker goes on reading the next request at once. The main thread runs the request on
 *   the Volume, which applies every engine rule (copy-on-write, the gate, range checks), and
 *   writes the reply to /dev/fuse itself. So a slow copy-on-write never holds a worker, and the
 *   number of requests in flight is bounded by the kernel (max_background), not by the workers.
 * - Three workers by default on this 2-core machine: enough that one blocked in a slow pread (a
 *   cold read) does not stall the queue, few enough not to fight the main thread for the cores.
 *   Measured with the fast path off (4k random writes, qd16, in ext4 on the loop device, 10 s
 *   runs alternated at load 10–14): 1 worker 8.0k–13.6k IOPS (median 10.5k), 2 workers 11.5k–11.7k,
 *   3 workers 7.9k–19.3k (median 13.7k). With O_DIRECT in the fast path, 3 → 10 → 16 workers
 *   gave 15.6k → 19.2k → 22.9k IOPS of 4k random writes and 17.9k → 19.5k → 18.0k of reads (the
 *   2 CPUs the limit), for about 7.7 MiB PSS (10–14 MiB RSS) per worker: operators who have the
 *   cores and the memory raise it with `--fuse-workers` (1..MAX_WORKERS; chart value
 *   node.fuseWorkers).
 * - The file's size comes from a shared Float64 slot that every GETATTR reads, with entry and
 *   attribute timeouts 0, so `losetup -c` sees a grown volume at once. The main thread refreshes
 *   it on every forwarded request and on resized() (the engine's fast path does not expose the
 *   size yet).
 * - No request is ever answered twice or lost: a forwarded request always gets one reply, an
 *   errno one if the Volume throws (errno.ts maps the engine's codes); a read-only Volume answers
 *   writes, trims and write opens with EROFS.
 * - Teardown: close() unmounts (umount2 without MNT_DETACH unless asked), which aborts the
 *   connection once nothing holds the file; the workers' read(2) then fails with ENODEV and they
 *   end; the main thread waits for its forwarded requests, then closes /dev/fuse. If the file is
 *   still open (the loop device is attached) close() fails with BUSY naming the loop devices, and
 *   nothing changes: the operator (or the stager) detaches first. close({ lazy: true }) detaches
 *   the mount from the name space and resolves once the last holder has let go.
 * - I/O counters (stats.ts): the workers and the main thread add to shared slots with Atomics as
 *   they reply; the owner reads them at scrape time. A caller that mounts in turn (serve) passes
 *   the same FuseStats each time, so its counts run on across remounts.
 * - Nothing here may do synchronous I/O on the mount from the main thread (a READ forwarded to the
 *   main thread would wait for itself); metadata never needs the main thread, so stat is safe.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { Volume } from '../engine/volume.js';
import { DISK_NAME, writeReply, type Forwarded, type WorkerData, type WorkerMessage } from './channel.js';
import { toFuseErrno } from './errno.js';
import { FuseError } from './errors.js';
import { mountFuse, unmountFuse } from './mount.js';
import { FuseCounter, FuseStats, statOp } from './stats.js';
import { Falloc, Op, OutHeader, WriteOut, writeOutHeader } from './wire.js';

/** Worker threads by default (see the design notes). */
export const DEFAULT_WORKERS = 3;
/** The most worker threads an export may have (`--fuse-workers`): each costs about 7.7 MiB PSS. */
export const MAX_WORKERS = 64;

export interface FuseExportOptions {
  /** An existing, empty directory. */
  readonly mountpoint: string;
  readonly volume: Volume;
  readonly workers?: number;
  readonly log?: (msg: string, fields?: object) => void;
  /** Where to count the I/O; by default counters of this export's own, with no latency buckets. */
  readonly stats?: FuseStats;
}

export interface FuseExport {
  /** `${mountpoint}/disk`. */
  readonly file: string;
  /** Resolves when the export has ended: unmounted (by close() or anyone), workers gone, /dev/fuse closed. Never rejects. */
  readonly closed: Promise<void>;
  /** Unmounts and waits for the workers; idempotent. Throws BUSY while the file is open, unless `lazy`. */
  close(opts?: { lazy?: boolean }): Promise<void>;
  /** Publishes the volume's current size to GETATTR (call after volume.expand). */
  resized(): void;
  /** The I/O counters (the `stats` option's, or this export's own). */
  readonly stats: FuseStats;
}

/** Mounts FUSE on `mountpoint` and serves the volume as `${mountpoint}/disk` until closed. */
export async function mountFuseExport(opts: FuseExportOptions): Promise<FuseExport> {
  const { volume, mountpoint } = opts;
  const count = opts.workers ?? DEFAULT_WORKERS;
  if (!Number.isSafeInteger(count) || count < 1 || count > MAX_WORKERS) throw new RangeError(`workers must be an integer from 1 to ${MAX_WORKERS}, got ${count}`);
  const log = opts.log ?? ((): void => undefined);
  const file = path.join(mountpoint, DISK_NAME);
  const sizeSlot = new SharedArrayBuffer(Float64Array.BYTES_PER_ELEMENT);
  const size = new Float64Array(sizeSlot);
  size[0] = volume.size;

  const stats = opts.stats ?? new FuseStats([]);
  const counter = new FuseCounter(stats.handle);

  const fastPath = volume.fastPath();
  const fuseFd = mountFuse(mountpoint);
  const data: WorkerData = { fuseFd, fastPath, size: sizeSlot, readOnly: volume.readOnly, stats: stats.handle };
  const inflight = new Set<Promise<void>>();
  let unmounted = false;
  let failed: unknown;

  const serve = async (req: Forwarded): Promise<void> => {
    size[0] = volume.size;
    let reply: Buffer;
    let errno = 0;
    try {
      reply = await run(volume, req);
    } catch (err) {
      errno = toFuseErrno(err, req.op);
      log('FUSE request failed', { op: req.op, errno, error: err instanceof Error ? err.message : String(err) });
      reply = Buffer.alloc(OutHeader.size);
      writeOutHeader(reply, req.unique, errno, 0);
    }
    counter.answered(statOp(req.op, req.op === Op.Fallocate ? req.mode : 0), true, errno, forwardedBytes(req, reply), req.start);
    try {
      writeReply(fuseFd, reply);
    } catch (err) {
      log('FUSE reply failed', { op: req.op, error: err instanceof Error ? err.message : String(err) });
    }
  };
  const onMessage = (msg: WorkerMessage): void => {
    if (msg.kind === 'log') return log(msg.msg, msg.fields);
    const p = serve(msg.request).finally(() => inflight.delete(p));
    inflight.add(p);
  };

  let workers: Worker[];
  try {
    workers = Array.from({ length: count }, () => new Worker(new URL('./worker.js', import.meta.url), { workerData: data }));
  } catch (err) {
    unmountFuse(mountpoint, true);
    fs.closeSync(fuseFd);
    throw new FuseError('WORKER_FAILED', `cannot start the FUSE workers for ${file}: ${(err as Error).message}`, { cause: err });
  }
  const exits = workers.map(
    (w, i) =>
      new Promise<void>((resolve) => {
        w.on('message', onMessage);
        w.on('error', (err) => {
          failed ??= err;
          log('FUSE worker failed', { worker: i, error: err.message });
        });
        w.on('exit', () => resolve());
      }),
  );
  const closed = (async (): Promise<void> => {
    await Promise.all(exits);
    // Every worker is gone: nobody reads /dev/fuse any more. A mount left behind (the workers died)
    // would hang its users, so it goes now.
    if (!unmounted) {
      try {
        unmountFuse(mountpoint, true);
      } catch (err) {
        log('FUSE lazy unmount failed', { mountpoint, error: (err as Error).message });
      }
      unmounted = true;
    }
    while (inflight.size > 0) await Promise.all(inflight);
    fs.closeSync(fuseFd);
  })();

  try {
    await Promise.all(workers.map((w) => new Promise<void>((resolve, reject) => {
      w.once('online', resolve);
      w.once('exit', () => reject(new FuseError('WORKER_FAILED', `a FUSE worker for ${file} exited while starting`, { cause: failed })));
    })));
  } catch (err) {
    try {
      unmountFuse(mountpoint, true);
    } catch (unmountErr) {
      log('FUSE lazy unmount failed', { mountpoint, error: (unmountErr as Error).message });
    }
    unmounted = true;
    for (const w of workers) void w.terminate();
    await closed;
    throw err;
  }

  return {
    file,
    closed,
    stats,
    resized: () => {
      size[0] = volume.size;
    },
    close: async ({ lazy = false } = {}) => {
      if (!unmounted) {
        try {
          unmountFuse(mountpoint, lazy);
        } catch (err) {
          if (err instanceof FuseError && err.code === 'BUSY') {
            const holders = loopDevicesOf(file);
            const who = holders.length > 0 ? `loop device ${holders.join(', ')}` : 'a process';
            throw new FuseError('BUSY', `cannot unmount ${mountpoint}: ${file} is still open by ${who}; detach it first (losetup -d), or close lazily`, { cause: err });
          }
          throw err;
        }
        unmounted = true;
      }
      await closed;
    },
  };
}

/** Runs a forwarded request on the Volume; returns the whole reply. */
async function run(volume: Volume, req: Forwarded): Promise<Buffer> {
  switch (req.op) {
    case Op.Read: {
      const length = Math.max(0, Math.min(req.length, volume.size - req.offset));
      const reply = Buffer.allocUnsafe(OutHeader.size + length);
      await volume.readInto(reply.subarray(OutHeader.size), req.offset);
      writeOutHeader(reply, req.unique, 0, length);
      return reply;
    }
    case Op.Write: {
      await volume.write(req.offset, Buffer.from(req.data.buffer, req.data.byteOffset, req.data.byteLength), { fua: req.fua });
      const reply = Buffer.alloc(OutHeader.size + WriteOut.size);
      reply.writeUInt32LE(req.data.byteLength, OutHeader.size + WriteOut.written);
      writeOutHeader(reply, req.unique, 0, WriteOut.size);
      return reply;
    }
    case Op.Fsync:
      await volume.flush();
      return header(req.unique);
    case Op.Fallocate:
      if ((req.mode & Falloc.PunchHole) !== 0) await volume.trim(req.offset, req.length);
      else await volume.writeZeroes(req.offset, req.length, { noHole: true });
      return header(req.unique);
  }
}

/** The bytes a forwarded request covered: what its reply carries for a read, the range otherwise. */
function forwardedBytes(req: Forwarded, reply: Buffer): number {
  switch (req.op) {
    case Op.Read:
      return reply.length - OutHeader.size;
    case Op.Write:
      return req.data.byteLength;
    case Op.Fsync:
      return 0;
    case Op.Fallocate:
      return req.length;
  }
}

function header(unique: bigint): Buffer {
  const reply = Buffer.alloc(OutHeader.size);
  writeOutHeader(reply, unique, 0, 0);
  return reply;
}

/** The loop devices whose backing file is `file` (from sysfs), for a clear BUSY message. */
function loopDevicesOf(file: string): string[] {
  let names: string[];
  try {
    names = fs.readdirSync('/sys/block').filter((n) => n.startsWith('loop'));
  } catch {
    return [];
  }
  return names.filter((n) => {
    try {
      return fs.readFileSync(`/sys/block/${n}/loop/backing_file`, 'utf8').trim() === file;
    } catch {
      return false; // not attached
    }
  }).map((n) => `/dev/${n}`);
}
