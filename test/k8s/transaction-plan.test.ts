/**
 * Model-based test of the coordinator's two-phase commit plan (pure logic, simulated world).
 *
 * A simulated API server holds the VolumeTransaction, its participant objects and its PVCs. A
 * coordinator plans (planTransaction) and executes the steps one by one — and crashes after a
 * random step, losing the rest of its plan. Simulated node agents carry out participant actions
 * on simulated volumes (freeze, cut, prepare, commit, abort, release), sometimes failing, losing a
 * freeze, or waiting for a pod to detach. An application writes to the volumes; a user decides
 * Commit or Rollback, or never (timeout), or deletes the transaction; status writes conflict with
 * the user's edits. Invariants checked throughout:
 * - an agent commits only after the Commit decision is durable in status, and rolls back only
 *   after the Rollback decision is;
 * - the checkpoints of the attempt that opened were all cut at one instant (every volume's
 *   frozen interval overlaps every other's);
 * - the outcome is atomic: every volume committed, or every volume rolled back, never a mix;
 * - PVCs are released when it ends, before the final phase shows (a new transaction may take them at
 *   once), and a deleted transaction lets go of its finalizer;
 * - it always ends.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Annotation, DRIVER_NAME, Finalizer } from '../../src/constants.js';
import type { ParticipantState, VolumeTransaction, VolumeTransactionParticipant } from '../../src/k8s/api.js';
import { attemptTxid, planTransaction, type ClaimView, type Step, type TransactionLimits } from '../../src/k8s/transaction-plan.js';
import { seededRandom } from '../engine/helpers.js';

const LIMITS: TransactionLimits = { beginTimeoutMs: 20_000, prepareTimeoutMs: 30_000, maxAttempts: 4 };

interface SimVolume {
  data: number;
  tx: { txid: string; checkpoint: number } | null;
  history: Map<string, 'committed' | 'aborted'>;
  /** The attempt whose freeze holds this volume's writes, and since when. */
  frozen: { attempt: number; since: number } | null;
  attached: boolean;
}

interface World {
  now: number;
  rv: number;
  vt: VolumeTransaction & { metadata: { resourceVersion: string } };
  deleted: boolean;
  participants: Map<string, VolumeTransactionParticipant>;
  pvcs: Map<string, { annotation?: string; finalizers: Set<string> }>;
  volumes: Map<string, SimVolume>;
  /** Per attempt, per volume: [frozen since, cut at]. */
  cuts: Map<number, Map<string, [number, number]>>;
  violations: string[];
}

const clone = <T>(x: T): T => structuredClone(x);

function claims(w: World): Map<string, ClaimView> {
  const out = new Map<string, ClaimView>();
  for (const pvc of w.vt.spec.persistentVolumeClaims) {
    const p = w.pvcs.get(pvc);
    out.set(pvc, {
      name: pvc,
      exists: p !== undefined,
      deleting: false,
      bound: true,
      driver: DRIVER_NAME,
      volumeHandle: `vol-${pvc}`,
      node: `node-${pvc}`,
      ...(p?.annotation ? { transaction: p.annotation } : {}),
      protectedByUs: p?.finalizers.has(Finalizer.Protection) ?? false,
    });
  }
  return out;
}

/** Executes a plan's steps in order; returns false when a conflict (or a crash) cut it short. */
function execute(w: World, steps: readonly Step[], planRv: string, crashAfter: number): boolean {
  for (const [i, step] of steps.entries()) {
    if (i >= crashAfter) return false;
    switch (step.kind) {
      case 'addFinalizer':
        w.vt.metadata.finalizers = [...(w.vt.metadata.finalizers ?? []), Finalizer.Cleanup];
        break;
      case 'removeFinalizer':
        w.vt.metadata.finalizers = (w.vt.metadata.finalizers ?? []).filter((f) => f !== Finalizer.Cleanup);
        break;
      case 'claimPvc': {
        const p = w.pvcs.get(step.pvc);
        if (!p || (p.annotation && p.annotation !== w.vt.metadata.name)) return false;
        p.annotation = w.vt.metadata.name;
        p.finalizers.add(Finalizer.Protection);
        break;
      }
      case 'releasePvc': {
        const p = w.pvcs.get(step.pvc);
        if (p?.annotation === w.vt.metadata.name) delete p.annotation;
        p?.finalizers.delete(Finalizer.Protection);
        break;
      }
      case 'createParticipant':
        if (!w.participants.has(step.participant.metadata.name)) w.participants.set(step.participant.metadata.name, clone(step.participant));
        break;
      case 'setAction': {
        const p = w.participants.get(step.name);
        if (!p) return false;
        p.spec = { ...p.spec, action: step.action, attempt: step.attempt, txid: step.txid };
        break;
      }
      case 'deleteParticipant':
        w.participants.delete(step.name);
        break;
      case 'status':
        if (w.vt.metadata.resourceVersion !== planRv) return false; // 409 Conflict
        w.vt.status = clone(step.status);
        break;
      case 'event':
        break;
    }
    w.vt.metadata.resourceVersion = String(++w.rv);
  }
  return true;
}

