/**
 * The data-path process of one volume (`flashcsi serve`): opens the volume (holding its lock and
 * running recovery first), serves it over NBD on a unix socket (mode 0600, in a directory that
 * must not be group/world-writable), answers control requests on a second socket, and announces
 * both in the volume's serve.json. Stopping finishes in-flight requests, flushes, and closes the
 * volume cleanly.
 *
 * Metrics: the process keeps its own prom-client registry (NBD and FUSE requests, bytes and
 * latency by operation, connections, engine events, checkpoints), every series labelled `volume`, and answers
 * the control op `metrics` with it; the CSI plugin merges them into its /metrics.
 */
import * as path from 'node:path';
import { Registry } from 'prom-client';
import { Volume } from '../engine/index.js';
import { Mutex } from '../engine/mutex.js';
import type { Logger } from '../log/logger.js';
import { EngineMetrics } from '../metrics/engine.js';
import { registerCollected } from '../metrics/families.js';
import { registerFuseIo } from '../metrics/fuse.js';
import { FUSE_LATENCY_BUCKETS, Metric } from '../metrics/names.js';
import { NbdIoMetrics } from '../metrics/nbd.js';
import { mountFuseExport, type FuseExport } from '../fuse/export.js';
import { FuseStats } from '../fuse/stats.js';
import { ControlError, removeServeInfo, startControlServer, writeServeInfo, type ControlServer, type ServeInfo } from './control.js';
import { observeEngine } from './engine-metrics.js';
import { NbdServer, ensurePrivateDir } from './server.js';
import { VolumeExportProvider } from './volume-export.js';

export interface ServeOptions {
  readonly dir: string;
  /** The NBD unix socket; the control socket is `<socket>.ctl`. */
  readonly socket: string;
  /** Also listen on TCP: only when explicitly asked for. */
  readonly listen?: { readonly host: string; readonly port: number };
  readonly logger: Logger;
  /** The `volume` label of this process's metrics; the directory's base name (the CSI volume id) unless set. */
  readonly volumeLabel?: string;
  /** Worker threads of the FUSE export (`--fuse-workers`); src/fuse/export.ts's default unless set. */
  readonly fuseWorkers?: number;
}

export interface RunningServe {
  readonly info: ServeInfo;
  readonly volume: Volume;
  /** This process's metrics (what the control op `metrics` returns). */
  readonly registry: Registry;
  /** Stops accepting, finishes in-flight requests, flushes, closes the volume. Idempotent. */
  stop(): Promise<void>;
}

export function controlSocketPath(socket: string): string {
  return `${socket}.ctl`;
}

/**
 * The volume's FUSE export (src/fuse), mounted when the plugin asks (control op `fuse.mount`):
 * at most one mountpoint at a time. Asking again for the same mountpoint while it is mounted
 * answers the same file (a retried stage); the export ends when the plugin unmounts it, or when
 * serve stops (a lazy unmount then, if a loop device still holds the file). Every export counts its
 * I/O into the same `stats`, so the volume's FUSE series run on across remounts. Mounts and the
 * final close take turns: a second `fuse.mount` sent while the first is still mounting (a retry
 * after a timeout) waits for it and then finds it mounted, instead of stacking a second FUSE mount
 * (and its workers) on the same mountpoint.
 */
class FuseMounts {
  #current: { readonly mountpoint: string; readonly export: FuseExport } | null = null;
  readonly #turns = new Mutex();
  readonly stats = new FuseStats(FUSE_LATENCY_BUCKETS);

  constructor(
    private readonly volume: Volume,
    private readonly log: Logger,
    private readonly workers: number | undefined,
  ) {}

  mount(mountpoint: string): Promise<{ file: string; pid: number }> {
    return this.#turns.run(() => this.#mount(mountpoint));
  }

