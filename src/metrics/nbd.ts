/**
 * NBD data-path metrics of one served volume. The NBD connection calls `observe()` once per
 * answered request; it only adds to preallocated typed arrays (no labels hashed, no objects made),
 * so the hot path stays as it was. Samples are built from those arrays at scrape time, and the
 * gauges (connections, requests in flight) read the server's own state then.
 */
import type { Registry } from 'prom-client';
import { bucketIndex, pushHistogram, registerCollected, type Sample } from './families.js';
import { Metric, NBD_LATENCY_BUCKETS, NBD_OPS } from './names.js';

/** What the NBD server's connections report to (src/nbd/connection.ts RequestObserver). */
export interface NbdRequestObserver {
  /**
   * One answered request: its NBD command type, its length, the seconds from reading it off the
   * socket to handing the reply to the socket, and whether the reply was a success.
   */
  observe(cmd: number, length: number, seconds: number, ok: boolean): void;
}

/** Server state read at scrape time. */
export interface NbdServerGauges {
  connections(): number;
  inflight(): number;
  accepted(): number;
}

const SLOTS = NBD_OPS.length;
const OTHER = SLOTS - 1;
const DISC = NBD_OPS.indexOf('disc');
/** Ops whose length counts as bytes: read, write, trim, write_zeroes. */
const COUNTS_BYTES: readonly boolean[] = NBD_OPS.map((op) => op === 'read' || op === 'write' || op === 'trim' || op === 'write_zeroes');
const BUCKETS = NBD_LATENCY_BUCKETS.length + 1;

export class NbdIoMetrics implements NbdRequestObserver {
  private readonly requests = new Float64Array(SLOTS);
  private readonly errors = new Float64Array(SLOTS);
  private readonly bytes = new Float64Array(SLOTS);
  private readonly sums = new Float64Array(SLOTS);
  private readonly buckets = new Float64Array(SLOTS * BUCKETS);

  observe(cmd: number, length: number, seconds: number, ok: boolean): void {
    const slot = cmd >= 0 && cmd < OTHER ? cmd : OTHER;
    // (Typed-array reads are never undefined here: every index is in range.)
    this.requests[slot] = (this.requests[slot] as number) + 1;
    if (!ok) this.errors[slot] = (this.errors[slot] as number) + 1;
    else if (COUNTS_BYTES[slot] === true) this.bytes[slot] = (this.bytes[slot] as number) + length;
    this.sums[slot] = (this.sums[slot] as number) + seconds;
    const b = slot * BUCKETS + bucketIndex(NBD_LATENCY_BUCKETS, seconds);
    this.buckets[b] = (this.buckets[b] as number) + 1;
  }

  /** Registers this volume's NBD families with `registry`, labelled `volume`. */
  register(registry: Registry, volume: string, server: NbdServerGauges): void {
    const perOp = (values: Float64Array, onlyBytes = false) => (): Sample[] => {
      const out: Sample[] = [];
      for (let slot = 0; slot < SLOTS; slot++) {
        if (slot === DISC || (onlyBytes && COUNTS_BYTES[slot] !== true)) continue;
        out.push({ labels: { volume, op: NBD_OPS[slot] as string }, value: values[slot] as number });
      }
      return out;
    };
    registerCollected(registry, Metric.nbdRequests, perOp(this.requests));
    registerCollected(registry, Metric.nbdRequestErrors, perOp(this.errors));
    registerCollected(registry, Metric.nbdBytes, perOp(this.bytes, true));
    registerCollected(registry, Metric.nbdRequestDuration, () => {
      const out: Sample[] = [];
      for (let slot = 0; slot < SLOTS; slot++) {
        if (slot === DISC) continue;
        pushHistogram(out, Metric.nbdRequestDuration.name, { volume, op: NBD_OPS[slot] as string }, NBD_LATENCY_BUCKETS, this.buckets, slot * BUCKETS, this.sums[slot] as number);
      }
      return out;
    });
    registerCollected(registry, Metric.nbdInflight, () => [{ labels: { volume }, value: server.inflight() }]);
    registerCollected(registry, Metric.nbdConnections, () => [{ labels: { volume }, value: server.connections() }]);
    registerCollected(registry, Metric.nbdConnectionsAccepted, () => [{ labels: { volume }, value: server.accepted() }]);
  }
}
