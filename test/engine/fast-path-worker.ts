/**
 * A worker thread for fast-path.test.ts, doing what the FUSE server's workers do: each write
 * first tries the fast path and, when it answers false, is forwarded to the main thread, whose
 * answer it waits for. Each worker owns `count` blocks from `first` on; its writes are sequential,
 * and its write `seq` fills block first + blockOf(seq, count) with the stamp (seq, block), so a
 * checkpoint's content tells which write it holds. Every fourth request also reads one of its
 * blocks through the fast path and counts reads that are not one whole stamp (torn).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { FastPath, type FastPathHandle } from '../../src/engine/index.js';

export const Ctl = {
  /** Set by the main thread: finish the current write and exit. */
  Stop: 0,
  /** Writes issued (the sequence number of the newest). */
  Issued: 1,
  /** Writes completed; notified after each. */
  Completed: 2,
  /** The main thread's answer to a forwarded write: 1 done, 2 failed. */
  Answer: 3,
  Fast: 4,
  Forwarded: 5,
  FastReads: 6,
  TornReads: 7,
} as const;

export interface WorkerData {
  readonly handle: FastPathHandle;
  readonly control: SharedArrayBuffer;
  readonly first: number;
  readonly count: number;
  readonly blockSize: number;
}

/** A forwarded write. */
export interface Forward {
  readonly seq: number;
  readonly fua: boolean;
}

export function blockOf(seq: number, blocks: number): number {
  return (Math.imul(seq, 2654435761) >>> 0) % blocks;
}

export function stamp(seq: number, block: number, blockSize: number): Buffer {
  const b = Buffer.allocUnsafe(blockSize);
  for (let at = 0; at < blockSize; at += 8) {
    b.writeUInt32LE(seq, at);
    b.writeUInt32LE(block, at + 4);
  }
  return b;
}

/** The stamp's sequence number if `b` is one whole stamp of `block` (0 for zeros), else -1. */
export function decode(b: Buffer, block: number): number {
  const seq = b.readUInt32LE(0);
  if (seq === 0) return b.every((x) => x === 0) ? 0 : -1;
  return stamp(seq, block, b.length).equals(b) ? seq : -1;
}

function run(data: WorkerData): void {
  const fast = new FastPath(data.handle);
  const ctl = new Int32Array(data.control);
  const readBuf = Buffer.alloc(data.blockSize);
  for (let seq = 1; Atomics.load(ctl, Ctl.Stop) === 0; seq++) {
    const block = data.first + blockOf(seq, data.count);
    const fua = seq % 7 === 0;
    Atomics.store(ctl, Ctl.Issued, seq);
    if (fast.write(stamp(seq, block, data.blockSize), block * data.blockSize, fua)) {
      Atomics.add(ctl, Ctl.Fast, 1);
    } else {
      Atomics.add(ctl, Ctl.Forwarded, 1);
      Atomics.store(ctl, Ctl.Answer, 0);
      parentPort?.postMessage({ seq, fua } satisfies Forward);
      Atomics.wait(ctl, Ctl.Answer, 0);
      if (Atomics.load(ctl, Ctl.Answer) !== 1) return;
    }
    Atomics.store(ctl, Ctl.Completed, seq);
    Atomics.notify(ctl, Ctl.Completed);
    if (seq % 4 === 0) {
      const other = data.first + blockOf(seq * 31, data.count);
      if (fast.read(readBuf, other * data.blockSize)) {
        Atomics.add(ctl, Ctl.FastReads, 1);
        if (decode(readBuf, other) < 0) Atomics.add(ctl, Ctl.TornReads, 1);
      }
    }
  }
}

if (parentPort) run(workerData as WorkerData);
