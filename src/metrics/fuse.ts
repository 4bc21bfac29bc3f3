/**
 * I/O metrics of a volume's FUSE file (src/fuse), served by `flashcsi serve` itself on the
 * serve-fuse path, where no I/O goes over NBD. The export's worker threads and main thread count in
 * shared memory (src/fuse/stats.ts); this reads those counts as plain numbers at scrape time.
 * src/metrics does not import src/fuse: the shape below is what FuseStats.snapshot() returns.
 */
import type { Registry } from 'prom-client';
import { pushHistogram, registerCollected, type Sample } from './families.js';
import { FUSE_LATENCY_BUCKETS, Metric } from './names.js';

/** One operation's counts (src/fuse/stats.ts FuseOpStats). */
export interface FuseOpCounts {
  /** `read`, `write`, `flush`, `trim` or `write_zeroes`. */
  readonly op: string;
  readonly fast: number;
  readonly forwarded: number;
  readonly errors: number;
  readonly bytes: number;
  readonly seconds: number;
  /** Per-bucket latency counts on FUSE_LATENCY_BUCKETS (not cumulative), then the count above them. */
  readonly buckets: Float64Array;
}

/** Registers the FUSE families of one volume; `counts` is read at each scrape. */
export function registerFuseIo(registry: Registry, volume: string, counts: () => readonly FuseOpCounts[]): void {
  const each = (fn: (c: FuseOpCounts, out: Sample[]) => void) => (): Sample[] => {
    const out: Sample[] = [];
    for (const c of counts()) fn(c, out);
    return out;
  };
  registerCollected(
    registry,
    Metric.fuseRequests,
    each((c, out) => {
      out.push({ labels: { volume, op: c.op, path: 'fast' }, value: c.fast });
      out.push({ labels: { volume, op: c.op, path: 'forwarded' }, value: c.forwarded });
    }),
  );
  registerCollected(registry, Metric.fuseRequestErrors, each((c, out) => out.push({ labels: { volume, op: c.op }, value: c.errors })));
  // A flush covers no range: no bytes series for it (as for NBD).
  registerCollected(
    registry,
    Metric.fuseBytes,
    each((c, out) => {
      if (c.op !== 'flush') out.push({ labels: { volume, op: c.op }, value: c.bytes });
    }),
  );
  registerCollected(
    registry,
    Metric.fuseRequestDuration,
    each((c, out) => pushHistogram(out, Metric.fuseRequestDuration.name, { volume, op: c.op }, FUSE_LATENCY_BUCKETS, c.buckets, 0, c.seconds)),
  );
}
