/**
 * The few API calls kubectl-flashcsi makes, over @kubernetes/client-node: read PVCs and
 * VolumeSnapshots, server-side apply and merge-patch our custom resources, list them, and watch one
 * object. Kubeconfig resolution follows kubectl: --kubeconfig, else $KUBECONFIG (a list of files),
 * else ~/.kube/config, else the in-cluster service account; --context picks a context; the namespace
 * is -n, else the context's namespace, else "default".
 */
import {
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  PatchStrategy,
  Watch,
  setHeaderOptions,
  type V1PersistentVolumeClaim,
} from '@kubernetes/client-node';
import { VolumeSnapshotResource, type Resource } from '../api.js';
import { apiStatusCode, PluginError } from './errors.js';

/** The field manager of every write, as kubectl's is "kubectl". */
export const FIELD_MANAGER = 'kubectl-flashcsi';

/** A VolumeSnapshot, as far as the plugin reads it. */
export interface VolumeSnapshot {
  metadata: { name: string; namespace?: string };
  spec?: { source?: { persistentVolumeClaimName?: string; volumeSnapshotContentName?: string }; volumeSnapshotClassName?: string };
  status?: { readyToUse?: boolean; boundVolumeSnapshotContentName?: string };
}

/** Any object of ours, loosely typed. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace?: string; resourceVersion?: string; creationTimestamp?: string };
  spec?: unknown;
  status?: unknown;
}

export interface ConnectOptions {
  kubeconfig?: string | undefined;
  context?: string | undefined;
  namespace?: string | undefined;
}

/** The API calls the commands use (an interface, so the commands do not depend on client-node). */
export interface PluginClient {
  /** The namespace commands act in: -n, else the context's, else "default". */
  readonly namespace: string;
  /** The API server's URL, for messages. */
  readonly server: string;
  getPersistentVolumeClaim(namespace: string, name: string): Promise<V1PersistentVolumeClaim | undefined>;
  getVolumeSnapshot(namespace: string, name: string): Promise<VolumeSnapshot | undefined>;
  get<T extends KubeObject>(resource: Resource, namespace: string, name: string): Promise<T | undefined>;
  /** Server-side apply of a complete manifest (field manager kubectl-flashcsi, no force). */
  apply<T extends KubeObject>(resource: Resource, manifest: KubeObject): Promise<T>;
  /** A JSON merge patch (RFC 7386), as `kubectl patch --type merge`. */
  mergePatch<T extends KubeObject>(resource: Resource, namespace: string, name: string, patch: object): Promise<T>;
  /** Every object in `namespace`, or in all namespaces when it is undefined. */
  list<T extends KubeObject>(resource: Resource, namespace: string | undefined): Promise<T[]>;
  /**
   * Watches one object from `resourceVersion` on; `onChange` gets every new version (and undefined
   * when it is deleted). Resolves a stop function once the watch is established; `onEnd` is called
   * if the server closes the watch (the caller re-reads and watches again).
   */
  watchOne<T extends KubeObject>(
    resource: Resource,
    namespace: string,
    name: string,
    resourceVersion: string | undefined,
    onChange: (obj: T | undefined) => void,
    onEnd: (err: unknown) => void,
  ): Promise<() => void>;
}

