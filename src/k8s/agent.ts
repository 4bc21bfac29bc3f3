/**
 * The node agent, inside `flashcsi plugin --agent`: it carries out, on this node's volumes, what
 * the coordinator decided — VolumeTransactionParticipant actions and VolumeRollbacks handed to this
 * node — and reports in their status. It writes only status, and only of objects for its node.
 *
 * - Every action is idempotent and derived from the object as it is now, so a restarted agent (or
 *   a repeated watch event) simply acts again. The volume records transaction outcomes durably,
 *   which makes a repeated begin/prepare/commit/abort harmless.
 * - A freeze is one-shot per begin attempt: it is held in memory (an open volume or a control
 *   connection), and if it is gone — the agent restarted, or it timed out — while the coordinator
 *   still expects it, the participant reports Failed rather than freezing again later (a second
 *   freeze would not overlap the other volumes' and the checkpoints would not share an instant).
 * - It also labels the snapshot contents of this node's volumes for this node's csi-snapshotter
 *   (snapshot-contents.ts).
 * - Rolling back (abort, VolumeRollback) holds the volume's in-flight key, which NodeStageVolume
 *   also takes: while it runs, staging the volume answers ABORTED and kubelet retries. It starts
 *   only once the volume is not staged on this node: a mounted file system never changes under a pod.
 */
import type { KubernetesObject } from '@kubernetes/client-node';
import { Label } from '../constants.js';
import type { InFlight } from '../volumes/locks.js';
import { withVolume, type FrozenHandle, type VolumeAccess, type VolumeHandle } from '../volumes/volume-access.js';
import type { Logger } from '../log/logger.js';
import {
  ParticipantResource,
  VolumeRollbackResource,
  setCondition,
  type ParticipantState,
  type ParticipantStatus,
  type Resource,
  type VolumeRollback,
  type VolumeTransactionParticipant,
} from './api.js';
import { watch, type Watched } from './informers.js';
import { KubeError, type Kube } from './kube.js';
import { ContentLabeller } from './snapshot-contents.js';
import { WorkQueue } from './work-queue.js';

export interface AgentOptions {
  readonly kube: Kube;
  readonly log: Logger;
  readonly nodeId: string;
  readonly access: VolumeAccess;
  /** The plugin's per-volume in-flight keys, shared with the CSI RPCs. */
  readonly inflight: InFlight;
  volumeDir(volumeId: string): string;
  /** Whether the volume is staged on this node (in use by pods). */
  isStaged(volumeId: string): Promise<boolean>;
  /** Whether this node holds the volume at all (snapshot-contents.ts labels its snapshot contents). */
  holdsVolume(volumeId: string): Promise<boolean>;
  /** How long a freeze may be held waiting for the coordinator's Begin. */
  readonly freezeTimeoutMs?: number;
  /** How often to look again at something that waits (detach, deferred snapshots). */
  readonly recheckMs?: number;
}

type Participant = VolumeTransactionParticipant & KubernetesObject;
type Rollback = VolumeRollback & KubernetesObject;

interface FreezeSession {
  readonly attempt: number;
  readonly handle: VolumeHandle;
  readonly frozen: FrozenHandle;
  readonly timer: NodeJS.Timeout;
}

const message = (err: unknown): string => (err instanceof Error ? err.message : String(err));

export class NodeAgent {
  private participants: Watched<Participant> | null = null;
  private rollbacks: Watched<Rollback> | null = null;
  private queue: WorkQueue | null = null;
  private contents: ContentLabeller | null = null;
  private readonly freezes = new Map<string, FreezeSession>();
  private readonly freezeTimeoutMs: number;
  private readonly recheckMs: number;

  constructor(private readonly opts: AgentOptions) {
    this.freezeTimeoutMs = opts.freezeTimeoutMs ?? 60_000;
    this.recheckMs = opts.recheckMs ?? 5_000;
  }

