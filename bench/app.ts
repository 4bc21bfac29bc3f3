/**
 * The application's view: what a pod sees in its mounted volume.
 *
 * - F: flashcsi, staged through its own NodeStageVolume (a real `flashcsi plugin` process, called
 *   over gRPC, with its default attach method: serve's own FUSE file, loop with direct I/O), ext4,
 *   no checkpoint.
 * - N: the same with `flashcsi plugin --attach nbdfuse` (serve → NBD → nbdfuse → loop), the
 *   method F used before serve-fuse, so the switch is decided in one run.
 * - K: nbdkit's file plugin behind the nbdfuse attach code (nbdfuse, loop with direct I/O), ext4.
 * - L: ext4 on a loop device (direct I/O) over a raw file on the same disk: what a local PV gives.
 *
 * fio (libaio, O_DIRECT) runs inside each file system on one pre-written file. The page cache
 * under F and K (the engine's and nbdkit's buffered files) is dropped before every read job
 * (`sync`, then POSIX_FADV_DONTNEED on the backing file), and sequential writes end with an
 * fsync, so no row is the host's page cache answering. Every job also records the CPU time the
 * data-path processes used per I/O (utime+stime from /proc), which is how the rows are explained.
 *
 * pgbench (PostgreSQL from Debian, scale BENCH_PGBENCH_SCALE, 4 clients) runs on F and L, and on
 * F while the CSI plugin cuts a snapshot (CreateSnapshot) every 5 s. Memory: the RSS of each
 * attached volume's processes (serve + nbdfuse) and the page cache its base image holds, with one
 * volume staged and with BENCH_VOLUMES staged at once.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, readFileSync, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { status } from '@grpc/grpc-js';
import { NBDFUSE_CONNECTIONS, attachNbdfuse } from '../src/host/nbdfuse.js';
import type { Attachment } from '../src/host/attachment.js';
import { HostError } from '../src/host/errors.js';
import { MOUNT_CAP, call, startPlugin, sweep, type PluginProcess } from '../test/csi/plugin-process.js';
import { RUNTIME, fio, fmt, load, note, ratio, sh, sleep, waitForSocket, work, type FioResult } from './common.js';

const FILE = Number(process.env.BENCH_APP_FILE ?? 2 * 2 ** 30);
const VOLUME = Number(process.env.BENCH_APP_VOLUME ?? 4 * 2 ** 30);
const PG_RUNTIME = Number(process.env.BENCH_PGBENCH_RUNTIME ?? 30);
const PG_SCALE = Number(process.env.BENCH_PGBENCH_SCALE ?? 20);
const CUT_EVERY_MS = 5000;
const VOLUMES = Number(process.env.BENCH_VOLUMES ?? 50);
const MiB = 2 ** 20;

type Label = 'F' | 'N' | 'K' | 'L';
const LABELS: readonly Label[] = ['F', 'N', 'K', 'L'];
/** The fio rows' targets (BENCH_APP_TARGETS, comma-separated; default all), for quicker rounds while tuning. */
const APP_TARGETS = (process.env.BENCH_APP_TARGETS ?? LABELS.join(',')).split(',').map((s) => {
  const label = s.trim() as Label;
  if (!LABELS.includes(label)) throw new Error(`BENCH_APP_TARGETS: unknown target ${s} (known: ${LABELS.join(', ')})`);
  return label;
});

/** One mounted file system under test. */
interface AppTarget {
  readonly label: Label;
  /** Where the file system is mounted. */
  readonly mount: string;
  /** The host file whose page cache sits under the device (dropped before read jobs). */
  readonly backing: string;
  /** The data-path processes by role (serve or nbdkit, nbdfuse); none for L. */
  pids(): Record<string, number>;
  stop(): Promise<void>;
}

/** utime + stime of a process in clock ticks (fields 14 and 15 of /proc/PID/stat). */
const procCpuTicks = (pid: number): number => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]);
  } catch {
    return NaN;
  }
};

/**
 * Resident memory of a process: RSS, and PSS (shared pages divided among the processes sharing
 * them: Node's own code, mapped by every serve, counts once across them, not once per volume).
 */
const residentBytes = (pid: number): { rss: number; pss: number } => {
  try {
    const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    const kb = (field: string): number => {
      const m = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(rollup);
      return m?.[1] === undefined ? NaN : Number(m[1]) * 1024;
    };
    return { rss: kb('Rss'), pss: kb('Pss') };
  } catch {
    return { rss: NaN, pss: NaN };
  }
};

