/** The mount table (/proc/self/mountinfo) and device numbers: what is mounted where. */
import { promises as fsp } from 'node:fs';
import { HostError } from './errors.js';

/** One line of /proc/self/mountinfo. */
export interface MountEntry {
  /** major:minor of the mounted file system's device. */
  readonly majMin: string;
  /** Root of the mount within its file system ("/" or a subpath for bind mounts). */
  readonly root: string;
  readonly mountPoint: string;
  readonly options: string;
  readonly fsType: string;
  readonly source: string;
}

/** Decodes the octal escapes (\040 etc.) mountinfo uses in paths. */
function unescapeMountPath(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/**
 * Parses a mountinfo file (proc(5)): mount id, parent id, major:minor, root, mount point, options,
 * optional fields up to a lone `-`, then fs type, source and super options.
 */
export function parseMountinfo(info: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of info.split('\n')) {
    const fields = line.split(' ');
    const sep = fields.indexOf('-');
    if (sep < 0 || fields.length < sep + 3) continue;
    out.push({
      majMin: fields[2] ?? '',
      root: unescapeMountPath(fields[3] ?? ''),
      mountPoint: unescapeMountPath(fields[4] ?? ''),
      options: fields[5] ?? '',
      fsType: fields[sep + 1] ?? '',
      source: unescapeMountPath(fields[sep + 2] ?? ''),
    });
  }
  return out;
}

/** The mount table of this mount namespace. */
export async function readMounts(): Promise<MountEntry[]> {
  return parseMountinfo(await fsp.readFile('/proc/self/mountinfo', 'utf8'));
}

/** Whether something is mounted at `p` (exactly that path). */
export async function isMountPoint(p: string): Promise<boolean> {
  return (await readMounts()).some((m) => m.mountPoint === p);
}

/** major:minor of a device node, as mountinfo writes it. */
export async function deviceMajMin(device: string): Promise<string | undefined> {
  const st = await fsp.stat(device).catch(() => undefined);
  if (st === undefined || !st.isBlockDevice()) return undefined;
  return `${Math.floor(st.rdev / 256) & 0xfff}:${(st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00)}`;
}

/** Throws BUSY if `device` (path or major:minor) is mounted anywhere in this mount namespace. */
export async function assertNotMounted(device: string): Promise<void> {
  const majMin = await deviceMajMin(device);
  for (const m of await readMounts()) {
    if (m.source === device || (majMin !== undefined && m.majMin === majMin)) {
      throw new HostError('BUSY', `${device} is mounted on ${m.mountPoint}; unmount it first`);
    }
  }
}
