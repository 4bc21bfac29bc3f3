/**
 * The NBD-level view: flashcsi against nbdkit's file plugin and qemu-nbd (qcow2, with an internal
 * snapshot for the copy-on-write row), all driven by fio's nbd engine over unix sockets, one
 * connection; plus checkpoint cut latency under write load.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ControlClient } from '../src/nbd/control.js';
import { RUNTIME, fio, fmt, load, note, percentile, sh, sleep, startServe, stopper, waitForSocket, work, type FioResult } from './common.js';

const REGION = Number(process.env.BENCH_REGION ?? 2 ** 30);
const CUTS = Number(process.env.BENCH_CUTS ?? 50);
const GRAIN = 64 * 1024;

interface Target {
  readonly label: string;
  readonly uri: string;
  stop(): Promise<void>;
}

function nbdFio(name: string, uri: string, args: string[]): FioResult {
  return fio([`--name=${name}`, '--ioengine=nbd', `--uri=${uri}`, '--randrepeat=0', '--norandommap', ...args]);
}

async function flashcsi(name: string, size: number): Promise<Target & { control: string }> {
  return { label: 'flashcsi', ...(await startServe(name, size)) };
}

async function nbdkitFile(name: string, size: number): Promise<Target> {
  const file = path.join(work, `${name}.img`);
  fs.rmSync(file, { force: true });
  sh('truncate', ['-s', String(size), file]);
  const sock = path.join(work, `${name}.sock`);
  const args = ['-f', '-U', sock, 'file', file];
  note(['nbdkit', ...args].join(' '));
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
    note(['qemu-nbd', ...args].join(' '));
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

/** Fills the region, then writes back every dirty page so no target's timed jobs pay for an earlier one's writeback. */
function prefill(uri: string, size: number): void {
  nbdFio('prefill', uri, ['--rw=write', '--bs=1M', '--iodepth=16', `--size=${size}`]);
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

const value = (r: FioResult, unit: Row['unit']): number => (unit === 'IOPS' ? r.iops : r.mbps);

/** Cuts CUTS checkpoints while fio writes to the volume; returns each cut's latency in ms. */
async function cutLatencies(size: number): Promise<number[]> {
  const t = await flashcsi(`cut-${size}`, size);
  const args = ['--name=load', '--ioengine=nbd', `--uri=${t.uri}`, '--rw=randwrite', '--bs=4k', '--iodepth=16', `--size=${Math.min(size, REGION)}`, '--time_based', '--runtime=3600', '--randrepeat=0', '--norandommap'];
  const fioLoad = spawn('fio', args, { stdio: 'ignore', detached: true });
  note(`fio ${args.join(' ')} (background load during the cuts)`);
  const client = new ControlClient(t.control);
  const latencies: number[] = [];
  try {
    await sleep(1000); // let the load reach steady state
    for (let i = 0; i < CUTS; i++) {
      const start = process.hrtime.bigint();
      await client.call({ op: 'checkpoint.create', name: `c${i}` });
      latencies.push(Number(process.hrtime.bigint() - start) / 1e6);
      await sleep(20);
    }
  } finally {
    client.close();
    const exited = new Promise((r) => fioLoad.on('exit', r));
    process.kill(-(fioLoad.pid as number), 'SIGTERM'); // fio's forked job process too
    await exited;
    await t.stop();
  }
  return latencies.sort((a, b) => a - b);
}

export interface NbdResults {
  /** row name → target label → value */
  readonly rows: Map<string, Map<string, number>>;
  readonly firstTouch: Map<string, number>;
  readonly cuts: Map<string, number[]>;
  /** Load average when each part started. */
  readonly loads: string[];
}

export async function runNbd(): Promise<NbdResults> {
  const rows = new Map<string, Map<string, number>>();
  const loads: string[] = [];
  const put = (row: string, target: string, v: number): void => {
    if (!rows.has(row)) rows.set(row, new Map());
    rows.get(row)?.set(target, v);
  };

  // No-checkpoint rows: each target pre-filled, then the timed jobs in the same order.
  for (const make of [() => flashcsi('plain', REGION), () => nbdkitFile('plain', REGION), () => qemuNbd('plain', REGION, false)]) {
    const target = await make();
    loads.push(`${target.label} ${load()}`);
    try {
      prefill(target.uri, REGION);
      for (const row of ROWS) {
        const r = nbdFio(row.name.replace(/\W+/g, '-'), target.uri, [...row.args, `--size=${REGION}`, '--time_based', `--runtime=${RUNTIME}`]);
        put(row.name, target.label, value(r, row.unit));
        process.stderr.write(`nbd: ${target.label}: ${row.name}: ${fmt(value(r, row.unit))} ${row.unit}\n`);
      }
    } finally {
      await target.stop();
    }
  }

  // First write after a checkpoint: one 4k write into every 64 KiB grain of the region.
  const firstTouch = new Map<string, number>();
  const firstTouchArgs = ['--rw=write:60k', '--bs=4k', '--iodepth=16', `--size=${REGION}`, `--number_ios=${REGION / GRAIN}`];
  {
    const t = await flashcsi('cow', REGION);
    try {
      prefill(t.uri, REGION);
      const client = new ControlClient(t.control);
      await client.call({ op: 'checkpoint.create', name: 'snap1' });
      client.close();
      loads.push(`first touch ${load()}`);
      firstTouch.set(t.label, nbdFio('first-touch', t.uri, firstTouchArgs).iops);
    } finally {
      await t.stop();
    }
    const q = await qemuNbd('cow', REGION, true);
    try {
      firstTouch.set(q.label, nbdFio('first-touch', q.uri, firstTouchArgs).iops);
    } finally {
      await q.stop();
    }
  }

  // Checkpoint cut latency under write load, on a 1 GiB and a 1 TiB sparse volume.
  const cuts = new Map<string, number[]>();
  for (const [label, size] of [['1 GiB', 2 ** 30], ['1 TiB', 2 ** 40]] as const) {
    loads.push(`cuts ${label} ${load()}`);
    cuts.set(label, await cutLatencies(size));
  }
  return { rows, firstTouch, cuts, loads };
}

export function nbdReport(r: NbdResults): string[] {
  const lines: string[] = [];
  lines.push('## NBD level', '');
  lines.push(`fio's nbd engine, one connection, unix sockets; ${RUNTIME} s per timed job over a ${REGION / 2 ** 20} MiB region, each target`);
  lines.push('pre-filled by a 1M sequential write and a `sync` first. Ratio = flashcsi / peer.', '');
  lines.push(`Load average (1 min) as each part started: ${r.loads.join('; ')}.`, '');
  lines.push('### Data path without checkpoints', '');
  lines.push('| workload | flashcsi | nbdkit file | ratio vs nbdkit | qemu-nbd qcow2 | ratio vs qemu-nbd | target |');
  lines.push('|---|---:|---:|---:|---:|---:|---|');
  for (const row of ROWS) {
    const m = r.rows.get(row.name);
    const ours = m?.get('flashcsi') ?? NaN;
    const kit = m?.get('nbdkit file') ?? NaN;
    const qemu = m?.get('qemu-nbd qcow2') ?? NaN;
    const ratio = ours / kit;
    lines.push(`| ${row.name} (${row.unit}) | ${fmt(ours)} | ${fmt(kit)} | ${ratio.toFixed(2)}× | ${fmt(qemu)} | ${(ours / qemu).toFixed(2)}× | ≥ 0.9× nbdkit: ${ratio >= 0.9 ? 'met' : '**not met**'} |`);
  }
  lines.push('', '### First write after a checkpoint', '');
  const ours = r.firstTouch.get('flashcsi') ?? NaN;
  const qemu = r.firstTouch.get('qemu-nbd qcow2+snapshot') ?? NaN;
  lines.push('| workload | flashcsi | qemu-nbd qcow2+snapshot | ratio | target |', '|---|---:|---:|---:|---|');
  lines.push(`| first write after a checkpoint (4k into each 64K grain, qd16) (IOPS) | ${fmt(ours)} | ${fmt(qemu)} | ${(ours / qemu).toFixed(2)}× | ≥ 3×: ${ours / qemu >= 3 ? 'met' : '**not met**'} |`);
  lines.push('', '### Checkpoint cut latency under write load', '');
  lines.push(`${CUTS} cuts per volume through the control socket (client-observed round trip) while fio writes 4k randomly at qd16.`, '');
  lines.push('| volume | p50 | p90 | p99 | max | target p99 ≤ 10 ms |', '|---|---:|---:|---:|---:|---|');
  for (const [label, l] of r.cuts) {
    const p99 = percentile(l, 99);
    lines.push(`| ${label} sparse | ${percentile(l, 50).toFixed(2)} ms | ${percentile(l, 90).toFixed(2)} ms | ${p99.toFixed(2)} ms | ${(l.at(-1) ?? NaN).toFixed(2)} ms | ${p99 <= 10 ? 'met' : '**not met**'} |`);
  }
  lines.push('');
  return lines;
}