  async start(): Promise<void> {
    const { kube, log, nodeId } = this.opts;
    const q = new WorkQueue(
      (k) => this.reconcile(k),
      (k, err) => log.warn({ key: k, err: message(err) }, 'agent: step failed; retrying'),
    );
    this.queue = q;
    const path = (r: Resource): string => `/apis/${r.group}/${r.version}/${r.plural}`;
    const selector = `${Label.Node}=${nodeId}`;
    this.participants = await watch<Participant>(
      kube.config,
      path(ParticipantResource),
      () => kube.list<Participant>(ParticipantResource, selector),
      (p) => q.add(`p/${p.metadata.namespace ?? ''}/${p.metadata.name}`),
      log,
      selector,
    );
    // Events of the initial list arrive before the cache is assigned (and are ignored by
    // reconcile): queue every object again now, or a participant that is waiting for this agent
    // (e.g. one told to Commit while the agent was down) would never be acted on.
    for (const p of this.participants.list()) q.add(`p/${p.metadata.namespace ?? ''}/${p.metadata.name}`);
    this.rollbacks = await watch<Rollback>(
      kube.config,
      path(VolumeRollbackResource),
      () => kube.list<Rollback>(VolumeRollbackResource),
      (r) => {
        if (r.status?.node === nodeId) q.add(`r/${r.metadata.namespace ?? ''}/${r.metadata.name}`);
      },
      log,
    );
    for (const r of this.rollbacks.list()) if (r.status?.node === nodeId) q.add(`r/${r.metadata.namespace ?? ''}/${r.metadata.name}`);
    this.contents = new ContentLabeller({ kube, log, nodeId, holdsVolume: (v) => this.opts.holdsVolume(v) });
    await this.contents.start();
    log.info({ nodeId }, 'agent: running');
  }

  async stop(): Promise<void> {
    this.queue?.stop();
    await this.participants?.stop();
    await this.rollbacks?.stop();
    await this.contents?.stop();
    for (const name of [...this.freezes.keys()]) await this.release(name);
  }

  private async reconcile(key: string): Promise<{ requeueAfterMs?: number } | undefined> {
    const [kind, ns = '', name = ''] = key.split('/');
    // Not started yet: start() queues every object once its cache is there.
    if ((kind === 'p' && !this.participants) || (kind === 'r' && !this.rollbacks)) return undefined;
    try {
      if (kind === 'p') {
        const p = this.participants?.get(name, ns);
        if (!p || p.metadata.deletionTimestamp) {
          await this.release(key);
          return undefined;
        }
        return await this.participant(key, p);
      }
      const r = this.rollbacks?.get(name, ns);
      return r ? await this.rollback(r) : undefined;
    } catch (err) {
      if (err instanceof KubeError && err.conflict) return { requeueAfterMs: 0 }; // the object moved on: look again
      throw err;
    }
  }

  // ------------------------------------------------------------ transaction participants

  private async participant(key: string, p: Participant): Promise<{ requeueAfterMs?: number } | undefined> {
    const { action, attempt, txid, volumeHandle } = p.spec;
    const st = p.status ?? {};
    const reported = st.observedAction === action && st.observedAttempt === attempt ? st.state : undefined;
    const dir = this.opts.volumeDir(volumeHandle);
    const report = (state: ParticipantState, extra: Partial<ParticipantStatus> = {}): Promise<void> => this.report(p, state, extra);

    switch (action) {
      case 'Freeze': {
        const held = this.freezes.get(key);
        if (held?.attempt === attempt) {
          if (reported !== 'Frozen') await report('Frozen');
          return undefined;
        }
        if (reported === 'Frozen') {
          await report('Failed', { message: 'the freeze was lost (agent restarted or it timed out) before Begin' });
          return undefined;
        }
        if (reported === 'Failed') return undefined;
        await this.release(key);
        try {
          const handle = await this.opts.access.open(dir);
          let frozen: FrozenHandle;
          try {
            frozen = await handle.freeze(this.freezeTimeoutMs);
          } catch (err) {
            await handle.close();
            throw err;
          }
          const timer = setTimeout(() => void this.release(key), this.freezeTimeoutMs);
          this.freezes.set(key, { attempt, handle, frozen, timer });
        } catch (err) {
          await report('Failed', { message: `could not freeze the volume: ${message(err)}` });
          return undefined;
        }
        await report('Frozen');
        return undefined;
      }
      case 'Begin': {
        if (reported === 'Begun' || reported === 'Failed') return this.refreshDeferred(p, dir);
        const held = this.freezes.get(key);
        const checkpoint = `tx:${txid}`;
        if (held?.attempt === attempt) {
          try {
            await held.frozen.begin(txid);
          } catch (err) {
            await this.release(key);
            await report('Failed', { message: `could not begin: ${message(err)}` });
            return undefined;
          }
          await this.release(key);
          await report('Begun', { checkpoint });
          return undefined;
        }
        // No freeze here: fine only if the cut was made under it before a restart.
        const tx = await withVolume(this.opts.access, dir, async (h) => (await h.view()).transaction);
        if (tx?.txid === txid) await report('Begun', { checkpoint });
        else await report('Failed', { message: 'the freeze was lost before Begin' });
        return undefined;
      }
      case 'Prepare':
        if (reported === 'Prepared' || reported === 'Failed') return this.refreshDeferred(p, dir);
        try {
          await withVolume(this.opts.access, dir, (h) => h.transaction('prepare', txid));
        } catch (err) {
          await report('Failed', { message: `prepare failed: ${message(err)}` });
          return undefined;
        }
        await report('Prepared');
        return undefined;
      case 'Commit':
        if (reported === 'Committed') return undefined;
        // After a durable Commit decision there is no alternative: retry until it succeeds.
        await withVolume(this.opts.access, dir, (h) => h.transaction('commit', txid));
        await report('Committed');
        return undefined;
      case 'Rollback':
        if (reported === 'RolledBack') return undefined;
        return this.whenDetached(volumeHandle, async () => {
          await withVolume(this.opts.access, dir, (h) => h.transaction('abort', txid));
          await report('RolledBack');
        }, (why) => (reported === 'WaitingForDetach' && st.message === why ? Promise.resolve() : report('WaitingForDetach', { message: why })));
      case 'Release': {
        await this.release(key);
        if (reported === 'Released') return undefined;
        await withVolume(this.opts.access, dir, async (h) => {
          if ((await h.view()).transaction?.txid === txid) await h.transaction('commit', txid); // drop the checkpoint, keep the data
        });
        await report('Released');
        return undefined;
      }
    }
  }

