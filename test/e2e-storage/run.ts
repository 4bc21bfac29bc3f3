// `npm run e2e:storage` (scripts/e2e-storage.sh): the upstream storage e2e suite against flashcsi, in
// full. Starts a one-node LocalCluster (test/cluster) with the e2e images, `helm install`s the chart,
// runs prow.sh's three passes (suite.ts) for ext4 and for xfs, and writes every JUnit and JSON report
// plus summary.md / summary.json under .local/e2e-storage/<UTC time>/. Exits non-zero if a spec
// failed or a skip is not explained by test/e2e-storage/skips.yaml.
//
//   node dist/test/e2e-storage/run.js [--fs ext4,xfs] [--passes 1,2,3] [--procs 4] [--suites a,b] [--out DIR]
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { repoRoot } from '../k8s/harness.js';
import { startCluster } from '../cluster/cluster.js';
import { FS_TYPES, PASSES, describeOutcome, loadSkipList, runPass, summaryMarkdown, type FsType, type PassOutcome } from './suite.js';
import { E2E_IMAGE_GROUPS, installForE2e } from './cluster.js';

const { values } = parseArgs({
  options: {
    fs: { type: 'string', default: FS_TYPES.join(',') },
    passes: { type: 'string', default: PASSES.map((p) => p.id).join(',') },
    procs: { type: 'string', default: '4' },
    suites: { type: 'string' },
    out: { type: 'string' },
  },
});
const fsList = (values.fs ?? '').split(',').filter(Boolean) as FsType[];
for (const fs of fsList) if (!FS_TYPES.includes(fs)) throw new Error(`--fs: unknown file system ${fs} (${FS_TYPES.join(', ')})`);
const passes = (values.passes ?? '').split(',').map((p) => {
  const pass = PASSES.find((x) => String(x.id) === p.trim());
  if (pass === undefined) throw new Error(`--passes: no pass ${p} (1, 2, 3)`);
  return pass;
});
const procs = Number(values.procs);
const suites = values.suites?.split(',').filter(Boolean);
const out = values.out ?? join(repoRoot(), '.local', 'e2e-storage', new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, 'Z'));
mkdirSync(out, { recursive: true });

const log = (line: string): void => {
  process.stderr.write(`${line}\n`);
};
const list = loadSkipList();
const started = Date.now();
const cluster = await startCluster({ nodes: 1, log, imageGroups: [...E2E_IMAGE_GROUPS] });
const outcomes: PassOutcome[] = [];
let problems: string[];
try {
  await installForE2e(cluster, log);
  for (const fs of fsList) {
    for (const pass of passes) {
      outcomes.push(await runPass({ kubeconfig: cluster.kubeconfig, fs, pass, dir: out, procs, list, log, ...(suites ? { suites } : {}) }));
      writeFileSync(join(out, 'summary.md'), summaryMarkdown(outcomes));
    }
  }
} finally {
  problems = await cluster.stop();
}
const minutes = ((Date.now() - started) / 60_000).toFixed(1);
const summary = summaryMarkdown(outcomes);
writeFileSync(join(out, 'summary.md'), `${summary}\nWhole run (cluster start to stop): ${minutes} min. Cluster stop: ${problems.length === 0 ? 'clean' : problems.join('; ')}.\n`);
writeFileSync(join(out, 'summary.json'), JSON.stringify({ minutes: Number(minutes), stopProblems: problems, outcomes }, null, 2));
process.stdout.write(summary);
for (const x of outcomes) log(`e2e-storage: ${x.fs} pass ${x.pass.id}: ${describeOutcome(x)}`);
log(`e2e-storage: reports and summary in ${out} (${minutes} min)`);
const bad = outcomes.some((x) => x.failed.length > 0 || x.unexplained.length > 0) || problems.length > 0;
process.exit(bad ? 1 : 0);
