/**
 * The kernel nbd path against a real Linux kernel: Debian's kernel in a qemu TCG guest
 * (test/kernel/guest.ts), attached with the project's own kernel path (src/host/kernel-nbd.ts,
 * run in the guest) to a real `flashcsi serve` on the host over TCP.
 *
 * - With 2 connections (multi-conn; each blk-mq queue must carry I/O) and then 1: mkfs.ext4 and
 *   mkfs.xfs as the stager makes them, mount, files with checksums, fsync, read back from the device
 *   after a remount, fstrim (the host sees the trimmed range as a hole in `nbdinfo --map`), umount,
 *   fsck clean. The server answers every request without an error.
 * - Checkpoints cut through serve's control socket (as the plugin does) while the guest writes and
 *   fsyncs: each checkpoint's export, mounted on the host, holds every file fsynced before the cut,
 *   intact, and no file the guest had not yet started; fsck is clean.
 * - Debian's nbd-client 3.24 as a second peer: its own handshake, then the same file-system cycle.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';

import { controlCall } from '../../src/nbd/control.js';
import {
  allocatedBytes,
  attachInGuest,
  cleanUpAfterFailure,
  detachInGuest,
  host,
  ioErrorLines,
  loggedFiles,
  requeueLines,
  MiB,
  startWriterCommand,
  stopWriter,
  waitForFile,
  useServedVolumeAndGuest,
  type GuestDevice,
  type ServedVolume,
} from './harness.js';

const SIZE = 1024 * MiB; // xfs wants at least 300 MiB
const FILES = 24;

/** mkfs as the node stager makes file systems (src/host/mounter.ts: no discard, force). */
const MKFS: Record<'ext4' | 'xfs', string> = { ext4: 'mkfs.ext4 -q -F -E nodiscard', xfs: 'mkfs.xfs -q -f -K' };
const FSCK: Record<'ext4' | 'xfs', string> = { ext4: 'e2fsck -f -n', xfs: 'xfs_repair -n' };

interface MetricJson {
  name: string;
  values: { labels: Record<string, string>; value: number }[];
}

/** Requests by operation, and requests answered with an error, from serve's own metrics. */
async function requestCounts(served: ServedVolume): Promise<{ ops: Record<string, number>; errors: number }> {
  const metrics = await controlCall<MetricJson[]>(served.control, { op: 'metrics' });
  const ops: Record<string, number> = {};
  for (const v of metrics.find((m) => m.name === 'flashcsi_nbd_requests_total')?.values ?? []) ops[v.labels.op ?? '?'] = v.value;
  const errors = (metrics.find((m) => m.name === 'flashcsi_nbd_request_errors_total')?.values ?? []).reduce((s, v) => s + v.value, 0);
  return { ops, errors };
}

/** Bytes the server received on each established TCP connection to `port` (ss -tin). */
async function connectionBytesReceived(port: number): Promise<number[]> {
  const out = await host('ss', ['-tin', 'state', 'established', `( sport = :${port} )`]);
  return [...out.matchAll(/bytes_received:(\d+)/g)].map((m) => Number(m[1]));
}