function report(p: VolumeTransactionParticipant, state: ParticipantState, extra: { checkpoint?: string; message?: string } = {}): void {
  p.status = { state, observedAction: p.spec.action, observedAttempt: p.spec.attempt, ...extra };
}

/** One node agent acting on one participant, as src/k8s/agent.ts does on a real volume. */
function agentAct(w: World, p: VolumeTransactionParticipant, rnd: () => number): void {
  const v = w.volumes.get(p.spec.persistentVolumeClaimName) as SimVolume;
  const { action, attempt, txid } = p.spec;
  const decision = w.vt.status?.decision;
  switch (action) {
    case 'Freeze':
      if (v.frozen?.attempt === attempt) return report(p, 'Frozen'); // still held: keep the original freeze
      // A freeze is taken once per attempt: if it was reported and then lost, the attempt failed.
      if (p.status?.observedAttempt === attempt && p.status.state === 'Frozen') return report(p, 'Failed', { message: 'freeze lost' });
      if (rnd() < 0.05) return report(p, 'Failed', { message: 'could not freeze' });
      v.frozen = { attempt, since: w.now };
      return report(p, 'Frozen');
    case 'Begin': {
      if (v.tx?.txid === txid) return report(p, 'Begun', { checkpoint: `tx:${txid}` });
      if (v.frozen?.attempt !== attempt) return report(p, 'Failed', { message: 'freeze lost' });
      v.tx = { txid, checkpoint: v.data };
      const cuts = w.cuts.get(attempt) ?? new Map<string, [number, number]>();
      cuts.set(p.spec.persistentVolumeClaimName, [v.frozen.since, w.now]);
      w.cuts.set(attempt, cuts);
      v.frozen = null;
      return report(p, 'Begun', { checkpoint: `tx:${txid}` });
    }
    case 'Prepare':
      if (v.tx?.txid !== txid) return report(p, 'Failed', { message: 'no such transaction' });
      if (rnd() < 0.05) return report(p, 'Failed', { message: 'disk error' });
      return report(p, 'Prepared');
    case 'Commit':
      if (decision !== 'Commit') w.violations.push(`${p.metadata.name} committed without a durable Commit decision`);
      if (v.tx?.txid === txid) v.tx = null;
      if (v.history.get(txid) === 'aborted') w.violations.push(`${p.metadata.name} committed an aborted transaction`);
      v.history.set(txid, 'committed');
      return report(p, 'Committed');
    case 'Rollback':
      if (decision !== 'Rollback') w.violations.push(`${p.metadata.name} rolled back without a durable Rollback decision`);
      if (v.attached) return report(p, 'WaitingForDetach', { message: 'in use by a pod' });
      if (v.tx?.txid === txid) {
        v.data = v.tx.checkpoint;
        v.tx = null;
      }
      if (v.history.get(txid) === 'committed') w.violations.push(`${p.metadata.name} rolled back a committed transaction`);
      v.history.set(txid, 'aborted');
      return report(p, 'RolledBack');
    case 'Release':
      v.frozen = null;
      if (v.tx?.txid === txid) {
        v.tx = null;
        v.history.set(txid, 'committed');
      }
      return report(p, 'Released');
  }
}

