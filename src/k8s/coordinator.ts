/**
 * The coordinator: while it holds the leader Lease, it reconciles every VolumeTransaction (the
 * two-phase commit, transaction-plan.ts) and every VolumeRollback (validation and hand-over to
 * the node agent, rollback-plan.ts). Its durable state is entirely in the API server: status of
 * those objects, the participant objects and PVC annotations. A new leader continues from there.
 *
 * Reconcile order for each object: fetch (from the informer cache) → plan → execute the steps in
 * order (finalizer → claims → status → participant actions), stopping at the first failure.
 */
import type { CoreV1Event, KubernetesObject, V1PersistentVolume, V1PersistentVolumeClaim } from '@kubernetes/client-node';
import { Annotation, Finalizer, TOPOLOGY_NODE_KEY } from '../constants.js';
import type { Logger } from '../log/logger.js';
import {
  API_VERSION,
  ParticipantResource,
  VolumeRollbackResource,
  VolumeSnapshotContentResource,
  VolumeSnapshotResource,
  VolumeTransactionResource,
  type Resource,
  type RollbackPhase,
  type TransactionPhase,
  type VolumeRollback,
  type VolumeTransaction,
  type VolumeTransactionParticipant,
} from './api.js';
import { Kube, KubeError, type KubeObject } from './kube.js';
import { watch, type Watched } from './informers.js';
import { electLeader, type Leadership } from './leader.js';
import { planRollback, type SnapshotView } from './rollback-plan.js';
import type { CommonStep } from './steps.js';
import { planTransaction, type ClaimView, type Step, type TransactionLimits } from './transaction-plan.js';
import { WorkQueue } from './work-queue.js';

export interface CoordinatorOptions {
  readonly kube: Kube;
  readonly log: Logger;
  /** Leader election; omitted → act at once (a single coordinator, as in tests). */
  readonly lease?: { readonly namespace: string; readonly name: string; readonly identity: string; readonly leaseDurationSeconds?: number };
  readonly limits?: TransactionLimits;
  /** Called with every phase a transaction or rollback reaches (metrics). */
  readonly onPhase?: (kind: 'VolumeTransaction' | 'VolumeRollback', phase: string) => void;
  /** Called when this coordinator records a transaction's decision (metrics). */
  readonly onDecision?: (decision: string, reason: string) => void;
  /** Called when a reconcile fails and will be retried (metrics). */
  readonly onReconcileError?: (kind: 'VolumeTransaction' | 'VolumeRollback') => void;
}

interface VolumeSnapshot extends KubernetesObject {
  spec?: { source?: { persistentVolumeClaimName?: string; volumeSnapshotContentName?: string } };
  status?: { readyToUse?: boolean; boundVolumeSnapshotContentName?: string; error?: { message?: string } };
}

interface VolumeSnapshotContent extends KubernetesObject {
  spec?: { driver?: string };
  status?: { snapshotHandle?: string; readyToUse?: boolean };
}

type Caches = {
  vt: Watched<VolumeTransaction & KubernetesObject>;
  vtp: Watched<VolumeTransactionParticipant & KubernetesObject>;
  vr: Watched<VolumeRollback & KubernetesObject>;
  pvc: Watched<V1PersistentVolumeClaim>;
  pv: Watched<V1PersistentVolume>;
  vs: Watched<VolumeSnapshot>;
  vsc: Watched<VolumeSnapshotContent>;
};

/** The node a PV's volume lives on, from its node affinity (set from the CSI topology). */
export function nodeOfPv(pv: V1PersistentVolume | undefined): string | undefined {
  for (const term of pv?.spec?.nodeAffinity?.required?.nodeSelectorTerms ?? []) {
    for (const e of term.matchExpressions ?? []) if (e.key === TOPOLOGY_NODE_KEY && e.values?.[0]) return e.values[0];
  }
  return pv?.spec?.csi?.volumeAttributes?.[TOPOLOGY_NODE_KEY];
}

export function claimView(name: string, pvc: V1PersistentVolumeClaim | undefined, pv: V1PersistentVolume | undefined): ClaimView {
  const ann = pvc?.metadata?.annotations ?? {};
  const node = nodeOfPv(pv);
  return {
    name,
    exists: pvc !== undefined,
    deleting: pvc?.metadata?.deletionTimestamp !== undefined,
    bound: pvc?.status?.phase === 'Bound' && !!pvc.spec?.volumeName,
    ...(pv?.spec?.csi?.driver ? { driver: pv.spec.csi.driver } : {}),
    ...(pv?.spec?.csi?.volumeHandle ? { volumeHandle: pv.spec.csi.volumeHandle } : {}),
    ...(node ? { node } : {}),
    ...(ann[Annotation.Transaction] ? { transaction: ann[Annotation.Transaction] } : {}),
    ...(ann[Annotation.Rollback] ? { rollback: ann[Annotation.Rollback] } : {}),
    protectedByUs: pvc?.metadata?.finalizers?.includes(Finalizer.Protection) ?? false,
  };
}

