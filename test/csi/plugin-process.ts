/**
 * `flashcsi plugin` as a real process for the integration tests: start it (startPlugin, also under
 * `flashcsi supervise`) on a temp state dir and sockets, wait for Probe to report ready (polling
 * Probe with a deadline: the readiness condition itself), call it with real grpc-js clients, stop or
 * SIGKILL it, and sweep up whatever a failed test left on the machine (mounts, loop devices, nbdfuse
 * and serve processes under the temp dir). Every test that starts a plugin process starts it here.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, openSync, promises as fsp, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Metadata, ServiceError } from '@grpc/grpc-js';
import { readMounts } from '../../src/host/mounts.js';
import { pollUntil } from '../../src/host/poll.js';
import { CMD, RawClient } from '../nbd/helpers/raw-client.js';
import { clients, rpc } from './helpers.js';

export const BIN = join(dirname(fileURLToPath(import.meta.url)), '../../cmd/flashcsi.js');
export const MiB = 1024 * 1024;

export const MOUNT_CAP = (fsType = 'ext4', mode = 'SINGLE_NODE_WRITER') => ({ mount: { fs_type: fsType }, access_mode: { mode } });
export const BLOCK_CAP = (mode = 'SINGLE_NODE_WRITER') => ({ block: {}, access_mode: { mode } });

type Clients = ReturnType<typeof clients>;
type Unary = (req: unknown, options: { deadline: number }, cb: (err: ServiceError | null, res?: unknown) => void) => unknown;

/** Calls `service.method(req)` with a deadline (default 60 s); resolves the response. */
export function call<T = Record<string, unknown>>(service: object, method: string, req: unknown, timeoutMs = 60_000): Promise<T> {
  const fn = (service as Record<string, Unary>)[method];
  if (fn === undefined) throw new Error(`no method ${method}`);
  return rpc<T>((cb) => fn.call(service, req, { deadline: Date.now() + timeoutMs }, cb as (err: ServiceError | null, res?: unknown) => void));
}

/** The error a call fails with; fails the test if it succeeds. */
export async function callError(service: object, method: string, req: unknown): Promise<ServiceError> {
  try {
    await call(service, method, req);
  } catch (err) {
    return err as ServiceError;
  }
  throw new Error(`${method} was expected to fail`);
}

/** Reads a server-streaming call to the end; resolves every message. */
export function streamAll<T>(service: object, method: string, req: unknown, timeoutMs = 60_000): Promise<T[]> {
  const fn = (service as Record<string, (req: unknown, md: Metadata | undefined, opts: { deadline: number }) => NodeJS.EventEmitter>)[method];
  if (fn === undefined) throw new Error(`no method ${method}`);
  return new Promise((resolve, reject) => {
    const out: T[] = [];
    const stream = fn.call(service, req, undefined, { deadline: Date.now() + timeoutMs });
    stream.on('data', (m: T) => out.push(m));
    stream.on('error', reject);
    stream.on('end', () => resolve(out));
  });
}

export interface PluginProcess {
  readonly dir: string;
  readonly stateDir: string;
  readonly socket: string;
  readonly metadataSocket: string;
  readonly logFile: string;
  /** The plugin, or with `supervise` the supervisor (the plugin is its child). */
  readonly child: ChildProcess;
  readonly c: Clients;
  readonly meta: Clients;
  readonly exited: Promise<number | string>;
  /** Polls Probe until ready. */
  waitReady(timeoutMs?: number): Promise<void>;
  /** SIGTERM and wait for the exit code. */
  stop(): Promise<number | string>;
  /** SIGKILL and wait. */
  kill(): Promise<void>;
}

/** A short temp dir (unix socket paths are limited to 107 bytes). */
export async function shortTempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'fcsi-'));
}

/** One Probe call: whether the plugin behind `c` answers ready (false on any error). */
export function probeReady(c: Clients, timeoutMs = 2000): Promise<boolean> {
  return call<{ ready: { value: boolean } | null }>(c.identity, 'Probe', {}, timeoutMs).then(
    (r) => r.ready?.value === true,
    () => false,
  );
}

