/**
 * Attach helpers. Kernel path: argument checks and the method choice only (this machine has no nbd
 * module; test/kernel/ attaches in a real kernel under qemu). nbdfuse path: the full cycle on a real machine — attach, mkfs.ext4
 * and mkfs.xfs, mount, write and read files with sha256, umount, fsck clean, detach.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { chooseAttachMethod } from '../../src/host/attach.js';
import type { Attachment } from '../../src/host/attachment.js';
import { HostError } from '../../src/host/errors.js';
import { attachKernelDevice, hasKernelNbd, nbdIndex } from '../../src/host/kernel-nbd.js';
import { attachNbdfuse, nbdUnixUri } from '../../src/host/nbdfuse.js';
import { MemoryExport } from '../../src/nbd/memory-export.js';
import { type Fixture, MiB, run, runOk, startServer, tempDir } from '../nbd/helpers/fixture.js';

describe('kernel attach path (what runs without the nbd module; test/kernel/ runs the rest in a real kernel)', () => {
  it('rejects bad attach options before connecting anywhere', async () => {
    const base = { address: { path: '/nonexistent/flashcsi.sock' }, exportName: '', identifier: 'flashcsi:v' };
    for (const bad of [{ blockSize: 1000 }, { blockSize: 8192 }, { connections: 0 }, { connections: 1.5 }, { ioTimeoutSeconds: -1 }, { deadConnTimeoutSeconds: 0.5 }, { identifier: '' }]) {
      await assert.rejects(attachKernelDevice({ ...base, ...bad }), (e: unknown) => e instanceof HostError && e.code === 'INVALID_ARGUMENT', JSON.stringify(bad));
    }
    assert.equal(nbdIndex('/dev/nbd12'), 12);
    assert.throws(() => nbdIndex('/dev/loop0'), (e: unknown) => e instanceof HostError && e.code === 'INVALID_ARGUMENT');
  });

  it('picks the kernel path only when /dev/nbd* exists, else serve-fuse; an explicit preference wins', async () => {
    const dir = await tempDir();
    try {
      assert.equal(await hasKernelNbd(dir), false);
      assert.equal(await chooseAttachMethod('auto', dir), 'serve-fuse');
      assert.equal(await chooseAttachMethod('nbdfuse', dir), 'nbdfuse');
      await fsp.writeFile(path.join(dir, 'nbd0'), '');
      assert.equal(await hasKernelNbd(dir), true);
      assert.equal(await chooseAttachMethod('auto', dir), 'kernel');
      assert.equal(await chooseAttachMethod('serve-fuse', dir), 'serve-fuse');
      const real = (await fsp.readdir('/dev')).some((n) => /^nbd\d+$/.test(n));
      assert.equal(await hasKernelNbd(), real);
    } finally {
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });

  it('percent-encodes the export name and socket path in the URI (libnbd decodes both; the nbdfuse cycle below uses it)', () => {
    assert.equal(nbdUnixUri('/run/x/nbd.sock', 'vol 1'), 'nbd+unix:///vol%201?socket=%2Frun%2Fx%2Fnbd.sock');
  });
});

describe('nbdfuse + loop attach (full cycle)', () => {
  let fx: Fixture;
  let mem: MemoryExport;

  before(async () => {
    // This path needs root, /dev/fuse, loop devices and the tools: fail loudly, never skip.
    assert.equal(process.getuid?.(), 0, 'nbdfuse/loop/mount tests must run as root');
    await fsp.access('/dev/fuse').catch(() => assert.fail('/dev/fuse is missing'));
    await fsp.access('/dev/loop-control').catch(() => assert.fail('/dev/loop-control is missing (no loop driver)'));
    for (const t of ['nbdfuse', 'fusermount3', 'losetup', 'mkfs.ext4', 'mkfs.xfs', 'fsck.ext4', 'xfs_repair', 'mount', 'umount']) {
      assert.equal((await run('sh', ['-c', `command -v ${t}`])).code, 0, `${t} is not installed`);
    }
    mem = new MemoryExport({ name: 'vol-1', size: 512 * MiB });
    fx = await startServer({ exports: [mem] });
  });
  after(async () => {
    await fx.close();
  });

  for (const fs of ['ext4', 'xfs'] as const) {
    it(`${fs}: attach, mkfs, mount, write/read files, umount, fsck, detach`, async () => {
      const work = path.join(fx.dir, `attach-${fs}`);
      const mnt = path.join(fx.dir, `mnt-${fs}`);
      await fsp.mkdir(mnt);
      const flushes0 = mem.counters.flushes;
      const trims0 = mem.counters.trims;
      let att: Attachment | undefined;
      let mounted = false;
      try {
        att = await attachNbdfuse({ socketPath: fx.sock, exportName: 'vol-1', workDir: work, timeoutMs: 20_000 });
        assert.equal(att.method, 'nbdfuse');
        assert.match(att.device, /^\/dev\/loop\d+$/);
        assert.ok((await fsp.stat(att.device)).isBlockDevice());
        const dio = await fsp.readFile(`/sys/block/${path.basename(att.device)}/loop/dio`, 'utf8');
        assert.equal(dio.trim(), '1', 'loop device uses direct I/O');
        assert.equal((await runOk('blockdev', ['--getsize64', att.device])).trim(), String(512 * MiB));

        if (fs === 'ext4') await runOk('mkfs.ext4', ['-q', '-F', att.device], { timeoutMs: 120_000 });
        else await runOk('mkfs.xfs', ['-q', '-f', att.device], { timeoutMs: 120_000 });
        assert.ok(mem.counters.trims > trims0, 'mkfs discards reached the server as TRIM');

        await runOk('mount', ['-t', fs, att.device, mnt]);
        mounted = true;
        const files = new Map<string, string>();
        for (const [name, size] of [['big.bin', 24 * MiB], ['small.txt', 1000], ['odd.bin', 3 * MiB + 17]] as const) {
          const data = randomBytes(size);
          await fsp.writeFile(path.join(mnt, name), data);
          files.set(name, createHash('sha256').update(data).digest('hex'));
        }
        await runOk('sync', ['-f', path.join(mnt, 'big.bin')]);
        assert.ok(mem.counters.flushes > flushes0, 'fsync reached the server as FLUSH');
        await assert.rejects(att.detach(), (e: unknown) => e instanceof HostError && e.code === 'BUSY', 'detach refuses while mounted');

        // Remount so the reads come from the server, not the page cache.
        await runOk('umount', [mnt]);
        mounted = false;
        await runOk('mount', ['-t', fs, att.device, mnt]);
        mounted = true;
        for (const [name, sum] of files) {
          const back = await fsp.readFile(path.join(mnt, name));
          assert.equal(createHash('sha256').update(back).digest('hex'), sum, `${name} read back intact`);
        }
        await runOk('umount', [mnt]);
        mounted = false;

        if (fs === 'ext4') await runOk('fsck.ext4', ['-f', '-n', att.device], { timeoutMs: 120_000 });
        else await runOk('xfs_repair', ['-n', att.device], { timeoutMs: 120_000 });

        const device = att.device;
        await att.detach();
        att = undefined;
        await assert.rejects(fsp.access(`/sys/block/${path.basename(device)}/loop/backing_file`), 'loop device released');
        const mounts = await fsp.readFile('/proc/self/mountinfo', 'utf8');
        assert.ok(!mounts.includes(path.join(work, 'fuse')), 'FUSE mount gone');
        assert.equal(await fsp.readFile(path.join(work, 'fuse', 'disk')).catch(() => 'absent'), 'absent', 'FUSE file gone');
      } finally {
        if (mounted) await run('umount', [mnt]);
        if (att !== undefined) await att.detach().catch(() => undefined);
      }
    });
  }
});
