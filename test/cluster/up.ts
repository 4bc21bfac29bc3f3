// `npm start` (scripts/start.sh): a one-node cluster with flashcsi installed by its chart, until Ctrl-C.
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot, toolPath } from '../k8s/harness.js';
import { startCluster } from './cluster.js';

const log = (line: string): void => {
  process.stderr.write(`${line}\n`);
};
const started = Date.now();
const cluster = await startCluster({ nodes: 1, log });
let stopping = false;
const stop = async (signal: string): Promise<void> => {
  if (stopping) return;
  stopping = true;
  log(`\n${signal}: removing every pod, stopping the node and the control plane…`);
  const problems = await cluster.stop();
  for (const p of problems) log(`stop: ${p}`);
  log('stopped; nothing left behind.');
  process.exit(problems.length > 0 ? 1 : 0);
};
process.once('SIGINT', () => void stop('SIGINT'));
process.once('SIGTERM', () => void stop('SIGTERM'));
try {
  log('installing flashcsi: helm install flashcsi charts/flashcsi --namespace flashcsi --wait');
  await cluster.installFlashcsi();
} catch (err) {
  log(`helm install failed: ${err instanceof Error ? err.message : String(err)}`);
  await stop('error');
}
// A stable place for the kubeconfig and the pinned kubectl, for the user's other terminals.
const local = join(repoRoot(), '.local');
mkdirSync(join(local, 'bin'), { recursive: true, mode: 0o700 });
const kubeconfig = join(local, 'kubeconfig');
copyFileSync(cluster.kubeconfig, kubeconfig);
copyFileSync(toolPath('kubectl'), join(local, 'bin', 'kubectl'));
process.stdout.write(`
flashcsi is running on a one-node cluster (up in ${Math.round((Date.now() - started) / 1000)} s). In another terminal:

    export KUBECONFIG=${kubeconfig} PATH=${join(local, 'bin')}:$PATH
    kubectl get nodes
    kubectl -n flashcsi get pods
    kubectl get csinode ${cluster.nodes[0]?.name ?? ''} -o jsonpath='{.spec.drivers[*].name}'
    kubectl apply -f examples/1-pvc-pod.yaml        # then examples/README.md

Ctrl-C here stops the cluster and removes everything it made.
`);
