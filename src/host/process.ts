/**
 * Process identity from /proc. A pid alone names a process only until it is reused, so a process we
 * must find again later (nbdfuse, `flashcsi serve`, also after a plugin restart) is recorded as a
 * ProcessRef: its pid plus its start time (field 22 of /proc/PID/stat).
 */
import { readFileSync } from 'node:fs';
import { pollUntil } from './poll.js';

/** A running process, identified beyond its pid (pids are reused). */
export interface ProcessRef {
  readonly pid: number;
  /** Field 22 of /proc/PID/stat (clock ticks after boot); a reused pid has another. */
  readonly startTime: string;
}

/** /proc/PID/stat fields after the command name: [state, ppid, …]; undefined if there is no such process. */
function procStat(pid: number): string[] | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  return text.slice(text.lastIndexOf(')') + 2).split(' ');
}

/** The start time of a process (field 22 of /proc/PID/stat), or undefined if it does not exist. */
export function processStartTime(pid: number): string | undefined {
  return procStat(pid)?.[19];
}

/** The ProcessRef of a live pid (start time '' if it is already gone: then only the pid is checked). */
export function processRef(pid: number): ProcessRef {
  return { pid, startTime: processStartTime(pid) ?? '' };
}

/** Whether the process runs (a zombie counts as dead) and is the same one (same start time). */
export function isProcessAlive(ref: ProcessRef): boolean {
  const fields = procStat(ref.pid);
  if (fields === undefined) return false;
  const state = fields[0];
  if (state === 'Z' || state === 'X' || state === 'x') return false;
  return ref.startTime === '' || fields[19] === ref.startTime;
}

/** Waits until the process has exited; rejects with TIMEOUT after `timeoutMs`. */
export async function waitForProcessExit(ref: ProcessRef, timeoutMs: number, what: string): Promise<void> {
  await pollUntil(() => !isProcessAlive(ref), timeoutMs, what);
}

/** Whether this process has a Linux capability in its effective set (from /proc/self/status). */
export function hasCapability(bit: number): boolean {
  try {
    const line = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    return line?.[1] !== undefined && ((BigInt(`0x${line[1]}`) >> BigInt(bit)) & 1n) === 1n;
  } catch {
    return false;
  }
}

/** CAP_SYS_RESOURCE: ext4's online resize ioctl (EXT4_IOC_RESIZE_FS) requires it. */
export const CAP_SYS_RESOURCE = 24;