describe('kernel nbd path in a real kernel (qemu TCG guest)', { timeout: 900_000 }, () => {
  const env = useServedVolumeAndGuest('flashcsi-kernel-', SIZE);

  /** The file-system cycle on an attached device; the host checks the trim through block status. */
  async function fileSystemCycle(device: string, fs: 'ext4' | 'xfs', tag: string): Promise<void> {
    const { guest, served } = env;
    const mnt = `/mnt/${tag}`;
    await guest.sh(`${MKFS[fs]} ${device} && mkdir -p ${mnt} && mount ${device} ${mnt}`);
    await guest.sh(`sh /work/writer.sh ${mnt}/files /work/${tag}.log /work/${tag}.stop ${FILES}`, 300_000);
    assert.equal(loggedFiles(await fsp.readFile(path.join(guest.opts.workDir, `${tag}.log`), 'utf8')).size, FILES);
    await guest.sh(`dd if=/dev/urandom of=${mnt}/big bs=1M count=64 conv=fsync 2>/dev/null`, 300_000);
    const before = await allocatedBytes(served.uri());
    await guest.sh(`umount ${mnt} && mount ${device} ${mnt} && sh /work/verify.sh ${mnt}/files /work/${tag}.log`, 300_000);
    // A remount first: xfs does not trim extents freed by a transaction still in its log.
    await guest.sh(`rm ${mnt}/big && umount ${mnt} && mount ${device} ${mnt} && fstrim ${mnt}`, 300_000);
    const afterTrim = await allocatedBytes(served.uri());
    console.log(`${tag}: allocated ${(before / MiB).toFixed(1)} MiB before fstrim, ${(afterTrim / MiB).toFixed(1)} MiB after`);
    assert.ok(before - afterTrim >= 48 * MiB, `fstrim of a deleted 64 MiB file freed only ${((before - afterTrim) / MiB).toFixed(1)} MiB on the server`);
    await guest.sh(`umount ${mnt} && ${FSCK[fs]} ${device}`, 300_000);
  }

  for (const connections of [2, 1]) {
    it(`attaches with ${connections} connection(s); ext4 and xfs: write, fsync, read back, fstrim, fsck clean`, async (t) => {
      const { guest, served } = env;
      const run: { dev?: GuestDevice; passed?: true } = {};
      t.after(() => (run.passed ? undefined : cleanUpAfterFailure(guest, run.dev)));
      const dev = (run.dev = await attachInGuest(guest, served, { connections, ioTimeoutSeconds: 30, deadConnTimeoutSeconds: 60 }));
      assert.equal((await guest.sh(`cat /sys/block/nbd${dev.index}/backend`)).trim(), dev.identifier);
      assert.equal((await guest.sh(`ls /sys/block/nbd${dev.index}/mq | wc -l`)).trim(), String(connections));
      if (connections > 1) {
        // Direct I/O from each CPU goes out on that CPU's queue, i.e. on its own connection: the
        // server's side of every connection must have received that data. Checked first, while
        // both connections are fresh: a connection the kernel later drops after an I/O timeout (a
        // loaded TCG guest) is retried on the other one, invisibly to the file system.
        await guest.sh(`for c in 0 1; do taskset -c $c dd if=/dev/urandom of=${dev.device} bs=64k count=16 seek=$((c * 64)) oflag=direct 2>/dev/null || exit 1; done`);
        const received = await connectionBytesReceived(served.port);
        assert.equal(received.length, connections, `expected ${connections} connections to port ${served.port}: ${JSON.stringify(received)}`);
        for (const bytes of received) assert.ok(bytes > 1 * MiB, `a connection carried only ${bytes} bytes: ${JSON.stringify(received)}`);
      }
      for (const fs of ['ext4', 'xfs'] as const) await fileSystemCycle(dev.device, fs, `c${connections}-${fs}`);
      const retried = requeueLines(guest.console());
      if (retried.length > 0) console.log(`the kernel timed out and retried requests on another connection:\n${retried.join('\n')}`);
      await detachInGuest(guest, dev);
      const counts = await requestCounts(served);
      console.log(`requests the kernel sent so far: ${JSON.stringify(counts.ops)}`);
      assert.equal(counts.errors, 0, 'the server answered a kernel request with an error');
      assert.deepEqual(ioErrorLines(guest.console()), []);
      run.passed = true;
    });
  }

  it('checkpoints cut while the guest writes hold exactly what it had fsynced', async (t) => {
    const { guest, served, root } = env;
    const run: { dev?: GuestDevice; passed?: true } = {};
    t.after(() => (run.passed ? undefined : cleanUpAfterFailure(guest, run.dev)));
    const dev = (run.dev = await attachInGuest(guest, served, { connections: 2, ioTimeoutSeconds: 30, deadConnTimeoutSeconds: 60 }));
    const mnt = '/mnt/cuts';
    await guest.sh(`${MKFS.ext4} ${dev.device} && mkdir -p ${mnt} && mount ${dev.device} ${mnt}`);
    const log = '/work/cuts.log';
    const hostLog = path.join(guest.opts.workDir, 'cuts.log');
    await guest.sh(startWriterCommand(`${mnt}/files`, log, '/work/cuts.stop'));
    const cuts: { name: string; fsynced: Map<number, string>; started: number }[] = [];
    for (let c = 1; c <= 3; c++) {
      const want = 15 * c;
      const text = await waitForFile(hostLog, (t) => loggedFiles(t).size >= want, 300_000, `${want} fsynced files`);
      const fsynced = loggedFiles(text);
      const name = `cut-${c}`;
      await controlCall(served.control, { op: 'checkpoint.create', name });
      // The writer logs a file after its fsync returns, so it had started at most one file beyond
      // the last one logged right after the cut.
      const started = Math.max(...loggedFiles(await fsp.readFile(hostLog, 'utf8')).keys()) + 1;
      cuts.push({ name, fsynced, started });
    }
    const { failures } = await stopWriter(guest, log, '/work/cuts.stop');
    assert.equal(failures, '');
    // Unmounting writes back what ext4 still holds, through the emulated guest: as long as the other unmounts here.
    await guest.sh(`umount ${mnt}`, 300_000);
    await detachInGuest(guest, dev);

    for (const cut of cuts) {
      const image = path.join(root, `${cut.name}.img`);
      await host('nbdcopy', [served.uri(cut.name), image]);
      const mountPoint = path.join(root, cut.name);
      await fsp.mkdir(mountPoint);
      await host('mount', ['-o', 'loop', image, mountPoint]); // replays the journal, as a crash-recovered mount would
      try {
        const dir = path.join(mountPoint, 'files');
        for (const [n, sum] of cut.fsynced) {
          const data = await fsp.readFile(path.join(dir, `f${n}`)).catch(() => undefined);
          assert.ok(data !== undefined, `${cut.name}: f${n} was fsynced before the cut but is missing`);
          assert.equal(createHash('sha256').update(data).digest('hex'), sum, `${cut.name}: f${n} differs from what was fsynced`);
        }
        for (const name of await fsp.readdir(dir)) {
          assert.ok(Number(name.slice(1)) <= cut.started, `${cut.name}: ${name} exists, but the guest had not started it at the cut`);
        }
        console.log(`${cut.name}: ${cut.fsynced.size} fsynced files intact, ${(await fsp.readdir(dir)).length} files present`);
      } finally {
        await host('umount', [mountPoint]);
      }
      await host('e2fsck', ['-f', '-n', image]);
      await fsp.rm(image);
    }
    assert.deepEqual(ioErrorLines(guest.console()), []);
    run.passed = true;
  });

  it("Debian's nbd-client 3.24 (its own handshake) attaches and passes the ext4 cycle", async (t) => {
    const { guest, served } = env;
    const run: { passed?: true } = {};
    t.after(() => (run.passed ? undefined : cleanUpAfterFailure(guest, undefined).then(() => guest.exec('nbd-client -d /dev/nbd9'))));
    await guest.sh(`nbd-client 10.0.2.2 ${served.port} /dev/nbd9 -N '' -b 4096 -C 2 -t 30`);
    await fileSystemCycle('/dev/nbd9', 'ext4', 'nbd-client');
    await guest.sh('nbd-client -d /dev/nbd9');
    assert.equal((await requestCounts(served)).errors, 0);
    assert.deepEqual(ioErrorLines(guest.console()), []);
    run.passed = true;
  });
});
