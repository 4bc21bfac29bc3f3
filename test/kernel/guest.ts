/**
 * A real Linux kernel for the kernel nbd tests: Debian's kernel and the initramfs that
 * scripts/guest-build.sh caches, run under qemu with TCG (KVM hangs on this machine: no nested
 * virtualisation). qemu's user-mode network lets the guest reach the host's loopback at 10.0.2.2,
 * where `flashcsi serve --listen 127.0.0.1:PORT` waits.
 *
 * Three 9p shares: the host's root read-only at /host (the guest runs the project's own code in a
 * chroot of it: the host's node and libraries, see `node()`), this repository read-only over its
 * own path there (dist/ and node_modules/, also when the clone lives under /tmp, which the chroot
 * covers with a tmpfs), and a per-guest work directory read-write at /work (scripts in, logs out). The guest's console (ttyS0: kernel messages) goes to
 * `<work>/console.log`; its second serial port (ttyS1) carries the command protocol of
 * scripts/guest/init: one command per line in, its output lines and exit status out. Every wait is
 * for a line from the guest, with a deadline.
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { createWriteStream, existsSync, promises as fsp, readFileSync, type WriteStream } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as readline from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { shellQuote } from '../../src/host/exec.js';

/** The repository root (this file runs as dist/test/kernel/guest.js). */
export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

/** The cached guest build (scripts/guest-build.sh). */
export function guestBuildDir(): string {
  const cache = process.env.FLASHCSI_CACHE ?? path.join(os.homedir(), '.cache', 'flashcsi');
  return path.join(cache, 'guest', 'current');
}

export interface CommandResult {
  readonly rc: number;
  readonly out: string;
}

export class GuestCommandError extends Error {
  constructor(
    readonly command: string,
    readonly result: CommandResult,
  ) {
    super(`guest command failed (exit ${result.rc}): ${command}\n${result.out}`);
    this.name = 'GuestCommandError';
  }
}

export interface GuestOptions {
  /** Host directory shared read-write as /work (created if missing). */
  readonly workDir: string;
  readonly memoryMiB?: number;
  /** vCPUs (TCG runs one host thread per vCPU). Multi-connection I/O needs 2: blk-mq maps queues to CPUs. */
  readonly cpus?: number;
  /** How long the boot may take (TCG on a busy 2-core host: tens of seconds). */
  readonly bootTimeoutMs?: number;
}

interface Pending {
  readonly command: string;
  readonly lines: string[];
  readonly resolve: (r: CommandResult) => void;
  readonly reject: (e: Error) => void;
  readonly timer: NodeJS.Timeout;
}

export class Guest {
  /** Milliseconds from starting qemu to the agent's ready line. */
  bootMs = 0;
  /** `uname -r` of the guest. */
  kernelRelease = '';
  readonly consoleLog: string;
  private readonly qemu: ChildProcessByStdio<Writable, Readable, Readable>;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private exited: string | undefined;
  private stderr = '';
  private readonly ready: Promise<void>;
  /** Everything sent to and received from the agent, in <work>/agent.log (for failures). */
  private readonly transcript: WriteStream;