/** Bytes of `file` in the page cache. */
const cachedBytes = (file: string): number => Number(sh('fincore', ['--bytes', '--noheadings', '--output', 'RES', file], { quiet: true }).trim());

/** Makes the path from the work dir down to `dir` traversable (0711) for PostgreSQL's own user. */
async function mkdirReachable(dir: string): Promise<void> {
  await fsp.mkdir(dir, { recursive: true, mode: 0o711 });
  for (let d = dir; d.startsWith(work) && d !== work; d = path.dirname(d)) await fsp.chmod(d, 0o711);
}

// ─── Targets ─────────────────────────────────────────────────────────────────────────────────

/** A CSI plugin that stages the F (default attach) or N (`--attach nbdfuse`) volumes, one process like a node's. */
async function plugin(label: 'F' | 'N'): Promise<PluginProcess> {
  const dir = path.join(work, `plugin-${label}`);
  await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
  const extraArgs = label === 'N' ? ['--attach', 'nbdfuse'] : [];
  const p = await startPlugin(dir, { metadataSocket: null, nodeId: 'bench', extraArgs });
  note(`flashcsi plugin --mode all --endpoint unix://${p.socket} --state-dir ${p.stateDir} --node-id bench ${extraArgs.join(' ')}`.trimEnd());
  await p.waitReady();
  return p;
}

interface StageRecordView {
  serve: { process: { pid: number } } | null;
  attachment: { method: string; fuse?: { process: { pid: number } } } | null;
}

/** Times a teardown step that timed out is tried again. */
const TEARDOWN_TRIES = 10;

/**
 * Runs a teardown step again while it times out (`timedOut(err)`), as the kubelet retries
 * NodeUnstageVolume: on a loaded node the loop device can take longer than the attach code's 30 s
 * wait to let go of its FUSE file, and a retry continues where the step stopped.
 */
async function retryTimeouts(what: string, step: () => Promise<unknown>, timedOut: (err: unknown) => boolean): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await step();
      return;
    } catch (err) {
      if (!timedOut(err) || attempt >= TEARDOWN_TRIES) throw err;
      process.stderr.write(`app: ${what}: ${(err as Error).message}; retrying (${attempt}/${TEARDOWN_TRIES - 1})\n`);
    }
  }
}

/** NodeUnstageVolume, retried on DEADLINE_EXCEEDED (the plugin's answer when a wait timed out). */
function unstage(p: PluginProcess, name: string, mount: string): Promise<void> {
  return retryTimeouts(
    `NodeUnstageVolume ${name}`,
    () => call(p.c.node, 'NodeUnstageVolume', { volume_id: name, staging_target_path: mount }, 300_000),
    (err) => (err as { code?: unknown }).code === status.DEADLINE_EXCEEDED,
  );
}

/** CreateVolume + NodeStageVolume (ext4) through the plugin: an F (or N) volume as a pod gets it. */
async function stageF(p: PluginProcess, name: string, size: number, opts: { quiet?: boolean; label?: 'F' | 'N' } = {}): Promise<AppTarget> {
  const cap = MOUNT_CAP('ext4');
  await call(p.c.controller, 'CreateVolume', { name, capacity_range: { required_bytes: String(size) }, volume_capabilities: [cap], parameters: { fsType: 'ext4' } });
  if (opts.quiet !== true) note(`CSI CreateVolume name=${name} capacity=${size} fsType=ext4; NodeStageVolume staging_target_path=$WORK/stage/${name}`);
  const mount = path.join(work, 'stage', name);
  await mkdirReachable(mount);
  await call(p.c.node, 'NodeStageVolume', { volume_id: name, staging_target_path: mount, volume_capability: cap }, 300_000);
  await fsp.chmod(mount, 0o711);
  const stage = JSON.parse(readFileSync(path.join(p.stateDir, 'node', name, 'stage.json'), 'utf8')) as StageRecordView;
  const pids: Record<string, number> = {};
  if (stage.serve !== null) pids.serve = stage.serve.process.pid;
  if (stage.attachment?.method === 'nbdfuse' && stage.attachment.fuse !== undefined) pids.nbdfuse = stage.attachment.fuse.process.pid;
  return {
    label: opts.label ?? 'F',
    mount,
    backing: path.join(p.stateDir, 'volumes', name, 'base.img'),
    pids: () => pids,
    async stop() {
      await unstage(p, name, mount);
      await call(p.c.controller, 'DeleteVolume', { volume_id: name });
    },
  };
}

