/**
 * Feeds engine events (the engine's diagnostics channel) into engine metrics. Subscribing turns the
 * engine's publishing on; the engine itself knows nothing about metrics.
 */
import { subscribeEngineEvents } from '../engine/index.js';
import type { EngineMetrics } from '../metrics/engine.js';

/**
 * Counts the events of every volume `volumeOf` names (by directory; undefined = not ours).
 * Returns the unsubscribe function.
 */
export function observeEngine(metrics: EngineMetrics, volumeOf: (dir: string) => string | undefined): () => void {
  return subscribeEngineEvents((e) => {
    const volume = volumeOf(e.dir);
    if (volume === undefined) return;
    switch (e.type) {
      case 'copy':
        return metrics.copied(volume, e.grains, e.bytes);
      case 'token-wait':
        return metrics.tokenWait(volume);
      case 'quiesce':
        return metrics.quiesce(volume, e.op);
      case 'cut':
        return metrics.cut(volume, e.micros / 1e6);
      case 'rollback-progress':
        return metrics.rollbackProgress(volume, e.done, e.total);
    }
  });
}
