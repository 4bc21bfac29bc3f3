/**
 * Who still has a block device's file system mounted in another mount namespace.
 *
 * Why: a process that creates a mount namespace with private propagation (`unshare -m` does by
 * default; so do some container runtimes' holder processes) gets a copy of every mount of the
 * namespace it came from. Unmounting here does not reach that copy. The file system stays mounted
 * there and keeps its device open: `losetup -d` only sets autoclear, a kernel nbd device keeps
 * its size, and teardown's wait for the device times out (docs/performance.md, "Teardown: mounts
 * copied into other mount namespaces"). Naming the namespace, a process in it and the copy's mount
 * points tells the operator what to unmount (`nsenter -t PID -m umount -l PATH`) or which process to stop.
 *
 * How: one pass over /proc groups every process by its mount namespace (the /proc/PID/ns/mnt
 * link). Our own namespace is skipped: the caller has already checked its mounts
 * (assertNotMounted). Then one mountinfo per namespace is read, through the first of its processes
 * that still exists, and the lines whose major:minor (field 3) is the device's rdev are kept. A
 * process that exits during the pass (ENOENT, ESRCH) or that we may not look at (EACCES, EPERM,
 * e.g. a sandbox's init) is left out.
 *
 * Limits: only the processes of our PID namespace are seen (a containerised plugin needs hostPID
 * to see the node's). A namespace with no process left, kept alive only by a bind mount of its
 * nsfs file, is not found. Cost: a readlink per process and a read per namespace. That is fine
 * because the scan runs only after a wait has already timed out, never on the normal path.
 */
import { promises as fsp } from 'node:fs';
import { HostError } from './errors.js';
import { shellQuote } from './exec.js';
import { deviceMajMin, parseMountinfo } from './mounts.js';

/** A process in a namespace that holds the device. */
export interface HolderProcess {
  readonly pid: number;
  /** Its /proc/PID/comm (the executable's name, at most 15 characters). */
  readonly comm: string;
}

/** One other mount namespace in which the device's file system is still mounted. */
export interface NamespaceHold {
  /** The /proc/PID/ns/mnt link, e.g. `mnt:[4026532871]`. */
  readonly namespace: string;
  /** Its first few processes, lowest pid first (any of them serves for `nsenter -t PID -m`). */
  readonly processes: readonly HolderProcess[];
  /** How many processes the namespace had during the scan. */
  readonly processCount: number;
  /** Where the file system is mounted, as that namespace sees it. */
  readonly mountPoints: readonly string[];
}

/** Processes named per namespace; the rest are counted. */
const NAMED_PROCESSES = 3;

/** Errors of a /proc entry whose process exited, or that we may not inspect: skip it. */
const SKIPPED_ERRNOS: ReadonlySet<string> = new Set(['ENOENT', 'ESRCH', 'EACCES', 'EPERM']);

/** The promise's value, or undefined if it failed because the process is gone or hidden. */
async function unlessGone<T>(p: Promise<T>): Promise<T | undefined> {
  try {
    return await p;
  } catch (err) {
    if (SKIPPED_ERRNOS.has((err as NodeJS.ErrnoException).code ?? '')) return undefined;
    throw err;
  }
}

/** The mount namespaces other than ours in which `device` (a block device path) is mounted. */
export async function findMountHolders(device: string): Promise<NamespaceHold[]> {
  const majMin = await deviceMajMin(device);
  if (majMin === undefined) return [];
  const own = await fsp.readlink('/proc/self/ns/mnt');
  const pids = (await fsp.readdir('/proc'))
    .filter((n) => /^\d+$/.test(n))
    .map(Number)
    .sort((a, b) => a - b);
  const byNamespace = new Map<string, number[]>();
  for (const pid of pids) {
    const ns = await unlessGone(fsp.readlink(`/proc/${pid}/ns/mnt`));
    if (ns === undefined || ns === own) continue;
    const members = byNamespace.get(ns);
    if (members === undefined) byNamespace.set(ns, [pid]);
    else members.push(pid);
  }
  const holds: NamespaceHold[] = [];
  for (const [namespace, members] of byNamespace) {
    const mountPoints = await mountPointsOf(members, majMin);
    if (mountPoints.length === 0) continue;
    const processes = await namedProcesses(members);
    // Every process of it exited during the scan: the namespace and its copy are going away.
    if (processes.length === 0) continue;
    holds.push({ namespace, processes, processCount: members.length, mountPoints });
  }
  return holds;
}

