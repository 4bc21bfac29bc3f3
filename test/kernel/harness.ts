/**
 * Host side of the kernel nbd tests: a volume served by a real `flashcsi serve` process on a unix
 * socket and on 127.0.0.1:PORT (the guest reaches it at 10.0.2.2:PORT), a booted guest with the
 * workload scripts in its /work, and the checks every test shares (the guest's kernel log for I/O
 * errors, the project's attach/keep/detach run in the guest).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fsp, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as readline from 'node:readline';

import { after, before } from 'node:test';

import { Volume } from '../../src/engine/index.js';
import { pollUntil } from '../../src/host/poll.js';
import { shellQuote } from '../../src/host/exec.js';
import { Guest, REPO } from './guest.js';

export const MiB = 1024 * 1024;
const CLI = path.join(REPO, 'dist', 'cmd', 'flashcsi.js');
/** Where the guest finds the host's loopback. */
const HOST_FROM_GUEST = '10.0.2.2';

/** Kernel log lines that mean the guest saw a failed I/O or a damaged file system. */
const IO_ERROR = [
  /I\/O error|Buffer I\/O|EXT4-fs error|Remounting filesystem read-only|Aborting journal|JBD2: .*error/,
  /XFS \(nbd\d+\):.*(error|shut ?down|corrupt)/i,
  /block nbd\d+: Connection timed out$/, // the fatal variant; "…, retrying (n/m alive)" is a requeue
];

/** The guest console's lines that report I/O errors (see IO_ERROR). */
export function ioErrorLines(console: string): string[] {
  return console.split('\n').filter((l) => IO_ERROR.some((re) => re.test(l.trim())));
}

/**
 * The guest console's lines where the kernel timed out a request, dropped that connection and sent
 * the request again (on another connection, or on the next one the keeper hands over). The
 * application sees only the delay; a loaded TCG guest on a busy host meets it.
 */
export function requeueLines(console: string): string[] {
  return console.split('\n').filter((l) => /block nbd\d+: Connection timed out, retrying/.test(l));
}

export interface ServedVolume {
  readonly dir: string;
  readonly socket: string;
  readonly control: string;
  port: number;
  /** The running serve process. */
  child: ChildProcess;
  /** SIGKILLs serve and waits for it to be gone. */
  kill(): Promise<void>;
  /** Starts serve again on the same socket and port. */
  restart(): Promise<void>;
  /** An nbd+unix URI of an export (the live volume is ""). */
  uri(exportName?: string): string;
  stop(): Promise<void>;
}

async function spawnServe(dir: string, socket: string, port: number, logFile: string): Promise<{ child: ChildProcess; port: number }> {
  const log = await fsp.open(logFile, 'a');
  const child = spawn(process.execPath, [CLI, 'serve', dir, '--socket', socket, '--listen', `127.0.0.1:${port}`, '--log-level', 'info'], {
    stdio: ['ignore', 'pipe', log.fd],
  });
  await log.close();
  const line = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('flashcsi serve did not become ready within 60 s')), 60_000);
    readline.createInterface({ input: child.stdout as NodeJS.ReadableStream }).once('line', (l) => {
      clearTimeout(timer);
      resolve(l);
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`flashcsi serve exited (${code ?? signal}) before it was ready: ${readFileSync(logFile, 'utf8').slice(-2000)}`));
    });
  });
  const ready = JSON.parse(line) as { listen?: string };
  return { child, port: Number(ready.listen?.split(':').at(-1)) };
}

/** Creates a volume and serves it (TCP port chosen by the kernel, then kept across restarts). */
export async function serveVolume(root: string, size: number): Promise<ServedVolume> {
  const dir = path.join(root, 'vol');
  const runDir = path.join(root, 'run');
  await fsp.mkdir(runDir, { recursive: true, mode: 0o700 });
  await (await Volume.create(dir, { size })).close();
  const socket = path.join(runDir, 'v.sock');
  const logFile = path.join(root, 'serve.log');
  const first = await spawnServe(dir, socket, 0, logFile);
  const served: ServedVolume = {
    dir,
    socket,
    control: `${socket}.ctl`,
    port: first.port,
    child: first.child,
    async kill() {
      const gone = new Promise<void>((resolve) => served.child.once('exit', () => resolve()));
      if (served.child.exitCode === null && served.child.signalCode === null) served.child.kill('SIGKILL');
      else return;
      await gone;
    },
    async restart() {
      served.child = (await spawnServe(dir, socket, served.port, logFile)).child;
    },
    uri: (name = '') => `nbd+unix:///${encodeURIComponent(name)}?socket=${socket}`,
    async stop() {
      if (served.child.exitCode !== null || served.child.signalCode !== null) return;
      const gone = new Promise<void>((resolve) => served.child.once('exit', () => resolve()));
      served.child.kill('SIGTERM');
      await gone;
    },
  };
  return served;
}