async function mkfsAndMount(device: string, mount: string): Promise<void> {
  sh('mkfs.ext4', ['-q', '-F', '-E', 'nodiscard', device]); // as the stager makes it
  await mkdirReachable(mount);
  sh('mount', [device, mount]);
  await fsp.chmod(mount, 0o711);
}

/** nbdkit's file plugin behind the stager's nbdfuse attach code (nbdfuse, loop with direct I/O). */
async function startK(size: number): Promise<AppTarget> {
  const img = path.join(work, 'K.img');
  sh('truncate', ['-s', String(size), img]);
  const sock = path.join(work, 'K.sock');
  const args = ['-f', '-U', sock, 'file', img];
  note(['nbdkit', ...args].join(' '));
  const kit = spawn('nbdkit', args, { stdio: 'ignore' });
  await waitForSocket(sock, kit);
  let att: Attachment | undefined;
  try {
    att = await attachNbdfuse({ socketPath: sock, exportName: '', workDir: path.join(work, 'K-attach') });
    note(`attach (src/host/nbdfuse.ts attachNbdfuse): nbdfuse -P PIDFILE -C ${NBDFUSE_CONNECTIONS} $WORK/K-attach/fuse/disk nbd+unix:///?socket=${sock}; losetup --find --show --direct-io=on $WORK/K-attach/fuse/disk`);
    const mount = path.join(work, 'mnt', 'K');
    await mkfsAndMount(att.device, mount);
    const a = att;
    return {
      label: 'K',
      mount,
      backing: img,
      pids: () => ({ nbdkit: kit.pid as number, nbdfuse: a.fuse?.process.pid as number }),
      async stop() {
        sh('umount', [mount]);
        await retryTimeouts('detach K', () => a.detach(), (err) => err instanceof HostError && err.code === 'TIMEOUT');
        kit.kill('SIGTERM');
        await fsp.rm(img, { force: true });
      },
    };
  } catch (err) {
    await att?.detach().catch(() => undefined);
    kit.kill('SIGTERM');
    throw err;
  }
}

/** ext4 on a loop device (direct I/O) over a raw file on the same disk. */
async function startL(name: string, size: number): Promise<AppTarget> {
  const img = path.join(work, `${name}.img`);
  sh('truncate', ['-s', String(size), img]);
  const device = sh('losetup', ['--find', '--show', '--direct-io=on', img]).trim();
  const mount = path.join(work, 'mnt', name);
  await mkfsAndMount(device, mount);
  return {
    label: 'L',
    mount,
    backing: img,
    pids: () => ({}),
    async stop() {
      sh('umount', [mount]);
      sh('losetup', ['-d', device]);
      await fsp.rm(img, { force: true });
    },
  };
}

// ─── fio in the file system ──────────────────────────────────────────────────────────────────

interface AppRow {
  readonly name: string;
  readonly unit: 'IOPS' | 'MB/s';
  readonly args: string[];
  /** Drop the host page cache under the device first (read jobs). */
  readonly cold: boolean;
}

const timedArgs = ['--time_based', `--runtime=${RUNTIME}`];
export const APP_ROWS: AppRow[] = [
  { name: '4k random write, qd16', unit: 'IOPS', args: ['--rw=randwrite', '--bs=4k', '--iodepth=16', ...timedArgs], cold: false },
  { name: '4k random read, qd16', unit: 'IOPS', args: ['--rw=randread', '--bs=4k', '--iodepth=16', ...timedArgs], cold: true },
  { name: '1M sequential write, qd8 (one pass, fsync at end)', unit: 'MB/s', args: ['--rw=write', '--bs=1M', '--iodepth=8', '--end_fsync=1'], cold: false },
  { name: '1M sequential read, qd8 (one pass)', unit: 'MB/s', args: ['--rw=read', '--bs=1M', '--iodepth=8'], cold: true },
  { name: '4k write + fdatasync, qd1', unit: 'IOPS', args: ['--rw=randwrite', '--bs=4k', '--iodepth=1', '--fdatasync=1', ...timedArgs], cold: false },
];

