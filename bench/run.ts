/**
 * `npm run bench`: flashcsi against nbdkit's file plugin and qemu-nbd (qcow2, with an internal
 * snapshot for the copy-on-write row), all driven by fio's nbd engine over unix sockets, in one
 * run on one machine. Writes docs/benchmarks.md with the table, the flashcsi/peer ratios, the
 * machine and every command line.
 *
 * Environment: BENCH_RUNTIME (seconds per timed job, default 10), BENCH_REGION (bytes, default
 * 1 GiB), BENCH_CUTS (checkpoint cuts per size, default 50), BENCH_OUT (default docs/benchmarks.md).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { ControlClient } from '../src/nbd/control.js';
import { pollUntil } from '../src/host/poll.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BIN = path.join(ROOT, 'dist/cmd/flashcsi.js');
const RUNTIME = Number(process.env.BENCH_RUNTIME ?? 10);
const REGION = Number(process.env.BENCH_REGION ?? 2 ** 30);
const CUTS = Number(process.env.BENCH_CUTS ?? 50);
const OUT = process.env.BENCH_OUT ?? path.join(ROOT, 'docs/benchmarks.md');
const GRAIN = 64 * 1024;

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'flashcsi-bench-'));
fs.chmodSync(work, 0o700);
const commands: string[] = [];

function sh(cmd: string, args: string[]): string {
  commands.push([cmd, ...args].join(' '));
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

interface Target {
  readonly label: string;
  readonly uri: string;
  stop(): Promise<void>;
}

async function waitForSocket(sock: string, proc: ChildProcess): Promise<void> {
  await pollUntil(() => fs.existsSync(sock), 30_000, `socket ${sock}`, {
    abortIf: () => (proc.exitCode === null ? undefined : `${String(proc.spawnfile)} exited with ${proc.exitCode}`),
  });
}

function stopper(proc: ChildProcess): () => Promise<void> {
  return async () => {
    if (proc.exitCode !== null) return;
    const exited = new Promise((r) => proc.on('exit', r));
    proc.kill('SIGTERM');
    await exited;
  };
}

async function nbdkitFile(name: string, size: number): Promise<Target> {
  const file = path.join(work, `${name}.img`);
  fs.rmSync(file, { force: true });
  sh('truncate', ['-s', String(size), file]);
  const sock = path.join(work, `${name}.sock`);
  const args = ['-f', '-U', sock, 'file', file];
  commands.push(['nbdkit', ...args].join(' '));
  const proc = spawn('nbdkit', args, { stdio: 'ignore' });
  await waitForSocket(sock, proc);
  return { label: 'nbdkit file', uri: `nbd+unix:///?socket=${sock}`, stop: stopper(proc) };
}

async function qemuNbd(name: string, size: number, snapshotAfterPrefill: boolean): Promise<Target> {
  const file = path.join(work, `${name}.qcow2`);
  fs.rmSync(file, { force: true });
  sh('qemu-img', ['create', '-q', '-f', 'qcow2', file, String(size)]);
  const sock = path.join(work, `${name}.sock`);
  const start = async (): Promise<ChildProcess> => {
    fs.rmSync(sock, { force: true });
    const args = ['-f', 'qcow2', '-t', '-k', sock, file];
    commands.push(['qemu-nbd', ...args].join(' '));
    const proc = spawn('qemu-nbd', args, { stdio: 'ignore' });
    await waitForSocket(sock, proc);
    return proc;
  };
  let proc = await start();
  const uri = `nbd+unix:///?socket=${sock}`;
  if (snapshotAfterPrefill) {
    prefill(uri, size);
    await stopper(proc)();
    sh('qemu-img', ['snapshot', '-c', 'snap1', file]);
    proc = await start();
  }
  return { label: snapshotAfterPrefill ? 'qemu-nbd qcow2+snapshot' : 'qemu-nbd qcow2', uri, stop: stopper(proc) };
}

async function flashcsi(name: string, size: number): Promise<Target & { control: string; dir: string }> {
  const dir = path.join(work, name);
  fs.rmSync(dir, { recursive: true, force: true });
  sh(process.execPath, [BIN, 'volume', 'create', dir, '--size', String(size)]);
  const sock = path.join(work, `${name}.sock`);
  const args = [BIN, 'serve', dir, '--socket', sock, '--log-level', 'warn'];
  commands.push(['flashcsi', ...args.slice(1)].join(' '));
  const proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    readline.createInterface({ input: proc.stdout as NodeJS.ReadableStream }).once('line', () => resolve());
    proc.once('exit', (code) => reject(new Error(`flashcsi serve exited ${code}`)));
  });
  return { label: 'flashcsi', uri: `nbd+unix:///?socket=${sock}`, control: `${sock}.ctl`, dir, stop: stopper(proc) };
}

interface FioResult {
  iops: number;
  mbps: number;
  p99us: number;
}

function fio(name: string, uri: string, args: string[]): FioResult {
  const out = sh('fio', [`--name=${name}`, '--ioengine=nbd', `--uri=${uri}`, '--group_reporting', '--randrepeat=0', '--norandommap', '--output-format=json', ...args]);
  const job = (JSON.parse(out.slice(out.indexOf('{'))) as { jobs: Array<Record<'read' | 'write', { iops: number; bw_bytes: number; clat_ns: { percentile?: Record<string, number> } }>> }).jobs[0];
  if (!job) throw new Error('fio printed no job');
  const side = job.write.iops > job.read.iops ? job.write : job.read;
  return { iops: side.iops, mbps: side.bw_bytes / 1e6, p99us: (side.clat_ns.percentile?.['99.000000'] ?? 0) / 1000 };
}

/** Fills the region, then writes back every dirty page so no target's timed jobs pay for an earlier one's writeback. */
function prefill(uri: string, size: number): void {
  fio('prefill', uri, ['--rw=write', '--bs=1M', '--iodepth=16', `--size=${size}`]);
  sh('sync', []);
}