  /** While a transaction is open, keeps the list of snapshots waiting for it up to date. */
  private async refreshDeferred(p: Participant, dir: string): Promise<{ requeueAfterMs: number } | undefined> {
    if (p.status?.state !== 'Begun' && p.status?.state !== 'Prepared') return undefined;
    const deferred = await withVolume(this.opts.access, dir, async (h) => (await h.view()).deferred.map((d) => d.name));
    if (JSON.stringify(deferred) !== JSON.stringify(p.status.deferredCheckpoints ?? [])) {
      await this.opts.kube.replaceStatus(ParticipantResource, { ...p, status: { ...p.status, deferredCheckpoints: deferred, lastUpdateTime: new Date().toISOString() } });
    }
    return { requeueAfterMs: this.recheckMs };
  }

  private async report(p: Participant, state: ParticipantState, extra: Partial<ParticipantStatus>): Promise<void> {
    const status: ParticipantStatus = {
      ...(p.status?.deferredCheckpoints ? { deferredCheckpoints: p.status.deferredCheckpoints } : {}),
      ...extra,
      state,
      observedAction: p.spec.action,
      observedAttempt: p.spec.attempt,
      lastUpdateTime: new Date().toISOString(),
    };
    await this.opts.kube.replaceStatus(ParticipantResource, { ...p, status });
    this.opts.log.info({ participant: `${p.metadata.namespace}/${p.metadata.name}`, action: p.spec.action, state, message: extra.message }, 'agent: participant');
  }

  private async release(key: string): Promise<void> {
    const held = this.freezes.get(key);
    if (!held) return;
    this.freezes.delete(key);
    clearTimeout(held.timer);
    await held.frozen.thaw().catch(() => undefined);
    await held.handle.close().catch(() => undefined);
  }

  /**
   * Runs `act` holding the volume's in-flight key once the volume is not staged on this node;
   * otherwise reports why it waits and looks again later.
   */
  private async whenDetached(volumeId: string, act: () => Promise<void>, waiting: (why: string) => Promise<void>): Promise<{ requeueAfterMs: number } | undefined> {
    const why = `the volume is staged on node ${this.opts.nodeId}: waiting for every pod using it to stop (a mounted file system never changes under its user)`;
    // Look first without the key, so waiting never makes a kubelet call find the volume busy.
    if (await this.opts.isStaged(volumeId)) {
      await waiting(why);
      return { requeueAfterMs: this.recheckMs };
    }
    let release: (() => void) | undefined;
    try {
      release = this.opts.inflight.acquire(volumeId);
    } catch {
      return { requeueAfterMs: 1_000 }; // a CSI call is working on the volume right now
    }
    try {
      // Holding the key now: NodeStageVolume cannot slip in between this check and the rollback.
      if (await this.opts.isStaged(volumeId)) {
        await waiting(why);
        return { requeueAfterMs: this.recheckMs };
      }
      await act();
      return undefined;
    } finally {
      release();
    }
  }

