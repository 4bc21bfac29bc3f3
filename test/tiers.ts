/**
 * The test tiers: every test file (`*.test.ts` under src/, test/ or bench/) belongs to exactly one,
 * chosen by what it needs. tiers.test.ts fails when a test file is in no tier or in two, or when an
 * entry names nothing. test/README.md says what each tier needs and how long it takes.
 *
 * Adding a test file: if its folder is listed below with a trailing `/`, it is in that tier
 * already; otherwise add its path (or its new folder, with a trailing `/`) to the first tier
 * whose needs cover it. An entry is a path from the repository root; the longest matching entry
 * wins, so one file can sit in another tier than the rest of its folder.
 *
 *   scripts/test.sh             lint, build, then every tier
 *   scripts/test.sh TIER…       build, then those tiers (npm run test:unit = scripts/test.sh unit)
 *   node dist/test/tiers.js TIER…   print the compiled test files of those tiers
 */
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { packageRoot } from '../src/csi/package-root.js';

export interface Tier {
  readonly name: string;
  /** What its tests need beyond the tiers before it. */
  readonly needs: string;
  /** Paths from the repository root: a file, or a folder ending in `/`. */
  readonly entries: readonly string[];
}

export const TIERS: readonly Tier[] = [
  {
    name: 'unit',
    needs: 'Node and the npm packages only: no root, no Debian peers, no Go tool, no cluster, no network',
    entries: [
      'test/tiers.test.ts',
      'test/cli/',
      'test/errors/',
      'test/engine/',
      'test/nbd/',
      'test/csi/',
      'test/host/mountinfo.test.ts',
      'test/host/serve-process.test.ts',
      'test/fuse/wire.test.ts',
      'test/fuse/stats.test.ts',
      'test/k8s/transaction-plan.test.ts',
      'test/k8s/agent-start.test.ts',
      'test/k8s/snapshot-contents.test.ts',
      'test/metrics/metrics.test.ts',
      'test/packaging/kubectl-plugin-unit.test.ts',
      'test/packaging/dockerfile.test.ts',
      'test/packaging/scripts.test.ts',
    ],
  },
  {
    name: 'host',
    needs:
      'root, /dev/fuse and loop devices, the Debian peers scripts/setup.sh installs (nbdfuse, nbd-client, qemu-nbd, nbdkit, fio, mkfs); ' +
      'test/kernel/ also qemu-system-x86 and the guest scripts/guest-build.sh caches (Debian kernel + initramfs, run under TCG)',
    entries: [
      'test/host/',
      'test/fuse/',
      'test/kernel/',
      'test/serve/',
      'test/reliability/',
      'test/nbd/interop.test.ts',
      'test/csi/plugin-data.test.ts',
      'test/csi/restart.test.ts',
      'test/csi/group-snapshot.test.ts',
      'test/csi/snapshot-metadata.test.ts',
      'test/csi/unstage-held.test.ts',
      'test/metrics/plugin.test.ts',
    ],
  },
  {
    name: 'tools',
    needs: 'the pinned Go tools scripts/go-tools.sh builds (csi-sanity, grpcurl, helm, e2e.test), no cluster',
    entries: [
      'test/csi-sanity/',
      'test/csi/grpcurl.test.ts',
      'test/csi/readme.test.ts',
      'test/packaging/chart.test.ts',
      'test/e2e-storage/driver.test.ts',
      'test/e2e-storage/skips.test.ts',
    ],
  },
  {
    name: 'cluster',
    needs:
      'a real control plane from the pinned Go tools (etcd, kube-apiserver, kube-controller-manager, kubectl, the CSI sidecars); ' +
      'test/cluster/ and test/e2e-storage/ also a kubelet, containerd, runc and the images scripts/images.sh builds (the latter also e2e.test and ginkgo)',
    entries: [
      'test/cluster/',
      'test/e2e-storage/',
      'test/k8s/control-plane.test.ts',
      'test/k8s-e2e/',
      'test/metrics/coordinator.test.ts',
      'test/packaging/apiserver.test.ts',
      'test/packaging/kubectl-plugin.test.ts',
    ],
  },
];

/** Every test source file of the repository, as a path from the root. */
export function testSources(root = packageRoot()): string[] {
  const out: string[] = [];
  const walk = (rel: string): void => {
    for (const e of readdirSync(path.join(root, rel), { withFileTypes: true })) {
      const p = `${rel}/${e.name}`;
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.test.ts')) out.push(p);
    }
  };
  for (const top of ['src', 'test', 'bench']) walk(top);
  return out.sort();
}

/** The tier a test file is in: the one with the longest entry that matches it; undefined if none. */
export function tierOf(file: string): Tier | undefined {
  let best: { tier: Tier; length: number } | undefined;
  for (const tier of TIERS) {
    for (const entry of tier.entries) {
      const matches = entry.endsWith('/') ? file.startsWith(entry) : file === entry;
      if (matches && entry.length > (best?.length ?? -1)) best = { tier, length: entry.length };
    }
  }
  return best?.tier;
}

/** The compiled test files (dist/…/*.test.js) of the named tiers, in tier order. */
export function compiledFiles(names: readonly string[], root = packageRoot()): string[] {
  for (const n of names) if (!TIERS.some((t) => t.name === n)) throw new Error(`no test tier ${JSON.stringify(n)} (tiers: ${TIERS.map((t) => t.name).join(', ')})`);
  const sources = testSources(root);
  return TIERS.filter((t) => names.includes(t.name)).flatMap((t) =>
    sources.filter((f) => tierOf(f) === t).map((f) => path.join('dist', f.replace(/\.ts$/, '.js'))),
  );
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const names = process.argv.slice(2);
  process.stdout.write(`${compiledFiles(names.length > 0 ? names : TIERS.map((t) => t.name)).join('\n')}\n`);
}
