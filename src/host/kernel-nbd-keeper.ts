/**
 * Keeps kernel-attached nbd devices connected (kernel-nbd.ts says how a device survives the death
 * of its connections): on the kernel's LINK_DEAD event for a device, or when its owner asks
 * (`heal`), it asks the owner for a running server (`ensureServer`; the node plugin restarts the
 * volume's `flashcsi serve` there, src/volumes/kernel-keeper.ts) and hands the device new
 * connections, retrying with backoff until it succeeds or the device is removed.
 */
import { describeAddress, type NbdAddress } from '../nbd/client.js';
import { nbdDevicePath, reconnectKernelDevice, type KernelDevice } from './kernel-nbd.js';
import { LinkDeadEvents } from './nbd-netlink.js';

export interface KeptDevice extends KernelDevice {
  readonly exportName: string;
  /**
   * Makes sure a server for the device is running and says where: called before every reconnect.
   * The node plugin restarts the volume's `flashcsi serve` here when it died.
   */
  ensureServer(): Promise<NbdAddress>;
}

export interface KeeperLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface KeeperOptions {
  readonly log: KeeperLog;
  /** How often the kernel's LINK_DEAD events are read (default 200 ms). */
  readonly pollMs?: number;
  /** First delay between failed reconnect attempts, doubled up to 5 s (default 100 ms). */
  readonly retryMs?: number;
}

/**
 * Keeps kernel-attached devices connected: on a LINK_DEAD event for a device (or `heal()`), it
 * asks the device's owner for a running server (`ensureServer`) and reconnects, retrying with
 * backoff until it succeeds or the device is removed. One heal at a time per device; a request
 * arriving during a heal runs once more afterwards.
 */
export class KernelDeviceKeeper {
  private readonly devices = new Map<number, KeptDevice>();
  private readonly healing = new Map<number, Promise<void>>();
  private readonly again = new Set<number>();
  private readonly events: LinkDeadEvents;
  private readonly timer: NodeJS.Timeout;
  private closed = false;
  /** Reconnects done, for logs and tests. */
  reconnects = 0;

  constructor(private readonly opts: KeeperOptions) {
    this.events = new LinkDeadEvents();
    this.timer = setInterval(() => this.readEvents(), opts.pollMs ?? 200);
    this.timer.unref();
  }

  private readEvents(): void {
    let dead: number[];
    try {
      dead = this.events.poll();
    } catch (err) {
      this.opts.log.error({ err: (err as Error).message }, 'kernel nbd: reading LINK_DEAD events failed');
      return;
    }
    for (const index of new Set(dead)) {
      if (!this.devices.has(index)) continue;
      this.opts.log.warn({ device: nbdDevicePath(index) }, 'kernel nbd: a connection died; reconnecting');
      void this.heal(index);
    }
  }

  /** Starts keeping `dev` connected (replaces an earlier entry for the same index). */
  add(dev: KeptDevice): void {
    this.devices.set(dev.index, dev);
  }

  /** Stops keeping the device (before detaching it); waits for a heal in progress. */
  async remove(index: number): Promise<void> {
    this.devices.delete(index);
    await this.healing.get(index);
  }

  /** Reconnects the device now (after its server was replaced, or when in doubt); resolves when done. */
  heal(index: number): Promise<void> {
    const running = this.healing.get(index);
    if (running !== undefined) {
      this.again.add(index);
      return running;
    }
    const p = (async () => {
      do {
        this.again.delete(index);
        await this.reconnectUntilDone(index);
      } while (this.again.has(index) && this.devices.has(index) && !this.closed);
    })().finally(() => this.healing.delete(index));
    this.healing.set(index, p);
    return p;
  }

  private async reconnectUntilDone(index: number): Promise<void> {
    let delay = this.opts.retryMs ?? 100;
    for (let attempt = 1; ; attempt++) {
      const dev = this.devices.get(index);
      if (dev === undefined || this.closed) return;
      try {
        const address = await dev.ensureServer();
        await reconnectKernelDevice(dev, address, dev.exportName);
        this.reconnects++;
        this.opts.log.info({ device: dev.device, server: describeAddress(address), attempt }, 'kernel nbd: device reconnected');
        return;
      } catch (err) {
        this.opts.log.warn({ device: dev.device, attempt, err: (err as Error).message }, 'kernel nbd: reconnect failed; retrying');
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 5000);
      }
    }
  }

  close(): void {
    this.closed = true;
    clearInterval(this.timer);
    this.events.close();
  }
}
