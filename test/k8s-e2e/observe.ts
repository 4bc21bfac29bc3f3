// Waiting on the API server by watching it: list, then watch from the list's resourceVersion,
// keeping the current set of objects; every change re-evaluates a condition. A watch that ends
// (server timeout, 410 Gone, connection reset) is re-listed and re-watched. One overall deadline.
import { Watch, type KubeConfig } from '@kubernetes/client-node';

export interface KObject {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string | undefined; namespace?: string | undefined; uid?: string | undefined; resourceVersion?: string | undefined } | undefined;
}

export interface ListResult<T> {
  items: T[];
  metadata?: { resourceVersion?: string };
}

export interface ObserveTarget<T extends KObject> {
  /** What is being waited for, for the failure message. */
  readonly what: string;
  /** The collection's URL path (e.g. /apis/flashcsi.io/v1alpha1/namespaces/e2e/volumetransactions). */
  readonly path: string;
  /** Lists the same collection (with the same selectors). */
  list(): Promise<ListResult<T>>;
  readonly labelSelector?: string;
  readonly fieldSelector?: string;
}

const keyOf = (o: KObject): string => `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;

/**
 * Resolves with the first value other than undefined that `check` returns for the objects as they
 * are (called after the list and after every watch event); rejects after `timeoutMs`, showing what
 * was last seen. `check` may throw to fail at once (e.g. an object reached a wrong terminal state).
 */
export async function observe<T extends KObject, R>(
  kc: KubeConfig,
  target: ObserveTarget<T>,
  check: (objects: T[]) => R | undefined,
  opts: { timeoutMs: number; describe?: (objects: T[]) => string },
): Promise<R> {
  const objects = new Map<string, T>();
  const watcher = new Watch(kc);
  let abort: AbortController | undefined;
  let settled = false;
  let timer: NodeJS.Timeout | undefined;
  const show = (): string => (opts.describe ?? ((os: T[]) => JSON.stringify(os.map((o) => ({ name: o.metadata?.name, ...(o as Record<string, unknown>)['status'] ? { status: (o as Record<string, unknown>)['status'] } : {} })), null, 1)))([...objects.values()]);
  try {
    return await new Promise<R>((resolve, reject) => {
      const finish = (err: unknown, value?: R): void => {
        if (settled) return;
        settled = true;
        if (err !== undefined) reject(err instanceof Error ? err : new Error(String(err)));
        else resolve(value as R);
      };
      const evaluate = (): void => {
        if (settled) return;
        try {
          const r = check([...objects.values()]);
          if (r !== undefined) finish(undefined, r);
        } catch (err) {
          finish(err);
        }
      };
      timer = setTimeout(() => finish(new Error(`${target.what}: not reached within ${opts.timeoutMs} ms; last seen:\n${show()}`)), opts.timeoutMs);
      let failures = 0;
      const start = async (): Promise<void> => {
        if (settled) return;
        let rv: string | undefined;
        try {
          const res = await target.list();
          objects.clear();
          for (const o of res.items) objects.set(keyOf(o), o);
          rv = res.metadata?.resourceVersion;
        } catch (err) {
          if (++failures > 50) finish(new Error(`${target.what}: cannot list ${target.path}: ${err instanceof Error ? err.message : String(err)}`));
          else setTimeout(() => void start(), 200); // the API server is briefly unreachable: list again
          return;
        }
        evaluate();
        if (settled) return;
        abort = await watcher.watch(
          target.path,
          {
            allowWatchBookmarks: true,
            ...(rv ? { resourceVersion: rv } : {}),
            ...(target.labelSelector ? { labelSelector: target.labelSelector } : {}),
            ...(target.fieldSelector ? { fieldSelector: target.fieldSelector } : {}),
          },
          (type: string, obj: T) => {
            if (type === 'ADDED' || type === 'MODIFIED') objects.set(keyOf(obj), obj);
            else if (type === 'DELETED') objects.delete(keyOf(obj));
            else return; // BOOKMARK, ERROR (410 Gone ends the watch; it is re-listed)
            failures = 0;
            evaluate();
          },
          () => {
            if (!settled) setTimeout(() => void start(), 50); // the watch ended: list and watch again
          },
        );
      };
      void start();
    });
  } finally {
    settled = true;
    clearTimeout(timer);
    abort?.abort();
  }
}
