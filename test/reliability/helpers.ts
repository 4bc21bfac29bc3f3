/**
 * Shared pieces of the reliability tests: JSON-line readers of child processes, the workload
 * process (workload.ts) on a mounted volume, mount-flag and file-system checks, process sampling
 * (RSS, open descriptors, sockets), and read-only fsck of a volume's image.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promises as fsp, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import * as readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { BIN } from '../csi/plugin-process.js';
import type { WorkloadReport } from './workload.js';

export const exec = promisify(execFile);
const WORKLOAD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'workload.js');

export interface Workload {
  readonly child: ChildProcess;
  /** Latest progress line. */
  progress: { written: number; verified: number; errors: number };
  /** Resolves once the workload has written and verified `n` more files than now. */
  advance(n?: number, timeoutMs?: number): Promise<void>;
  /** Tells it to stop, and resolves its final report once it has exited. */
  stop(): Promise<WorkloadReport>;
}

/** Reads a child's stdout one JSON line at a time; undefined once the stream has ended. */
export interface LineReader {
  next(): Promise<Record<string, unknown> | undefined>;
}

export function lines(stream: NodeJS.ReadableStream): LineReader {
  const it = readline.createInterface({ input: stream })[Symbol.asyncIterator]();
  return {
    async next() {
      const r = await it.next();
      return r.done === true ? undefined : (JSON.parse(r.value) as Record<string, unknown>);
    },
  };
}

/** Runs a command for cleanup, ignoring its failure. */
export async function quiet(cmd: string, args: string[]): Promise<void> {
  await exec(cmd, args).catch(() => undefined);
}

/** Starts the writer/verifier on a mounted directory. */
export function startWorkload(dir: string, opts: { keepGoing?: boolean } = {}): Workload {
  const child = spawn(process.execPath, [WORKLOAD, dir, ...(opts.keepGoing === true ? ['--keep-going'] : [])], { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let report: ((r: WorkloadReport) => void) | undefined;
  const reported = new Promise<WorkloadReport>((resolve) => (report = resolve));
  const waiters: Array<() => void> = [];
  const w: Workload = {
    child,
    progress: { written: 0, verified: 0, errors: 0 },
    advance(n = 2, timeoutMs = 60_000) {
      const target = { written: w.progress.written + n, verified: w.progress.verified + n };
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`the workload on ${dir} made no progress for ${timeoutMs} ms (${JSON.stringify(w.progress)})`)), timeoutMs);
        const check = (): void => {
          if (w.progress.written >= target.written && w.progress.verified >= target.verified) {
            clearTimeout(timer);
            resolve();
          } else waiters.push(check);
        };
        check();
      });
    },
    async stop() {
      child.stdin?.write('stop\n');
      const r = await reported;
      await exited;
      return r;
    },
  };
  readline.createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
    const msg = JSON.parse(line) as { report?: WorkloadReport; written?: number; verified?: number; errors?: number };
    if (msg.report) report?.(msg.report);
    else {
      w.progress = { written: msg.written ?? 0, verified: msg.verified ?? 0, errors: msg.errors ?? 0 };
      for (const f of waiters.splice(0)) f();
    }
  });
  return w;
}

/** The mount options of the file system mounted at `mountPoint` (from /proc/mounts). */
export async function mountOptions(mountPoint: string): Promise<string[]> {
  const line = readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .filter((l) => l.split(' ')[1] === mountPoint)
    .at(-1);
  assert.ok(line, `${mountPoint} is not mounted`);
  return (line.split(' ')[3] ?? '').split(',');
}

/** Asserts the file system at `mountPoint` is mounted read-write (never remounted read-only). */
export async function assertReadWrite(mountPoint: string, where: string): Promise<void> {
  const opts = await mountOptions(mountPoint);
  assert.ok(opts.includes('rw') && !opts.includes('ro'), `${where}: ${mountPoint} is mounted ${opts.join(',')}`);
}

/** ext4's error counter for a device (0 when the file system has recorded no error). */
export function ext4Errors(device: string): number {
  try {
    return Number(readFileSync(`/sys/fs/ext4/${path.basename(device)}/errors_count`, 'utf8').trim());
  } catch {
    return 0;
  }
}

/**
 * Exports a (not served) volume to a raw image and runs the file system's read-only check on it:
 * `e2fsck -f -n` or `xfs_repair -n -f`. Returns the checker's summary line (e2fsck's last stdout line,
 * or "xfs_repair -n: exit 0"); fails unless it exits 0.
 */
export async function fsckVolume(volumeDir: string, fsType: 'ext4' | 'xfs', scratch: string): Promise<string> {
  const image = path.join(scratch, `${path.basename(volumeDir)}.img`);
  await exec(process.execPath, [BIN, 'volume', 'export', volumeDir, image]);
  try {
    const [cmd, args] = fsType === 'ext4' ? ['e2fsck', ['-f', '-n', image]] : ['xfs_repair', ['-n', '-f', image]];
    const r = await exec(cmd, args as string[]).catch((err: { code?: number; stdout?: string; stderr?: string }) => {
      throw new Error(`${cmd} ${(args as string[]).join(' ')} exited ${err.code}:\n${err.stdout ?? ''}${err.stderr ?? ''}`);
    });
    return fsType === 'ext4' ? `e2fsck -f -n: exit 0, ${r.stdout.trim().split('\n').at(-1) ?? ''}` : 'xfs_repair -n: exit 0';
  } finally {
    await fsp.rm(image, { force: true });
  }
}

/** Resident set size of a process, in KiB (VmRSS). */
export function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0);
}

/** Open file descriptors of a process. */
export function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** Socket inodes a process holds open (from /proc/PID/fd links "socket:[N]"). */
export function socketInodes(pid: number): Set<string> {
  const out = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) out.add(m[1] as string);
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

/** TCP sockets in LISTEN state (state 0A) on this host, by inode, from /proc/net/tcp and tcp6. */
export function tcpListeners(): Map<string, string> {
  const out = new Map<string, string>();
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length > 9 && f[3] === '0A') out.set(f[9] as string, `${path.basename(file)} ${f[1]}`);
    }
  }
  return out;
}

/** The direct children of a process. */
export function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === pid && fields[0] !== 'Z') out.push(Number(name));
    } catch {
      // gone
    }
  }
  return out;
}

/** Max of a series' first third and its last third: a leak shows as a rising last third. */
export function thirds(series: readonly number[]): { first: number; last: number } {
  const n = Math.max(1, Math.floor(series.length / 3));
  return { first: Math.max(...series.slice(0, n)), last: Math.max(...series.slice(-n)) };
}