interface Row {
  readonly name: string;
  readonly unit: 'IOPS' | 'MB/s';
  readonly args: string[];
}

const ROWS: Row[] = [
  { name: '4k random write, qd16', unit: 'IOPS', args: ['--rw=randwrite', '--bs=4k', '--iodepth=16'] },
  { name: '4k random write, qd32', unit: 'IOPS', args: ['--rw=randwrite', '--bs=4k', '--iodepth=32'] },
  { name: '4k random read, qd16', unit: 'IOPS', args: ['--rw=randread', '--bs=4k', '--iodepth=16'] },
  { name: '4k random read, qd32', unit: 'IOPS', args: ['--rw=randread', '--bs=4k', '--iodepth=32'] },
  { name: '1M sequential write, qd16', unit: 'MB/s', args: ['--rw=write', '--bs=1M', '--iodepth=16'] },
  { name: '1M sequential read, qd16', unit: 'MB/s', args: ['--rw=read', '--bs=1M', '--iodepth=16'] },
];

function timed(row: Row): string[] {
  return [...row.args, `--size=${REGION}`, '--time_based', `--runtime=${RUNTIME}`];
}

function value(r: FioResult, unit: Row['unit']): number {
  return unit === 'IOPS' ? r.iops : r.mbps;
}

function fmt(n: number): string {
  return n >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(1);
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN;
}

/** Cuts CUTS checkpoints while fio writes to the volume; returns each cut's latency in ms. */
async function cutLatencies(size: number): Promise<number[]> {
  const t = await flashcsi(`cut-${size}`, size);
  const load = spawn('fio', ['--name=load', '--ioengine=nbd', `--uri=${t.uri}`, '--rw=randwrite', '--bs=4k', '--iodepth=16', `--size=${Math.min(size, REGION)}`, '--time_based', '--runtime=3600', '--randrepeat=0', '--norandommap'], { stdio: 'ignore', detached: true });
  commands.push(`fio --name=load --ioengine=nbd --uri=${t.uri} --rw=randwrite --bs=4k --iodepth=16 --size=${Math.min(size, REGION)} --time_based --runtime=3600 (background load during the cuts)`);
  const client = new ControlClient(t.control);
  const latencies: number[] = [];
  try {
    await new Promise((r) => setTimeout(r, 1000)); // let the load reach steady state
    for (let i = 0; i < CUTS; i++) {
      const start = process.hrtime.bigint();
      await client.call({ op: 'checkpoint.create', name: `c${i}` });
      latencies.push(Number(process.hrtime.bigint() - start) / 1e6);
      await new Promise((r) => setTimeout(r, 20));
    }
  } finally {
    client.close();
    const exited = new Promise((r) => load.on('exit', r));
    process.kill(-(load.pid as number), 'SIGTERM'); // fio's forked job process too
    await exited;
    await t.stop();
  }
  return latencies.sort((a, b) => a - b);
}

async function main(): Promise<void> {
  const started = new Date();
  const results = new Map<string, Map<string, number>>();
  const put = (row: string, target: string, v: number): void => {
    if (!results.has(row)) results.set(row, new Map());
    results.get(row)?.set(target, v);
  };

  // No-checkpoint rows: each target pre-filled, then the timed jobs in the same order.
  for (const make of [() => flashcsi('plain', REGION), () => nbdkitFile('plain', REGION), () => qemuNbd('plain', REGION, false)]) {
    const target = await make();
    try {
      prefill(target.uri, REGION);
      for (const row of ROWS) {
        const r = fio(row.name.replace(/\W+/g, '-'), target.uri, timed(row));
        put(row.name, target.label, value(r, row.unit));
        process.stderr.write(`${target.label}: ${row.name}: ${fmt(value(r, row.unit))} ${row.unit}\n`);
      }
    } finally {
      await target.stop();
    }
  }

  // First write after a checkpoint: one 4k write into every 64 KiB grain of the region.
  const firstTouch = `first write after a checkpoint (4k into each 64K grain, qd16)`;
  const firstTouchArgs = ['--rw=write:60k', '--bs=4k', '--iodepth=16', `--size=${REGION}`, `--number_ios=${REGION / GRAIN}`];
  {
    const t = await flashcsi('cow', REGION);
    try {
      prefill(t.uri, REGION);
      const client = new ControlClient(t.control);
      await client.call({ op: 'checkpoint.create', name: 'snap1' });
      client.close();
      put(firstTouch, t.label, fio('first-touch', t.uri, firstTouchArgs).iops);
    } finally {
      await t.stop();
    }
    const q = await qemuNbd('cow', REGION, true);
    try {
      put(firstTouch, q.label, fio('first-touch', q.uri, firstTouchArgs).iops);
    } finally {
      await q.stop();
    }
  }

  // Checkpoint cut latency under write load, on a 1 GiB and a 1 TiB sparse volume.
  const cuts = new Map<string, number[]>();
  for (const [label, size] of [['1 GiB', 2 ** 30], ['1 TiB', 2 ** 40]] as const) cuts.set(label, await cutLatencies(size));

  writeReport(started, results, firstTouch, cuts);
  fs.rmSync(work, { recursive: true, force: true });
}