function simulate(seed: number, pvcCount: number, userPlan: 'commit' | 'rollback' | 'timeout' | 'delete'): World {
  const rnd = seededRandom(seed);
  const pvcNames = Array.from({ length: pvcCount }, (_, i) => `pvc${i}`);
  const w: World = {
    now: 0,
    rv: 1,
    vt: {
      apiVersion: 'flashcsi.io/v1alpha1',
      kind: 'VolumeTransaction',
      metadata: { name: 'tx', namespace: 'ns', uid: 'uid-1', generation: 1, resourceVersion: '1' },
      spec: { persistentVolumeClaims: pvcNames, decision: '', timeoutSeconds: 60 },
    },
    deleted: false,
    participants: new Map(),
    pvcs: new Map(pvcNames.map((n) => [n, { finalizers: new Set<string>() }])),
    volumes: new Map(pvcNames.map((n) => [n, { data: 0, tx: null, history: new Map(), frozen: null, attached: rnd() < 0.5 }])),
    cuts: new Map(),
    violations: [],
  };
  const decideAt = 5 + Math.floor(rnd() * 60);
  let opened = false;
  for (let tick = 0; tick < 3000; tick++) {
    w.now += Math.floor(rnd() * 3000);
    const r = rnd();
    if (r < 0.35) {
      // The coordinator reconciles, and may crash after any step of its plan.
      const plan = planTransaction({ vt: clone(w.vt), participants: [...w.participants.values()].map(clone), claims: claims(w), now: new Date(w.now), limits: LIMITS });
      const crashAfter = rnd() < 0.3 ? Math.floor(rnd() * (plan.steps.length + 1)) : Infinity;
      execute(w, plan.steps, w.vt.metadata.resourceVersion, crashAfter);
    } else if (r < 0.75) {
      const ps = [...w.participants.values()];
      const p = ps[Math.floor(rnd() * ps.length)];
      if (p) agentAct(w, p, rnd);
    } else if (r < 0.8) {
      // An agent restarts or a freeze times out: the volume's writes are let go.
      const v = [...w.volumes.values()][Math.floor(rnd() * pvcCount)] as SimVolume;
      if (rnd() < 0.3) v.frozen = null;
    } else if (r < 0.9) {
      for (const v of w.volumes.values()) if (!v.frozen) v.data++; // the application writes
      // Pods come and go; eventually they are gone (a rollback waits for that, by design).
      const v = [...w.volumes.values()][Math.floor(rnd() * pvcCount)] as SimVolume;
      if (rnd() < 0.3) v.attached = tick < 1500 && !v.attached;
    } else if (tick >= decideAt && !w.deleted) {
      // The user acts: a spec edit bumps resourceVersion, so a concurrent status write conflicts.
      if (userPlan === 'delete' && rnd() < 0.3) {
        w.deleted = true;
        w.vt.metadata.deletionTimestamp = new Date(w.now).toISOString();
      } else if ((userPlan === 'commit' || userPlan === 'rollback') && !w.vt.spec.decision && w.vt.status?.phase === 'Open') {
        w.vt.spec.decision = userPlan === 'commit' ? 'Commit' : 'Rollback';
      }
      w.vt.metadata.resourceVersion = String(++w.rv);
    }
    if (!opened && w.vt.status?.phase === 'Open') {
      opened = true;
      // One instant: every volume's frozen interval overlaps every other's.
      const cuts = [...(w.cuts.get(w.vt.status.attempt ?? 1)?.values() ?? [])];
      if (cuts.length !== pvcCount) w.violations.push(`opened with ${cuts.length}/${pvcCount} cuts in attempt ${w.vt.status.attempt}`);
      const latestFreeze = Math.max(...cuts.map(([since]) => since));
      const earliestCut = Math.min(...cuts.map(([, at]) => at));
      if (latestFreeze > earliestCut) w.violations.push(`checkpoints not at one instant: a volume froze at ${latestFreeze}, after another cut at ${earliestCut}`);
    }
    const phase = w.vt.status?.phase;
    const finished = phase === 'Committed' || phase === 'RolledBack' || phase === 'Failed';
    const released = [...w.pvcs.values()].every((p) => !p.annotation && !p.finalizers.has(Finalizer.Protection));
    if (finished && !w.deleted && !released) w.violations.push(`phase ${phase} shows while a PVC is still held: a transaction applied now on it would fail`);
    const done = w.deleted ? !(w.vt.metadata.finalizers ?? []).includes(Finalizer.Cleanup) && w.vt.metadata.finalizers !== undefined : finished && released;
    if (done && (finished || w.deleted)) break;
  }
  return w;
}