/** A fresh host directory for one test run. */
export function tempRoot(prefix: string): Promise<string> {
  return fsp.mkdtemp(path.join(os.tmpdir(), prefix));
}

export interface KernelTestEnv {
  readonly root: string;
  readonly served: ServedVolume;
  readonly guest: Guest;
}

/**
 * Registers the suite's before/after hooks: a served volume of `size` bytes and a booted guest,
 * torn down afterwards. The returned object is filled in once `before` ran.
 */
export function useServedVolumeAndGuest(prefix: string, size: number): KernelTestEnv {
  const env = {} as { root: string; served: ServedVolume; guest: Guest };
  before(async () => {
    env.root = await tempRoot(prefix);
    env.served = await serveVolume(env.root, size);
    env.guest = await bootGuest(path.join(env.root, 'work'));
    console.log(`guest: kernel ${env.guest.kernelRelease}, booted in ${(env.guest.bootMs / 1000).toFixed(1)} s (TCG)`);
  });
  after(async () => {
    await env.guest?.close();
    await env.served?.stop();
    if (env.root === undefined) return;
    if (process.env.FLASHCSI_KEEP_TEST_DIRS !== undefined) console.log(`kept ${env.root} (FLASHCSI_KEEP_TEST_DIRS)`);
    else await fsp.rm(env.root, { recursive: true, force: true });
  });
  return env;
}

/** Boots a guest whose /work holds the workload scripts and the chroot helper. */
export async function bootGuest(workDir: string): Promise<Guest> {
  const guest = await Guest.boot({ workDir });
  try {
    await guest.prepareNode();
    await guest.startWatchdog();
    for (const s of ['writer.sh', 'verify.sh']) await fsp.copyFile(path.join(REPO, 'test', 'kernel', 'scripts', s), path.join(workDir, s));
  } catch (err) {
    await guest.close();
    throw err;
  }
  return guest;
}

export interface GuestDevice {
  readonly device: string;
  readonly index: number;
  readonly identifier: string;
  readonly connections: number;
}

export interface AttachParams {
  readonly connections: number;
  readonly ioTimeoutSeconds: number;
  readonly deadConnTimeoutSeconds: number;
  readonly identifier?: string;
}

/** Attaches the served volume in the guest with the project's kernel path (src/host/kernel-nbd.ts). */
export async function attachInGuest(guest: Guest, served: ServedVolume, p: AttachParams): Promise<GuestDevice> {
  const out = await guest.sh(
    `${guest.node('test/kernel/guest-nbd.js', [
      'attach',
      `${HOST_FROM_GUEST}:${served.port}`,
      p.identifier ?? 'flashcsi:kernel-test',
      String(p.connections),
      String(p.ioTimeoutSeconds),
      String(p.deadConnTimeoutSeconds),
    ])} 2>&1`,
  );
  const dev = JSON.parse(out.trim().split('\n').at(-1) ?? '') as GuestDevice;
  assert.match(dev.device, /^\/dev\/nbd\d+$/);
  return dev;
}

/**
 * After a failed test: unmounts whatever is mounted under /mnt and detaches the device, so the next
 * test does not find the volume still attached (best effort; the original failure is what counts).
 */
export async function cleanUpAfterFailure(guest: Guest, dev: GuestDevice | undefined): Promise<void> {
  await guest.exec('for f in /work/*.pid; do kill $(cat $f) 2>/dev/null; done').catch(() => undefined); // writers, keepers
  await guest.exec(`grep -o ' /mnt/[^ ]*' /proc/mounts | while read m; do umount $m; done`).catch(() => undefined);
  if (dev !== undefined) await guest.exec(`${guest.node('test/kernel/guest-nbd.js', ['detach', dev.device])} 2>&1`).catch(() => undefined);
}

