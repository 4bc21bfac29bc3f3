// Small helpers for tests that drive a LocalCluster the way a user does: kubectl apply of YAML,
// kubectl wait (a watch with a deadline), kubectl exec into pods, and Events.
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../k8s/harness.js';
import type { LocalCluster } from './cluster.js';
import type { RunOptions } from './node.js';

export class Kube {
  constructor(
    readonly cluster: LocalCluster,
    readonly namespace: string,
  ) {}

  kubectl(args: string[], opts: RunOptions = {}): Promise<string> {
    return this.cluster.kubectl(['-n', this.namespace, ...args], opts);
  }

  apply(yaml: string): Promise<string> {
    return this.kubectl(['apply', '-f', '-'], { input: yaml });
  }

  /** `kubectl wait` (a watch of the object, with a deadline). */
  wait(target: string, condition: string, timeoutMs = 120_000): Promise<string> {
    return this.kubectl(['wait', target, `--for=${condition}`, `--timeout=${Math.round(timeoutMs / 1000)}s`], { timeoutMs: timeoutMs + 15_000 });
  }

  /** Runs `sh -c script` in a pod (kubectl exec, through the kubelet). */
  exec(pod: string, script: string, timeoutMs = 60_000): Promise<string> {
    return this.kubectl(['exec', pod, '--', 'sh', '-c', script], { timeoutMs });
  }

  jsonpath(target: string, path: string): Promise<string> {
    return this.kubectl(['get', target, '-o', `jsonpath=${path}`]);
  }

  /** Events of one object, as "Type Reason: message" lines. */
  async events(kind: string, name: string): Promise<string[]> {
    const out = await this.kubectl([
      'get', 'events', `--field-selector=involvedObject.kind=${kind},involvedObject.name=${name}`,
      '-o', 'jsonpath={range .items[*]}{.type} {.reason}: {.message}{"\\n"}{end}',
    ]);
    return out.split('\n').filter(Boolean);
  }
}

/** A directory with a `kubectl-flashcsi` executable (this build's plugin), for kubectl's plugin discovery on PATH. */
export function kubectlPluginDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'flashcsi-kubectl-'));
  const script = join(dir, 'kubectl-flashcsi');
  writeFileSync(script, `#!/bin/sh\nexec "${process.execPath}" "${join(repoRoot(), 'dist', 'cmd', 'kubectl-flashcsi.js')}" "$@"\n`);
  chmodSync(script, 0o755);
  return dir;
}

/** A PVC of `storageClass`. */
export function pvc(name: string, o: { size?: string; storageClass?: string; block?: boolean; dataSource?: { kind: string; name: string; apiGroup?: string } } = {}): string {
  return `apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: ${name}}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: ${o.storageClass ?? 'flashcsi'}
  ${o.block ? 'volumeMode: Block' : 'volumeMode: Filesystem'}
  resources: {requests: {storage: ${o.size ?? '64Mi'}}}
${o.dataSource ? `  dataSource: {kind: ${o.dataSource.kind}, name: ${o.dataSource.name}${o.dataSource.apiGroup ? `, apiGroup: ${o.dataSource.apiGroup}` : ''}}\n` : ''}`;
}

/**
 * A busybox pod mounting `claim` at /data (or as the block device /dev/xvda), running `script` then sleeping;
 * `node` pins it with a nodeSelector (the scheduler still places it, so a WaitForFirstConsumer PVC is
 * provisioned on that node).
 */
export function pod(name: string, claim: string, o: { script?: string; block?: boolean; fsGroup?: number; runAsUser?: number; image?: string; node?: string } = {}): string {
  const security =
    o.fsGroup !== undefined || o.runAsUser !== undefined
      ? `  securityContext: {${[o.fsGroup !== undefined ? `fsGroup: ${o.fsGroup}` : '', o.runAsUser !== undefined ? `runAsUser: ${o.runAsUser}` : ''].filter(Boolean).join(', ')}}\n`
      : '';
  const device = o.block ? `    volumeDevices: [{name: data, devicePath: /dev/xvda}]` : `    volumeMounts: [{name: data, mountPath: /data}]`;
  return `apiVersion: v1
kind: Pod
metadata: {name: ${name}}
spec:
  terminationGracePeriodSeconds: 1
${o.node ? `  nodeSelector: {kubernetes.io/hostname: ${o.node}}\n` : ''}${security}  containers:
  - name: app
    image: ${o.image ?? 'docker.io/library/busybox:1.36'}
    imagePullPolicy: IfNotPresent
    command: [sh, -c, ${JSON.stringify(`${o.script ?? 'true'}; exec sleep 36000`)}]
${device}
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: ${claim}}
`;
}
