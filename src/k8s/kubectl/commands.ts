/**
 * The kubectl-flashcsi commands. Each one checks what kubectl cannot (that the snapshot is one of the
 * PVC's, that the PVCs exist, that a decision is not being changed), then writes the same object a
 * `kubectl apply -f` of the equivalent YAML would (server-side apply, field manager kubectl-flashcsi),
 * or the same merge patch as `kubectl patch --type merge`, and prints what kubectl prints.
 */
import { randomBytes } from 'node:crypto';
import { VolumeRollbackResource, VolumeTransactionResource, type Decision, type VolumeRollback, type VolumeTransaction } from '../api.js';
import type { PluginClient } from './client.js';
import { PluginError } from './errors.js';
import { checkLocalName, checkName, decisionPatch, defaultRollbackName, volumeRollbackManifest, volumeTransactionManifest } from './manifests.js';
import { renderTable, statusRows } from './status-table.js';
import { waitUntil, type Verdict } from './wait.js';

/** Where commands write: stdout for results, stderr for notes. */
export interface Output {
  out(text: string): void;
  err(text: string): void;
}

export interface CommandContext {
  client: PluginClient;
  io: Output;
  /** Clock for the AGE column. */
  now?: () => number;
  /** Suffix source for generated names (5 characters of [a-z0-9]). */
  randomSuffix?: () => string;
}

const RB = 'volumerollback.flashcsi.io';
const TX = 'volumetransaction.flashcsi.io';

/** Five random characters from [a-z0-9], as the API server's generateName uses. */
export function randomSuffix(): string {
  const alphabet = 'bcdfghjklmnpqrstvwxz2456789';
  return [...randomBytes(5)].map((b) => alphabet[b % alphabet.length]).join('');
}

function notFound(kind: string, name: string, namespace: string): PluginError {
  return new PluginError('NOT_FOUND', `${kind} ${JSON.stringify(name)} not found in namespace ${JSON.stringify(namespace)}`);
}

// ---------------------------------------------------------------- rollback

export interface RollbackOptions {
  pvc: string;
  to: string;
  name?: string | undefined;
  wait: boolean;
  waitTimeoutMs?: number | undefined;
}

function rollbackVerdict(r: VolumeRollback): Verdict | undefined {
  if (r.status?.phase === 'Completed') return { ok: true, message: r.status.message ?? '' };
  if (r.status?.phase === 'Failed') return { ok: false, message: r.status.message ?? 'no message' };
  return undefined;
}

export async function rollback(ctx: CommandContext, o: RollbackOptions): Promise<void> {
  const { client, io } = ctx;
  const ns = client.namespace;
  checkLocalName(o.pvc, 'PVC');
  checkLocalName(o.to, 'VolumeSnapshot');
  if (o.name !== undefined) checkName(o.name, '--name');

  const claim = await client.getPersistentVolumeClaim(ns, o.pvc);
  if (claim === undefined) throw notFound('persistentvolumeclaim', o.pvc, ns);
  const snapshot = await client.getVolumeSnapshot(ns, o.to);
  if (snapshot === undefined) throw notFound('volumesnapshot', o.to, ns);
  const source = snapshot.spec?.source?.persistentVolumeClaimName;
  if (source === undefined || source === '') {
    throw new PluginError(
      'INVALID_ARGUMENT',
      `volumesnapshot ${JSON.stringify(o.to)} has no source PVC (it was pre-provisioned from a VolumeSnapshotContent); a VolumeRollback needs a snapshot taken of the PVC`,
    );
  }
  if (source !== o.pvc) throw new PluginError('INVALID_ARGUMENT', `volumesnapshot ${JSON.stringify(o.to)} is a snapshot of PVC ${JSON.stringify(source)}, not of ${JSON.stringify(o.pvc)}`);

  const name = o.name ?? defaultRollbackName(o.pvc, o.to, (ctx.randomSuffix ?? randomSuffix)());
  const manifest = volumeRollbackManifest(ns, name, o.to);
  const existing = await client.get<VolumeRollback>(VolumeRollbackResource, ns, name);
  if (existing !== undefined && existing.spec.volumeSnapshotName !== o.to) {
    throw new PluginError(
      'ALREADY_EXISTS',
      `${RB} ${JSON.stringify(name)} already exists and rolls back to ${JSON.stringify(existing.spec.volumeSnapshotName)}; its spec is immutable: delete it or choose another --name`,
    );
  }
  await client.apply(VolumeRollbackResource, manifest);
  io.out(`${RB}/${name} ${existing === undefined ? 'created' : 'unchanged'}\n`);
  if (!o.wait) return;
  let lastPhase: string | undefined;
  const verdict = await waitUntil<VolumeRollback>(client, VolumeRollbackResource, ns, name, rollbackVerdict, {
    timeoutMs: o.waitTimeoutMs,
    onProgress: (r) => {
      const phase = r.status?.phase;
      if (phase !== undefined && phase !== lastPhase) {
        lastPhase = phase;
        io.out(`${RB}/${name} ${phase}${r.status?.message ? `: ${r.status.message}` : ''}\n`);
      }
    },
  });
  if (!verdict.ok) throw new PluginError('FAILED', `${RB} ${JSON.stringify(name)} failed: ${verdict.message}`);
  io.out(`${RB}/${name} Completed\n`);
}

