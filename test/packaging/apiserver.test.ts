// The chart, deploy/ and the CRDs against a real kube-apiserver (test/k8s/harness.ts): a server-side
// apply dry-run of every rendered object, and the CRDs' validation (CEL rules, enums, immutability),
// printer columns and status subresource.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CustomObjectsApi, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { applySnapshotCrds, rejection, startControlPlane, type ControlPlane } from '../k8s/harness.js';
import { ALL_FEATURES, ROOT, applyFlashcsiCrds, applyStandInCrds, kubectl, parseManifests, renderChart, show } from './helpers.js';

const GROUP = 'flashcsi.io';
const VERSION = 'v1alpha1';
const NS = 'crd-tests';

describe('chart, deploy/ and CRDs on a real kube-apiserver', { timeout: 240_000 }, () => {
  let cp: ControlPlane | undefined;
  let dir = '';
  const plane = (): ControlPlane => {
    if (!cp) throw new Error('control plane not started');
    return cp;
  };
  const custom = (): CustomObjectsApi => plane().kubeConfig().makeApiClient(CustomObjectsApi);

  before(async () => {
    cp = await startControlPlane();
    dir = await mkdtemp(join(tmpdir(), 'flashcsi-packaging-'));
    await applySnapshotCrds(cp);
    await applyFlashcsiCrds(cp);
    await applyStandInCrds(cp);
    for (const ns of ['flashcsi', NS]) {
      const r = await kubectl(cp, ['create', 'namespace', ns]);
      assert.equal(r.code, 0, show(r));
    }
  });

  after(async () => {
    await cp?.stop();
    if (dir !== '') await rm(dir, { recursive: true, force: true });
  });

  async function dryRun(file: string): Promise<void> {
    const r = await kubectl(plane(), ['apply', '--server-side', '--dry-run=server', '--field-manager=flashcsi-test', '-f', file]);
    assert.equal(r.code, 0, `${file}: ${show(r)}\n${plane().logs(10)}`);
    assert.doesNotMatch(r.stderr, /warning/i, `${file}: no warnings\n${show(r)}`);
    const docs = parseManifests(await readFile(file, 'utf8'));
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines.length, docs.length, `one result per object\n${r.stdout}`);
    for (const l of lines) assert.match(l, /(serverside-applied|created|configured|unchanged) \(server dry run\)$/, l);
  }

  it('accepts the chart rendered with default values (server-side apply, dry run)', async () => {
    const r = await renderChart();
    assert.equal(r.code, 0, show(r));
    const file = join(dir, 'default.yaml');
    await writeFile(file, r.stdout);
    await dryRun(file);
  });

  it('accepts the chart rendered with every optional feature on', async () => {
    const r = await renderChart(ALL_FEATURES);
    assert.equal(r.code, 0, show(r));
    const file = join(dir, 'all.yaml');
    await writeFile(file, r.stdout);
    await dryRun(file);
  });

  it('accepts deploy/ (CRDs as they are installed, then the manifests)', async () => {
    await dryRun(join(ROOT, 'deploy', 'crds.yaml'));
    await dryRun(join(ROOT, 'deploy', 'flashcsi.yaml'));
  });

  // ------------------------------------------------------------------ CRD behaviour

  const vrb = (name: string, snapshot: string): object => ({
    apiVersion: `${GROUP}/${VERSION}`,
    kind: 'VolumeRollback',
    metadata: { name, namespace: NS },
    spec: { volumeSnapshotName: snapshot },
  });
  const vtx = (name: string, spec: Record<string, unknown>): object => ({
    apiVersion: `${GROUP}/${VERSION}`,
    kind: 'VolumeTransaction',
    metadata: { name, namespace: NS },
    spec,
  });
  const create = (plural: string, body: object): Promise<unknown> =>
    custom().createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: NS, plural, body });
  const merge = (plural: string, name: string, body: object): Promise<unknown> =>
    custom().patchNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: NS, plural, name, body }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
  const mergeStatus = (plural: string, name: string, body: object): Promise<unknown> =>
    custom().patchNamespacedCustomObjectStatus({ group: GROUP, version: VERSION, namespace: NS, plural, name, body }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
  const get = (plural: string, name: string): Promise<Record<string, unknown>> =>
    custom().getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: NS, plural, name }) as Promise<Record<string, unknown>>;

  it('creates valid VolumeRollbacks and VolumeTransactions (defaults filled in)', async () => {
    await create('volumerollbacks', vrb('rb-valid', 'snap-1'));
    await create('volumetransactions', vtx('tx-valid', { persistentVolumeClaims: ['a', 'b'] }));
    const tx = await get('volumetransactions', 'tx-valid');
    assert.deepEqual(tx['spec'], { persistentVolumeClaims: ['a', 'b'], timeoutSeconds: 3600 });
    await create('volumetransactions', vtx('tx-decided', { persistentVolumeClaims: ['c'], decision: 'Commit', timeoutSeconds: 60 }));
  });

  it('rejects cross-namespace references with a clear reason', async () => {
    const a = await rejection(create('volumerollbacks', vrb('rb-xns', 'other/snap')));
    assert.equal(a.code, 422);
    assert.match(a.message, /spec\.volumeSnapshotName: .*must name a VolumeSnapshot in this namespace; cross-namespace references are not allowed/);
    const b = await rejection(create('volumetransactions', vtx('tx-xns', { persistentVolumeClaims: ['a', 'other/pvc'] })));
    assert.equal(b.code, 422);
    assert.match(b.message, /spec\.persistentVolumeClaims\[1\]: .*must name a PVC in this namespace; cross-namespace references are not allowed/);
  });

  it('rejects a bad decision value, naming the allowed ones', async () => {
    const r = await rejection(create('volumetransactions', vtx('tx-bad', { persistentVolumeClaims: ['a'], decision: 'Maybe' })));
    assert.equal(r.code, 422);
    assert.match(r.message, /spec\.decision: Unsupported value: "Maybe": supported values: "", "Commit", "Rollback"/);
    const u = await rejection(merge('volumetransactions', 'tx-valid', { spec: { decision: 'commit' } }));
    assert.match(u.message, /Unsupported value: "commit"/);
  });

  it('rejects changing spec.volumeSnapshotName of a VolumeRollback', async () => {
    const r = await rejection(merge('volumerollbacks', 'rb-valid', { spec: { volumeSnapshotName: 'snap-2' } }));
    assert.equal(r.code, 422);
    assert.match(r.message, /spec is immutable; delete this VolumeRollback and create a new one/);
  });

  it('rejects changing the PVCs of a VolumeTransaction, and changing or withdrawing its decision', async () => {
    const pvcs = await rejection(merge('volumetransactions', 'tx-valid', { spec: { persistentVolumeClaims: ['a', 'b', 'c'] } }));
    assert.equal(pvcs.code, 422);
    assert.match(pvcs.message, /persistentVolumeClaims is immutable/);
    const timeout = await rejection(merge('volumetransactions', 'tx-valid', { spec: { timeoutSeconds: 5 } }));
    assert.match(timeout.message, /timeoutSeconds is immutable/);
    // "" -> Commit is the decision being made: allowed.
    await merge('volumetransactions', 'tx-valid', { spec: { decision: 'Commit' } });
    const change = await rejection(merge('volumetransactions', 'tx-valid', { spec: { decision: 'Rollback' } }));
    assert.equal(change.code, 422);
    assert.match(change.message, /the decision cannot be changed or withdrawn once made/);
    const withdraw = await rejection(merge('volumetransactions', 'tx-valid', { spec: { decision: '' } }));
    assert.match(withdraw.message, /the decision cannot be changed or withdrawn once made/);
    const remove = await rejection(merge('volumetransactions', 'tx-valid', { spec: { decision: null } }));
    assert.match(remove.message, /the decision cannot be changed or withdrawn once made/);
    // Re-stating the same decision is fine.
    await merge('volumetransactions', 'tx-valid', { spec: { decision: 'Commit' } });
  });

  it('status is a subresource: ignored on the main resource, written through /status', async () => {
    await merge('volumerollbacks', 'rb-valid', { status: { phase: 'Completed' }, metadata: { labels: { touched: 'yes' } } });
    let rb = await get('volumerollbacks', 'rb-valid');
    assert.equal(rb['status'], undefined, 'status on the main resource is ignored');
    assert.equal((rb['metadata'] as { labels?: Record<string, string> }).labels?.['touched'], 'yes');
    await mergeStatus('volumerollbacks', 'rb-valid', { status: { phase: 'WaitingForDetach', message: 'pod app-0 uses the volume', persistentVolumeClaimName: 'data', restoredBytes: 4096 } });
    rb = await get('volumerollbacks', 'rb-valid');
    assert.deepEqual(rb['status'], { phase: 'WaitingForDetach', message: 'pod app-0 uses the volume', persistentVolumeClaimName: 'data', restoredBytes: 4096 });
    const bad = await rejection(mergeStatus('volumerollbacks', 'rb-valid', { status: { phase: 'Done' } }));
    assert.match(bad.message, /status\.phase: Unsupported value: "Done"/);
    await mergeStatus('volumetransactions', 'tx-valid', {
      status: { phase: 'Open', participants: [{ persistentVolumeClaimName: 'a', node: 'node-1', state: 'Begun', checkpoint: 'cp-1' }] },
    });
  });

  it('prints the Phase, target and Age columns (kubectl get vrb,vtx, and -o wide)', async () => {
    const r = await kubectl(plane(), ['get', 'vrb,vtx', '-n', NS]);
    assert.equal(r.code, 0, show(r));
    const [vrbHeader, ...rest] = r.stdout.split('\n');
    assert.match(vrbHeader ?? '', /^NAME\s+PHASE\s+SNAPSHOT\s+PVC\s+AGE$/);
    assert.match(r.stdout, /volumerollback\.flashcsi\.io\/rb-valid\s+WaitingForDetach\s+snap-1\s+data\s+\d+s/);
    assert.match(rest.join('\n'), /NAME\s+PHASE\s+DECISION\s+PVCS\s+AGE/);
    assert.match(r.stdout, /volumetransaction\.flashcsi\.io\/tx-valid\s+Open\s+Commit\s+\["a","b"\]\s+\d+s/);
    const wide = await kubectl(plane(), ['get', 'vrb', 'rb-valid', '-n', NS, '-o', 'wide']);
    assert.match(wide.stdout, /NAME\s+PHASE\s+SNAPSHOT\s+PVC\s+RESTORED\s+MESSAGE\s+AGE/);
    assert.match(wide.stdout, /rb-valid\s+WaitingForDetach\s+snap-1\s+data\s+4096\s+pod app-0 uses the volume/);
    const cat = await kubectl(plane(), ['get', 'flashcsi', '-n', NS, '-o', 'name']);
    assert.equal(cat.code, 0, show(cat));
    assert.deepEqual(cat.stdout.trim().split('\n').sort(), [
      'volumerollback.flashcsi.io/rb-valid',
      'volumetransaction.flashcsi.io/tx-decided',
      'volumetransaction.flashcsi.io/tx-valid',
    ]);
  });
});
