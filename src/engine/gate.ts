/**
 * The I/O gate lets a metadata operation see a volume with no I/O in flight, without a lock on
 * the I/O path: I/O enters and leaves with counters; an operation closes the gate to new entries
 * and waits for the counters to fall to zero.
 * - closeWrites(): new writes wait; in-flight writes finish. Used by checkpoint cuts (so every
 *   write lands entirely before or entirely after the cut) and by expand. A write's copy-on-write
 *   phase enters as a reader (cow.ts `overwrite`), so a cut does not wait for copies.
 * - closeAll(): reads wait too. Used by rollback and checkpoint deletion, which change what
 *   reads of the volume or of a checkpoint return.
 * Only one operation closes the gate at a time; callers serialise through the volume's Mutex.
 */
export class Gate {
  private writers = 0;
  private readers = 0;
  private state: 'open' | 'writes-closed' | 'all-closed' = 'open';
  private reopened: Array<() => void> = [];
  private drained: (() => void) | null = null;

  async enterWrite(): Promise<void> {
    while (this.state !== 'open') await this.waitOpen();
    this.writers++;
  }

  leaveWrite(): void {
    this.writers--;
    this.checkDrained();
  }

  async enterRead(): Promise<void> {
    while (this.state === 'all-closed') await this.waitOpen();
    this.readers++;
  }

  leaveRead(): void {
    this.readers--;
    this.checkDrained();
  }

  /** `onWait` is told how much I/O is in flight when the gate has to wait for it. */
  closeWrites(onWait?: (writers: number, readers: number) => void): Promise<void> {
    return this.close('writes-closed', onWait);
  }

  closeAll(onWait?: (writers: number, readers: number) => void): Promise<void> {
    return this.close('all-closed', onWait);
  }

  open(): void {
    this.state = 'open';
    const waiting = this.reopened;
    this.reopened = [];
    for (const wake of waiting) wake();
  }

  private async close(state: 'writes-closed' | 'all-closed', onWait?: (writers: number, readers: number) => void): Promise<void> {
    if (this.state !== 'open') throw new Error('BUG: gate closed twice');
    this.state = state;
    if (this.isDrained()) return;
    onWait?.(this.writers, state === 'all-closed' ? this.readers : 0);
    await new Promise<void>((resolve) => {
      this.drained = resolve;
    });
  }

  private isDrained(): boolean {
    return this.writers === 0 && (this.state !== 'all-closed' || this.readers === 0);
  }

  private checkDrained(): void {
    if (this.drained && this.isDrained()) {
      const done = this.drained;
      this.drained = null;
      done();
    }
  }

  private waitOpen(): Promise<void> {
    return new Promise((resolve) => this.reopened.push(resolve));
  }
}
