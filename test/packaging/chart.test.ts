// The Helm chart, statically: helm lint, helm template (default values and every optional feature),
// values.schema.json rejecting typos, the chart's promises (least privilege, pinned images, the node
// plugin the only privileged container), docs/rbac.md matching the rendered RBAC, and deploy/ being
// current. The API server's verdict on the same manifests is in apiserver.test.ts.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pinnedVersions } from '../k8s/harness.js';
import { ALL_FEATURES, CHART, ROOT, find, helm, parseManifests, parseYaml, renderChart, run, show, type Manifest } from './helpers.js';

interface Container {
  name: string;
  image: string;
  args?: string[];
  securityContext?: Record<string, unknown>;
  ports?: Array<{ name: string; containerPort: number }>;
  volumeMounts?: Array<{ name: string; mountPath: string; mountPropagation?: string; readOnly?: boolean }>;
  env?: Array<{ name: string }>;
}
interface PodSpec {
  containers: Container[];
  serviceAccountName: string;
  securityContext?: Record<string, unknown>;
  tolerations?: unknown[];
  priorityClassName?: string;
  hostNetwork?: boolean;
  volumes: Array<{ name: string; hostPath?: { path: string; type?: string } }>;
}
const podSpec = (m: Manifest): PodSpec => (m['spec'] as { template: { spec: PodSpec } }).template.spec;
const container = (p: PodSpec, name: string): Container => {
  const c = p.containers.find((x) => x.name === name);
  if (!c) throw new Error(`no container ${name} in [${p.containers.map((x) => x.name).join(', ')}]`);
  return c;
};

let defaultRender: Promise<Manifest[]> | undefined;
function renderDefault(): Promise<Manifest[]> {
  defaultRender ??= renderChart().then((r) => {
    assert.equal(r.code, 0, show(r));
    return parseManifests(r.stdout);
  });
  return defaultRender;
}
let allRender: Promise<Manifest[]> | undefined;
function renderAll(): Promise<Manifest[]> {
  allRender ??= renderChart(ALL_FEATURES).then((r) => {
    assert.equal(r.code, 0, show(r));
    return parseManifests(r.stdout);
  });
  return allRender;
}

