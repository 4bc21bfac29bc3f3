/**
 * `kubectl flashcsi status`: one table of VolumeRollbacks and VolumeTransactions (kubectl's plain
 * column layout: upper-case headers, columns three spaces apart), each transaction followed by one
 * row per participant.
 */
import type { VolumeRollback, VolumeTransaction } from '../api.js';
import { age } from './duration.js';

export interface StatusRow {
  namespace: string;
  kind: string;
  name: string;
  phase: string;
  target: string;
  age: string;
  detail: string;
}

const NONE = '-';

function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(1)} ${units[i] ?? ''}`;
}

function rollbackRow(r: VolumeRollback, now: number): StatusRow {
  const pvc = r.status?.persistentVolumeClaimName;
  const details: string[] = [];
  if (r.status?.restoredBytes !== undefined) details.push(`restored ${formatBytes(r.status.restoredBytes)}`);
  if (r.status?.node !== undefined && r.status.node !== '') details.push(`node ${r.status.node}`);
  if (r.status?.message !== undefined && r.status.message !== '') details.push(r.status.message);
  return {
    namespace: r.metadata.namespace ?? '',
    kind: 'VolumeRollback',
    name: r.metadata.name,
    phase: r.status?.phase ?? NONE,
    target: `${pvc !== undefined && pvc !== '' ? `pvc/${pvc}` : 'pvc/?'} <- volumesnapshot/${r.spec.volumeSnapshotName}`,
    age: age(r.metadata.creationTimestamp, now),
    detail: details.length > 0 ? details.join('; ') : NONE,
  };
}

function transactionRows(t: VolumeTransaction, now: number): StatusRow[] {
  const namespace = t.metadata.namespace ?? '';
  const decision = t.status?.decision ?? (t.spec.decision !== undefined && t.spec.decision !== '' ? t.spec.decision : undefined);
  const details = [`decision ${decision ?? 'none'}`];
  if (t.status?.deferredSnapshots !== undefined && t.status.deferredSnapshots.length > 0) {
    details.push(`${t.status.deferredSnapshots.length} snapshot(s) deferred`);
  }
  if (t.status?.message !== undefined && t.status.message !== '') details.push(t.status.message);
  const rows: StatusRow[] = [
    {
      namespace,
      kind: 'VolumeTransaction',
      name: t.metadata.name,
      phase: t.status?.phase ?? NONE,
      target: t.spec.persistentVolumeClaims.map((p) => `pvc/${p}`).join(', '),
      age: age(t.metadata.creationTimestamp, now),
      detail: details.join('; '),
    },
  ];
  const byPvc = new Map((t.status?.participants ?? []).map((p) => [p.persistentVolumeClaimName, p]));
  for (const pvc of t.spec.persistentVolumeClaims) {
    const p = byPvc.get(pvc);
    const d: string[] = [];
    if (p?.checkpoint !== undefined && p.checkpoint !== '') d.push(`checkpoint ${p.checkpoint}`);
    if (p?.message !== undefined && p.message !== '') d.push(p.message);
    rows.push({
      namespace,
      kind: '  participant',
      name: pvc,
      phase: p?.state ?? NONE,
      target: p?.node !== undefined && p.node !== '' ? `node/${p.node}` : NONE,
      age: '',
      detail: d.length > 0 ? d.join('; ') : NONE,
    });
  }
  return rows;
}

/** The rows, rollbacks first, each group by namespace then name. */
export function statusRows(rollbacks: readonly VolumeRollback[], transactions: readonly VolumeTransaction[], now: number): StatusRow[] {
  const key = (o: { metadata: { namespace?: string; name: string } }): string => `${o.metadata.namespace ?? ''}\u0000${o.metadata.name}`;
  const rbs = [...rollbacks].sort((a, b) => key(a).localeCompare(key(b)));
  const txs = [...transactions].sort((a, b) => key(a).localeCompare(key(b)));
  return [...rbs.map((r) => rollbackRow(r, now)), ...txs.flatMap((t) => transactionRows(t, now))];
}

/** Renders rows as kubectl prints tables; NAMESPACE only for --all-namespaces. */
export function renderTable(rows: readonly StatusRow[], allNamespaces: boolean): string {
  const headers = [...(allNamespaces ? ['NAMESPACE'] : []), 'KIND', 'NAME', 'PHASE', 'TARGET', 'AGE', 'DETAIL'];
  const cells = rows.map((r) => [...(allNamespaces ? [r.kind.startsWith(' ') ? '' : r.namespace] : []), r.kind, r.name, r.phase, r.target, r.age, r.detail]);
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((c) => (c[i] ?? '').length)));
  const line = (c: readonly string[]): string =>
    c
      .map((v, i) => (i === c.length - 1 ? v : v.padEnd((widths[i] ?? 0) + 3)))
      .join('')
      .trimEnd();
  return [line(headers), ...cells.map(line)].join('\n') + '\n';
}
