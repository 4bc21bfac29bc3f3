/**
 * One scrape of a process that speaks for others: its own metrics, plus the metrics of every
 * data-path process it asks (in parallel, each with a deadline), merged into one Prometheus text
 * exposition. A source that fails or is too slow is left out of this scrape and reported through
 * `onError`; the scrape itself still succeeds.
 *
 * - `local` holds the families only this process has (CSI calls, scrape errors, process metrics):
 *   rendered as they are. Families of the same name coming from a source are dropped, so a
 *   family is never exposed twice.
 * - `shared` registries hold families the sources report too (engine events of volumes this
 *   process opened itself); they are merged with the sources' by prom-client's
 *   AggregatorRegistry.aggregate(): series with the same labels are summed.
 */
import { AggregatorRegistry, type Registry } from 'prom-client';
import type { FamilyJSON } from './families.js';

export interface MetricsSource {
  /** Names the source in errors (the volume id). */
  readonly name: string;
  /** Resolves with the source's registry.getMetricsAsJSON(). */
  fetch(timeoutMs: number): Promise<unknown>;
}

export interface ScrapeOptions {
  readonly local: Registry;
  readonly shared?: readonly Registry[];
  readonly sources: readonly MetricsSource[];
  /** Deadline of each source (default 2 s). */
  readonly timeoutMs?: number;
  onError(source: string, err: unknown): void;
}

const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary']);
const AGGREGATORS = new Set(['sum', 'first', 'min', 'max', 'average', 'omit']);

/** Checks that `json` is what getMetricsAsJSON() returns; aggregate() would choke on anything else. */
export function asFamilies(json: unknown): FamilyJSON[] {
  if (!Array.isArray(json)) throw new Error('metrics: not an array of metric families');
  for (const f of json as unknown[]) {
    const family = f as Partial<FamilyJSON> | null;
    const ok =
      typeof family === 'object' &&
      family !== null &&
      typeof family.name === 'string' &&
      typeof family.help === 'string' &&
      TYPES.has(family.type ?? '') &&
      AGGREGATORS.has(family.aggregator ?? '') &&
      Array.isArray(family.values) &&
      family.values.every((v) => typeof v === 'object' && v !== null && typeof v.value === 'number' && typeof v.labels === 'object' && v.labels !== null);
    if (!ok) throw new Error(`metrics: malformed metric family ${JSON.stringify(family?.name ?? family)}`);
  }
  return json as FamilyJSON[];
}

function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no metrics within ${ms} ms`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** Gathers and merges; resolves the exposition text (Prometheus text format 0.0.4). */
export async function scrape(opts: ScrapeOptions): Promise<string> {
  const timeoutMs = opts.timeoutMs ?? 2000;
  const fromSources = await Promise.all(
    opts.sources.map(async (s) => {
      try {
        return asFamilies(await withDeadline(s.fetch(timeoutMs), timeoutMs, s.name));
      } catch (err) {
        opts.onError(s.name, err);
        return null;
      }
    }),
  );
  const localNames = new Set(opts.local.getMetricsAsArray().map((m) => m.name));
  const shared = await Promise.all((opts.shared ?? []).map((r) => r.getMetricsAsJSON() as unknown as Promise<FamilyJSON[]>));
  const inputs = [...shared, ...fromSources.filter((f): f is FamilyJSON[] => f !== null)].map((families) => families.filter((f) => !localNames.has(f.name)));
  // Rendered after the sources answered, so this scrape's own errors are already counted.
  const own = (await opts.local.metrics()).trimEnd();
  const merged = (await AggregatorRegistry.aggregate(inputs).metrics()).trimEnd();
  return `${[own, merged].filter((t) => t !== '').join('\n\n')}\n`;
}
