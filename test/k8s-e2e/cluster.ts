// The end-to-end cluster: a real control plane (etcd + kube-apiserver + kube-controller-manager,
// test/k8s/harness.ts), the snapshot CRDs and our CRDs, the real snapshot-controller with distributed
// snapshotting, and two "nodes", each a real `flashcsi plugin --mode all --agent` with the real
// csi-provisioner and csi-snapshotter in node-deployment mode on its socket, plus leader-elected
// `flashcsi coordinator` processes (a leader and a standby). No kubelet and no scheduler: the harness
// plays them (kubelet.ts: Node/CSINode registration and the CSI node calls; the PVC's selected-node
// annotation is set by the tests).
//
// Like a kubelet restarting crashed containers, sidecars and coordinators that exit unexpectedly are
// started again (the sidecars exit on purpose when the plugin's socket goes away).
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoordinationV1Api, CoreV1Api, CustomObjectsApi, StorageV1Api, type KubeConfig, type V1Lease } from '@kubernetes/client-node';
import { DRIVER_NAME, TOPOLOGY_NODE_KEY } from '../../src/constants.js';
import { clients } from '../csi/helpers.js';
import { assertNothingLeft, probeReady, sweep } from '../csi/plugin-process.js';
import { applyFlashcsiCrds } from '../packaging/helpers.js';
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
import { Kubelet } from './kubelet.js';
import { observe } from './observe.js';

export const DRIVER = DRIVER_NAME;
export const TOPOLOGY_KEY = TOPOLOGY_NODE_KEY;
export const STORAGE_CLASS = 'flashcsi';
export const SNAPSHOT_CLASS = 'flashcsi';
export const LEASE_NAMESPACE = 'kube-system';
export const LEASE_NAME = 'flashcsi-coordinator';
/** Short, so that a standby takes over a SIGKILLed leader's Lease quickly. */
export const LEASE_SECONDS = 4;
export const FLASHCSI = join(repoRoot(), 'dist', 'cmd', 'flashcsi.js');

/** A process restarted whenever it exits unexpectedly, as a kubelet restarts a crashed container. */
export class Supervised {
  private stopped = false;
  restarts = 0;
  current: ManagedProcess;

  constructor(
    readonly name: string,
    private readonly spawn: () => ManagedProcess,
    private readonly restartDelayMs = 300,
  ) {
    this.current = this.launch();
  }

  private launch(): ManagedProcess {
    const p = this.spawn();
    void p.exited.then(() => {
      if (this.stopped || p !== this.current) return;
      this.restarts++;
      // Restart back-off, as a kubelet's: not a synchronisation point of any test.
      setTimeout(() => {
        if (!this.stopped && p === this.current) this.current = this.launch();
      }, this.restartDelayMs);
    });
    return p;
  }

  /** No more restarts (the caller kills the process itself). */
  forget(): void {
    this.stopped = true;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.current.stop(3000);
  }
}

/** One "node": its plugin process (with the node agent), its sidecars, and a kubelet stand-in. */
export class NodeHost {
  readonly dir: string;
  readonly stateDir: string;
  readonly socket: string;
  plugin!: ManagedProcess;
  private generation = 0;
  private csiClients: ReturnType<typeof clients> | undefined;
  readonly sidecars: Supervised[] = [];
  readonly kubelet: Kubelet;

  constructor(
    readonly name: string,
    root: string,
    private readonly cluster: Cluster,
  ) {
    this.dir = join(root, name);
    this.stateDir = join(this.dir, 'state');
    this.socket = join(this.dir, 'csi.sock');
    mkdirSync(this.dir, { recursive: true });
    this.kubelet = new Kubelet(this, cluster.kc);
  }

  /** Real CSI clients on this node's socket (new ones after every plugin restart). */
  csi(): ReturnType<typeof clients> {
    this.csiClients ??= clients(this.socket);
    return this.csiClients;
  }