function machine(): string[] {
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  const version = (cmd: string, args: string[]): string => {
    try {
      return execFileSync(cmd, args, { encoding: 'utf8' }).split('\n')[0]?.trim() ?? '';
    } catch {
      return 'not found';
    }
  };
  return [
    `- ${os.cpus().length} × ${cpu}, ${Math.round(os.totalmem() / 2 ** 30)} GiB RAM, Linux ${os.release()}`,
    `- Node ${process.version}; ${version('fio', ['--version'])}; ${version('nbdkit', ['--version'])}; ${version('qemu-nbd', ['--version'])}`,
    `- work directory on: ${execFileSync('df', ['-T', work], { encoding: 'utf8' }).split('\n')[1]?.split(/\s+/).slice(0, 2).join(' ')}`,
  ];
}

function writeReport(started: Date, results: Map<string, Map<string, number>>, firstTouch: string, cuts: Map<string, number[]>): void {
  const lines: string[] = [];
  lines.push('# Benchmarks', '');
  lines.push(`Latest \`npm run bench\`, started ${started.toISOString()}; ${RUNTIME} s per timed job over a ${REGION / 2 ** 20} MiB region,`);
  lines.push('each target pre-filled by a 1M sequential write and a `sync` first. fio nbd engine, one connection, unix sockets,');
  lines.push('all targets in this one run on this one machine. Higher is better; ratio = flashcsi / peer.', '');
  lines.push('## Machine', '', ...machine(), '');
  lines.push('## Data path without checkpoints', '');
  lines.push('| workload | flashcsi | nbdkit file | ratio vs nbdkit | qemu-nbd qcow2 | ratio vs qemu-nbd | target |');
  lines.push('|---|---:|---:|---:|---:|---:|---|');
  for (const row of ROWS) {
    const r = results.get(row.name);
    const ours = r?.get('flashcsi') ?? NaN;
    const kit = r?.get('nbdkit file') ?? NaN;
    const qemu = r?.get('qemu-nbd qcow2') ?? NaN;
    const ratio = ours / kit;
    lines.push(`| ${row.name} (${row.unit}) | ${fmt(ours)} | ${fmt(kit)} | ${ratio.toFixed(2)}× | ${fmt(qemu)} | ${(ours / qemu).toFixed(2)}× | ≥ 0.9× nbdkit: ${ratio >= 0.9 ? 'met' : '**not met**'} |`);
  }
  lines.push('', '## First write after a checkpoint', '');
  const ft = results.get(firstTouch);
  const ours = ft?.get('flashcsi') ?? NaN;
  const qemu = ft?.get('qemu-nbd qcow2+snapshot') ?? NaN;
  lines.push('| workload | flashcsi | qemu-nbd qcow2+snapshot | ratio | target |', '|---|---:|---:|---:|---|');
  lines.push(`| ${firstTouch} (IOPS) | ${fmt(ours)} | ${fmt(qemu)} | ${(ours / qemu).toFixed(2)}× | ≥ 3×: ${ours / qemu >= 3 ? 'met' : '**not met**'} |`);
  lines.push('', '## Checkpoint cut latency under write load', '');
  lines.push(`${CUTS} cuts per volume through the control socket (client-observed round trip) while fio writes 4k randomly at qd16.`, '');
  lines.push('| volume | p50 | p90 | p99 | max | target p99 ≤ 10 ms |', '|---|---:|---:|---:|---:|---|');
  for (const [label, l] of cuts) {
    const p99 = percentile(l, 99);
    lines.push(`| ${label} sparse | ${percentile(l, 50).toFixed(2)} ms | ${percentile(l, 90).toFixed(2)} ms | ${p99.toFixed(2)} ms | ${(l.at(-1) ?? NaN).toFixed(2)} ms | ${p99 <= 10 ? 'met' : '**not met**'} |`);
  }
  lines.push('', '## Command lines', '', '```');
  lines.push(...[...new Set(commands.map((c) => c.replaceAll(work, '$WORK')))]);
  lines.push('```', '');
  fs.writeFileSync(OUT, `${lines.join('\n')}`);
  process.stderr.write(`wrote ${OUT}\n`);
}

await main();