  // ------------------------------------------------------------ VolumeRollbacks handed to this node

  private async rollback(r: Rollback): Promise<{ requeueAfterMs?: number } | undefined> {
    const st = r.status ?? {};
    if (st.node !== this.opts.nodeId) return undefined;
    if (st.phase !== 'WaitingForDetach' && st.phase !== 'RollingBack') return undefined;
    if (st.phase === 'WaitingForDetach' && r.metadata.deletionTimestamp) return undefined; // cancelled
    const volumeId = st.volumeHandle ?? '';
    const checkpoint = st.checkpoint ?? '';
    const now = (): string => new Date().toISOString();
    let current: Rollback = r;
    // Status writes go one after another, each on the version the previous one returned.
    let writing: Promise<void> = Promise.resolve();
    let pending = false;
    const update = (status: NonNullable<VolumeRollback['status']>, reason: string): Promise<void> => {
      pending = true;
      writing = writing.then(async () => {
        const done = status.phase === 'Completed' || status.phase === 'Failed';
        const next = {
          ...status,
          conditions: setCondition(current.status?.conditions, { type: 'Complete', status: done ? 'True' : 'False', reason, message: status.message ?? '' }, now()),
        };
        const phaseChanged = status.phase !== current.status?.phase;
        current = await this.opts.kube.replaceStatus(VolumeRollbackResource, { ...current, status: next });
        if (phaseChanged) await this.event(r, status.phase === 'Failed' ? 'Warning' : 'Normal', reason, status.message ?? '');
      });
      writing = writing.finally(() => {
        pending = false;
      });
      return writing;
    };
    return this.whenDetached(
      volumeId,
      async () => {
        if (st.phase === 'WaitingForDetach') await update({ ...st, phase: 'RollingBack', message: `rolling back to checkpoint ${checkpoint}` }, 'RollingBack');
        const dir = this.opts.volumeDir(volumeId);
        let lastReport = Date.now();
        let grainSize = 0;
        try {
          const result = await withVolume(this.opts.access, dir, async (h) => {
            grainSize = (await h.view()).grainSize;
            return h.rollback(checkpoint, (done, total) => {
              if (pending || Date.now() - lastReport < 1000) return;
              lastReport = Date.now();
              void update({ ...current.status, phase: 'RollingBack', restoredBytes: done * grainSize, message: `rolling back: ${done}/${total} grains restored` }, 'RollingBack').catch(() => undefined);
            });
          });
          await update({ ...current.status, phase: 'Completed', restoredBytes: result.restoredBytes, completionTime: now(), message: `rolled back to checkpoint ${checkpoint}` }, 'Completed');
        } catch (err) {
          if (err instanceof KubeError) throw err;
          // The engine finishes an interrupted rollback on the next open, so retrying is safe.
          this.opts.log.warn({ rollback: `${r.metadata.namespace}/${r.metadata.name}`, err: message(err) }, 'agent: rollback failed; retrying');
          throw err;
        }
      },
      (why) => (st.message === why ? Promise.resolve() : update({ ...st, message: why }, 'WaitingForDetach')),
    );
  }

  private async event(r: Rollback, type: 'Normal' | 'Warning', reason: string, msg: string): Promise<void> {
    const now = new Date();
    await this.opts.kube
      .createEvent({
        metadata: { generateName: `${r.metadata.name}.`, namespace: r.metadata.namespace ?? 'default' },
        involvedObject: { apiVersion: r.apiVersion, kind: r.kind, name: r.metadata.name, namespace: r.metadata.namespace ?? '', ...(r.metadata.uid ? { uid: r.metadata.uid } : {}) },
        reason,
        message: msg.slice(0, 1024),
        type,
        firstTimestamp: now,
        lastTimestamp: now,
        count: 1,
        source: { component: 'flashcsi-agent', host: this.opts.nodeId },
        reportingComponent: 'flashcsi.io/agent',
      })
      .catch((err: unknown) => this.opts.log.warn({ err: message(err) }, 'agent: could not record an event'));
  }
}
