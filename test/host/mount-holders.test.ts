/**
 * A loop device whose ext4 is still mounted in another mount namespace, for real. The holder is
 * `unshare -m --propagation private sleep infinity`, started while the file system is mounted
 * here, so it gets its own copy of the mount. Unmounting here does not reach that copy, so
 * releaseLoop cannot finish and must name the holder (DeviceHeldError, BUSY). Once the holder is
 * killed, or the command the message gives has been run, the device is released. A device held open
 * by something other than a mount keeps the plain timeout.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { before, describe, it } from 'node:test';

import { HostError } from '../../src/host/errors.js';
import { releaseLoop } from '../../src/host/fuse-loop.js';
import { loopBackingFile } from '../../src/host/loop.js';
import { DeviceHeldError, findMountHolders } from '../../src/host/mount-holders.js';
import { MiB, run, runOk, tempDir } from '../nbd/helpers/fixture.js';
import { startHolder, stopHolder } from './holder.js';

/** A loop device over a fresh 32 MiB file in its own temp dir, with what it takes to clean up. */
interface Loop {
  readonly dir: string;
  readonly file: string;
  readonly device: string;
}

async function makeLoop(): Promise<Loop> {
  const dir = await fsp.realpath(await tempDir('flashcsi-holders-'));
  const file = path.join(dir, 'disk.img');
  const fh = await fsp.open(file, 'w');
  await fh.truncate(32 * MiB);
  await fh.close();
  const device = (await runOk('losetup', ['--find', '--show', file])).trim();
  return { dir, file, device };
}

async function removeLoop(loop: Loop): Promise<void> {
  if ((await loopBackingFile(loop.device)) === loop.file) await run('losetup', ['-d', loop.device]);
  await fsp.rm(loop.dir, { recursive: true, force: true });
}

/** mkfs.ext4 on `device`, mounted at a new directory `mnt`. */
async function mountExt4(device: string, mnt: string): Promise<void> {
  await runOk('mkfs.ext4', ['-q', device], { timeoutMs: 60_000 });
  await fsp.mkdir(mnt);
  await runOk('mount', [device, mnt]);
}

describe('a loop device still mounted in another mount namespace', () => {
  let ownNamespace: string;

  before(async () => {
    // Needs root, loop devices and the tools: fail loudly, never skip.
    assert.equal(process.getuid?.(), 0, 'loop devices and mounts need root');
    await fsp.access('/dev/loop-control').catch(() => assert.fail('/dev/loop-control is missing (no loop driver)'));
    for (const t of ['losetup', 'mkfs.ext4', 'mount', 'umount', 'unshare', 'sleep']) {
      assert.equal((await run('sh', ['-c', `command -v ${t}`])).code, 0, `${t} is not installed`);
    }
    ownNamespace = await fsp.readlink('/proc/self/ns/mnt');
  });

  /** What a test gets: a loop device whose ext4 is unmounted here but still mounted in the holder, and releaseLoop's error. */
  interface Held {
    readonly loop: Loop;
    readonly mnt: string;
    readonly holder: ChildProcess;
    readonly pid: number;
    readonly namespace: string;
    readonly err: DeviceHeldError;
  }

  /** Sets up a Held (releaseLoop waits `timeoutMs` for it), runs `body`, and cleans up whatever happened. */
  async function withHeldLoop(timeoutMs: number, body: (held: Held) => Promise<void>): Promise<void> {
    const loop = await makeLoop();
    const mnt = path.join(loop.dir, 'mnt dir'); // a space: mountinfo escapes it as \040
    let mounted = false;
    let holder: ChildProcess | undefined;
    try {
      await mountExt4(loop.device, mnt);
      mounted = true;
      // Mounted here only: our own namespace is never reported.
      assert.ok((await findMountHolders(loop.device)).every((h) => h.namespace !== ownNamespace));
      const started = await startHolder(loop.device);
      holder = started.child;
      await runOk('umount', [mnt]);
      mounted = false;
      const err: unknown = await releaseLoop(loop.device, loop.file, timeoutMs).then(
        () => assert.fail('releaseLoop finished although the file system is still mounted in the holder'),
        (e: unknown) => e,
      );
      assert.ok(err instanceof DeviceHeldError, `expected DeviceHeldError, got ${String(err)}`);
      await body({ loop, mnt, holder: started.child, pid: started.pid, namespace: started.namespace, err });
    } finally {
      if (holder !== undefined) await stopHolder(holder);
      if (mounted) await run('umount', ['-l', mnt]);
      await removeLoop(loop);
    }
  }

  it('releaseLoop names the holder, its namespace and the mount point (BUSY); once the holder is gone it releases', async (t) => {
    await withHeldLoop(3_000, async ({ loop, mnt, holder, pid, namespace, err }) => {
      t.diagnostic(err.message);
      assert.equal(err.code, 'BUSY');
      assert.equal(err.device, loop.device);
      assert.ok(err.cause instanceof HostError && err.cause.code === 'TIMEOUT', 'the timeout it explains is its cause');
      const hold = err.holds.find((h) => h.namespace === namespace);
      assert.ok(hold !== undefined, `the holder's namespace ${namespace} is named`);
      assert.deepEqual(hold.processes, [{ pid, comm: 'sleep' }]);
      assert.equal(hold.processCount, 1);
      assert.deepEqual(hold.mountPoints, [mnt]);
      assert.ok(err.holds.every((h) => h.namespace !== ownNamespace));
      for (const part of [loop.device, namespace, `pid ${pid} sleep`, `at ${mnt}`, `nsenter -t ${pid} -m umount -l '${mnt}'`]) {
        assert.ok(err.message.includes(part), `the message names ${part}: ${err.message}`);
      }

      await stopHolder(holder);
      await releaseLoop(loop.device, loop.file, 10_000);
      assert.equal(await loopBackingFile(loop.device), undefined, 'the loop device let go of its file');
    });
  });

  it('the command the message gives, run as given, lets the device go while the holder lives on', async () => {
    await withHeldLoop(1_000, async ({ loop, holder, err }) => {
      const command = /nsenter -t \d+ -m umount -l (?:'[^']*'|\S+)/.exec(err.message)?.[0];
      assert.ok(command !== undefined, `the message gives a command: ${err.message}`);
      await runOk('sh', ['-c', command]);
      await releaseLoop(loop.device, loop.file, 10_000);
      assert.equal(await loopBackingFile(loop.device), undefined, 'the loop device let go of its file');
      assert.ok(holder.exitCode === null && holder.signalCode === null, 'the holder still runs');
    });
  });

  it('a device held open but mounted nowhere else keeps the plain timeout', async () => {
    const loop = await makeLoop();
    try {
      const fh = await fsp.open(loop.device, 'r');
      try {
        await assert.rejects(
          releaseLoop(loop.device, loop.file, 1_000),
          (e: unknown) => e instanceof HostError && !(e instanceof DeviceHeldError) && e.code === 'TIMEOUT' && e.message.includes(`${loop.device} to release ${loop.file}`),
        );
      } finally {
        await fh.close();
      }
      // losetup -d set autoclear: the last close lets go.
      await releaseLoop(loop.device, loop.file, 10_000);
      assert.equal(await loopBackingFile(loop.device), undefined);
    } finally {
      await removeLoop(loop);
    }
  });
});
