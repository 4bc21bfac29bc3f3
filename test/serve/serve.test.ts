/**
 * `flashcsi serve` as a real process with real NBD clients: the volume and its checkpoints as
 * exports, checkpoint commands from other processes carried out by the server, a checkpoint read
 * back exactly through its export while the volume is being written, freeze sessions for group
 * cuts, refusal of rollback and of a second server, socket modes, and a clean SIGTERM stop.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { ControlClient, controlCall, readServeInfo } from '../../src/nbd/control.js';
import { inspectVolume } from '../../src/engine/index.js';
import { tempDir } from '../engine/helpers.js';

const run = promisify(execFile);
const BIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../cmd/flashcsi.js');

function cli(...args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

interface Served {
  child: ChildProcess;
  socket: string;
  uri: (name?: string) => string;
  exited: Promise<number | null>;
  stderr: () => string;
}

/** Starts `flashcsi serve` and waits for its readiness line. */
async function serve(dir: string, socket: string): Promise<Served> {
  const child = spawn(process.execPath, [BIN, 'serve', dir, '--socket', socket], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const lines = readline.createInterface({ input: child.stdout as NodeJS.ReadableStream });
  const ready = await Promise.race([
    new Promise<string>((resolve) => lines.once('line', resolve)),
    exited.then((code) => {
      throw new Error(`serve exited (${code}) before ready: ${stderr}`);
    }),
  ]);
  assert.equal((JSON.parse(ready) as { ready: boolean }).ready, true);
  return { child, socket, uri: (name = '') => `nbd+unix:///${name}?socket=${socket}`, exited, stderr: () => stderr };
}

async function stop(s: Served): Promise<number | null> {
  s.child.kill('SIGTERM');
  return s.exited;
}

describe('flashcsi serve', () => {
  test('serves the volume and its checkpoints; CLI checkpoint commands go through the server', async () => {
    const t = tempDir('serve');
    const dir = path.join(t.dir, 'vol');
    const runDir = path.join(t.dir, 'run');
    fs.mkdirSync(runDir, { mode: 0o700 });
    assert.equal(cli('volume', 'create', dir, '--size', '256M').code, 0);
    const s = await serve(dir, path.join(runDir, 'vol.sock'));
    try {
      assert.equal(fs.statSync(s.socket).mode & 0o777, 0o600, 'NBD socket is 0600');
      assert.equal(fs.statSync(`${s.socket}.ctl`).mode & 0o777, 0o600, 'control socket is 0600');
      assert.equal(readServeInfo(dir)?.pid, s.child.pid);
      await run('qemu-io', ['-f', 'raw', s.uri(), '-c', 'write -P 0xab 0 4M', '-c', 'write -P 0x11 100M 1M']);
      const created = cli('checkpoint', 'create', dir, 'snap1');
      assert.equal(created.code, 0, created.stderr);
      // The checkpoint reads back exactly through its export, while the volume keeps being written.
      const writer = run('fio', ['--name=w', '--ioengine=nbd', `--uri=${s.uri()}`, '--rw=randwrite', '--bs=4k', '--iodepth=16', '--size=8M', '--io_size=64M', '--randrepeat=0', '--norandommap']);
      await run('qemu-io', ['-f', 'raw', '-r', s.uri('snap1'), '-c', 'read -P 0xab 0 4M', '-c', 'read -P 0x11 100M 1M', '-c', 'read -P 0 200M 1M']);
      await writer;
      await run('qemu-io', ['-f', 'raw', '-r', s.uri('snap1'), '-c', 'read -P 0xab 0 4M']);
      const writeToCheckpoint = await run('qemu-io', ['-f', 'raw', s.uri('snap1'), '-c', 'write -P 1 0 4k']).then(
        () => 'accepted',
        (err: { stderr?: string; stdout?: string }) => `${err.stdout ?? ''}${err.stderr ?? ''}`,
      );
      assert.match(writeToCheckpoint, /read-only|Operation not permitted|Permission denied/i, 'a checkpoint export refuses writes');
      const list = JSON.parse(cli('checkpoint', 'list', dir, '--json').stdout) as { checkpoints: Array<{ name: string }> };
      assert.deepEqual(list.checkpoints.map((c) => c.name), ['snap1']);
      const info = cli('volume', 'info', dir);
      assert.match(info.stdout, /checkpoints:\s+1/);
      const rb = cli('rollback', dir, 'snap1');
      assert.notEqual(rb.code, 0);
      assert.match(rb.stderr, /mounted file system must not change under its user/);
      const second = spawnSync(process.execPath, [BIN, 'serve', dir, '--socket', path.join(runDir, 'other.sock')], { encoding: 'utf8' });
      assert.notEqual(second.status, 0);
      assert.match(second.stderr, /in use by another process/);
      assert.equal(cli('checkpoint', 'delete', dir, 'snap1').code, 0);
      const unknown = await run('nbdinfo', [s.uri('snap1')]).then(() => 'found', (err: { stderr?: string }) => err.stderr ?? '');
      assert.match(unknown, /unknown|not found|export/i, 'a deleted checkpoint is no longer exported');
    } finally {
      const code = await stop(s);
      assert.equal(code, 0, `serve exits 0 on SIGTERM: ${s.stderr()}`);
      assert.equal(readServeInfo(dir), null, 'serve.json removed');
      assert.equal(fs.existsSync(s.socket), false, 'socket removed');
      t.cleanup();
    }
  });

  test('freeze sessions cut two served volumes at one instant; a vanished client thaws', async () => {
    const t = tempDir('freeze-serve');
    const runDir = path.join(t.dir, 'run');
    fs.mkdirSync(runDir, { mode: 0o700 });
    const dirs = ['a', 'b'].map((n) => path.join(t.dir, n));
    for (const d of dirs) assert.equal(cli('volume', 'create', d, '--size', '64M').code, 0);
    const servers = await Promise.all(dirs.map((d, i) => serve(d, path.join(runDir, `${i}.sock`))));
    try {
      const clients = servers.map((s) => new ControlClient(`${s.socket}.ctl`));
      for (const c of clients) await c.call({ op: 'freeze' });
      // While frozen, a write through NBD waits; the cut under the freeze goes ahead.
      const write = run('qemu-io', ['-f', 'raw', servers[0]?.uri() ?? '', '-c', 'write -P 7 0 4k']);
      for (const c of clients) await c.call({ op: 'frozen.checkpoint', name: 'g1' });
      for (const c of clients) await c.call({ op: 'thaw' });
      await write;
      for (const d of dirs) assert.deepEqual((await inspectVolume(d)).checkpoints.map((c) => c.name), ['g1']);
      await run('qemu-io', ['-f', 'raw', '-r', servers[0]?.uri('g1') ?? '', '-c', 'read -P 0 0 4k']);
      // A client that freezes and disappears does not leave the volume frozen.
      const gone = new ControlClient(`${servers[1]?.socket}.ctl`);
      await gone.call({ op: 'freeze' });
      gone.close();
      await run('qemu-io', ['-f', 'raw', servers[1]?.uri() ?? '', '-c', 'write -P 9 0 4k']);
      await assert.rejects(controlCall(`${servers[1]?.socket}.ctl`, { op: 'frozen.checkpoint', name: 'x' }), /not frozen/);
      await assert.rejects(controlCall(`${servers[1]?.socket}.ctl`, { op: 'bogus' } as never), /unknown op/);
      for (const c of clients) c.close();
    } finally {
      for (const s of servers) assert.equal(await stop(s), 0);
      t.cleanup();
    }
  });
});
