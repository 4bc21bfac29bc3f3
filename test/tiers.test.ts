/**
 * Every test file is in exactly one tier (test/tiers.ts), so `npm run test:unit` and the other
 * tiers together run everything `npm test` runs, and a new test file cannot be forgotten.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { packageRoot } from '../src/csi/package-root.js';
import { TIERS, compiledFiles, testSources, tierOf } from './tiers.js';

describe('test tiers', () => {
  const sources = testSources();

  it('every test file is in a tier (add it to test/tiers.ts: the comment at its top says how)', () => {
    assert.ok(sources.length > 40, `found only ${sources.length} test files: the walk is broken`);
    assert.deepEqual(
      sources.filter((f) => tierOf(f) === undefined),
      [],
    );
  });

  it('every entry names a test file or a folder that holds some', () => {
    for (const tier of TIERS) {
      for (const entry of tier.entries) {
        assert.ok(existsSync(path.join(packageRoot(), entry)), `${tier.name}: ${entry} does not exist`);
        assert.ok(
          sources.some((f) => (entry.endsWith('/') ? f.startsWith(entry) : f === entry)),
          `${tier.name}: ${entry} holds no test file`,
        );
      }
    }
  });

  it('no entry is listed twice, and the tiers together are the whole suite', () => {
    const entries = TIERS.flatMap((t) => t.entries);
    assert.deepEqual(entries.filter((e, i) => entries.indexOf(e) !== i), []);
    const all = compiledFiles(TIERS.map((t) => t.name));
    assert.equal(all.length, sources.length);
    assert.equal(new Set(all).size, all.length);
  });

  it('an unknown tier name is refused', () => {
    assert.throws(() => compiledFiles(['nope']), /no test tier "nope"/);
  });
});
