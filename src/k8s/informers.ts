/**
 * Watches with a local cache (@kubernetes/client-node informers). Each change calls back so the
 * controller can queue the objects it affects. A watch that fails restarts itself with backoff;
 * the cache keeps serving meanwhile, and the restart relists, so nothing is missed.
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
  const informer: Informer<T> & ObjectCache<T> = makeInformer<T>(
    kc,
    path,
    async () => {
      const res = await list();
      return { apiVersion: 'v1', kind: 'List', metadata: {}, items: res.items } as Awaited<ReturnType<Parameters<typeof makeInformer<T>>[2]>>;
    },
    labelSelector,
  );
  let stopped = false;
  let failures = 0;
  let timer: NodeJS.Timeout | undefined;
  for (const verb of ['add', 'update', 'delete'] as const) informer.on(verb, (obj) => onChange(obj));
  informer.on('connect', () => {
    failures = 0;
  });
  informer.on('error', (err: unknown) => {
    if (stopped) return;
    const delay = Math.min(30_000, 500 * 2 ** Math.min(failures++, 6));
    log.warn({ path, err: err instanceof Error ? err.message : String(err), retryInMs: delay }, 'watch failed; restarting');
    timer = setTimeout(() => {
      informer.start().catch(() => undefined); // a failed start reports through 'error' again
    }, delay);
  });
  await informer.start();
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
