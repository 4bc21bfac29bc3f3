/**
 * Per-grain tokens, after "Token Synchronized I/O" (../shared/seeds): owning a grain's token
 * serialises the copy of that grain into the newest checkpoint with every other write of the
 * grain that still needs the copy, and with checkpoint readers that would read the grain from the
 * base image. Writes to different grains never wait for each other.
 *
 * Only held tokens take memory. Acquirers always take a set of tokens in ascending grain order,
 * so two acquirers can never wait for each other in a cycle.
 */
export class TokenTable {
  private readonly held = new Map<number, Array<() => void>>();
  /** How many times an acquirer had to wait for a token held by someone else. */
  waits = 0;

  /**
   * Acquires the tokens of `grains`, which must be sorted ascending and distinct. `onWait` is
   * called once, when the first token turns out to be held by someone else.
   */
  async acquire(grains: readonly number[], onWait?: () => void): Promise<void> {
    let waiting = false;
    for (const grain of grains) {
      for (let waiters = this.held.get(grain); waiters; waiters = this.held.get(grain)) {
        if (!waiting) {
          waiting = true;
          this.waits++;
          onWait?.();
        }
        await new Promise<void>((resolve) => waiters.push(resolve));
      }
      this.held.set(grain, []);
    }
  }

  release(grains: readonly number[]): void {
    for (const grain of grains) {
      const waiters = this.held.get(grain);
      if (!waiters) throw new Error(`BUG: releasing token ${grain} that is not held`);
      this.held.delete(grain);
      for (const wake of waiters) wake();
    }
  }

  /** Number of tokens held right now. */
  get size(): number {
    return this.held.size;
  }
}
