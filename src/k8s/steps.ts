/**
 * What the coordinator's plans are made of (transaction-plan.ts, rollback-plan.ts): steps that
 * each change one object, executed in order by reconcile.ts. A plan stops at the first step that
 * fails (a resourceVersion conflict, say); the next reconcile plans again from what is there.
 */

export type CommonStep<Status> =
  | { readonly kind: 'addFinalizer' }
  | { readonly kind: 'removeFinalizer' }
  /** Annotate the PVC with the owner's name and add the protection finalizer (conflict-checked). */
  | { readonly kind: 'claimPvc'; readonly pvc: string }
  /** Remove the owner's annotation and the protection finalizer from the PVC. */
  | { readonly kind: 'releasePvc'; readonly pvc: string }
  /** Replace the status (with the observed resourceVersion: a conflict aborts the plan). */
  | { readonly kind: 'status'; readonly status: Status }
  | { readonly kind: 'event'; readonly type: 'Normal' | 'Warning'; readonly reason: string; readonly message: string };

export interface PlanOf<S> {
  readonly steps: S[];
  /** Reconcile again after this long even if nothing changes (timeouts, waits). */
  readonly requeueAfterMs?: number;
}

/** JSON with object keys sorted, so equal values compare equal whatever their key order. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v as Record<string, unknown>).filter(([, x]) => x !== undefined).sort(([a], [b]) => a.localeCompare(b)))
      : v,
  );
}