export async function detachInGuest(guest: Guest, dev: GuestDevice): Promise<void> {
  await guest.sh(`${guest.node('test/kernel/guest-nbd.js', ['detach', dev.device])} 2>&1`);
  assert.equal((await guest.sh(`cat /sys/block/nbd${dev.index}/size`)).trim(), '0');
}

/** Starts the project's KernelDeviceKeeper in the guest, logging to /work/<log>; resolves once it watches. */
export async function startKeeper(guest: Guest, served: ServedVolume, dev: GuestDevice, log: string): Promise<void> {
  const cmd = guest.node('test/kernel/guest-nbd.js', ['keep', dev.device, `${HOST_FROM_GUEST}:${served.port}`, dev.identifier, String(dev.connections)]);
  await guest.sh(`setsid ${cmd} >/work/${log} 2>&1 </dev/null & echo $! >/work/${log}.pid`);
  await waitForFile(path.join(guest.opts.workDir, log), (t) => t.includes('keeper: watching'), 120_000, 'the keeper to start in the guest');
}

export async function stopKeeper(guest: Guest, log: string): Promise<number> {
  await guest.sh(`kill $(cat /work/${log}.pid)`);
  const text = await waitForFile(path.join(guest.opts.workDir, log), (t) => t.includes('keeper: stopped'), 60_000, 'the keeper to stop');
  const stopped = text.split('\n').find((l) => l.includes('keeper: stopped')) ?? '{}';
  return (JSON.parse(stopped) as { reconnects?: number }).reconnects ?? 0;
}

/** Polls a host file (a guest log on the 9p share) until `cond` holds; resolves its text. */
export async function waitForFile(file: string, cond: (text: string) => boolean, timeoutMs: number, what: string): Promise<string> {
  let text = '';
  return pollUntil(
    async () => {
      text = await fsp.readFile(file, 'utf8').catch(() => '');
      return cond(text) ? text : undefined;
    },
    timeoutMs,
    what,
    { intervalMs: 50, detail: () => `${file}: ${text.slice(-500)}` },
  );
}

/** Lines of a "<n> <sha256>" log written by writer.sh. */
export function loggedFiles(text: string): Map<number, string> {
  const out = new Map<number, string>();
  for (const line of text.split('\n')) {
    const [n, sum] = line.split(' ');
    if (n !== undefined && sum !== undefined && /^[0-9a-f]{64}$/.test(sum)) out.set(Number(n), sum);
  }
  return out;
}

/** A guest shell command that starts writer.sh in the background. */
export function startWriterCommand(dir: string, log: string, stop: string): string {
  return `rm -f ${shellQuote(stop)}; setsid sh /work/writer.sh ${shellQuote(dir)} ${shellQuote(log)} ${shellQuote(stop)} >${shellQuote(`${log}.out`)} 2>&1 </dev/null & echo $! >${shellQuote(`${log}.pid`)}`;
}

/** Stops a writer started with startWriterCommand and resolves its summary line and failures. */
export async function stopWriter(guest: Guest, log: string, stop: string): Promise<{ summary: string; failures: string }> {
  await guest.sh(`touch ${shellQuote(stop)}`);
  const hostLog = (p: string): string => path.join(guest.opts.workDir, path.relative('/work', p));
  const summary = await waitForFile(hostLog(`${log}.out`), (t) => t.includes('writer:'), 300_000, 'the guest writer to stop');
  return { summary: summary.trim(), failures: await fsp.readFile(hostLog(`${log}.failures`), 'utf8') };
}

/** Runs a host command; resolves stdout, rejects with stderr on a non-zero exit. */
export function host(cmd: string, args: readonly string[], timeoutMs = 300_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`${cmd} ${args.join(' ')} exited ${code ?? signal}: ${err.trim()}`));
    });
  });
}

/** Bytes the export reports as data (not hole) in its base:allocation map (nbdinfo --map). */
export async function allocatedBytes(uri: string): Promise<number> {
  const map = JSON.parse(await host('nbdinfo', ['--map', '--json', uri])) as { length: number; type: number }[];
  return map.filter((e) => (e.type & 1) === 0).reduce((sum, e) => sum + e.length, 0);
}
