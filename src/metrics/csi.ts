/**
 * CSI call metrics: the gRPC adapter (src/csi/unary.ts) reports every finished call here, with its
 * full method path and status code name.
 */
import type { Counter, Histogram, Registry } from 'prom-client';
import { counter, histogram } from './families.js';
import { CSI_LATENCY_BUCKETS, Metric } from './names.js';

/** What the gRPC adapter reports each finished call to. */
export interface CallObserver {
  /** `method` is the full path (`/csi.v1.Controller/CreateVolume`), `code` the status name (`OK`, `NOT_FOUND`, …). */
  observeCall(method: string, code: string, seconds: number): void;
}

/** `/csi.v1.Controller/CreateVolume` → grpc_service `csi.v1.Controller`, grpc_method `CreateVolume`. */
export function splitMethod(path: string): { grpc_service: string; grpc_method: string } {
  const m = /^\/?([^/]+)\/([^/]+)$/.exec(path);
  return m ? { grpc_service: m[1] as string, grpc_method: m[2] as string } : { grpc_service: '', grpc_method: path };
}

export class CsiCallMetrics implements CallObserver {
  private readonly requests: Counter;
  private readonly duration: Histogram;

  constructor(registry: Registry) {
    this.requests = counter(registry, Metric.csiRequests);
    this.duration = histogram(registry, Metric.csiRequestDuration, CSI_LATENCY_BUCKETS);
  }

  observeCall(path: string, code: string, seconds: number): void {
    const labels = { ...splitMethod(path), grpc_code: code };
    this.requests.inc(labels);
    this.duration.observe(labels, seconds);
  }
}
