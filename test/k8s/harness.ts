// A real Kubernetes control plane for tests: etcd + kube-apiserver (+ optionally kube-controller-manager)
// built from their Go modules at the versions pinned in scripts/go-tools.versions, run as plain processes
// on 127.0.0.1 with their own temp dir. No kubelet, no scheduler, no containers.
//
//   const cp = await startControlPlane();            // waits for /readyz
//   const kc = cp.kubeConfig();                      // @kubernetes/client-node KubeConfig (admin token)
//   await applySnapshotCrds(cp);                     // VolumeSnapshot* + VolumeGroupSnapshot* CRDs, Established
//   const sc = await startSnapshotController(cp);    // external-snapshotter's snapshot-controller
//   …
//   await sc.stop(); await cp.stop();
//
// The binaries come from ${FLASHCSI_CACHE:-$HOME/.cache/flashcsi}; when one is missing every function here
// throws MissingToolsError naming the command that builds it (scripts/go-tools.sh).
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, accessSync, constants as fsConstants, openSync, closeSync, readdirSync, rmSync } from 'node:fs';
import { mkdtemp, readFile, writeFile, readdir } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { request as httpRequest } from 'node:http';
import { createServer } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { pollUntil } from '../../src/host/poll.js';
import { ApiException, ApiextensionsV1Api, CustomObjectsApi, KubeConfig, loadAllYaml, type V1CustomResourceDefinition } from '@kubernetes/client-node';

const execFileP = promisify(execFile);

// ---------------------------------------------------------------------------------------------------
// Pinned tools

/** The repository root: the nearest ancestor of this file whose package.json names flashcsi. */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'flashcsi') return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('flashcsi test harness: cannot find the repository root (package.json "name": "flashcsi")');
    dir = up;
  }
}

/** ${FLASHCSI_CACHE:-$HOME/.cache/flashcsi} */
export function toolsCacheDir(): string {
  const env = process.env['FLASHCSI_CACHE'];
  return env !== undefined && env !== '' ? resolve(env) : join(homedir(), '.cache', 'flashcsi');
}

/** The command that builds the pinned tools, as printed in MissingToolsError. */
export const BUILD_TOOLS_COMMAND = 'scripts/go-tools.sh';

export class MissingToolsError extends Error {
  constructor(readonly missing: string[], cacheDir: string) {
    super(
      `flashcsi test tools missing from ${cacheDir}: ${missing.join(', ')}.\n` +
        `Build them (once; cached, ~30 min cold on 2 cores) with:\n` +
        `    ${BUILD_TOOLS_COMMAND}${missing.length < 4 ? ' ' + missing.map((m) => m.split('@')[0]).join(' ') : ''}\n` +
        `or the whole test setup with: scripts/setup.sh test` +
        (process.env['FLASHCSI_CACHE'] ? '' : '\n(set FLASHCSI_CACHE if the cache lives elsewhere)'),
    );
    this.name = 'MissingToolsError';
  }
}

interface PinnedEntry {
  version: string;
  module: string;
}

let pinnedCache: { bins: Map<string, PinnedEntry>; files: Map<string, PinnedEntry> } | undefined;

/** Parses scripts/go-tools.versions: "binary module version package" and "@dest module version dir". */
export function pinnedVersions(): { bins: Map<string, PinnedEntry>; files: Map<string, PinnedEntry> } {
  if (pinnedCache) return pinnedCache;
  const bins = new Map<string, PinnedEntry>();
  const files = new Map<string, PinnedEntry>();
  const text = readFileSync(join(repoRoot(), 'scripts', 'go-tools.versions'), 'utf8');
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const [name, module, version] = line.split(/\s+/);
    if (name === undefined || module === undefined || version === undefined) continue;
    if (name.startsWith('@')) files.set(name.slice(1), { module, version });
    else bins.set(name, { module, version });
  }
  pinnedCache = { bins, files };
  return pinnedCache;
}

