// The cluster the storage e2e suite runs against: test/cluster's LocalCluster with the suite's images
// imported too, and flashcsi installed by its chart with a volume limit (so that the volumeLimits
// capability has something to check).
import { waitFor } from '../k8s/harness.js';
import type { LocalCluster } from '../cluster/cluster.js';

/** scripts/images.sh groups: the cluster's own, plus the e2e suite's images (agnhost, nginx, glibc-dns-testing). */
export const E2E_IMAGE_GROUPS = ['pause', 'busybox', 'sidecars', 'flashcsi', 'e2e'] as const;

/**
 * node.maxVolumesPerNode for the e2e install: high enough for the parallel passes (each spec holds a
 * few volumes at once), low enough that the [Serial] volume-limits spec, which fills the node up to
 * it, stays quick.
 */
export const E2E_VOLUME_LIMIT = 32;

/** `helm install` as docs/deployment.md says, then waits until the kubelet lists the driver in the node's CSINode. */
export async function installForE2e(cluster: LocalCluster, log: (line: string) => void = () => undefined): Promise<void> {
  const t0 = Date.now();
  await cluster.installFlashcsi({ set: [`node.maxVolumesPerNode=${E2E_VOLUME_LIMIT}`] });
  for (const node of cluster.nodes) {
    await waitFor(
      `CSINode ${node.name} lists flashcsi.io`,
      async () => ((await cluster.kubectl(['get', 'csinode', node.name, '-o', 'jsonpath={.spec.drivers[*].name}'])).includes('flashcsi.io') ? true : undefined),
      { timeoutMs: 120_000, intervalMs: 500 },
    );
  }
  log(`e2e-storage: flashcsi installed and registered in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}