  private constructor(readonly opts: GuestOptions) {
    const build = guestBuildDir();
    for (const f of ['vmlinuz', 'initrd.cpio']) {
      if (!existsSync(path.join(build, f))) throw new Error(`no guest build at ${build} (run scripts/guest-build.sh; npm test does)`);
    }
    this.consoleLog = path.join(opts.workDir, 'console.log');
    const args = [
      '-accel', 'tcg',
      '-m', String(opts.memoryMiB ?? 1024),
      '-smp', String(opts.cpus ?? 2),
      '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
      '-kernel', path.join(build, 'vmlinuz'),
      '-initrd', path.join(build, 'initrd.cpio'),
      '-append', 'console=ttyS0 panic=-1 quiet',
      '-netdev', 'user,id=n0', '-device', 'virtio-net-pci,netdev=n0',
      '-virtfs', 'local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap',
      '-virtfs', `local,path=${opts.workDir},mount_tag=work,security_model=none`,
      '-virtfs', `local,path=${REPO},mount_tag=repo,security_model=none,readonly=on,multidevs=remap`,
      '-serial', `file:${this.consoleLog}`,
      '-serial', 'stdio',
    ];
    const started = Date.now();
    this.qemu = spawn('qemu-system-x86_64', args, { stdio: ['pipe', 'pipe', 'pipe'] });
    this.qemu.stderr.setEncoding('utf8');
    this.qemu.stderr.on('data', (d: string) => (this.stderr = (this.stderr + d).slice(-4000)));
    this.qemu.stdin.on('error', () => undefined); // a dead qemu is reported through 'exit'
    let onReady: () => void = () => undefined;
    let onFail: (e: Error) => void = () => undefined;
    this.ready = new Promise<void>((resolve, reject) => {
      onReady = resolve;
      onFail = reject;
    });
    const bootTimer = setTimeout(() => onFail(new Error(`guest did not boot within ${opts.bootTimeoutMs ?? 180_000} ms; console: ${this.consoleTail()}`)), opts.bootTimeoutMs ?? 180_000);
    this.qemu.on('exit', (code, signal) => {
      this.exited = `qemu exited (${code ?? signal}): ${this.stderr.trim()}`;
      clearTimeout(bootTimer);
      onFail(new Error(`${this.exited}; console: ${this.consoleTail()}`));
      for (const p of this.pending.values()) {
        clearTimeout(p.timer);
        p.reject(new Error(`${this.exited} while running: ${p.command}`));
      }
      this.pending.clear();
    });
    const transcript = createWriteStream(path.join(opts.workDir, 'agent.log'));
    this.transcript = transcript;
    readline.createInterface({ input: this.qemu.stdout, crlfDelay: Infinity }).on('line', (raw) => {
      const line = raw.replace(/\r$/, '');
      transcript.write(`${line}\n`);
      const m = /^@@(READY|OUT|RC) ?(\S*) ?(.*)$/.exec(line);
      if (m === null) return;
      if (m[1] === 'READY') {
        this.kernelRelease = m[2] ?? '';
        this.bootMs = Date.now() - started;
        clearTimeout(bootTimer);
        onReady();
        return;
      }
      const p = this.pending.get(Number(m[2]));
      if (p === undefined) return;
      if (m[1] === 'OUT') {
        p.lines.push(m[3] ?? '');
      } else {
        clearTimeout(p.timer);
        this.pending.delete(Number(m[2]));
        p.resolve({ rc: Number(m[3]), out: p.lines.join('\n') });
      }
    });
  }

  /** Starts a guest and waits for its agent. */
  static async boot(opts: GuestOptions): Promise<Guest> {
    await fsp.mkdir(opts.workDir, { recursive: true });
    const guest = new Guest(opts);
    try {
      await guest.ready;
    } catch (err) {
      await guest.close();
      throw err;
    }
    return guest;
  }

  /** The last lines of the kernel console. */
  consoleTail(lines = 20): string {
    try {
      return readFileSync(this.consoleLog, 'utf8').trim().split('\n').slice(-lines).join('\n');
    } catch {
      return '(no console log)';
    }
  }

  /** The last report of the guest's watchdog (`startWatchdog`): tasks in D state and their kernel stacks. */
  blockedTasks(): string {
    try {
      const text = readFileSync(path.join(this.opts.workDir, 'watchdog.log'), 'utf8');
      return text.slice(text.lastIndexOf('== ')).trim() || '(none)';
    } catch {
      return '(no watchdog)';
    }
  }