/** Loads the kubeconfig as kubectl would. */
export function loadKubeConfig(opts: ConnectOptions): KubeConfig {
  const kc = new KubeConfig();
  try {
    if (opts.kubeconfig !== undefined && opts.kubeconfig !== '') kc.loadFromFile(opts.kubeconfig);
    else kc.loadFromDefault();
  } catch (e) {
    const where = opts.kubeconfig ?? process.env['KUBECONFIG'] ?? '~/.kube/config';
    throw new PluginError('KUBECONFIG', `cannot load kubeconfig ${where}: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (opts.context !== undefined && opts.context !== '') {
    if (kc.getContextObject(opts.context) === null) throw new PluginError('KUBECONFIG', `context ${JSON.stringify(opts.context)} not found in the kubeconfig`);
    kc.setCurrentContext(opts.context);
  }
  if (kc.getCurrentCluster() === null) {
    throw new PluginError('KUBECONFIG', 'no cluster in the kubeconfig: pass --kubeconfig, set KUBECONFIG, or create ~/.kube/config');
  }
  return kc;
}

function isNotFound(e: unknown): boolean {
  return apiStatusCode(e) === 404;
}

async function orUndefined<T>(p: Promise<T>): Promise<T | undefined> {
  try {
    return await p;
  } catch (e) {
    if (isNotFound(e)) return undefined;
    throw e;
  }
}

function basePath(resource: Resource, namespace: string | undefined): string {
  const group = resource.group === '' ? `/api/${resource.version}` : `/apis/${resource.group}/${resource.version}`;
  return namespace === undefined ? `${group}/${resource.plural}` : `${group}/namespaces/${encodeURIComponent(namespace)}/${resource.plural}`;
}

/** The client-node implementation of PluginClient. */
export function connect(opts: ConnectOptions): PluginClient {
  const kc = loadKubeConfig(opts);
  const contextNamespace = kc.getContextObject(kc.getCurrentContext())?.namespace;
  const namespace = opts.namespace !== undefined && opts.namespace !== '' ? opts.namespace : contextNamespace !== undefined && contextNamespace !== '' ? contextNamespace : 'default';
  const core = kc.makeApiClient(CoreV1Api);
  const custom = kc.makeApiClient(CustomObjectsApi);
  const server = kc.getCurrentCluster()?.server ?? '';

  return {
    namespace,
    server,
    getPersistentVolumeClaim: (ns, name) => orUndefined(core.readNamespacedPersistentVolumeClaim({ namespace: ns, name })),
    getVolumeSnapshot: (ns, name) =>
      orUndefined(
        custom.getNamespacedCustomObject({
          group: VolumeSnapshotResource.group,
          version: VolumeSnapshotResource.version,
          namespace: ns,
          plural: VolumeSnapshotResource.plural,
          name,
        }) as Promise<VolumeSnapshot>,
      ),
    get: <T extends KubeObject>(r: Resource, ns: string, name: string) =>
      orUndefined(custom.getNamespacedCustomObject({ group: r.group, version: r.version, namespace: ns, plural: r.plural, name }) as Promise<T>),
    apply: async <T extends KubeObject>(r: Resource, manifest: KubeObject) => {
      const ns = manifest.metadata.namespace;
      if (ns === undefined) throw new Error('apply: manifest without metadata.namespace');
      return (await custom.patchNamespacedCustomObject(
        { group: r.group, version: r.version, namespace: ns, plural: r.plural, name: manifest.metadata.name, body: manifest, fieldManager: FIELD_MANAGER, force: false },
        setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply),
      )) as T;
    },
    mergePatch: async <T extends KubeObject>(r: Resource, ns: string, name: string, patch: object) =>
      (await custom.patchNamespacedCustomObject(
        { group: r.group, version: r.version, namespace: ns, plural: r.plural, name, body: patch, fieldManager: FIELD_MANAGER },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      )) as T,
    list: async <T extends KubeObject>(r: Resource, ns: string | undefined) => {
      const out: T[] = [];
      let continueToken: string | undefined;
      do {
        const page = (
          ns === undefined
            ? await custom.listClusterCustomObject({ group: r.group, version: r.version, plural: r.plural, limit: 500, ...(continueToken ? { _continue: continueToken } : {}) })
            : await custom.listNamespacedCustomObject({ group: r.group, version: r.version, namespace: ns, plural: r.plural, limit: 500, ...(continueToken ? { _continue: continueToken } : {}) })
        ) as { items?: T[]; metadata?: { continue?: string } };
        out.push(...(page.items ?? []));
        continueToken = page.metadata?.continue !== undefined && page.metadata.continue !== '' ? page.metadata.continue : undefined;
      } while (continueToken !== undefined);
      return out;
    },
    watchOne: async <T extends KubeObject>(
      r: Resource,
      ns: string,
      name: string,
      resourceVersion: string | undefined,
      onChange: (obj: T | undefined) => void,
      onEnd: (err: unknown) => void,
    ) => {
      const watch = new Watch(kc);
      const params: Record<string, string | boolean> = { fieldSelector: `metadata.name=${name}`, allowWatchBookmarks: false };
      if (resourceVersion !== undefined) params['resourceVersion'] = resourceVersion;
      const controller = await watch.watch(
        basePath(r, ns),
        params,
        (type: string, obj: unknown) => {
          if (type === 'DELETED') onChange(undefined);
          else if (type === 'ADDED' || type === 'MODIFIED') onChange(obj as T);
          else if (type === 'ERROR') {
            const status = obj as { code?: number; message?: string } | undefined;
            onEnd(Object.assign(new Error(status?.message ?? 'watch error'), { code: status?.code }));
          }
        },
        (err: unknown) => {
          if (!(err instanceof Error && err.name === 'AbortError')) onEnd(err);
        },
      );
      return () => controller.abort();
    },
  };
}
