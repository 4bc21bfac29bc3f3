/**
 * The control channel of a served volume. `flashcsi serve` holds the volume's lock, so other
 * processes (the CLI, the CSI plugin) ask it to act on the live volume: cut, list or delete
 * checkpoints, run transaction steps, report allocation maps and metrics. One JSON request per line, one JSON
 * response per line, over a unix socket created 0600.
 *
 * The server writes `serve.json` into the volume directory (itself 0700) naming its pid and
 * sockets, so a client that finds the volume locked knows where to ask.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import * as readline from 'node:readline';
import type { FrozenVolume, Volume } from '../engine/index.js';
import { ErrorCode, isEngineError } from '../engine/index.js';
import { FlashcsiError } from '../errors.js';

export const SERVE_INFO_FILE = 'serve.json';

export interface ServeInfo {
  readonly pid: number;
  /** The NBD unix socket. */
  readonly socket: string;
  /** The control unix socket. */
  readonly control: string;
  /** TCP listener, only when explicitly asked for. */
  readonly listen?: string;
  readonly startedAt: string;
}

export type ControlRequest =
  | { readonly op: 'info' }
  | { readonly op: 'checkpoint.create'; readonly name: string }
  | { readonly op: 'checkpoint.list'; readonly includeInternal?: boolean }
  | { readonly op: 'checkpoint.delete'; readonly name: string }
  | { readonly op: 'flush' }
  | { readonly op: 'expand'; readonly size: number }
  | { readonly op: 'allocated'; readonly checkpoint?: string }
  | { readonly op: 'changed'; readonly from: string; readonly to?: string }
  | { readonly op: 'tx.begin' | 'tx.prepare' | 'tx.commit' | 'tx.abort'; readonly txid: string }
  | { readonly op: 'rollback'; readonly name: string }
  /** Copies a checkpoint (or a point-in-time image of the live volume) into a new volume at `dest`. */
  | { readonly op: 'clone'; readonly dest: string; readonly checkpoint?: string }
  /**
   * Quiesces and holds the volume's writes until `thaw`, the connection closing, or `timeoutMs`
   * (default 30 s), whichever comes first; `frozen.*` requests on the same connection act under it.
   */
  | { readonly op: 'freeze'; readonly timeoutMs?: number }
  | { readonly op: 'frozen.checkpoint'; readonly name: string }
  | { readonly op: 'frozen.begin'; readonly txid: string }
  | { readonly op: 'thaw' }
  /** The server's Prometheus metrics, as prom-client's registry.getMetricsAsJSON() (for the plugin's /metrics). */
  | { readonly op: 'metrics' }
  /** Mounts the volume's FUSE file on `mountpoint` (an empty directory) and answers `{ file, pid }` (src/host/serve-fuse.ts). */
  | { readonly op: 'fuse.mount'; readonly mountpoint: string };

export type ControlResponse = { readonly ok: true; readonly result: unknown } | { readonly ok: false; readonly code: string; readonly message: string };

/** The control channel's own codes; everything else it answers is the engine's code. */
const CONTROL_CODES = ['UNIMPLEMENTED', 'UNAVAILABLE', 'INTERNAL'] as const;
export type ControlErrorCode = ErrorCode | (typeof CONTROL_CODES)[number];

function isControlErrorCode(code: string): code is ControlErrorCode {
  return (CONTROL_CODES as readonly string[]).includes(code) || (Object.values(ErrorCode) as string[]).includes(code);
}

/** Errors a control call returns carry the server-side code, so callers map them like local ones. */
export class ControlError extends FlashcsiError<ControlErrorCode> {}

const MAX_REQUEST_BYTES = 64 * 1024;

/** Per-connection state: a freeze belongs to the connection that asked for it. */
interface Session {
  frozen: FrozenVolume | null;
  timer: NodeJS.Timeout | null;
}

const DEFAULT_FREEZE_MS = 30_000;

function thaw(session: Session): void {
  if (session.timer) clearTimeout(session.timer);
  session.timer = null;
  session.frozen?.thaw();
  session.frozen = null;
}

function underFreeze(session: Session): FrozenVolume {
  if (!session.frozen) throw new ControlError('FAILED_PRECONDITION', 'the volume is not frozen by this connection (freeze first, or it timed out)');
  return session.frozen;
}

/** What the server answers besides the volume's own operations. */
export interface ControlExtras {
  /** Answers `metrics`; without it, `metrics` is UNIMPLEMENTED. */
  metrics?(): Promise<unknown>;
  /** Told after the volume grew (`expand`), so exports that show its size can show the new one. */
  expanded?(): void;
  /** Answers `fuse.mount`; without it, `fuse.mount` is UNIMPLEMENTED. */
  fuseMount?(mountpoint: string): Promise<{ readonly file: string; readonly pid: number }>;
}