/** Absolute paths of the pinned builds of `names`; throws MissingToolsError listing every one not built. */
export function requireTools(...names: string[]): Record<string, string> {
  const cache = toolsCacheDir();
  const { bins } = pinnedVersions();
  const out: Record<string, string> = {};
  const missing: string[] = [];
  for (const name of names) {
    const pin = bins.get(name);
    if (!pin) throw new Error(`flashcsi test harness: ${name} is not pinned in scripts/go-tools.versions`);
    const path = join(cache, 'go', `${name}@${pin.version}`, name);
    try {
      accessSync(path, fsConstants.X_OK);
      out[name] = path;
    } catch {
      missing.push(`${name}@${pin.version}`);
    }
  }
  if (missing.length > 0) throw new MissingToolsError(missing, cache);
  return out;
}

/** One pinned tool's path (see requireTools). */
export function toolPath(name: string): string {
  const p = requireTools(name)[name];
  if (p === undefined) throw new Error(`unreachable: ${name}`);
  return p;
}

/** The directory holding the pinned snapshot CRD YAMLs (VolumeSnapshot*, VolumeGroupSnapshot*). */
export function snapshotCrdDir(): string {
  const cache = toolsCacheDir();
  const pin = pinnedVersions().files.get('crd/snapshot');
  if (!pin) throw new Error('flashcsi test harness: crd/snapshot is not pinned in scripts/go-tools.versions');
  const dir = join(cache, 'crd', `snapshot@${pin.version}`);
  if (!existsSync(dir) || readdirSync(dir).filter((f) => f.endsWith('.yaml')).length === 0) {
    throw new MissingToolsError([`crd/snapshot@${pin.version}`], cache);
  }
  return dir;
}

// ---------------------------------------------------------------------------------------------------
// Processes

export interface ManagedProcess {
  readonly name: string;
  readonly pid: number;
  /** stdout+stderr of the process. */
  readonly logFile: string;
  /** Resolves with the exit code (or signal name) when the process exits. */
  readonly exited: Promise<number | string>;
  /** Whether it has exited. */
  hasExited(): boolean;
  /** The last `lines` lines of its log. */
  logTail(lines?: number): string;
  /** SIGTERM, then SIGKILL after `graceMs` (default 5000); resolves once it has exited. Idempotent. */
  stop(graceMs?: number): Promise<void>;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // A crashed test must not leave etcd/kube-apiserver holding ports on the CI machine.
  process.on('exit', () => {
    for (const c of live) c.kill('SIGKILL');
  });
}

function tailOf(file: string, lines: number): string {
  try {
    const all = readFileSync(file, 'utf8').split('\n');
    return all.slice(Math.max(0, all.length - lines - 1)).join('\n');
  } catch {
    return '(no log)';
  }
}

/** Starts `binary args…` with stdout+stderr to `logFile`; the process is killed if the test process exits. */
export function startProcess(
  name: string,
  binary: string,
  args: string[],
  opts: { logFile: string; cwd?: string; env?: NodeJS.ProcessEnv },
): ManagedProcess {
  installExitHook();
  const fd = openSync(opts.logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn(binary, args, {
      cwd: opts.cwd ?? dirname(opts.logFile),
      env: opts.env ?? process.env,
      stdio: ['ignore', fd, fd],
    });
  } finally {
    closeSync(fd);
  }
  if (child.pid === undefined) throw new Error(`${name}: failed to start ${binary}`);
  live.add(child);
  let done = false;
  const exited = new Promise<number | string>((res) => {
    child.once('exit', (code, signal) => {
      done = true;
      live.delete(child);
      res(code ?? signal ?? 'unknown');
    });
    child.once('error', (err) => {
      done = true;
      live.delete(child);
      res(`error: ${err.message}`);
    });
  });
  const pid = child.pid;
  return {
    name,
    pid,
    logFile: opts.logFile,
    exited,
    hasExited: () => done,
    logTail: (lines = 40) => tailOf(opts.logFile, lines),
    async stop(graceMs = 5000): Promise<void> {
      if (done) return;
      child.kill('SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      const killed = new Promise<void>((res) => {
        timer = setTimeout(() => {
          if (!done) child.kill('SIGKILL');
          res();
        }, graceMs);
      });
      await Promise.race([exited.then(() => undefined), killed]);
      await exited;
      if (timer) clearTimeout(timer);
    },
  };
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      if (addr === null || typeof addr === 'string') {
        srv.close();
        rej(new Error('freePort: no address'));
        return;
      }
      const { port } = addr;
      srv.close(() => res(port));
    });
  });
}

