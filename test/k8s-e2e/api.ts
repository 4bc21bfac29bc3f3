// The objects the e2e tests write and wait for, through the API server: PVCs (with the scheduler's
// selected-node annotation), VolumeSnapshots, VolumeRollbacks, VolumeTransactions and their
// participants. Every wait is a watch with a deadline (observe.ts).
import {
  PatchStrategy,
  setHeaderOptions,
  type CoreV1Event,
  type KubernetesObject,
  type V1PersistentVolume,
  type V1PersistentVolumeClaim,
} from '@kubernetes/client-node';
import type { VolumeRollback, VolumeTransaction, VolumeTransactionParticipant } from '../../src/k8s/api.js';
import { Label } from '../../src/constants.js';
import { SNAPSHOT_CLASS, STORAGE_CLASS, type Cluster } from './cluster.js';
import { observe, type KObject } from './observe.js';

export const GROUP = 'flashcsi.io';
export const VERSION = 'v1alpha1';
const merge = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
export const MiB = 1024 * 1024;

export type Vt = VolumeTransaction & KubernetesObject;
export type Vtp = VolumeTransactionParticipant & KubernetesObject;
export type Vr = VolumeRollback & KubernetesObject;
export interface VolumeSnapshot extends KObject {
  spec?: { source?: { persistentVolumeClaimName?: string } };
  status?: { readyToUse?: boolean; boundVolumeSnapshotContentName?: string; creationTime?: string; error?: { message?: string } };
}
export interface VolumeSnapshotContent extends KObject {
  metadata?: KObject['metadata'] & { labels?: Record<string, string> };
  status?: { readyToUse?: boolean; snapshotHandle?: string; error?: { message?: string } };
}

export { rejection } from '../k8s/harness.js';

export class Api {
  constructor(private readonly c: Cluster) {}

  // ---------------------------------------------------------------- PVCs

  /** Creates a PVC of the flashcsi StorageClass, then sets selected-node as the scheduler would for a pod on `node`. */
  async createPvc(ns: string, name: string, o: { node: string; block?: boolean; sizeMiB?: number; fromSnapshot?: string }): Promise<void> {
    await this.c.core.createNamespacedPersistentVolumeClaim({
      namespace: ns,
      body: {
        metadata: { name },
        spec: {
          accessModes: ['ReadWriteOnce'],
          storageClassName: STORAGE_CLASS,
          volumeMode: o.block === true ? 'Block' : 'Filesystem',
          resources: { requests: { storage: `${o.sizeMiB ?? 64}Mi` } },
          ...(o.fromSnapshot ? { dataSource: { apiGroup: 'snapshot.storage.k8s.io', kind: 'VolumeSnapshot', name: o.fromSnapshot } } : {}),
        },
      },
    });
    await this.c.core.patchNamespacedPersistentVolumeClaim(
      { namespace: ns, name, body: { metadata: { annotations: { 'volume.kubernetes.io/selected-node': o.node } } } },
      merge,
    );
  }

  /** Waits until the PVC is Bound; returns it and its PV. */
  async waitBound(ns: string, name: string, timeoutMs = 90_000): Promise<{ pvc: V1PersistentVolumeClaim; pv: V1PersistentVolume }> {
    const pvc = await observe<V1PersistentVolumeClaim, V1PersistentVolumeClaim>(
      this.c.kc,
      {
        what: `PVC ${ns}/${name} Bound`,
        path: `/api/v1/namespaces/${ns}/persistentvolumeclaims`,
        fieldSelector: `metadata.name=${name}`,
        list: () => this.c.core.listNamespacedPersistentVolumeClaim({ namespace: ns, fieldSelector: `metadata.name=${name}` }) as never,
      },
      (items) => (items[0]?.status?.phase === 'Bound' ? items[0] : undefined),
      { timeoutMs },
    );
    const pv = await this.c.core.readPersistentVolume({ name: pvc.spec?.volumeName ?? '' });
    return { pvc, pv };
  }

  /** Waits until `check(pvc)` holds. */
  waitPvc(ns: string, name: string, what: string, check: (pvc: V1PersistentVolumeClaim) => boolean, timeoutMs = 60_000): Promise<V1PersistentVolumeClaim> {
    return observe<V1PersistentVolumeClaim, V1PersistentVolumeClaim>(
      this.c.kc,
      {
        what: `PVC ${ns}/${name} ${what}`,
        path: `/api/v1/namespaces/${ns}/persistentvolumeclaims`,
        fieldSelector: `metadata.name=${name}`,
        list: () => this.c.core.listNamespacedPersistentVolumeClaim({ namespace: ns, fieldSelector: `metadata.name=${name}` }) as never,
      },
      (items) => (items[0] && check(items[0]) ? items[0] : undefined),
      { timeoutMs },
    );
  }

  readPvc(ns: string, name: string): Promise<V1PersistentVolumeClaim> {
    return this.c.core.readNamespacedPersistentVolumeClaim({ namespace: ns, name });
  }

