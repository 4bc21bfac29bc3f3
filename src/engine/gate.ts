/**
 * The I/O gate lets a metadata operation see a volume with no I/O in flight, without a lock on
 * the I/O path: I/O enters and leaves with counters; an operation closes the gate to new entries
 * and waits for the counters to fall to zero.
 * - closeWrites(): new writes wait; in-flight writes finish. Used by checkpoint cuts (so every
 *   write lands entirely before or entirely after the cut) and by expand. A write's copy-on-write
 *   phase enters as a reader (cow.ts `overwrite`), so a cut does not wait for copies.
 * - closeAll(): reads wait too. Used by rollback and checkpoint deletion, which change what
 *   reads of the volume or of a checkpoint return.
 * - Shared (fast-path.ts): once worker threads serve the volume, the state is mirrored into shared
 *   memory and a close also waits for the workers' counters there; a worker increments its
 *   counter, then checks the state, and the close stores the state, then checks the counters, so
 *   one of them sees the other. `beforeOpen` brings the workers' view of the volume up to date
 *   before any of them may enter again.
 * Only one operation closes the gate at a time; callers serialise through the volume's Mutex.
 */
import { GateCode, GateWord } from './fast-path.js';

type State = 'open' | 'writes-closed' | 'all-closed';
const codes: Record<State, GateCode> = { open: GateCode.Open, 'writes-closed': GateCode.WritesClosed, 'all-closed': GateCode.AllClosed };

export class Gate {
  private writers = 0;
  private readers = 0;
  private state: State = 'open';
  private reopened: Array<() => void> = [];
  private drained: (() => void) | null = null;
  private shared: { words: Int32Array; beforeOpen: () => void } | null = null;

  /** Mirrors the gate into workers' shared `words` from now on; `beforeOpen` runs before every reopening. */
  share(words: Int32Array, beforeOpen: () => void): void {
    this.shared = { words, beforeOpen };
    Atomics.store(words, GateWord.State, codes[this.state]);
  }

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
    if (this.shared) {
      this.shared.beforeOpen();
      Atomics.store(this.shared.words, GateWord.State, GateCode.Open);
    }
    this.state = 'open';
    const waiting = this.reopened;
    this.reopened = [];
    for (const wake of waiting) wake();
  }

  private async close(state: 'writes-closed' | 'all-closed', onWait?: (writers: number, readers: number) => void): Promise<void> {
    if (this.state !== 'open') throw new Error('BUG: gate closed twice');
    this.state = state;
    const words = this.shared?.words;
    if (words) Atomics.store(words, GateWord.State, codes[state]);
    const sides = state === 'all-closed' ? [GateWord.Writers, GateWord.Readers] : [GateWord.Writers];
    const workers = (side: number): number => (words ? Atomics.load(words, side) : 0);
    if (this.isDrained() && sides.every((side) => workers(side) === 0)) return;
    onWait?.(this.writers + workers(GateWord.Writers), state === 'all-closed' ? this.readers + workers(GateWord.Readers) : 0);
    if (!this.isDrained()) {
      await new Promise<void>((resolve) => {
        this.drained = resolve;
      });
    }
    // Workers that enter from now on see the state and leave at once; wait for those inside.
    if (words) for (const side of sides) await drainedSide(words, side);
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

/** Waits until a shared counter is zero; a worker leaving notifies when it reaches zero (fast-path.ts). */
async function drainedSide(words: Int32Array, side: number): Promise<void> {
  for (;;) {
    const n = Atomics.load(words, side);
    if (n === 0) return;
    const wait = Atomics.waitAsync(words, side, n);
    if (wait.async) await wait.value;
  }
}