  async #mount(mountpoint: string): Promise<{ file: string; pid: number }> {
    const current = this.#current;
    if (current !== null) {
      if (current.mountpoint !== mountpoint) throw new ControlError('FAILED_PRECONDITION', `the volume's FUSE file is already mounted on ${current.mountpoint}`);
      return { file: current.export.file, pid: process.pid };
    }
    const exported = await mountFuseExport({
      mountpoint,
      volume: this.volume,
      stats: this.stats,
      log: (msg, fields) => this.log.info(fields ?? {}, msg),
      ...(this.workers === undefined ? {} : { workers: this.workers }),
    });
    const entry = { mountpoint, export: exported };
    this.#current = entry;
    void exported.closed.then(() => {
      if (this.#current === entry) this.#current = null;
      this.log.info({ mountpoint }, 'serve: FUSE file unmounted');
    });
    this.log.info({ mountpoint, file: exported.file }, 'serve: FUSE file mounted');
    return { file: exported.file, pid: process.pid };
  }

  /** The volume grew: the FUSE file shows the new size at its next getattr. */
  resized(): void {
    this.#current?.export.resized();
  }

  /** Ends the export, after a mount still under way. */
  close(): Promise<void> {
    return this.#turns.run(async () => {
      await this.#current?.export.close({ lazy: true });
    });
  }
}

export async function serveVolume(opts: ServeOptions): Promise<RunningServe> {
  const log = opts.logger;
  await ensurePrivateDir(path.dirname(opts.socket));
  const volume = await Volume.open(opts.dir);
  const recovery = (await volume.info()).recovery;
  if (recovery.completed.length > 0) log.warn({ dir: opts.dir, completed: recovery.completed }, 'serve: finished operations a crash interrupted');
  const label = opts.volumeLabel ?? path.basename(path.resolve(opts.dir));
  const registry = new Registry();
  const io = new NbdIoMetrics();
  const engine = new EngineMetrics(registry);
  engine.zero(label);
  const dir = path.resolve(opts.dir);
  const unobserve = observeEngine(engine, (d) => (d === opts.dir || path.resolve(d) === dir ? label : undefined));
  const nbd = new NbdServer({ provider: new VolumeExportProvider(volume), logger: log, observer: io });
  io.register(registry, label, { connections: () => nbd.connections.size, inflight: () => nbd.inflight, accepted: () => nbd.stats.accepted });
  registerCollected(registry, Metric.checkpoints, () => [{ labels: { volume: label }, value: volume.checkpoints().length }]);
  let control: ControlServer | undefined;
  const fuse = new FuseMounts(volume, log, opts.fuseWorkers);
  registerFuseIo(registry, label, () => fuse.stats.snapshot());
  try {
    await nbd.listenUnix(opts.socket);
    let listen: string | undefined;
    if (opts.listen) {
      const addr = await nbd.listenTcp(opts.listen.host, opts.listen.port);
      listen = `${addr.address}:${addr.port}`;
    }
    control = await startControlServer(
      volume,
      controlSocketPath(opts.socket),
      // Every scrape asks for metrics: not worth a line at info level each time.
      (req) => (req.op === 'metrics' ? log.debug({ op: req.op }, 'serve: control request') : log.info({ op: req.op }, 'serve: control request')),
      { metrics: () => registry.getMetricsAsJSON(), fuseMount: (mountpoint) => fuse.mount(mountpoint), expanded: () => fuse.resized() },
    );
    const info: ServeInfo = {
      pid: process.pid,
      socket: opts.socket,
      control: control.path,
      ...(listen === undefined ? {} : { listen }),
      startedAt: new Date().toISOString(),
    };
    writeServeInfo(opts.dir, info);
    log.info({ dir: opts.dir, ...info }, 'serve: ready');
    let stopping: Promise<void> | undefined;
    const ctl = control;
    return {
      info,
      volume,
      registry,
      stop() {
        stopping ??= (async () => {
          removeServeInfo(opts.dir);
          await ctl.close();
          await fuse.close();
          await nbd.close();
          await volume.close();
          unobserve();
          log.info({ dir: opts.dir }, 'serve: stopped');
        })();
        return stopping;
      },
    };
  } catch (err) {
    await control?.close().catch(() => undefined);
    await fuse.close().catch(() => undefined);
    await nbd.close().catch(() => undefined);
    await volume.close().catch(() => undefined);
    unobserve();
    throw err;
  }
}
