/**
 * Every Prometheus metric flashcsi exports, in one place: name, type, help text and label names.
 * Code elsewhere registers metrics from these definitions and never spells a metric name inline;
 * docs/metrics.md documents each one (a test checks that the two agree).
 *
 * Naming follows the Prometheus conventions: the `flashcsi_` prefix, base units (seconds, bytes),
 * `_total` for counters, `_seconds` / `_bytes` suffixes, no unit-less ratios where a pair of
 * gauges says more.
 */

export type MetricType = 'counter' | 'gauge' | 'histogram';

export interface MetricDef {
  readonly name: string;
  readonly type: MetricType;
  readonly help: string;
  readonly labelNames: readonly string[];
  /** Where it comes from (docs/metrics.md groups by it). */
  readonly source: 'serve' | 'serve+plugin' | 'plugin' | 'coordinator';
}

function def(source: MetricDef['source'], type: MetricType, name: string, labelNames: readonly string[], help: string): MetricDef {
  return { name, type, help, labelNames, source };
}

/**
 * NBD request latency buckets, in seconds: 10 µs … 10 s. A 4 KiB read from the page cache answers
 * in tens of µs; a write that copies grains, or waits for a checkpoint cut, in ms; anything near a
 * second is a stall worth seeing.
 */
export const NBD_LATENCY_BUCKETS: readonly number[] = [
  0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

/** FUSE request latency buckets: the NBD ones, so the two attach paths compare on one dashboard. */
export const FUSE_LATENCY_BUCKETS: readonly number[] = NBD_LATENCY_BUCKETS;

/** Checkpoint cut latency buckets, in seconds: 100 µs … 10 s (drain of in-flight writes + one metadata update). */
export const CUT_LATENCY_BUCKETS: readonly number[] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** CSI call latency buckets, in seconds: 1 ms … 2 min (staging runs mkfs; a clone copies data). */
export const CSI_LATENCY_BUCKETS: readonly number[] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

/**
 * NBD operations as they appear in the `op` label, indexed by NBD command type (the wire codes of
 * the NBD protocol: READ 0, WRITE 1, DISC 2, FLUSH 3, TRIM 4, CACHE 5, WRITE_ZEROES 6,
 * BLOCK_STATUS 7). DISC gets no reply and is never counted; every other code is `other`.
 */
export const NBD_OPS: readonly string[] = ['read', 'write', 'disc', 'flush', 'trim', 'cache', 'write_zeroes', 'block_status', 'other'];

export const Metric = {
  // ── Data path: each `flashcsi serve` process, label volume ───────────────────────────────────
  nbdRequests: def('serve', 'counter', 'flashcsi_nbd_requests_total', ['volume', 'op'], 'NBD requests answered, by operation (errors included).'),
  nbdRequestErrors: def('serve', 'counter', 'flashcsi_nbd_request_errors_total', ['volume', 'op'], 'NBD requests answered with an error, by operation.'),
  nbdBytes: def(
    'serve',
    'counter',
    'flashcsi_nbd_bytes_total',
    ['volume', 'op'],
    'Bytes covered by successful NBD requests: data read and written; for trim and write_zeroes, the length of the range.',
  ),
  nbdRequestDuration: def(
    'serve',
    'histogram',
    'flashcsi_nbd_request_duration_seconds',
    ['volume', 'op'],
    'Time from reading an NBD request off the socket to handing its reply to the socket, by operation.',
  ),
  nbdInflight: def('serve', 'gauge', 'flashcsi_nbd_inflight_requests', ['volume'], 'NBD requests being processed now.'),
  nbdConnections: def('serve', 'gauge', 'flashcsi_nbd_connections', ['volume'], 'Open NBD client connections.'),
  nbdConnectionsAccepted: def('serve', 'counter', 'flashcsi_nbd_connections_accepted_total', ['volume'], 'NBD client connections accepted.'),
  fuseRequests: def(
    'serve',
    'counter',
    'flashcsi_fuse_requests_total',
    ['volume', 'op', 'path'],
    "Requests the volume's FUSE file answered, by operation and by path: fast (a worker thread, on the engine's fast path) or forwarded (the main thread); errors included.",
  ),
  fuseRequestErrors: def('serve', 'counter', 'flashcsi_fuse_request_errors_total', ['volume', 'op'], "Requests the volume's FUSE file answered with an error, by operation."),
  fuseBytes: def(
    'serve',
    'counter',
    'flashcsi_fuse_bytes_total',
    ['volume', 'op'],
    "Bytes covered by successful requests to the volume's FUSE file: data read and written; for trim and write_zeroes, the length of the range.",
  ),
  fuseRequestDuration: def(
    'serve',
    'histogram',
    'flashcsi_fuse_request_duration_seconds',
    ['volume', 'op'],
    "Time from a FUSE worker reading a request off /dev/fuse to its reply being written, by operation.",
  ),
  checkpoints: def('serve', 'gauge', 'flashcsi_checkpoints', ['volume'], 'Checkpoints (snapshots) the volume holds, internal transaction checkpoints excluded.'),

  // ── Engine events: serve processes, and the plugin for volumes it opens itself ──────────────
  cowGrains: def('serve+plugin', 'counter', 'flashcsi_cow_copied_grains_total', ['volume'], 'Grains copied into the newest checkpoint before being overwritten (copy-on-write).'),
  cowBytes: def('serve+plugin', 'counter', 'flashcsi_cow_copied_bytes_total', ['volume'], 'Bytes copied by copy-on-write.'),
  tokenWaits: def('serve+plugin', 'counter', 'flashcsi_token_waits_total', ['volume'], 'Times a write or checkpoint read had to wait for grain tokens another request held.'),
  quiesceWaits: def(
    'serve+plugin',
    'counter',
    'flashcsi_quiesce_waits_total',
    ['volume', 'op'],
    'Times a metadata operation (op: cut, rollback, expand, …) closed the gate and waited for in-flight I/O.',
  ),
  cutDuration: def(
    'serve+plugin',
    'histogram',
    'flashcsi_checkpoint_cut_duration_seconds',
    ['volume'],
    'Checkpoint cut latency: draining in-flight writes plus the metadata update.',
  ),
  rollbackRestored: def('serve+plugin', 'gauge', 'flashcsi_rollback_restored_grains', ['volume'], 'Grains restored so far by the running rollback (present only while it runs).'),
  rollbackTotal: def('serve+plugin', 'gauge', 'flashcsi_rollback_grains', ['volume'], 'Grains the running rollback restores in all (present only while it runs).'),
  rollbackRestoredTotal: def('serve+plugin', 'counter', 'flashcsi_rollback_restored_grains_total', ['volume'], 'Grains restored by rollbacks, all rollbacks together.'),

  // ── The CSI plugin (`flashcsi plugin --metrics-address`) ─────────────────────────────────────
  csiRequests: def('plugin', 'counter', 'flashcsi_csi_requests_total', ['grpc_service', 'grpc_method', 'grpc_code'], 'CSI calls finished, by gRPC service, method and status code.'),
  csiRequestDuration: def(
    'plugin',
    'histogram',
    'flashcsi_csi_request_duration_seconds',
    ['grpc_service', 'grpc_method', 'grpc_code'],
    'CSI call latency, by gRPC service, method and status code.',
  ),
  volumesStaged: def('plugin', 'gauge', 'flashcsi_volumes_staged', [], 'Volumes staged on this node (stage records in phase staged).'),
  adoption: def(
    'plugin',
    'gauge',
    'flashcsi_adoption_volumes',
    ['result'],
    'Start-up adoption of staged volumes, by result (adopted, restarted, abnormal, cleaned); set once recovery is done.',
  ),
  pluginReady: def('plugin', 'gauge', 'flashcsi_plugin_ready', [], '1 once start-up recovery is done and Probe reports ready, else 0.'),
  scrapeErrors: def(
    'plugin',
    'counter',
    'flashcsi_scrape_errors_total',
    ['volume'],
    "Scrapes that could not get a staged volume's metrics from its flashcsi serve process (dead, hung or too slow); that volume's data-path metrics are missing from those scrapes.",
  ),

  // ── The coordinator (`flashcsi coordinator --metrics-address`) ───────────────────────────────
  transactions: def('coordinator', 'gauge', 'flashcsi_volume_transactions', ['phase'], 'VolumeTransactions by phase, from the leader\'s informer cache at scrape time.'),
  rollbacks: def('coordinator', 'gauge', 'flashcsi_volume_rollbacks', ['phase'], 'VolumeRollbacks by phase, from the leader\'s informer cache at scrape time.'),
  decisions: def(
    'coordinator',
    'counter',
    'flashcsi_transaction_decisions_total',
    ['decision', 'reason'],
    'Transaction decisions this coordinator recorded, by decision (Commit, Rollback) and reason.',
  ),
  leader: def('coordinator', 'gauge', 'flashcsi_coordinator_leader', [], '1 while this coordinator holds the leader Lease (or runs without election), else 0.'),
  reconcileErrors: def('coordinator', 'counter', 'flashcsi_reconcile_errors_total', ['kind'], 'Reconciles that failed and were retried, by object kind.'),
} as const satisfies Record<string, MetricDef>;

export type MetricKey = keyof typeof Metric;

/** Every definition, for docs checks and tests. */
export const ALL_METRICS: readonly MetricDef[] = Object.values(Metric);