function fsFio(t: AppTarget, name: string, args: string[]): FioResult {
  return fio([`--name=${name}`, `--filename=${path.join(t.mount, 'fio.dat')}`, `--size=${FILE}`, '--ioengine=libaio', '--direct=1', '--randrepeat=0', '--norandommap', ...args]);
}

/** Writes dirty data back and drops the backing file's pages from the host page cache. */
function dropHostCache(t: AppTarget): void {
  sh('sync', []);
  sh('dd', [`if=${t.backing}`, 'iflag=nocache', 'count=0', 'status=none']);
}

export interface AppCell {
  readonly value: number;
  readonly p99us: number;
  /** CPU µs per I/O of each data-path process during the job. */
  readonly cpuPerIo: Record<string, number>;
  readonly load: string;
}

export interface Memory {
  readonly volumes: number;
  /** Whose volumes (default F). */
  readonly label?: Label;
  /** Average RSS per volume, by process role. */
  readonly rss: Record<string, number>;
  /** Average PSS per volume, by process role. */
  readonly pss: Record<string, number>;
  /** Average bytes of each volume's backing file in the page cache. */
  readonly cache: number;
}

export interface AppResults {
  /** row → label → cell */
  readonly rows: Map<string, Map<Label, AppCell>>;
  readonly pgbench: Map<string, { tps: number; load: string }>;
  readonly cutMs: number[];
  readonly memory: Memory[];
}

function runRows(t: AppTarget, rows: Map<string, Map<Label, AppCell>>): void {
  fsFio(t, 'prefill', ['--rw=write', '--bs=1M', '--iodepth=8', '--end_fsync=1']);
  for (const row of APP_ROWS) {
    if (row.cold) dropHostCache(t);
    else sh('sync', []);
    const pids = t.pids();
    const before = Object.fromEntries(Object.entries(pids).map(([role, pid]) => [role, procCpuTicks(pid)]));
    const started = load();
    const r = fsFio(t, row.name.replace(/\W+/g, '-'), row.args);
    const cpuPerIo = Object.fromEntries(Object.entries(pids).map(([role, pid]) => [role, (((procCpuTicks(pid) - (before[role] ?? NaN)) * 1e6) / 100 / r.ios)]));
    const value = row.unit === 'IOPS' ? r.iops : r.mbps;
    if (!rows.has(row.name)) rows.set(row.name, new Map());
    rows.get(row.name)?.set(t.label, { value, p99us: r.p99us, cpuPerIo, load: started });
    process.stderr.write(`app: ${t.label}: ${row.name}: ${fmt(value)} ${row.unit} (load ${started})\n`);
  }
}

function memoryOf(targets: AppTarget[]): Memory {
  const rss: Record<string, number> = {};
  const pss: Record<string, number> = {};
  for (const t of targets) {
    for (const [role, pid] of Object.entries(t.pids())) {
      const r = residentBytes(pid);
      rss[role] = (rss[role] ?? 0) + r.rss / targets.length;
      pss[role] = (pss[role] ?? 0) + r.pss / targets.length;
    }
  }
  const cache = targets.reduce((sum, t) => sum + cachedBytes(t.backing), 0) / targets.length;
  return { volumes: targets.length, rss, pss, cache };
}

// ─── pgbench ─────────────────────────────────────────────────────────────────────────────────

/** Debian's PostgreSQL server binaries (the newest installed major version). */
const PG_BIN = ['17', '16', '15'].map((v) => `/usr/lib/postgresql/${v}/bin`).find((bin) => existsSync(`${bin}/postgres`)) ?? '/usr/lib/postgresql/15/bin';