  /** Waits until the PVC is gone. */
  async waitPvcGone(ns: string, name: string, timeoutMs = 60_000): Promise<void> {
    await observe<V1PersistentVolumeClaim, true>(
      this.c.kc,
      {
        what: `PVC ${ns}/${name} deleted`,
        path: `/api/v1/namespaces/${ns}/persistentvolumeclaims`,
        fieldSelector: `metadata.name=${name}`,
        list: () => this.c.core.listNamespacedPersistentVolumeClaim({ namespace: ns, fieldSelector: `metadata.name=${name}` }) as never,
      },
      (items) => (items.length === 0 ? true : undefined),
      { timeoutMs },
    );
  }

  async waitPvGone(name: string, timeoutMs = 60_000): Promise<void> {
    await observe<V1PersistentVolume, true>(
      this.c.kc,
      {
        what: `PV ${name} deleted`,
        path: `/api/v1/persistentvolumes`,
        fieldSelector: `metadata.name=${name}`,
        list: () => this.c.core.listPersistentVolume({ fieldSelector: `metadata.name=${name}` }) as never,
      },
      (items) => (items.length === 0 ? true : undefined),
      { timeoutMs },
    );
  }

  // ---------------------------------------------------------------- custom objects

  private path(group: string, version: string, plural: string, ns: string): string {
    return `/apis/${group}/${version}/namespaces/${ns}/${plural}`;
  }

  create(group: string, version: string, plural: string, ns: string, body: object): Promise<unknown> {
    return this.c.custom.createNamespacedCustomObject({ group, version, namespace: ns, plural, body });
  }

  patch(group: string, version: string, plural: string, ns: string, name: string, body: object): Promise<unknown> {
    return this.c.custom.patchNamespacedCustomObject({ group, version, namespace: ns, plural, name, body }, merge);
  }

  get<T>(group: string, version: string, plural: string, ns: string, name: string): Promise<T> {
    return this.c.custom.getNamespacedCustomObject({ group, version, namespace: ns, plural, name }) as Promise<T>;
  }

  async delete(group: string, version: string, plural: string, ns: string, name: string): Promise<void> {
    await this.c.custom.deleteNamespacedCustomObject({ group, version, namespace: ns, plural, name });
  }

  /** Watches objects of a namespaced collection until `check` returns a value. */
  watch<T extends KObject, R>(
    what: string,
    group: string,
    version: string,
    plural: string,
    ns: string,
    sel: { name?: string; labelSelector?: string },
    check: (items: T[]) => R | undefined,
    timeoutMs = 90_000,
  ): Promise<R> {
    const fieldSelector = sel.name ? `metadata.name=${sel.name}` : undefined;
    return observe<T, R>(
      this.c.kc,
      {
        what,
        path: this.path(group, version, plural, ns),
        ...(fieldSelector ? { fieldSelector } : {}),
        ...(sel.labelSelector ? { labelSelector: sel.labelSelector } : {}),
        list: () =>
          this.c.custom.listNamespacedCustomObject({
            group,
            version,
            namespace: ns,
            plural,
            ...(fieldSelector ? { fieldSelector } : {}),
            ...(sel.labelSelector ? { labelSelector: sel.labelSelector } : {}),
          }) as never,
      },
      check,
      { timeoutMs },
    );
  }

  // ---------------------------------------------------------------- snapshots

  createSnapshot(ns: string, name: string, pvc: string): Promise<unknown> {
    return this.create('snapshot.storage.k8s.io', 'v1', 'volumesnapshots', ns, {
      apiVersion: 'snapshot.storage.k8s.io/v1',
      kind: 'VolumeSnapshot',
      metadata: { name },
      spec: { volumeSnapshotClassName: SNAPSHOT_CLASS, source: { persistentVolumeClaimName: pvc } },
    });
  }

  getSnapshot(ns: string, name: string): Promise<VolumeSnapshot> {
    return this.get<VolumeSnapshot>('snapshot.storage.k8s.io', 'v1', 'volumesnapshots', ns, name);
  }

  async getContent(name: string): Promise<VolumeSnapshotContent> {
    return (await this.c.custom.getClusterCustomObject({ group: 'snapshot.storage.k8s.io', version: 'v1', plural: 'volumesnapshotcontents', name })) as VolumeSnapshotContent;
  }

  /** A pre-provisioned VolumeSnapshotContent (Retain) of `snapshotHandle`, for a VolumeSnapshot ns/snapshot to bind to. */
  createImportedContent(name: string, snapshotHandle: string, ns: string, snapshot: string): Promise<unknown> {
    return this.c.custom.createClusterCustomObject({
      group: 'snapshot.storage.k8s.io',
      version: 'v1',
      plural: 'volumesnapshotcontents',
      body: {
        apiVersion: 'snapshot.storage.k8s.io/v1',
        kind: 'VolumeSnapshotContent',
        metadata: { name },
        spec: { deletionPolicy: 'Retain', driver: 'flashcsi.io', source: { snapshotHandle }, volumeSnapshotRef: { name: snapshot, namespace: ns } },
      },
    });
  }