/** How startPlugin starts `flashcsi plugin` (default: `--mode all`, state in dir/state, sockets in dir). */
export interface StartOptions {
  readonly nodeId?: string;
  /** `--state-dir` (default dir/state). */
  readonly stateDir?: string;
  /** `--drain-timeout` in ms (default 2000); null leaves the flag out (the plugin's default). */
  readonly drainTimeoutMs?: number | null;
  /** Run it under `flashcsi supervise --max-backoff SECONDS`, as the container does. */
  readonly supervise?: { readonly maxBackoffSeconds: number };
  readonly extraArgs?: string[];
  /** `--mode` (default all). */
  readonly mode?: string;
  /** Socket paths (default dir/csi.sock and dir/meta.sock); metadataSocket null leaves SnapshotMetadata off. */
  readonly socket?: string;
  readonly metadataSocket?: string | null;
  /** Log file (default dir/plugin-<time>.log); stdout goes there too with `stdoutToLog`. */
  readonly logFile?: string;
  readonly stdoutToLog?: boolean;
}

export async function startPlugin(dir: string, opts: StartOptions = {}): Promise<PluginProcess> {
  const stateDir = opts.stateDir ?? join(dir, 'state');
  const socket = opts.socket ?? join(dir, 'csi.sock');
  const metadataSocket = opts.metadataSocket ?? join(dir, 'meta.sock');
  const logFile = opts.logFile ?? join(dir, `plugin-${Date.now()}.log`);
  const fd = openSync(logFile, 'a');
  let child: ChildProcess;
  try {
    const drainMs = opts.drainTimeoutMs === undefined ? 2000 : opts.drainTimeoutMs;
    const plugin = [
      'plugin',
      '--mode',
      opts.mode ?? 'all',
      '--endpoint',
      `unix://${socket}`,
      ...(opts.metadataSocket === null ? [] : ['--snapshot-metadata-endpoint', `unix://${metadataSocket}`]),
      '--state-dir',
      stateDir,
      '--node-id',
      opts.nodeId ?? 'test-node',
      ...(drainMs === null ? [] : ['--drain-timeout', String(drainMs)]),
      ...(opts.extraArgs ?? []),
    ];
    const supervise = opts.supervise === undefined ? [] : ['supervise', '--max-backoff', String(opts.supervise.maxBackoffSeconds), '--'];
    child = spawn(process.execPath, [BIN, ...supervise, ...plugin], { stdio: ['ignore', opts.stdoutToLog === true ? fd : 'ignore', fd] });
  } finally {
    closeSync(fd);
  }
  const exited = new Promise<number | string>((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')));
  let c: Clients | undefined;
  let meta: Clients | undefined;
  const p: PluginProcess = {
    dir,
    stateDir,
    socket,
    metadataSocket,
    logFile,
    child,
    get c() {
      c ??= clients(socket);
      return c;
    },
    get meta() {
      meta ??= clients(metadataSocket);
      return meta;
    },
    exited,
    async waitReady(timeoutMs = 60_000) {
      let exitedEarly: number | string | undefined;
      void exited.then((code) => (exitedEarly = code));
      await pollUntil(() => probeReady(p.c), timeoutMs, 'the plugin to report ready (CSI Probe)', {
        intervalMs: 50,
        abortIf: () => (exitedEarly === undefined ? undefined : `it exited (${exitedEarly}) before it was ready`),
        detail: () => `log:\n${readFileSync(logFile, 'utf8').slice(-4000)}`,
      });
    },
    async stop() {
      c?.close();
      meta?.close();
      child.kill('SIGTERM');
      return exited;
    },
    async kill() {
      c?.close();
      meta?.close();
      child.kill('SIGKILL');
      await exited;
    },
  };
  return p;
}

/** sha256 of a file, hex. */
export async function sha256File(path: string): Promise<string> {
  return createHash('sha256').update(await fsp.readFile(path)).digest('hex');
}

/** Pids of processes whose command line mentions `needle`. */
export function processesMentioning(needle: string): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      if (/\) [ZX] /.test(stat)) continue;
      if (readFileSync(`/proc/${name}/cmdline`, 'utf8').includes(needle)) out.push(Number(name));
    } catch {
      // gone
    }
  }
  return out.filter((pid) => pid !== process.pid);
}

