/**
 * `flashcsi serve --fuse-workers N`, started by the serve launcher as the plugin starts it: the
 * volume's FUSE file, mounted through the control op `fuse.mount`, is served by N more threads in
 * the serve process (/proc/<pid>/task; one thread per worker), which end when it is unmounted.
 * Two `fuse.mount` requests sent at once for the same mountpoint both answer the same file and
 * leave one FUSE mount and one set of workers (serve takes them in turn).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { Volume } from '../../src/engine/index.js';
import { DEFAULT_WORKERS } from '../../src/fuse/export.js';
import { readMounts } from '../../src/host/mounts.js';
import { pollUntil } from '../../src/host/poll.js';
import { serveLauncher } from '../../src/host/serve-process.js';
import { controlCall } from '../../src/nbd/control.js';
import { BIN } from '../csi/plugin-process.js';
import { tempDir } from '../engine/helpers.js';
import { runOk } from '../nbd/helpers/fixture.js';

const threads = (pid: number): number => fs.readdirSync(`/proc/${pid}/task`).length;
const fuseMountsAt = async (mnt: string): Promise<number> => (await readMounts()).filter((m) => m.mountPoint === mnt && m.fsType.startsWith('fuse')).length;

describe('flashcsi serve --fuse-workers', { timeout: 120_000 }, () => {
  for (const workers of [2, undefined]) {
    const want = workers ?? DEFAULT_WORKERS;
    test(`${workers === undefined ? 'no flag' : `--fuse-workers ${workers}`}: two concurrent fuse.mount requests leave one mount served by ${want} worker threads`, async () => {
      const t = tempDir('fuse-workers');
      const dir = path.join(t.dir, 'vol');
      const mnt = path.join(t.dir, 'fuse');
      const launcher = serveLauncher({ cli: BIN, logLevel: 'warn', ...(workers === undefined ? {} : { fuseWorkers: workers }) });
      try {
        await (await Volume.create(dir, { size: 16 * 2 ** 20 })).close();
        fs.mkdirSync(mnt);
        const served = await launcher.start({ volumeDir: dir, socket: path.join(t.dir, 'run', 'nbd.sock'), logFile: path.join(t.dir, 'serve.log') });
        const pid = served.process.pid;
        try {
          const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
          if (workers === undefined) assert.ok(!cmdline.includes('--fuse-workers'), cmdline.join(' '));
          else assert.deepEqual(cmdline.slice(cmdline.indexOf('--fuse-workers'), cmdline.indexOf('--fuse-workers') + 2), ['--fuse-workers', String(workers)]);
          const before = threads(pid);

          const mount = (): Promise<{ file: string; pid: number }> => controlCall(served.control, { op: 'fuse.mount', mountpoint: mnt }, 30_000);
          const [a, b] = await Promise.all([mount(), mount()]);
          assert.deepEqual(a, { file: path.join(mnt, 'disk'), pid });
          assert.deepEqual(b, a);
          assert.equal(await fuseMountsAt(mnt), 1, 'one FUSE mount on the mountpoint');
          assert.equal(threads(pid) - before, want, 'one thread per worker');
          assert.equal(fs.statSync(a.file).size, 16 * 2 ** 20);

          // Unmounted, the export ends its workers.
          await runOk('umount', [mnt]);
          await pollUntil(() => threads(pid) === before, 30_000, `serve ${pid}'s FUSE workers to end`, { detail: () => `${threads(pid)} threads, ${before} before the mount` });
        } finally {
          await launcher.stop(served.process);
        }
        assert.equal(await fuseMountsAt(mnt), 0);
      } finally {
        for (let n = await fuseMountsAt(mnt); n > 0; n--) await runOk('umount', ['-l', mnt]);
        t.cleanup();
      }
    });
  }
});
