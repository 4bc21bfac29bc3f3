/**
 * Keeps the node's kernel-attached volumes attached when their data path dies. The device was
 * attached with a dead-connection timeout (src/host/kernel-nbd.ts), so when `flashcsi serve`
 * dies the kernel holds the application's I/O instead of failing it. Within that window this:
 *  1. notices: the kernel's LINK_DEAD event for the device, or (every CHECK_MS, in case an event
 *     was missed) a server process that is gone;
 *  2. restarts the volume's server on the same socket, recording the new process in stage.json,
 *     under the volume's in-flight key (a CSI call on the volume runs first; the keeper retries);
 *  3. hands the device new connections (NBD_CMD_RECONFIGURE).
 * Requests that were in flight on the dead connections are sent again once their I/O timeout
 * passes; nothing reaches the application as an error. A plugin that was down when the server
 * died does the same at start-up (`heal`, from adoption).
 *
 * A live server whose connection died (the kernel timed out a request) is not restarted: the
 * device just gets new connections to it.
 */
import type { AttachmentRecord } from '../host/attachment.js';
import { KernelDeviceKeeper } from '../host/kernel-nbd-keeper.js';
import { nbdIndex } from '../host/kernel-nbd.js';
import { isProcessAlive } from '../host/process.js';
import type { ServeLauncher } from '../host/serve-process.js';
import type { NbdAddress } from '../nbd/client.js';
import { componentLogger, type Logger } from '../log/logger.js';
import { CsiError, CsiErrorCode } from './errors.js';
import type { Release } from './locks.js';
import type { StateDir } from './state.js';

/** How often watched volumes' servers are checked besides the kernel's events. */
const CHECK_MS = 5_000;

export interface KernelVolumeKeeperOptions {
  readonly state: StateDir;
  readonly launcher: ServeLauncher;
  readonly logger: Logger;
  /** Takes the volume's in-flight key (throws while a CSI call holds it); returns its release. */
  readonly lock?: (volumeId: string) => Release;
}

export class KernelVolumeKeeper {
  readonly #opts: KernelVolumeKeeperOptions;
  readonly #log: Logger;
  #devices: KernelDeviceKeeper | undefined;
  readonly #watched = new Map<string, number>();
  #timer: NodeJS.Timeout | undefined;

  constructor(opts: KernelVolumeKeeperOptions) {
    this.#opts = opts;
    this.#log = componentLogger(opts.logger, 'kernel-keeper');
  }

  /** Created on first use: only nodes that attach through the kernel need the nbd netlink family. */
  #keeper(): KernelDeviceKeeper {
    if (this.#devices === undefined) {
      this.#devices = new KernelDeviceKeeper({ log: this.#log });
      this.#timer = setInterval(() => void this.#checkServers(), CHECK_MS);
      this.#timer.unref();
    }
    return this.#devices;
  }

  /** Starts keeping a staged volume's kernel device attached. */
  watch(volumeId: string, attachment: AttachmentRecord): void {
    if (attachment.method !== 'kernel' || attachment.identifier === undefined) return;
    const index = nbdIndex(attachment.device);
    this.#watched.set(volumeId, index);
    this.#keeper().add({
      device: attachment.device,
      index,
      identifier: attachment.identifier,
      connections: attachment.connections ?? 1,
      exportName: '',
      ensureServer: () => this.#ensureServer(volumeId),
    });
  }

  /** Stops keeping the volume (before it is detached); waits for a reconnect in progress. */
  async unwatch(volumeId: string): Promise<void> {
    const index = this.#watched.get(volumeId);
    if (index === undefined) return;
    this.#watched.delete(volumeId);
    await this.#devices?.remove(index);
  }

  /** Restarts the volume's server if it died and reconnects the device; resolves when done. */
  async heal(volumeId: string): Promise<void> {
    const index = this.#watched.get(volumeId);
    if (index !== undefined) await this.#keeper().heal(index);
  }

  async #checkServers(): Promise<void> {
    for (const [volumeId, index] of this.#watched) {
      const rec = await this.#opts.state.readStage(volumeId).catch(() => undefined);
      if (rec?.serve != null && !isProcessAlive(rec.serve.process)) {
        this.#log.warn({ volumeId, pid: rec.serve.process.pid }, "the volume's data-path server is gone; restarting it and reconnecting its device");
        void this.#devices?.heal(index);
      }
    }
  }

  /** The volume's server, started again on its socket if it died. */
  async #ensureServer(volumeId: string): Promise<NbdAddress> {
    const release = this.#opts.lock?.(volumeId);
    try {
      const rec = await this.#opts.state.readStage(volumeId);
      if (rec?.serve == null) throw new CsiError(CsiErrorCode.FailedPrecondition, `volume ${volumeId} has no data-path server on record`);
      if (isProcessAlive(rec.serve.process)) return { path: rec.serve.socket };
      const serve = await this.#opts.launcher.start({ volumeDir: this.#opts.state.volumeDir(volumeId), socket: rec.serve.socket, logFile: rec.serve.log });
      await this.#opts.state.writeStage({ ...rec, serve: { ...rec.serve, process: serve.process } });
      this.#log.warn({ volumeId, pid: serve.process.pid }, "restarted the volume's data-path server; its kernel device reconnects to it");
      return { path: rec.serve.socket };
    } finally {
      release?.();
    }
  }

  close(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#devices?.close();
  }
}