async function handle(volume: Volume, req: ControlRequest, session: Session, extras: ControlExtras): Promise<unknown> {
  switch (req.op) {
    case 'metrics':
      if (extras.metrics === undefined) throw new ControlError('UNIMPLEMENTED', 'this server keeps no metrics');
      return extras.metrics();
    case 'fuse.mount':
      if (extras.fuseMount === undefined) throw new ControlError('UNIMPLEMENTED', 'this server does not export FUSE files');
      if (typeof req.mountpoint !== 'string' || !path.isAbsolute(req.mountpoint)) throw new ControlError('INVALID_ARGUMENT', 'fuse.mount needs an absolute mountpoint');
      return extras.fuseMount(req.mountpoint);
    case 'freeze': {
      if (session.frozen) throw new ControlError('FAILED_PRECONDITION', 'already frozen by this connection');
      session.frozen = await volume.freeze();
      session.timer = setTimeout(() => thaw(session), req.timeoutMs ?? DEFAULT_FREEZE_MS);
      return { frozen: true };
    }
    case 'frozen.checkpoint':
      return underFreeze(session).createCheckpoint(req.name);
    case 'frozen.begin':
      return underFreeze(session).begin(req.txid);
    case 'thaw':
      thaw(session);
      return { frozen: false };
    case 'clone': {
      if (typeof req.dest !== 'string' || !path.isAbsolute(req.dest)) throw new ControlError('INVALID_ARGUMENT', 'clone needs an absolute dest');
      const copy = await volume.clone(req.dest, req.checkpoint === undefined ? {} : { checkpoint: req.checkpoint });
      const size = copy.size;
      await copy.close();
      return { dest: req.dest, size };
    }
    case 'info':
      return volume.info();
    case 'checkpoint.create':
      return volume.createCheckpoint(req.name);
    case 'checkpoint.list':
      return { checkpoints: volume.checkpoints({ includeInternal: req.includeInternal ?? false }), deferred: volume.deferredCheckpoints() };
    case 'checkpoint.delete':
      return volume.deleteCheckpoint(req.name);
    case 'flush':
      return volume.flush();
    case 'expand':
      await volume.expand(req.size);
      extras.expanded?.();
      return null;
    case 'allocated':
      return volume.allocated(req.checkpoint);
    case 'changed':
      return volume.changed(req.from, req.to);
    case 'tx.begin':
      return volume.begin(req.txid);
    case 'tx.prepare':
      return volume.prepare(req.txid);
    case 'tx.commit':
      return volume.commit(req.txid);
    case 'tx.abort':
      return volume.abort(req.txid);
    case 'rollback':
      throw new ControlError(
        'FAILED_PRECONDITION',
        'the volume is being served over NBD; a mounted file system must not change under its user: stop the server (detach the volume) before rolling back',
      );
    default:
      throw new ControlError('INVALID_ARGUMENT', `unknown op ${String((req as { op: unknown }).op)}`);
  }
}

export interface ControlServer {
  readonly path: string;
  close(): Promise<void>;
}

/** Serves control requests for `volume` on a unix socket at `socketPath` (mode 0600). */
export async function startControlServer(
  volume: Volume,
  socketPath: string,
  onRequest?: (req: ControlRequest) => void,
  extras: ControlExtras = {},
): Promise<ControlServer> {
  fs.rmSync(socketPath, { force: true });
  const connections = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    connections.add(socket);
    const session: Session = { frozen: null, timer: null };
    socket.on('close', () => {
      connections.delete(socket);
      thaw(session); // a client that vanishes never leaves the volume frozen
    });
    socket.on('error', () => socket.destroy());
    const lines = readline.createInterface({ input: socket, crlfDelay: Infinity });
    // readline re-emits the socket's errors; the socket's own handler deals with them, and an
    // unhandled 'error' here would kill the server.
    lines.on('error', () => undefined);
    lines.on('line', (line) => {
      void (async () => {
        let response: ControlResponse;
        try {
          if (line.length > MAX_REQUEST_BYTES) throw new ControlError('INVALID_ARGUMENT', 'request too large');
          const req = JSON.parse(line) as ControlRequest;
          if (typeof req !== 'object' || req === null || typeof req.op !== 'string') throw new ControlError('INVALID_ARGUMENT', 'request must be a JSON object with an "op"');
          onRequest?.(req);
          response = { ok: true, result: (await handle(volume, req, session, extras)) ?? null };
        } catch (err) {
          const code = err instanceof ControlError || isEngineError(err) ? err.code : err instanceof SyntaxError ? 'INVALID_ARGUMENT' : 'INTERNAL';
          response = { ok: false, code, message: err instanceof Error ? err.message : String(err) };
        }
        if (!socket.destroyed) socket.write(`${JSON.stringify(response)}\n`);
      })();
    });
  });
  await new Promise<void>((resolve, reject) => {
    const previous = process.umask(0o177); // the socket is born 0600
    server.once('error', reject);
    server.listen(socketPath, () => {
      process.umask(previous);
      resolve();
    });
  });
  fs.chmodSync(socketPath, 0o600);
  return {
    path: socketPath,
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const c of connections) c.end();
      });
      fs.rmSync(socketPath, { force: true });
    },
  };
}

