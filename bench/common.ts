/**
 * What every part of `npm run bench` shares: the work directory, the log of every command line
 * (the report prints them all), fio's JSON, formatting, process start and stop, and the machine's
 * description.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { pollUntil } from '../src/host/poll.js';
import { serveEnvironment } from '../src/host/serve-process.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = path.join(ROOT, 'dist/cmd/flashcsi.js');
export const RUNTIME = Number(process.env.BENCH_RUNTIME ?? 10);

/** The bench's private directory (0711: PostgreSQL, run as its own user, must reach the mounts below it). */
export const work = fs.mkdtempSync(path.join(os.tmpdir(), 'flashcsi-bench-'));
fs.chmodSync(work, 0o711);

const commands: string[] = [];

/** Records a command line for the report (with the work directory shown as $WORK). */
export function note(line: string): void {
  commands.push(line);
}

/** Every recorded command line, once each, in first-use order. */
export function commandLines(): string[] {
  return [...new Set(commands.map((c) => c.replaceAll(work, '$WORK')))];
}

/** Runs a command to completion, recorded; returns its stdout. */
export function sh(cmd: string, args: string[], opts: { quiet?: boolean } = {}): string {
  if (opts.quiet !== true) note([cmd, ...args].join(' '));
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 << 20 });
}

/** Like sh, but failures are ignored (teardown of something that may already be gone). */
export function shQuiet(cmd: string, args: string[]): void {
  try {
    execFileSync(cmd, args, { stdio: 'ignore', timeout: 60_000 });
  } catch {
    // best effort
  }
}

export interface FioResult {
  /** I/Os completed in the busier direction. */
  ios: number;
  iops: number;
  mbps: number;
  p99us: number;
}

/** Runs fio with JSON output and returns the busier direction of its one job. */
export function fio(args: string[]): FioResult {
  const out = sh('fio', [...args, '--group_reporting', '--output-format=json']);
  const job = (JSON.parse(out.slice(out.indexOf('{'))) as { jobs: Array<Record<'read' | 'write', { total_ios: number; iops: number; bw_bytes: number; clat_ns: { percentile?: Record<string, number> } }>> }).jobs[0];
  if (!job) throw new Error('fio printed no job');
  const side = job.write.iops > job.read.iops ? job.write : job.read;
  return { ios: side.total_ios, iops: side.iops, mbps: side.bw_bytes / 1e6, p99us: (side.clat_ns.percentile?.['99.000000'] ?? 0) / 1000 };
}

export function fmt(n: number): string {
  if (!Number.isFinite(n)) return '—';
  return n >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(1);
}

export function ratio(a: number, b: number): string {
  return Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(2)}` : '—';
}

export function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export async function waitForSocket(sock: string, proc: ChildProcess): Promise<void> {
  await pollUntil(() => fs.existsSync(sock), 30_000, `socket ${sock}`, {
    abortIf: () => (proc.exitCode === null ? undefined : `${String(proc.spawnfile)} exited with ${proc.exitCode}`),
  });
}

/** SIGTERM and wait for the exit. */
export function stopper(proc: ChildProcess): () => Promise<void> {
  return async () => {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.on('exit', r));
    proc.kill('SIGTERM');
    await exited;
  };
}

/** `flashcsi serve` on a new volume of `size` bytes; resolves once it printed its readiness line. */
export async function startServe(name: string, size: number): Promise<{ uri: string; control: string; dir: string; stop: () => Promise<void> }> {
  const dir = path.join(work, name);
  fs.rmSync(dir, { recursive: true, force: true });
  sh(process.execPath, [BIN, 'volume', 'create', dir, '--size', String(size)]);
  const sock = path.join(work, `${name}.sock`);
  const args = [BIN, 'serve', dir, '--socket', sock, '--log-level', 'warn'];
  note(['flashcsi', ...args.slice(1)].join(' '));
  // As the CSI plugin starts it (thread pool sized in its environment).
  const proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'], env: serveEnvironment() });
  await new Promise<void>((resolve, reject) => {
    readline.createInterface({ input: proc.stdout as NodeJS.ReadableStream }).once('line', () => resolve());
    proc.once('exit', (code) => reject(new Error(`flashcsi serve exited ${code}`)));
  });
  return { uri: `nbd+unix:///?socket=${sock}`, control: `${sock}.ctl`, dir, stop: stopper(proc) };
}

let highestLoad = 0;

/** The 1-minute load average, for the report: figures taken under load are not comparable. */
export function load(): string {
  const now = os.loadavg()[0] ?? NaN;
  highestLoad = Math.max(highestLoad, now);
  return now.toFixed(2);
}

/** The highest load average any part of this run started at. */
export function peakLoad(): number {
  return highestLoad;
}

export function machine(): string[] {
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  const version = (cmd: string, args: string[]): string => {
    const r = spawnSync(cmd, args, { encoding: 'utf8' });
    if (r.error !== undefined) return `${cmd}: not found`;
    return (r.stdout.trim() || r.stderr.trim()).split('\n')[0]?.trim() ?? '';
  };
  return [
    `- ${os.cpus().length} × ${cpu}, ${Math.round(os.totalmem() / 2 ** 30)} GiB RAM, Linux ${os.release()}`,
    `- Node ${process.version}; ${version('fio', ['--version'])}; ${version('nbdkit', ['--version'])}; ${version('qemu-nbd', ['--version'])}`,
    `- ${version('nbdfuse', ['--version'])}; ${version('losetup', ['--version'])}; ${version('mkfs.ext4', ['-V'])}; PostgreSQL ${version('pgbench', ['--version'])}`,
    `- work directory on: ${execFileSync('df', ['-T', work], { encoding: 'utf8' }).split('\n')[1]?.split(/\s+/).slice(0, 2).join(' ')}`,
  ];
}