/**
 * The harness's wait: pollUntil (src/host/poll.ts) with a 100 ms interval, errors of `check` taken as
 * "not yet", failing at once when a watched process exits, and the watched processes' log tails in
 * the failure.
 */
export function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined>,
  opts: { timeoutMs: number; intervalMs?: number; watch?: ManagedProcess[] },
): Promise<T> {
  const watched = opts.watch ?? [];
  return pollUntil(check, opts.timeoutMs, what, {
    intervalMs: opts.intervalMs ?? 100,
    retryErrors: true,
    abortIf: async () => {
      const gone = watched.find((p) => p.hasExited());
      return gone === undefined ? undefined : `${gone.name} exited (${String(await gone.exited)})`;
    },
    detail: () => watched.map((p) => `--- ${p.name} log tail:\n${p.logTail()}`).join('\n'),
  });
}

interface HttpResult {
  status: number;
  body: string;
}

function httpGet(url: string, opts: { ca?: Buffer; token?: string; insecure?: boolean; timeoutMs?: number } = {}): Promise<HttpResult> {
  return new Promise((res, rej) => {
    const u = new URL(url);
    const headers: Record<string, string> = {};
    if (opts.token !== undefined) headers['Authorization'] = `Bearer ${opts.token}`;
    const common = { method: 'GET', headers, timeout: opts.timeoutMs ?? 5000 };
    const req =
      u.protocol === 'https:'
        ? httpsRequest(u, { ...common, ...(opts.ca ? { ca: opts.ca } : {}), rejectUnauthorized: opts.insecure !== true })
        : httpRequest(u, common);
    req.on('response', (resp) => {
      let body = '';
      resp.setEncoding('utf8');
      resp.on('data', (d: string) => (body += d));
      resp.on('end', () => res({ status: resp.statusCode ?? 0, body }));
      resp.on('error', rej);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url}: timeout`)));
    req.on('error', rej);
    req.end();
  });
}

// ---------------------------------------------------------------------------------------------------
// Control plane

export interface ControlPlaneOptions {
  /** Deadline for etcd health and kube-apiserver /readyz together (default 120 s). */
  readyTimeoutMs?: number;
  /** Extra kube-apiserver flags (e.g. `--feature-gates=…`, `--runtime-config=…`), appended last. */
  apiServerArgs?: string[];
  /** Also run kube-controller-manager (PV/PVC binder, expander, protection, namespace, GC, …). Default false. */
  controllerManager?: boolean | { controllers?: string[]; args?: string[] };
  /** Keep the temp dir (logs, etcd data, certs) after stop(); also when FLASHCSI_KEEP_K8S=1. */
  keepDir?: boolean;
  /**
   * Run as a cluster with nodes (test/cluster): the API server binds `address` on port 443 and
   * advertises it, `serviceClusterIPRange`'s first address is that same address (so pods reach the API
   * server at the kubernetes Service's ClusterIP without a kube-proxy), the default admission plugins
   * are on (ServiceAccount, PodSecurity, NodeRestriction, …: kube-controller-manager must run), and the
   * API server holds a client certificate for the kubelets (`kubectl exec/logs`) and checks their
   * serving certificates against the CA.
   */
  cluster?: { address: string; serviceClusterIPRange: string };
  /** Parent directory of the temp dir (default the OS temp dir). */
  parentDir?: string;
}

export interface ControlPlane {
  /** Path of an admin kubeconfig (token auth, CA embedded). */
  readonly kubeconfig: string;
  /** https://127.0.0.1:<port> */
  readonly server: string;
  /** Bearer token of the admin user (group system:masters). */
  readonly token: string;
  /** PEM file of the CA that signed the API server's serving certificate. */
  readonly caFile: string;
  /** Service-account signing key (PEM, EC P-256) the API server uses; for issuing tokens in tests. */
  readonly serviceAccountKeyFile: string;
  /** The temp dir holding everything (removed by stop() unless kept); ca.crt and ca.key sign certificates (issueCert). */
  readonly dir: string;
  readonly etcd: ManagedProcess;
  readonly apiServer: ManagedProcess;
  readonly controllerManager: ManagedProcess | undefined;
  /** A fresh client-node KubeConfig loaded from `kubeconfig`. */
  kubeConfig(): KubeConfig;
  /** Log tails of every process, for assertion messages. */
  logs(lines?: number): string;
  /** Stops every process started through this control plane (helpers included), then removes `dir`. Idempotent. */
  stop(): Promise<void>;
  /** Registers a process (e.g. a sidecar) to be stopped by stop() before the control plane itself. */
  adopt(p: ManagedProcess): void;
}

/** Admission plugins that need controllers this harness does not run (or that get in a test's way). */
const DISABLED_ADMISSION = [
  'ServiceAccount', // needs the "default" ServiceAccount per namespace (made by kube-controller-manager)
  'StorageObjectInUseProtection', // finalizers only kube-controller-manager removes
  'DefaultStorageClass',
  'LimitRanger',
  'ResourceQuota',
  'PodSecurity',
  'MutatingAdmissionWebhook',
  'ValidatingAdmissionWebhook',
];

async function openssl(cwd: string, args: string[]): Promise<void> {
  try {
    await execFileP('openssl', args, { cwd });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`openssl ${args.join(' ')} failed: ${err.stderr ?? err.message}`, { cause: e });
  }
}

export interface CertRequest {
  /** File name stem: <dir>/<name>.crt and <dir>/<name>.key. */
  readonly name: string;
  readonly cn: string;
  /** Organisation (a group, for client certificates), e.g. system:nodes. */
  readonly org?: string;
  readonly ips?: readonly string[];
  readonly dns?: readonly string[];
  /** serverAuth, clientAuth, or both. */
  readonly usage: 'server' | 'client' | 'both';
}

/** An EC P-256 key and a certificate for it signed by the CA in `dir` (ca.crt, ca.key); returns their paths. */
export async function issueCert(dir: string, req: CertRequest): Promise<{ cert: string; key: string }> {
  const key = `${req.name}.key`;
  const csr = `${req.name}.csr`;
  const ext = `${req.name}.ext`;
  await openssl(dir, ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', key]);
  await openssl(dir, ['req', '-new', '-key', key, '-subj', `/CN=${req.cn}${req.org ? `/O=${req.org}` : ''}`, '-out', csr]);
  const usage = { server: 'serverAuth', client: 'clientAuth', both: 'serverAuth,clientAuth' }[req.usage];
  const sans = [...(req.ips ?? []).map((ip) => `IP:${ip}`), ...(req.dns ?? []).map((d) => `DNS:${d}`)];
  await writeFile(
    join(dir, ext),
    `basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=${usage}\n` +
      (sans.length > 0 ? `subjectAltName=${sans.join(',')}\n` : ''),
  );
  await openssl(dir, ['x509', '-req', '-in', csr, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '7', '-extfile', ext, '-out', `${req.name}.crt`]);
  return { cert: join(dir, `${req.name}.crt`), key: join(dir, key) };
}

/** The first usable address of an IPv4 CIDR (the kubernetes Service's ClusterIP of a service range). */
export function firstAddress(cidr: string): string {
  const [net] = cidr.split('/');
  const parts = (net ?? '').split('.').map(Number);
  if (parts.length !== 4 || parts.some((n) => !Number.isInteger(n) || n < 0 || n > 255)) throw new Error(`not an IPv4 CIDR: ${cidr}`);
  const n = (((parts[0] ?? 0) << 24) | ((parts[1] ?? 0) << 16) | ((parts[2] ?? 0) << 8) | (parts[3] ?? 0)) + 1;
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** A CA, a serving certificate for the API server's addresses and kubernetes.default.svc, and a service-account key. */
async function makeCerts(dir: string, ips: string[]): Promise<{ ca: string; cert: string; key: string; saKey: string }> {
  await openssl(dir, ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'ca.key']);
  await openssl(dir, [
    'req', '-x509', '-new', '-key', 'ca.key', '-subj', '/CN=flashcsi-test-ca', '-days', '7', '-out', 'ca.crt',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  const serving = await issueCert(dir, {
    name: 'apiserver',
    cn: 'kube-apiserver',
    usage: 'server',
    ips: [...new Set(['127.0.0.1', ...ips])],
    dns: ['localhost', 'kubernetes', 'kubernetes.default', 'kubernetes.default.svc', 'kubernetes.default.svc.cluster.local'],
  });
  await openssl(dir, ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'sa.key']);
  return { ca: join(dir, 'ca.crt'), cert: serving.cert, key: serving.key, saKey: join(dir, 'sa.key') };
}

function kubeconfigYaml(server: string, caPem: Buffer, token: string): string {
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '- name: flashcsi-test',
    '  cluster:',
    `    server: ${server}`,
    `    certificate-authority-data: ${caPem.toString('base64')}`,
    'users:',
    '- name: admin',
    '  user:',
    `    token: ${token}`,
    'contexts:',
    '- name: flashcsi-test',
    '  context:',
    '    cluster: flashcsi-test',
    '    user: admin',
    '    namespace: default',
    'current-context: flashcsi-test',
    '',
  ].join('\n');
}

async function startEtcd(etcdBin: string, dir: string, timeoutMs: number): Promise<{ proc: ManagedProcess; url: string }> {
  // The ports are free when chosen but could be taken before etcd binds them: retry on "address already in use".
  for (let attempt = 1; ; attempt++) {
    const [client, peer] = [await freePort(), await freePort()];
    const url = `http://127.0.0.1:${client}`;
    const peerUrl = `http://127.0.0.1:${peer}`;
    const proc = startProcess(
      'etcd',
      etcdBin,
      [
        '--name=flashcsi',
        `--data-dir=${join(dir, 'etcd-data')}`,
        `--listen-client-urls=${url}`,
        `--advertise-client-urls=${url}`,
        `--listen-peer-urls=${peerUrl}`,
        `--initial-advertise-peer-urls=${peerUrl}`,
        `--initial-cluster=flashcsi=${peerUrl}`,
        '--initial-cluster-state=new',
        '--unsafe-no-fsync', // test data: durability across power loss is irrelevant, speed is not
        '--log-level=warn',
      ],
      { logFile: join(dir, 'etcd.log') },
    );
    try {
      await waitFor(
        'etcd /health',
        async () => {
          const r = await httpGet(`${url}/health`, { timeoutMs: 2000 });
          return r.status === 200 && r.body.includes('"true"') ? true : undefined;
        },
        { timeoutMs, watch: [proc] },
      );
      return { proc, url };
    } catch (e) {
      await proc.stop();
      if (attempt < 3 && /address already in use/.test(proc.logTail(200))) continue;
      throw e;
    }
  }
}

/**
 * Starts etcd and kube-apiserver (and kube-controller-manager if asked) on 127.0.0.1 with random ports,
 * waits for /readyz, writes an admin kubeconfig, and returns handles. Throws MissingToolsError if the
 * pinned binaries are not built.
 */
export async function startControlPlane(opts: ControlPlaneOptions = {}): Promise<ControlPlane> {
  const wantKcm = opts.controllerManager !== undefined && opts.controllerManager !== false;
  const tools = requireTools('etcd', 'kube-apiserver', ...(wantKcm ? ['kube-controller-manager'] : []));
  const timeoutMs = opts.readyTimeoutMs ?? 120_000;
  const keep = opts.keepDir === true || process.env['FLASHCSI_KEEP_K8S'] === '1';
  const dir = await mkdtemp(join(opts.parentDir ?? tmpdir(), 'flashcsi-k8s-'));
  const cluster = opts.cluster;
  if (cluster && firstAddress(cluster.serviceClusterIPRange) !== cluster.address) {
    throw new Error(`startControlPlane: the kubernetes Service's ClusterIP (${firstAddress(cluster.serviceClusterIPRange)}) must be the API server's address ${cluster.address}`);
  }
  const procs: ManagedProcess[] = [];
  const adopted: ManagedProcess[] = [];
  let stopped = false;

  const stopAll = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    for (const p of adopted.reverse()) await p.stop();
    for (const p of procs.reverse()) await p.stop();
    if (!keep) rmSync(dir, { recursive: true, force: true });
  };

  try {
    const certs = await makeCerts(dir, cluster ? [cluster.address] : [firstAddress('10.0.0.0/24')]);
    const kubeletClient = cluster
      ? await issueCert(dir, { name: 'apiserver-kubelet-client', cn: 'kube-apiserver-kubelet-client', org: 'system:masters', usage: 'client' })
      : undefined;
    const token = randomBytes(24).toString('hex');
    await writeFile(join(dir, 'tokens.csv'), `${token},admin,admin-uid,"system:masters"\n`, { mode: 0o600 });
    const etcd = await startEtcd(requiredPath(tools, 'etcd'), dir, timeoutMs);
    procs.push(etcd.proc);

    let apiServer: ManagedProcess | undefined;
    let server = '';
    for (let attempt = 1; ; attempt++) {
      const port = cluster ? 443 : await freePort();
      const address = cluster?.address ?? '127.0.0.1';
      server = `https://${address}:${port}`;
      apiServer = startProcess(
        'kube-apiserver',
        requiredPath(tools, 'kube-apiserver'),
        [
          `--etcd-servers=${etcd.url}`,
          `--bind-address=${address}`,
          `--advertise-address=${address}`,
          ...(cluster
            ? [
                `--kubelet-client-certificate=${kubeletClient?.cert ?? ''}`,
                `--kubelet-client-key=${kubeletClient?.key ?? ''}`,
                `--kubelet-certificate-authority=${certs.ca}`,
                '--kubelet-preferred-address-types=InternalIP',
              ]
            : ['--endpoint-reconciler-type=none']), // the reconciler refuses a loopback advertise address
          `--secure-port=${port}`,
          `--cert-dir=${join(dir, 'apiserver-certs')}`,
          `--tls-cert-file=${certs.cert}`,
          `--tls-private-key-file=${certs.key}`,
          `--client-ca-file=${certs.ca}`,
          `--token-auth-file=${join(dir, 'tokens.csv')}`,
          '--authorization-mode=Node,RBAC',
          ...(cluster ? [] : [`--disable-admission-plugins=${DISABLED_ADMISSION.join(',')}`, '--enable-admission-plugins=NamespaceLifecycle']),
          '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
          `--service-account-key-file=${certs.saKey}`,
          `--service-account-signing-key-file=${certs.saKey}`,
          `--service-cluster-ip-range=${cluster?.serviceClusterIPRange ?? '10.0.0.0/24'}`,
          '--allow-privileged=true',
          '--profiling=false',
          '--v=1',
          ...(opts.apiServerArgs ?? []),
        ],
        { logFile: join(dir, 'kube-apiserver.log') },
      );
      try {
        const ca = readFileSync(certs.ca);
        const readyUrl = `${server}/readyz`;
        await waitFor(
          'kube-apiserver /readyz',
          async () => {
            const r = await httpGet(readyUrl, { ca, token, timeoutMs: 5000 });
            if (r.status === 200) return true;
            throw new Error(`/readyz ${r.status}: ${r.body.split('\n').filter((l) => l.includes('[-]')).join('; ') || r.body.slice(0, 200)}`);
          },
          { timeoutMs, intervalMs: 200, watch: [etcd.proc, apiServer] },
        );
        break;
      } catch (e) {
        await apiServer.stop();
        if (attempt < 3 && !cluster && /address already in use/.test(apiServer.logTail(200))) continue;
        throw e;
      }
    }
    procs.push(apiServer);

    const kubeconfig = join(dir, 'kubeconfig');
    await writeFile(kubeconfig, kubeconfigYaml(server, readFileSync(certs.ca), token), { mode: 0o600 });

    let controllerManager: ManagedProcess | undefined;
    if (wantKcm) {
      const kcmOpts = typeof opts.controllerManager === 'object' ? opts.controllerManager : {};
      controllerManager = await startKubeControllerManager(requiredPath(tools, 'kube-controller-manager'), {
        dir,
        kubeconfig,
        caFile: certs.ca,
        saKey: certs.saKey,
        timeoutMs,
        controllers: kcmOpts.controllers ?? ['*'],
        args: kcmOpts.args ?? [],
      });
      procs.push(controllerManager);
    }

    const all = (): ManagedProcess[] => [...procs, ...adopted];
    return {
      kubeconfig,
      server,
      token,
      caFile: certs.ca,
      serviceAccountKeyFile: certs.saKey,
      dir,
      etcd: etcd.proc,
      apiServer,
      controllerManager,
      kubeConfig(): KubeConfig {
        const kc = new KubeConfig();
        kc.loadFromFile(kubeconfig);
        return kc;
      },
      logs: (lines = 30) => all().map((p) => `--- ${p.name} (${p.logFile}):\n${p.logTail(lines)}`).join('\n'),
      stop: stopAll,
      adopt: (p) => {
        adopted.push(p);
      },
    };
  } catch (e) {
    const keepOnFail = keep;
    await stopAll();
    if (e instanceof Error && !keepOnFail) e.message += `\n(set FLASHCSI_KEEP_K8S=1 to keep ${dir} with the logs)`;
    throw e;
  }
}

function requiredPath(tools: Record<string, string>, name: string): string {
  const p = tools[name];
  if (p === undefined) throw new Error(`unreachable: ${name} not resolved`);
  return p;
}

async function startKubeControllerManager(
  bin: string,
  o: { dir: string; kubeconfig: string; caFile: string; saKey: string; timeoutMs: number; controllers: string[]; args: string[] },
): Promise<ManagedProcess> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const proc = startProcess(
      'kube-controller-manager',
      bin,
      [
        `--kubeconfig=${o.kubeconfig}`,
        `--authentication-kubeconfig=${o.kubeconfig}`,
        `--authorization-kubeconfig=${o.kubeconfig}`,
        '--bind-address=127.0.0.1',
        `--secure-port=${port}`,
        `--cert-dir=${join(o.dir, 'kcm-certs')}`,
        '--leader-elect=false',
        `--controllers=${o.controllers.join(',')}`,
        `--service-account-private-key-file=${o.saKey}`,
        `--root-ca-file=${o.caFile}`,
        '--use-service-account-credentials=false',
        '--v=1',
        ...o.args,
      ],
      { logFile: join(o.dir, 'kube-controller-manager.log') },
    );
    try {
      await waitFor(
        'kube-controller-manager /healthz',
        async () => {
          const r = await httpGet(`https://127.0.0.1:${port}/healthz`, { insecure: true, timeoutMs: 2000 });
          return r.status === 200 ? true : undefined;
        },
        { timeoutMs: o.timeoutMs, intervalMs: 200, watch: [proc] },
      );
      return proc;
    } catch (e) {
      await proc.stop();
      if (attempt < 3 && /address already in use/.test(proc.logTail(200))) continue;
      throw e;
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Snapshot machinery

/** The API server's Status message of a request it rejected; fails if it accepted the request. */
export async function rejection(p: Promise<unknown>): Promise<{ code: number; message: string }> {
  try {
    await p;
  } catch (e) {
    if (!(e instanceof ApiException)) throw e;
    const body = typeof e.body === 'string' ? (JSON.parse(e.body) as { message?: string }) : (e.body as { message?: string });
    return { code: e.code as number, message: body.message ?? '' };
  }
  throw new Error('the API server accepted a request it must reject');
}

function isApiException(e: unknown, code: number): boolean {
  return e instanceof ApiException && e.code === code;
}

/** Reads the pinned snapshot CRDs (VolumeSnapshot, -Content, -Class and the VolumeGroupSnapshot trio). */
export async function loadSnapshotCrds(): Promise<V1CustomResourceDefinition[]> {
  const dir = snapshotCrdDir();
  const files = (await readdir(dir)).filter((f) => f.endsWith('.yaml')).sort();
  const out: V1CustomResourceDefinition[] = [];
  for (const f of files) {
    for (const doc of loadAllYaml(await readFile(join(dir, f), 'utf8')) as unknown[]) {
      const crd = doc as V1CustomResourceDefinition | null;
      if (crd?.kind === 'CustomResourceDefinition') out.push(crd);
    }
  }
  return out;
}

/** Creates (or replaces) every snapshot CRD and waits until each is Established; returns their names. */
export async function applySnapshotCrds(cp: ControlPlane, opts: { timeoutMs?: number } = {}): Promise<string[]> {
  const api = cp.kubeConfig().makeApiClient(ApiextensionsV1Api);
  const crds = await loadSnapshotCrds();
  const names: string[] = [];
  for (const crd of crds) {
    const name = crd.metadata?.name;
    if (name === undefined) throw new Error('snapshot CRD without metadata.name');
    names.push(name);
    try {
      await api.createCustomResourceDefinition({ body: crd });
    } catch (e) {
      if (!isApiException(e, 409)) throw e;
      const current = await api.readCustomResourceDefinition({ name });
      await api.replaceCustomResourceDefinition({
        name,
        body: { ...crd, metadata: { ...crd.metadata, resourceVersion: current.metadata?.resourceVersion ?? '' } },
      });
    }
  }
  for (const name of names) {
    await waitFor(
      `CRD ${name} Established`,
      async () => {
        const c = await api.readCustomResourceDefinition({ name });
        return c.status?.conditions?.some((x) => x.type === 'Established' && x.status === 'True') ? true : undefined;
      },
      { timeoutMs: opts.timeoutMs ?? 30_000, watch: [cp.apiServer] },
    );
  }
  // Established is not yet served: until its storage is initialised a new resource answers 429
  // "storage is (re)initializing". Wait until every served version lists.
  const custom = cp.kubeConfig().makeApiClient(CustomObjectsApi);
  for (const crd of crds) {
    for (const v of crd.spec.versions.filter((x) => x.served)) {
      await waitFor(
        `${crd.spec.names.plural}.${crd.spec.group}/${v.name} served`,
        async () => {
          await custom.listClusterCustomObject({ group: crd.spec.group, version: v.name, plural: crd.spec.names.plural, limit: 1 });
          return true;
        },
        { timeoutMs: opts.timeoutMs ?? 30_000, watch: [cp.apiServer] },
      );
    }
  }
  return names;
}

/**
 * Runs external-snapshotter's snapshot-controller against the control plane (no leader election), and
 * waits until its HTTP endpoint serves /metrics. Adopted by `cp`: cp.stop() stops it too.
 */
export async function startSnapshotController(cp: ControlPlane, opts: { args?: string[]; timeoutMs?: number } = {}): Promise<ManagedProcess> {
  const bin = toolPath('snapshot-controller');
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const proc = startProcess(
      'snapshot-controller',
      bin,
      [`--kubeconfig=${cp.kubeconfig}`, '--leader-election=false', `--http-endpoint=127.0.0.1:${port}`, '--v=4', ...(opts.args ?? [])],
      { logFile: join(cp.dir, `snapshot-controller-${attempt}.log`) },
    );
    try {
      await waitFor(
        'snapshot-controller /metrics',
        async () => {
          const r = await httpGet(`http://127.0.0.1:${port}/metrics`, { timeoutMs: 2000 });
          return r.status === 200 ? true : undefined;
        },
        { timeoutMs: opts.timeoutMs ?? 30_000, watch: [proc, cp.apiServer] },
      );
      cp.adopt(proc);
      return proc;
    } catch (e) {
      await proc.stop();
      if (attempt < 3 && /address already in use/.test(proc.logTail(200))) continue;
      throw e;
    }
  }
}