describe('helm chart charts/flashcsi', { timeout: 120_000 }, () => {
  it('passes helm lint --strict, with default values and with every optional feature on', async () => {
    const plain = await helm(['lint', '--strict', CHART]);
    assert.equal(plain.code, 0, show(plain));
    assert.match(plain.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
    assert.doesNotMatch(plain.stdout, /\[(WARNING|ERROR)\]/, show(plain));
    const all = await helm(['lint', '--strict', CHART, ...ALL_FEATURES.flatMap((s) => ['--set', s])]);
    assert.equal(all.code, 0, show(all));
    assert.doesNotMatch(all.stdout, /\[(WARNING|ERROR)\]/, show(all));
  });

  it('renders with default values: the components, and nothing optional', async () => {
    const r = await renderChart();
    assert.equal(r.code, 0, show(r));
    assert.equal(r.stderr, '', 'helm template writes no warnings');
    const docs = parseManifests(r.stdout);
    const kinds = docs.map((d) => `${d.kind}/${d.metadata.name}`).sort();
    assert.deepEqual(kinds, [
      'CSIDriver/flashcsi.io',
      'ClusterRole/flashcsi-coordinator',
      'ClusterRole/flashcsi-coordinator-resizer',
      'ClusterRole/flashcsi-node-agent',
      'ClusterRole/flashcsi-node-provisioner',
      'ClusterRole/flashcsi-node-snapshotter',
      'ClusterRoleBinding/flashcsi-coordinator',
      'ClusterRoleBinding/flashcsi-coordinator-resizer',
      'ClusterRoleBinding/flashcsi-node-agent',
      'ClusterRoleBinding/flashcsi-node-provisioner',
      'ClusterRoleBinding/flashcsi-node-snapshotter',
      'DaemonSet/flashcsi-node',
      'Deployment/flashcsi-coordinator',
      'PodDisruptionBudget/flashcsi-coordinator',
      'Role/flashcsi-coordinator-leader-election',
      'Role/flashcsi-coordinator-resizer-leader-election',
      'Role/flashcsi-node-capacity',
      'RoleBinding/flashcsi-coordinator-leader-election',
      'RoleBinding/flashcsi-coordinator-resizer-leader-election',
      'RoleBinding/flashcsi-node-capacity',
      'Service/flashcsi-metrics',
      'ServiceAccount/flashcsi-coordinator',
      'ServiceAccount/flashcsi-node',
      'StorageClass/flashcsi',
      'VolumeSnapshotClass/flashcsi',
    ]);
    for (const d of docs) {
      if (['CSIDriver', 'ClusterRole', 'ClusterRoleBinding', 'StorageClass', 'VolumeSnapshotClass'].includes(d.kind)) continue;
      assert.equal(d.metadata.namespace, 'flashcsi', `${d.kind}/${d.metadata.name} is in the release namespace`);
    }
  });

  it('renders with every optional feature on', async () => {
    const r = await renderChart(ALL_FEATURES);
    assert.equal(r.code, 0, show(r));
    assert.equal(r.stderr, '');
    const docs = await renderAll();
    for (const k of [
      'Deployment/flashcsi-snapshot-controller',
      'ClusterRole/flashcsi-snapshot-controller',
      'ClusterRole/flashcsi-node-snapshot-metadata',
      'Service/flashcsi-snapshot-metadata',
      'SnapshotMetadataService/flashcsi.io',
      'ServiceMonitor/flashcsi',
    ]) {
      const [kind = '', name = ''] = k.split('/');
      find(docs, kind, name);
    }
    const node = podSpec(find(docs, 'DaemonSet', 'flashcsi-node'));
    assert.deepEqual(container(node, 'csi-snapshot-metadata').args?.filter((a) => a.startsWith('--csi-address')), ['--csi-address=/csi/metadata.sock']);
    const sc = find(docs, 'Deployment', 'flashcsi-snapshot-controller');
    assert.ok(container(podSpec(sc), 'snapshot-controller').args?.includes('--enable-distributed-snapshotting'));
  });

  it('values.schema.json rejects unknown keys (typos) and bad values, naming the key', async () => {
    const cases: Array<[string, RegExp]> = [
      ['node.tolerateAllTaint=true', /additional properties 'tolerateAllTaint' not allowed/],
      ['nodes.priorityClassName=x', /additional properties 'nodes' not allowed/],
      ['sidecars.provisioner.image.tga=v1', /additional properties 'tga' not allowed/],
      ['coordinator.podDisruptionBudget.minAvailable=1', /additional properties 'minAvailable' not allowed/],
      ['storageClass.fsType=btrfs', /fsType/],
      ['storageClass.grainSize=1000', /grainSize/],
      ['node.updateStrategy.type=Sometimes', /updateStrategy/],
      ['logLevel=verbose', /logLevel/],
      ['node.attach=loop', /attach/],
      ['node.fuseWorkers=0', /\/node\/fuseWorkers': minimum: got 0, want 1/],
      ['node.fuseWorkers=65', /\/node\/fuseWorkers': maximum: got 65, want 64/],
    ];
    for (const [set, want] of cases) {
      const r = await renderChart([set]);
      assert.notEqual(r.code, 0, `--set ${set} must be rejected\n${show(r)}`);
      assert.match(r.stderr, /values don't meet the specifications of the schema/, show(r));
      assert.match(r.stderr, want, show(r));
    }
    // A grain size given as a number is accepted (and rendered as the string the parameter needs).
    const ok = await renderChart(['storageClass.grainSize=131072']);
    assert.equal(ok.code, 0, show(ok));
    const sc = find(parseManifests(ok.stdout), 'StorageClass', 'flashcsi');
    assert.equal((sc['parameters'] as Record<string, string>)['grainSize'], '131072');
    // The edges of the FUSE worker range are accepted and reach the node plugin's args.
    for (const n of [1, 64]) {
      const workers = await renderChart([`node.fuseWorkers=${n}`]);
      assert.equal(workers.code, 0, show(workers));
      const args = container(podSpec(find(parseManifests(workers.stdout), 'DaemonSet', 'flashcsi-node')), 'flashcsi').args ?? [];
      assert.ok(args.includes(`--fuse-workers=${n}`), args.join(' '));
    }
  });

  it('values.schema.json closes every fixed-shape object; only maps and the affinity terms stay open', () => {
    const schema = JSON.parse(readFileSync(join(CHART, 'values.schema.json'), 'utf8')) as Record<string, unknown>;
    const open: string[] = [];
    const walk = (node: unknown, path: string): void => {
      if (typeof node !== 'object' || node === null) return;
      const n = node as Record<string, unknown>;
      if (n['type'] === 'object') {
        assert.ok('additionalProperties' in n, `${path}: an object schema must say additionalProperties`);
        if (n['additionalProperties'] === true) open.push(path);
      }
      for (const [k, v] of Object.entries(n)) walk(v, `${path}/${k}`);
    };
    walk(schema, '#');
    assert.equal(schema['additionalProperties'], false);
    assert.deepEqual(open.sort(), [
      '#/definitions/affinity/properties/nodeAffinity',
      '#/definitions/affinity/properties/podAffinity',
      '#/definitions/affinity/properties/podAntiAffinity',
    ]);
  });

  it('values.yaml documents every key (helm-docs "# --" comments) and matches the schema', () => {
    const text = readFileSync(join(CHART, 'values.yaml'), 'utf8');
    const lines = text.split('\n');
    const undocumented: string[] = [];
    lines.forEach((line, i) => {
      const m = /^(\s*)([A-Za-z][\w]*):/.exec(line);
      if (!m) return;
      let j = i - 1;
      while (j >= 0 && /^\s*#(?! --)/.test(lines[j] ?? '')) j--; // continuation lines of the comment
      if (!/^\s*# -- /.test(lines[j] ?? '')) undocumented.push(`line ${i + 1}: ${line.trim()}`);
    });
    assert.deepEqual(undocumented, []);
    // Every key in values.yaml is in the schema, and vice versa for the top level.
    const values = parseYaml(text) as Record<string, unknown>;
    const schema = JSON.parse(readFileSync(join(CHART, 'values.schema.json'), 'utf8')) as { properties: Record<string, unknown> };
    assert.deepEqual(Object.keys(values).sort(), Object.keys(schema.properties).sort());
  });

  it('Chart.yaml: apiVersion v2 and appVersion = package.json version', () => {
    const chart = parseYaml(readFileSync(join(CHART, 'Chart.yaml'), 'utf8')) as { apiVersion: string; appVersion: string; name: string };
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    assert.equal(chart.apiVersion, 'v2');
    assert.equal(chart.name, 'flashcsi');
    assert.equal(chart.appVersion, pkg.version);
  });

  it('pins every image; sidecars built for the tests use the same versions as scripts/go-tools.versions', async () => {
    const docs = await renderAll();
    const images = docs
      .filter((d) => d.kind === 'DaemonSet' || d.kind === 'Deployment')
      .flatMap((d) => podSpec(d).containers.map((c) => c.image));
    for (const image of images) assert.match(image, /^[a-z0-9./-]+:v?\d+\.\d+\.\d+$/, `${image} is pinned to a release`);
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    assert.ok(images.includes(`ghcr.io/flashcsi/flashcsi:${pkg.version}`));
    const { bins } = pinnedVersions();
    for (const bin of ['csi-provisioner', 'csi-snapshotter', 'csi-resizer', 'snapshot-controller']) {
      const pin = bins.get(bin);
      assert.ok(pin, `${bin} is pinned in scripts/go-tools.versions`);
      assert.ok(images.includes(`registry.k8s.io/sig-storage/${bin}:${pin.version}`), `${bin} image at ${pin.version}; images: ${images.join(' ')}`);
    }
  });

  it('node DaemonSet: the plugin is the only privileged container; the sidecars run node-local', async () => {
    const docs = await renderDefault();
    const ds = find(docs, 'DaemonSet', 'flashcsi-node');
    const spec = podSpec(ds);
    assert.equal(spec.serviceAccountName, 'flashcsi-node');
    assert.notEqual(spec.hostNetwork, true);
    assert.deepEqual(spec.tolerations, [{ operator: 'Exists' }]);
    assert.equal(spec.priorityClassName, 'system-node-critical');
    assert.deepEqual((ds['spec'] as { updateStrategy: unknown }).updateStrategy, { type: 'OnDelete' });
    assert.deepEqual(spec.containers.map((c) => c.name), ['flashcsi', 'csi-provisioner', 'csi-snapshotter']);

    const plugin = container(spec, 'flashcsi');
    assert.deepEqual(plugin.args, [
      'supervise',
      '--',
      'plugin',
      '--mode=all',
      '--endpoint=unix:///csi/csi.sock',
      '--state-dir=/var/lib/flashcsi',
      '--node-id=$(NODE_NAME)',
      '--snapshot-metadata-endpoint=unix:///csi/metadata.sock',
      '--agent',
      '--metrics-address=:9808',
      '--log-level=info',
      '--attach=auto',
      '--fuse-workers=3',
      '--registration-dir=/var/lib/kubelet/plugins_registry',
      '--kubelet-registration-path=/var/lib/kubelet/plugins/flashcsi.io/csi.sock',
    ]);
    // Its own /healthz (on the metrics port) for both probes: no livenessprobe sidecar.
    assert.equal((plugin as { livenessProbe?: { httpGet?: { port?: string } } }).livenessProbe?.httpGet?.port, 'node-metrics');
    assert.equal((plugin as { readinessProbe?: { httpGet?: { port?: string } } }).readinessProbe?.httpGet?.port, 'node-metrics');
    assert.deepEqual(plugin.securityContext, { privileged: true, runAsUser: 0, runAsNonRoot: false });
    const mounts = Object.fromEntries((plugin.volumeMounts ?? []).map((m) => [m.mountPath, m]));
    assert.equal(mounts['/var/lib/kubelet']?.mountPropagation, 'Bidirectional');
    assert.equal(mounts['/sys']?.readOnly, true);
    assert.equal(mounts['/lib/modules']?.readOnly, true);
    for (const p of ['/csi', '/dev', '/var/lib/flashcsi', '/run/udev']) assert.ok(mounts[p], `flashcsi mounts ${p}`);
    const hostPaths = Object.fromEntries(spec.volumes.filter((v) => v.hostPath).map((v) => [v.name, v.hostPath]));
    assert.deepEqual(hostPaths['plugin-dir'], { path: '/var/lib/kubelet/plugins/flashcsi.io', type: 'DirectoryOrCreate' });
    assert.deepEqual(hostPaths['state-dir'], { path: '/var/lib/flashcsi', type: 'DirectoryOrCreate' });
    assert.equal(hostPaths['registration-dir'], undefined, 'the plugin reaches plugins_registry through its kubelet-dir mount');

    for (const c of spec.containers.filter((x) => x.name !== 'flashcsi')) {
      assert.notEqual(c.securityContext?.['privileged'], true, `${c.name} is not privileged`);
      assert.equal(c.securityContext?.['allowPrivilegeEscalation'], false, `${c.name}: no privilege escalation`);
      assert.equal(c.securityContext?.['readOnlyRootFilesystem'], true, `${c.name}: read-only root`);
      assert.deepEqual(c.securityContext?.['capabilities'], { drop: ['ALL'] }, `${c.name}: no capabilities`);
    }
    const provisioner = container(spec, 'csi-provisioner').args ?? [];
    for (const a of ['--node-deployment', '--node-deployment-immediate-binding=true', '--strict-topology', '--immediate-topology=false', '--enable-capacity', '--capacity-ownerref-level=1']) {
      assert.ok(provisioner.includes(a), `csi-provisioner ${a}`);
    }
    assert.deepEqual(
      container(spec, 'csi-provisioner').env?.map((e) => e.name).filter((n) => ['NODE_NAME', 'NAMESPACE', 'POD_NAME'].includes(n)).sort(),
      ['NAMESPACE', 'NODE_NAME', 'POD_NAME'],
    );
    assert.ok(container(spec, 'csi-snapshotter').args?.includes('--node-deployment'));
    assert.ok(container(spec, 'csi-snapshotter').env?.some((e) => e.name === 'NODE_NAME'));
    // The standard sidecars instead, as an option.
    const withSidecars = podSpec(find(await renderAll(), 'DaemonSet', 'flashcsi-node'));
    assert.deepEqual(withSidecars.containers.map((c) => c.name).slice(0, 5), ['flashcsi', 'node-driver-registrar', 'liveness-probe', 'csi-provisioner', 'csi-snapshotter']);
    assert.ok(container(withSidecars, 'node-driver-registrar').args?.includes('--kubelet-registration-path=/var/lib/kubelet/plugins/flashcsi.io/csi.sock'));
    assert.ok(!(container(withSidecars, 'flashcsi').args ?? []).some((a) => a.startsWith('--registration-dir')));
    // node.maxVolumesPerNode reaches the plugin (0, the default, passes no flag: no limit).
    assert.ok(container(withSidecars, 'flashcsi').args?.includes('--max-volumes-per-node=24'));
    const withSidecarsPaths = Object.fromEntries(withSidecars.volumes.filter((v) => v.hostPath).map((v) => [v.name, v.hostPath]));
    assert.deepEqual(withSidecarsPaths['registration-dir'], { path: '/var/lib/kubelet/plugins_registry', type: 'Directory' });
    // No leader election in node-deployment mode (the sidecars refuse it).
    for (const c of spec.containers) assert.ok(!(c.args ?? []).some((a) => a.startsWith('--leader-election')), `${c.name} has no leader election`);
  });

  it('coordinator Deployment: 2 leader-elected replicas, non-root, read-only, unprivileged', async () => {
    const docs = await renderDefault();
    const dep = find(docs, 'Deployment', 'flashcsi-coordinator');
    assert.equal((dep['spec'] as { replicas: number }).replicas, 2);
    const spec = podSpec(dep);
    assert.equal(spec.serviceAccountName, 'flashcsi-coordinator');
    assert.deepEqual(spec.containers.map((c) => c.name), ['coordinator', 'controller', 'csi-resizer']);
    assert.equal(spec.securityContext?.['runAsNonRoot'], true);
    assert.equal(spec.securityContext?.['runAsUser'], 1000);
    assert.deepEqual(container(spec, 'coordinator').args, [
      'coordinator',
      '--namespace=$(POD_NAMESPACE)',
      '--lease-name=flashcsi-coordinator',
      '--identity=$(POD_NAME)',
      '--metrics-address=:9809',
      '--log-level=info',
    ]);
    assert.deepEqual(container(spec, 'controller').args, [
      'plugin',
      '--mode=controller',
      '--endpoint=unix:///csi/csi.sock',
      '--state-dir=/tmp/flashcsi',
      '--node-id=controller',
      '--log-level=info',
      '--metrics-address=:9898',
    ]);
    assert.ok(container(spec, 'csi-resizer').args?.includes('--leader-election'));
    for (const c of spec.containers) {
      assert.deepEqual(
        { ...c.securityContext },
        { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] }, seccompProfile: { type: 'RuntimeDefault' } },
        c.name,
      );
    }
    assert.equal(spec.volumes.some((v) => v.hostPath), false, 'no host paths in the coordinator pod');
  });

  it('CSIDriver, StorageClass, VolumeSnapshotClass and the metrics Service are as documented', async () => {
    const docs = await renderDefault();
    assert.deepEqual(find(docs, 'CSIDriver', 'flashcsi.io')['spec'], {
      attachRequired: false,
      podInfoOnMount: false,
      volumeLifecycleModes: ['Persistent'],
      fsGroupPolicy: 'File',
      storageCapacity: true,
      requiresRepublish: false,
      seLinuxMount: false,
    });
    const sc = find(docs, 'StorageClass', 'flashcsi');
    assert.equal(sc['provisioner'], 'flashcsi.io');
    assert.equal(sc['volumeBindingMode'], 'WaitForFirstConsumer');
    assert.equal(sc['allowVolumeExpansion'], true);
    assert.equal(sc['reclaimPolicy'], 'Delete');
    assert.deepEqual(sc['parameters'], { 'csi.storage.k8s.io/fstype': 'ext4', grainSize: '65536' });
    const vsc = find(docs, 'VolumeSnapshotClass', 'flashcsi');
    assert.equal(vsc['driver'], 'flashcsi.io');
    assert.equal(vsc['deletionPolicy'], 'Delete');
    const svc = find(docs, 'Service', 'flashcsi-metrics')['spec'] as { ports: Array<{ name: string; port: number; targetPort: string }> };
    assert.deepEqual(svc.ports.map((p) => [p.name, p.port, p.targetPort]), [
      ['node-metrics', 9808, 'node-metrics'],
      ['coord-metrics', 9809, 'coord-metrics'],
    ]);
    // The named target ports exist on the right pods only.
    const nodePorts = podSpec(find(docs, 'DaemonSet', 'flashcsi-node')).containers.flatMap((c) => c.ports ?? []).map((p) => p.name);
    const coordPorts = podSpec(find(docs, 'Deployment', 'flashcsi-coordinator')).containers.flatMap((c) => c.ports ?? []).map((p) => p.name);
    assert.ok(nodePorts.includes('node-metrics') && !nodePorts.includes('coord-metrics'));
    assert.ok(coordPorts.includes('coord-metrics') && !coordPorts.includes('node-metrics'));
  });

  it('docs/rbac.md lists exactly the rules the chart grants (every optional feature on)', async () => {
    const docs = await renderAll();
    type Rule = { apiGroups?: string[]; resources?: string[]; verbs: string[]; resourceNames?: string[] };
    const granted = new Set<string>();
    for (const d of docs.filter((x) => x.kind === 'ClusterRole' || x.kind === 'Role')) {
      for (const rule of (d['rules'] as Rule[] | undefined) ?? []) {
        for (const g of rule.apiGroups ?? ['']) {
          for (const r of rule.resources ?? []) {
            for (const v of rule.verbs) granted.add(`${d.kind}/${d.metadata.name} | ${g === '' ? 'core' : g} | ${r}${rule.resourceNames ? ` (${rule.resourceNames.join(',')})` : ''} | ${v}`);
          }
        }
      }
    }
    const documented = new Set<string>();
    const md = readFileSync(join(ROOT, 'docs', 'rbac.md'), 'utf8');
    for (const line of md.split('\n')) {
      // | `ClusterRole/flashcsi-node-agent` | core | persistentvolumes | get, list, watch | why |
      const m = /^\|\s*`((?:Cluster)?Role\/[\w-]+)`\s*\|\s*([^|]+?)\s*\|\s*([^|]+?)\s*\|\s*([^|]+?)\s*\|/.exec(line);
      if (!m) continue;
      const [, role = '', group = '', resources = '', verbs = ''] = m;
      for (const r of resources.split(',').map((s) => s.trim().replace(/`/g, ''))) {
        for (const v of verbs.split(',').map((s) => s.trim())) documented.add(`${role} | ${group.replace(/`/g, '')} | ${r} | ${v}`);
      }
    }
    const missing = [...granted].filter((g) => !documented.has(g)).sort();
    const extra = [...documented].filter((g) => !granted.has(g)).sort();
    assert.deepEqual({ missing, extra }, { missing: [], extra: [] }, 'docs/rbac.md table and the rendered RBAC differ');
  });

  it('every ServiceAccount is bound only to its own roles', async () => {
    const docs = await renderAll();
    const bindings = docs.filter((d) => d.kind === 'ClusterRoleBinding' || d.kind === 'RoleBinding');
    for (const b of bindings) {
      const subjects = b['subjects'] as Array<{ kind: string; name: string; namespace: string }>;
      const roleRef = b['roleRef'] as { name: string };
      assert.equal(subjects.length, 1);
      const sa = subjects[0]?.name ?? '';
      assert.ok(roleRef.name.startsWith(sa), `${b.kind}/${b.metadata.name}: ${roleRef.name} is one of ${sa}'s roles`);
      assert.equal(subjects[0]?.namespace, 'flashcsi');
    }
  });

  it('deploy/ is current (scripts/render-deploy.sh --check re-renders into a temp dir and diffs)', async () => {
    const r = await run(join(ROOT, 'scripts', 'render-deploy.sh'), ['--check']);
    assert.equal(r.code, 0, show(r));
    assert.deepEqual(readdirSync(join(ROOT, 'deploy')).sort(), ['crds.yaml', 'flashcsi.yaml'], 'deploy/ holds only generated files');
    const text = readFileSync(join(ROOT, 'deploy', 'flashcsi.yaml'), 'utf8');
    const docs = parseManifests(text);
    assert.equal(docs[0]?.kind, 'Namespace');
    assert.equal(docs[0]?.metadata.labels?.['pod-security.kubernetes.io/enforce'], 'privileged');
    const crds = parseManifests(readFileSync(join(ROOT, 'deploy', 'crds.yaml'), 'utf8'));
    assert.deepEqual(crds.map((c) => c.metadata.name).sort(), [
      'volumerollbacks.flashcsi.io',
      'volumetransactionparticipants.flashcsi.io',
      'volumetransactions.flashcsi.io',
    ]);
  });
});