/** The mount points of `majMin` in the namespace of `pids`, read through the first of them still alive. */
async function mountPointsOf(pids: readonly number[], majMin: string): Promise<string[]> {
  for (const pid of pids) {
    const info = await unlessGone(fsp.readFile(`/proc/${pid}/mountinfo`, 'utf8'));
    if (info !== undefined) return parseMountinfo(info).filter((m) => m.majMin === majMin).map((m) => m.mountPoint);
  }
  return [];
}

async function namedProcesses(pids: readonly number[]): Promise<HolderProcess[]> {
  const out: HolderProcess[] = [];
  for (const pid of pids) {
    const comm = await unlessGone(fsp.readFile(`/proc/${pid}/comm`, 'utf8'));
    if (comm !== undefined) out.push({ pid, comm: comm.trimEnd() });
    if (out.length === NAMED_PROCESSES) break;
  }
  return out;
}

function describeHold(hold: NamespaceHold): string {
  const named = hold.processes.map((p) => `pid ${p.pid} ${p.comm}`).join(', ');
  const rest = hold.processCount - hold.processes.length;
  const others = rest > 0 ? ` and ${rest} other process${rest === 1 ? '' : 'es'}` : '';
  return `${hold.namespace}, ${named}${others}, at ${hold.mountPoints.join(', ')}`;
}

/** The message of a DeviceHeldError: who holds the device, and what to run about it. */
export function describeHolds(device: string, holds: readonly NamespaceHold[]): string {
  const first = holds[0];
  const pid = first?.processes[0]?.pid;
  const mountPoint = first?.mountPoints[0];
  if (first === undefined || pid === undefined || mountPoint === undefined) return `${device} is still in use`;
  const n = holds.length;
  const single = n === 1 && first.mountPoints.length === 1;
  const command = `nsenter -t ${pid} -m umount -l ${shellQuote(mountPoint)}`;
  return (
    `${device} is still in use: its file system is still mounted in ${n} other mount namespace${n === 1 ? '' : 's'} ` +
    `(${holds.map(describeHold).join('; ')}); a process that unshared its mount namespace with private propagation keeps a copy; ` +
    (single ? `unmount it there (${command}) or stop it` : `unmount every copy there (e.g. ${command}) or stop those processes`)
  );
}

/**
 * A device that teardown could not release because its file system is still mounted in other mount
 * namespaces. Code BUSY, as for a device still mounted in ours: it needs someone to unmount it,
 * and waiting longer does not help.
 */
export class DeviceHeldError extends HostError {
  readonly device: string;
  readonly holds: readonly NamespaceHold[];
  constructor(device: string, holds: readonly NamespaceHold[], options?: { cause?: unknown }) {
    super('BUSY', describeHolds(device, holds), options);
    this.device = device;
    this.holds = holds;
  }
}

/**
 * Explains a failed wait for `device` to be released (use as the wait's `.catch`). A timeout
 * becomes a DeviceHeldError if the device's file system is still mounted in other mount namespaces;
 * the timeout is kept as the cause. Any other error, or a timeout with no holder found, is rethrown
 * as it was.
 */
export async function explainDeviceWait(device: string, err: unknown): Promise<never> {
  if (err instanceof HostError && err.code === 'TIMEOUT') {
    // The scan only explains the timeout; if the scan itself fails, the timeout stands.
    const holds = await findMountHolders(device).catch(() => []);
    if (holds.length > 0) throw new DeviceHeldError(device, holds, { cause: err });
  }
  throw err;
}