/** A PostgreSQL cluster in `mount`, run as the postgres user; socket in a private directory. */
async function postgres(mount: string, name: string): Promise<{ pgbench(args: string[]): Promise<number>; stop(): void }> {
  const data = path.join(mount, 'pgdata');
  const sock = path.join(work, `pg-${name}`);
  for (const d of [data, sock]) {
    await fsp.mkdir(d, { recursive: true, mode: 0o700 });
    sh('chown', ['postgres:postgres', d]);
  }
  const asPg = (cmd: string, args: string[]): string[] => ['-u', 'postgres', '--', `${PG_BIN}/${cmd}`, ...args];
  sh('runuser', asPg('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-instructions', '-E', 'UTF8', '--locale=C']));
  sh('runuser', asPg('pg_ctl', ['-D', data, '-l', path.join(data, 'server.log'), '-w', '-o', `-k ${sock} -c listen_addresses=''`, 'start']));
  const pgbench = async (args: string[]): Promise<number> => {
    const out = await new Promise<string>((resolve, reject) =>
      execFile('runuser', asPg('pgbench', ['-h', sock, '-U', 'postgres', ...args, 'postgres']), { encoding: 'utf8', maxBuffer: 16 << 20 }, (err, stdout, stderr) =>
        err === null ? resolve(stdout) : reject(new Error(`pgbench failed: ${stderr}`)),
      ),
    );
    const tps = /^tps = ([\d.]+)/m.exec(out)?.[1];
    return tps === undefined ? NaN : Number(tps);
  };
  await pgbench(['-i', '-q', '-s', String(PG_SCALE)]);
  sh('runuser', asPg('psql', ['-h', sock, '-U', 'postgres', '-q', '-c', 'CHECKPOINT', 'postgres']));
  return {
    pgbench,
    stop: () => void sh('runuser', asPg('pg_ctl', ['-D', data, '-m', 'fast', '-w', 'stop'])),
  };
}

const runArgs = ['-c', '4', '-j', '2', '-T', String(PG_RUNTIME)];

/** One pgbench run; with `cut`, calls it every CUT_EVERY_MS meanwhile. Resolves the TPS and each cut's round trip (ms). */
async function pgbenchRun(pg: { pgbench(args: string[]): Promise<number> }, cut?: () => Promise<void>): Promise<{ tps: number; cutMs: number[] }> {
  const cutMs: number[] = [];
  let running = true;
  const cutter = (async () => {
    while (cut !== undefined && running) {
      await sleep(CUT_EVERY_MS);
      if (!running) break;
      const t0 = performance.now();
      await cut();
      cutMs.push(performance.now() - t0);
    }
  })();
  try {
    return { tps: await pg.pgbench(runArgs), cutMs };
  } finally {
    running = false;
    await cutter;
  }
}

export async function runApp(sections: ReadonlySet<string>): Promise<AppResults> {
  const rows = new Map<string, Map<Label, AppCell>>();
  const pgbench = new Map<string, { tps: number; load: string }>();
  const memory: Memory[] = [];
  let cutMs: number[] = [];
  const p = await plugin('F');
  try {
    if (sections.has('app')) {
      const pN = await plugin('N');
      try {
        const starts: Record<Label, () => Promise<AppTarget>> = {
          F: () => stageF(p, 'F', VOLUME),
          N: () => stageF(pN, 'N', VOLUME, { label: 'N' }),
          K: () => startK(VOLUME),
          L: () => startL('L', VOLUME),
        };
        for (const label of APP_TARGETS) {
          const t = await starts[label]();
          try {
            runRows(t, rows);
            if (t.label !== 'L') memory.push({ ...memoryOf([t]), label: t.label });
          } finally {
            await t.stop();
          }
        }
      } finally {
        await pN.stop();
        await sweep(path.join(work, 'plugin-N')).catch(() => undefined);
      }
    }
    if (sections.has('pgbench')) {
      note(`runuser -u postgres -- ${PG_BIN}/initdb -D MOUNT/pgdata -A trust -U postgres --no-instructions -E UTF8 --locale=C`);
      note(`runuser -u postgres -- ${PG_BIN}/pgbench -h SOCKDIR -U postgres -i -q -s ${PG_SCALE} postgres; psql CHECKPOINT`);
      note(`runuser -u postgres -- ${PG_BIN}/pgbench -h SOCKDIR -U postgres ${runArgs.join(' ')} postgres (F: run, run with CreateSnapshot every ${CUT_EVERY_MS / 1000} s, run; L: run, run)`);
      const f = await stageF(p, 'pgF', VOLUME);
      try {
        const pg = await postgres(f.mount, 'F');
        try {
          const l0 = load();
          const a = await pgbenchRun(pg);
          const l1 = load();
          let n = 0;
          const cut = await pgbenchRun(pg, async () => {
            await call(p.c.controller, 'CreateSnapshot', { name: `cut${n++}`, source_volume_id: 'pgF' });
          });
          const l2 = load();
          const b = await pgbenchRun(pg);
          pgbench.set('F', { tps: (a.tps + b.tps) / 2, load: `${l0}, ${l2}` });
          pgbench.set('F with cuts', { tps: cut.tps, load: l1 });
          cutMs = cut.cutMs.sort((x, y) => x - y);
          for (let i = 0; i < n; i++) await call(p.c.controller, 'DeleteSnapshot', { snapshot_id: `pgF@cut${i}` });
        } finally {
          pg.stop();
        }
      } finally {
        await f.stop();
      }
      const l = await startL('pgL', VOLUME);
      try {
        const pg = await postgres(l.mount, 'L');
        try {
          const l0 = load();
          const a = await pgbenchRun(pg);
          const b = await pgbenchRun(pg);
          pgbench.set('L', { tps: (a.tps + b.tps) / 2, load: l0 });
        } finally {
          pg.stop();
        }
      } finally {
        await l.stop();
      }
    }
    if (sections.has('memory')) memory.push(await manyVolumes(p));
  } finally {
    await p.stop();
    await sweep(path.join(work, 'plugin-F')).catch(() => undefined);
  }
  return { rows, pgbench, cutMs, memory };
}