/** Reads serve.json from a volume directory; null when no server announced itself. */
export function readServeInfo(dir: string): ServeInfo | null {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, SERVE_INFO_FILE), 'utf8')) as ServeInfo;
  } catch {
    return null;
  }
}

export function writeServeInfo(dir: string, info: ServeInfo): void {
  const file = path.join(dir, SERVE_INFO_FILE);
  fs.writeFileSync(`${file}.tmp`, JSON.stringify(info, null, 2), { mode: 0o600 });
  fs.renameSync(`${file}.tmp`, file);
}

export function removeServeInfo(dir: string): void {
  fs.rmSync(path.join(dir, SERVE_INFO_FILE), { force: true });
}

/**
 * A connection to a volume's control socket. Requests are answered in order; keep the client
 * open across `freeze` … `thaw` (closing it thaws).
 */
export class ControlClient {
  private readonly socket: net.Socket;
  private readonly waiting: Array<{ resolve: (res: ControlResponse) => void; reject: (err: Error) => void }> = [];
  private failure: ControlError | null = null;
  private readonly connected: Promise<void>;

  constructor(readonly socketPath: string) {
    this.socket = net.createConnection(socketPath);
    this.connected = new Promise((resolve, reject) => {
      this.socket.once('connect', () => resolve());
      this.socket.once('error', reject);
    });
    this.connected.catch(() => undefined); // reported through fail() and call()
    this.socket.on('error', (err: NodeJS.ErrnoException) => this.fail(`cannot reach the volume's server at ${socketPath}: ${err.code ?? err.message}`));
    this.socket.on('close', () => this.fail(`the volume's server at ${socketPath} closed the connection`));
    const lines = readline.createInterface({ input: this.socket, crlfDelay: Infinity });
    // readline re-emits the socket's errors (ECONNREFUSED from a dead server, say): they are
    // reported through fail() above; unhandled here, they would kill the calling process.
    lines.on('error', () => undefined);
    lines.on('line', (line) => {
      const next = this.waiting.shift();
      try {
        next?.resolve(JSON.parse(line) as ControlResponse);
      } catch (err) {
        next?.reject(err as Error);
      }
    });
  }

  private fail(message: string): void {
    this.failure ??= new ControlError('UNAVAILABLE', message);
    for (const w of this.waiting.splice(0)) w.reject(this.failure);
  }

  async call<T>(req: ControlRequest, timeoutMs = 120_000): Promise<T> {
    if (this.failure) throw this.failure;
    await this.connected.catch(() => {
      throw this.failure ?? new ControlError('UNAVAILABLE', `cannot reach ${this.socketPath}`);
    });
    const res = await new Promise<ControlResponse>((resolve, reject) => {
      const timer = setTimeout(() => reject(new ControlError('UNAVAILABLE', `no answer from ${this.socketPath} within ${timeoutMs} ms`)), timeoutMs);
      this.waiting.push({
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.socket.write(`${JSON.stringify(req)}\n`);
    });
    if (res.ok) return res.result as T;
    // A code this client does not know (a newer server) is an internal error that names it.
    throw isControlErrorCode(res.code) ? new ControlError(res.code, res.message) : new ControlError('INTERNAL', `${res.message} (code ${res.code})`);
  }

  close(): void {
    this.socket.end();
  }
}

/** Sends one request to a control socket and returns its result, or throws a ControlError. */
export async function controlCall<T>(socketPath: string, req: ControlRequest, timeoutMs = 120_000): Promise<T> {
  const client = new ControlClient(socketPath);
  try {
    return await client.call<T>(req, timeoutMs);
  } finally {
    client.close();
  }
}
