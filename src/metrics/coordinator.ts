/**
 * Coordinator metrics. The phase gauges are read from the leader's informer caches at scrape time
 * (`phaseCounts`); a coordinator that is not leading has no caches and reports no phase samples,
 * so summing over replicas never counts an object twice.
 */
import { collectDefaultMetrics, Registry, type Counter, type Gauge } from 'prom-client';
import { counter, gauge, registerCollected, type Sample } from './families.js';
import { Metric } from './names.js';

export interface PhaseCounts {
  readonly transactions: Readonly<Record<string, number>>;
  readonly rollbacks: Readonly<Record<string, number>>;
}

export class CoordinatorMetrics {
  /** Everything the coordinator's /metrics shows (with the Node.js process metrics). */
  readonly registry = new Registry();
  private readonly decisions: Counter;
  private readonly reconcileErrors: Counter;
  private readonly leader: Gauge;

  constructor(phaseCounts: () => PhaseCounts | null, opts: { processMetrics?: boolean } = {}) {
    const registry = this.registry;
    if (opts.processMetrics ?? true) collectDefaultMetrics({ register: registry });
    const phases = (pick: (c: PhaseCounts) => Readonly<Record<string, number>>) => (): Sample[] => {
      const counts = phaseCounts();
      return counts === null ? [] : Object.entries(pick(counts)).map(([phase, value]) => ({ labels: { phase }, value }));
    };
    registerCollected(registry, Metric.transactions, phases((c) => c.transactions));
    registerCollected(registry, Metric.rollbacks, phases((c) => c.rollbacks));
    this.decisions = counter(registry, Metric.decisions);
    this.reconcileErrors = counter(registry, Metric.reconcileErrors);
    this.leader = gauge(registry, Metric.leader);
    this.leader.set(0);
  }

  decision(decision: string, reason: string): void {
    this.decisions.inc({ decision, reason });
  }

  reconcileError(kind: string): void {
    this.reconcileErrors.inc({ kind });
  }

  setLeader(leading: boolean): void {
    this.leader.set(leading ? 1 : 0);
  }
}