/** Stages VOLUMES volumes at once, writes 32 MiB into each, and averages their memory. */
async function manyVolumes(p: PluginProcess): Promise<Memory> {
  const targets: AppTarget[] = [];
  try {
    note(`CSI CreateVolume name=mN capacity=${2 ** 30} fsType=ext4; NodeStageVolume staging_target_path=$WORK/stage/mN (N = 0…${VOLUMES - 1}, all staged at once)`);
    for (let i = 0; i < VOLUMES; i++) {
      const t = await stageF(p, `m${i}`, 2 ** 30, { quiet: true });
      targets.push(t);
      sh('dd', ['if=/dev/urandom', `of=${path.join(t.mount, 'data')}`, 'bs=1M', `count=${32}`, 'oflag=direct', 'conv=fsync', 'status=none'], { quiet: i > 0 });
    }
    return memoryOf(targets);
  } finally {
    for (const t of targets) await t.stop();
  }
}

export function appReport(r: AppResults): string[] {
  return ['## Application view', '', ...fioTables(r), ...pgbenchTable(r), ...memoryTable(r)];
}

function fioTables(r: AppResults): string[] {
  if (r.rows.size === 0) return [];
  const lines: string[] = [];
  lines.push(`fio (libaio, O_DIRECT) on one ${FILE / 2 ** 30} GiB file inside ext4 on each ${VOLUME / 2 ** 30} GiB volume: F = flashcsi staged by`);
  lines.push('NodeStageVolume with the default attach (serve\'s own FUSE file → loop, direct I/O), no checkpoint; N = the same with `--attach nbdfuse`');
  lines.push(`(serve → NBD → nbdfuse -C ${NBDFUSE_CONNECTIONS} → loop); K = nbdkit file behind the nbdfuse attach code;`);
  lines.push(`L = loop (direct I/O) over a raw file on the same disk. Timed rows run ${RUNTIME} s; sequential rows make one pass over the file.`);
  lines.push('Before every read job the host page cache under F and K is dropped (`sync`; `dd iflag=nocache count=0` on the backing');
  lines.push('file); sequential writes end with an fsync. Ratios are from this one run; "load" is the 1-minute load average as each job started (F / K / L).', '');
  lines.push('| workload | F | N | K | L | F/L | F/K | F/N | target | load |');
  lines.push('|---|---:|---:|---:|---:|---:|---:|---:|---|---|');
  const target = (row: string): [number, string] => (row.startsWith('4k random') ? [0.5, 'F/L ≥ 0.5'] : row.startsWith('1M') ? [0.9, 'F/L ≥ 0.9'] : [0.6, 'F/L ≥ 0.6']);
  for (const row of APP_ROWS) {
    const m = r.rows.get(row.name);
    const v = (l: Label): number => m?.get(l)?.value ?? NaN;
    const [want, text] = target(row.name);
    const met = v('F') / v('L') >= want && v('F') / v('K') >= 1 ? 'met' : '**not met**';
    const loads = LABELS.map((l) => m?.get(l)?.load ?? '?').join(' / ');
    lines.push(
      `| ${row.name} (${row.unit}) | ${fmt(v('F'))} | ${fmt(v('N'))} | ${fmt(v('K'))} | ${fmt(v('L'))} | ${ratio(v('F'), v('L'))} | ${ratio(v('F'), v('K'))} | ${ratio(v('F'), v('N'))} | ${text}, F/K ≥ 1.0: ${met} | ${loads} |`,
    );
  }
  lines.push('', 'CPU time per I/O of the data-path processes during each job (utime+stime from /proc, µs), and p99 completion latency:', '');
  lines.push('| workload | F: serve | N: serve | N: nbdfuse | K: nbdkit | K: nbdfuse | F p99 | N p99 | K p99 | L p99 |', '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const row of APP_ROWS) {
    const m = r.rows.get(row.name);
    const c = (l: Label, role: string): string => fmt(m?.get(l)?.cpuPerIo[role] ?? NaN);
    const p99 = (l: Label): string => `${fmt((m?.get(l)?.p99us ?? NaN) / 1000)} ms`;
    lines.push(`| ${row.name} | ${c('F', 'serve')} | ${c('N', 'serve')} | ${c('N', 'nbdfuse')} | ${c('K', 'nbdkit')} | ${c('K', 'nbdfuse')} | ${p99('F')} | ${p99('N')} | ${p99('K')} | ${p99('L')} |`);
  }
  lines.push('');
  return lines;
}

