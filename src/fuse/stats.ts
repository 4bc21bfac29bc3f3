/**
 * I/O counters of the FUSE export, shared by its worker threads and its main thread: one
 * SharedArrayBuffer of BigInt64 slots that each side adds to with Atomics when it answers a data
 * request, and that the owner reads as plain numbers (snapshot(), at scrape time). No message
 * crosses threads for them, and nothing is allocated per request but the BigInts of the adds.
 *
 * Design notes
 * - Counted just before the reply, by whichever thread writes it (so whoever has seen a reply
 *   finds its request counted): a request the worker answers (fast path, or refused at once)
 *   counts as `fast`; one it forwards counts as `forwarded` when the main thread replies. So
 *   fast + forwarded = requests answered, and a request in flight counts nowhere.
 * - Latency: from the worker's read(2) returning the request to its reply being written (a
 *   forwarded request carries its start time to the main thread), as per-bucket counts on the
 *   owner's bounds plus a sum: a histogram costs one more add than a sum and a count, and gives
 *   the quantiles an operator's NBD dashboards already use.
 * - Only the data operations are counted (the loop device's read, write, flush = FSYNC, discard =
 *   FALLOCATE PUNCH_HOLE, write-zeroes = FALLOCATE ZERO_RANGE); metadata requests are not I/O.
 *
 * Layout (BigInt64 slots), per operation, operations in FUSE_STAT_OPS order, STRIDE slots each:
 *   0 fast         requests answered by a worker
 *   1 forwarded    requests answered by the main thread
 *   2 errors       of those, answered with an errno
 *   3 bytes        bytes of the successful ones: data read or written; the range of trim/zeroes
 *   4 nanos        sum of their latencies, in nanoseconds
 *   5 …            latency bucket counts (not cumulative): one per bound, then one above them all
 */
import { Falloc, Op } from './wire.js';

/** The operations counted, as the `op` label names them (the NBD series' names for the same). */
export const FUSE_STAT_OPS = ['read', 'write', 'flush', 'trim', 'write_zeroes'] as const;
export type FuseStatOp = (typeof FUSE_STAT_OPS)[number];

const FAST = 0;
const FORWARDED = 1;
const ERRORS = 2;
const BYTES = 3;
const NANOS = 4;
const BUCKETS = 5;

/** Slots per operation with `bounds` latency bounds: the counts above, a bucket per bound, one above them all. */
function strideFor(bounds: readonly number[]): number {
  return BUCKETS + bounds.length + 1;
}

/** One operation's counts, as plain numbers. */
export interface FuseOpStats {
  readonly op: FuseStatOp;
  readonly fast: number;
  readonly forwarded: number;
  readonly errors: number;
  readonly bytes: number;
  readonly seconds: number;
  /** Per-bucket latency counts on `bounds` (not cumulative), then the count above the last bound. */
  readonly buckets: Float64Array;
}

/** What a thread needs to count into the shared slots (structured-cloned to the workers). */
export interface FuseStatsHandle {
  readonly shared: SharedArrayBuffer;
  /** Latency bucket upper bounds, in nanoseconds, ascending. */
  readonly boundsNs: readonly number[];
}

/**
 * The index in FUSE_STAT_OPS of a data request's operation, -1 for metadata. FALLOCATE: punch-hole
 * is `trim`, any other mode `write_zeroes` (a refused plain allocation included, as an error).
 */
export function statOp(opcode: number, fallocateMode = 0): number {
  switch (opcode) {
    case Op.Read:
      return 0;
    case Op.Write:
      return 1;
    case Op.Fsync:
      return 2;
    case Op.Fallocate:
      return (fallocateMode & Falloc.PunchHole) !== 0 ? 3 : 4;
    default:
      return -1;
  }
}

/** Adds answered requests to the shared slots: used by the workers and the main thread alike. */
export class FuseCounter {
  private readonly slots: BigInt64Array;
  private readonly stride: number;

  constructor(private readonly handle: FuseStatsHandle) {
    this.stride = strideFor(handle.boundsNs);
    this.slots = new BigInt64Array(handle.shared);
  }

  /**
   * One answered request: its operation (statOp), whether the main thread answered it, its errno
   * (0: success), the bytes it covered, and the hrtime it was read at.
   */
  answered(op: number, forwarded: boolean, errno: number, bytes: number, start: bigint): void {
    if (op < 0) return;
    const base = op * this.stride;
    const nanos = process.hrtime.bigint() - start;
    Atomics.add(this.slots, base + (forwarded ? FORWARDED : FAST), 1n);
    if (errno !== 0) Atomics.add(this.slots, base + ERRORS, 1n);
    else if (bytes > 0) Atomics.add(this.slots, base + BYTES, BigInt(bytes));
    Atomics.add(this.slots, base + NANOS, nanos);
    const bounds = this.handle.boundsNs;
    const n = Number(nanos);
    let b = 0;
    while (b < bounds.length && n > (bounds[b] as number)) b++;
    Atomics.add(this.slots, base + BUCKETS + b, 1n);
  }
}

/** The counters of one export (or of every export one process mounts in turn): their owner's side. */
export class FuseStats {
  readonly handle: FuseStatsHandle;
  private readonly slots: BigInt64Array;
  private readonly stride: number;

  /** `bounds`: latency bucket upper bounds in seconds, ascending. */
  constructor(readonly bounds: readonly number[]) {
    this.stride = strideFor(bounds);
    const shared = new SharedArrayBuffer(FUSE_STAT_OPS.length * this.stride * BigInt64Array.BYTES_PER_ELEMENT);
    this.handle = { shared, boundsNs: bounds.map((s) => Math.round(s * 1e9)) };
    this.slots = new BigInt64Array(shared);
  }

  /** The counts now, one entry per operation in FUSE_STAT_OPS order. */
  snapshot(): FuseOpStats[] {
    const load = (i: number): number => Number(Atomics.load(this.slots, i));
    return FUSE_STAT_OPS.map((op, i) => {
      const base = i * this.stride;
      const buckets = new Float64Array(this.bounds.length + 1);
      for (let b = 0; b < buckets.length; b++) buckets[b] = load(base + BUCKETS + b);
      return { op, fast: load(base + FAST), forwarded: load(base + FORWARDED), errors: load(base + ERRORS), bytes: load(base + BYTES), seconds: load(base + NANOS) / 1e9, buckets };
    });
  }
}
