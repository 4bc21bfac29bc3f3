// A local Kubernetes cluster of real processes, for tests, `npm start` and the storage e2e suite:
// etcd, kube-apiserver, kube-controller-manager, kube-scheduler and the snapshot-controller on the
// host; one or two nodes (node.ts), each a kubelet + containerd + runc in its own network and mount
// namespace; the images built by scripts/images.sh imported into every node's containerd.
//
//   const c = await startCluster({ nodes: 2 });
//   await c.kubectl(['get', 'nodes']);
//   await c.installFlashcsi();                 // helm install of charts/flashcsi, as docs/deployment.md says
//   …
//   await c.stop();                            // pods removed first, then the nodes, then the control plane
//
// Clusters coexist: each takes a free slot S (a lock file per slot) and uses its own addresses
// (API server 10.213.S.1:443 on the host's lo, node k at 10.213.S.(100+k), pods 10.214.S.(32k)/27),
// interfaces (fcsi<S>n<k>), cgroup roots and temp directory.
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmdirSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api, PatchStrategy, setHeaderOptions, type KubeConfig, type V1Node } from '@kubernetes/client-node';
import {
  applySnapshotCrds,
  freePort,
  repoRoot,
  requireTools,
  startControlPlane,
  startProcess,
  startSnapshotController,
  toolPath,
  waitFor,
  type ControlPlane,
  type ManagedProcess,
} from '../k8s/harness.js';
import { ClusterNode, run, type RunOptions } from './node.js';

/** The tools a cluster runs (scripts/go-tools.sh --tier cluster builds them; helm is asked for when used). */
export const CLUSTER_TOOLS = [
  'etcd', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kubelet', 'kubectl', 'containerd',
  'containerd-shim-runc-v2', 'ctr', 'runc', 'crictl', 'snapshot-controller',
];
export const PAUSE_IMAGE = 'registry.k8s.io/pause:3.10.2';
/** The busybox the tests and examples run (Debian's busybox-static, imported under this name). */
export const BUSYBOX_IMAGE = 'docker.io/library/busybox:1.36';
export const NODE_NAMES = ['node-a', 'node-b'] as const;
export const RELEASE_NAMESPACE = 'flashcsi';

export interface ClusterOptions {
  /** 1 (default) or 2 nodes. */
  readonly nodes?: 1 | 2;
  /** Deadline for each start-up step (default 180 s). */
  readonly timeoutMs?: number;
  /** Keep the directory (logs) after stop(); also FLASHCSI_KEEP_CLUSTER=1. */
  readonly keepDir?: boolean;
  /** Progress lines (default: none). */
  readonly log?: (line: string) => void;
  /** scripts/images.sh groups to build and import (default all: pause busybox sidecars flashcsi). */
  readonly imageGroups?: string[];
}

export interface LocalCluster {
  readonly slot: number;
  readonly dir: string;
  readonly cp: ControlPlane;
  /** Admin kubeconfig (token; the CA embedded). */
  readonly kubeconfig: string;
  readonly nodes: ClusterNode[];
  readonly scheduler: ManagedProcess;
  /** Seconds each start-up phase took. */
  readonly timings: Record<string, number>;
  kubeConfig(): KubeConfig;
  /** The pinned kubectl against this cluster; resolves stdout. */
  kubectl(args: string[], opts?: RunOptions): Promise<string>;
  /** The pinned helm against this cluster. */
  helm(args: string[], opts?: { timeoutMs?: number }): Promise<string>;
  /**
   * Installs flashcsi as docs/deployment.md says: namespace `flashcsi` labelled privileged, then
   * `helm install flashcsi charts/flashcsi --wait`; `set` adds --set flags.
   */
  installFlashcsi(opts?: { set?: string[]; timeoutMs?: number }): Promise<void>;
  /** Log tails of every process. */
  logs(lines?: number): string;
  /** Removes every pod, stops the nodes and the control plane, removes everything; returns what had to be forced. */
  stop(): Promise<string[]>;
}

