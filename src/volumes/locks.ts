/**
 * Two ways to keep concurrent CSI calls on the same object apart. Keys are strings chosen by the
 * caller: a volume id, a volume or snapshot name (for idempotent creates), a node-side target path.
 *
 * - InFlight (aws-ebs `inflight.go`): a set of keys with an operation running. A second call for a
 *   busy key does not wait; it fails at once with OperationInFlightError (gRPC ABORTED), which is
 *   what the CSI spec asks for ("operation pending for volume") and lets the CO retry with backoff.
 *   Use it around CSI RPC handlers.
 * - KeyedMutex (TopoLVM `lock.go`): waits its turn. Callers for the same key run one after another
 *   in arrival order; different keys run in parallel. Use it inside the plugin where waiting is
 *   right (a reconcile loop, recovery, two code paths touching one volume's metadata).
 *
 * Both accept several keys at once, for operations that span volumes (group snapshots,
 * multi-volume transactions). KeyedMutex takes them in sorted order, so two multi-key callers
 * cannot deadlock each other.
 *
 * Neither lock is re-entrant: acquiring a key you already hold fails (InFlight) or deadlocks
 * (KeyedMutex). A release function called twice throws, as that is a bug in the caller.
 */
import { OperationInFlightError } from './errors.js';

/** Gives a held lock back. Throws if called twice. */
export type Release = () => void;

function uniqueSorted(keys: string | readonly string[]): string[] {
  return [...new Set(typeof keys === 'string' ? [keys] : keys)].sort();
}

function once(what: string, fn: () => void): Release {
  let released = false;
  return () => {
    if (released) throw new Error(`BUG: ${what} released twice`);
    released = true;
    fn();
  };
}

/** A set of keys with an operation in flight; a busy key is refused, never waited for. */
export class InFlight {
  readonly #busy = new Set<string>();

  /**
   * Marks every key busy and returns the release, or throws OperationInFlightError (naming the first
   * busy key) without marking any of them.
   */
  acquire(keys: string | readonly string[]): Release {
    const all = uniqueSorted(keys);
    const busy = all.find((k) => this.#busy.has(k));
    if (busy !== undefined) throw new OperationInFlightError(busy);
    for (const k of all) this.#busy.add(k);
    return once(`in-flight keys ${all.join(', ')}`, () => {
      for (const k of all) this.#busy.delete(k);
    });
  }

  /** Runs `fn` with the keys marked busy; throws OperationInFlightError if any is busy already. */
  async run<T>(keys: string | readonly string[], fn: () => Promise<T>): Promise<T> {
    const release = this.acquire(keys);
    try {
      return await fn();
    } finally {
      release();
    }
  }

  /** Whether an operation on `key` is running. */
  has(key: string): boolean {
    return this.#busy.has(key);
  }

  /** Number of busy keys (for tests and metrics). */
  get size(): number {
    return this.#busy.size;
  }
}

/** A mutex per key: callers for the same key queue up in arrival order. */
export class KeyedMutex {
  /** Per held key, the resolvers of the callers waiting for it, in order. */
  readonly #waiters = new Map<string, Array<() => void>>();

  /** Waits until every key is free, holds them all, and returns the release. */
  async lock(keys: string | readonly string[]): Promise<Release> {
    const all = uniqueSorted(keys);
    for (const k of all) await this.#lockOne(k);
    return once(`mutex keys ${all.join(', ')}`, () => {
      for (const k of all.toReversed()) this.#unlockOne(k);
    });
  }

  /** Runs `fn` holding the keys. */
  async withLock<T>(keys: string | readonly string[], fn: () => Promise<T>): Promise<T> {
    const release = await this.lock(keys);
    try {
      return await fn();
    } finally {
      release();
    }
  }

  /** Whether `key` is held (for tests and metrics). */
  isLocked(key: string): boolean {
    return this.#waiters.has(key);
  }

  #lockOne(key: string): Promise<void> {
    const queue = this.#waiters.get(key);
    if (queue === undefined) {
      // Free: an empty queue marks the key held.
      this.#waiters.set(key, []);
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => queue.push(resolve));
  }

  #unlockOne(key: string): void {
    const queue = this.#waiters.get(key);
    if (queue === undefined) throw new Error(`BUG: mutex key ${key} unlocked while not held`);
    const next = queue.shift();
    if (next === undefined) this.#waiters.delete(key);
    else next(); // ownership passes straight to the next waiter; the key stays held
  }
}
