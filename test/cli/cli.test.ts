/**
 * The flashcsi CLI, run as a real process: every volume and checkpoint command, and its error
 * paths (missing volume, unknown checkpoint, bad size, locked volume), which must print one clear
 * line on stderr and exit with the status cmd/errors.ts gives the error's code.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Volume } from '../../src/engine/index.js';
import { tempDir } from '../engine/helpers.js';

const BIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../cmd/flashcsi.js');

function flashcsi(...args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

function ok(...args: string[]): string {
  const r = flashcsi(...args);
  assert.equal(r.code, 0, `flashcsi ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

/** sysexits.h statuses the CLI uses (cmd/errors.ts). */
const EX_USAGE = 64;
const EX_DATAERR = 65;
const EX_NOINPUT = 66;
const EX_CANTCREAT = 73;
const EX_TEMPFAIL = 75;

function fails(pattern: RegExp, status: number, ...args: string[]): void {
  const r = flashcsi(...args);
  assert.equal(r.code, status, `flashcsi ${args.join(' ')} should fail with exit status ${status}: ${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line on stderr, got: ${r.stderr}`);
  assert.match(lines[0] as string, pattern);
}

const sha = (b: Buffer): string => crypto.createHash('sha256').update(b).digest('hex');

describe('flashcsi CLI', () => {
  test('create, write, checkpoint, export, rollback, delete round trip', () => {
    const t = tempDir('cli');
    try {
      const vol = path.join(t.dir, 'vol');
      assert.match(ok('volume', 'create', vol, '--size', '64M', '--grain', '16K'), /64 MiB, grain 16 KiB/);
      const first = crypto.randomBytes(3_000_000);
      fs.writeFileSync(path.join(t.dir, 'first'), first);
      assert.match(ok('volume', 'write', vol, path.join(t.dir, 'first'), '--offset', '1M'), /wrote 3000000 bytes at offset 1048576/);
      assert.match(ok('checkpoint', 'create', vol, 'snap1'), /snap1 created/);
      fs.writeFileSync(path.join(t.dir, 'second'), crypto.randomBytes(1_500_000));
      ok('volume', 'write', vol, path.join(t.dir, 'second'), '--offset', '2M');
      const list = JSON.parse(ok('checkpoint', 'list', vol, '--json')) as { checkpoints: Array<{ name: string; size: number }> };
      assert.deepEqual(list.checkpoints.map((c) => [c.name, c.size]), [['snap1', 64 * 2 ** 20]]);
      assert.match(ok('checkpoint', 'list', vol), /^NAME\s+SIZE\s+CREATED\s+COPIED\nsnap1\s+64 MiB/);
      const info = JSON.parse(ok('volume', 'info', vol, '--json')) as { size: number; grainSize: number; checkpoints: unknown[] };
      assert.equal(info.size, 64 * 2 ** 20);
      assert.equal(info.grainSize, 16 * 1024);
      assert.match(ok('volume', 'info', vol), /size:\s+64 MiB \(67108864 bytes\)/);

      const out = path.join(t.dir, 'snap1.raw');
      ok('checkpoint', 'export', vol, 'snap1', out);
      const image = fs.readFileSync(out);
      assert.equal(image.length, 64 * 2 ** 20);
      assert.equal(sha(image.subarray(2 ** 20, 2 ** 20 + first.length)), sha(first));
      assert.ok(fs.statSync(out).blocks * 512 < 8 * 2 ** 20, 'the export is sparse');

      assert.match(ok('rollback', vol, 'snap1'), /rolled back to snap1: [\d.]+ MiB restored/);
      const live = path.join(t.dir, 'live.raw');
      ok('volume', 'export', vol, live);
      assert.equal(sha(fs.readFileSync(live)), sha(image));
      assert.match(ok('checkpoint', 'delete', vol, 'snap1'), /deleted/);
      assert.match(ok('checkpoint', 'list', vol), /^NAME\s+SIZE\s+CREATED\s+COPIED\n$/);
    } finally {
      t.cleanup();
    }
  });

  test('error paths: one line on stderr and a non-zero exit', async () => {
    const t = tempDir('cli-err');
    try {
      const vol = path.join(t.dir, 'vol');
      fails(/size "10Q" is not a size/, EX_USAGE, 'volume', 'create', vol, '--size', '10Q');
      fails(/grain size 3072 must be a power of two/, EX_DATAERR, 'volume', 'create', vol, '--size', '1G', '--grain', '3K');
      fails(/volume size 1000 must be a positive multiple of 512/, EX_DATAERR, 'volume', 'create', vol, '--size', '1000');
      fails(/holds no flashcsi volume/, EX_NOINPUT, 'volume', 'info', path.join(t.dir, 'missing'));
      fails(/holds no flashcsi volume/, EX_NOINPUT, 'checkpoint', 'list', path.join(t.dir, 'missing'));
      ok('volume', 'create', vol, '--size', '1M');
      fails(/already exists/, EX_CANTCREAT, 'volume', 'create', vol, '--size', '1M');
      fails(/no checkpoint nope/, EX_NOINPUT, 'checkpoint', 'delete', vol, 'nope');
      fails(/no checkpoint nope/, EX_NOINPUT, 'rollback', vol, 'nope');
      fails(/no checkpoint nope/, EX_NOINPUT, 'checkpoint', 'export', vol, 'nope', path.join(t.dir, 'x'));
      fails(/checkpoint name "bad\/name" must be/, EX_DATAERR, 'checkpoint', 'create', vol, 'bad/name');
      fs.writeFileSync(path.join(t.dir, 'big'), Buffer.alloc(2 * 2 ** 20));
      fails(/does not fit .* nothing was written/, EX_DATAERR, 'volume', 'write', vol, path.join(t.dir, 'big'));
      fails(/required option '--size <size>' not specified/, 1, 'volume', 'create', path.join(t.dir, 'v2'));
      fails(/unknown command 'frobnicate'/, 1, 'frobnicate');
      // Another process holds the volume: a clear refusal, and the volume is untouched.
      const holder = await Volume.open(vol);
      try {
        fails(/volume .* is in use by another process/, EX_TEMPFAIL, 'volume', 'write', vol, path.join(t.dir, 'big'));
        fails(/in use by another process/, EX_TEMPFAIL, 'checkpoint', 'create', vol, 'x');
        fails(/in use by another process/, EX_TEMPFAIL, 'rollback', vol, 'x');
        assert.equal(holder.checkpoints().length, 0);
      } finally {
        await holder.close();
      }
      assert.match(ok('volume', 'create', '--help'), /--grain <size>/);
      assert.match(ok('checkpoint', '--help'), /export/);
    } finally {
      t.cleanup();
    }
  });

  test('--fuse-workers of serve and plugin: an integer from 1 to 64, refused otherwise before anything starts', () => {
    const t = tempDir('cli-workers');
    try {
      const vol = path.join(t.dir, 'vol');
      ok('volume', 'create', vol, '--size', '1M');
      const serve = ['serve', vol, '--socket', path.join(t.dir, 'run', 'nbd.sock')];
      const plugin = ['plugin', '--state-dir', path.join(t.dir, 'state'), '--endpoint', `unix://${path.join(t.dir, 'csi.sock')}`];
      for (const bad of ['0', '65', '-1', '2.5', 'three', '0x10', '']) {
        const message = `flashcsi: error: --fuse-workers must be an integer from 1 to 64, got ${JSON.stringify(bad)}`;
        const want = new RegExp(`^${message.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`);
        fails(want, EX_USAGE, ...serve, '--fuse-workers', bad);
        fails(want, EX_USAGE, ...plugin, '--fuse-workers', bad);
      }
      // Refused before the volume was opened or the plugin set up its state directory.
      assert.equal(fs.existsSync(path.join(t.dir, 'run')), false);
      assert.equal(fs.existsSync(path.join(t.dir, 'state')), false);
      assert.match(ok('serve', '--help'), /--fuse-workers <n>[^]*\(default: "3"\)/);
      assert.match(ok('plugin', '--help'), /--fuse-workers <n>[^]*\(default: "3"\)/);
    } finally {
      t.cleanup();
    }
  });
});
