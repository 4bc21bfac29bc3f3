/**
 * The control channel of a served volume. `flashcsi serve` holds the volume's lock, so other
 * processes (the CLI, the CSI plugin) ask it to act on the live volume: cut, list or delete
 * checkpoints, run transaction steps, report allocation maps. One JSON request per line, one JSON
 * response per line, over a unix socket created 0600.
 *
 * The server writes `serve.json` into the volume directory (itself 0700) naming its pid and
 * sockets, so a client that finds the volume locked knows where to ask.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import * as readline from 'node:readline';
import type { Volume } from '../engine/index.js';
import { isEngineError } from '../engine/index.js';

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
  | { readonly op: 'rollback'; readonly name: string };

export type ControlResponse = { readonly ok: true; readonly result: unknown } | { readonly ok: false; readonly code: string; readonly message: string };

/** Errors a control call returns carry the server-side code, so callers map them like local ones. */
export class ControlError extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
    this.name = 'ControlError';
  }
}

const MAX_REQUEST_BYTES = 64 * 1024;

async function handle(volume: Volume, req: ControlRequest): Promise<unknown> {
  switch (req.op) {
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
      return volume.expand(req.size);
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
export async function startControlServer(volume: Volume, socketPath: string, onRequest?: (req: ControlRequest) => void): Promise<ControlServer> {
  fs.rmSync(socketPath, { force: true });
  const connections = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    connections.add(socket);
    socket.on('close', () => connections.delete(socket));
    socket.on('error', () => socket.destroy());
    const lines = readline.createInterface({ input: socket, crlfDelay: Infinity });
    lines.on('line', (line) => {
      void (async () => {
        let response: ControlResponse;
        try {
          if (line.length > MAX_REQUEST_BYTES) throw new ControlError('INVALID_ARGUMENT', 'request too large');
          const req = JSON.parse(line) as ControlRequest;
          if (typeof req !== 'object' || req === null || typeof req.op !== 'string') throw new ControlError('INVALID_ARGUMENT', 'request must be a JSON object with an "op"');
          onRequest?.(req);
          response = { ok: true, result: (await handle(volume, req)) ?? null };
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

/** Sends one request to a control socket and returns its result, or throws a ControlError. */
export function controlCall<T>(socketPath: string, req: ControlRequest, timeoutMs = 120_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection(socketPath);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new ControlError('UNAVAILABLE', `no answer from ${socketPath} within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new ControlError('UNAVAILABLE', `cannot reach the volume's server at ${socketPath}: ${err.code ?? err.message}`));
    });
    socket.write(`${JSON.stringify(req)}\n`);
    const lines = readline.createInterface({ input: socket, crlfDelay: Infinity });
    lines.once('line', (line) => {
      clearTimeout(timer);
      socket.end();
      const res = JSON.parse(line) as ControlResponse;
      if (res.ok) resolve(res.result as T);
      else reject(new ControlError(res.code, res.message));
    });
  });
}
