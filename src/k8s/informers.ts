/**
 * Watches with a local cache (@kubernetes/client-node informers). Each change calls back so the
 * controller can queue the objects it affects. A watch that fails restarts itself with backoff;
 * the cache keeps serving meanwhile, and the restart relists, so nothing is missed.
 * `watch()` returns only once the first list has succeeded: a controller never acts on an empty
 * cache because the API server was away (or still initialising) when it started.
 */
import { makeInformer, type Informer, type KubeConfig, type KubernetesObject, type ObjectCache } from '@kubernetes/client-node';
import type { Logger } from '../log/logger.js';

export interface Watched<T extends KubernetesObject> {
  list(): T[];
  get(name: string, namespace?: string): T | undefined;
  stop(): Promise<void>;
}

export async function watch<T extends KubernetesObject>(
  kc: KubeConfig,
  path: string,
  list: () => Promise<{ items: T[] }>,
  onChange: (obj: T) => void,
  log: Logger,
  labelSelector?: string,
): Promise<Watched<T>> {
  let stopped = false;
  let failures = 0;
  let timer: NodeJS.Timeout | undefined;
  // Set by the first successful list; start() resolves after the informer has filled its cache.
  let listed = false;
  let onSynced: () => void = () => undefined;
  const synced = new Promise<void>((resolve) => (onSynced = resolve));
  const informer: Informer<T> & ObjectCache<T> = makeInformer<T>(
    kc,
    path,
    async () => {
      const res = await list();
      listed = true;
      failures = 0;
      return { apiVersion: 'v1', kind: 'List', metadata: {}, items: res.items } as Awaited<ReturnType<Parameters<typeof makeInformer<T>>[2]>>;
    },
    labelSelector,
  );
  const start = (): Promise<void> =>
    informer.start().then(
      () => (listed ? onSynced() : undefined),
      () => undefined, // a failed start reports through 'error', which schedules the next one
    );
  for (const verb of ['add', 'update', 'delete'] as const) {
    informer.on(verb, (obj) => {
      failures = 0; // the watch delivers again
      onChange(obj);
    });
  }
  // Not on 'connect': the informer emits it before every attempt, so backoff would never grow.
  informer.on('error', (err: unknown) => {
    if (stopped) return;
    const delay = Math.min(30_000, 500 * 2 ** Math.min(failures++, 6));
    log.warn({ path, err: err instanceof Error ? err.message : String(err), retryInMs: delay }, listed ? 'watch failed; restarting' : 'first list failed; retrying');
    timer = setTimeout(() => void start(), delay);
  });
  await start();
  await synced;
  return {
    list: () => [...informer.list()],
    get: (name, namespace) => informer.get(name, namespace),
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await informer.stop();
    },
  };
}