  /** Starts `flashcsi plugin --mode all --agent` and waits until Probe reports ready. */
  async startPlugin(): Promise<void> {
    this.csiClients?.close();
    this.csiClients = undefined;
    this.generation++;
    this.plugin = startProcess(
      `plugin-${this.name}#${this.generation}`,
      process.execPath,
      [
        FLASHCSI,
        'plugin',
        '--mode=all',
        `--endpoint=unix://${this.socket}`,
        `--state-dir=${this.stateDir}`,
        `--node-id=${this.name}`,
        '--agent',
        `--kubeconfig=${this.cluster.cp.kubeconfig}`,
        '--drain-timeout=2000',
        '--log-level=debug',
      ],
      { logFile: join(this.dir, 'plugin.log') },
    );
    this.cluster.cp.adopt(this.plugin);
    await waitFor(
      `plugin ${this.name} ready (CSI Probe)`,
      async () => ((await probeReady(this.csi())) ? true : undefined),
      { timeoutMs: 60_000, intervalMs: 100, watch: [this.plugin] },
    );
    // The node agent logs this line once its watches are established.
    await waitFor(`agent ${this.name} running`, async () => (this.pluginLog().includes('"agent: running"') ? true : undefined), {
      timeoutMs: 30_000,
      intervalMs: 100,
      watch: [this.plugin],
    });
  }

  pluginLog(): string {
    try {
      return readFileSync(join(this.dir, 'plugin.log'), 'utf8').split('\n').slice(this.logStart).join('\n');
    } catch {
      return '';
    }
  }
  private logStart = 0;

  /** SIGKILLs the plugin (and with it the node agent); staged volumes keep running. */
  async killPlugin(): Promise<void> {
    this.resume();
    process.kill(this.plugin.pid, 'SIGKILL');
    await this.plugin.exited;
    this.csiClients?.close();
    this.csiClients = undefined;
  }

  /** Restarts a killed plugin on the same state directory and socket (it re-adopts staged volumes). */
  async restartPlugin(): Promise<void> {
    this.logStart = readFileSync(join(this.dir, 'plugin.log'), 'utf8').split('\n').length - 1;
    await this.startPlugin();
  }

  /** SIGSTOP / SIGCONT the plugin process: its agent (and CSI service) stop acting, nothing is lost. */
  pause(): void {
    process.kill(this.plugin.pid, 'SIGSTOP');
    this.paused = true;
  }
  resume(): void {
    if (!this.paused || this.plugin.hasExited()) return;
    process.kill(this.plugin.pid, 'SIGCONT');
    this.paused = false;
  }
  private paused = false;

  /** Starts csi-provisioner and csi-snapshotter in node-deployment mode next to the plugin. */
  async startSidecars(): Promise<void> {
    const env = { ...process.env, NODE_NAME: this.name };
    const common = [`--kubeconfig=${this.cluster.cp.kubeconfig}`, `--csi-address=${this.socket}`, '--v=4', '--timeout=60s'];
    const ports: number[] = [];
    for (const [tool, extra] of [
      [
        'csi-provisioner',
        ['--node-deployment', '--node-deployment-immediate-binding=false', '--strict-topology', '--immediate-topology=false', '--extra-create-metadata', '--retry-interval-max=5s'],
      ],
      // A VolumeSnapshot of a PVC in an open transaction answers ABORTED until it completes; the
      // sidecar retries with back-off, capped here so that the cut shows soon after the commit.
      ['csi-snapshotter', ['--node-deployment', '--retry-interval-max=3s']],
    ] as const) {
      const port = await freePort();
      ports.push(port);
      const bin = toolPath(tool);
      this.sidecars.push(
        new Supervised(`${tool}-${this.name}`, () =>
          startProcess(`${tool}-${this.name}`, bin, [...common, ...extra, `--http-endpoint=127.0.0.1:${port}`], { logFile: join(this.dir, `${tool}.log`), env }),
        ),
      );
    }
    for (const [i, s] of this.sidecars.entries()) {
      await waitFor(
        `${s.name} serving metrics`,
        async () => {
          const r = await fetch(`http://127.0.0.1:${ports[i] ?? 0}/metrics`);
          return r.ok ? true : undefined;
        },
        { timeoutMs: 60_000, intervalMs: 200, watch: [s.current] },
      );
    }
  }

  logs(lines = 40): string {
    const tail = (f: string): string => {
      try {
        const all = readFileSync(join(this.dir, f), 'utf8').split('\n');
        return all.slice(Math.max(0, all.length - lines - 1)).join('\n');
      } catch {
        return '(no log)';
      }
    };
    return ['plugin.log', 'csi-provisioner.log', 'csi-snapshotter.log'].map((f) => `--- ${this.name}/${f}:\n${tail(f)}`).join('\n');
  }

