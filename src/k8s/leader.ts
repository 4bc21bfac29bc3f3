/**
 * Leader election through a coordination.k8s.io/v1 Lease, as client-go's leaderelection does:
 * take the Lease when it is free or expired, renew it well within its duration, and count
 * leadership as lost as soon as a renewal cannot be confirmed before the lease would expire.
 * Every write is conditional on the Lease's resourceVersion, so two candidates never both win.
 */
import { ApiException, V1MicroTime, type V1Lease } from '@kubernetes/client-node';
import type { Logger } from '../log/logger.js';
import type { Kube } from './kube.js';

export interface LeaderOptions {
  readonly namespace: string;
  readonly name: string;
  readonly identity: string;
  readonly leaseDurationSeconds?: number;
  readonly renewPeriodMs?: number;
  readonly retryPeriodMs?: number;
  readonly log: Logger;
}

export interface Leadership {
  /** Resolves when this candidate leads. */
  readonly acquired: Promise<void>;
  /** Resolves when leadership is lost (or the election stopped). */
  readonly lost: Promise<void>;
  /** Stops renewing and releases the Lease if held. */
  stop(): Promise<void>;
}

export function electLeader(kube: Kube, opts: LeaderOptions): Leadership {
  const duration = opts.leaseDurationSeconds ?? 15;
  const renewMs = opts.renewPeriodMs ?? (duration * 1000) / 3;
  const retryMs = opts.retryPeriodMs ?? 2000;
  const { namespace, name, identity, log } = opts;
  let leading = false;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let lastRenew = 0;
  let onAcquired!: () => void;
  let onLost!: () => void;
  const acquired = new Promise<void>((resolve) => (onAcquired = resolve));
  const lost = new Promise<void>((resolve) => (onLost = resolve));

  const lease = (existing?: V1Lease): V1Lease => {
    // acquireTime and renewTime are MicroTime: the API server refuses milliseconds ("cannot parse
    // .775Z as .000000"), and V1MicroTime serialises with six fractional digits.
    const now = new V1MicroTime();
    const holder = existing?.spec?.holderIdentity;
    return {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: { name, namespace, ...(existing?.metadata?.resourceVersion ? { resourceVersion: existing.metadata.resourceVersion } : {}) },
      spec: {
        holderIdentity: identity,
        leaseDurationSeconds: duration,
        acquireTime: holder === identity && existing?.spec?.acquireTime ? existing.spec.acquireTime : now,
        renewTime: now,
        leaseTransitions: (existing?.spec?.leaseTransitions ?? 0) + (holder === identity ? 0 : 1),
      },
    };
  };

  /** One attempt to take or renew the Lease; true if we hold it afterwards. */
  const tryHold = async (): Promise<boolean> => {
    let existing: V1Lease | undefined;
    try {
      existing = await kube.coordination.readNamespacedLease({ name, namespace });
    } catch (err) {
      if (!(err instanceof ApiException && err.code === 404)) throw err;
    }
    if (!existing) {
      await kube.coordination.createNamespacedLease({ namespace, body: lease() });
      return true;
    }
    const holder = existing.spec?.holderIdentity;
    const renewed = existing.spec?.renewTime ? new Date(existing.spec.renewTime).getTime() : 0;
    const expired = Date.now() > renewed + (existing.spec?.leaseDurationSeconds ?? duration) * 1000;
    if (holder && holder !== identity && !expired) return false;
    await kube.coordination.replaceNamespacedLease({ name, namespace, body: lease(existing) });
    return true;
  };

  const tick = async (): Promise<void> => {
    if (stopped) return;
    let held = false;
    try {
      held = await tryHold();
    } catch (err) {
      log.warn({ err: err instanceof Error ? err.message : String(err) }, 'leader election: lease update failed');
    }
    if (held) lastRenew = Date.now();
    if (held && !leading) {
      leading = true;
      log.info({ lease: `${namespace}/${name}`, identity }, 'leader election: acquired');
      onAcquired();
    }
    if (leading && Date.now() - lastRenew > duration * 1000 - renewMs) {
      // Could not confirm a renewal in time: another candidate may take over; stop acting now.
      leading = false;
      log.warn({ lease: `${namespace}/${name}` }, 'leader election: lost');
      onLost();
      return;
    }
    if (!stopped) timer = setTimeout(() => void tick(), leading ? renewMs : retryMs);
  };
  void tick();

  return {
    acquired,
    lost,
    async stop() {
      stopped = true;
      clearTimeout(timer);
      if (leading) {
        leading = false;
        // Give the Lease up so a successor does not wait for it to expire.
        try {
          const existing = await kube.coordination.readNamespacedLease({ name, namespace });
          if (existing.spec?.holderIdentity === identity) {
            existing.spec.renewTime = new V1MicroTime(0);
            existing.spec.holderIdentity = '';
            await kube.coordination.replaceNamespacedLease({ name, namespace, body: existing });
          }
        } catch {
          // It expires on its own.
        }
      }
      onLost();
    },
  };
}