  /**
   * Starts a guest-side watchdog that writes, every 2 s, the tasks in uninterruptible sleep with
   * their kernel stacks to /work/watchdog.log: what a timed-out command reports.
   */
  async startWatchdog(): Promise<void> {
    const loop =
      'while true; do r="== $(cut -d" " -f1 /proc/uptime) s"; for p in /proc/[0-9]*; do ' +
      '[ "$(cut -d" " -f3 $p/stat 2>/dev/null)" = D ] && r="$r\\n$(cat $p/comm) ${p#/proc/}\\n$(cat $p/stack 2>/dev/null)"; done; echo -e "$r" >>/work/watchdog.log; sleep 2; done';
    await this.sh(`setsid sh -c ${shellQuote(loop)} >/dev/null 2>&1 </dev/null &`);
  }

  /** The whole kernel console so far. */
  console(): string {
    try {
      return readFileSync(this.consoleLog, 'utf8');
    } catch {
      return '';
    }
  }

  /** Runs a shell command (one line, busybox sh) in the guest; resolves its exit status and output. */
  exec(command: string, timeoutMs = 120_000): Promise<CommandResult> {
    if (command.includes('\n')) throw new Error('guest commands are one line');
    if (this.exited !== undefined) return Promise.reject(new Error(this.exited));
    const id = this.nextId++;
    return new Promise<CommandResult>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`guest command timed out after ${timeoutMs} ms: ${command}\nconsole: ${this.consoleTail()}\nblocked tasks: ${this.blockedTasks()}`));
      }, timeoutMs);
      this.pending.set(id, { command, lines: [], resolve, reject, timer });
      this.transcript.write(`>> ${id} ${command}\n`);
      this.qemu.stdin.write(`${id} ${command}\n`);
    });
  }

  /** Like exec, but a non-zero exit status is an error; resolves the output. */
  async sh(command: string, timeoutMs = 120_000): Promise<string> {
    const r = await this.exec(command, timeoutMs);
    if (r.rc !== 0) throw new GuestCommandError(command, r);
    return r.out;
  }

  /**
   * A guest command line that runs `dist/<script>` of this repository with the host's node, in a
   * chroot of the host's root (read-only 9p) with the guest's /dev, /proc, /sys and a private /tmp
   * mounted over it. The project's own code thus runs against the guest's kernel.
   */
  node(script: string, args: readonly string[] = []): string {
    const quoted = [path.join(REPO, 'dist', script), ...args].map(shellQuote).join(' ');
    return `/work/chroot-node.sh ${quoted}`;
  }

  /** Writes the chroot helper `node()` uses (once per guest). */
  async prepareNode(): Promise<void> {
    const helper = [
      '#!/bin/sh',
      '# Runs the host node in a chroot of the host root (9p, read-only), over the guest kernel.',
      'if ! grep -q " /host/proc " /proc/mounts; then',
      '  mount --bind /dev /host/dev && mount --bind /proc /host/proc && mount --bind /sys /host/sys || exit 97',
      '  mount -t tmpfs tmpfs /host/tmp && mount -t tmpfs tmpfs /host/run || exit 97',
      '  mkdir -p /host/tmp/work && mount --bind /work /host/tmp/work || exit 97',
      // The repository has its own share: a clone under /tmp would be hidden by the tmpfs above.
      `  mkdir -p /host${REPO} 2>/dev/null; mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=262144,cache=loose repo /host${REPO} || exit 97`,
      'fi',
      'exec chroot /host /usr/bin/env HOME=/tmp PATH=/usr/sbin:/usr/bin:/sbin:/bin node "$@"',
      '',
    ].join('\n');
    await fsp.writeFile(path.join(this.opts.workDir, 'chroot-node.sh'), helper, { mode: 0o755 });
  }

  /** Stops qemu (the guest's state is thrown away). */
  async close(): Promise<void> {
    if (this.exited !== undefined) return;
    const gone = new Promise<void>((resolve) => this.qemu.once('exit', () => resolve()));
    this.qemu.kill('SIGTERM');
    const timer = setTimeout(() => this.qemu.kill('SIGKILL'), 10_000);
    await gone;
    clearTimeout(timer);
  }
}
