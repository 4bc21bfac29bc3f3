/**
 * Registering flashcsi's metric definitions (names.ts) with prom-client, plus "collected"
 * families: metrics whose samples are computed at scrape time from plain numbers the code keeps
 * anyway (typed-array counters on the NBD hot path, connection counts, a checkpoint list). A
 * collected family costs nothing between scrapes: no label hashing, no allocation.
 *
 * A collected family is a plain object with the shape prom-client's Registry reads from every
 * metric (name, help, type, aggregator, get(), reset()); Registry formats it and
 * AggregatorRegistry.aggregate() merges it like any other.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { MetricDef, MetricType } from './names.js';

export type Labels = Readonly<Record<string, string | number>>;

/** One sample, as prom-client's getMetricsAsJSON() reports it. */
export interface Sample {
  readonly labels: Labels;
  readonly value: number;
  /** For histograms: `<name>_bucket`, `_sum` or `_count`. */
  readonly metricName?: string;
}

/** One metric family, as prom-client's getMetricsAsJSON() reports it. */
export interface FamilyJSON {
  readonly name: string;
  readonly help: string;
  readonly type: MetricType | 'summary';
  readonly aggregator: 'sum' | 'first' | 'min' | 'max' | 'average' | 'omit';
  readonly values: readonly Sample[];
}

class CollectedFamily {
  readonly aggregator = 'sum';
  constructor(
    private readonly definition: MetricDef,
    private readonly collect: () => Sample[],
  ) {}

  get name(): string {
    return this.definition.name;
  }
  get help(): string {
    return this.definition.help;
  }
  get type(): MetricType {
    return this.definition.type;
  }

  get(): Promise<FamilyJSON> {
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: this.collect() });
  }

  reset(): void {
    // The numbers belong to whoever keeps them.
  }
}

/** Registers a family whose samples `collect` computes at each scrape. */
export function registerCollected(registry: Registry, definition: MetricDef, collect: () => Sample[]): void {
  // prom-client's typings only name its own classes; its Registry reads exactly the members above.
  registry.registerMetric(new CollectedFamily(definition, collect) as unknown as Counter);
}

function config(registry: Registry, definition: MetricDef) {
  return { name: definition.name, help: definition.help, labelNames: [...definition.labelNames], registers: [registry] };
}

function expect(definition: MetricDef, type: MetricType): void {
  if (definition.type !== type) throw new Error(`BUG: ${definition.name} is a ${definition.type}, not a ${type}`);
}

export function counter(registry: Registry, definition: MetricDef): Counter {
  expect(definition, 'counter');
  return new Counter(config(registry, definition));
}

export function gauge(registry: Registry, definition: MetricDef, collect?: (this: Gauge) => void): Gauge {
  expect(definition, 'gauge');
  return new Gauge({ ...config(registry, definition), ...(collect === undefined ? {} : { collect }) });
}

export function histogram(registry: Registry, definition: MetricDef, buckets: readonly number[]): Histogram {
  expect(definition, 'histogram');
  return new Histogram({ ...config(registry, definition), buckets: [...buckets] });
}

/**
 * Appends the samples of one histogram series: `counts` holds per-bucket (not cumulative) counts
 * at `counts[offset + i]` for `bounds[i]`, then one more for observations above the last bound.
 */
export function pushHistogram(out: Sample[], name: string, labels: Labels, bounds: readonly number[], counts: Float64Array, offset: number, sum: number): void {
  let cumulative = 0;
  for (let i = 0; i < bounds.length; i++) {
    cumulative += counts[offset + i] as number;
    out.push({ metricName: `${name}_bucket`, labels: { ...labels, le: bounds[i] as number }, value: cumulative });
  }
  cumulative += counts[offset + bounds.length] as number;
  out.push({ metricName: `${name}_bucket`, labels: { ...labels, le: '+Inf' }, value: cumulative });
  out.push({ metricName: `${name}_sum`, labels, value: sum });
  out.push({ metricName: `${name}_count`, labels, value: cumulative });
}

/** Index of the first bound ≥ value (bounds.length when above them all): the bucket to count in. */
export function bucketIndex(bounds: readonly number[], value: number): number {
  let i = 0;
  while (i < bounds.length && value > (bounds[i] as number)) i++;
  return i;
}