function checkOutcome(w: World, userPlan: string): void {
  const phase = w.vt.status?.phase;
  assert.deepEqual(w.violations, [], 'safety violations');
  if (w.deleted) {
    assert.ok(!(w.vt.metadata.finalizers ?? []).includes(Finalizer.Cleanup), `a deleted transaction kept its finalizer (phase ${phase})`);
  } else {
    assert.ok(phase === 'Committed' || phase === 'RolledBack' || phase === 'Failed', `did not end: phase ${phase}, ${w.vt.status?.message}`);
  }
  for (const [name, p] of w.pvcs) {
    assert.ok(!p.annotation && !p.finalizers.has(Annotation.Transaction) && !p.finalizers.has(Finalizer.Protection), `${name} still held (phase ${phase})`);
  }
  const txid = w.vt.status?.txid ? attemptTxid(w.vt.status.txid, w.vt.status.attempt ?? 1) : '';
  const outcomes = [...w.volumes.values()].map((v) => v.history.get(txid));
  if (phase === 'Committed') assert.ok(outcomes.every((o) => o === 'committed'), `committed, but volumes say ${outcomes}`);
  if (phase === 'RolledBack') assert.ok(outcomes.every((o) => o === 'aborted'), `rolled back, but volumes say ${outcomes}`);
  if (phase === 'Failed') assert.ok(outcomes.every((o) => o !== 'aborted') && [...w.volumes.values()].every((v) => !v.tx), 'a failed begin must release every checkpoint and lose no data');
  if (userPlan === 'commit' && phase === 'RolledBack') assert.match(w.vt.status?.decisionReason ?? '', /PrepareFailed|PrepareTimeout|Timeout/);
  for (const v of w.volumes.values()) assert.equal(v.tx, null, 'a volume still has an open transaction');
}

test('2PC plan: atomic outcome, decisions durable before acted on, one begin instant — under coordinator crashes', () => {
  let runs = 0;
  const outcomes = new Map<string, number>();
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 2 ** 30 }), fc.integer({ min: 1, max: 5 }), fc.constantFrom('commit' as const, 'rollback' as const, 'timeout' as const, 'delete' as const), (seed, pvcs, userPlan) => {
      const w = simulate(seed, pvcs, userPlan);
      checkOutcome(w, userPlan);
      runs++;
      const key = `${userPlan}→${w.vt.status?.phase ?? 'deleted early'}`;
      outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
    }),
    { numRuns: Number(process.env.FLASHCSI_PLAN_RUNS ?? 2000) },
  );
  console.log(`2PC plan: ${runs} simulated transactions: ${JSON.stringify(Object.fromEntries(outcomes))}`);
  for (const phase of ['Committed', 'RolledBack']) assert.ok([...outcomes.keys()].some((k) => k.endsWith(phase)), `no run reached ${phase}`);
});

test('a completed transaction shows no snapshot still waiting for it (deferredSnapshots emptied)', () => {
  const deferred = [{ persistentVolumeClaimName: 'a', checkpoint: 'snapshot-1' }];
  for (const [decision, action, state, phase] of [
    ['Commit', 'Commit', 'Committed', 'Committed'],
    ['Rollback', 'Rollback', 'RolledBack', 'RolledBack'],
  ] as const) {
    const vt: VolumeTransaction = {
      apiVersion: 'flashcsi.io/v1alpha1',
      kind: 'VolumeTransaction',
      metadata: { name: 'tx', namespace: 'ns', uid: 'uid-1', generation: 1, resourceVersion: '7', finalizers: [Finalizer.Cleanup] },
      spec: { persistentVolumeClaims: ['a'], decision },
      status: { phase: decision === 'Commit' ? 'Preparing' : 'RollingBack', txid: 'uid-1', attempt: 1, decision, deferredSnapshots: deferred },
    };
    const participant: VolumeTransactionParticipant = {
      apiVersion: 'flashcsi.io/v1alpha1',
      kind: 'VolumeTransactionParticipant',
      metadata: { name: 'tx-a', namespace: 'ns', resourceVersion: '8' },
      spec: { transaction: 'tx', txid: attemptTxid('uid-1', 1), attempt: 1, persistentVolumeClaimName: 'a', volumeHandle: 'vol-a', node: 'node-a', action },
      status: { state, observedAction: action, observedAttempt: 1 },
    };
    const claim: ClaimView = { name: 'a', exists: true, deleting: false, bound: true, driver: DRIVER_NAME, volumeHandle: 'vol-a', node: 'node-a', transaction: 'tx', protectedByUs: true };
    const plan = planTransaction({ vt, participants: [participant], claims: new Map([['a', claim]]), now: new Date(), limits: LIMITS });
    const status = plan.steps.find((s) => s.kind === 'status');
    assert.ok(status?.kind === 'status', `a status step (${JSON.stringify(plan.steps)})`);
    assert.equal(status.status.phase, phase);
    assert.deepEqual(status.status.deferredSnapshots, [], `${phase}: the snapshots that waited are cut now`);
    const kinds = plan.steps.map((s) => s.kind);
    assert.ok(kinds.includes('releasePvc') && kinds.indexOf('releasePvc') < kinds.indexOf('status'), `${phase}: the PVC is released before the phase shows (${kinds.join(', ')})`);
  }
});