  /** Unpublishes and unstages what the kubelet stand-in holds, then stops the sidecars and the plugin. */
  async shutdown(): Promise<void> {
    if (!this.plugin.hasExited()) {
      this.resume();
      await this.kubelet.detachAll();
    }
    for (const s of this.sidecars) await s.stop();
    this.csiClients?.close();
    this.csiClients = undefined;
    await this.plugin.stop(5000);
  }

  /** shutdown(), then sweeps whatever a failed test left (mounts, loop devices, nbdfuse and serve processes). */
  async stop(keepLogsIn?: string): Promise<void> {
    await this.shutdown().catch(() => undefined);
    if (this.plugin.hasExited() === false) {
      process.kill(this.plugin.pid, 'SIGKILL');
      await this.plugin.exited;
    }
    if (keepLogsIn !== undefined) {
      mkdirSync(keepLogsIn, { recursive: true });
      for (const f of readdirSync(this.dir).filter((x) => x.endsWith('.log'))) copyFileSync(join(this.dir, f), join(keepLogsIn, f));
      const logDir = join(this.stateDir, 'log');
      if (existsSync(logDir)) for (const f of readdirSync(logDir)) copyFileSync(join(logDir, f), join(keepLogsIn, `volume-${f}`));
    }
    await sweep(this.dir);
  }

  async assertClean(): Promise<void> {
    await assertNothingLeft(this.dir);
  }
}

/** The coordinator Deployment's stand-in: a leader and a standby, leader-elected through the Lease. */
export class Coordinators {
  private seq = 0;
  readonly procs = new Map<string, ManagedProcess>();
  private supervised: Supervised[] = [];
  /** Flags given to the candidates add() starts from now on (e.g. `--prepare-timeout-seconds=3`). */
  private extraArgs: readonly string[] = [];
  constructor(private readonly cluster: Cluster) {}

  /** Starts a candidate with a fresh identity (a new pod name). */
  add(): Supervised {
    const id = `coordinator-${++this.seq}`;
    const extra = [...this.extraArgs];
    const s = new Supervised(id, () => {
      const p = startProcess(
        id,
        process.execPath,
        [
          FLASHCSI,
          'coordinator',
          `--kubeconfig=${this.cluster.cp.kubeconfig}`,
          `--namespace=${LEASE_NAMESPACE}`,
          `--lease-name=${LEASE_NAME}`,
          `--identity=${id}`,
          `--lease-duration-seconds=${LEASE_SECONDS}`,
          '--log-level=debug',
          ...extra,
        ],
        { logFile: join(this.cluster.root, `${id}.log`) },
      );
      this.procs.set(id, p);
      return p;
    });
    this.supervised.push(s);
    return s;
  }

  async lease(): Promise<V1Lease | undefined> {
    try {
      return await this.cluster.kc.makeApiClient(CoordinationV1Api).readNamespacedLease({ namespace: LEASE_NAMESPACE, name: LEASE_NAME });
    } catch {
      return undefined;
    }
  }

  /** Waits (watching the Lease) until a live candidate other than `not` holds it and says it runs; returns its identity. */
  async waitLeader(not?: string, timeoutMs = 60_000): Promise<string> {
    const coord = this.cluster.kc.makeApiClient(CoordinationV1Api);
    const holder = await observe<V1Lease, string>(
      this.cluster.kc,
      {
        what: `a coordinator${not ? ` other than ${not}` : ''} holding Lease ${LEASE_NAMESPACE}/${LEASE_NAME}`,
        path: `/apis/coordination.k8s.io/v1/namespaces/${LEASE_NAMESPACE}/leases`,
        fieldSelector: `metadata.name=${LEASE_NAME}`,
        list: () => coord.listNamespacedLease({ namespace: LEASE_NAMESPACE, fieldSelector: `metadata.name=${LEASE_NAME}` }) as never,
      },
      (leases) => {
        const h = leases[0]?.spec?.holderIdentity;
        const p = h ? this.procs.get(h) : undefined;
        return h && h !== not && p && !p.hasExited() ? h : undefined;
      },
      { timeoutMs },
    );
    const p = this.procs.get(holder);
    if (!p) throw new Error(`unreachable: ${holder}`);
    await waitFor(`${holder} running as the leader`, async () => (readFileSync(p.logFile, 'utf8').includes('"coordinator: running"') ? true : undefined), {
      timeoutMs,
      watch: [p],
    });
    return holder;
  }

