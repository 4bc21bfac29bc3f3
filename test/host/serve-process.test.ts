/**
 * The serve launcher starts `flashcsi serve` with its thread pool sized in the environment (the
 * process cannot size it itself once the ES module loader has started the pool): the running
 * server has the variable and the threads. It passes on the plugin's --fuse-workers.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { Volume } from '../../src/engine/index.js';
import { SERVE_THREADPOOL_SIZE, serveEnvironment, serveLauncher } from '../../src/host/serve-process.js';
import { tempDir } from '../engine/helpers.js';
import { BIN } from '../csi/plugin-process.js';

describe('serve launcher', () => {
  test('keeps a thread pool size the environment already gives', () => {
    assert.equal(serveEnvironment({ UV_THREADPOOL_SIZE: '8' }).UV_THREADPOOL_SIZE, '8');
    assert.equal(serveEnvironment({}).UV_THREADPOOL_SIZE, String(SERVE_THREADPOOL_SIZE));
  });

  test('starts flashcsi serve with its thread pool sized and the --fuse-workers it was given', async () => {
    const { dir, cleanup } = tempDir('serve-launcher-');
    const launcher = serveLauncher({ cli: BIN, logLevel: 'warn', fuseWorkers: 5 });
    try {
      const vol = await Volume.create(path.join(dir, 'vol'), { size: 1 << 20 });
      await vol.close();
      const env = { ...process.env };
      delete process.env.UV_THREADPOOL_SIZE; // the launcher's default, not the test runner's
      let served;
      try {
        served = await launcher.start({ volumeDir: path.join(dir, 'vol'), socket: path.join(dir, 'run', 'nbd.sock'), logFile: path.join(dir, 'serve.log') });
      } finally {
        Object.assign(process.env, env);
      }
      try {
        const pid = served.process.pid;
        const environ = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
        assert.ok(environ.includes(`UV_THREADPOOL_SIZE=${SERVE_THREADPOOL_SIZE}`), 'serve got the pool size in its environment');
        // libuv starts every pool thread at once: the volume's open (recovery) has used the pool.
        assert.ok(readdirSync(`/proc/${pid}/task`).length > SERVE_THREADPOOL_SIZE, 'serve runs the sized pool');
        const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
        assert.deepEqual(args.slice(args.indexOf('--fuse-workers')), ['--fuse-workers', '5', ''], args.join(' '));
      } finally {
        await launcher.stop(served.process);
      }
    } finally {
      cleanup();
    }
  });
});
