// Shared helpers of the packaging tests: run the pinned helm and kubectl, render the chart, parse
// manifests, and install CRDs on the test control plane (test/k8s/harness.ts).
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ApiextensionsV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import yaml from 'js-yaml';
import { repoRoot, toolPath, waitFor, type ControlPlane } from '../k8s/harness.js';

export const ROOT = repoRoot();
export const CHART = join(ROOT, 'charts', 'flashcsi');
export const CRD_DIR = join(CHART, 'crds');

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a program to completion (never throws for a non-zero exit; the caller asserts). */
export function run(file: string, args: readonly string[], opts: { env?: NodeJS.ProcessEnv; input?: string; cwd?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      args,
      { cwd: opts.cwd ?? ROOT, env: opts.env ?? process.env, maxBuffer: 64 * 1024 * 1024, timeout: opts.timeoutMs ?? 120_000 },
      (err, stdout, stderr) => {
        if (err && typeof (err as { code?: unknown }).code !== 'number') {
          reject(new Error(`${file} ${args.join(' ')}: ${err.message}\n${stderr}`));
          return;
        }
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** Formats a run for assertion messages. */
export function show(r: RunResult): string {
  return `exit ${r.code}\n--- stdout:\n${r.stdout}\n--- stderr:\n${r.stderr}`;
}

export function helm(args: readonly string[]): Promise<RunResult> {
  return run(toolPath('helm'), args);
}

export function kubectl(cp: ControlPlane, args: readonly string[], input?: string): Promise<RunResult> {
  return run(toolPath('kubectl'), [`--kubeconfig=${cp.kubeconfig}`, ...args], input === undefined ? {} : { input });
}

/** --set flags that turn on every optional feature of the chart. */
export const ALL_FEATURES: readonly string[] = [
  'snapshotController.enabled=true',
  'sidecars.registrarAndLivenessProbe=true',
  'snapshotMetadata.enabled=true',
  'snapshotMetadata.tlsSecretName=flashcsi-snapshot-metadata-tls',
  // base64 of a PEM header line: the CRD takes any bytes; the sidecar is not started here.
  'snapshotMetadata.caCert=LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==',
  'metrics.serviceMonitor.enabled=true',
  'storageClass.isDefault=true',
  'volumeSnapshotClass.isDefault=true',
  'imagePullSecrets[0]=registry-credentials',
  'node.resources.requests.cpu=100m',
  'node.resources.limits.memory=1Gi',
  'coordinator.resources.requests.memory=64Mi',
  'node.maxVolumesPerNode=24',
  'node.updateStrategy.type=RollingUpdate',
  'node.updateStrategy.rollingUpdate.maxUnavailable=1',
  'node.nodeSelector.kubernetes\\.io/os=linux',
  'node.podAnnotations.example\\.com/team=storage',
  'coordinator.tolerations[0].key=dedicated',
  'coordinator.tolerations[0].operator=Exists',
  'storageClass.mountOptions[0]=noatime',
];

/** `helm template flashcsi charts/flashcsi -n flashcsi [--set …]`. */
export async function renderChart(sets: readonly string[] = []): Promise<RunResult> {
  return helm(['template', 'flashcsi', CHART, '--namespace', 'flashcsi', ...sets.flatMap((s) => ['--set', s])]);
}

export interface Manifest {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [key: string]: unknown;
}

/**
 * Every YAML document of a manifest stream (empty documents dropped), as plain data: js-yaml, not
 * client-node's loadAllYaml, which maps known kinds onto its model classes and drops unknown fields.
 */
export function parseManifests(text: string): Manifest[] {
  return yaml.loadAll(text).filter((d): d is Manifest => typeof d === 'object' && d !== null);
}

/** One YAML document as plain data. */
export function parseYaml(text: string): unknown {
  return yaml.load(text);
}

export function find(docs: readonly Manifest[], kind: string, name: string): Manifest {
  const d = docs.find((x) => x.kind === kind && x.metadata.name === name);
  if (!d) throw new Error(`no ${kind} ${name} in [${docs.map((x) => `${x.kind}/${x.metadata.name}`).join(', ')}]`);
  return d;
}

async function waitEstablishedAndServed(cp: ControlPlane, names: readonly string[]): Promise<void> {
  const ext = cp.kubeConfig().makeApiClient(ApiextensionsV1Api);
  const custom = cp.kubeConfig().makeApiClient(CustomObjectsApi);
  for (const name of names) {
    const crd = await waitFor(
      `CRD ${name} Established`,
      async () => {
        const c = await ext.readCustomResourceDefinition({ name });
        return c.status?.conditions?.some((x) => x.type === 'Established' && x.status === 'True') ? c : undefined;
      },
      { timeoutMs: 30_000, watch: [cp.apiServer] },
    );
    for (const v of crd.spec.versions.filter((x) => x.served)) {
      await waitFor(
        `${name}/${v.name} served`,
        async () => {
          await custom.listClusterCustomObject({ group: crd.spec.group, version: v.name, plural: crd.spec.names.plural, limit: 1 });
          return true;
        },
        { timeoutMs: 30_000, watch: [cp.apiServer] },
      );
    }
  }
}

/** Applies charts/flashcsi/crds for real (kubectl apply --server-side) and waits until they are served. */
export async function applyFlashcsiCrds(cp: ControlPlane): Promise<string[]> {
  const r = await kubectl(cp, ['apply', '--server-side', '-f', CRD_DIR]);
  if (r.code !== 0) throw new Error(`applying ${CRD_DIR} failed: ${show(r)}`);
  const names = readdirSync(CRD_DIR)
    .filter((f) => f.endsWith('.yaml'))
    .flatMap((f) => parseManifests(readFileSync(join(CRD_DIR, f), 'utf8')))
    .map((d) => d.metadata.name);
  await waitEstablishedAndServed(cp, names);
  return names;
}

/**
 * Stand-ins for two third-party CRDs the optional features use and the harness does not ship:
 * prometheus-operator's ServiceMonitor and external-snapshot-metadata's SnapshotMetadataService. Only
 * their group, version, kind and scope are real (and the SnapshotMetadataService's required spec
 * fields); the rest of their schema is open, so the API server checks our objects' envelope only.
 */
export async function applyStandInCrds(cp: ControlPlane): Promise<void> {
  const openSpec = { type: 'object', 'x-kubernetes-preserve-unknown-fields': true };
  const crds = [
    {
      apiVersion: 'apiextensions.k8s.io/v1',
      kind: 'CustomResourceDefinition',
      metadata: { name: 'servicemonitors.monitoring.coreos.com' },
      spec: {
        group: 'monitoring.coreos.com',
        scope: 'Namespaced',
        names: { kind: 'ServiceMonitor', listKind: 'ServiceMonitorList', plural: 'servicemonitors', singular: 'servicemonitor' },
        versions: [{ name: 'v1', served: true, storage: true, schema: { openAPIV3Schema: { type: 'object', properties: { spec: openSpec } } } }],
      },
    },
    {
      apiVersion: 'apiextensions.k8s.io/v1',
      kind: 'CustomResourceDefinition',
      // *.k8s.io groups need the API-review annotation, as the upstream CRD has.
      metadata: {
        name: 'snapshotmetadataservices.cbt.storage.k8s.io',
        annotations: { 'api-approved.kubernetes.io': 'https://github.com/kubernetes-csi/external-snapshot-metadata' },
      },
      spec: {
        group: 'cbt.storage.k8s.io',
        scope: 'Cluster',
        names: { kind: 'SnapshotMetadataService', listKind: 'SnapshotMetadataServiceList', plural: 'snapshotmetadataservices', singular: 'snapshotmetadataservice' },
        versions: [
          {
            name: 'v1beta1',
            served: true,
            storage: true,
            schema: {
              openAPIV3Schema: {
                type: 'object',
                required: ['spec'],
                properties: {
                  spec: {
                    type: 'object',
                    required: ['address', 'audience', 'caCert'],
                    properties: { address: { type: 'string' }, audience: { type: 'string' }, caCert: { type: 'string', format: 'byte' } },
                  },
                },
              },
            },
          },
        ],
      },
    },
  ];
  const r = await kubectl(cp, ['apply', '--server-side', '-f', '-'], crds.map((c) => JSON.stringify(c)).join('\n---\n'));
  if (r.code !== 0) throw new Error(`applying stand-in CRDs failed: ${show(r)}`);
  await waitEstablishedAndServed(cp, crds.map((c) => c.metadata.name));
}
