// Smoke test of the real control-plane harness: etcd + kube-apiserver (+ kube-controller-manager) from the
// pinned Go builds, driven through @kubernetes/client-node. Fails (does not skip) when the tools are not built.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  ApiextensionsV1Api,
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  type KubeConfig,
  type V1ConfigMap,
} from '@kubernetes/client-node';
import { watch } from '../../src/k8s/informers.js';
import { Kube } from '../../src/k8s/kube.js';
import { electLeader } from '../../src/k8s/leader.js';
import { createLogger } from '../../src/log/logger.js';
import { applySnapshotCrds, startControlPlane, startSnapshotController, waitFor, type ControlPlane } from './harness.js';

const SNAPSHOT_CRDS = [
  'volumesnapshotclasses.snapshot.storage.k8s.io',
  'volumesnapshotcontents.snapshot.storage.k8s.io',
  'volumesnapshots.snapshot.storage.k8s.io',
  'volumegroupsnapshotclasses.groupsnapshot.storage.k8s.io',
  'volumegroupsnapshotcontents.groupsnapshot.storage.k8s.io',
  'volumegroupsnapshots.groupsnapshot.storage.k8s.io',
];

describe('k8s control plane (etcd + kube-apiserver + kube-controller-manager)', { timeout: 300_000 }, () => {
  let cp: ControlPlane | undefined;
  let kc: KubeConfig;

  before(async () => {
    cp = await startControlPlane({ controllerManager: { controllers: ['persistentvolume-binder-controller', 'namespace-controller', 'garbage-collector-controller'] } });
    kc = cp.kubeConfig();
  });

  after(async () => {
    await cp?.stop();
  });

  const plane = (): ControlPlane => {
    if (!cp) throw new Error('control plane not started');
    return cp;
  };

  it('serves the API: namespace and ConfigMap round-trip', async () => {
    const core = kc.makeApiClient(CoreV1Api);
    await core.createNamespace({ body: { metadata: { name: 'smoke' } } });
    await core.createNamespacedConfigMap({
      namespace: 'smoke',
      body: { metadata: { name: 'cm1', labels: { app: 'flashcsi' } }, data: { greeting: 'hello' } },
    });
    const cm = await core.readNamespacedConfigMap({ namespace: 'smoke', name: 'cm1' });
    assert.equal(cm.data?.['greeting'], 'hello');
    const list = await core.listNamespacedConfigMap({ namespace: 'smoke', labelSelector: 'app=flashcsi' });
    assert.deepEqual(list.items.map((i) => i.metadata?.name), ['cm1']);
  });

  it('applies the pinned snapshot CRDs and they become Established and served', async () => {
    const names = await applySnapshotCrds(plane());
    assert.deepEqual([...names].sort(), [...SNAPSHOT_CRDS].sort());
    const ext = kc.makeApiClient(ApiextensionsV1Api);
    const vs = await ext.readCustomResourceDefinition({ name: 'volumesnapshots.snapshot.storage.k8s.io' });
    assert.equal(vs.spec.group, 'snapshot.storage.k8s.io');
    assert.ok(vs.spec.versions.some((v) => v.name === 'v1' && v.served && v.storage), 'snapshot.storage.k8s.io/v1 is the served storage version');
    assert.ok(vs.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True'));
    // Applying again is idempotent (replace path).
    assert.deepEqual((await applySnapshotCrds(plane())).sort(), [...SNAPSHOT_CRDS].sort());
    // The new API is served: an empty VolumeSnapshotClass list.
    const custom = kc.makeApiClient(CustomObjectsApi);
    const classes = (await custom.listClusterCustomObject({ group: 'snapshot.storage.k8s.io', version: 'v1', plural: 'volumesnapshotclasses' })) as { items: unknown[] };
    assert.deepEqual(classes.items, []);
  });

  it('runs snapshot-controller, which processes a VolumeSnapshot (error status for a missing PVC)', async () => {
    await startSnapshotController(plane());
    const custom = kc.makeApiClient(CustomObjectsApi);
    const core = kc.makeApiClient(CoreV1Api);
    await core.createNamespace({ body: { metadata: { name: 'snap' } } });
    await custom.createNamespacedCustomObject({
      group: 'snapshot.storage.k8s.io',
      version: 'v1',
      namespace: 'snap',
      plural: 'volumesnapshots',
      body: {
        apiVersion: 'snapshot.storage.k8s.io/v1',
        kind: 'VolumeSnapshot',
        metadata: { name: 'vs1' },
        spec: { volumeSnapshotClassName: 'none', source: { persistentVolumeClaimName: 'missing-pvc' } },
      },
    });
    interface VolumeSnapshot {
      status?: { readyToUse?: boolean; error?: { message?: string } };
    }
    const status = await waitFor(
      'snapshot-controller sets VolumeSnapshot status',
      async () => {
        const vs = (await custom.getNamespacedCustomObject({
          group: 'snapshot.storage.k8s.io',
          version: 'v1',
          namespace: 'snap',
          plural: 'volumesnapshots',
          name: 'vs1',
        })) as VolumeSnapshot;
        return vs.status?.error?.message !== undefined ? vs.status : undefined;
      },
      { timeoutMs: 30_000, watch: [plane().apiServer] },
    ).catch((e: unknown) => {
      throw new Error(`${e instanceof Error ? e.message : String(e)}\n${plane().logs(40)}`, { cause: e });
    });
    assert.notEqual(status.readyToUse, true);
    assert.match(status.error?.message ?? '', /missing-pvc|"none"/, `status.error: ${JSON.stringify(status.error)}`);
  });

  it('runs kube-controller-manager: a PVC binds to a matching pre-made PV', async () => {
    const core = kc.makeApiClient(CoreV1Api);
    await core.createNamespace({ body: { metadata: { name: 'bind' } } });
    await core.createPersistentVolume({
      body: {
        metadata: { name: 'pv-bind' },
        spec: {
          capacity: { storage: '1Gi' },
          accessModes: ['ReadWriteOnce'],
          storageClassName: 'manual',
          persistentVolumeReclaimPolicy: 'Retain',
          csi: { driver: 'flashcsi.example.com', volumeHandle: 'vol-bind' },
        },
      },
    });
    await core.createNamespacedPersistentVolumeClaim({
      namespace: 'bind',
      body: {
        metadata: { name: 'pvc-bind' },
        spec: { accessModes: ['ReadWriteOnce'], storageClassName: 'manual', resources: { requests: { storage: '1Gi' } } },
      },
    });
    const phase = await waitFor(
      'PVC bound by kube-controller-manager',
      async () => {
        const pvc = await core.readNamespacedPersistentVolumeClaim({ namespace: 'bind', name: 'pvc-bind' });
        return pvc.status?.phase === 'Bound' ? pvc.spec?.volumeName : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 250, watch: [plane().apiServer] },
    ).catch((e: unknown) => {
      throw new Error(`${e instanceof Error ? e.message : String(e)}\n${plane().logs(40)}`, { cause: e });
    });
    assert.equal(phase, 'pv-bind');
  });

  // src/k8s/leader.ts against the real API server: its Lease's acquireTime and renewTime are
  // MicroTime, which the API server refuses with millisecond precision (a regression: with a plain
  // Date every write was a 400 and no coordinator ever led).
  it('runs flashcsi\'s leader election on a real Lease: one holder, handed over when it steps down', async () => {
    const kube = new Kube(kc);
    const log = createLogger({ level: 'silent' });
    const lease = { namespace: 'default', name: 'smoke-leader', leaseDurationSeconds: 3, retryPeriodMs: 200, log };
    const a = electLeader(kube, { ...lease, identity: 'candidate-a' });
    const b = electLeader(kube, { ...lease, identity: 'candidate-b' });
    try {
      const within = <T>(p: Promise<T>, what: string): Promise<T> =>
        Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what} within 20 s`)), 20_000).unref())]);
      const first = await within(Promise.race([a.acquired.then(() => 'candidate-a'), b.acquired.then(() => 'candidate-b')]), 'a candidate leads');
      const coord = kc.makeApiClient(CoordinationV1Api);
      const held = await coord.readNamespacedLease({ namespace: 'default', name: 'smoke-leader' });
      assert.equal(held.spec?.holderIdentity, first);
      const [leader, other] = first === 'candidate-a' ? [a, b] : [b, a];
      await leader.stop(); // gives the Lease up
      await within(other.acquired, 'the other candidate takes over');
      const next = await coord.readNamespacedLease({ namespace: 'default', name: 'smoke-leader' });
      assert.notEqual(next.spec?.holderIdentity, first);
      assert.equal(next.spec?.leaseTransitions, 2);
    } finally {
      await a.stop();
      await b.stop();
    }
  });

  it('an informer returns only after its first successful list (an API server still initialising is waited for), then follows changes', async () => {
    const core = kc.makeApiClient(CoreV1Api);
    await core.createNamespace({ body: { metadata: { name: 'informer' } } });
    await core.createNamespacedConfigMap({ namespace: 'informer', body: { metadata: { name: 'before' } } });
    const lines: string[] = [];
    const log = createLogger({ level: 'warn', destination: { write: (l: string) => void lines.push(l) } });
    let attempts = 0;
    const seen: string[] = [];
    // The first two lists fail as kube-apiserver's do while its storage initialises (429).
    const list = async (): Promise<{ items: V1ConfigMap[] }> => {
      if (++attempts <= 2) throw Object.assign(new Error('storage is (re)initializing'), { code: 429 });
      return core.listNamespacedConfigMap({ namespace: 'informer' });
    };
    const w = await watch<V1ConfigMap>(kc, '/api/v1/namespaces/informer/configmaps', list, (cm) => seen.push(cm.metadata?.name ?? ''), log);
    try {
      assert.equal(attempts, 3, 'watch() retried the failed lists before returning');
      assert.deepEqual(w.list().map((cm) => cm.metadata?.name), ['before'], 'the cache is filled when watch() returns');
      assert.equal(lines.filter((l) => l.includes('first list failed; retrying')).length, 2, `each failed list is logged: ${lines.join('')}`);
      const delays = lines.map((l) => (JSON.parse(l) as { retryInMs: number }).retryInMs);
      assert.ok((delays[1] ?? 0) > (delays[0] ?? 0), `the retries back off: ${JSON.stringify(delays)}`);
      await core.createNamespacedConfigMap({ namespace: 'informer', body: { metadata: { name: 'after' } } });
      await waitFor('the watch to deliver the new ConfigMap', async () => (w.get('after', 'informer') ? true : undefined), { timeoutMs: 20_000 });
      assert.ok(seen.includes('after'));
    } finally {
      await w.stop();
    }
  });
});
