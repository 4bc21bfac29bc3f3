/**
 * Volume engine metrics, fed from the engine's diagnostics-channel events (the nbd layer's
 * observeEngine() subscribes and calls these). Every series is labelled `volume`. These events are
 * per copy batch, per wait, per cut, per restored grain: far rarer than NBD requests, so ordinary
 * prom-client metrics are cheap enough here.
 */
import type { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { counter, gauge, histogram } from './families.js';
import { CUT_LATENCY_BUCKETS, Metric } from './names.js';

export class EngineMetrics {
  private readonly cowGrains: Counter;
  private readonly cowBytes: Counter;
  private readonly tokenWaits: Counter;
  private readonly quiesceWaits: Counter;
  private readonly cutDuration: Histogram;
  private readonly rollbackRestored: Gauge;
  private readonly rollbackTotal: Gauge;
  private readonly rollbackRestoredTotal: Counter;

  constructor(registry: Registry) {
    this.cowGrains = counter(registry, Metric.cowGrains);
    this.cowBytes = counter(registry, Metric.cowBytes);
    this.tokenWaits = counter(registry, Metric.tokenWaits);
    this.quiesceWaits = counter(registry, Metric.quiesceWaits);
    this.cutDuration = histogram(registry, Metric.cutDuration, CUT_LATENCY_BUCKETS);
    this.rollbackRestored = gauge(registry, Metric.rollbackRestored);
    this.rollbackTotal = gauge(registry, Metric.rollbackTotal);
    this.rollbackRestoredTotal = counter(registry, Metric.rollbackRestoredTotal);
  }

  /** Starts every counter of `volume` at zero, so its series exist (and rate() works) from the start. */
  zero(volume: string): void {
    for (const c of [this.cowGrains, this.cowBytes, this.tokenWaits, this.rollbackRestoredTotal]) c.inc({ volume }, 0);
    this.cutDuration.zero({ volume });
  }

  copied(volume: string, grains: number, bytes: number): void {
    this.cowGrains.inc({ volume }, grains);
    this.cowBytes.inc({ volume }, bytes);
  }

  tokenWait(volume: string): void {
    this.tokenWaits.inc({ volume });
  }

  quiesce(volume: string, op: string): void {
    this.quiesceWaits.inc({ volume, op });
  }

  cut(volume: string, seconds: number): void {
    this.cutDuration.observe({ volume }, seconds);
  }

  /** One more grain restored (`done` of `total`); the gauges go away when the rollback is done. */
  rollbackProgress(volume: string, done: number, total: number): void {
    this.rollbackRestoredTotal.inc({ volume });
    if (done >= total) {
      this.rollbackRestored.remove({ volume });
      this.rollbackTotal.remove({ volume });
      return;
    }
    this.rollbackRestored.set({ volume }, done);
    this.rollbackTotal.set({ volume }, total);
  }
}
