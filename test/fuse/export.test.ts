/**
 * The FUSE export (src/fuse) with real peers: a real Volume served by mountFuseExport, a loop
 * device with direct I/O on its file (as the stager attaches it), ext4 and fio inside; checkpoints
 * cut on the main thread while the file is in use; trim, zeroes and fsync reaching the engine;
 * engine errors as errnos; and teardown (BUSY while the loop device holds the file, workers gone
 * after close).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { Volume } from '../../src/engine/index.js';
import { EngineError } from '../../src/engine/errors.js';
import { fastPathOff } from '../../src/engine/fast-path.js';
import { FuseError, mountFuseExport, toFuseErrno, type FuseExport } from '../../src/fuse/index.js';
import { pollUntil } from '../../src/host/poll.js';
import { pattern, tempDir } from '../engine/helpers.js';

const exec = promisify(execFile);
const MiB = 1024 * 1024;

/** Runs a command; on failure, its stderr in the message. */
async function run(cmd: string, args: string[]): Promise<string> {
  try {
    return (await exec(cmd, args, { maxBuffer: 16 * MiB })).stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')}: ${e.stderr ?? e.message}`, { cause: err });
  }
}

/** The stderr of a command that must fail. */
async function failure(cmd: string, args: string[]): Promise<string> {
  return exec(cmd, args).then(
    () => assert.fail(`${cmd} ${args.join(' ')} succeeded`),
    (err: { stderr?: string }) => err.stderr ?? '',
  );
}

function isMounted(dir: string): boolean {
  return fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === dir);
}

interface Served {
  vol: Volume;
  exp: FuseExport;
  readonly dir: string;
  readonly mnt: string;
  /** What the export logged (failed forwarded requests). */
  readonly logs: string[];
  /** Attaches a loop device with direct I/O to the export's file (detached again at the end). */
  attach(...extra: string[]): Promise<string>;
  detach(device: string): Promise<void>;
  /** Closes the export once the loop devices have let go (udev may hold a detached one for a moment). */
  close(): Promise<void>;
}

/** A volume in a temp dir served by mountFuseExport for one test; everything torn down afterwards. */
async function withExport(name: string, opts: { size: number; readOnly?: boolean; failures?: boolean; forwardAll?: boolean }, fn: (s: Served) => Promise<void>): Promise<void> {
  const t = tempDir(`fuse-${name}`);
  const dir = path.join(t.dir, 'vol');
  const mnt = path.join(t.dir, 'fuse');
  fs.mkdirSync(mnt);
  let vol = await Volume.create(dir, { size: opts.size });
  if (opts.readOnly === true) {
    await vol.close();
    vol = await Volume.open(dir, { readOnly: true });
  }
  // The engine's fast path off: every READ, WRITE and FSYNC goes through the main thread's Volume.
  if (opts.forwardAll === true) vol.fastPath = fastPathOff;
  const loops = new Set<string>();
  const logs: string[] = [];
  const s: Served = {
    vol,
    exp: await mountFuseExport({ mountpoint: mnt, volume: vol, log: (msg, fields) => logs.push(`${msg} ${JSON.stringify(fields)}`) }),
    dir,
    mnt,
    logs,
    async attach(...extra) {
      const device = (await run('losetup', ['--find', '--show', '--direct-io=on', ...extra, s.exp.file])).trim();
      loops.add(device);
      return device;
    },
    async detach(device) {
      await run('losetup', ['-d', device]);
      loops.delete(device);
    },
    async close() {
      await pollUntil(
        () =>
          s.exp.close().then(
            () => true,
            (err: unknown) => {
              if (err instanceof FuseError && err.code === 'BUSY') return false;
              throw err;
            },
          ),
        10_000,
        `${mnt} to unmount`,
      );
    },
  };
  try {
    await fn(s);
  } finally {
    for (const d of loops) await exec('losetup', ['-d', d]).catch(() => undefined);
    await s.close().catch(() => s.exp.close({ lazy: true }));
    await s.vol.close();
    t.cleanup();
  }
  // Nothing the tests do should make a forwarded request fail, unless the test expects it.
  if (opts.failures !== true) assert.deepEqual(logs, []);
}

/** Writes `data` at `offset` of a block device or file with O_DIRECT, through a file dd reads. */
async function ddWrite(target: string, data: Buffer, offset: number, tmp: string, ...extra: string[]): Promise<void> {
  const src = path.join(tmp, `dd-${offset}`);
  fs.writeFileSync(src, data);
  await run('dd', [`if=${src}`, `of=${target}`, 'bs=64k', `seek=${offset}`, 'oflag=direct,seek_bytes', 'conv=notrunc', 'status=none', ...extra]);
  fs.rmSync(src);
}

async function ddRead(target: string, offset: number, length: number, tmp: string): Promise<Buffer> {
  const dst = path.join(tmp, `rd-${offset}`);
  await run('dd', [`if=${target}`, `of=${dst}`, 'bs=64k', `skip=${offset}`, `count=${length}`, 'iflag=direct,skip_bytes,count_bytes', 'status=none']);
  const b = fs.readFileSync(dst);
  fs.rmSync(dst);
  return b;
}

