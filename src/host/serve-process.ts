/**
 * Starts and stops a volume's data-path server, `flashcsi serve`, as its own process that outlives
 * the plugin: spawned detached (its own session, so a signal to the plugin's process group never
 * reaches it), stdin closed, stdout a pipe read only for the one readiness line and then closed,
 * stderr (its JSON log) appended to a file. The plugin keeps no handle on it: it is found again by
 * pid and start time (ProcessRef), also after a plugin restart, and stopped with SIGTERM (a clean
 * stop: finish in-flight requests, flush, close the volume) and a deadline.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync, promises as fsp } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { HostError } from './errors.js';
import { isProcessAlive, processRef, waitForProcessExit, type ProcessRef } from './process.js';

/** libuv's thread pool in `flashcsi serve`: large writes, fdatasync and reads the page cache cannot answer run there. */
export const SERVE_THREADPOOL_SIZE = 16;

/**
 * The environment `flashcsi serve` starts with. The thread pool's size must be in it: libuv reads
 * UV_THREADPOOL_SIZE when the pool starts, and in an ES module program the loader has started it
 * (reading the modules) before any of our code runs, so the process cannot size its own pool. With
 * libuv's default of 4, 4 KiB writes at queue depth 12 ran at a third of the IOPS for twice the CPU
 * per write (docs/performance.md).
 */
export function serveEnvironment(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  return { ...env, UV_THREADPOOL_SIZE: env.UV_THREADPOOL_SIZE ?? String(SERVE_THREADPOOL_SIZE) };
}

export interface StartServeOptions {
  readonly volumeDir: string;
  /** The NBD socket; the control socket is `<socket>.ctl`. */
  readonly socket: string;
  /** serve's stderr (JSON log lines) is appended here. */
  readonly logFile: string;
}

export interface ServeProcess {
  readonly process: ProcessRef;
  readonly socket: string;
  readonly control: string;
}

export interface ServeLauncher {
  start(opts: StartServeOptions): Promise<ServeProcess>;
  /** SIGTERM, then waits for the exit; SIGKILL if the deadline passes. Idempotent. */
  stop(ref: ProcessRef): Promise<void>;
}

export interface LauncherOptions {
  /** The flashcsi CLI script (default: dist/cmd/flashcsi.js next to this module). */
  readonly cli?: string;
  /** serve's --log-level. */
  readonly logLevel?: string;
  /** serve's --fuse-workers (serve's default unless set). */
  readonly fuseWorkers?: number;
  /** How long serve may take to become ready, and to stop. Default 60 s. */
  readonly timeoutMs?: number;
}

/** The flashcsi CLI of this build: `<root>/dist/cmd/flashcsi.js` when running from dist/src/host/. */
export function defaultCliPath(): string {
  return fileURLToPath(new URL('../../cmd/flashcsi.js', import.meta.url));
}

async function tail(file: string): Promise<string> {
  const text = await fsp.readFile(file, 'utf8').catch(() => '');
  return text.trim().split('\n').slice(-3).join(' | ');
}

export function serveLauncher(options: LauncherOptions = {}): ServeLauncher {
  const cli = options.cli ?? defaultCliPath();
  const timeoutMs = options.timeoutMs ?? 60_000;
  return {
    async start(opts) {
      const logFd = openSync(opts.logFile, 'a', 0o600);
      let child;
      try {
        const workers = options.fuseWorkers === undefined ? [] : ['--fuse-workers', String(options.fuseWorkers)];
        child = spawn(process.execPath, [cli, 'serve', opts.volumeDir, '--socket', opts.socket, '--log-level', options.logLevel ?? 'info', ...workers], {
          detached: true,
          stdio: ['ignore', 'pipe', logFd],
          env: serveEnvironment(),
        });
      } finally {
        closeSync(logFd);
      }
      const stdout = child.stdout;
      child.unref();
      const line = await new Promise<string>((resolve, reject) => {
        let buffered = '';
        const timer = setTimeout(() => {
          child.kill('SIGKILL');
          reject(new HostError('COMMAND_FAILED', `flashcsi serve for ${opts.volumeDir} did not become ready within ${timeoutMs} ms`));
        }, timeoutMs);
        const done = (): void => clearTimeout(timer);
        stdout?.setEncoding('utf8');
        stdout?.on('data', (chunk: string) => {
          buffered += chunk;
          const nl = buffered.indexOf('\n');
          if (nl >= 0) {
            done();
            resolve(buffered.slice(0, nl));
          }
        });
        child.once('exit', (code, signal) => {
          done();
          void tail(opts.logFile).then((log) =>
            reject(new HostError('COMMAND_FAILED', `flashcsi serve for ${opts.volumeDir} exited (${code ?? signal}) before it was ready: ${log}`)),
          );
        });
        child.once('error', (err) => {
          done();
          reject(new HostError('COMMAND_FAILED', `cannot start flashcsi serve: ${err.message}`, { cause: err }));
        });
      }).finally(() => {
        // Read only the readiness line (serve writes nothing else to stdout), and keep no interest in
        // the process: from here on it is found by pid, also by a later plugin.
        stdout?.removeAllListeners('data');
        stdout?.destroy();
        child.removeAllListeners('exit');
        child.removeAllListeners('error');
        child.on('error', () => undefined);
      });
      const ready = JSON.parse(line) as { ready?: boolean; pid?: number; socket?: string; control?: string };
      const pid = child.pid;
      if (ready.ready !== true || pid === undefined || typeof ready.control !== 'string') {
        child.kill('SIGTERM');
        throw new HostError('COMMAND_FAILED', `flashcsi serve printed an unexpected readiness line: ${line}`);
      }
      return { process: processRef(pid), socket: opts.socket, control: ready.control };
    },

    async stop(ref) {
      if (!isProcessAlive(ref)) return;
      try {
        process.kill(ref.pid, 'SIGTERM');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ESRCH') return;
        throw err;
      }
      try {
        await waitForProcessExit(ref, timeoutMs, `flashcsi serve (pid ${ref.pid}) to stop`);
      } catch {
        // A server that does not stop in time is killed: the volume is then recovered (dirty flag)
        // the next time it is opened, which is safe, just slower.
        if (isProcessAlive(ref)) process.kill(ref.pid, 'SIGKILL');
        await waitForProcessExit(ref, 10_000, `flashcsi serve (pid ${ref.pid}) to die`);
      }
    },
  };
}
