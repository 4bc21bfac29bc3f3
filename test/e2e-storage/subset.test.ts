/**
 * CI's share of the upstream Kubernetes storage e2e suite (k8s.io/kubernetes v1.37.2, "External
 * Storage"): the test suites provisioning, snapshottable, volume-expand, volumes, multiVolume and
 * volumeMode, in prow.sh's passes 1 (parallel) and 2 (features: snapshots), ginkgo in parallel
 * against one LocalCluster (test/cluster) with flashcsi installed by its chart, for ext4 (CI_FS_TYPES: xfs
 * would double the time; `npm run e2e:storage` runs it).
 * Each pass must have no failed spec and no skip that test/e2e-storage/skips.yaml does not explain,
 * and must pass specs at all. `npm run e2e:storage` runs all three passes of every suite.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startCluster, type LocalCluster } from '../cluster/cluster.js';
import { E2E_IMAGE_GROUPS, installForE2e } from './cluster.js';
import { CI_FS_TYPES, CI_SUITES, PASSES, describeOutcome, loadSkipList, runPass, summaryMarkdown, type PassOutcome } from './suite.js';

const log = (line: string): void => {
  process.stderr.write(`${line}\n`);
};

describe('storage e2e suite, CI subset', { timeout: 3_600_000 }, () => {
  let cluster: LocalCluster;
  const dir = mkdtempSync(join(tmpdir(), 'flashcsi-e2e-storage-'));
  const list = loadSkipList();
  const outcomes: PassOutcome[] = [];
  const started = Date.now();

  before(async () => {
    cluster = await startCluster({ nodes: 1, log, imageGroups: [...E2E_IMAGE_GROUPS] });
    await installForE2e(cluster, log);
  });

  after(async () => {
    log(summaryMarkdown(outcomes));
    log(`e2e-storage subset: ${((Date.now() - started) / 60_000).toFixed(1)} min with the cluster; reports in ${dir}`);
    const problems = (await cluster?.stop()) ?? [];
    assert.deepEqual(problems, [], 'the cluster stopped with nothing left to force');
  });

  for (const fs of CI_FS_TYPES) {
    for (const pass of PASSES.filter((p) => p.id !== 3)) {
      it(`${fs}, pass ${pass.id} (${pass.name}): ${CI_SUITES.join(', ')}`, async () => {
        const x = await runPass({ kubeconfig: cluster.kubeconfig, fs, pass, dir, procs: 4, suites: CI_SUITES, list, log });
        outcomes.push(x);
        const detail = summaryMarkdown([x]);
        assert.deepEqual(x.failed.map((f) => f.text), [], detail);
        assert.deepEqual(x.unexplained.map((u) => `${u.state}: ${u.text} ${u.message}`), [], detail);
        assert.ok(x.passed.length > 0, `${describeOutcome(x)}: passed specs at all`);
      });
    }
  }
});