// ---------------------------------------------------------------- tx begin

export interface TxBeginOptions {
  name: string;
  pvcs: string[];
  timeoutSeconds?: number | undefined;
  wait: boolean;
  waitTimeoutMs?: number | undefined;
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && [...a].sort().every((x, i) => x === [...b].sort()[i]);
}

export async function txBegin(ctx: CommandContext, o: TxBeginOptions): Promise<void> {
  const { client, io } = ctx;
  const ns = client.namespace;
  const manifest = volumeTransactionManifest(ns, o.name, o.pvcs, o.timeoutSeconds);
  const missing: string[] = [];
  for (const pvc of manifest.spec.persistentVolumeClaims) {
    if ((await client.getPersistentVolumeClaim(ns, pvc)) === undefined) missing.push(pvc);
  }
  if (missing.length === 1) throw notFound('persistentvolumeclaim', missing[0] ?? '', ns);
  if (missing.length > 1) throw new PluginError('NOT_FOUND', `persistentvolumeclaims ${missing.map((m) => JSON.stringify(m)).join(', ')} not found in namespace ${JSON.stringify(ns)}`);

  const existing = await client.get<VolumeTransaction>(VolumeTransactionResource, ns, o.name);
  if (existing !== undefined) {
    if (!sameSet(existing.spec.persistentVolumeClaims, manifest.spec.persistentVolumeClaims)) {
      throw new PluginError(
        'ALREADY_EXISTS',
        `${TX} ${JSON.stringify(o.name)} already exists with PVCs ${existing.spec.persistentVolumeClaims.join(', ')}; its PVCs are immutable: choose another name`,
      );
    }
    if (o.timeoutSeconds !== undefined && existing.spec.timeoutSeconds !== o.timeoutSeconds) {
      throw new PluginError('ALREADY_EXISTS', `${TX} ${JSON.stringify(o.name)} already exists with a timeout of ${existing.spec.timeoutSeconds ?? '?'}s; its timeout is immutable`);
    }
  }
  await client.apply(VolumeTransactionResource, manifest);
  io.out(`${TX}/${o.name} ${existing === undefined ? 'created' : 'unchanged'}\n`);
  if (!o.wait) return;
  await waitForTransaction(ctx, o.name, ['Open', 'Preparing', 'Committed'], o.waitTimeoutMs);
}

// ---------------------------------------------------------------- tx commit / rollback

export interface TxDecideOptions {
  name: string;
  decision: Decision;
  wait: boolean;
  waitTimeoutMs?: number | undefined;
}

