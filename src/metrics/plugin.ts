/**
 * The CSI plugin's own metrics: CSI calls, staged volumes, start-up adoption, readiness, scrape
 * errors and the Node.js process metrics (`local`: families no other process reports), and the
 * engine events of volumes the plugin opens itself: snapshots of unstaged volumes, clones,
 * rollbacks by the node agent (`engine`: the same families the serve processes report, merged
 * with theirs at scrape time).
 */
import { collectDefaultMetrics, Registry, type Counter, type Gauge } from 'prom-client';
import { CsiCallMetrics } from './csi.js';
import { EngineMetrics } from './engine.js';
import { counter, gauge } from './families.js';
import { Metric } from './names.js';

export const ADOPTION_RESULTS = ['adopted', 'restarted', 'abnormal', 'cleaned'] as const;
export type AdoptionResult = (typeof ADOPTION_RESULTS)[number];

export class PluginMetrics {
  readonly local = new Registry();
  readonly shared = new Registry();
  readonly calls: CsiCallMetrics;
  readonly engine: EngineMetrics;
  private readonly staged: Gauge;
  private readonly adoption: Gauge;
  private readonly ready: Gauge;
  private readonly scrapeErrors: Counter;

  constructor(opts: { processMetrics?: boolean } = {}) {
    if (opts.processMetrics ?? true) collectDefaultMetrics({ register: this.local });
    this.calls = new CsiCallMetrics(this.local);
    this.staged = gauge(this.local, Metric.volumesStaged);
    this.adoption = gauge(this.local, Metric.adoption);
    this.ready = gauge(this.local, Metric.pluginReady);
    this.scrapeErrors = counter(this.local, Metric.scrapeErrors);
    this.engine = new EngineMetrics(this.shared);
    this.ready.set(0);
  }

  setStaged(count: number): void {
    this.staged.set(count);
  }

  setAdoption(counts: Readonly<Record<AdoptionResult, number>>): void {
    for (const result of ADOPTION_RESULTS) this.adoption.set({ result }, counts[result]);
  }

  setReady(ready: boolean): void {
    this.ready.set(ready ? 1 : 0);
  }

  scrapeError(volume: string): void {
    this.scrapeErrors.inc({ volume });
  }
}
