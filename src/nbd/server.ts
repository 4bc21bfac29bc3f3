/**
 * The NBD server: a net.Server on a Unix socket (TCP only when explicitly asked for), one
 * NbdConnection per client, and graceful shutdown.
 *
 * Unix socket hygiene (the socket is the only access control there is):
 * - the parent directory is created 0700 if missing; an existing one must be a real directory
 *   (not a symlink), owned by us or root, and not group/world-writable;
 * - a stale socket left by a dead server is unlinked (a live one is an error: EADDRINUSE); any
 *   other file at the path is refused, never deleted;
 * - the socket is bound under umask 0177, so it is born 0600, and chmod'ed 0600 again after
 *   listening; libuv unlinks it on close.
 *
 * Shutdown (`close()`): stop accepting; negotiating clients are dropped; requests arriving from
 * now on get ESHUTDOWN; in-flight requests finish; every writable export that was served gets one
 * flush(); then the sockets are closed after their pending replies. Deadlines bound each step.
 */
import { promises as fsp } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { FlashcsiError } from '../errors.js';

import { DEFAULT_LIMITS, NbdConnection, silentLogger, type ConnectionLimits, type NbdLogger } from './connection.js';
import type { ExportProvider, NbdExport } from './export.js';
import { BufferPool, Slab } from './slab.js';
import type { NbdRequestObserver } from '../metrics/nbd.js';

export interface NbdServerOptions {
  readonly provider: ExportProvider;
  readonly logger?: NbdLogger;
  /** Per-connection limits; see ConnectionLimits for the defaults. */
  readonly limits?: Partial<ConnectionLimits>;
  /** Socket buffer high-water mark: write() returns false above it (default 4 MiB). */
  readonly highWaterMark?: number;
  /** Told of every answered request, on every connection (metrics; see ConnectionContext). */
  readonly observer?: NbdRequestObserver;
}

export interface CloseOptions {
  /** How long in-flight requests, the final flushes and reply delivery may take (default 10 s). */
  readonly graceMs?: number;
}

/** Error with a stable code, for the server's own failures (socket path checks, listen). */
export type NbdServerErrorCode = 'INSECURE_PATH' | 'ADDRESS_IN_USE' | 'INVALID_ARGUMENT' | 'NOT_LISTENING';
export class NbdServerError extends FlashcsiError<NbdServerErrorCode> {}

/** Longest Unix socket path (sun_path is 108 bytes including the NUL). */
const MAX_SOCKET_PATH = 107;

/** Server-wide counters, for diagnostics and tests. */
export interface NbdServerStats {
  /** Connections accepted since start. */
  accepted: number;
  /** Most connections open at once. */
  peakConnections: number;
}

export class NbdServer {
  readonly stats: NbdServerStats = { accepted: 0, peakConnections: 0 };
  /** One net.Server per address served (the Unix socket, and TCP if asked), all feeding onConnection. */
  private readonly listeners: net.Server[] = [];
  private readonly conns = new Set<NbdConnection>();
  private readonly slab = new Slab();
  private readonly pool = new BufferPool();
  private readonly limits: ConnectionLimits;
  private readonly log: NbdLogger;
  private nextId = 1;
  private shuttingDown = false;
  private closing: Promise<void> | undefined;
  private socketPath: string | undefined;

  constructor(private readonly opts: NbdServerOptions) {
    this.log = opts.logger ?? silentLogger;
    this.limits = { ...DEFAULT_LIMITS, ...opts.limits };
  }

  private newListener(): net.Server {
    const server = net.createServer({ highWaterMark: this.opts.highWaterMark ?? 4 * 1024 * 1024, noDelay: true }, (socket) => this.onConnection(socket));
    server.on('error', (err) => this.log.error({ err: err.message }, 'nbd: server error'));
    this.listeners.push(server);
    return server;
  }

  /** Live connections (for diagnostics and tests). */
  get connections(): ReadonlySet<NbdConnection> {
    return this.conns;
  }

  /** Requests in flight over every connection. */
  get inflight(): number {
    let n = 0;
    for (const c of this.conns) n += c.inflight;
    return n;
  }

  /** The Unix socket path being served, if any. */
  get path(): string | undefined {
    return this.socketPath;
  }