function pgbenchTable(r: AppResults): string[] {
  if (r.pgbench.size === 0) return [];
  const tps = (k: string): number => r.pgbench.get(k)?.tps ?? NaN;
  const lines: string[] = [];
  lines.push(`### pgbench (scale ${PG_SCALE}, 4 clients, 2 threads, ${PG_RUNTIME} s per run, default PostgreSQL settings: fsync on)`, '');
  lines.push('F and L: the mean of two runs; "F with cuts": one run between them while the plugin cuts a snapshot (CSI CreateSnapshot) every 5 s.', '');
  lines.push('| configuration | TPS | ratio | target | load |', '|---|---:|---:|---|---|');
  lines.push(`| L | ${fmt(tps('L'))} | | | ${r.pgbench.get('L')?.load ?? '?'} |`);
  lines.push(`| F | ${fmt(tps('F'))} | F/L ${ratio(tps('F'), tps('L'))} | ≥ 0.8: ${tps('F') / tps('L') >= 0.8 ? 'met' : '**not met**'} | ${r.pgbench.get('F')?.load ?? '?'} |`);
  lines.push(`| F with a cut every 5 s | ${fmt(tps('F with cuts'))} | ×F ${ratio(tps('F with cuts'), tps('F'))} | ≥ 0.95: ${tps('F with cuts') / tps('F') >= 0.95 ? 'met' : '**not met**'} | ${r.pgbench.get('F with cuts')?.load ?? '?'} |`);
  if (r.cutMs.length > 0) lines.push('', `CreateSnapshot round trips during that run (ms, sorted): ${r.cutMs.map((x) => x.toFixed(1)).join(', ')}.`);
  lines.push('');
  return lines;
}

function memoryTable(r: AppResults): string[] {
  if (r.memory.length === 0) return [];
  const mib = (b: number | undefined): string => (b === undefined ? '—' : `${(b / MiB).toFixed(1)} MiB`);
  const lines: string[] = [];
  lines.push('### Memory per attached volume', '');
  lines.push('Resident memory per volume by process, as RSS / PSS (smaps_rollup; PSS divides shared pages, such as Node\'s own code that');
  lines.push('every serve maps, among the processes sharing them), and the host page cache its backing file holds (fincore), averaged');
  lines.push('over the volumes. The data path total is the sum of PSS: what each further volume costs the node.');
  lines.push(`One volume: right after its fio rows (${FILE / 2 ** 30} GiB written, read back cold). Many: ${VOLUMES} volumes of 1 GiB staged at once, 32 MiB written into each.`, '');
  lines.push('| volumes staged | serve RSS / PSS | nbdfuse RSS / PSS | nbdkit RSS / PSS | data path total (PSS) | page cache of the backing file |', '|---|---:|---:|---:|---:|---:|');
  const both = (m: Memory, role: string): string => (m.rss[role] === undefined ? '—' : `${mib(m.rss[role])} / ${mib(m.pss[role])}`);
  for (const m of r.memory) {
    const label = m.label === 'K' ? '1 (K: nbdkit + nbdfuse)' : m.label === 'N' ? '1 (N: serve + nbdfuse)' : `${m.volumes} (F)`;
    const total = Object.values(m.pss).reduce((a, b) => a + b, 0);
    lines.push(`| ${label} | ${both(m, 'serve')} | ${both(m, 'nbdfuse')} | ${both(m, 'nbdkit')} | ${mib(total)} | ${mib(m.cache)} |`);
  }
  lines.push('');
  return lines;
}
