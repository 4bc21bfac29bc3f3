/**
 * Crash test through NBD: `flashcsi serve` is SIGKILLed while fio writes to it (with FLUSHes) and
 * qemu-io writes marker blocks followed by FLUSH. Each cycle first cuts a checkpoint while the
 * volume is quiet and records the hash of the live image at that moment. After each kill the
 * server is restarted (recovery runs) and:
 * - every checkpoint export still hashes to the image it was cut from;
 * - every marker whose write and FLUSH were acknowledged before the kill reads back intact.
 * Runs FLASHCSI_NBD_CRASH_KILLS kills (default 30).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { controlCall } from '../../src/nbd/control.js';
import { Volume } from '../../src/engine/index.js';
import { seededRandom, tempDir } from '../engine/helpers.js';

const run = promisify(execFile);
const BIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../cmd/flashcsi.js');
const MiB = 2 ** 20;
const SIZE = 32 * MiB;
const FIO_REGION = 24 * MiB; // fio writes below this; markers live above it
const MARKER = 64 * 1024;

async function startServe(dir: string, socket: string): Promise<{ child: ChildProcess; exited: Promise<void> }> {
  const child = spawn(process.execPath, [BIN, 'serve', dir, '--socket', socket, '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  const line = await Promise.race([
    new Promise<string>((resolve) => readline.createInterface({ input: child.stdout as NodeJS.ReadableStream }).once('line', resolve)),
    exited.then(() => {
      throw new Error('serve exited before it was ready');
    }),
  ]);
  assert.match(line, /"ready":true/);
  return { child, exited };
}

/** An export's whole image, read with nbdcopy. */
async function readExport(uri: string): Promise<Buffer> {
  const child = spawn('nbdcopy', [uri, '-'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const chunks: Buffer[] = [];
  child.stdout.on('data', (d: Buffer) => chunks.push(d));
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  assert.equal(code, 0, `nbdcopy ${uri}: ${stderr}`);
  return Buffer.concat(chunks);
}

const sha256 = (b: Buffer): string => crypto.createHash('sha256').update(b).digest('hex');
const hashExport = async (uri: string): Promise<string> => sha256(await readExport(uri));

test('SIGKILL serve under fio load: checkpoint exports exact, flushed data present', async () => {
  const kills = Number(process.env.FLASHCSI_NBD_CRASH_KILLS ?? 30);
  const seed = Number(process.env.FLASHCSI_SEED ?? Date.now() % 2 ** 31);
  console.log(`nbd crash test: seed ${seed} (FLASHCSI_SEED reproduces it)`);
  const rnd = seededRandom(seed);
  const t = tempDir('nbdcrash');
  const dir = path.join(t.dir, 'vol');
  const runDir = path.join(t.dir, 'run');
  fs.mkdirSync(runDir, { mode: 0o700 });
  const socket = path.join(runDir, 'v.sock');
  const uri = (name = ''): string => `nbd+unix:///${name}?socket=${socket}`;
  await (await Volume.create(dir, { size: SIZE })).close();
  const checkpoints = new Map<string, string>(); // name → sha256 of the image it was cut from
  const markers = new Map<number, number>(); // slot → pattern byte, for acknowledged write+FLUSH
  let markerWrites = 0;
  let fioRuns = 0;
  try {
    for (let kill = 1; kill <= kills; kill++) {
      const serve = await startServe(dir, socket);
      // Recovery finished: everything recorded so far must hold.
      for (const [name, hash] of checkpoints) assert.equal(await hashExport(uri(name)), hash, `kill ${kill - 1}: checkpoint ${name} changed`);
      const live = await readExport(uri());
      for (const [slot, byte] of markers) {
        const at = FIO_REGION + slot * MARKER;
        assert.ok(live.subarray(at, at + MARKER).equals(Buffer.alloc(MARKER, byte)), `kill ${kill - 1}: marker ${slot} (0x${byte.toString(16)}), flushed before the kill, is gone`);
      }
      // Quiet volume: cut a checkpoint and remember the image it must keep.
      const name = `k${kill}`;
      const liveHash = sha256(live);
      await controlCall(`${socket}.ctl`, { op: 'checkpoint.create', name });
      checkpoints.set(name, liveHash);
      if (checkpoints.size > 4) {
        const oldest = checkpoints.keys().next().value as string;
        await controlCall(`${socket}.ctl`, { op: 'checkpoint.delete', name: oldest });
        checkpoints.delete(oldest);
      }
      // Load: fio random writes with FLUSH every 16 writes, and markers written then flushed.
      // --thread: fio's job runs in this process, so killing it stops the job too (a forked job
      // would be orphaned by the SIGKILL below, blocked for ever on its dead parent).
      const fio = spawn('fio', ['--name=load', '--thread', '--ioengine=nbd', `--uri=${uri()}`, '--rw=randwrite', '--bs=4k', '--iodepth=16', `--size=${FIO_REGION}`, '--fsync=16', '--rate_iops=3000', '--time_based', '--runtime=30', '--randrepeat=0', '--norandommap'], { stdio: 'ignore', detached: true });
      // fio forks its job process: kill the whole process group, or the job outlives the test.
      const killFio = (): void => {
        try {
          process.kill(-(fio.pid as number), 'SIGKILL');
        } catch {
          // already gone
        }
      };
      const fioExited = new Promise((resolve) => fio.on('exit', resolve));
      fioRuns++;
      const stopMarkers = { stop: false };
      const markerLoop = (async () => {
        while (!stopMarkers.stop) {
          const slot = Math.floor(rnd() * (SIZE - FIO_REGION) / MARKER);
          const byte = 1 + Math.floor(rnd() * 254);
          markers.delete(slot); // being rewritten: its old content is no longer promised
          try {
            await run('qemu-io', ['-f', 'raw', uri(), '-c', `write -P ${byte} ${FIO_REGION + slot * MARKER} ${MARKER}`, '-c', 'flush']);
            markers.set(slot, byte);
            markerWrites++;
          } catch {
            return; // the server died mid-write: this marker was never acknowledged
          }
        }
      })();
      const killAfter = 100 + rnd() * 500;
      await new Promise((resolve) => setTimeout(resolve, killAfter)); // the kill moment itself is the random variable
      serve.child.kill('SIGKILL');
      await serve.exited;
      stopMarkers.stop = true;
      await markerLoop;
      killFio();
      await fioExited;
    }
    const serve = await startServe(dir, socket);
    for (const [name, hash] of checkpoints) assert.equal(await hashExport(uri(name)), hash, `final: checkpoint ${name} changed`);
    serve.child.kill('SIGTERM');
    await serve.exited;
  } finally {
    t.cleanup();
  }
  console.log(`nbd crash test: ${kills} SIGKILLs of serve under fio load (${fioRuns} fio runs), ${markerWrites} flushed markers, 0 violations`);
  assert.ok(markerWrites >= kills, `too few markers were acknowledged (${markerWrites})`);
});
