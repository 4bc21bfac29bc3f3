/**
 * Strips secrets from CSI messages before they are logged (the job protosanitizer does for Go
 * drivers). Returns a copy; the request itself is never modified.
 *
 * What is redacted, at any depth:
 * - every field marked `[(csi_secret) = true]` in csi.proto. In CSI v1.12.0 all of them are named
 *   `secrets` (test/csi/sanitize.test.ts checks this against proto/csi.proto, so a future spec that
 *   adds a differently named secret field fails the test rather than leaking);
 * - any other map-valued field whose name contains `secret` (e.g. a future `*_secrets` map);
 * - in string maps (`parameters`, `volume_context`, …), the values of keys in the Kubernetes CSI
 *   namespace that name a secret, e.g. `csi.storage.k8s.io/provisioner-secret-name`.
 */
import { REDACTED } from '../log/logger.js';

const SECRET_FIELD = /secret/i;
const SECRET_PARAMETER_KEY = /^csi\.storage\.k8s\.io\/.*secret/i;
const MAX_DEPTH = 32;

export function sanitizeForLog(value: unknown): unknown {
  return sanitize(value, 0);
}

function sanitize(value: unknown, depth: number): unknown {
  if (value === null || typeof value !== 'object') return value;
  if (depth > MAX_DEPTH) return '[TOO DEEP]';
  if (Buffer.isBuffer(value)) return `<${value.length} bytes>`;
  if (Array.isArray(value)) return value.map((v) => sanitize(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) {
    if (key === 'secrets' || (SECRET_FIELD.test(key) && v !== null && typeof v === 'object')) {
      out[key] = REDACTED;
    } else if (SECRET_PARAMETER_KEY.test(key)) {
      out[key] = REDACTED;
    } else {
      out[key] = sanitize(v, depth + 1);
    }
  }
  return out;
}
