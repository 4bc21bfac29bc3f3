/**
 * /metrics of real `flashcsi coordinator --metrics-address` processes against the real API server
 * harness (test/k8s/harness.ts): the leader's phase gauges follow the VolumeTransactions and
 * VolumeRollbacks in the API server (they fail or wait here, with no volumes behind them, which is
 * all these gauges need); a standby reports leader 0 and no phase samples.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CoreV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import { applySnapshotCrds, freePort, startControlPlane, startProcess, waitFor, type ControlPlane, type ManagedProcess } from '../k8s/harness.js';
import { applyFlashcsiCrds } from '../packaging/helpers.js';
import { BIN } from '../csi/plugin-process.js';
import { httpGet } from './helpers.js';
import { parsePrometheusText, sampleValue, samplesNamed, type PromFamily } from './prom-text.js';

const NS = 'metrics-test';
const GROUP = 'flashcsi.io';
const VERSION = 'v1alpha1';

describe('coordinator /metrics against a real API server', { timeout: 300_000 }, () => {
  let cp: ControlPlane | undefined;
  let custom: CustomObjectsApi;
  const urls = new Map<string, string>();
  const procs = new Map<string, ManagedProcess>();
  const plane = (): ControlPlane => {
    if (!cp) throw new Error('control plane not started');
    return cp;
  };

  async function startCoordinator(identity: string): Promise<void> {
    const port = await freePort();
    const proc = startProcess(
      `coordinator-${identity}`,
      process.execPath,
      [BIN, 'coordinator', '--kubeconfig', plane().kubeconfig, '--namespace', NS, '--identity', identity, '--metrics-address', `127.0.0.1:${port}`],
      { logFile: join(plane().dir, `coordinator-${identity}.log`) },
    );
    plane().adopt(proc);
    procs.set(identity, proc);
    urls.set(identity, `http://127.0.0.1:${port}/metrics`);
  }

  /** One scrape of a coordinator, through the strict checker; undefined while it does not answer yet. */
  async function scrape(identity: string): Promise<Map<string, PromFamily> | undefined> {
    const r = await httpGet(urls.get(identity) as string).catch(() => undefined);
    if (r === undefined) return undefined;
    assert.equal(r.status, 200, r.body);
    return parsePrometheusText(r.body);
  }

  /** Phases of every object of `plural` in the API server (no status yet = Pending, as the coordinator counts). */
  async function phases(plural: string): Promise<Map<string, number>> {
    const list = (await custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: NS, plural })) as { items: Array<{ status?: { phase?: string } }> };
    const out = new Map<string, number>();
    for (const o of list.items) out.set(o.status?.phase ?? 'Pending', (out.get(o.status?.phase ?? 'Pending') ?? 0) + 1);
    return out;
  }

  /** True when `family`'s samples equal `expected` (phases missing from it must be 0). */
  function gaugeMatches(f: Map<string, PromFamily>, family: string, expected: Map<string, number>): boolean {
    const samples = samplesNamed(f, family);
    if (samples.length === 0) return false;
    for (const s of samples) if (s.value !== (expected.get(s.labels['phase'] ?? '') ?? 0)) return false;
    return [...expected.keys()].every((phase) => samples.some((s) => s.labels['phase'] === phase));
  }

  before(async () => {
    cp = await startControlPlane();
    await applySnapshotCrds(cp);
    await applyFlashcsiCrds(cp);
    await cp.kubeConfig().makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name: NS } } });
    custom = cp.kubeConfig().makeApiClient(CustomObjectsApi);
    await startCoordinator('a');
    const leading = async (): Promise<true | undefined> => {
      const f = await scrape('a');
      return f !== undefined && sampleValue(f, 'flashcsi_coordinator_leader') === 1 ? true : undefined;
    };
    await waitFor('coordinator a leading, by its metrics', leading, { timeoutMs: 60_000, watch: [procs.get('a') as ManagedProcess] });
    await startCoordinator('b');
  });
  after(async () => {
    await cp?.stop();
  });

  it('the phase gauges follow the VolumeTransactions and VolumeRollbacks in the API server', async () => {
    const vt = (name: string, pvcs: string[]) => ({ apiVersion: `${GROUP}/${VERSION}`, kind: 'VolumeTransaction', metadata: { name, namespace: NS }, spec: { persistentVolumeClaims: pvcs } });
    const vr = (name: string, snapshot: string) => ({ apiVersion: `${GROUP}/${VERSION}`, kind: 'VolumeRollback', metadata: { name, namespace: NS }, spec: { volumeSnapshotName: snapshot } });
    await custom.createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: NS, plural: 'volumetransactions', body: vt('tx1', ['no-such-pvc']) });
    await custom.createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: NS, plural: 'volumetransactions', body: vt('tx2', ['other-pvc', 'third-pvc']) });
    await custom.createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: NS, plural: 'volumerollbacks', body: vr('rb1', 'no-such-snapshot') });

    // Until every object has a phase and the leader's gauges equal the API server's counts.
    const agreed = async (expectTx: number, expectRb: number): Promise<{ tx: Map<string, number>; rb: Map<string, number> } | undefined> => {
      // Settled first: the coordinator records Pending, then Failed (a PVC is missing), which is final.
      const listed = (await custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: NS, plural: 'volumetransactions' })) as { items: Array<{ status?: { phase?: string } }> };
      if (!listed.items.every((o) => o.status?.phase !== undefined && o.status.phase !== 'Pending')) return undefined;
      const tx = await phases('volumetransactions');
      const rb = await phases('volumerollbacks');
      const total = (m: Map<string, number>): number => [...m.values()].reduce((a, b) => a + b, 0);
      if (total(tx) !== expectTx || total(rb) !== expectRb) return undefined;
      const f = await scrape('a');
      if (f === undefined || !gaugeMatches(f, 'flashcsi_volume_transactions', tx) || !gaugeMatches(f, 'flashcsi_volume_rollbacks', rb)) return undefined;
      return { tx, rb };
    };
    const seen = await waitFor('the leader\'s phase gauges to equal the API server\'s phases', () => agreed(2, 1), { timeoutMs: 60_000, watch: [procs.get('a') as ManagedProcess] });
    assert.equal(seen.tx.get('Failed'), 2, `transactions over missing PVCs fail: ${JSON.stringify([...seen.tx])}`);

    const f = (await scrape('a')) as Map<string, PromFamily>;
    for (const phase of ['Pending', 'Open', 'Preparing', 'Committed', 'RollingBack', 'RolledBack', 'Failed']) {
      assert.ok(sampleValue(f, 'flashcsi_volume_transactions', { phase }) !== undefined, `every transaction phase is reported (${phase})`);
    }
    for (const phase of ['Pending', 'WaitingForDetach', 'RollingBack', 'Completed', 'Failed']) {
      assert.ok(sampleValue(f, 'flashcsi_volume_rollbacks', { phase }) !== undefined, `every rollback phase is reported (${phase})`);
    }
    assert.ok(f.has('process_resident_memory_bytes'), 'Node.js process metrics');

    // A deleted transaction leaves the gauge.
    await custom.deleteNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: NS, plural: 'volumetransactions', name: 'tx1' });
    await waitFor('the gauges to drop the deleted transaction', () => agreed(1, 1), { timeoutMs: 60_000, watch: [procs.get('a') as ManagedProcess] });
  });

  it('a standby reports leader 0 and no phase samples', async () => {
    const f = await waitFor('the standby answering /metrics', () => scrape('b'), { timeoutMs: 30_000, watch: [procs.get('b') as ManagedProcess] });
    assert.equal(sampleValue(f, 'flashcsi_coordinator_leader'), 0);
    assert.deepEqual(samplesNamed(f, 'flashcsi_volume_transactions'), []);
    assert.deepEqual(samplesNamed(f, 'flashcsi_volume_rollbacks'), []);
    const a = (await scrape('a')) as Map<string, PromFamily>;
    assert.equal(sampleValue(a, 'flashcsi_coordinator_leader'), 1);
  });
});
