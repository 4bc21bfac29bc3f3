/** A process that holds copies of the node's mounts in a private mount namespace of its own, for tests. */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { promises as fsp } from 'node:fs';
import { deviceMajMin, parseMountinfo } from '../../src/host/mounts.js';
import { pollUntil } from '../../src/host/poll.js';

export interface Holder {
  readonly child: ChildProcess;
  readonly pid: number;
  /** Its /proc/PID/ns/mnt link. */
  readonly namespace: string;
}

/** `unshare -m --propagation private sleep infinity`, once it holds a copy of `device`'s mount. */
export async function startHolder(device: string): Promise<Holder> {
  const ownNamespace = await fsp.readlink('/proc/self/ns/mnt');
  const child = spawn('unshare', ['-m', '--propagation', 'private', 'sleep', 'infinity'], { stdio: 'ignore' });
  const pid = child.pid;
  if (pid === undefined) {
    await once(child, 'error');
    assert.fail('unshare did not start');
  }
  const majMin = await deviceMajMin(device);
  try {
    // Ready when it has its own namespace holding a copy of the mount and has become `sleep`.
    const namespace = await pollUntil(
      async () => {
        const ns = await fsp.readlink(`/proc/${pid}/ns/mnt`);
        if (ns === ownNamespace) return undefined;
        const copied = parseMountinfo(await fsp.readFile(`/proc/${pid}/mountinfo`, 'utf8')).some((m) => m.majMin === majMin);
        const comm = (await fsp.readFile(`/proc/${pid}/comm`, 'utf8')).trim();
        return copied && comm === 'sleep' ? ns : undefined;
      },
      10_000,
      'the holder to unshare its mount namespace and exec sleep',
      { retryErrors: true, abortIf: () => (child.exitCode !== null || child.signalCode !== null ? 'unshare exited' : undefined) },
    );
    return { child, pid, namespace };
  } catch (err) {
    await stopHolder(child);
    throw err;
  }
}

/** SIGKILLs the holder (its namespace and copies go with it) and waits for its exit. */
export async function stopHolder(holder: ChildProcess): Promise<void> {
  if (holder.exitCode !== null || holder.signalCode !== null) return;
  const exited = once(holder, 'exit');
  holder.kill('SIGKILL');
  await exited;
}