/** Loop devices bound to a file under `dir`. */
export function loopDevicesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync('/sys/block')) {
    if (!name.startsWith('loop')) continue;
    try {
      if (readFileSync(`/sys/block/${name}/loop/backing_file`, 'utf8').trim().startsWith(dir)) out.push(`/dev/${name}`);
    } catch {
      // free
    }
  }
  return out;
}

/** Mount points under `dir`, deepest first. */
export async function mountsUnder(dir: string): Promise<string[]> {
  return (await readMounts())
    .map((m) => m.mountPoint)
    .filter((m) => m.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
}

/** Asserts that nothing of ours is left on the machine under `dir`. */
export async function assertNothingLeft(dir: string): Promise<void> {
  assert.deepEqual(await mountsUnder(dir), [], 'no mounts left');
  assert.deepEqual(loopDevicesUnder(dir), [], 'no loop devices left');
  assert.deepEqual(processesMentioning(`${dir}/`), [], 'no plugin, serve or nbdfuse processes left');
}

/**
 * Last-resort cleanup after a test that failed midway: unmounts, detaches loop devices, stops
 * serve and nbdfuse processes under `dir`, then removes it. A passing test has left nothing.
 */
export async function sweep(dir: string): Promise<void> {
  const { execFileSync } = await import('node:child_process');
  const quiet = (cmd: string, args: string[]): void => {
    try {
      execFileSync(cmd, args, { stdio: 'ignore', timeout: 30_000 });
    } catch {
      // best effort
    }
  };
  for (const m of await mountsUnder(dir)) if (!m.endsWith('/fuse')) quiet('umount', ['-l', m]);
  for (const d of loopDevicesUnder(dir)) quiet('losetup', ['-d', d]);
  for (const m of await mountsUnder(dir)) quiet('fusermount3', ['-u', '-z', m]);
  for (const pid of processesMentioning(dir)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  await fsp.rm(dir, { recursive: true, force: true }).catch(() => undefined);
}

/** NodeStageVolume + NodePublishVolume under `dir`; returns the staging and target paths. */
export async function stageAndPublish(
  p: PluginProcess,
  volumeId: string,
  cap: unknown,
  opts: { readonly?: boolean; block?: boolean } = {},
): Promise<{ staging: string; target: string }> {
  const staging = join(p.dir, 'staging', volumeId);
  const target = join(p.dir, 'pods', volumeId, opts.block === true ? 'dev' : 'mnt');
  await fsp.mkdir(staging, { recursive: true });
  await fsp.mkdir(dirname(target), { recursive: true });
  await call(p.c.node, 'NodeStageVolume', { volume_id: volumeId, staging_target_path: staging, volume_capability: cap });
  await call(p.c.node, 'NodePublishVolume', {
    volume_id: volumeId,
    staging_target_path: staging,
    target_path: target,
    volume_capability: cap,
    readonly: opts.readonly === true,
  });
  return { staging, target };
}

/** NodeUnpublishVolume + NodeUnstageVolume. */
export async function unpublishAndUnstage(p: PluginProcess, volumeId: string, paths: { staging: string; target: string }): Promise<void> {
  await call(p.c.node, 'NodeUnpublishVolume', { volume_id: volumeId, target_path: paths.target });
  await call(p.c.node, 'NodeUnstageVolume', { volume_id: volumeId, staging_target_path: paths.staging });
}

/** An NBD connection to a served volume's live export (the "" export on its socket). */
export async function nbdConnection(socket: string): Promise<{ write: (offset: number, data: Buffer) => Promise<void>; close: () => Promise<void> }> {
  const client = await RawClient.connect(socket);
  await client.negotiate({ name: '' });
  let cookie = 0n;
  return {
    async write(offset, data) {
      await client.send(CMD.write, 0, ++cookie, offset, data.length, data);
      const reply = await client.readReply();
      if (reply.error !== 0) throw new Error(`NBD write at ${offset} failed with error ${reply.error}`);
    },
    close: () => client.disconnect(),
  };
}