const SLOTS_DIR = join(tmpdir(), 'flashcsi-cluster-slots');
const MAX_SLOTS = 32;

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Takes the lowest free slot: a file holding our pid, created exclusively; a dead owner's file is taken over. */
function takeSlot(): { slot: number; release: () => void } {
  mkdirSync(SLOTS_DIR, { recursive: true });
  for (let slot = 0; slot < MAX_SLOTS; slot++) {
    const file = join(SLOTS_DIR, String(slot));
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fd = openSync(file, 'wx');
        writeFileSync(fd, String(process.pid));
        closeSync(fd);
        return {
          slot,
          release: () => {
            rmSync(file, { force: true });
            try {
              rmdirSync(SLOTS_DIR);
            } catch {
              // other clusters still hold slots
            }
          },
        };
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        const owner = Number(readFileSync(file, 'utf8'));
        if (Number.isInteger(owner) && owner > 0 && pidAlive(owner)) break;
        unlinkSync(file); // its cluster died without stopping; its interfaces are swept below
      }
    }
  }
  throw new Error(`no free cluster slot in ${SLOTS_DIR} (${MAX_SLOTS} in use)`);
}

/** Attached loop devices and their backing files (as sysfs shows them). */
function loopDevices(): Map<string, string> {
  const out = new Map<string, string>();
  for (const name of readdirSync('/sys/block').filter((n) => n.startsWith('loop'))) {
    try {
      out.set(`/dev/${name}`, readFileSync(`/sys/block/${name}/loop/backing_file`, 'utf8').trim());
    } catch {
      // not attached
    }
  }
  return out;
}

/**
 * Before the kubelets stop: cordon every node (controllers' replacements stay Pending) and delete every
 * pod that uses a PVC, so that each kubelet unpublishes and unstages its volumes through the CSI
 * driver, which is still running; wait until they are gone.
 */
