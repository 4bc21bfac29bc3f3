/**
 * The objects kubectl-flashcsi writes, built exactly as a user would write them in a YAML file for
 * `kubectl apply`: apiVersion, kind, metadata.name/namespace and the spec fields the user chose, and
 * nothing else (no status, no defaults the API server fills in, no labels).
 */
import { API_VERSION, type Decision } from '../api.js';
import { PluginError } from './errors.js';

/** The shape of a VolumeRollback manifest. */
export interface VolumeRollbackManifest {
  apiVersion: typeof API_VERSION;
  kind: 'VolumeRollback';
  metadata: { name: string; namespace: string };
  spec: { volumeSnapshotName: string };
}

/** The shape of a VolumeTransaction manifest. */
export interface VolumeTransactionManifest {
  apiVersion: typeof API_VERSION;
  kind: 'VolumeTransaction';
  metadata: { name: string; namespace: string };
  spec: { persistentVolumeClaims: string[]; timeoutSeconds?: number };
}

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

/** Checks an object name the way the API server will (DNS-1123 subdomain), with a clearer message. */
export function checkName(name: string, what: string): string {
  if (name.length === 0 || name.length > 253 || !DNS_SUBDOMAIN.test(name)) {
    throw new PluginError(
      'INVALID_ARGUMENT',
      `${what} ${JSON.stringify(name)} is not a valid object name (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters)`,
    );
  }
  return name;
}

/** Checks a name the user meant to be in this namespace: "ns/name" is refused, like the CRDs do. */
export function checkLocalName(name: string, what: string): string {
  if (name.includes('/')) {
    throw new PluginError('INVALID_ARGUMENT', `${what} ${JSON.stringify(name)}: must name an object in this namespace; cross-namespace references are not allowed`);
  }
  return checkName(name, what);
}

/**
 * The default name of a VolumeRollback: "<pvc>-to-<snapshot>-<suffix>" (the prefix shortened so the
 * whole fits 253 characters). A rollback is an action, not a state: the suffix makes every invocation
 * a new object, so rolling back to the same snapshot again later is not mistaken for the finished one.
 */
export function defaultRollbackName(pvc: string, snapshot: string, suffix: string): string {
  const prefix = `${pvc}-to-${snapshot}`.slice(0, 253 - suffix.length - 1).replace(/[-.]+$/, '');
  return `${prefix}-${suffix}`;
}

export function volumeRollbackManifest(namespace: string, name: string, snapshot: string): VolumeRollbackManifest {
  return {
    apiVersion: API_VERSION,
    kind: 'VolumeRollback',
    metadata: { name: checkName(name, 'VolumeRollback name'), namespace },
    spec: { volumeSnapshotName: checkLocalName(snapshot, 'VolumeSnapshot') },
  };
}

export function volumeTransactionManifest(
  namespace: string,
  name: string,
  pvcs: readonly string[],
  timeoutSeconds: number | undefined,
): VolumeTransactionManifest {
  if (pvcs.length === 0) throw new PluginError('INVALID_ARGUMENT', 'a transaction needs at least one --pvc');
  const unique = [...new Set(pvcs)];
  if (unique.length !== pvcs.length) throw new PluginError('INVALID_ARGUMENT', `--pvc names a PVC twice: ${pvcs.filter((p, i) => pvcs.indexOf(p) !== i).join(', ')}`);
  if (unique.length > 64) throw new PluginError('INVALID_ARGUMENT', `a transaction takes at most 64 PVCs, got ${unique.length}`);
  for (const p of unique) checkLocalName(p, 'PVC');
  if (timeoutSeconds !== undefined && (timeoutSeconds < 1 || timeoutSeconds > 604800)) {
    throw new PluginError('INVALID_ARGUMENT', `--timeout must be between 1s and 168h (604800s), got ${timeoutSeconds}s`);
  }
  return {
    apiVersion: API_VERSION,
    kind: 'VolumeTransaction',
    metadata: { name: checkName(name, 'VolumeTransaction name'), namespace },
    spec: { persistentVolumeClaims: unique, ...(timeoutSeconds === undefined ? {} : { timeoutSeconds }) },
  };
}

/** The merge patch that records a decision: what `kubectl patch vtx NAME --type merge` would send. */
export function decisionPatch(decision: Decision): { spec: { decision: Decision } } {
  return { spec: { decision } };
}
