// One Kubernetes node made of real processes: its own network and mount namespace (a holder process
// made by `unshare`), containerd + runc with the ptp CNI plugin, and a kubelet, all pinned builds.
//
// Inside the node's mount namespace /run, /var/lib and /var/log are the node's own (tmpfs), and
// /var/lib/kubelet and /var/lib/flashcsi are bind mounts of the node's directory — /var/lib/kubelet an
// rshared one, so that the node plugin's Bidirectional mounts reach the kubelet and the pods. hostPath
// volumes therefore never collide between nodes, and nothing is written to the host's /var. The node's
// network namespace has one veth to the host: the node's address, a route to the API server's address
// (held by the host) and the default route; the host routes the node's pod range back to it.
//
// Each node has its own cgroup root (/<cluster>-<node> in every hierarchy): the kubelet puts its pods
// there, and stop() removes it after killing whatever is left in it.
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { issueCert, startProcess, toolPath, waitFor, type ControlPlane, type ManagedProcess } from '../k8s/harness.js';

const execFileP = promisify(execFile);

export interface NodeSpec {
  /** Node name (also its kubelet's identity system:node:<name>). */
  readonly name: string;
  /** Directory holding everything of this node (sockets too: keep it short). */
  readonly dir: string;
  /** This node's address on its veth, and the host's interface name for that veth. */
  readonly ip: string;
  readonly hostIf: string;
  /** The API server's address (on the host); the node's default route points at it. */
  readonly apiAddress: string;
  /** The node's pod range (ptp + host-local), e.g. 10.214.3.0/27. */
  readonly podCidr: string;
  /** The node's cgroup root (a name at the top of every hierarchy). */
  readonly cgroupRoot: string;
  /** The pause image containerd runs as every pod's sandbox. */
  readonly sandboxImage: string;
  /** Labels the kubelet registers the node with. */
  readonly labels?: Record<string, string>;
}

/** Run a command, returning stdout; the error names the command and carries its stderr. */
export interface RunOptions {
  readonly timeoutMs?: number;
  readonly input?: string;
  readonly env?: NodeJS.ProcessEnv;
}

export async function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<string> {
  try {
    const p = execFileP(cmd, args, { timeout: opts.timeoutMs ?? 120_000, maxBuffer: 64 * 1024 * 1024, ...(opts.env ? { env: opts.env } : {}) });
    if (opts.input !== undefined) p.child.stdin?.end(opts.input);
    const { stdout } = await p;
    return stdout;
  } catch (e) {
    const err = e as { stderr?: string; stdout?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${(err.stderr ?? '').trim() || err.message}`, { cause: e });
  }
}

/** The v1 hierarchies and the v2 (unified) one mounted under /sys/fs/cgroup. */
function cgroupMounts(): string[] {
  const out: string[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const [pre, post] = line.split(' - ');
    const mountPoint = pre?.split(' ')[4];
    const fsType = post?.split(' ')[0];
    if (mountPoint && (fsType === 'cgroup' || fsType === 'cgroup2') && mountPoint.startsWith('/sys/fs/cgroup')) out.push(mountPoint);
  }
  return [...new Set(out)];
}

/** Every pid in a cgroup subtree (all hierarchies). */
export function pidsInCgroup(root: string): number[] {
  const pids = new Set<number>();
  const walk = (dir: string): void => {
    let entries: string[];
    try {
      entries = readdirSync(dir);
    } catch {
      return;
    }
    try {
      for (const l of readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n')) if (l) pids.add(Number(l));
    } catch {
      // not a cgroup directory
    }
    for (const e of entries) {
      const p = join(dir, e);
      try {
        if (statSync(p).isDirectory()) walk(p);
      } catch {
        // removed meanwhile
      }
    }
  };
  for (const m of cgroupMounts()) walk(join(m, root));
  return [...pids];
}

/** Makes the cgroup `root` at the top of every hierarchy (the kubelet needs its cgroupRoot to exist). */
function createCgroup(root: string): void {
  for (const m of cgroupMounts()) {
    const dir = join(m, root);
    mkdirSync(dir, { recursive: true });
    // v1 cpuset: a new cgroup has no CPUs or memory nodes until given its parent's.
    for (const f of ['cpuset.cpus', 'cpuset.mems']) {
      if (existsSync(join(dir, f)) && readFileSync(join(dir, f), 'utf8').trim() === '') writeFileSync(join(dir, f), readFileSync(join(m, f), 'utf8'));
    }
  }
}

/** Removes a cgroup subtree (deepest first) in every hierarchy; it must hold no process any more. */
function removeCgroup(root: string): string[] {
  const failed: string[] = [];
  const rm = (dir: string): void => {
    let entries: string[];
    try {
      entries = readdirSync(dir);
    } catch {
      return;
    }
    for (const e of entries) {
      const p = join(dir, e);
      try {
        if (statSync(p).isDirectory()) rm(p);
      } catch {
        // gone
      }
    }
    try {
      rmdirSync(dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') failed.push(`${dir}: ${(e as Error).message}`);
    }
  };
  for (const m of cgroupMounts()) rm(join(m, root));
  return failed;
}

/** The mount namespace of a process (as the inode link /proc/PID/ns/mnt reads). */
function mountNs(pid: number): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/ns/mnt`);
  } catch {
    return undefined;
  }
}

