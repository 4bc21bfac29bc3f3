// flashcsi end to end on a real control plane (see README.md in this directory): PVCs, snapshots,
// restores, VolumeRollbacks and VolumeTransactions through the API server, with the real
// csi-provisioner, csi-snapshotter and snapshot-controller, two node plugins with their agents, and
// leader-elected coordinators that are SIGKILLed at each step of two-phase commit.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { V1PersistentVolume } from '@kubernetes/client-node';
import { Annotation, Finalizer } from '../../src/constants.js';
import { participantName } from '../../src/k8s/transaction-plan.js';
import { waitFor, type ManagedProcess } from '../k8s/harness.js';
import { Api, GROUP, MiB, VERSION, rejection, type Vt, type Vtp } from './api.js';
import { Cluster, DRIVER, TOPOLOGY_KEY, type NodeHost } from './cluster.js';
import { readBlock, readFiles, stampBlock, stampOf, writeBlock, writeFileDurably, type Attachment } from './kubelet.js';

const NS = 'e2e';
const OTHER = 'other';
const BLOCK = 64 * 1024;

function nodeOfPv(pv: V1PersistentVolume): string[] {
  return (pv.spec?.nodeAffinity?.required?.nodeSelectorTerms ?? []).flatMap((t) => (t.matchExpressions ?? []).filter((e) => e.key === TOPOLOGY_KEY).flatMap((e) => e.values ?? []));
}