const key = (kind: 'vt' | 'vr', ns: string, name: string): string => `${kind}/${ns}/${name}`;

export class Coordinator {
  private caches: Caches | null = null;
  private queue: WorkQueue | null = null;
  private leadership: Leadership | null = null;

  constructor(private readonly opts: CoordinatorOptions) {}

  /** Resolves once this coordinator leads and its caches are synced; `lost` resolves if it stops leading. */
  async start(): Promise<{ lost: Promise<void> }> {
    const { kube, log, lease } = this.opts;
    let lost: Promise<void> = new Promise(() => undefined);
    if (lease) {
      this.leadership = electLeader(kube, { ...lease, log });
      await this.leadership.acquired;
      lost = this.leadership.lost;
    }
    this.queue = new WorkQueue(
      (k) => this.reconcile(k),
      (k, err) => {
        log.warn({ key: k, err: err instanceof Error ? err.message : String(err) }, 'reconcile failed; retrying');
        this.opts.onReconcileError?.(k.startsWith('vt/') ? 'VolumeTransaction' : 'VolumeRollback');
      },
    );
    const q = this.queue;
    const kc = kube.config;
    const path = (r: Resource): string => `/apis/${r.group}/${r.version}/${r.plural}`;
    const custom = <T extends KubeObject>(r: Resource) => () => kube.list<T>(r);
    const enqueueVt = (o: KubernetesObject): void => q.add(key('vt', o.metadata?.namespace ?? '', o.metadata?.name ?? ''));
    const enqueueVr = (o: KubernetesObject): void => q.add(key('vr', o.metadata?.namespace ?? '', o.metadata?.name ?? ''));
    // A change to a PVC, PV or snapshot wakes the transactions and rollbacks that refer to it.
    const byPvc = (ns: string, pvc: string): void => {
      for (const vt of this.caches?.vt.list() ?? []) if (vt.metadata.namespace === ns && vt.spec.persistentVolumeClaims.includes(pvc)) enqueueVt(vt);
      for (const vr of this.caches?.vr.list() ?? []) {
        const snap = this.caches?.vs.get(vr.spec.volumeSnapshotName, ns);
        if (vr.metadata.namespace === ns && (vr.status?.persistentVolumeClaimName === pvc || snap?.spec?.source?.persistentVolumeClaimName === pvc)) enqueueVr(vr);
      }
    };
    const bySnapshot = (ns: string, name: string): void => {
      for (const vr of this.caches?.vr.list() ?? []) if (vr.metadata.namespace === ns && vr.spec.volumeSnapshotName === name) enqueueVr(vr);
    };
    const vt = await watch(kc, path(VolumeTransactionResource), custom<VolumeTransaction & KubernetesObject>(VolumeTransactionResource), enqueueVt, log);
    const vtp = await watch(
      kc,
      path(ParticipantResource),
      custom<VolumeTransactionParticipant & KubernetesObject>(ParticipantResource),
      (p) => q.add(key('vt', p.metadata.namespace ?? '', p.spec.transaction)),
      log,
    );
    const vr = await watch(kc, path(VolumeRollbackResource), custom<VolumeRollback & KubernetesObject>(VolumeRollbackResource), enqueueVr, log);
    const pvc = await watch(kc, '/api/v1/persistentvolumeclaims', () => kube.core.listPersistentVolumeClaimForAllNamespaces(), (o) => byPvc(o.metadata?.namespace ?? '', o.metadata?.name ?? ''), log);
    const pv = await watch(
      kc,
      '/api/v1/persistentvolumes',
      () => kube.core.listPersistentVolume(),
      (o) => {
        const ref = o.spec?.claimRef;
        if (ref?.namespace && ref.name) byPvc(ref.namespace, ref.name);
      },
      log,
    );
    const vs = await watch(kc, path(VolumeSnapshotResource), custom<VolumeSnapshot & KubeObject>(VolumeSnapshotResource), (o) => bySnapshot(o.metadata?.namespace ?? '', o.metadata?.name ?? ''), log);
    const vsc = await watch(
      kc,
      path(VolumeSnapshotContentResource),
      custom<VolumeSnapshotContent & KubeObject>(VolumeSnapshotContentResource),
      (o) => {
        for (const s of this.caches?.vs.list() ?? []) if (s.status?.boundVolumeSnapshotContentName === o.metadata?.name) bySnapshot(s.metadata?.namespace ?? '', s.metadata?.name ?? '');
      },
      log,
    );
    this.caches = { vt, vtp, vr, pvc, pv, vs, vsc };
    for (const o of vt.list()) enqueueVt(o);
    for (const o of vr.list()) enqueueVr(o);
    log.info({}, 'coordinator: running');
    return { lost };
  }

