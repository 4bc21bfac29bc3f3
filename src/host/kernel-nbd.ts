/**
 * The kernel path (only when /dev/nbd* exists, i.e. the nbd module is loaded): a volume's export
 * attached as /dev/nbdN through netlink (nbd-netlink.ts), and kept attached across restarts of its
 * server (kernel-nbd-keeper.ts).
 *
 * Attach: open `connections` sockets to the server, negotiate each (src/nbd/client.ts), and hand
 * them to the kernel with NBD_CMD_CONNECT, with
 *  - a backend identifier (`flashcsi:<volume>`; /sys/block/nbdN/backend), which every later
 *    RECONFIGURE must repeat, so a device is never handed to another volume's server;
 *  - a dead-connection timeout: when every connection has died, I/O waits that long for new ones
 *    instead of failing;
 *  - an I/O timeout: a request unanswered that long is sent again on a live (or the next) connection.
 *    It is what moves the requests that were in flight when a server died to its successor: the kernel
 *    does not resend them by itself, and with timeout 0 on one connection it would wait for ever.
 *
 * Reconnect (`reconnectKernelDevice`): negotiate `connections` fresh sockets and hand them over with
 * NBD_CMD_RECONFIGURE. The kernel puts each one in place of a dead connection and drops the rest, so
 * reconnecting a device whose connections are all alive changes nothing: callers can reconnect
 * whenever in doubt.
 *
 * Detach: NBD_CMD_DISCONNECT, then wait for the size to drop to 0. The device does not grow while
 * attached, so NodeExpandVolume refuses there.
 */
import { promises as fsp } from 'node:fs';

import { connectAndNegotiate, describeAddress, handOver, type NbdAddress, type NegotiatedSocket } from '../nbd/client.js';
import { TransmissionFlag } from '../nbd/protocol.js';
import { DEFAULT_ATTACH_TIMEOUT_MS, type AttachOptions, type Attachment } from './attachment.js';
import { blockDeviceSectors, sysBlockFile } from './block.js';
import { HostError } from './errors.js';
import { explainDeviceWait } from './mount-holders.js';
import { assertNotMounted } from './mounts.js';
import { NbdNetlink } from './nbd-netlink.js';
import { pollUntil } from './poll.js';

/** True if the kernel nbd driver is usable here: some /dev/nbdN exists. */
export async function hasKernelNbd(devDir = '/dev'): Promise<boolean> {
  const names = await fsp.readdir(devDir).catch(() => [] as string[]);
  return names.some((n) => /^nbd\d+$/.test(n));
}

export interface KernelDeviceOptions {
  readonly address: NbdAddress;
  readonly exportName: string;
  /** Shown in /sys/block/nbdN/backend and required by every reconnect. */
  readonly identifier: string;
  /** Connections (default 1); more than one needs the server's CAN_MULTI_CONN. */
  readonly connections?: number;
  /** Logical block size, 512…4096 (default 4096). */
  readonly blockSize?: number;
  /** I/O timeout in seconds (default 30; see the module comment). */
  readonly ioTimeoutSeconds?: number;
  /** How long a device without connections waits for a reconnect, in seconds (default 300). */
  readonly deadConnTimeoutSeconds?: number;
  /** Deadline for the handshakes and for the device to come up (default 30 s). */
  readonly timeoutMs?: number;
  /** Make the device read-only whatever the server allows. */
  readonly readOnly?: boolean;
}

export const KERNEL_DEFAULTS = { connections: 1, blockSize: 4096, ioTimeoutSeconds: 30, deadConnTimeoutSeconds: 300 } as const;

export interface KernelDevice {
  readonly device: string;
  readonly index: number;
  readonly identifier: string;
  readonly connections: number;
}

/** The device node of an nbd index. */
export function nbdDevicePath(index: number): string {
  return `/dev/nbd${index}`;
}

/** The index of /dev/nbdN. */
export function nbdIndex(device: string): number {
  const m = /^\/dev\/nbd(\d+)$/.exec(device);
  if (m === null) throw new HostError('INVALID_ARGUMENT', `not an nbd device: ${device}`);
  return Number(m[1]);
}

function validate(o: KernelDeviceOptions): Required<Pick<KernelDeviceOptions, 'connections' | 'blockSize' | 'ioTimeoutSeconds' | 'deadConnTimeoutSeconds' | 'timeoutMs'>> {
  const v = { ...KERNEL_DEFAULTS, timeoutMs: DEFAULT_ATTACH_TIMEOUT_MS, ...o };
  if (![512, 1024, 2048, 4096].includes(v.blockSize)) throw new HostError('INVALID_ARGUMENT', `block size must be 512…4096, got ${v.blockSize}`);
  if (!Number.isInteger(v.connections) || v.connections < 1 || v.connections > 64) throw new HostError('INVALID_ARGUMENT', `connections must be 1…64, got ${v.connections}`);
  for (const [name, s] of [['I/O timeout', v.ioTimeoutSeconds], ['dead-connection timeout', v.deadConnTimeoutSeconds]] as const) {
    if (!Number.isInteger(s) || s < 0) throw new HostError('INVALID_ARGUMENT', `${name} must be a whole number of seconds, got ${s}`);
  }
  if (o.identifier === '' || o.identifier.length > 255) throw new HostError('INVALID_ARGUMENT', 'the backend identifier must be 1…255 bytes');
  return v;
}

/** Opens and negotiates `n` connections; all or none. */
async function negotiate(address: NbdAddress, exportName: string, n: number, timeoutMs: number): Promise<NegotiatedSocket[]> {
  const settled = await Promise.allSettled(Array.from({ length: n }, () => connectAndNegotiate(address, exportName, timeoutMs)));
  const ok = settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  const failed = settled.find((s) => s.status === 'rejected');
  if (failed !== undefined) {
    for (const s of ok) s.socket.destroy();
    throw failed.reason;
  }
  return ok;
}

