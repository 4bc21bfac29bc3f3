/**
 * `--wait`: follow one object through a watch (no polling) until a judge says it is done. The object
 * is read first, so a state reached before the watch started is not missed, and the watch starts at
 * that read's resourceVersion; when the server ends a watch, the object is read again and watched anew.
 */
import type { Resource } from '../api.js';
import type { KubeObject, PluginClient } from './client.js';
import { PluginError } from './errors.js';

/** The end of a wait: success, or failure with the object's message. */
export interface Verdict {
  ok: boolean;
  message: string;
}

export interface WaitOptions<T> {
  /** Give up after this long (undefined: wait for ever, until interrupted). */
  timeoutMs?: number | undefined;
  /** Called with every version seen that is not yet done (for progress lines). */
  onProgress?: (obj: T) => void;
}

export async function waitUntil<T extends KubeObject>(
  client: PluginClient,
  resource: Resource,
  namespace: string,
  name: string,
  judge: (obj: T) => Verdict | undefined,
  opts: WaitOptions<T> = {},
): Promise<Verdict> {
  const what = `${resource.kind} ${JSON.stringify(name)}`;
  return new Promise<Verdict>((resolve, reject) => {
    let settled = false;
    let stop: (() => void) | undefined;
    let timer: NodeJS.Timeout | undefined;
    const finish = (err: unknown, verdict?: Verdict): void => {
      if (settled) return;
      settled = true;
      if (timer !== undefined) clearTimeout(timer);
      stop?.();
      if (verdict !== undefined) resolve(verdict);
      else reject(err instanceof Error ? err : new Error(String(err)));
    };
    const see = (obj: T | undefined): boolean => {
      if (obj === undefined) {
        finish(new PluginError('NOT_FOUND', `${what} was deleted while waiting for it`));
        return true;
      }
      const verdict = judge(obj);
      if (verdict !== undefined) {
        finish(undefined, verdict);
        return true;
      }
      opts.onProgress?.(obj);
      return false;
    };
    if (opts.timeoutMs !== undefined) {
      timer = setTimeout(() => finish(new PluginError('TIMEOUT', `timed out after ${Math.round((opts.timeoutMs ?? 0) / 1000)}s waiting for ${what}`)), opts.timeoutMs);
    }
    const round = async (): Promise<void> => {
      const current = await client.get<T>(resource, namespace, name);
      if (settled || see(current)) return;
      const rv = current?.metadata.resourceVersion;
      let ended = false;
      const stopThis = await client.watchOne<T>(
        resource,
        namespace,
        name,
        rv,
        (obj) => {
          see(obj);
        },
        (err) => {
          if (settled || ended) return;
          ended = true;
          // A plain close (the server's watch timeout) or 410 Gone (resourceVersion too old): read
          // again and re-watch. Anything else (403, a broken connection) ends the wait with it.
          if (err === null || err === undefined || (err as { code?: unknown }).code === 410) round().catch((e: unknown) => finish(e));
          else finish(err);
        },
      );
      if (settled) stopThis();
      else stop = stopThis;
    };
    round().catch((e: unknown) => finish(e));
  });
}
