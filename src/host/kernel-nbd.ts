/**
 * The kernel path (only when /dev/nbd* exists, i.e. the nbd module is loaded): `nbd-client -unix
 * SOCK /dev/nbdX -N NAME -b 4096 -C n -t 0` (netlink; `-t 0` = wait for ever on a stuck server,
 * never fail I/O), readiness = /sys/block/nbdX/size > 0, detach with `nbd-client -d`. The device
 * cannot grow while attached (nbd-client 3.24 has no resize), so NodeExpandVolume refuses there.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { DEFAULT_ATTACH_TIMEOUT_MS, type AttachOptions, type Attachment } from './attachment.js';
import { blockDeviceSectors } from './block.js';
import { HostError } from './errors.js';
import { run } from './exec.js';
import { assertNotMounted } from './mounts.js';
import { pollUntil } from './poll.js';

/** True if the kernel nbd driver is usable here: some /dev/nbdN exists. */
export async function hasKernelNbd(devDir = '/dev'): Promise<boolean> {
  const names = await fsp.readdir(devDir).catch(() => [] as string[]);
  return names.some((n) => /^nbd\d+$/.test(n));
}

export interface KernelAttachArgs {
  readonly socketPath: string;
  readonly device: string;
  readonly exportName: string;
  readonly blockSize?: number;
  readonly connections?: number;
  readonly readOnly?: boolean;
}

/** nbd-client arguments to attach `device` to the export (validated). */
export function nbdClientAttachArgs(a: KernelAttachArgs): string[] {
  const bs = a.blockSize ?? 4096;
  if (![512, 1024, 2048, 4096].includes(bs)) throw new HostError('INVALID_ARGUMENT', `block size must be 512…4096, got ${bs}`);
  const conns = a.connections ?? 1;
  if (!Number.isInteger(conns) || conns < 1 || conns > 64) throw new HostError('INVALID_ARGUMENT', `connections must be 1…64, got ${conns}`);
  if (!/^\/dev\/nbd\d+$/.test(a.device)) throw new HostError('INVALID_ARGUMENT', `not an nbd device: ${a.device}`);
  if (!path.isAbsolute(a.socketPath)) throw new HostError('INVALID_ARGUMENT', `socket path must be absolute: ${a.socketPath}`);
  const args = ['-unix', a.socketPath, a.device, '-N', a.exportName, '-b', String(bs), '-C', String(conns), '-t', '0'];
  if (a.readOnly === true) args.push('-R');
  return args;
}

/** nbd-client arguments to detach `device`. */
export function nbdClientDetachArgs(device: string): string[] {
  if (!/^\/dev\/nbd\d+$/.test(device)) throw new HostError('INVALID_ARGUMENT', `not an nbd device: ${device}`);
  return ['-d', device];
}

/** The first /dev/nbdN whose sysfs size is 0 and that has no owner pid (i.e. not connected). */
export async function findFreeNbdDevice(sysBlock = '/sys/block'): Promise<string | undefined> {
  const names = (await fsp.readdir(sysBlock).catch(() => [] as string[])).filter((n) => /^nbd\d+$/.test(n));
  names.sort((a, b) => Number(a.slice(3)) - Number(b.slice(3)));
  for (const n of names) {
    const size = await fsp.readFile(path.join(sysBlock, n, 'size'), 'utf8').catch(() => '');
    const pid = await fsp.readFile(path.join(sysBlock, n, 'pid'), 'utf8').catch(() => '');
    if (size.trim() === '0' && pid.trim() === '') return `/dev/${n}`;
  }
  return undefined;
}

/** Attaches through the kernel nbd driver with nbd-client. */
export async function attachKernel(opts: AttachOptions): Promise<Attachment> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_ATTACH_TIMEOUT_MS;
  const device = await findFreeNbdDevice();
  if (device === undefined) throw new HostError('NO_DEVICE', 'no free /dev/nbd* device');
  const args = nbdClientAttachArgs({
    socketPath: opts.socketPath,
    device,
    exportName: opts.exportName,
    ...(opts.blockSize !== undefined ? { blockSize: opts.blockSize } : {}),
    ...(opts.connections !== undefined ? { connections: opts.connections } : {}),
    ...(opts.readOnly !== undefined ? { readOnly: opts.readOnly } : {}),
  });
  await run('nbd-client', args, timeoutMs);
  await pollUntil(async () => (await blockDeviceSectors(device)) > 0, timeoutMs, `${device} to come up`);
  return { method: 'kernel', device, detach: () => detachKernel(device, timeoutMs) };
}

/** Disconnects an nbd device (idempotent); refuses (BUSY) while it is mounted. */
export async function detachKernel(device: string, timeoutMs = DEFAULT_ATTACH_TIMEOUT_MS): Promise<void> {
  await assertNotMounted(device);
  if ((await blockDeviceSectors(device)) > 0) await run('nbd-client', nbdClientDetachArgs(device), timeoutMs);
  await pollUntil(async () => (await blockDeviceSectors(device)) === 0, timeoutMs, `${device} to detach`);
}

/** What is wrong with a kernel attachment; empty when the device is connected. */
export async function kernelAttachmentProblems(device: string): Promise<string[]> {
  return (await blockDeviceSectors(device)) === 0 ? [`${device} is no longer connected to its NBD server`] : [];
}
