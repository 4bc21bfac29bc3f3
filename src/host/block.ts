/** Block devices as sysfs shows them (/sys/block/<name>/…). */
import { promises as fsp } from 'node:fs';
import path from 'node:path';

/** A file under /sys/block/<device name>/. */
export function sysBlockFile(device: string, ...rest: string[]): string {
  return path.join('/sys/block', path.basename(device), ...rest);
}

/** A block device's size in 512-byte sectors (0 when it is disconnected or unknown). */
export async function blockDeviceSectors(device: string): Promise<number> {
  return Number((await fsp.readFile(sysBlockFile(device, 'size'), 'utf8').catch(() => '0')).trim());
}

/** A block device's size in bytes, from sysfs (512-byte sectors). */
export async function blockDeviceSize(device: string): Promise<number> {
  return (await blockDeviceSectors(device)) * 512;
}