  /** SIGKILLs the leader, starts a new standby, and waits until another candidate leads. */
  async killLeader(): Promise<{ killed: string; leader: string }> {
    const lease = await this.lease();
    const killed = lease?.spec?.holderIdentity ?? '';
    const p = this.procs.get(killed);
    if (!p || p.hasExited()) throw new Error(`the Lease is held by ${killed || 'nobody'}, which is not a live coordinator of this test`);
    const s = this.supervised.find((x) => x.current === p);
    s?.forget(); // no restart of the same identity: a new candidate replaces it below
    process.kill(p.pid, 'SIGKILL');
    await p.exited;
    this.add();
    const leader = await this.waitLeader(killed);
    return { killed, leader };
  }

  /**
   * A rollout of the coordinator Deployment with other flags: every candidate is stopped gracefully
   * (the leader gives its Lease up), then a new leader with `extraArgs` is started and waited for,
   * and a new standby. Returns the new leader's identity.
   */
  async replaceAll(extraArgs: readonly string[]): Promise<string> {
    const old = this.supervised;
    this.supervised = [];
    const holder = (await this.lease())?.spec?.holderIdentity;
    // The standby first, so that it does not take over from the stopping leader.
    for (const s of [...old.filter((x) => x.name !== holder), ...old.filter((x) => x.name === holder)]) await s.stop();
    this.extraArgs = [...extraArgs];
    this.add();
    const leader = await this.waitLeader();
    this.add();
    return leader;
  }

  async stop(): Promise<void> {
    for (const s of this.supervised) await s.stop();
  }
}

/**
 * The cluster's kube-apiserver, which a fault test takes away and brings back: SIGKILLed (clients
 * see connections reset, then refused), and started again as the same binary with the same flags —
 * so on the same port, certificates and token file — over the same etcd, which keeps every object.
 * The harness (test/k8s/harness.ts) starts it; its command line is read back from /proc.
 */
export class ApiServer {
  private proc: ManagedProcess;
  private generation = 1;
  /** kube-apiserver's command line, as the harness started it (read while it runs). */
  private readonly argv: string[];

  constructor(private readonly cp: ControlPlane) {
    this.proc = cp.apiServer;
    this.argv = readFileSync(`/proc/${cp.apiServer.pid}/cmdline`, 'utf8').split('\0');
    if (this.argv[this.argv.length - 1] === '') this.argv.pop();
  }

  get up(): boolean {
    return !this.proc.hasExited();
  }

  /** SIGKILLs kube-apiserver and waits until it has exited. */
  async kill(): Promise<void> {
    process.kill(this.proc.pid, 'SIGKILL');
    await this.proc.exited;
  }

  /** Starts kube-apiserver again as it was started, and waits until /readyz answers 200. */
  async start(timeoutMs = 60_000): Promise<void> {
    if (this.up) return;
    const [bin, ...args] = this.argv;
    if (bin === undefined) throw new Error('kube-apiserver: no command line recorded');
    const p = startProcess(`kube-apiserver#${++this.generation}`, bin, args, { logFile: this.proc.logFile, cwd: this.cp.dir });
    this.cp.adopt(p);
    this.proc = p;
    const ca = readFileSync(this.cp.caFile);
    await waitFor(
      'kube-apiserver (restarted) /readyz',
      async () => {
        const status = await new Promise<number>((resolve, reject) => {
          const req = httpsRequest(`${this.cp.server}/readyz`, { ca, headers: { Authorization: `Bearer ${this.cp.token}` }, timeout: 5000 });
          req.on('response', (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          });
          req.on('timeout', () => req.destroy(new Error('timeout')));
          req.on('error', reject);
          req.end();
        });
        return status === 200 ? true : undefined;
      },
      { timeoutMs, intervalMs: 100, watch: [p] },
    );
  }
}

/** Everything the e2e tests share. */
export class Cluster {
  cp!: ControlPlane;
  kc!: KubeConfig;
  core!: CoreV1Api;
  storage!: StorageV1Api;
  custom!: CustomObjectsApi;
  root = '';
  readonly nodes = new Map<string, NodeHost>();
  coordinators!: Coordinators;
  apiServer!: ApiServer;
  private keep = process.env['FLASHCSI_KEEP_E2E'] === '1';