  /** Serves on a Unix socket at `socketPath` (absolute), created 0600 in a private directory. */
  async listenUnix(socketPath: string): Promise<void> {
    if (!path.isAbsolute(socketPath)) throw new NbdServerError('INVALID_ARGUMENT', `socket path must be absolute: ${socketPath}`);
    if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH) {
      throw new NbdServerError('INVALID_ARGUMENT', `socket path longer than ${MAX_SOCKET_PATH} bytes: ${socketPath}`);
    }
    await ensurePrivateDir(path.dirname(socketPath));
    await removeStaleSocket(socketPath);
    const server = this.newListener();
    const old = process.umask(0o177);
    try {
      // Binding happens synchronously inside listen(), so the umask covers the socket's creation.
      server.listen(socketPath);
    } finally {
      process.umask(old);
    }
    await listening(server);
    await fsp.chmod(socketPath, 0o600);
    this.socketPath = socketPath;
    this.log.info({ socket: socketPath }, 'nbd: listening');
  }

  /**
   * Serves on TCP. Only for explicit use (debugging, remote peers): NBD has no authentication,
   * so the caller must pick the host deliberately.
   */
  async listenTcp(host: string, port: number): Promise<net.AddressInfo> {
    const server = this.newListener();
    server.listen({ host, port });
    await listening(server);
    const addr = server.address();
    if (addr === null || typeof addr === 'string') throw new NbdServerError('NOT_LISTENING', 'no TCP address');
    this.log.info({ host: addr.address, port: addr.port }, 'nbd: listening on TCP');
    return addr;
  }

  /** Graceful shutdown; idempotent. */
  close(opts: CloseOptions = {}): Promise<void> {
    this.closing ??= this.doClose(opts.graceMs ?? 10_000);
    return this.closing;
  }

  private onConnection(socket: net.Socket): void {
    if (this.shuttingDown) {
      socket.destroy();
      return;
    }
    const conn = new NbdConnection(socket, {
      id: this.nextId++,
      provider: this.opts.provider,
      logger: this.log,
      limits: this.limits,
      isShuttingDown: () => this.shuttingDown,
      slab: this.slab,
      pool: this.pool,
      ...(this.opts.observer === undefined ? {} : { observer: this.opts.observer }),
    });
    this.conns.add(conn);
    this.stats.accepted++;
    if (this.conns.size > this.stats.peakConnections) this.stats.peakConnections = this.conns.size;
    void conn.closed.then(() => this.conns.delete(conn));
    try {
      conn.start();
    } catch (err) {
      this.log.error({ err: String(err) }, 'nbd: failed to start connection');
      socket.destroy();
    }
  }

  private async doClose(graceMs: number): Promise<void> {
    this.shuttingDown = true;
    const deadline = Date.now() + graceMs;
    const serverClosed = Promise.all(this.listeners.map((l) => new Promise<void>((resolve) => l.close(() => resolve()))));
    const conns = [...this.conns];
    for (const c of conns) c.beginShutdown();

    // Finish in-flight requests (new ones get ESHUTDOWN meanwhile).
    await withDeadline(Promise.all(conns.map((c) => c.idle())), deadline);

    // One flush per writable export that was being served.
    const exports = new Set<NbdExport>();
    for (const c of conns) if (c.export !== undefined && !c.export.readOnly) exports.add(c.export);
    for (const exp of exports) {
      try {
        await withDeadline(exp.flush(), deadline);
      } catch (err) {
        this.log.error({ export: exp.name, err: err instanceof Error ? err.message : String(err) }, 'nbd: flush at shutdown failed');
      }
    }

    // Close after pending replies are delivered; drop whatever is still open at the deadline.
    for (const c of conns) c.end('server shutting down');
    const allClosed = Promise.all(conns.map((c) => c.closed));
    if (!(await withDeadline(allClosed, deadline))) {
      for (const c of conns) c.abort('shutdown deadline');
      if (!(await withDeadline(allClosed, Date.now() + 1000))) this.log.warn({}, 'nbd: export calls still pending after shutdown');
    }
    await serverClosed;
    this.log.info({ socket: this.socketPath }, 'nbd: closed');
  }
}

/** Resolves true if `p` settles before `deadline` (epoch ms), false otherwise. */
async function withDeadline(p: Promise<unknown>, deadline: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), Math.max(0, deadline - Date.now()));
  });
  try {
    return await Promise.race([p.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Creates `dir` 0700 if missing; otherwise checks it is a private directory. */
export async function ensurePrivateDir(dir: string): Promise<void> {
  let st = await fsp.lstat(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
  if (st === undefined) {
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    await fsp.chmod(dir, 0o700);
    st = await fsp.lstat(dir);
  }
  if (!st.isDirectory()) throw new NbdServerError('INSECURE_PATH', `socket directory is not a directory (or is a symlink): ${dir}`);
  if ((st.mode & 0o022) !== 0) {
    throw new NbdServerError('INSECURE_PATH', `socket directory is group- or world-writable (mode ${(st.mode & 0o7777).toString(8)}): ${dir}`);
  }
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid && st.uid !== 0) {
    throw new NbdServerError('INSECURE_PATH', `socket directory is owned by uid ${st.uid}, not by us (${uid}) or root: ${dir}`);
  }
}

/** Unlinks a socket left behind by a dead server; refuses live sockets and non-sockets. */
export async function removeStaleSocket(socketPath: string): Promise<void> {
  const st = await fsp.lstat(socketPath).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
  if (st === undefined) return;
  if (!st.isSocket()) throw new NbdServerError('INSECURE_PATH', `refusing to replace a non-socket file: ${socketPath}`);
  const live = await new Promise<boolean>((resolve) => {
    const probe = net.connect(socketPath);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (live) throw new NbdServerError('ADDRESS_IN_USE', `another server is listening on ${socketPath}`);
  await fsp.unlink(socketPath).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
  });
}

function listening(server: net.Server): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => {
      server.off('listening', onListening);
      reject(err);
    };
    const onListening = (): void => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
  });
}