export async function txDecide(ctx: CommandContext, o: TxDecideOptions): Promise<void> {
  const { client, io } = ctx;
  const ns = client.namespace;
  checkName(o.name, 'VolumeTransaction name');
  const existing = await client.get<VolumeTransaction>(VolumeTransactionResource, ns, o.name);
  if (existing === undefined) throw notFound('volumetransaction', o.name, ns);
  const current = existing.spec.decision;
  if (current !== undefined && current !== '' && current !== o.decision) {
    throw new PluginError('FAILED_PRECONDITION', `${TX} ${JSON.stringify(o.name)} is already decided: ${current}; a decision cannot be changed or withdrawn`);
  }
  const phase = existing.status?.phase;
  if ((current === undefined || current === '') && (phase === 'Committed' || phase === 'RolledBack' || phase === 'Failed')) {
    const why = existing.status?.message ? `: ${existing.status.message}` : '';
    throw new PluginError('FAILED_PRECONDITION', `${TX} ${JSON.stringify(o.name)} has already ended: ${phase}${why}; it can no longer be decided`);
  }
  if (current === o.decision) {
    io.out(`${TX}/${o.name} unchanged (decision already ${o.decision})\n`);
  } else {
    await client.mergePatch(VolumeTransactionResource, ns, o.name, decisionPatch(o.decision));
    io.out(`${TX}/${o.name} patched (decision ${o.decision})\n`);
  }
  if (!o.wait) return;
  await waitForTransaction(ctx, o.name, [o.decision === 'Commit' ? 'Committed' : 'RolledBack'], o.waitTimeoutMs);
}

async function waitForTransaction(ctx: CommandContext, name: string, goal: readonly string[], timeoutMs: number | undefined): Promise<void> {
  const { client, io } = ctx;
  const ns = client.namespace;
  const failing = ['Committed', 'RollingBack', 'RolledBack', 'Failed'].filter((p) => !goal.includes(p));
  let lastPhase: string | undefined;
  const verdict = await waitUntil<VolumeTransaction>(
    client,
    VolumeTransactionResource,
    ns,
    name,
    (t) => {
      const phase = t.status?.phase;
      if (phase === undefined) return undefined;
      if (goal.includes(phase)) return { ok: true, message: phase };
      if (failing.includes(phase)) return { ok: false, message: `${phase}${t.status?.message ? `: ${t.status.message}` : ''}` };
      return undefined;
    },
    {
      timeoutMs,
      onProgress: (t) => {
        const phase = t.status?.phase;
        if (phase !== undefined && phase !== lastPhase) {
          lastPhase = phase;
          io.out(`${TX}/${name} ${phase}${t.status?.message ? `: ${t.status.message}` : ''}\n`);
        }
      },
    },
  );
  if (!verdict.ok) throw new PluginError('FAILED', `${TX} ${JSON.stringify(name)} did not reach ${goal.join(' or ')}: ${verdict.message}`);
  io.out(`${TX}/${name} ${verdict.message}\n`);
}

// ---------------------------------------------------------------- status

export interface StatusOptions {
  allNamespaces: boolean;
}

export async function status(ctx: CommandContext, o: StatusOptions): Promise<void> {
  const { client, io } = ctx;
  const ns = o.allNamespaces ? undefined : client.namespace;
  const [rollbacks, transactions] = await Promise.all([
    client.list<VolumeRollback>(VolumeRollbackResource, ns),
    client.list<VolumeTransaction>(VolumeTransactionResource, ns),
  ]);
  if (rollbacks.length === 0 && transactions.length === 0) {
    io.err(`No VolumeRollbacks or VolumeTransactions found${ns === undefined ? '' : ` in ${ns} namespace`}.\n`);
    return;
  }
  io.out(renderTable(statusRows(rollbacks, transactions, (ctx.now ?? Date.now)()), o.allNamespaces));
}