/** Pids of every process in the mount namespace `ns`. */
export function pidsInMountNs(ns: string): number[] {
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    if (mountNs(Number(e)) === ns) out.push(Number(e));
  }
  return out;
}

function killAll(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

export class ClusterNode {
  holder!: ManagedProcess;
  containerd!: ManagedProcess;
  kubelet!: ManagedProcess;
  /** The node's mount namespace (the holder's), for sweeping. */
  private mntNs: string | undefined;
  readonly containerdSocket: string;
  /** The node's view of paths: its kubelet root and flashcsi state directory, on the host. */
  readonly kubeletDir: string;
  readonly stateDir: string;

  constructor(
    readonly spec: NodeSpec,
    private readonly cp: ControlPlane,
  ) {
    this.containerdSocket = join(spec.dir, 'containerd.sock');
    this.kubeletDir = join(spec.dir, 'kubelet');
    this.stateDir = join(spec.dir, 'flashcsi');
  }

  get name(): string {
    return this.spec.name;
  }

  /** Runs `cmd args…` inside this node's mount and network namespaces. */
  exec(cmd: string, args: string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<string> {
    return run('nsenter', [`--target=${this.holder.pid}`, '--mount', '--net', '--', cmd, ...args], opts);
  }

  /** crictl against this node's containerd. */
  crictl(args: string[], timeoutMs = 60_000): Promise<string> {
    return run(toolPath('crictl'), [`--runtime-endpoint=unix://${this.containerdSocket}`, `--image-endpoint=unix://${this.containerdSocket}`, '--timeout=30s', ...args], { timeoutMs });
  }

  /** ctr in containerd's CRI namespace (k8s.io). */
  ctr(args: string[], timeoutMs = 300_000): Promise<string> {
    return run(toolPath('ctr'), [`--address=${this.containerdSocket}`, '--namespace=k8s.io', ...args], { timeoutMs });
  }

  private inNode(name: string, binary: string, args: string[], env?: NodeJS.ProcessEnv): ManagedProcess {
    return startProcess(`${this.name}/${name}`, 'nsenter', [`--target=${this.holder.pid}`, '--mount', '--net', '--', binary, ...args], {
      logFile: join(this.spec.dir, `${name}.log`),
      ...(env ? { env } : {}),
    });
  }

  /** Makes the namespaces, the network, then starts containerd and the kubelet; resolves when the Node is Ready. */
  async start(opts: { images: string[]; timeoutMs: number }): Promise<void> {
    const { spec } = this;
    for (const d of ['kubelet', 'flashcsi', 'cni/net.d', 'cni/ipam', 'containerd/root', 'containerd/state', 'pod-logs', 'volume-plugins', 'certs']) {
      mkdirSync(join(spec.dir, d), { recursive: true });
    }
    await this.startHolder(opts.timeoutMs);
    await this.network();
    this.writeContainerdConfig();
    const path = `${join(toolPath('containerd'), '..')}:${join(toolPath('runc'), '..')}:${join(toolPath('containerd-shim-runc-v2'), '..')}:${process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin'}`;
    this.containerd = this.inNode('containerd', toolPath('containerd'), [`--config=${join(spec.dir, 'containerd.toml')}`], { ...process.env, PATH: path });
    await waitFor('containerd CRI', async () => ((await this.crictl(['info'], 10_000)).includes('"RuntimeReady"') ? true : undefined), {
      timeoutMs: opts.timeoutMs,
      intervalMs: 250,
      watch: [this.containerd],
    });
    for (const tar of opts.images) await this.ctr(['images', 'import', '--local', tar]);
    await this.startKubelet(path);
  }

  private async startHolder(timeoutMs: number): Promise<void> {
    const { dir } = this.spec;
    // The node's own /run, /var/lib and /var/log; /var/lib/kubelet an rshared bind of the node's directory.
    const script = [
      'set -e',
      // The new namespace starts with a copy of every host mount, and the host's are private: a copy
      // of another test's FUSE or loop-backed mount would keep its loop device busy (and its
      // NodeUnstageVolume waiting) for as long as this node lives. The node has no mounts of its own
      // yet, so every such copy is foreign: detach them.
      `awk '{ for (i = 7; i <= NF; i++) if ($i == "-") { t = $(i + 1); s = $(i + 2); break } if (t ~ /^fuse(\\.|blk|$)/ || s ~ /^\\/dev\\/(loop|nbd)/) print $5 }' /proc/self/mountinfo | sort -r |`,
      '  while read -r m; do umount -l "$(printf %b "$m")" || echo "could not detach the copy of $m"; done',
      'mount -t tmpfs -o mode=0755 node-run /run',
      'mount -t tmpfs -o mode=0755 node-varlib /var/lib',
      'mount -t tmpfs -o mode=0755 node-varlog /var/log',
      'mkdir -p /var/lib/kubelet /var/lib/flashcsi /run/netns /run/lock',
      `mount --bind ${dir}/kubelet /var/lib/kubelet`,
      'mount --make-rshared /var/lib/kubelet',
      `mount --bind ${dir}/flashcsi /var/lib/flashcsi`,
      'ip link set lo up',
      'sysctl -q -w net.ipv4.ip_forward=1',
      `touch ${dir}/holder.ready`,
      'exec sleep infinity',
    ].join('\n');
    this.holder = startProcess(`${this.name}/namespaces`, 'unshare', ['--mount', '--net', '--propagation=slave', '--', 'sh', '-c', script], {
      logFile: join(dir, 'namespaces.log'),
    });
    await waitFor(`${this.name} namespaces`, async () => (existsSync(join(dir, 'holder.ready')) ? true : undefined), {
      timeoutMs,
      intervalMs: 50,
      watch: [this.holder],
    });
    // The pid is unshare's until it execs sh, then sleep: the same pid throughout.
    this.mntNs = mountNs(this.holder.pid);
  }

  private async network(): Promise<void> {
    const { spec } = this;
    await run('ip', ['link', 'add', spec.hostIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', String(this.holder.pid)]);
    await run('ip', ['link', 'set', spec.hostIf, 'up']);
    await run('ip', ['route', 'add', `${spec.ip}/32`, 'dev', spec.hostIf]);
    await run('ip', ['route', 'add', spec.podCidr, 'via', spec.ip]);
    await this.exec('ip', ['addr', 'add', `${spec.ip}/32`, 'dev', 'eth0']);
    await this.exec('ip', ['link', 'set', 'eth0', 'up']);
    await this.exec('ip', ['route', 'add', spec.apiAddress, 'dev', 'eth0']);
    await this.exec('ip', ['route', 'add', 'default', 'via', spec.apiAddress]);
  }

  private writeContainerdConfig(): void {
    const { spec } = this;
    const cni = {
      cniVersion: '1.0.0',
      name: 'flashcsi-node',
      plugins: [
        {
          type: 'ptp',
          ipMasq: false, // no iptables on the test machines; the host routes the pod range back
          ipam: { type: 'host-local', ranges: [[{ subnet: spec.podCidr }]], routes: [{ dst: '0.0.0.0/0' }], dataDir: join(spec.dir, 'cni/ipam') },
        },
      ],
    };
    writeFileSync(join(spec.dir, 'cni/net.d/10-flashcsi.conflist'), JSON.stringify(cni, null, 2));
    const toml = `version = 3
imports = []
root = "${spec.dir}/containerd/root"
state = "${spec.dir}/containerd/state"

[grpc]
  address = "${this.containerdSocket}"

[ttrpc]
  address = "${spec.dir}/containerd.ttrpc.sock"

[debug]
  level = "info"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "${spec.sandboxImage}"

[plugins.'io.containerd.cri.v1.runtime']
  # No CAP_SYS_RESOURCE here: the CRI's oom_score_adj of -998 for sandboxes would fail.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "${spec.dir}/cni/net.d"
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "${toolPath('runc')}"
        SystemdCgroup = false

[plugins.'io.containerd.grpc.v1.cri']
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"

[plugins.'io.containerd.internal.v1.opt']
  path = "${spec.dir}/containerd/opt"
`;
    writeFileSync(join(spec.dir, 'containerd.toml'), toml);
  }

  private async startKubelet(path: string): Promise<void> {
    const { spec } = this;
    const certs = join(spec.dir, 'certs');
    // issueCert signs with the control plane's CA (ca.crt/ca.key in its directory).
    const client = await issueCert(this.cp.dir, { name: `kubelet-${spec.name}`, cn: `system:node:${spec.name}`, org: 'system:nodes', usage: 'client' });
    const serving = await issueCert(this.cp.dir, { name: `kubelet-serving-${spec.name}`, cn: `system:node:${spec.name}`, org: 'system:nodes', usage: 'server', ips: [spec.ip], dns: [spec.name] });
    const ca = this.cp.caFile;
    const kubeconfig = join(certs, 'kubelet.kubeconfig');
    writeFileSync(
      kubeconfig,
      [
        'apiVersion: v1',
        'kind: Config',
        'clusters:',
        `- name: local\n  cluster:\n    server: ${this.cp.server}\n    certificate-authority: ${ca}`,
        'users:',
        `- name: kubelet\n  user:\n    client-certificate: ${client.cert}\n    client-key: ${client.key}`,
        'contexts:',
        '- name: local\n  context:\n    cluster: local\n    user: kubelet',
        'current-context: local',
        '',
      ].join('\n'),
      { mode: 0o600 },
    );
    const config = {
      apiVersion: 'kubelet.config.k8s.io/v1beta1',
      kind: 'KubeletConfiguration',
      // This machine's cgroups are the hybrid v1 layout, with no systemd: kubelet 1.37 accepts v1 only when asked.
      failCgroupV1: false,
      cgroupDriver: 'cgroupfs',
      cgroupRoot: `/${spec.cgroupRoot}`,
      containerRuntimeEndpoint: `unix://${this.containerdSocket}`,
      address: spec.ip,
      port: 10250,
      readOnlyPort: 0,
      healthzBindAddress: '127.0.0.1',
      healthzPort: 10248,
      tlsCertFile: serving.cert,
      tlsPrivateKeyFile: serving.key,
      authentication: { anonymous: { enabled: false }, webhook: { enabled: true }, x509: { clientCAFile: ca } },
      authorization: { mode: 'Webhook' },
      failSwapOn: false,
      enforceNodeAllocatable: [],
      // Images are imported, never pulled (no registry): never collect them.
      imageGCHighThresholdPercent: 100,
      imageGCLowThresholdPercent: 99,
      evictionHard: { 'memory.available': '0%', 'nodefs.available': '0%', 'imagefs.available': '0%' },
      serializeImagePulls: false,
      podLogsDir: join(spec.dir, 'pod-logs'),
      volumePluginDir: join(spec.dir, 'volume-plugins'),
      resolvConf: '/etc/resolv.conf',
      nodeStatusReportFrequency: '10s',
      syncFrequency: '10s',
      fileCheckFrequency: '10s',
      maxPods: 60,
    };
    const configFile = join(spec.dir, 'kubelet.yaml');
    writeFileSync(configFile, JSON.stringify(config, null, 2));
    createCgroup(spec.cgroupRoot);
    const labels = Object.entries(spec.labels ?? {}).map(([k, v]) => `${k}=${v}`).join(',');
    this.kubelet = this.inNode(
      'kubelet',
      toolPath('kubelet'),
      [
        `--config=${configFile}`,
        `--kubeconfig=${kubeconfig}`,
        `--hostname-override=${spec.name}`,
        `--node-ip=${spec.ip}`,
        ...(labels ? [`--node-labels=${labels}`] : []),
        '--v=2',
      ],
      { ...process.env, PATH: path },
    );
  }

  /**
   * Stops the node and leaves nothing: the kubelet first (so it re-creates nothing), then every pod
   * sandbox through the CRI (their containers, shims and mounts go with them), containerd, whatever is
   * still in the node's cgroups or mount namespace (detached data paths), and the namespaces.
   */
  async stop(): Promise<string[]> {
    const problems: string[] = [];
    await this.kubelet?.stop(10_000);
    if (this.containerd && !this.containerd.hasExited()) {
      try {
        await this.crictl(['rmp', '--all', '--force'], 120_000);
      } catch (e) {
        problems.push(`${this.name}: crictl rmp: ${(e as Error).message}`);
      }
      await this.containerd.stop(10_000);
    }
    const leftovers = [...pidsInCgroup(this.spec.cgroupRoot), ...(this.mntNs ? pidsInMountNs(this.mntNs).filter((p) => p !== this.holder?.pid) : [])];
    if (leftovers.length > 0) {
      problems.push(`${this.name}: killed ${leftovers.length} process(es) left after containerd stopped: ${leftovers.map((p) => `${p} ${comm(p)}`).join(', ')}`);
      killAll(leftovers);
      await waitFor(`${this.name}: left-over processes gone`, async () => (pidsInCgroup(this.spec.cgroupRoot).length === 0 ? true : undefined), { timeoutMs: 10_000 });
    }
    await this.holder?.stop(2_000);
    problems.push(...removeCgroup(this.spec.cgroupRoot));
    return problems;
  }
}

function comm(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '?';
  }
}
