/**
 * Prometheus metrics (prom-client). This folder depends on prom-client only: the engine, nbd, csi
 * and k8s layers import it, never the other way round. names.ts holds every metric's name.
 */
export { ALL_METRICS, FUSE_LATENCY_BUCKETS, Metric, NBD_OPS, type MetricDef, type MetricType } from './names.js';
export { registerCollected, type FamilyJSON, type Sample } from './families.js';
export { registerFuseIo, type FuseOpCounts } from './fuse.js';
export { NbdIoMetrics, type NbdRequestObserver, type NbdServerGauges } from './nbd.js';
export { EngineMetrics } from './engine.js';
export { CsiCallMetrics, splitMethod, type CallObserver } from './csi.js';
export { CoordinatorMetrics, type PhaseCounts } from './coordinator.js';
export { PluginMetrics, ADOPTION_RESULTS, type AdoptionResult } from './plugin.js';
export { asFamilies, scrape, type MetricsSource, type ScrapeOptions } from './scrape.js';
export { parseListenAddress, startMetricsServer, type ListenAddress, type MetricsServer, type MetricsServerOptions } from './http.js';