describe('flashcsi end to end on a real control plane, with the real sidecars and two nodes', { timeout: 900_000 }, () => {
  let c: Cluster | undefined;
  let api: Api;
  const cluster = (): Cluster => {
    if (!c) throw new Error('cluster not started');
    return c;
  };
  const node = (name: string): NodeHost => cluster().node(name);
  /** Appends every process's log tail to an assertion message. */
  const logs = (): string => `\n${cluster().logs(30)}`;

  before(async () => {
    c = await Cluster.start(['node-a', 'node-b']);
    api = new Api(c);
    for (const ns of [NS, OTHER]) await c.core.createNamespace({ body: { metadata: { name: ns } } });
  });

  after(async () => {
    await c?.stop();
  });

  // What the tests share, in order.
  const pv: Record<string, V1PersistentVolume> = {};
  const pvcUid: Record<string, string> = {};
  /** What the kubelet stand-ins hold attached, by PVC. */
  const att = new Map<string, Attachment>();
  const scratch = (): string => cluster().root;

  /** Attaches (stages + publishes) a PVC on its node, as the kubelet would for a pod. */
  const attach = async (pvc: string, nodeName: string): Promise<Attachment> => {
    const a = await node(nodeName).kubelet.attach(NS, pvc);
    att.set(pvc, a);
    return a;
  };
  const detach = async (pvc: string, nodeName: string): Promise<void> => {
    const a = att.get(pvc);
    if (a) await node(nodeName).kubelet.detach(a);
    att.delete(pvc);
  };
  const stampAt = async (pvc: string, offset: number): Promise<string> => {
    const a = att.get(pvc);
    if (!a) throw new Error(`${pvc} is not attached`);
    return stampOf(await readBlock(a, offset, BLOCK));
  };
  const write = async (pvc: string, offset: number, stamp: string): Promise<void> => {
    const a = att.get(pvc);
    if (!a) throw new Error(`${pvc} is not attached`);
    await writeBlock(a, offset, stampBlock(stamp, BLOCK), scratch());
  };

  // ------------------------------------------------------------------------------------------ 1

  it('provisions a PVC on the node its selected-node names (PV node affinity), binds it, and data goes through the mount', async () => {
    await api.createPvc(NS, 'data', { node: 'node-a' });
    await api.createPvc(NS, 'tx-a', { node: 'node-a', block: true });
    await api.createPvc(NS, 'tx-b', { node: 'node-b', block: true });
    for (const [name, nodeName] of [['data', 'node-a'], ['tx-a', 'node-a'], ['tx-b', 'node-b']] as const) {
      const bound = await api.waitBound(NS, name).catch((e: unknown) => assert.fail(`${String(e)}${logs()}`));
      pv[name] = bound.pv;
      pvcUid[name] = bound.pvc.metadata?.uid ?? '';
      assert.equal(bound.pv.spec?.csi?.driver, DRIVER);
      assert.deepEqual(nodeOfPv(bound.pv), [nodeName], `PV of ${name}: node affinity ${TOPOLOGY_KEY} = ${nodeName}`);
      assert.equal(bound.pv.spec?.claimRef?.uid, pvcUid[name]);
      // The volume lives in that node's plugin state, and only there.
      const handle = bound.pv.spec?.csi?.volumeHandle ?? '';
      const other = nodeName === 'node-a' ? 'node-b' : 'node-a';
      assert.ok(existsSync(join(node(nodeName).stateDir, 'volumes', handle)), `${handle} is on ${nodeName}`);
      assert.ok(!existsSync(join(node(other).stateDir, 'volumes', handle)), `${handle} is not on ${other}`);
    }
    assert.equal(pv['data']?.spec?.volumeMode, 'Filesystem');
    assert.equal(pv['tx-a']?.spec?.volumeMode, 'Block');

    const a = await attach('data', 'node-a');
    await writeFileDurably(a, 'before.txt', 'written before the snapshot\n');
    assert.deepEqual(await readFiles(a), { 'before.txt': 'written before the snapshot\n' });
  });

  // ------------------------------------------------------------------------------------------ 2

  it('cuts a VolumeSnapshot (readyToUse) on the volume\'s node, and a PVC restored from it holds exactly the pre-snapshot data', async () => {
    await api.createSnapshot(NS, 'snap1', 'data');
    const snap = await api.waitSnapshot(NS, 'snap1', (s) => s.status?.readyToUse === true, 'readyToUse').catch((e: unknown) => assert.fail(`${String(e)}${logs()}`));
    const content = await api.getContent(snap.status?.boundVolumeSnapshotContentName ?? '');
    assert.equal(content.metadata?.labels?.['snapshot.storage.kubernetes.io/managed-by'], 'node-a', 'distributed snapshotting: node-a\'s csi-snapshotter cut it');
    assert.match(content.status?.snapshotHandle ?? '', new RegExp(`^${pv['data']?.spec?.csi?.volumeHandle ?? 'x'}@`));

    // Written after the snapshot: must not be in the restored volume.
    const a = att.get('data');
    assert.ok(a);
    await writeFileDurably(a, 'before.txt', 'overwritten after the snapshot\n');
    await writeFileDurably(a, 'after.txt', 'written after the snapshot\n');

    await api.createPvc(NS, 'restored', { node: 'node-a', fromSnapshot: 'snap1' });
    const bound = await api.waitBound(NS, 'restored').catch((e: unknown) => assert.fail(`${String(e)}${logs()}`));
    assert.deepEqual(nodeOfPv(bound.pv), ['node-a']);
    const r = await attach('restored', 'node-a');
    assert.deepEqual(await readFiles(r), { 'before.txt': 'written before the snapshot\n' });
    await detach('restored', 'node-a');
    assert.deepEqual(await readFiles(a), { 'after.txt': 'written after the snapshot\n', 'before.txt': 'overwritten after the snapshot\n' });
  });

  it('imports a pre-provisioned snapshot (a VolumeSnapshotContent with snapshotHandle): node-a\'s agent labels it for node-a\'s csi-snapshotter, and a VolumeSnapshot bound to it becomes readyToUse', async () => {
    // Found by the storage e2e suite ("Pre-provisioned Snapshot"): the snapshot-controller labels only
    // the contents it creates, so an imported one was never handled by any node's sidecar.
    const handle = (await api.getContent((await api.getSnapshot(NS, 'snap1')).status?.boundVolumeSnapshotContentName ?? '')).status?.snapshotHandle ?? '';
    const content = 'imported-snap1';
    // Retain: deleting the import must not delete the checkpoint snap1 still uses.
    await api.createImportedContent(content, handle, NS, 'imported');
    await api.createSnapshotOfContent(NS, 'imported', content);
    await api.waitSnapshot(NS, 'imported', (s) => s.status?.readyToUse === true, 'readyToUse').catch((e: unknown) => assert.fail(`${String(e)}${logs()}`));
    const c = await api.getContent(content);
    assert.equal(c.metadata?.labels?.['snapshot.storage.kubernetes.io/managed-by'], 'node-a');
    assert.equal(c.status?.snapshotHandle, handle);
    await api.delete('snapshot.storage.k8s.io', 'v1', 'volumesnapshots', NS, 'imported');
    await api.deleteContent(content);
  });

  // ------------------------------------------------------------------------------------------ 3

  it('rolls a PVC back in place with a VolumeRollback: waits in WaitingForDetach while attached, then Completed; same PV, PVC and volume handle', async () => {
    const before = pv['data'];
    assert.ok(before);
    await api.createVr(NS, 'undo', 'snap1');
    const waiting = await api
      .waitVr(NS, 'undo', 'WaitingForDetach with the agent\'s reason', (vr) => vr.status?.phase === 'WaitingForDetach' && /staged on node node-a/.test(vr.status.message ?? ''))
      .catch((e: unknown) => assert.fail(`${String(e)}${logs()}`));
    assert.match(waiting.status?.message ?? '', /waiting for every pod using it to stop/);
    assert.equal(waiting.status?.persistentVolumeClaimName, 'data');
    assert.equal(waiting.status?.node, 'node-a');
    assert.equal(waiting.status?.volumeHandle, before.spec?.csi?.volumeHandle);
    const held = await api.readPvc(NS, 'data');
    assert.equal(held.metadata?.annotations?.[Annotation.Rollback], 'undo', 'the PVC is marked while the rollback runs');
    assert.ok(held.metadata?.finalizers?.includes(Finalizer.Protection));
    // The mounted file system has not changed under its user.
    const a = att.get('data');
    assert.ok(a);
    assert.deepEqual(await readFiles(a), { 'after.txt': 'written after the snapshot\n', 'before.txt': 'overwritten after the snapshot\n' });

    await detach('data', 'node-a'); // the pod is gone: unpublish + unstage
    const done = await api.waitVr(NS, 'undo', 'Completed', (vr) => vr.status?.phase === 'Completed').catch((e: unknown) => assert.fail(`${String(e)}${logs()}`));
    assert.ok((done.status?.restoredBytes ?? 0) > 0, `restoredBytes ${done.status?.restoredBytes}`);
    assert.ok(done.status?.completionTime);

    // Identity unchanged.
    const { pvc, pv: after } = await api.waitBound(NS, 'data');
    assert.equal(pvc.metadata?.uid, pvcUid['data']);
    assert.equal(after.metadata?.uid, before.metadata?.uid);
    assert.equal(after.metadata?.name, before.metadata?.name);
    assert.equal(after.spec?.csi?.volumeHandle, before.spec?.csi?.volumeHandle);
    // Released once done.
    await api.waitPvc(NS, 'data', 'released by the rollback', (p) => p.metadata?.annotations?.[Annotation.Rollback] === undefined && !(p.metadata?.finalizers ?? []).includes(Finalizer.Protection));

    // The data, read back through NBD (stage: flashcsi serve + nbdfuse + loop, mount).
    const back = await attach('data', 'node-a');
    assert.deepEqual(await readFiles(back), { 'before.txt': 'written before the snapshot\n' });

    const reasons = (await api.events(NS, 'VolumeRollback', 'undo')).map((e) => e.reason);
    for (const r of ['Resolved', 'RollingBack', 'Completed']) assert.ok(reasons.includes(r), `Event ${r} recorded (got ${reasons.join(', ')})`);
  });

  // ------------------------------------------------------------------------------------------ transactions

  const PVCS = ['tx-a', 'tx-b'] as const;
  const NODE_OF: Record<string, string> = { 'tx-a': 'node-a', 'tx-b': 'node-b' };
  const attachTx = async (): Promise<void> => {
    for (const p of PVCS) if (!att.has(p)) await attach(p, NODE_OF[p] ?? '');
  };
  const detachTx = async (which: readonly string[] = PVCS): Promise<void> => {
    for (const p of which) await detach(p, NODE_OF[p] ?? '');
  };
  const stamps = async (offset: number): Promise<Record<string, string>> => {
    const out: Record<string, string> = {};
    for (const p of PVCS) out[p] = await stampAt(p, offset);
    return out;
  };
  const both = (stamp: string): Record<string, string> => Object.fromEntries(PVCS.map((p) => [p, stamp]));
  const writeBoth = async (offset: number, stamp: string): Promise<void> => {
    for (const p of PVCS) await write(p, offset, stamp);
  };
  const openTx = async (name: string, timeoutSeconds?: number): Promise<Vt> => {
    await api.createVt(NS, name, [...PVCS], timeoutSeconds);
    return api.waitVt(NS, name, 'Open', (vt) => vt.status?.phase === 'Open').catch((e: unknown) => assert.fail(`${String(e)}${logs()}`));
  };
  const isTerminal = (vt: Vt): boolean => ['Committed', 'RolledBack', 'Failed'].includes(vt.status?.phase ?? '');
  /**
   * Waits until the transaction ends. A rollback waits for its volumes to be detached from every
   * pod: like pods stopping, the test detaches each volume whose participant reports WaitingForDetach.
   */
  const settle = async (name: string): Promise<Vt> => {
    for (;;) {
      const r = await api
        .watch<Vt, { vt?: Vt; detach?: string[] }>(`VolumeTransaction ${NS}/${name} completed`, GROUP, VERSION, 'volumetransactions', NS, { name }, (items) => {
          const vt = items[0];
          if (!vt) return undefined;
          if (isTerminal(vt)) return { vt };
          const waiting = (vt.status?.participants ?? []).filter((p) => p.state === 'WaitingForDetach' && att.has(p.persistentVolumeClaimName)).map((p) => p.persistentVolumeClaimName);
          return waiting.length > 0 ? { detach: waiting } : undefined;
        })
        .catch((e: unknown) => assert.fail(`${String(e)}${logs()}`));
      if (r.vt) return r.vt;
      await detachTx(r.detach ?? []);
    }
  };
  const released = async (name: string): Promise<void> => {
    for (const p of PVCS) {
      await api.waitPvc(NS, p, `released by ${name}`, (pvc) => pvc.metadata?.annotations?.[Annotation.Transaction] === undefined && !(pvc.metadata?.finalizers ?? []).includes(Finalizer.Protection));
    }
  };
  /** What both volumes hold at offset 0 once committed (the begin state of the next transaction). */
  let committed = 'base';
  /**
   * The transaction ends, as `expected`, and the data says so on both volumes: the transaction's
   * stamp everywhere (committed) or the begin state everywhere (rolled back). Never a mix.
   */
  const assertOutcome = async (name: string, expected: 'Committed' | 'RolledBack', stamp: string): Promise<Vt> => {
    const vt = await settle(name);
    await attachTx();
    const data = await stamps(0);
    const atomic = data['tx-a'] === data['tx-b'] && (data['tx-a'] === stamp || data['tx-a'] === committed);
    assert.ok(atomic, `${name}: all committed or all rolled back, by data: ${JSON.stringify(data)} (transaction wrote ${stamp}, begin state ${committed})`);
    assert.equal(vt.status?.phase, expected, `${name}: ${vt.status?.message ?? ''}${logs()}`);
    assert.deepEqual(data, both(expected === 'Committed' ? stamp : committed), `${name}: data of a ${expected} transaction`);
    if (expected === 'Committed') committed = stamp;
    await released(name);
    return vt;
  };

  // ------------------------------------------------------------------------------------------ 4

  it('runs a VolumeTransaction over two PVCs on two nodes: Commit keeps the writes, Rollback reverts both, a timeout rolls back', async () => {
    await attachTx();
    await writeBoth(0, 'base');
    await writeBoth(MiB, 'base');

    // Commit.
    const open = await openTx('tx-commit');
    const parts = open.status?.participants ?? [];
    assert.deepEqual(
      parts.map((p) => [p.persistentVolumeClaimName, p.node, p.volumeHandle, p.state]),
      PVCS.map((p) => [p, NODE_OF[p], pv[p]?.spec?.csi?.volumeHandle, 'Begun']),
    );
    for (const p of parts) assert.ok(p.checkpoint, `${p.persistentVolumeClaimName} has its transaction checkpoint`);
    for (const p of PVCS) {
      const pvc = await api.readPvc(NS, p);
      assert.equal(pvc.metadata?.annotations?.[Annotation.Transaction], 'tx-commit');
      assert.ok(pvc.metadata?.finalizers?.includes(Finalizer.Protection), `${p} is protected while in the transaction`);
    }
    await writeBoth(0, 'commit-1');
    await api.decide(NS, 'tx-commit', 'Commit');
    const done = await assertOutcome('tx-commit', 'Committed', 'commit-1');
    assert.equal(done.status?.decision, 'Commit');
    assert.equal(done.status?.decisionReason, 'AllPrepared');
    assert.deepEqual(await stamps(MiB), both('base'));
    const reasons = (await api.events(NS, 'VolumeTransaction', 'tx-commit')).map((e) => e.reason);
    for (const r of ['Opened', 'Preparing', 'Committed']) assert.ok(reasons.includes(r), `Event ${r} recorded (got ${reasons.join(', ')})`);

    // Rollback: waits while attached, each volume rolls back once detached.
    await openTx('tx-rollback');
    await writeBoth(0, 'rollback-2');
    await writeBoth(2 * MiB, 'rollback-2');
    await api.decide(NS, 'tx-rollback', 'Rollback');
    const waiting = await api
      .waitVt(NS, 'tx-rollback', 'RollingBack, waiting for both volumes to be detached', (vt) => vt.status?.phase === 'RollingBack' && (vt.status.participants ?? []).every((p) => p.state === 'WaitingForDetach'))
      .catch((e: unknown) => assert.fail(`${String(e)}${logs()}`));
    assert.match(waiting.status?.message ?? '', /waiting for tx-a, tx-b to be detached from every pod/);
    assert.equal(waiting.status?.decision, 'Rollback');
    assert.equal(waiting.status?.decisionReason, 'UserRequested');
    assert.deepEqual(await stamps(0), both('rollback-2'), 'attached volumes do not change under their pods');
    await detachTx(['tx-a']);
    await api.waitParticipants(NS, 'tx-rollback', 'tx-a RolledBack while tx-b waits', (m) =>
      m.get('tx-a')?.status?.state === 'RolledBack' && m.get('tx-b')?.status?.state === 'WaitingForDetach' ? true : undefined,
    );
    assert.equal((await api.getVt(NS, 'tx-rollback')).status?.phase, 'RollingBack');
    await assertOutcome('tx-rollback', 'RolledBack', 'rollback-2');
    assert.deepEqual(await stamps(2 * MiB), both('zero'), 'a block first written in the transaction is unwritten again');
    assert.deepEqual(await stamps(MiB), both('base'));

    // Timeout: no decision within timeoutSeconds.
    await openTx('tx-timeout', 3);
    await writeBoth(0, 'timeout-3');
    await detachTx();
    const timedOut = await assertOutcome('tx-timeout', 'RolledBack', 'timeout-3');
    assert.equal(timedOut.status?.decision, 'Rollback');
    assert.equal(timedOut.status?.decisionReason, 'Timeout');
    assert.equal(timedOut.spec.decision ?? '', '');
  });

  // ------------------------------------------------------------------------------------------ 5

  it('defers a VolumeSnapshot taken during an open transaction (deferredSnapshots) and cuts it when the transaction completes', async () => {
    await attachTx();
    const vt0 = await openTx('tx-snap');
    await write('tx-a', 0, 'during-5');
    await api.createSnapshot(NS, 'snap-during', 'tx-a');
    const uid = (await api.getSnapshot(NS, 'snap-during')).metadata?.uid ?? '';
    const deferred = await api
      .waitVt(NS, 'tx-snap', 'showing the deferred snapshot', (vt) => (vt.status?.deferredSnapshots ?? []).length > 0)
      .catch((e: unknown) => assert.fail(`${String(e)}${logs()}`));
    assert.deepEqual(deferred.status?.deferredSnapshots, [{ persistentVolumeClaimName: 'tx-a', checkpoint: `snapshot-${uid}` }]);
    assert.match(deferred.status?.message ?? '', /1 snapshot\(s\) wait for this transaction to complete/);
    const pending = await api.getSnapshot(NS, 'snap-during');
    assert.notEqual(pending.status?.readyToUse, true, 'the snapshot is not cut while the transaction is open');
    // Written after the snapshot was asked for, still inside the transaction: the cut at completion has it.
    await write('tx-a', MiB, 'late-5');
    await write('tx-b', 0, 'during-5');
    await api.decide(NS, 'tx-snap', 'Commit');
    const done = await assertOutcome('tx-snap', 'Committed', 'during-5');
    assert.equal(done.status?.deferredSnapshots?.length ?? 0, 0);
    const ready = await api.waitSnapshot(NS, 'snap-during', (s) => s.status?.readyToUse === true, 'readyToUse after the commit').catch((e: unknown) => assert.fail(`${String(e)}${logs()}`));
    assert.ok(Date.parse(ready.status?.creationTime ?? '') >= Date.parse(vt0.status?.openTime ?? '') - 1000, 'cut after the transaction opened');

    await api.createPvc(NS, 'from-during', { node: 'node-a', block: true, fromSnapshot: 'snap-during' });
    await api.waitBound(NS, 'from-during').catch((e: unknown) => assert.fail(`${String(e)}${logs()}`));
    await attach('from-during', 'node-a');
    assert.equal(await stampAt('from-during', 0), 'during-5');
    assert.equal(await stampAt('from-during', MiB), 'late-5', 'the snapshot holds a write made after it was requested: it was cut at completion');
    await detach('from-during', 'node-a');
  });

  // ------------------------------------------------------------------------------------------ 7

  it('refuses what the API server or the coordinator must refuse: cross-namespace targets, bad decisions, edits of immutable fields on live objects', async () => {
    // test/packaging/apiserver.test.ts already shows the CRDs rejecting "other/pvc" and
    // "other/snap" names, a decision "Maybe" at creation, and immutable-field edits of idle
    // objects. Here: objects that name another namespace's objects by plain name cannot reach them.
    await api.createVr(OTHER, 'xns-rollback', 'snap1');
    const vr = await api.waitVr(OTHER, 'xns-rollback', 'Failed', (r) => r.status?.phase === 'Failed').catch((e: unknown) => assert.fail(`${String(e)}${logs()}`));
    assert.match(vr.status?.message ?? '', /VolumeSnapshot snap1 not found in namespace other/);
    await api.createVt(OTHER, 'xns-tx', ['data']);
    const vt = await api.waitVt(OTHER, 'xns-tx', 'Failed', (v) => v.status?.phase === 'Failed').catch((e: unknown) => assert.fail(`${String(e)}${logs()}`));
    assert.match(vt.status?.message ?? '', /PVC data not found in namespace other/);
    // A VolumeSnapshot in "other" can only name a PVC of "other": a rollback to it cannot resolve to e2e/data.
    await api.createSnapshot(OTHER, 'xns-snap', 'data');
    await api.createVr(OTHER, 'xns-rollback-2', 'xns-snap');
    const vr2 = await api
      .waitVr(OTHER, 'xns-rollback-2', 'refusing the snapshot', (r) => r.status?.phase === 'Failed' || (r.status?.phase === 'Pending' && /xns-snap/.test(r.status.message ?? '')))
      .catch((e: unknown) => assert.fail(`${String(e)}${logs()}`));
    assert.notEqual(vr2.status?.persistentVolumeClaimName, 'data');
    const data = await api.readPvc(NS, 'data');
    assert.equal(data.metadata?.annotations?.[Annotation.Rollback], undefined, 'e2e/data was never claimed');
    assert.equal(data.metadata?.annotations?.[Annotation.Transaction], undefined);

    // On a live, open transaction driven by the coordinator.
    await openTx('tx-edits');
    const bad = await rejection(api.decide(NS, 'tx-edits', 'Maybe' as 'Commit'));
    assert.equal(bad.code, 422);
    assert.match(bad.message, /spec\.decision: Unsupported value: "Maybe"/);
    const pvcs = await rejection(api.patch(GROUP, VERSION, 'volumetransactions', NS, 'tx-edits', { spec: { persistentVolumeClaims: ['tx-a'] } }));
    assert.match(pvcs.message, /persistentVolumeClaims is immutable/);
    const parts = await api.waitParticipants(NS, 'tx-edits', 'both present', (m) => (m.size === 2 ? m : undefined));
    const pa = parts.get('tx-a') as Vtp;
    const moved = await rejection(api.patch(GROUP, VERSION, 'volumetransactionparticipants', NS, pa.metadata.name, { spec: { node: 'node-b' } }));
    assert.equal(moved.code, 422);
    assert.match(moved.message, /a participant's transaction, PVC, volume and node are immutable/);
    await write('tx-a', 0, 'edits-7');
    await write('tx-b', 0, 'edits-7');
    await api.decide(NS, 'tx-edits', 'Commit');
    const change = await rejection(api.decide(NS, 'tx-edits', 'Rollback'));
    assert.equal(change.code, 422);
    assert.match(change.message, /the decision cannot be changed or withdrawn once made/);
    await assertOutcome('tx-edits', 'Committed', 'edits-7');
  });

  // ------------------------------------------------------------------------------------------ 6
  //
  // Crash atomicity. Each case runs one transaction over tx-a (node-a) and tx-b (node-b), finds its
  // moment from the API objects (watching the transaction and its participants), SIGKILLs the
  // leading coordinator there (a standby takes the Lease over) or a node's plugin (its agent), and
  // then checks by data that the outcome is atomic and the expected one. Where a moment is only
  // reachable by holding a node back, that node's plugin is SIGSTOPped (and SIGCONTed after the
  // kill): its agent then cannot act, so the moment is reached deterministically, not by timing.

  const coordinators = (): Cluster['coordinators'] => cluster().coordinators;
  const participantIs = (p: Vtp | undefined, action: string, state: string): boolean => p?.spec.action === action && p.status?.observedAction === action && p.status.state === state;
  /**
   * Before each crash case: every plugin runs and acts (a failed case may have left one killed or
   * held), and no transaction is still unfinished — otherwise this case would only fail later, on a
   * deadline, for the earlier case's reason.
   */
  const healthy = async (): Promise<void> => {
    if (!cluster().apiServer.up) await cluster().apiServer.start();
    for (const n of cluster().nodes.values()) {
      n.resume();
      if (n.plugin.hasExited()) await n.restartPlugin();
    }
    const list = (await cluster().custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: NS, plural: 'volumetransactions' })) as { items: Vt[] };
    const unfinished = list.items.filter((vt) => !isTerminal(vt)).map((vt) => `${vt.metadata.name} (${vt.status?.phase ?? 'new'})`);
    assert.deepEqual(unfinished, [], 'an earlier case left a transaction unfinished');
  };
  const killCoordinator = async (): Promise<void> => {
    const { killed, leader } = await coordinators().killLeader().catch((e: unknown) => assert.fail(`${String(e)}${logs()}`));
    assert.notEqual(killed, leader);
  };

  it('crash: coordinator SIGKILLed after begin froze one volume (the other node held back) → opens, commits atomically', async () => {
    await healthy();
    await attachTx();
    const b = node('node-b');
    b.pause();
    try {
      await api.createVt(NS, 'crash-freeze', [...PVCS]);
      await api.waitParticipants(NS, 'crash-freeze', 'tx-a Frozen, tx-b not yet', (m) =>
        participantIs(m.get('tx-a'), 'Freeze', 'Frozen') && m.get('tx-b')?.status?.state === undefined ? true : undefined,
      );
      await killCoordinator();
    } finally {
      b.resume();
    }
    await api.waitVt(NS, 'crash-freeze', 'Open', (vt) => vt.status?.phase === 'Open').catch((e: unknown) => assert.fail(`${String(e)}${logs()}`));
    await writeBoth(0, 'crash-freeze');
    await api.decide(NS, 'crash-freeze', 'Commit');
    await assertOutcome('crash-freeze', 'Committed', 'crash-freeze');
  });

  it('crash: coordinator SIGKILLed while Open → the new leader rolls back atomically', async () => {
    await healthy();
    await openTx('crash-open');
    await killCoordinator();
    await writeBoth(0, 'crash-open');
    await api.decide(NS, 'crash-open', 'Rollback');
    await assertOutcome('crash-open', 'RolledBack', 'crash-open');
  });

  it('crash: coordinator SIGKILLed during Preparing (one volume prepared, the other held back) → commits atomically', async () => {
    await healthy();
    await attachTx();
    await openTx('crash-prepare');
    await writeBoth(0, 'crash-prepare');
    const b = node('node-b');
    b.pause();
    try {
      await api.decide(NS, 'crash-prepare', 'Commit');
      await api.waitParticipants(NS, 'crash-prepare', 'tx-a Prepared, tx-b not', (m) => (participantIs(m.get('tx-a'), 'Prepare', 'Prepared') ? true : undefined));
      const vt = await api.getVt(NS, 'crash-prepare');
      assert.equal(vt.status?.phase, 'Preparing');
      assert.equal(vt.status?.decision, undefined, 'no decision recorded yet');
      await killCoordinator();
    } finally {
      b.resume();
    }
    const vt = await assertOutcome('crash-prepare', 'Committed', 'crash-prepare');
    assert.equal(vt.status?.decisionReason, 'AllPrepared');
  });

  it('crash: coordinator SIGKILLed right after recording the Commit decision (node-a held back, not yet committed) → commits atomically', async () => {
    await healthy();
    await attachTx();
    await openTx('crash-decided');
    await writeBoth(0, 'crash-decided');
    const a = node('node-a');
    const b = node('node-b');
    b.pause();
    try {
      await api.decide(NS, 'crash-decided', 'Commit');
      await api.waitParticipants(NS, 'crash-decided', 'tx-a Prepared', (m) => (participantIs(m.get('tx-a'), 'Prepare', 'Prepared') ? true : undefined));
      // node-a cannot be told to commit before node-b has prepared: hold it back now, then let node-b prepare.
      a.pause();
      b.resume();
      await api.waitVt(NS, 'crash-decided', 'Commit decision recorded', (vt) => vt.status?.decision === 'Commit');
      await killCoordinator();
      const m = await api.waitParticipants(NS, 'crash-decided', 'both present', (x) => (x.size === 2 ? x : undefined));
      assert.notEqual(m.get('tx-a')?.status?.state, 'Committed', 'node-a has not committed at the crash');
    } finally {
      a.resume();
      b.resume();
    }
    await assertOutcome('crash-decided', 'Committed', 'crash-decided');
  });

  it('crash: coordinator SIGKILLed right after recording the Rollback decision → rolls back atomically', async () => {
    await healthy();
    await attachTx();
    await openTx('crash-decided-rb');
    await writeBoth(0, 'crash-decided-rb');
    await api.decide(NS, 'crash-decided-rb', 'Rollback');
    await api.waitVt(NS, 'crash-decided-rb', 'Rollback decision recorded', (vt) => vt.status?.decision === 'Rollback');
    await killCoordinator();
    await assertOutcome('crash-decided-rb', 'RolledBack', 'crash-decided-rb');
  });

  it('crash: coordinator SIGKILLed during commit (tx-b committed, tx-a held back) → commits atomically', async () => {
    await healthy();
    await attachTx();
    await openTx('crash-commit');
    await writeBoth(0, 'crash-commit');
    const a = node('node-a');
    const b = node('node-b');
    b.pause();
    try {
      await api.decide(NS, 'crash-commit', 'Commit');
      await api.waitParticipants(NS, 'crash-commit', 'tx-a Prepared', (m) => (participantIs(m.get('tx-a'), 'Prepare', 'Prepared') ? true : undefined));
      a.pause();
      b.resume();
      await api.waitParticipants(NS, 'crash-commit', 'tx-b Committed, tx-a not', (m) => (participantIs(m.get('tx-b'), 'Commit', 'Committed') ? true : undefined));
      const vt = await api.getVt(NS, 'crash-commit');
      assert.notEqual(vt.status?.phase, 'Committed');
      await killCoordinator();
    } finally {
      a.resume();
      b.resume();
    }
    await assertOutcome('crash-commit', 'Committed', 'crash-commit');
  });

  it('crash: coordinator SIGKILLed during rollback (tx-a rolled back, tx-b waiting for detach) → rolls back atomically', async () => {
    await healthy();
    await attachTx();
    await openTx('crash-rollback');
    await writeBoth(0, 'crash-rollback');
    await api.decide(NS, 'crash-rollback', 'Rollback');
    await api.waitParticipants(NS, 'crash-rollback', 'both WaitingForDetach', (m) =>
      PVCS.every((p) => participantIs(m.get(p), 'Rollback', 'WaitingForDetach')) ? true : undefined,
    );
    await detachTx(['tx-a']);
    await api.waitParticipants(NS, 'crash-rollback', 'tx-a RolledBack', (m) => (participantIs(m.get('tx-a'), 'Rollback', 'RolledBack') ? true : undefined));
    await killCoordinator();
    await assertOutcome('crash-rollback', 'RolledBack', 'crash-rollback');
  });

  it('crash: node-b\'s plugin (agent) SIGKILLed while its volume is frozen → the begin attempt is released and retried, then commits atomically', async () => {
    await healthy();
    await attachTx();
    const a = node('node-a');
    const b = node('node-b');
    a.pause();
    try {
      await api.createVt(NS, 'crash-agent-freeze', [...PVCS]);
      await api.waitParticipants(NS, 'crash-agent-freeze', 'tx-b Frozen', (m) => (participantIs(m.get('tx-b'), 'Freeze', 'Frozen') ? true : undefined));
      await b.killPlugin();
      await b.restartPlugin();
    } finally {
      a.resume();
    }
    const open = await api.waitVt(NS, 'crash-agent-freeze', 'Open', (vt) => vt.status?.phase === 'Open').catch((e: unknown) => assert.fail(`${String(e)}${logs()}`));
    assert.ok((open.status?.attempt ?? 1) >= 2, `a lost freeze fails the attempt; opened in attempt ${open.status?.attempt}`);
    await writeBoth(0, 'crash-agent-freeze');
    await api.decide(NS, 'crash-agent-freeze', 'Commit');
    await assertOutcome('crash-agent-freeze', 'Committed', 'crash-agent-freeze');
  });

  it('crash: node-b\'s plugin (agent) SIGKILLed after it prepared, before the decision → node-a commits, node-b commits after its restart', async () => {
    await healthy();
    await attachTx();
    await openTx('crash-agent-prepared');
    await writeBoth(0, 'crash-agent-prepared');
    const a = node('node-a');
    const b = node('node-b');
    a.pause();
    try {
      await api.decide(NS, 'crash-agent-prepared', 'Commit');
      await api.waitParticipants(NS, 'crash-agent-prepared', 'tx-b Prepared', (m) => (participantIs(m.get('tx-b'), 'Prepare', 'Prepared') ? true : undefined));
      await b.killPlugin(); // the decision cannot be Commit yet: node-a has not prepared
    } finally {
      a.resume();
    }
    await api.waitParticipants(NS, 'crash-agent-prepared', 'tx-a Committed while node-b is down', (m) => (participantIs(m.get('tx-a'), 'Commit', 'Committed') ? true : undefined));
    const vt = await api.getVt(NS, 'crash-agent-prepared');
    assert.equal(vt.status?.decision, 'Commit');
    assert.notEqual(vt.status?.phase, 'Committed', 'not committed until node-b has');
    await b.restartPlugin();
    await assertOutcome('crash-agent-prepared', 'Committed', 'crash-agent-prepared');
  });

  it('crash: node-b\'s plugin (agent) SIGKILLed while its rollback waits for detach → rolls back after its restart', async () => {
    await healthy();
    await attachTx();
    await openTx('crash-agent-rollback');
    await writeBoth(0, 'crash-agent-rollback');
    await api.decide(NS, 'crash-agent-rollback', 'Rollback');
    await api.waitParticipants(NS, 'crash-agent-rollback', 'both WaitingForDetach', (m) =>
      PVCS.every((p) => participantIs(m.get(p), 'Rollback', 'WaitingForDetach')) ? true : undefined,
    );
    const b = node('node-b');
    await b.killPlugin();
    await detachTx(['tx-a']);
    await api.waitParticipants(NS, 'crash-agent-rollback', 'tx-a RolledBack', (m) => (participantIs(m.get('tx-a'), 'Rollback', 'RolledBack') ? true : undefined));
    await b.restartPlugin();
    await assertOutcome('crash-agent-rollback', 'RolledBack', 'crash-agent-rollback');
  });

  // ------------------------------------------------------------------------------------------ faults
  //
  // Not a crash of our processes but a failure of what they depend on: the API server goes away in
  // the middle of a transaction; a node's agent stops answering (SIGSTOP: alive and holding its
  // connections, acting on nothing). Moments are found as in the crash cases; what the processes did
  // meanwhile is read from their logs (JSON lines), from where each log stood when the fault began.

  const logSize = (file: string): number => statSync(file).size;
  const logFrom = (file: string, from: number): string => readFileSync(file).subarray(from).toString('utf8');
  /** The log records (JSON lines) with message `msg` (a line still being written is skipped). */
  const records = (text: string, msg: string): Array<Record<string, unknown>> =>
    text
      .split('\n')
      .filter((l) => l.includes(`"msg":${JSON.stringify(msg)}`))
      .flatMap((l) => {
        try {
          return [JSON.parse(l) as Record<string, unknown>];
        } catch {
          return [];
        }
      });
  const errOf = (r: Record<string, unknown> | undefined): string => String(r?.['err'] ?? '');
  const pluginLog = (n: NodeHost): string => join(n.dir, 'plugin.log');

  /**
   * An outage of the API server: SIGKILLs kube-apiserver, and starts it again (same flags, port and
   * etcd) only once the leading coordinator has been seen to give up (it cannot renew its Lease, so
   * it stops acting and exits, to be restarted as its Deployment would) and `meanwhile` — what else
   * must happen without the API server — is done. No timer: the outage lasts until then.
   */
  const outage = async (meanwhile: () => Promise<void>): Promise<{ leader: string; leaderProc: ManagedProcess; leaderLog: string; downMs: number }> => {
    const leader = (await coordinators().lease())?.spec?.holderIdentity ?? '';
    const leaderProc = coordinators().procs.get(leader);
    assert.ok(leaderProc && !leaderProc.hasExited(), `the Lease holder "${leader}" is a live coordinator`);
    const from = logSize(leaderProc.logFile);
    const apiServer = cluster().apiServer;
    await apiServer.kill();
    const down = Date.now();
    try {
      await Promise.all([waitFor(`${leader} giving up leadership and exiting`, async () => (leaderProc.hasExited() ? true : undefined), { timeoutMs: 30_000 }), meanwhile()]);
    } finally {
      await apiServer.start();
    }
    const downMs = Date.now() - down;
    // Only what the process that led wrote (its restart, under the same identity, appends to the same log).
    const leaderLog = logFrom(leaderProc.logFile, from)
      .split('\n')
      .filter((l) => l.includes(`"pid":${leaderProc.pid},`))
      .join('\n');
    return { leader, leaderProc, leaderLog, downMs };
  };
  /** The coordinator that led through an outage refused, lost its Lease, exited 1 and runs again (restarted). */
  const assertLeaderRodeItOut = async (o: Awaited<ReturnType<typeof outage>>): Promise<Array<Record<string, unknown>>> => {
    const renewals = records(o.leaderLog, 'leader election: lease update failed');
    assert.ok(renewals.some((r) => /ECONNREFUSED/.test(errOf(r))), `${o.leader}: a Lease renewal refused; got ${JSON.stringify(renewals.slice(0, 2))}${logs()}`);
    assert.equal(records(o.leaderLog, 'leader election: lost').length, 1, `${o.leader} logs that it lost leadership`);
    assert.equal(records(o.leaderLog, 'lost leadership; exiting').length, 1, `${o.leader} logs that it exits`);
    assert.equal(await o.leaderProc.exited, 1, `${o.leader} exited with status 1 on losing leadership`);
    const again = coordinators().procs.get(o.leader);
    assert.ok(again && again !== o.leaderProc && !again.hasExited(), `${o.leader} was restarted and runs`);
    return renewals;
  };

  it('fault: the API server is SIGKILLed and started again mid-transaction — while it prepares (tx-a prepared, node-b held back), and while it rolls back (both volumes detached meanwhile) → leader restarted, agents retry; Committed, then RolledBack, atomically', async (t) => {
    await healthy();
    await attachTx();
    const a = node('node-a');
    const b = node('node-b');
    const pids = { a: a.plugin.pid, b: b.plugin.pid };

    // 1. Commit. The API server goes while tx-a is Prepared and node-b, held, has not prepared yet
    //    (its Prepare action is written: the moment is mid-Preparing, with no decision recorded).
    const c = 'fault-apiserver';
    await openTx(c);
    await writeBoth(0, c);
    const fromA = logSize(pluginLog(a));
    const fromB = logSize(pluginLog(b));
    const txB = `p/${NS}/${participantName(c, 'tx-b')}`;
    let first: Awaited<ReturnType<typeof outage>>;
    b.pause();
    try {
      await api.decide(NS, c, 'Commit');
      await api.waitParticipants(NS, c, 'tx-a Prepared, tx-b told to prepare', (m) =>
        participantIs(m.get('tx-a'), 'Prepare', 'Prepared') && m.get('tx-b')?.spec.action === 'Prepare' ? true : undefined,
      );
      assert.equal((await api.getVt(NS, c)).status?.decision, undefined, 'no decision recorded yet');
      first = await outage(async () => {
        // node-b wakes up without an API server: whatever its watches had received it acts on
        // (here: preparing tx-b, whose report then fails); then they end, and are restarted.
        b.resume();
        await waitFor('node-b\'s agent restarting its watches', async () => (records(logFrom(pluginLog(b), fromB), 'watch failed; restarting').length > 0 ? true : undefined), {
          timeoutMs: 30_000,
          watch: [b.plugin],
        });
      });
    } finally {
      b.resume();
    }
    const upAt = Date.now();
    const committedVt = await assertOutcome(c, 'Committed', c);
    const commitMs = Date.now() - upAt;
    assert.equal(committedVt.status?.decisionReason, 'AllPrepared');
    assert.deepEqual(committedVt.status?.participants?.map((p) => p.state), ['Committed', 'Committed']);
    const committedParts = await api.waitParticipants(NS, c, 'both present', (m) => (m.size === 2 ? m : undefined));
    for (const p of PVCS) assert.ok(participantIs(committedParts.get(p), 'Commit', 'Committed'), `${p}: ${JSON.stringify(committedParts.get(p)?.status)}`);
    const renewals1 = await assertLeaderRodeItOut(first);
    // node-a's agent ran throughout: its watches were refused, and restarted.
    const watchesA = records(logFrom(pluginLog(a), fromA), 'watch failed; restarting');
    assert.ok(watchesA.some((r) => /ECONNREFUSED/.test(errOf(r))), `node-a: its agent's watches were refused and restarted; got ${JSON.stringify(watchesA.slice(0, 2))}`);
    const preparedMeanwhile = records(logFrom(pluginLog(b), fromB), 'agent: step failed; retrying').find((r) => r['key'] === txB);

    // 2. Rollback. Both participants wait for their volumes to be detached; the API server goes; the
    //    pods go too (the kubelet's CSI calls need no API server). Each agent, looking again, rolls
    //    its volume back and cannot report it; it retries until it can.
    const r = 'fault-apiserver-rb';
    await openTx(r);
    await writeBoth(0, r);
    await api.decide(NS, r, 'Rollback');
    await api.waitParticipants(NS, r, 'both WaitingForDetach', (m) => (PVCS.every((p) => participantIs(m.get(p), 'Rollback', 'WaitingForDetach')) ? true : undefined));
    const from2 = { a: logSize(pluginLog(a)), b: logSize(pluginLog(b)) };
    const refused = (n: NodeHost, from: number, pvc: string): Record<string, unknown> | undefined =>
      records(logFrom(pluginLog(n), from), 'agent: step failed; retrying').find((x) => x['key'] === `p/${NS}/${participantName(r, pvc)}` && /ECONNREFUSED/.test(errOf(x)));
    const second = await outage(async () => {
      await detachTx();
      await waitFor('both agents rolling back and failing to report it', async () => (refused(a, from2.a, 'tx-a') && refused(b, from2.b, 'tx-b') ? true : undefined), {
        timeoutMs: 30_000,
        watch: [a.plugin, b.plugin],
      });
    });
    const up2 = Date.now();
    const rolledBack = await assertOutcome(r, 'RolledBack', r);
    const rollbackMs = Date.now() - up2;
    assert.equal(rolledBack.status?.decisionReason, 'UserRequested');
    const rbParts = await api.waitParticipants(NS, r, 'both present', (m) => (m.size === 2 ? m : undefined));
    for (const p of PVCS) assert.ok(participantIs(rbParts.get(p), 'Rollback', 'RolledBack'), `${p}: ${JSON.stringify(rbParts.get(p)?.status)}`);
    await assertLeaderRodeItOut(second);
    for (const [n, pvc] of [[a, 'tx-a'], [b, 'tx-b']] as const) {
      assert.match(errOf(refused(n, n === a ? from2.a : from2.b, pvc)), /^update VolumeTransactionParticipant e2e\/fault-apiserver-rb-\w+ status: .*ECONNREFUSED/, `${n.name}: its rollback's report was refused`);
    }

    // The agents rode both outages out in place.
    assert.equal(a.plugin.pid, pids.a, 'node-a\'s plugin (agent) was not restarted');
    assert.equal(b.plugin.pid, pids.b, 'node-b\'s plugin (agent) was not restarted');
    assert.ok(!a.plugin.hasExited() && !b.plugin.hasExited(), 'both plugins (agents) still run');
    await coordinators().waitLeader();
    t.diagnostic(`commit: API server down ${first.downMs} ms (SIGKILL until /readyz again); Committed and checked by data ${commitMs} ms later`);
    t.diagnostic(`commit: ${first.leader}: ${renewals1.length} Lease update(s) refused, e.g. ${errOf(renewals1[0])}; then "leader election: lost", "lost leadership; exiting"`);
    t.diagnostic(`commit: node-b ${preparedMeanwhile ? `prepared while the API server was away; its report: ${errOf(preparedMeanwhile)}` : 'had not received its Prepare action before the API server went; it prepared after'}`);
    t.diagnostic(`rollback: API server down ${second.downMs} ms; RolledBack and checked by data ${rollbackMs} ms later; ${second.leader} gave up its Lease`);
  });

  const PREPARE_TIMEOUT_S = 3;

  it(`fault: node-b's agent never answers (plugin SIGSTOPped) when the transaction must prepare → PrepareTimeout after ${PREPARE_TIMEOUT_S} s, node-a rolls back to the checkpoint; after SIGCONT node-b rolls back too`, async (t) => {
    await healthy();
    await attachTx();
    const name = 'fault-hung-agent';
    // A rollout of the coordinators with a short prepare timeout (default 300 s), undone at the end.
    await coordinators().replaceAll([`--prepare-timeout-seconds=${PREPARE_TIMEOUT_S}`]);
    try {
      const older = await stamps(MiB); // written by earlier transactions: must survive this one
      await openTx(name);
      await writeBoth(0, name);
      await writeBoth(MiB, name);
      await writeBoth(3 * MiB, name); // never written before: zero at the transaction's checkpoint
      const b = node('node-b');
      let decidedAt = 0;
      b.pause();
      try {
        await api.decide(NS, name, 'Commit');
        // node-a prepares; its pod is done and goes (so that its rollback need not wait for a detach).
        await api.waitParticipants(NS, name, 'tx-a prepared (or already told to roll back)', (m) => {
          const pa = m.get('tx-a');
          return participantIs(pa, 'Prepare', 'Prepared') || pa?.spec.action === 'Rollback' ? true : undefined;
        });
        await detachTx(['tx-a']);
        const decided = await api.waitVt(NS, name, 'decision Rollback', (vt) => vt.status?.decision === 'Rollback').catch((e: unknown) => assert.fail(`${String(e)}${logs()}`));
        decidedAt = Date.now();
        assert.equal(decided.status?.decisionReason, 'PrepareTimeout');
        assert.equal(decided.status?.phase, 'RollingBack');
        assert.match(decided.status?.message ?? '', new RegExp(`\\btx-b did not prepare within ${PREPARE_TIMEOUT_S} s: rolling back$`));
        const waited = Date.parse(decided.status?.decisionTime ?? '') - Date.parse(decided.status?.prepareStartTime ?? '');
        assert.ok(waited >= PREPARE_TIMEOUT_S * 1000 - 1000, `decided ${waited} ms after preparing started`); // status times have 1 s resolution
        // node-a acts on the decision without node-b: its volume goes back to the checkpoint.
        await api.waitParticipants(NS, name, 'tx-a RolledBack while node-b does not answer', (m) => (participantIs(m.get('tx-a'), 'Rollback', 'RolledBack') ? true : undefined));
        const vt = await api.getVt(NS, name);
        assert.equal(vt.status?.phase, 'RollingBack', 'not RolledBack before node-b is');
        assert.notEqual(vt.status?.participants?.find((p) => p.persistentVolumeClaimName === 'tx-b')?.state, 'RolledBack');
        await attach('tx-a', 'node-a');
        assert.equal(await stampAt('tx-a', 0), committed, 'tx-a: the begin state again');
        assert.equal(await stampAt('tx-a', 3 * MiB), 'zero', 'tx-a: a block first written in the transaction is unwritten again');
        assert.equal(await stampAt('tx-a', MiB), older['tx-a'], 'tx-a: data from before the transaction back');
        assert.equal(await stampAt('tx-b', 0), name, 'tx-b: its node has not acted');
      } finally {
        b.resume();
      }
      const done = await assertOutcome(name, 'RolledBack', name);
      const end = Date.now();
      assert.equal(done.status?.decisionReason, 'PrepareTimeout');
      assert.deepEqual(await stamps(3 * MiB), both('zero'));
      assert.deepEqual(await stamps(MiB), older);
      const parts = await api.waitParticipants(NS, name, 'both present', (m) => (m.size === 2 ? m : undefined));
      for (const p of PVCS) assert.ok(participantIs(parts.get(p), 'Rollback', 'RolledBack'), `${p}: ${JSON.stringify(parts.get(p)?.status)}`);
      const decision = (await api.events(NS, 'VolumeTransaction', name)).find((e) => e.reason === 'DecidedRollback');
      assert.equal(decision?.type, 'Warning');
      assert.match(decision?.message ?? '', new RegExp(`^Preparing → RollingBack: tx-b did not prepare within ${PREPARE_TIMEOUT_S} s: rolling back$`));
      t.diagnostic(`decided Rollback (PrepareTimeout) ${done.status?.prepareStartTime} → ${done.status?.decisionTime}: "${decision?.message ?? ''}"`);
      t.diagnostic(`node-b released → RolledBack in ${end - decidedAt} ms after the decision was seen`);
    } finally {
      await coordinators().replaceAll([]);
    }
  });

  // ------------------------------------------------------------------------------------------ cleanup

  it('deletes through the API: a PVC in an open transaction stays until it completes; every object and volume goes; nothing is left on the machine', async () => {
    await detachTx();
    await detach('data', 'node-a');
    await openTx('last');
    await cluster().core.deleteNamespacedPersistentVolumeClaim({ namespace: NS, name: 'tx-a' });
    const held = await api.readPvc(NS, 'tx-a');
    assert.ok(held.metadata?.deletionTimestamp, 'deletion requested');
    assert.ok(held.metadata?.finalizers?.includes(Finalizer.Protection), 'but the transaction\'s protection finalizer keeps it');
    await api.decide(NS, 'last', 'Commit');
    const vt = await settle('last');
    assert.equal(vt.status?.phase, 'Committed');
    await api.waitPvcGone(NS, 'tx-a');
    await api.waitPvGone(pv['tx-a']?.metadata?.name ?? '');

    // Transactions and rollbacks let go of their finalizers; participants go with their transaction.
    for (const ns of [NS, OTHER]) {
      for (const plural of ['volumetransactions', 'volumerollbacks']) {
        const list = (await cluster().custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural })) as { items: Vt[] };
        for (const o of list.items) await api.delete(GROUP, VERSION, plural, ns, o.metadata.name);
      }
      for (const plural of ['volumetransactions', 'volumerollbacks', 'volumetransactionparticipants']) {
        await api.watch(`${plural} in ${ns} gone`, GROUP, VERSION, plural, ns, {}, (items) => (items.length === 0 ? true : undefined)).catch((e: unknown) => assert.fail(`${String(e)}${logs()}`));
      }
    }
    // Snapshots, then PVCs: every volume is deleted by its node's provisioner.
    for (const ns of [NS, OTHER]) {
      const snaps = (await cluster().custom.listNamespacedCustomObject({ group: 'snapshot.storage.k8s.io', version: 'v1', namespace: ns, plural: 'volumesnapshots' })) as { items: Vt[] };
      for (const s of snaps.items) await api.delete('snapshot.storage.k8s.io', 'v1', 'volumesnapshots', ns, s.metadata.name);
      await api.watch(`VolumeSnapshots in ${ns} gone`, 'snapshot.storage.k8s.io', 'v1', 'volumesnapshots', ns, {}, (items) => (items.length === 0 ? true : undefined)).catch((e: unknown) => assert.fail(`${String(e)}${logs()}`));
    }
    const pvcs = await cluster().core.listNamespacedPersistentVolumeClaim({ namespace: NS });
    for (const p of pvcs.items) {
      assert.equal(p.metadata?.annotations?.[Annotation.Transaction], undefined, `${p.metadata?.name} not held by a transaction`);
      assert.ok(!(p.metadata?.finalizers ?? []).includes(Finalizer.Protection), `${p.metadata?.name} not protected by flashcsi any more`);
      await cluster().core.deleteNamespacedPersistentVolumeClaim({ namespace: NS, name: p.metadata?.name ?? '' });
    }
    for (const p of pvcs.items) await api.waitPvGone(p.spec?.volumeName ?? '').catch((e: unknown) => assert.fail(`${String(e)}${logs()}`));
    for (const n of cluster().nodes.values()) {
      assert.deepEqual(readdirSync(join(n.stateDir, 'volumes')), [], `no volume left on ${n.name}`);
    }
    // No reconcile ever ran into a programming error (e.g. before its informer caches were there).
    for (const p of cluster().coordinators.procs.values()) assert.doesNotMatch(readFileSync(p.logFile, 'utf8'), /TypeError|Cannot read properties/, `${p.name}'s log`);
    for (const n of cluster().nodes.values()) assert.doesNotMatch(readFileSync(join(n.dir, 'plugin.log'), 'utf8'), /TypeError|Cannot read properties/, `${n.name}'s plugin log`);
    // Stop every node gracefully (no sweeping) and check that nothing of ours is left behind.
    for (const n of cluster().nodes.values()) {
      await n.shutdown();
      await n.assertClean();
    }
  });
});