describe('FUSE export of a volume', () => {
  test('ext4 on a loop device over the file: fio verifies 4k and 1M random writes; the data is the engine’s after reopen', async () => {
    await withExport('ext4', { size: 256 * MiB }, async (s) => {
      assert.equal(fs.statSync(s.exp.file).size, 256 * MiB);
      const loop = await s.attach();
      const fsDir = path.join(path.dirname(s.mnt), 'ext4');
      fs.mkdirSync(fsDir);
      await run('mkfs.ext4', ['-q', '-F', loop]);
      await run('mount', [loop, fsDir]);
      try {
        for (const bs of ['4k', '1M']) {
          await run('fio', [
            `--name=verify-${bs}`, `--directory=${fsDir}`, '--ioengine=libaio', '--direct=1', '--rw=randwrite', `--bs=${bs}`, '--iodepth=16',
            '--size=24M', '--verify=crc32c', '--verify_fatal=1', '--verify_state_save=0', '--do_verify=1', '--randrepeat=0', '--fsync_on_close=1',
          ]);
        }
        // Close while the loop device holds the file: a clear refusal, and the export keeps serving.
        const busy = await s.exp.close().then(() => undefined, (err: unknown) => err);
        assert.ok(busy instanceof FuseError && busy.code === 'BUSY', String(busy));
        assert.match(busy.message, new RegExp(`still open by loop device ${loop}.*losetup -d`));
        assert.ok(isMounted(s.mnt));
      } finally {
        await run('umount', [fsDir]);
      }
      await run('e2fsck', ['-fn', loop]);
      const marker = pattern(7, 2 * MiB);
      await ddWrite(loop, marker, 200 * MiB, s.dir);
      await s.detach(loop);
      await s.close();
      assert.equal(isMounted(s.mnt), false, 'close() unmounted');
      await s.exp.closed;
      await s.exp.close(); // idempotent
      await s.vol.close();
      s.vol = await Volume.open(s.dir);
      assert.ok((await s.vol.read(200 * MiB, 2 * MiB)).equals(marker), 'the pattern written through the loop device is the engine’s');
    });
  });

  test('a checkpoint cut on the main thread while the file is in use keeps the old data; the live volume has the new', async () => {
    await withExport('checkpoint', { size: 64 * MiB }, async (s) => {
      const loop = await s.attach();
      const before = pattern(1, 3 * MiB);
      const after = pattern(2, 3 * MiB);
      await ddWrite(loop, before, 5 * MiB, s.dir);
      await s.vol.createCheckpoint('c1');
      await ddWrite(loop, after, 5 * MiB, s.dir);
      assert.ok((await s.vol.readCheckpoint('c1', 5 * MiB, 3 * MiB)).equals(before), 'the checkpoint keeps the old pattern');
      assert.ok((await s.vol.read(5 * MiB, 3 * MiB)).equals(after), 'the live volume has the new pattern');
      assert.ok((await ddRead(loop, 5 * MiB, 3 * MiB, s.dir)).equals(after), 'and reads it back through FUSE');
      const copied = s.vol.counters.grainsCopied;
      assert.ok(copied > 0, 'the overwrite went through copy-on-write');
      // Again over grains already copied (the engine's fast path may take these in the worker).
      const third = pattern(3, 3 * MiB);
      await ddWrite(loop, third, 5 * MiB, s.dir);
      assert.equal(s.vol.counters.grainsCopied, copied, 'no second copy');
      assert.ok((await s.vol.readCheckpoint('c1', 5 * MiB, 3 * MiB)).equals(before), 'the checkpoint still keeps the old pattern');
      assert.ok((await s.vol.read(5 * MiB, 3 * MiB)).equals(third));
    });
  });

  test('trim and zeroes reach the engine; a forwarded fsync flushes it; growth shows at once; unsupported fallocate modes fail', async () => {
    await withExport('trim', { size: 32 * MiB, forwardAll: true }, async (s) => {
      let flushes = 0;
      const flush = s.vol.flush.bind(s.vol);
      s.vol.flush = async () => {
        flushes++;
        return flush();
      };
      const loop = await s.attach();
      await ddWrite(loop, pattern(3, 4 * MiB), 0, s.dir, 'conv=notrunc,fsync');
      assert.ok(flushes > 0, 'fsync of the loop device reached volume.flush (the fast path would fdatasync in the worker)');
      // Trim: a hole in the engine (the loop device's discard = PUNCH_HOLE|KEEP_SIZE).
      await run('blkdiscard', ['-o', String(1 * MiB), '-l', String(1 * MiB), loop]);
      assert.ok((await s.vol.read(1 * MiB, 1 * MiB)).equals(Buffer.alloc(MiB)));
      // Zeroes keeping the allocation (write-zeroes = ZERO_RANGE).
      await run('blkdiscard', ['-z', '-o', String(2 * MiB), '-l', String(1 * MiB), loop]);
      assert.ok((await s.vol.read(2 * MiB, 1 * MiB)).equals(Buffer.alloc(MiB)));
      assert.ok((await s.vol.read(0, MiB)).equals(pattern(3, 4 * MiB).subarray(0, MiB)), 'the rest is untouched');
      const allocated = await s.vol.allocated();
      const covers = (from: number, to: number): boolean => allocated.some((e) => e.offset <= from && e.offset + e.length >= to);
      assert.equal(covers(1 * MiB, 2 * MiB), false, 'the trimmed range is a hole');
      assert.ok(covers(2 * MiB, 3 * MiB), 'the zeroed range stays allocated');
      // Plain allocation is not the engine's to do.
      assert.match(await failure('fallocate', ['-o', '0', '-l', '4096', s.exp.file]), /not supported/i);
      // Growth: the size is asked for on every stat, so losetup -c sees it at once.
      await s.vol.expand(48 * MiB);
      s.exp.resized();
      assert.equal(fs.statSync(s.exp.file).size, 48 * MiB);
      await run('losetup', ['-c', loop]);
      assert.equal((await run('blockdev', ['--getsize64', loop])).trim(), String(48 * MiB));
      // The size is the volume's alone.
      assert.match(await failure('truncate', ['-s', '1M', s.exp.file]), /not permitted/i);
    });
  });

  test('a read-only volume: reads work, writes fail with EROFS, losetup falls back to a read-only loop device', async () => {
    await withExport('readonly', { size: 16 * MiB, readOnly: true }, async (s) => {
      assert.match(await failure('dd', ['if=/dev/zero', `of=${s.exp.file}`, 'bs=4k', 'count=1', 'oflag=direct', 'conv=notrunc']), /Read-only file system/);
      assert.ok((await ddRead(s.exp.file, 0, MiB, s.dir)).equals(Buffer.alloc(MiB)));
      const loop = await s.attach();
      assert.equal((await run('blockdev', ['--getro', loop])).trim(), '1');
    });
  });

  test('a forwarded request the engine fails gets an errno reply; the export stays up', async () => {
    await withExport('errors', { size: 16 * MiB, failures: true }, async (s) => {
      await s.vol.close(); // every forwarded request now fails with the engine's CLOSED
      assert.match(await failure('dd', [`if=${s.exp.file}`, 'of=/dev/null', 'bs=4k', 'count=1', 'iflag=direct']), /transport endpoint shutdown/i);
      assert.match(await failure('dd', ['if=/dev/zero', `of=${s.exp.file}`, 'bs=4k', 'count=1', 'oflag=direct', 'conv=notrunc']), /transport endpoint shutdown/i);
      assert.equal(s.logs.length, 2, s.logs.join('\n'));
      assert.match(s.logs[0] ?? '', /FUSE request failed.*"errno":108/);
      assert.equal(fs.statSync(s.exp.file).size, 16 * MiB, 'metadata is still answered');
      s.vol = await Volume.open(s.dir);
    });
  });

  test('engine errors become errnos', () => {
    assert.equal(toFuseErrno(new EngineError('READ_ONLY', 'ro'), 15), 30); // EROFS
    assert.equal(toFuseErrno(new EngineError('OUT_OF_RANGE', 'past the end'), 15), 22); // READ: EINVAL
    assert.equal(toFuseErrno(new EngineError('OUT_OF_RANGE', 'past the end'), 16), 28); // WRITE: ENOSPC
    assert.equal(toFuseErrno(new EngineError('NO_SPACE', 'full'), 16), 28);
    assert.equal(toFuseErrno(Object.assign(new Error('x'), { code: 'EDQUOT' }), 16), 122);
    assert.equal(toFuseErrno(new Error('anything'), 16), 5); // EIO
  });

  test('teardown: a lazy close waits for the loop device; an unmount by someone else ends the export; clear errors', async () => {
    await withExport('teardown', { size: 16 * MiB }, async (s) => {
      const loop = await s.attach();
      let done = false;
      const closing = s.exp.close({ lazy: true }).then(() => (done = true));
      assert.equal(isMounted(s.mnt), false, 'lazily detached from the name space at once');
      assert.equal(done, false);
      assert.ok((await ddRead(loop, 0, 4096, s.dir)).equals(Buffer.alloc(4096)), 'still served while the loop device holds it');
      await s.detach(loop);
      await closing;
    });
    await withExport('external', { size: 16 * MiB }, async (s) => {
      await run('umount', [s.mnt]);
      await s.exp.closed;
    });
    const t = tempDir('fuse-missing');
    try {
      const vol = await Volume.create(path.join(t.dir, 'vol'), { size: 16 * MiB });
      try {
        await assert.rejects(mountFuseExport({ mountpoint: path.join(t.dir, 'nope'), volume: vol }), (err: unknown) => err instanceof FuseError && err.code === 'MOUNTPOINT_MISSING');
      } finally {
        await vol.close();
      }
    } finally {
      t.cleanup();
    }
  });
});
