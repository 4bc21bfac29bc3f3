/**
 * The plugin's /metrics: its own registry plus, at each scrape, the metrics of every staged volume's
 * `flashcsi serve` process, asked over its control socket (op `metrics`) in parallel with a short
 * deadline each. A server that is dead, hung or too slow is left out of that scrape and counted in
 * flashcsi_scrape_errors_total{volume}; the scrape still answers.
 */
import path from 'node:path';
import { controlCall } from '../nbd/control.js';
import { observeEngine } from '../nbd/engine-metrics.js';
import { controlSocketPath } from '../nbd/serve.js';
import type { Logger } from '../log/logger.js';
import { PluginMetrics } from '../metrics/plugin.js';
import { scrape } from '../metrics/scrape.js';
import { startMetricsServer, type ListenAddress, type MetricsServer } from '../metrics/http.js';
import type { StateDir } from '../volumes/state.js';

export interface PluginMetricsOptions {
  readonly address: ListenAddress;
  readonly state: StateDir;
  readonly logger: Logger;
  /** Deadline of each volume's answer (default 2 s). */
  readonly scrapeTimeoutMs?: number;
  /** `/healthz`. */
  health(): { ok: boolean; message: string };
}

export interface RunningPluginMetrics {
  readonly metrics: PluginMetrics;
  readonly server: MetricsServer;
  stop(): Promise<void>;
}

/** Control sockets of the volumes staged on this node (stage records in phase staged). */
async function stagedServers(state: StateDir, log: Logger): Promise<Array<{ volumeId: string; control: string }>> {
  const out: Array<{ volumeId: string; control: string }> = [];
  for (const volumeId of await state.listStagedIds()) {
    const rec = await state.readStage(volumeId).catch((err: unknown) => {
      log.debug({ volumeId, err: err instanceof Error ? err.message : String(err) }, 'metrics: unreadable stage record; skipped');
      return undefined;
    });
    if (rec?.phase === 'staged' && rec.serve !== null) out.push({ volumeId, control: controlSocketPath(rec.serve.socket) });
  }
  return out;
}

/** Starts the plugin's metrics: engine events of in-process volumes, and the HTTP endpoint. */
export async function startPluginMetrics(opts: PluginMetricsOptions): Promise<RunningPluginMetrics> {
  const log = opts.logger;
  const metrics = new PluginMetrics();
  const failing = new Set<string>();
  const render = async (): Promise<string> => {
    const staged = await stagedServers(opts.state, log);
    metrics.setStaged(staged.length);
    const failed = new Set<string>();
    const text = await scrape({
      local: metrics.local,
      shared: [metrics.shared],
      sources: staged.map((s) => ({ name: s.volumeId, fetch: (timeoutMs: number) => controlCall(s.control, { op: 'metrics' }, timeoutMs) })),
      ...(opts.scrapeTimeoutMs === undefined ? {} : { timeoutMs: opts.scrapeTimeoutMs }),
      onError: (volumeId, err) => {
        failed.add(volumeId);
        metrics.scrapeError(volumeId);
        // Logged once per outage, not once per scrape.
        if (!failing.has(volumeId)) log.warn({ volumeId, err: err instanceof Error ? err.message : String(err) }, "metrics: no metrics from the volume's data-path server; skipped");
        failing.add(volumeId);
      },
    });
    for (const volumeId of failing) {
      if (failed.has(volumeId)) continue;
      failing.delete(volumeId);
      log.info({ volumeId }, "metrics: the volume's data-path server answers again (or is no longer staged)");
    }
    return text;
  };
  const unobserve = observeEngine(metrics.engine, (dir) => path.basename(dir));
  let server: MetricsServer;
  try {
    server = await startMetricsServer({ address: opts.address, render, health: opts.health, log });
  } catch (err) {
    unobserve();
    throw err;
  }
  return {
    metrics,
    server,
    async stop() {
      unobserve();
      await server.close();
    },
  };
}