  node(name: string): NodeHost {
    const n = this.nodes.get(name);
    if (!n) throw new Error(`no node ${name}`);
    return n;
  }

  static async start(nodeNames: readonly string[]): Promise<Cluster> {
    const c = new Cluster();
    try {
      await c.init(nodeNames);
    } catch (err) {
      const logs = c.logs(60);
      await c.stop();
      if (err instanceof Error) err.message += `\n${logs}`;
      throw err;
    }
    return c;
  }

  private async init(nodeNames: readonly string[]): Promise<void> {
    if (!existsSync(FLASHCSI)) throw new Error(`${FLASHCSI} is missing: run npm run build`);
    // Fail loudly (with the build command) before starting anything if a pinned tool is missing.
    requireTools('etcd', 'kube-apiserver', 'kube-controller-manager', 'csi-provisioner', 'csi-snapshotter', 'snapshot-controller', 'kubectl');
    this.root = await mkdtemp(join(tmpdir(), 'fe2e-')); // short: unix socket paths are limited to 107 bytes
    this.cp = await startControlPlane({
      controllerManager: {
        controllers: ['persistentvolume-binder-controller', 'persistentvolume-protection-controller', 'persistentvolumeclaim-protection-controller', 'garbage-collector-controller', 'namespace-controller'],
      },
    });
    this.apiServer = new ApiServer(this.cp);
    this.kc = this.cp.kubeConfig();
    this.core = this.kc.makeApiClient(CoreV1Api);
    this.storage = this.kc.makeApiClient(StorageV1Api);
    this.custom = this.kc.makeApiClient(CustomObjectsApi);
    await applySnapshotCrds(this.cp);
    await applyFlashcsiCrds(this.cp);
    await startSnapshotController(this.cp, { args: ['--enable-distributed-snapshotting', '--retry-interval-max=3s'] });

    await this.storage.createCSIDriver({
      body: {
        metadata: { name: DRIVER },
        spec: { attachRequired: false, podInfoOnMount: false, volumeLifecycleModes: ['Persistent'], fsGroupPolicy: 'File', storageCapacity: false, requiresRepublish: false },
      },
    });
    await this.storage.createStorageClass({
      body: {
        metadata: { name: STORAGE_CLASS },
        provisioner: DRIVER,
        volumeBindingMode: 'WaitForFirstConsumer',
        allowVolumeExpansion: true,
        reclaimPolicy: 'Delete',
        parameters: { 'csi.storage.k8s.io/fstype': 'ext4', grainSize: '65536' },
      },
    });
    await this.custom.createClusterCustomObject({
      group: 'snapshot.storage.k8s.io',
      version: 'v1',
      plural: 'volumesnapshotclasses',
      body: { apiVersion: 'snapshot.storage.k8s.io/v1', kind: 'VolumeSnapshotClass', metadata: { name: SNAPSHOT_CLASS }, driver: DRIVER, deletionPolicy: 'Delete' },
    });

    for (const name of nodeNames) {
      const n = new NodeHost(name, this.root, this);
      this.nodes.set(name, n);
      await n.startPlugin();
      await n.kubelet.register();
    }
    for (const n of this.nodes.values()) await n.startSidecars();

    this.coordinators = new Coordinators(this);
    this.coordinators.add();
    await this.coordinators.waitLeader();
    this.coordinators.add(); // the standby
  }

  logs(lines = 40): string {
    const parts = [this.cp?.logs(lines) ?? ''];
    for (const n of this.nodes.values()) parts.push(n.logs(lines));
    for (const p of this.coordinators?.procs.values() ?? []) parts.push(`--- ${p.name}:\n${p.logTail(lines)}`);
    return parts.join('\n');
  }

  async stop(): Promise<void> {
    await this.coordinators?.stop().catch(() => undefined);
    for (const n of this.nodes.values()) await n.stop(this.keep ? join(this.root, `${n.name}-logs`) : undefined).catch(() => undefined);
    await this.cp?.stop();
    if (this.root !== '') {
      if (this.keep) process.stderr.write(`k8s-e2e: kept ${this.root}\n`);
      else await rm(this.root, { recursive: true, force: true });
    }
  }
}
