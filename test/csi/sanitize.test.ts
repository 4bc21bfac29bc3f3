import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { packageRoot } from '../../src/csi/package-root.js';
import { sanitizeForLog } from '../../src/csi/sanitize.js';

describe('sanitizeForLog', () => {
  it('success case - every csi_secret field in proto/csi.proto is named "secrets" (the sanitizer relies on it)', () => {
    const proto = readFileSync(join(packageRoot(), 'proto', 'csi.proto'), 'utf8');
    const fields = [...proto.matchAll(/(\w+)\s*=\s*\d+\s*\[[^\]]*\(csi_secret\)\s*=\s*true/g)].map((m) => m[1]);
    assert.ok(fields.length >= 19, `found only ${fields.length} csi_secret fields`);
    assert.deepEqual([...new Set(fields)], ['secrets']);
  });

  it('success case - secrets maps at any depth, *secret* maps and secret parameter keys are redacted', () => {
    const input = {
      name: 'vol',
      secrets: { password: 'p1' },
      parameters: { grainSize: '65536', 'csi.storage.k8s.io/node-stage-secret-name': 'p2', 'csi.storage.k8s.io/pvc/name': 'keep' },
      nested: [{ secrets: { token: 'p3' } }, { deeper: { secrets: { k: 'p4' } } }],
      controller_expand_secrets: { key: 'p5' },
      secret_hint: 'a plain string field is kept',
    };
    const out = sanitizeForLog(input);
    const text = JSON.stringify(out);
    for (const secret of ['p1', 'p2', 'p3', 'p4', 'p5']) assert.ok(!text.includes(`"${secret}"`), `${secret} leaked: ${text}`);
    assert.ok(text.includes('"keep"'));
    assert.ok(text.includes('"65536"'));
    assert.ok(text.includes('a plain string field is kept'));
    assert.deepEqual(input.secrets, { password: 'p1' }, 'the input is not modified');
  });

  it('success case - primitives and buffers', () => {
    assert.equal(sanitizeForLog('x'), 'x');
    assert.equal(sanitizeForLog(null), null);
    assert.equal(sanitizeForLog(Buffer.alloc(3)), '<3 bytes>');
  });
});
