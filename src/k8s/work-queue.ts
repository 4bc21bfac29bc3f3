/**
 * A keyed work queue, as controllers use: adding a key already waiting is a no-op, a key is never
 * processed by two workers at once (an add during processing runs it again afterwards), and a
 * key can be scheduled for later (timeouts, backoff). Failures back off exponentially per key.
 */
export type Handler = (key: string) => Promise<{ requeueAfterMs?: number } | undefined>;

export class WorkQueue {
  private readonly ready: string[] = [];
  private readonly queued = new Set<string>();
  private readonly active = new Set<string>();
  private readonly again = new Set<string>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly failures = new Map<string, number>();
  private running = 0;
  private stopped = false;

  constructor(
    private readonly handler: Handler,
    private readonly onError: (key: string, err: unknown) => void,
    private readonly workers = 4,
    private readonly maxBackoffMs = 60_000,
  ) {}

  add(key: string, delayMs = 0): void {
    if (this.stopped) return;
    if (delayMs > 0) {
      const existing = this.timers.get(key);
      if (existing) clearTimeout(existing);
      this.timers.set(
        key,
        setTimeout(() => {
          this.timers.delete(key);
          this.add(key);
        }, delayMs),
      );
      return;
    }
    if (this.active.has(key)) {
      this.again.add(key);
      return;
    }
    if (this.queued.has(key)) return;
    this.queued.add(key);
    this.ready.push(key);
    this.pump();
  }

  private pump(): void {
    while (!this.stopped && this.running < this.workers && this.ready.length > 0) {
      const key = this.ready.shift() as string;
      this.queued.delete(key);
      this.active.add(key);
      this.running++;
      void this.run(key);
    }
  }

  private async run(key: string): Promise<void> {
    let delay: number | undefined;
    try {
      const result = await this.handler(key);
      this.failures.delete(key);
      delay = result?.requeueAfterMs;
    } catch (err) {
      const n = (this.failures.get(key) ?? 0) + 1;
      this.failures.set(key, n);
      delay = Math.min(this.maxBackoffMs, 100 * 2 ** Math.min(n, 12));
      this.onError(key, err);
    } finally {
      this.active.delete(key);
      this.running--;
    }
    if (this.again.delete(key)) this.add(key);
    else if (delay !== undefined) this.add(key, delay);
    this.pump();
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
  }
}