/** Runs `fn` with the sockets' descriptors, then closes our copies (the kernel holds its own). */
function withHandedOver<T>(sockets: readonly NegotiatedSocket[], fn: (fds: number[]) => T): T {
  try {
    return fn(sockets.map((s) => handOver(s.socket)));
  } finally {
    for (const s of sockets) s.socket.destroy();
  }
}

/** Runs `fn` with a netlink socket to the nbd driver, closed afterwards. */
function withNetlink<T>(fn: (nl: NbdNetlink) => T): T {
  const nl = new NbdNetlink();
  try {
    return fn(nl);
  } finally {
    nl.close();
  }
}

/** Attaches the export as a new /dev/nbdN (see the module comment). */
export async function attachKernelDevice(o: KernelDeviceOptions): Promise<KernelDevice> {
  const v = validate(o);
  const sockets = await negotiate(o.address, o.exportName, v.connections, v.timeoutMs);
  const first = sockets[0] as NegotiatedSocket;
  if (v.connections > 1 && (first.flags & TransmissionFlag.CanMultiConn) === 0) {
    for (const s of sockets) s.socket.destroy();
    throw new HostError('INVALID_ARGUMENT', `${describeAddress(o.address)} does not allow several connections (no CAN_MULTI_CONN)`);
  }
  const index = withNetlink((nl) =>
    withHandedOver(sockets, (fds) =>
      nl.connect({
        fds,
        sizeBytes: first.size,
        blockSize: v.blockSize,
        serverFlags: first.flags | (o.readOnly === true ? TransmissionFlag.ReadOnly : 0),
        timeoutSeconds: v.ioTimeoutSeconds,
        deadConnTimeoutSeconds: v.deadConnTimeoutSeconds,
        identifier: o.identifier,
      }),
    ),
  );
  const device = nbdDevicePath(index);
  await pollUntil(async () => (await blockDeviceSectors(device)) > 0, v.timeoutMs, `${device} to come up`);
  return { device, index, identifier: o.identifier, connections: v.connections };
}

/**
 * Hands the device `connections` fresh connections to `address`; the kernel uses them in place of
 * dead ones and drops the rest.
 */
export async function reconnectKernelDevice(dev: KernelDevice, address: NbdAddress, exportName: string, timeoutMs = DEFAULT_ATTACH_TIMEOUT_MS): Promise<void> {
  const sockets = await negotiate(address, exportName, dev.connections, timeoutMs);
  withNetlink((nl) => withHandedOver(sockets, (fds) => nl.reconfigure({ index: dev.index, fds, identifier: dev.identifier })));
}

/**
 * Disconnects the device and waits until it shows size 0. Idempotent. A DeviceHeldError (BUSY) if it
 * does not because its file system is mounted in another mount namespace.
 */
export async function detachKernelDevice(device: string, timeoutMs = DEFAULT_ATTACH_TIMEOUT_MS): Promise<void> {
  const index = nbdIndex(device);
  withNetlink((nl) => {
    if (nl.isConfigured(index)) nl.disconnect(index);
  });
  // The size drops to 0 when the last opener lets go of the configuration: never while a copy of its file system is
  // mounted in another mount namespace (say which).
  await pollUntil(async () => (await blockDeviceSectors(device)) === 0, timeoutMs, `${device} to detach`).catch((err: unknown) => explainDeviceWait(device, err));
}

/** The identifier a device was attached with (/sys/block/nbdN/backend), '' if none. */
export async function kernelDeviceBackend(device: string): Promise<string> {
  return (await fsp.readFile(sysBlockFile(device, 'backend'), 'utf8').catch(() => '')).trim();
}

/** Whether the device still has a configuration (connected, or waiting for a reconnect). */
export function isKernelDeviceConfigured(device: string): boolean {
  return withNetlink((nl) => nl.isConfigured(nbdIndex(device)));
}

// ─── The attach path's face (attach.ts) ─────────────────────────────────────────────────────────

/** Attaches through the kernel nbd driver, with the plugin's timeouts (KERNEL_DEFAULTS). */
export async function attachKernel(opts: AttachOptions): Promise<Attachment> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_ATTACH_TIMEOUT_MS;
  const dev = await attachKernelDevice({
    address: { path: opts.socketPath },
    exportName: opts.exportName,
    identifier: opts.identifier ?? `flashcsi:${opts.exportName}`,
    timeoutMs,
    ...(opts.blockSize !== undefined ? { blockSize: opts.blockSize } : {}),
    ...(opts.connections !== undefined ? { connections: opts.connections } : {}),
    ...(opts.readOnly !== undefined ? { readOnly: opts.readOnly } : {}),
  });
  return { method: 'kernel', device: dev.device, identifier: dev.identifier, connections: dev.connections, detach: () => detachKernel(dev.device, timeoutMs) };
}

/** Disconnects an nbd device (idempotent); refuses (BUSY) while it is mounted. */
export async function detachKernel(device: string, timeoutMs = DEFAULT_ATTACH_TIMEOUT_MS): Promise<void> {
  await assertNotMounted(device);
  await detachKernelDevice(device, timeoutMs);
}

/**
 * What is wrong with a kernel attachment; empty while the device has its configuration (connected,
 * or waiting within its dead-connection timeout for the keeper to reconnect it) for `identifier`.
 */
export async function kernelAttachmentProblems(device: string, identifier: string | undefined): Promise<string[]> {
  if (!isKernelDeviceConfigured(device)) return [`${device} is no longer attached to its NBD server`];
  if (identifier !== undefined && (await kernelDeviceBackend(device)) !== identifier) return [`${device} is attached to another backend than ${identifier}`];
  return [];
}