  async stop(): Promise<void> {
    this.queue?.stop();
    for (const c of Object.values(this.caches ?? {})) await (c as Watched<KubernetesObject>).stop();
    await this.leadership?.stop();
  }

  /** VolumeTransactions and VolumeRollbacks by phase, from the informer caches; null until this coordinator leads. */
  phaseCounts(): { transactions: Record<TransactionPhase, number>; rollbacks: Record<RollbackPhase, number> } | null {
    if (this.caches === null) return null;
    const transactions: Record<TransactionPhase, number> = { Pending: 0, Open: 0, Preparing: 0, Committed: 0, RollingBack: 0, RolledBack: 0, Failed: 0 };
    const rollbacks: Record<RollbackPhase, number> = { Pending: 0, WaitingForDetach: 0, RollingBack: 0, Completed: 0, Failed: 0 };
    for (const vt of this.caches.vt.list()) transactions[vt.status?.phase ?? 'Pending']++;
    for (const vr of this.caches.vr.list()) rollbacks[vr.status?.phase ?? 'Pending']++;
    return { transactions, rollbacks };
  }

  private claim(ns: string, name: string): ClaimView {
    const caches = this.caches as Caches;
    const pvc = caches.pvc.get(name, ns);
    const pv = pvc?.spec?.volumeName ? caches.pv.get(pvc.spec.volumeName) : undefined;
    return claimView(name, pvc, pv);
  }

  private async reconcile(k: string): Promise<{ requeueAfterMs?: number } | undefined> {
    const [kind, ns = '', name = ''] = k.split('/');
    // Events of the informers' initial lists arrive before every cache is there; start() queues
    // every transaction and rollback once they all are.
    if (!this.caches) return undefined;
    const caches = this.caches;
    if (kind === 'vt') {
      const vt = caches.vt.get(name, ns);
      if (!vt) return undefined;
      const participants = caches.vtp.list().filter((p) => p.metadata.namespace === ns && p.spec.transaction === name);
      const claims = new Map(vt.spec.persistentVolumeClaims.map((pvc) => [pvc, this.claim(ns, pvc)]));
      const plan = planTransaction({ vt, participants, claims, now: new Date(), ...(this.opts.limits ? { limits: this.opts.limits } : {}) });
      const done = await this.execute(VolumeTransactionResource, vt, Annotation.Transaction, plan.steps, (s) => this.transactionStep(ns, s));
      if (done && vt.status?.phase) this.opts.onPhase?.('VolumeTransaction', vt.status.phase);
      if (done && !vt.status?.decision && this.opts.onDecision) {
        for (const step of plan.steps) if (step.kind === 'status' && step.status.decision) this.opts.onDecision(step.status.decision, step.status.decisionReason ?? '');
      }
      return done ? (plan.requeueAfterMs === undefined ? undefined : { requeueAfterMs: plan.requeueAfterMs }) : { requeueAfterMs: 0 };
    }
    const vr = caches.vr.get(name, ns);
    if (!vr) return undefined;
    const snap = caches.vs.get(vr.spec.volumeSnapshotName, ns);
    const contentName = snap?.status?.boundVolumeSnapshotContentName;
    const content = contentName ? caches.vsc.get(contentName) : undefined;
    const snapshot: SnapshotView = {
      exists: snap !== undefined,
      readyToUse: snap?.status?.readyToUse === true,
      ...(snap?.status?.error?.message ? { error: snap.status.error.message } : {}),
      ...(snap?.spec?.source?.persistentVolumeClaimName ? { sourcePvc: snap.spec.source.persistentVolumeClaimName } : {}),
      ...(content?.spec?.driver ? { driver: content.spec.driver } : {}),
      ...(content?.status?.snapshotHandle ? { snapshotHandle: content.status.snapshotHandle } : {}),
    };
    const pvcName = vr.status?.persistentVolumeClaimName ?? snapshot.sourcePvc;
    const plan = planRollback({ vr, snapshot, claim: pvcName ? this.claim(ns, pvcName) : null, now: new Date() });
    const done = await this.execute(VolumeRollbackResource, vr, Annotation.Rollback, plan.steps, () => Promise.resolve());
    if (done && vr.status?.phase) this.opts.onPhase?.('VolumeRollback', vr.status.phase);
    return done ? (plan.requeueAfterMs === undefined ? undefined : { requeueAfterMs: plan.requeueAfterMs }) : { requeueAfterMs: 0 };
  }

