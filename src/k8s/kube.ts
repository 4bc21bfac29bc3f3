/**
 * The Kubernetes API as flashcsi uses it: custom objects by Resource, the core objects the
 * controllers read or mark (PVCs, PVs, Events), and one error type for what callers branch on.
 * Writes that must not overwrite a newer version carry a resourceVersion; the API server then
 * answers 409 Conflict, surfaced as KubeError with `conflict` true.
 */
import {
  ApiException,
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  type CoreV1Event,
  type V1PersistentVolume,
  type V1PersistentVolumeClaim,
} from '@kubernetes/client-node';
import { FlashcsiError } from '../errors.js';
import type { ObjectMeta, Resource } from './api.js';

/** What the API server answered, by HTTP status: 404, 409, anything else. */
export type KubeErrorCode = 'NOT_FOUND' | 'CONFLICT' | 'API_ERROR';

export class KubeError extends FlashcsiError<KubeErrorCode> {
  constructor(
    readonly status: number,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(status === 404 ? 'NOT_FOUND' : status === 409 ? 'CONFLICT' : 'API_ERROR', message, options);
  }
  get notFound(): boolean {
    return this.code === 'NOT_FOUND';
  }
  get conflict(): boolean {
    return this.code === 'CONFLICT';
  }
}

function wrap(what: string): (err: unknown) => never {
  return (err: unknown) => {
    if (err instanceof ApiException) {
      const body = err.body as { message?: string } | string | undefined;
      const detail = typeof body === 'string' ? body : (body?.message ?? err.message);
      throw new KubeError(err.code, `${what}: ${detail}`, { cause: err });
    }
    throw new KubeError(0, `${what}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  };
}

const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

export interface KubeObject {
  metadata: ObjectMeta;
}

export function loadKubeConfig(kubeconfig?: string): KubeConfig {
  const kc = new KubeConfig();
  if (kubeconfig) kc.loadFromFile(kubeconfig);
  else kc.loadFromDefault(); // in-cluster service account, $KUBECONFIG or ~/.kube/config
  return kc;
}

export class Kube {
  readonly custom: CustomObjectsApi;
  readonly core: CoreV1Api;
  readonly coordination: CoordinationV1Api;

  constructor(readonly config: KubeConfig) {
    this.custom = config.makeApiClient(CustomObjectsApi);
    this.core = config.makeApiClient(CoreV1Api);
    this.coordination = config.makeApiClient(CoordinationV1Api);
  }

  private params(r: Resource, namespace: string): { group: string; version: string; plural: string; namespace: string } {
    return { group: r.group, version: r.version, plural: r.plural, namespace };
  }

  async get<T extends KubeObject>(r: Resource, namespace: string, name: string): Promise<T | null> {
    try {
      return (await this.custom.getNamespacedCustomObject({ ...this.params(r, namespace), name })) as T;
    } catch (err) {
      if (err instanceof ApiException && err.code === 404) return null;
      return wrap(`get ${r.kind} ${namespace}/${name}`)(err);
    }
  }

  async list<T extends KubeObject>(r: Resource, labelSelector?: string): Promise<{ items: T[]; metadata?: { resourceVersion?: string } }> {
    return this.custom
      .listClusterCustomObject({ group: r.group, version: r.version, plural: r.plural, ...(labelSelector ? { labelSelector } : {}) })
      .catch(wrap(`list ${r.kind}`)) as Promise<{ items: T[] }>;
  }

  create<T extends KubeObject>(r: Resource, obj: T): Promise<T> {
    const ns = obj.metadata.namespace ?? '';
    return this.custom.createNamespacedCustomObject({ ...this.params(r, ns), body: obj }).catch(wrap(`create ${r.kind} ${ns}/${obj.metadata.name}`)) as Promise<T>;
  }

  /** JSON merge patch; with metadata.resourceVersion in `patch` it is conditional. */
  patch<T extends KubeObject>(r: Resource, namespace: string, name: string, patch: object): Promise<T> {
    return this.custom
      .patchNamespacedCustomObject({ ...this.params(r, namespace), name, body: patch }, mergePatch)
      .catch(wrap(`patch ${r.kind} ${namespace}/${name}`)) as Promise<T>;
  }

  /** JSON merge patch of a cluster-scoped object; with metadata.resourceVersion in `patch` it is conditional. */
  patchCluster<T extends KubeObject>(r: Resource, name: string, patch: object): Promise<T> {
    return this.custom
      .patchClusterCustomObject({ group: r.group, version: r.version, plural: r.plural, name, body: patch }, mergePatch)
      .catch(wrap(`patch ${r.kind} ${name}`)) as Promise<T>;
  }

  /** Replaces the status subresource; conditional on obj.metadata.resourceVersion. */
  replaceStatus<T extends KubeObject>(r: Resource, obj: T): Promise<T> {
    const ns = obj.metadata.namespace ?? '';
    return this.custom
      .replaceNamespacedCustomObjectStatus({ ...this.params(r, ns), name: obj.metadata.name, body: obj })
      .catch(wrap(`update ${r.kind} ${ns}/${obj.metadata.name} status`)) as Promise<T>;
  }

  async delete(r: Resource, namespace: string, name: string): Promise<void> {
    try {
      await this.custom.deleteNamespacedCustomObject({ ...this.params(r, namespace), name });
    } catch (err) {
      if (err instanceof ApiException && err.code === 404) return;
      wrap(`delete ${r.kind} ${namespace}/${name}`)(err);
    }
  }

  async readPvc(namespace: string, name: string): Promise<V1PersistentVolumeClaim | null> {
    try {
      return await this.core.readNamespacedPersistentVolumeClaim({ namespace, name });
    } catch (err) {
      if (err instanceof ApiException && err.code === 404) return null;
      return wrap(`get PVC ${namespace}/${name}`)(err);
    }
  }

  /** Replaces a PVC (conditional on its resourceVersion). */
  replacePvc(pvc: V1PersistentVolumeClaim): Promise<V1PersistentVolumeClaim> {
    const namespace = pvc.metadata?.namespace ?? '';
    const name = pvc.metadata?.name ?? '';
    return this.core.replaceNamespacedPersistentVolumeClaim({ namespace, name, body: pvc }).catch(wrap(`update PVC ${namespace}/${name}`));
  }

  async readPv(name: string): Promise<V1PersistentVolume | null> {
    try {
      return await this.core.readPersistentVolume({ name });
    } catch (err) {
      if (err instanceof ApiException && err.code === 404) return null;
      return wrap(`get PV ${name}`)(err);
    }
  }

  createEvent(event: CoreV1Event): Promise<CoreV1Event> {
    const namespace = event.metadata.namespace ?? 'default';
    return this.core.createNamespacedEvent({ namespace, body: event }).catch(wrap(`create event in ${namespace}`));
  }
}
