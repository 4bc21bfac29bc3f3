/**
 * Loop devices: which file one is bound to (sysfs), and its size limit (LOOP_GET/SET_STATUS64
 * through koffi), which is how an attached volume grows online.
 */
import { closeSync, openSync, promises as fsp } from 'node:fs';
import { createRequire } from 'node:module';
import { sysBlockFile } from './block.js';
import { HostError } from './errors.js';

const LOOP_SET_STATUS64 = 0x4c04;
const LOOP_GET_STATUS64 = 0x4c05;
/** sizeof(struct loop_info64). */
const LOOP_INFO64_SIZE = 232;
/** offsetof(struct loop_info64, lo_sizelimit): after lo_device, lo_inode, lo_rdevice, lo_offset (4 × u64). */
const LO_SIZELIMIT_OFFSET = 32;

/** The file a loop device is bound to, or undefined when it is free. */
export async function loopBackingFile(device: string): Promise<string | undefined> {
  const text = await fsp.readFile(sysBlockFile(device, 'loop', 'backing_file'), 'utf8').catch(() => undefined);
  return text?.trim();
}

interface Libc {
  readonly ioctl: (fd: number, request: number, ...args: unknown[]) => number;
  readonly errno: () => number;
}
let libc: Libc | undefined;

/** ioctl(2) through koffi (bound on first use), as src/engine/native.ts binds its libc calls. */
function ioctl(fd: number, request: number, buf: Buffer, what: string): void {
  if (libc === undefined) {
    const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
    const fn = koffi.load('libc.so.6').func('int ioctl(int fd, unsigned long request, ...)');
    libc = { ioctl: (...args) => fn(...args) as number, errno: () => koffi.errno() };
  }
  if (libc.ioctl(fd, request, 'void *', buf) !== 0) throw new HostError('COMMAND_FAILED', `${what} failed: errno ${libc.errno()}`);
}

function withLoopStatus<T>(device: string, fn: (fd: number, info: Buffer) => T): T {
  if (!/^\/dev\/loop\d+$/.test(device)) throw new HostError('INVALID_ARGUMENT', `not a loop device: ${device}`);
  const fd = openSync(device, 'r');
  try {
    const info = Buffer.alloc(LOOP_INFO64_SIZE);
    ioctl(fd, LOOP_GET_STATUS64, info, `LOOP_GET_STATUS64 on ${device}`);
    return fn(fd, info);
  } finally {
    closeSync(fd);
  }
}

/** A loop device's size limit in bytes (0 = none: the backing file's size). */
export function getLoopSizeLimit(device: string): number {
  return withLoopStatus(device, (_fd, info) => Number(info.readBigUInt64LE(LO_SIZELIMIT_OFFSET)));
}

/**
 * Sets a loop device's size limit with LOOP_SET_STATUS64; the kernel then resizes the block device
 * (also while it is mounted, which is how a mounted file system gets room to grow).
 */
export function setLoopSizeLimit(device: string, bytes: number): void {
  if (!Number.isSafeInteger(bytes) || bytes <= 0 || bytes % 512 !== 0) throw new HostError('INVALID_ARGUMENT', `size limit must be a positive multiple of 512, got ${bytes}`);
  withLoopStatus(device, (fd, info) => {
    if (Number(info.readBigUInt64LE(LO_SIZELIMIT_OFFSET)) === bytes) return;
    info.writeBigUInt64LE(BigInt(bytes), LO_SIZELIMIT_OFFSET);
    ioctl(fd, LOOP_SET_STATUS64, info, `LOOP_SET_STATUS64 on ${device}`);
  });
}