  /** Runs the steps in order; false if one failed on a conflict (the caller replans at once). */
  private async execute<S extends { kind: string }>(
    r: Resource,
    owner: KubeObject & { apiVersion: string; kind: string },
    annotation: string,
    steps: readonly S[],
    other: (step: S) => Promise<void>,
  ): Promise<boolean> {
    const { kube } = this.opts;
    const ns = owner.metadata.namespace ?? '';
    const name = owner.metadata.name;
    try {
      for (const raw of steps) {
        const step = raw as unknown as CommonStep<unknown>;
        switch (step.kind) {
          case 'addFinalizer':
          case 'removeFinalizer': {
            const now = owner.metadata.finalizers ?? [];
            const finalizers = step.kind === 'addFinalizer' ? [...now.filter((f) => f !== Finalizer.Cleanup), Finalizer.Cleanup] : now.filter((f) => f !== Finalizer.Cleanup);
            await kube.patch(r, ns, name, { metadata: { resourceVersion: owner.metadata.resourceVersion, finalizers } });
            break;
          }
          case 'claimPvc':
            await this.markPvc(ns, step.pvc, annotation, name, true);
            break;
          case 'releasePvc':
            await this.markPvc(ns, step.pvc, annotation, name, false);
            break;
          case 'status':
            await kube.replaceStatus(r, { ...owner, status: step.status });
            break;
          case 'event':
            await this.event(owner, step.type, step.reason, step.message);
            break;
          default:
            await other(raw);
        }
      }
      return true;
    } catch (err) {
      if (err instanceof KubeError && (err.conflict || err.notFound)) return false;
      throw err;
    }
  }

  private async transactionStep(ns: string, step: Step): Promise<void> {
    const { kube } = this.opts;
    switch (step.kind) {
      case 'createParticipant':
        try {
          await kube.create(ParticipantResource, step.participant);
        } catch (err) {
          if (!(err instanceof KubeError && err.conflict)) throw err; // already created: fine
        }
        return;
      case 'setAction':
        await kube.patch(ParticipantResource, ns, step.name, {
          metadata: step.resourceVersion ? { resourceVersion: step.resourceVersion } : {},
          spec: { action: step.action, attempt: step.attempt, txid: step.txid },
        });
        return;
      case 'deleteParticipant':
        await kube.delete(ParticipantResource, ns, step.name);
        return;
      default:
        throw new Error(`BUG: unexpected step ${step.kind}`);
    }
  }

  /**
   * Claims (or releases) a PVC for a transaction or rollback: the owner's annotation plus the
   * protection finalizer, written with the PVC's resourceVersion so two owners cannot both win.
   */
  private async markPvc(ns: string, pvcName: string, annotation: string, owner: string, claim: boolean): Promise<void> {
    const { kube } = this.opts;
    const pvc = await kube.readPvc(ns, pvcName);
    if (!pvc?.metadata) return;
    let ann: Record<string, string> = { ...(pvc.metadata.annotations ?? {}) };
    const others = [Annotation.Transaction, Annotation.Rollback].filter((a) => a !== annotation && ann[a] !== undefined);
    if (claim) {
      if ((ann[annotation] !== undefined && ann[annotation] !== owner) || others.length > 0) {
        throw new KubeError(409, `PVC ${ns}/${pvcName} is held by ${others.map((a) => `${a}=${ann[a]}`).join(', ') || `${annotation}=${ann[annotation]}`}`);
      }
      ann[annotation] = owner;
      pvc.metadata.finalizers = [...(pvc.metadata.finalizers ?? []).filter((f) => f !== Finalizer.Protection), Finalizer.Protection];
    } else {
      if (ann[annotation] !== undefined && ann[annotation] !== owner) return; // someone else's now
      ann = Object.fromEntries(Object.entries(ann).filter(([k]) => k !== annotation));
      if (others.length === 0) pvc.metadata.finalizers = (pvc.metadata.finalizers ?? []).filter((f) => f !== Finalizer.Protection);
    }
    pvc.metadata.annotations = ann;
    await kube.replacePvc(pvc);
  }

  private async event(owner: KubeObject & { apiVersion: string; kind: string }, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    const now = new Date();
    const ev: CoreV1Event = {
      metadata: { generateName: `${owner.metadata.name}.`, namespace: owner.metadata.namespace ?? 'default' },
      involvedObject: { apiVersion: API_VERSION, kind: owner.kind, name: owner.metadata.name, namespace: owner.metadata.namespace ?? '', ...(owner.metadata.uid ? { uid: owner.metadata.uid } : {}) },
      reason,
      message: message.slice(0, 1024),
      type,
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
      source: { component: 'flashcsi-coordinator' },
      reportingComponent: 'flashcsi.io/coordinator',
    };
    await this.opts.kube.createEvent(ev).catch((err: unknown) => {
      this.opts.log.warn({ err: err instanceof Error ? err.message : String(err), reason }, 'could not record an event');
    });
  }
}
