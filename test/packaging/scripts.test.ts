// Static checks of the repository's shell scripts and tracked files: every script parses (bash -n),
// and no tracked file holds a merge's conflict markers (one once reached scripts/torture.sh, which
// no CI test runs, and broke `npm run torture` without any test noticing).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './helpers.js';

test('every shell script parses', () => {
  const scripts = [...readdirSync(join(ROOT, 'scripts')).filter((f) => f.endsWith('.sh')).map((f) => join('scripts', f)), '.ci/run'];
  assert.ok(scripts.length > 5, `only ${scripts.length} scripts found`);
  for (const script of scripts) {
    const r = spawnSync('bash', ['-n', script], { cwd: ROOT, encoding: 'utf8' });
    assert.equal(r.status, 0, `${script} does not parse: ${r.stderr}`);
  }
});

test('no tracked file holds merge conflict markers', () => {
  // git grep exits 1 when nothing matches.
  const r = spawnSync('git', ['grep', '-nE', '^(<<<<<<< |>>>>>>> |=======$)', '--', '.', ':!node_modules'], { cwd: ROOT, encoding: 'utf8' });
  assert.equal(r.status, 1, `conflict markers:\n${r.stdout}${r.stderr}`);
  assert.equal(execFileSync('git', ['rev-parse', '--is-inside-work-tree'], { cwd: ROOT, encoding: 'utf8' }).trim(), 'true');
});