async function removeVolumePods(cp: ControlPlane): Promise<string[]> {
  const core = cp.kubeConfig().makeApiClient(CoreV1Api);
  try {
    for (const n of (await core.listNode()).items) {
      await core.patchNode({ name: n.metadata?.name ?? '', body: { spec: { unschedulable: true } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
    }
    const withVolumes = async (): Promise<Array<{ ns: string; name: string }>> =>
      (await core.listPodForAllNamespaces()).items
        .filter((p) => p.spec?.nodeName && (p.spec.volumes ?? []).some((v) => v.persistentVolumeClaim || v.ephemeral))
        .map((p) => ({ ns: p.metadata?.namespace ?? '', name: p.metadata?.name ?? '' }));
    for (const p of await withVolumes()) await core.deleteNamespacedPod({ namespace: p.ns, name: p.name, gracePeriodSeconds: 1 }).catch(() => undefined);
    await waitFor('pods with volumes gone (their volumes unstaged)', async () => ((await withVolumes()).length === 0 ? true : undefined), { timeoutMs: 180_000, intervalMs: 500 });
    return [];
  } catch (e) {
    return [`removing the pods with volumes before the nodes stop: ${(e as Error).message}`];
  }
}

/** How many other clusters hold a slot now. */
function otherSlotsHeld(slot: number): number {
  try {
    return readdirSync(SLOTS_DIR).filter((f) => f !== String(slot)).length;
  } catch {
    return 0;
  }
}

async function linkExists(name: string): Promise<boolean> {
  return existsSync(`/sys/class/net/${name}`);
}

/** Starts a cluster; throws MissingToolsError when a pinned tool is not built. */
export async function startCluster(opts: ClusterOptions = {}): Promise<LocalCluster> {
  requireTools(...CLUSTER_TOOLS);
  const log = opts.log ?? (() => undefined);
  const timeoutMs = opts.timeoutMs ?? 180_000;
  const keep = opts.keepDir === true || process.env['FLASHCSI_KEEP_CLUSTER'] === '1';
  const { slot, release } = takeSlot();
  const apiAddress = `10.213.${slot}.1`;
  const dir = await mkdtemp('/tmp/fcsi-c-');
  const timings: Record<string, number> = {};
  const stopped: string[] = [];
  let cp: ControlPlane | undefined;
  const nodes: ClusterNode[] = [];
  let scheduler: ManagedProcess | undefined;
  const phase = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
    const t0 = Date.now();
    const v = await fn();
    timings[name] = (Date.now() - t0) / 1000;
    log(`cluster: ${name} in ${timings[name]?.toFixed(1)} s`);
    return v;
  };

  // The chart's node pod mounts /lib/modules with DirectoryOrCreate: on a host without it (as here)
  // the kubelet makes it. It is removed again if this cluster was the one that needed it.
  const libModulesWasThere = existsSync('/lib/modules');
  const loopsAtStart = new Set(loopDevices().keys());
  const stop = async (): Promise<string[]> => {
    if (stopped.length > 0 && stopped[0] === 'stopped') return [];
    stopped.push('stopped');
    const problems: string[] = [];
    if (cp && nodes.length > 0) problems.push(...(await removeVolumePods(cp)));
    for (const n of [...nodes].reverse()) problems.push(...(await n.stop()));
    // A loop device made during this cluster's life whose backing file is gone from every mount
    // namespace (a volume left staged in a node that has ended) is detached, and reported.
    if (otherSlotsHeld(slot) === 0) {
      for (const [dev, backing] of loopDevices()) {
        if (loopsAtStart.has(dev) || existsSync(backing)) continue;
        problems.push(`detached ${dev}, left attached to ${backing} in an ended node`);
        await run('losetup', ['-d', dev]).catch((e: Error) => problems.push(e.message));
      }
    }
    if (!libModulesWasThere && existsSync('/lib/modules') && readdirSync('/lib/modules').length === 0 && otherSlotsHeld(slot) === 0) {
      rmdirSync('/lib/modules');
    }
    await scheduler?.stop();
    await cp?.stop();
    for (const n of nodes) if (await linkExists(n.spec.hostIf)) await run('ip', ['link', 'del', n.spec.hostIf]).catch(() => undefined);
    await run('ip', ['addr', 'del', `${apiAddress}/32`, 'dev', 'lo']).catch((e: Error) => problems.push(e.message));
    if (!keep) rmSync(dir, { recursive: true, force: true });
    release();
    return problems;
  };

  try {
    // Interfaces and the address left by a cluster of this slot that died without stopping.
    for (const name of [`fcsi${slot}n0`, `fcsi${slot}n1`]) if (await linkExists(name)) await run('ip', ['link', 'del', name]);
    await run('ip', ['addr', 'del', `${apiAddress}/32`, 'dev', 'lo']).catch(() => undefined);
    // The API server's address, held by the host (on lo: no dummy interfaces here); nodes route to it.
    await run('ip', ['addr', 'add', `${apiAddress}/32`, 'dev', 'lo']);

    const images = await phase('images', async () => {
      const out = await run(join(repoRoot(), 'scripts', 'images.sh'), opts.imageGroups ?? [], { timeoutMs: 3_600_000 });
      return out.split('\n').filter(Boolean).map((l) => l.split(' ')[1] ?? '');
    });

    cp = await phase('control plane', () =>
      startControlPlane({
        controllerManager: true,
        cluster: { address: apiAddress, serviceClusterIPRange: `10.213.${slot}.0/28` },
        parentDir: dir,
        keepDir: keep,
        readyTimeoutMs: timeoutMs,
      }),
    );
    const controlPlane = cp;
    scheduler = await phase('scheduler', () => startScheduler(controlPlane, timeoutMs));
    await phase('snapshot CRDs + controller', async () => {
      await applySnapshotCrds(controlPlane);
      await startSnapshotController(controlPlane, { args: ['--enable-distributed-snapshotting'] });
    });

    const count = opts.nodes ?? 1;
    await phase(`${count} node(s)`, async () => {
      for (let k = 0; k < count; k++) {
        const name = NODE_NAMES[k] ?? `node-${k}`;
        const nodeDir = join(dir, `n${k}`);
        mkdirSync(nodeDir);
        const node = new ClusterNode(
          {
            name,
            dir: nodeDir,
            ip: `10.213.${slot}.${100 + k}`,
            hostIf: `fcsi${slot}n${k}`,
            apiAddress,
            podCidr: `10.214.${slot}.${32 * k}/27`,
            cgroupRoot: `flashcsi-c${slot}-n${k}`,
            sandboxImage: PAUSE_IMAGE,
          },
          controlPlane,
        );
        nodes.push(node);
        await node.start({ images, timeoutMs });
      }
      const core = controlPlane.kubeConfig().makeApiClient(CoreV1Api);
      await waitFor(
        `${count} node(s) Ready`,
        async () => {
          const list = await core.listNode();
          const ready = list.items.filter((n: V1Node) => n.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'));
          return ready.length === count ? true : undefined;
        },
        { timeoutMs, intervalMs: 500, watch: nodes.flatMap((n) => [n.kubelet, n.containerd]) },
      );
    });

    const kubectl = (args: string[], o: RunOptions = {}): Promise<string> =>
      run(toolPath('kubectl'), [`--kubeconfig=${controlPlane.kubeconfig}`, ...args], o);
    const helm = (args: string[], o: { timeoutMs?: number } = {}): Promise<string> =>
      run(toolPath('helm'), [`--kubeconfig=${controlPlane.kubeconfig}`, ...args], { timeoutMs: o.timeoutMs ?? 600_000 });
    const sched = scheduler;
    return {
      slot,
      dir,
      cp: controlPlane,
      kubeconfig: controlPlane.kubeconfig,
      nodes,
      scheduler: sched,
      timings,
      kubeConfig: () => controlPlane.kubeConfig(),
      kubectl,
      helm,
      async installFlashcsi(o = {}) {
        await kubectl(['create', 'namespace', RELEASE_NAMESPACE]);
        await kubectl(['label', 'namespace', RELEASE_NAMESPACE, 'pod-security.kubernetes.io/enforce=privileged']);
        await helm(
          ['install', 'flashcsi', join(repoRoot(), 'charts', 'flashcsi'), '--namespace', RELEASE_NAMESPACE, '--wait', `--timeout=${Math.round((o.timeoutMs ?? 300_000) / 1000)}s`, ...(o.set ?? []).flatMap((s) => ['--set', s])],
          { timeoutMs: (o.timeoutMs ?? 300_000) + 30_000 },
        );
      },
      logs: (lines = 30) =>
        [controlPlane.logs(lines), `--- scheduler:\n${sched.logTail(lines)}`, ...nodes.flatMap((n) => [n.containerd, n.kubelet].map((p) => `--- ${p.name}:\n${p.logTail(lines)}`))].join('\n'),
      stop,
    };
  } catch (e) {
    const problems = await stop().catch((err: unknown) => [String(err)]);
    if (e instanceof Error) e.message += `${problems.length ? `\n(stop: ${problems.join('; ')})` : ''}${keep ? `\n(kept ${dir})` : '\n(set FLASHCSI_KEEP_CLUSTER=1 to keep the logs)'}`;
    throw e;
  }
}

async function startScheduler(cp: ControlPlane, timeoutMs: number): Promise<ManagedProcess> {
  const port = await freePort();
  const proc = startProcess(
    'kube-scheduler',
    toolPath('kube-scheduler'),
    [
      `--kubeconfig=${cp.kubeconfig}`,
      `--authentication-kubeconfig=${cp.kubeconfig}`,
      `--authorization-kubeconfig=${cp.kubeconfig}`,
      '--bind-address=127.0.0.1',
      `--secure-port=${port}`,
      '--leader-elect=false',
      '--v=1',
    ],
    { logFile: join(cp.dir, 'kube-scheduler.log') },
  );
  cp.adopt(proc);
  await waitFor(
    'kube-scheduler /healthz',
    async () => {
      const out = await run('curl', ['-sk', `https://127.0.0.1:${port}/healthz`], { timeoutMs: 5000 });
      return out.trim() === 'ok' ? true : undefined;
    },
    { timeoutMs, intervalMs: 200, watch: [proc] },
  );
  return proc;
}