  /** A VolumeSnapshot bound to an existing VolumeSnapshotContent. */
  createSnapshotOfContent(ns: string, name: string, content: string): Promise<unknown> {
    return this.create('snapshot.storage.k8s.io', 'v1', 'volumesnapshots', ns, {
      apiVersion: 'snapshot.storage.k8s.io/v1',
      kind: 'VolumeSnapshot',
      metadata: { name },
      spec: { source: { volumeSnapshotContentName: content } },
    });
  }

  async deleteContent(name: string): Promise<void> {
    await this.c.custom.deleteClusterCustomObject({ group: 'snapshot.storage.k8s.io', version: 'v1', plural: 'volumesnapshotcontents', name });
  }

  waitSnapshot(ns: string, name: string, check: (s: VolumeSnapshot) => boolean, what: string, timeoutMs = 90_000): Promise<VolumeSnapshot> {
    return this.watch<VolumeSnapshot, VolumeSnapshot>(`VolumeSnapshot ${ns}/${name} ${what}`, 'snapshot.storage.k8s.io', 'v1', 'volumesnapshots', ns, { name }, (items) =>
      items[0] && check(items[0]) ? items[0] : undefined,
    timeoutMs);
  }

  // ---------------------------------------------------------------- flashcsi objects

  createVt(ns: string, name: string, pvcs: string[], timeoutSeconds?: number): Promise<unknown> {
    return this.create(GROUP, VERSION, 'volumetransactions', ns, {
      apiVersion: `${GROUP}/${VERSION}`,
      kind: 'VolumeTransaction',
      metadata: { name },
      spec: { persistentVolumeClaims: pvcs, ...(timeoutSeconds === undefined ? {} : { timeoutSeconds }) },
    });
  }

  decide(ns: string, name: string, decision: 'Commit' | 'Rollback'): Promise<unknown> {
    return this.patch(GROUP, VERSION, 'volumetransactions', ns, name, { spec: { decision } });
  }

  getVt(ns: string, name: string): Promise<Vt> {
    return this.get<Vt>(GROUP, VERSION, 'volumetransactions', ns, name);
  }

  /** Waits until `check(vt)` holds; fails at once if the transaction ends in another way. */
  waitVt(ns: string, name: string, what: string, check: (vt: Vt) => boolean, timeoutMs = 90_000): Promise<Vt> {
    return this.watch<Vt, Vt>(`VolumeTransaction ${ns}/${name} ${what}`, GROUP, VERSION, 'volumetransactions', ns, { name }, (items) => {
      const vt = items[0];
      if (!vt) return undefined;
      if (check(vt)) return vt;
      const phase = vt.status?.phase;
      if (phase === 'Committed' || phase === 'RolledBack' || phase === 'Failed') {
        throw new Error(`VolumeTransaction ${ns}/${name} ended ${phase} (${vt.status?.message ?? ''}) while waiting for: ${what}\n${JSON.stringify(vt.status, null, 1)}`);
      }
      return undefined;
    }, timeoutMs);
  }

  /** Watches the transaction's participants (and the transaction) until `check` returns a value. */
  async waitParticipants<R>(ns: string, tx: string, what: string, check: (byPvc: Map<string, Vtp>) => R | undefined, timeoutMs = 90_000): Promise<R> {
    return this.watch<Vtp, R>(`participants of ${ns}/${tx}: ${what}`, GROUP, VERSION, 'volumetransactionparticipants', ns, { labelSelector: `${Label.Transaction}=${tx}` }, (items) =>
      check(new Map(items.map((p) => [p.spec.persistentVolumeClaimName, p]))),
    timeoutMs);
  }

  createVr(ns: string, name: string, snapshot: string): Promise<unknown> {
    return this.create(GROUP, VERSION, 'volumerollbacks', ns, {
      apiVersion: `${GROUP}/${VERSION}`,
      kind: 'VolumeRollback',
      metadata: { name },
      spec: { volumeSnapshotName: snapshot },
    });
  }

  waitVr(ns: string, name: string, what: string, check: (vr: Vr) => boolean, timeoutMs = 90_000): Promise<Vr> {
    return this.watch<Vr, Vr>(`VolumeRollback ${ns}/${name} ${what}`, GROUP, VERSION, 'volumerollbacks', ns, { name }, (items) => {
      const vr = items[0];
      if (!vr) return undefined;
      if (check(vr)) return vr;
      if (vr.status?.phase === 'Completed' || vr.status?.phase === 'Failed') {
        throw new Error(`VolumeRollback ${ns}/${name} ended ${vr.status.phase} (${vr.status.message ?? ''}) while waiting for: ${what}`);
      }
      return undefined;
    }, timeoutMs);
  }

  /** Events recorded for an object (reason and message, oldest first). */
  async events(ns: string, kind: string, name: string): Promise<CoreV1Event[]> {
    const list = await this.c.core.listNamespacedEvent({ namespace: ns, fieldSelector: `involvedObject.kind=${kind},involvedObject.name=${name}` });
    return list.items.sort((a, b) => String(a.metadata.creationTimestamp ?? '').localeCompare(String(b.metadata.creationTimestamp ?? '')));
  }
}
