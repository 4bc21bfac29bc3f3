/**
 * A user's first hour with flashcsi, on a real cluster (test/cluster: kube-apiserver, kube-scheduler,
 * kube-controller-manager, kubelet, containerd, runc, the snapshot-controller), with the image built
 * from our Dockerfile and the chart installed by `helm install`. Every pod is a real busybox pod
 * writing through its PVC; every wait is `kubectl wait` (a watch with a deadline) or a polled real
 * condition. One cluster of two nodes is shared by the journeys, in the order a user meets them; the
 * VolumeTransaction (5) spans both kubelets, the other journeys go wherever the scheduler puts them.
 */
import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { join } from 'node:path';
import { repoRoot, toolPath, waitFor } from '../k8s/harness.js';
import { RELEASE_NAMESPACE, startCluster, type LocalCluster } from './cluster.js';
import { Kube, kubectlPluginDir, pod, pvc } from './kube.js';
import { run } from './node.js';

const NS = 'journeys';
const SNAP_API = 'snapshot.storage.k8s.io/v1';
const timings: Record<string, number> = {};
const seconds = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
  const t0 = Date.now();
  const v = await fn();
  timings[name] = (Date.now() - t0) / 1000;
  return v;
};

describe('a user\'s first hour on a real node', { timeout: 1_800_000 }, () => {
  let cluster: LocalCluster;
  let k: Kube;
  let pluginDir: string;

  before(async () => {
    cluster = await startCluster({ nodes: 2, log: (l) => process.stderr.write(`${l}\n`) });
    k = new Kube(cluster, NS);
    pluginDir = kubectlPluginDir();
  });

  after(async () => {
    process.stderr.write(`journeys: timings (s) ${JSON.stringify({ ...cluster?.timings, ...timings })}\n`);
    const problems = (await cluster?.stop()) ?? [];
    rmSync(pluginDir, { recursive: true, force: true });
    assert.deepEqual(problems, [], 'the cluster stopped with nothing left to force');
  });

  it('1. helm install: the node plugin registers itself on each node; CSINode lists flashcsi.io with its topology key', async () => {
    await seconds('helm install', () => cluster.installFlashcsi());
    for (const { name: node } of cluster.nodes) {
      // The kubelet writes the CSINode entry after GetInfo and NodeGetInfo over the plugin's sockets.
      await waitFor(
        `CSINode ${node} lists flashcsi.io`,
        async () => ((await cluster.kubectl(['get', 'csinode', node, '-o', 'jsonpath={.spec.drivers[*].name}'])).includes('flashcsi.io') ? true : undefined),
        { timeoutMs: 60_000, intervalMs: 500 },
      );
      const drivers = JSON.parse(await cluster.kubectl(['get', 'csinode', node, '-o', 'jsonpath={.spec.drivers}'])) as Array<{ name: string; nodeID: string; topologyKeys: string[] }>;
      assert.deepEqual(drivers.find((d) => d.name === 'flashcsi.io'), { name: 'flashcsi.io', nodeID: node, topologyKeys: ['topology.flashcsi.io/node'] });
      assert.equal(await cluster.kubectl(['get', 'node', node, '-o', 'jsonpath={.metadata.labels.topology\\.flashcsi\\.io/node}']), node);
    }
    await cluster.kubectl(['create', 'namespace', NS]);
    // An xfs StorageClass next to the chart's ext4 one.
    await k.apply(`apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: flashcsi-xfs}
provisioner: flashcsi.io
volumeBindingMode: WaitForFirstConsumer
allowVolumeExpansion: true
parameters: {csi.storage.k8s.io/fstype: xfs}
`);
  });

  it('2. ext4, xfs and block pods write; a new pod sees the data; fsGroup; a StatefulSet of 2', async () => {
    await k.apply(pvc('ext4') + '---\n' + pod('ext4', 'ext4', { script: 'echo ext4-data > /data/f && sync' }));
    await seconds('pod apply -> Running (fresh PVC)', () => k.wait('pod/ext4', 'condition=Ready', 180_000));
    await k.apply(pvc('xfs', { storageClass: 'flashcsi-xfs', size: '320Mi' }) + '---\n' + pod('xfs', 'xfs', { script: 'echo xfs-data > /data/f && sync' }));
    await k.apply(pvc('blk', { block: true }) + '---\n' + pod('blk', 'blk', { block: true, script: 'echo block-data | dd of=/dev/xvda conv=fsync' }));
    await k.wait('pod/xfs', 'condition=Ready', 180_000);
    await k.wait('pod/blk', 'condition=Ready', 180_000);
    assert.equal((await k.exec('ext4', 'cat /data/f; grep " /data " /proc/mounts | cut -d" " -f3')).trim(), 'ext4-data\next4');
    assert.equal((await k.exec('xfs', 'cat /data/f; grep " /data " /proc/mounts | cut -d" " -f3')).trim(), 'xfs-data\nxfs');
    assert.equal((await k.exec('blk', 'dd if=/dev/xvda bs=11 count=1 2>/dev/null')).trim(), 'block-data');

    await k.kubectl(['delete', 'pod', 'ext4', '--wait=true']);
    await k.apply(pod('ext4-again', 'ext4'));
    await k.wait('pod/ext4-again', 'condition=Ready');
    assert.equal((await k.exec('ext4-again', 'cat /data/f')).trim(), 'ext4-data', 'a new pod sees the same data');
    await k.kubectl(['delete', 'pod', 'ext4-again', '--wait=true']);

    await k.apply(pvc('fsg') + '---\n' + pod('fsg', 'fsg', { fsGroup: 4321, runAsUser: 1000, script: 'touch /data/mine' }));
    await k.wait('pod/fsg', 'condition=Ready');
    assert.equal((await k.exec('fsg', 'stat -c "%g %u" /data /data/mine; id -u')).trim(), '4321 0\n4321 1000\n1000', 'the volume root and new files belong to the fsGroup');

    await k.apply(`apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: app, image: docker.io/library/busybox:1.36, command: [sh, -c, 'hostname > /data/who && exec sleep 36000'], volumeMounts: [{name: data, mountPath: /data}]}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], storageClassName: flashcsi, resources: {requests: {storage: 32Mi}}}
`);
    await k.wait('statefulset/web', 'jsonpath={.status.readyReplicas}=2', 240_000);
    assert.equal((await k.exec('web-1', 'cat /data/who')).trim(), 'web-1');
    const bound = await k.jsonpath('pvc', '{range .items[*]}{.metadata.name}={.status.phase} {end}');
    assert.match(bound, /data-web-0=Bound/);
    assert.match(bound, /data-web-1=Bound/);
  });

  it('3. VolumeSnapshot → restored PVC holds exactly the pre-snapshot data; a clone; online resize', async () => {
    await k.exec('xfs', 'echo before > /data/s && sync');
    await k.apply(`apiVersion: ${SNAP_API}
kind: VolumeSnapshot
metadata: {name: xfs-snap}
spec: {volumeSnapshotClassName: flashcsi, source: {persistentVolumeClaimName: xfs}}
`);
    await seconds('VolumeSnapshot -> readyToUse', () => k.wait('volumesnapshot/xfs-snap', 'jsonpath={.status.readyToUse}=true'));
    await k.exec('xfs', 'echo after > /data/s && sync');
    // A snapshot and a clone live on their source's node (node-local volumes, docs/csi.md): the pods of
    // the new PVCs go there, so that the scheduler has that node's provisioner create them.
    const sourceNode = (await k.jsonpath('pod/xfs', '{.spec.nodeName}')).trim();
    await k.apply(
      pvc('xfs-restored', { storageClass: 'flashcsi-xfs', size: '320Mi', dataSource: { kind: 'VolumeSnapshot', name: 'xfs-snap', apiGroup: 'snapshot.storage.k8s.io' } }) +
        '---\n' +
        pod('xfs-restored', 'xfs-restored', { node: sourceNode }),
    );
    await k.wait('pod/xfs-restored', 'condition=Ready', 180_000);
    assert.equal((await k.exec('xfs-restored', 'cat /data/s /data/f')).trim(), 'before\nxfs-data');

    await k.apply(pvc('xfs-clone', { storageClass: 'flashcsi-xfs', size: '320Mi', dataSource: { kind: 'PersistentVolumeClaim', name: 'xfs' } }) + '---\n' + pod('xfs-clone', 'xfs-clone', { node: sourceNode }));
    await k.wait('pod/xfs-clone', 'condition=Ready', 180_000);
    assert.equal((await k.exec('xfs-clone', 'cat /data/s')).trim(), 'after', 'the clone holds the source PVC\'s current data');

    // Online resize, xfs: the pod keeps running and sees the new size.
    const sizeOf = async (p: string): Promise<number> => Number((await k.exec(p, 'df -k /data | tail -1')).trim().split(/\s+/)[1]);
    const before = await sizeOf('xfs');
    await k.kubectl(['patch', 'pvc', 'xfs', '--type=merge', '-p', '{"spec":{"resources":{"requests":{"storage":"640Mi"}}}}']);
    await k.wait('pvc/xfs', 'jsonpath={.status.capacity.storage}=640Mi', 180_000);
    await waitFor('xfs grown inside the pod', async () => ((await sizeOf('xfs')) > before * 1.5 ? true : undefined), { timeoutMs: 60_000, intervalMs: 1000 });
    // ext4, online, as this machine allows: the kernel grows a mounted ext4 only for CAP_SYS_RESOURCE
    // (EXT4_IOC_RESIZE_FS), which this machine withholds even from privileged containers.
    const canResizeExt4 = (BigInt(`0x${/CapEff:\s*([0-9a-f]+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? '0'}`) & (1n << 24n)) !== 0n;
    const ext4Before = await sizeOf('fsg');
    await k.kubectl(['patch', 'pvc', 'fsg', '--type=merge', '-p', '{"spec":{"resources":{"requests":{"storage":"128Mi"}}}}']);
    if (canResizeExt4) {
      await k.wait('pvc/fsg', 'jsonpath={.status.capacity.storage}=128Mi', 180_000);
      await waitFor('ext4 grown inside the pod', async () => ((await sizeOf('fsg')) > ext4Before * 1.5 ? true : undefined), { timeoutMs: 60_000, intervalMs: 1000 });
    } else {
      // flashcsi grows the device, and reports why the mounted file system cannot grow: the kubelet shows it
      // as the PVC's NodeResizeError condition. The next staging grows it (a new pod).
      await k.wait('pvc/fsg', 'condition=NodeResizeError', 180_000);
      const reason = await k.jsonpath('pvc/fsg', '{.status.conditions[?(@.type=="NodeResizeError")].message}');
      process.stderr.write(`journeys: ext4 online resize on this machine: ${reason}\n`);
      assert.match(reason, /needs CAP_SYS_RESOURCE.*grows to fill it the next time the volume is staged/);
      assert.equal(await sizeOf('fsg'), ext4Before, 'the mounted file system is unchanged');
      assert.equal((await k.exec('fsg', 'ls /data/mine')).trim(), '/data/mine', 'and its pod keeps its data');
      await k.kubectl(['delete', 'pod', 'fsg', '--wait=true']);
      await k.apply(pod('fsg', 'fsg', { fsGroup: 4321, runAsUser: 1000 }));
      await k.wait('pod/fsg', 'condition=Ready');
      await k.wait('pvc/fsg', 'jsonpath={.status.capacity.storage}=128Mi', 120_000);
      assert.ok((await sizeOf('fsg')) > ext4Before * 1.5, 'staged again, the file system filled the grown device');
      assert.equal((await k.exec('fsg', 'ls /data/mine')).trim(), '/data/mine');
    }
  });

  it('4. VolumeRollback of a Deployment\'s PVC: WaitingForDetach, scale to 0, Completed, back to the snapshot\'s data', async () => {
    await k.apply(pvc('app') + `---
apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
spec:
  replicas: 1
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: app, image: docker.io/library/busybox:1.36, command: [sh, -c, 'exec sleep 36000'], volumeMounts: [{name: data, mountPath: /data}]}
      volumes:
      - {name: data, persistentVolumeClaim: {claimName: app}}
`);
    await k.wait('deployment/app', 'condition=Available', 180_000);
    const appPod = async (): Promise<string> => (await k.kubectl(['get', 'pods', '-l', 'app=app', '--field-selector=status.phase=Running', '-o', 'jsonpath={.items[0].metadata.name}'])).trim();
    await k.exec(await appPod(), 'echo v1 > /data/version && sync');
    await k.apply(`apiVersion: ${SNAP_API}
kind: VolumeSnapshot
metadata: {name: app-v1}
spec: {volumeSnapshotClassName: flashcsi, source: {persistentVolumeClaimName: app}}
`);
    await k.wait('volumesnapshot/app-v1', 'jsonpath={.status.readyToUse}=true');
    await k.exec(await appPod(), 'echo v2 > /data/version && sync');
    const identity = async (): Promise<string> => `${await k.jsonpath('pvc/app', '{.metadata.uid} {.spec.volumeName}')} ${await cluster.kubectl(['get', 'pv', (await k.jsonpath('pvc/app', '{.spec.volumeName}')).trim(), '-o', 'jsonpath={.metadata.uid} {.spec.csi.volumeHandle}'])}`;
    const before = await identity();
    await k.apply(`apiVersion: flashcsi.io/v1alpha1
kind: VolumeRollback
metadata: {name: app-undo}
spec: {volumeSnapshotName: app-v1}
`);
    await k.wait('volumerollback/app-undo', 'jsonpath={.status.phase}=WaitingForDetach');
    assert.equal((await k.exec(await appPod(), 'cat /data/version')).trim(), 'v2', 'a mounted file system never changes under its pod');
    await k.kubectl(['scale', 'deployment/app', '--replicas=0']);
    await k.wait('volumerollback/app-undo', 'jsonpath={.status.phase}=Completed', 180_000);
    await k.kubectl(['scale', 'deployment/app', '--replicas=1']);
    await k.wait('deployment/app', 'condition=Available', 180_000);
    assert.equal((await k.exec(await appPod(), 'cat /data/version')).trim(), 'v1');
    assert.equal(await identity(), before, 'the PVC and the PV are the same objects');
    const reasons = (await k.events('VolumeRollback', 'app-undo')).join('\n');
    assert.match(reasons, /Completed/);
  });

  it('5. VolumeTransaction over two PVCs on two nodes, used by two pods: commit keeps, rollback (pods stopped) reverts; kubectl flashcsi drives one', async () => {
    // tx-a on node-a, tx-b on node-b: each PVC is provisioned on its pod's node (WaitForFirstConsumer),
    // so each phase of the two-phase commit runs in a different kubelet's node plugin.
    const [nodeA, nodeB] = cluster.nodes.map((n) => n.name);
    assert.ok(nodeA && nodeB, 'two nodes');
    const onNode = { 'tx-a': nodeA, 'tx-b': nodeB };
    const txPods = (script?: string): string =>
      Object.entries(onNode).map(([name, node]) => pod(name, name, { node, ...(script ? { script } : {}) })).join('---\n');
    await k.apply(pvc('tx-a') + '---\n' + pvc('tx-b') + '---\n' + txPods('echo begin > /data/v && sync'));
    await k.wait('pod/tx-a', 'condition=Ready', 180_000);
    await k.wait('pod/tx-b', 'condition=Ready', 180_000);
    for (const [name, node] of Object.entries(onNode)) {
      const pv = (await k.jsonpath(`pvc/${name}`, '{.spec.volumeName}')).trim();
      const topology = await cluster.kubectl(['get', 'pv', pv, '-o', 'jsonpath={.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]}']);
      assert.equal(topology, node, `${name}'s volume lives on ${node}`);
      assert.equal(await k.jsonpath(`pod/${name}`, '{.spec.nodeName}'), node);
    }
    // Commit, with kubectl flashcsi (found by kubectl on PATH).
    // kubectl finds the plugin on PATH; global flags may not precede a plugin's name, so KUBECONFIG.
    const kubectlFlashcsi = (args: string[]): Promise<string> =>
      run(toolPath('kubectl'), ['flashcsi', '-n', NS, ...args], { timeoutMs: 240_000, env: { ...process.env, KUBECONFIG: cluster.kubeconfig, PATH: `${pluginDir}:${process.env['PATH'] ?? ''}` } });
    await kubectlFlashcsi(['tx', 'begin', 'tx1', '--pvc', 'tx-a', '--pvc', 'tx-b', '--wait']);
    await k.exec('tx-a', 'echo tx1 > /data/v && sync');
    await k.exec('tx-b', 'echo tx1 > /data/v && sync');
    await kubectlFlashcsi(['tx', 'commit', 'tx1', '--wait']);
    assert.equal(await k.jsonpath('vtx/tx1', '{.status.phase}'), 'Committed');
    // Rollback, with kubectl apply/patch: the data is reverted once the pods are stopped.
    await k.apply(`apiVersion: flashcsi.io/v1alpha1
kind: VolumeTransaction
metadata: {name: tx2}
spec: {persistentVolumeClaims: [tx-a, tx-b]}
`);
    await k.wait('vtx/tx2', 'jsonpath={.status.phase}=Open');
    await k.exec('tx-a', 'echo tx2 > /data/v && sync');
    await k.exec('tx-b', 'echo tx2 > /data/v && sync');
    await k.kubectl(['patch', 'vtx', 'tx2', '--type=merge', '-p', '{"spec":{"decision":"Rollback"}}']);
    await k.wait('vtx/tx2', 'jsonpath={.status.phase}=RollingBack');
    assert.equal((await k.exec('tx-a', 'cat /data/v')).trim(), 'tx2', 'nothing changes under a running pod');
    await k.kubectl(['delete', 'pod', 'tx-a', 'tx-b', '--wait=true']);
    await k.wait('vtx/tx2', 'jsonpath={.status.phase}=RolledBack', 180_000);
    await k.apply(txPods());
    await k.wait('pod/tx-a', 'condition=Ready');
    await k.wait('pod/tx-b', 'condition=Ready');
    assert.equal((await k.exec('tx-a', 'cat /data/v')).trim(), 'tx1');
    assert.equal((await k.exec('tx-b', 'cat /data/v')).trim(), 'tx1');
  });

  it('6. the node plugin killed while a pod writes and fsyncs: no I/O error in the pod; the kubelet registers it again', async () => {
    // The writer is the container's main process: an I/O error ends it, and the kubelet would restart it.
    const node = cluster.nodes[0];
    assert.ok(node);
    await k.apply(pvc('busy') + '---\n' + pod('busy', 'busy', { node: node.name, script: 'i=0; while true; do i=$((i+1)); echo $i > /data/n.tmp && sync /data/n.tmp && mv /data/n.tmp /data/n && sync /data || { echo "I/O error at $i" > /dev/termination-log; exit 1; }; done' }));
    await k.wait('pod/busy', 'condition=Ready');
    const nodePluginPods = async (): Promise<string> =>
      (await cluster.kubectl(['-n', RELEASE_NAMESPACE, 'get', 'pods', '-l', 'app.kubernetes.io/component=node', `--field-selector=spec.nodeName=${node.name}`, '-o', 'jsonpath={.items[*].metadata.name}'])).trim();
    const pluginPod = await nodePluginPods();
    assert.match(pluginPod, /^\S+$/, `one node plugin pod on ${node.name}`);
    const count = async (): Promise<number> => Number((await k.exec('busy', 'cat /data/n')).trim());
    // How many times the kubelet has registered the driver (csi_plugin.go logs each registration).
    const registrations = (): number => (readFileSync(node.kubelet.logFile, 'utf8').match(/Register new plugin with name: flashcsi\.io/g) ?? []).length;
    const registered = registrations();
    assert.ok(registered >= 1, 'registered at install');
    const n0 = await count();
    // The container's main process is tini → flashcsi supervise → flashcsi plugin; kill the plugin.
    const pluginPid = (
      await cluster.kubectl(['-n', RELEASE_NAMESPACE, 'exec', pluginPod, '-c', 'flashcsi', '--', 'sh', '-c', `for p in /proc/[0-9]*; do case "$(tr '\\0' ' ' < $p/cmdline 2>/dev/null)" in *'flashcsi.js plugin '*) echo \${p#/proc/};; esac; done`])
    ).trim().split('\n')[0];
    assert.match(pluginPid ?? '', /^\d+$/);
    await cluster.kubectl(['-n', RELEASE_NAMESPACE, 'exec', pluginPod, '-c', 'flashcsi', '--', 'sh', '-c', `kill -KILL ${pluginPid ?? ''}`]);
    // The restarted plugin makes its registration socket again; the kubelet registers it again.
    await waitFor(
      'kubelet re-registered flashcsi.io',
      async () => {
        return registrations() > registered ? true : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 500 },
    );
    await waitFor('the pod keeps writing', async () => ((await count()) > n0 + 50 ? true : undefined), { timeoutMs: 60_000, intervalMs: 500 });
    assert.equal(await k.jsonpath('pod/busy', '{.status.containerStatuses[0].restartCount}'), '0', 'the writer never failed');

    // An upgrade as docs/deployment.md says (OnDelete): drain the node, delete its flashcsi-node pod,
    // uncordon. (With one node a full `kubectl drain` would wait forever on the coordinator's
    // PodDisruptionBudget; the pods on flashcsi volumes are what matter, and they are deleted as a drain
    // would: every pod of this namespace. Their controllers' replacements wait, Pending, on the cordon.)
    await cluster.kubectl(['cordon', node.name]);
    const upgrade = async (): Promise<void> => {
      await k.kubectl(['delete', 'pods', '--all', '--wait=true'], { timeoutMs: 180_000 });
      assert.equal(await cluster.kubectl(['get', 'volumeattachments', '-o', 'name']), '', 'attachRequired: false');
      // The kubelet unstages (NodeUnstageVolume) after the pods are gone.
      await waitFor(
        'every volume unstaged',
        async () => ((await node.exec('sh', ['-c', "grep -c ' /var/lib/kubelet/plugins/kubernetes.io/csi/' /proc/self/mountinfo || true"])).trim() === '0' ? true : undefined),
        { timeoutMs: 120_000, intervalMs: 1000 },
      );
      await cluster.kubectl(['-n', RELEASE_NAMESPACE, 'delete', 'pod', pluginPod, '--wait=true'], { timeoutMs: 120_000 });
      const replacement = await waitFor('the DaemonSet made a new node plugin pod', async () => ((await nodePluginPods()) || undefined), { timeoutMs: 60_000, intervalMs: 500 });
      await cluster.kubectl(['-n', RELEASE_NAMESPACE, 'wait', `pod/${replacement}`, '--for=condition=Ready', '--timeout=120s'], { timeoutMs: 135_000 });
      await waitFor(
        'kubelet registered the new plugin pod',
        async () => (registrations() > registered + 1 ? true : undefined),
        { timeoutMs: 60_000, intervalMs: 500 },
      );
    };
    try {
      await upgrade();
    } finally {
      await cluster.kubectl(['uncordon', node.name]);
    }
    await k.apply(pod('busy-again', 'busy'));
    await k.wait('pod/busy-again', 'condition=Ready');
    const after = Number((await k.exec('busy-again', 'cat /data/n')).trim());
    assert.ok(after > n0 + 50, `the new pod sees every write the old one made (${after})`);
    await k.kubectl(['delete', 'pod', 'busy-again', '--wait=true']);
  });

  it('7. bad input: too big a PVC, an unknown StorageClass parameter, rollbacks of another namespace\'s snapshot and of a non-flashcsi PVC', async () => {
    await k.apply(pvc('huge', { size: '100Ti' }) + '---\n' + pod('huge', 'huge'));
    await waitFor(
      'a clear event for the PVC that does not fit',
      async () => {
        const ev = [...(await k.events('Pod', 'huge')), ...(await k.events('PersistentVolumeClaim', 'huge'))].join('\n');
        return /insufficient capacity|ResourceExhausted|not enough space|node\(s\) did not have enough free storage/i.test(ev) ? ev : undefined;
      },
      { timeoutMs: 120_000, intervalMs: 1000 },
    );
    assert.equal(await k.jsonpath('pod/huge', '{.status.phase}'), 'Pending');
    await k.apply(`apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: flashcsi-typo}
provisioner: flashcsi.io
volumeBindingMode: WaitForFirstConsumer
parameters: {grainSzie: "65536"}
`);
    await k.apply(pvc('typo', { storageClass: 'flashcsi-typo' }) + '---\n' + pod('typo', 'typo'));
    const typo = await waitFor(
      'ProvisioningFailed for the unknown parameter',
      async () => (await k.events('PersistentVolumeClaim', 'typo')).find((e) => /ProvisioningFailed/.test(e) && /grainSzie/.test(e)),
      { timeoutMs: 120_000, intervalMs: 1000 },
    );
    assert.match(typo, /Warning ProvisioningFailed/);
    // Another namespace's snapshot, and a PVC that is not flashcsi's.
    await cluster.kubectl(['create', 'namespace', 'other']);
    await cluster.kubectl(['-n', 'other', 'apply', '-f', '-'], { input: `apiVersion: flashcsi.io/v1alpha1\nkind: VolumeRollback\nmetadata: {name: steal}\nspec: {volumeSnapshotName: xfs-snap}\n` });
    await cluster.kubectl(['-n', 'other', 'wait', 'volumerollback/steal', '--for=jsonpath={.status.phase}=Failed', '--timeout=60s'], { timeoutMs: 75_000 });
    assert.match(await cluster.kubectl(['-n', 'other', 'get', 'volumerollback/steal', '-o', 'jsonpath={.status.message}']), /not found in namespace other/);
    await k.apply(`apiVersion: v1
kind: PersistentVolume
metadata: {name: ${NS}-foreign}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  hostPath: {path: /tmp/flashcsi-foreign}
  claimRef: {namespace: ${NS}, name: foreign}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: foreign}
spec: {accessModes: [ReadWriteOnce], storageClassName: "", volumeName: ${NS}-foreign, resources: {requests: {storage: 1Gi}}}
`);
    await k.wait('pvc/foreign', 'jsonpath={.status.phase}=Bound');
    await k.apply(`apiVersion: ${SNAP_API}
kind: VolumeSnapshot
metadata: {name: foreign-snap}
spec: {volumeSnapshotClassName: flashcsi, source: {persistentVolumeClaimName: foreign}}
---
apiVersion: flashcsi.io/v1alpha1
kind: VolumeRollback
metadata: {name: foreign-undo}
spec: {volumeSnapshotName: foreign-snap}
`);
    await k.wait('volumerollback/foreign-undo', 'jsonpath={.status.phase}=Failed', 120_000);
    const msg = await k.jsonpath('volumerollback/foreign-undo', '{.status.message}');
    process.stderr.write(`journeys: VolumeRollback of a non-flashcsi PVC: ${msg}\n`);
    // The snapshot of a PVC that is not flashcsi's never becomes a flashcsi checkpoint: the rollback says so.
    assert.match(msg, /foreign/);
    assert.match(msg, /not a flashcsi|flashcsi\.io|driver|failed/i);
    // Nothing half-done: the foreign PVC carries no flashcsi mark.
    const foreign = JSON.parse(await k.kubectl(['get', 'pvc', 'foreign', '-o', 'json'])) as { metadata: { annotations?: Record<string, string>; finalizers?: string[] } };
    assert.deepEqual(Object.keys(foreign.metadata.annotations ?? {}).filter((a) => a.startsWith('flashcsi.io/')), []);
    assert.deepEqual((foreign.metadata.finalizers ?? []).filter((f) => f.startsWith('flashcsi.io/')), []);
    await k.kubectl(['delete', 'pod', 'huge', 'typo', '--wait=true']);
    await k.kubectl(['delete', 'pvc', 'huge', 'typo', '--wait=true']);
  });

  it('examples/: the walk-through, applied as written', async () => {
    const ex = (f: string): string => join(repoRoot(), 'examples', f);
    await k.kubectl(['apply', '-f', ex('1-pvc-pod.yaml')]);
    await k.wait('pod/demo', 'condition=Ready', 180_000);
    assert.equal((await k.exec('demo', 'cat /data/hello.txt')).trim(), 'written before the snapshot');
    await k.kubectl(['apply', '-f', ex('2-snapshot.yaml')]);
    await k.wait('volumesnapshot/demo-snap', "jsonpath={.status.readyToUse}=true");
    await k.exec('demo', 'echo "changed after the snapshot" > /data/hello.txt && sync');
    await k.kubectl(['apply', '-f', ex('3-rollback.yaml')]);
    await k.wait('vrb/demo-undo', 'jsonpath={.status.phase}=WaitingForDetach');
    await k.kubectl(['delete', 'pod', 'demo']);
    await k.wait('vrb/demo-undo', 'jsonpath={.status.phase}=Completed', 180_000);
    await k.kubectl(['apply', '-f', ex('1-pvc-pod.yaml')]);
    await k.wait('pod/demo', 'condition=Ready', 180_000);
    assert.equal((await k.exec('demo', 'cat /data/hello.txt')).trim(), 'written before the snapshot');
    await k.kubectl(['apply', '-f', ex('4-transaction.yaml')]);
    await k.wait('pod/orders', 'condition=Ready', 180_000);
    await k.wait('pod/invoices', 'condition=Ready', 180_000);
    await k.kubectl(['apply', '-f', ex('5-transaction-begin.yaml')]);
    await k.wait('vtx/demo-tx', 'jsonpath={.status.phase}=Open');
    await k.exec('orders', 'echo "order 2" >> /data/log && sync');
    await k.exec('invoices', 'echo "invoice 2" >> /data/log && sync');
    await k.kubectl(['patch', 'vtx', 'demo-tx', '--type', 'merge', '-p', '{"spec":{"decision":"Commit"}}']);
    await k.wait('vtx/demo-tx', 'jsonpath={.status.phase}=Committed');
    assert.equal((await k.exec('orders', 'cat /data/log')).trim(), 'order 1\norder 2');
    await k.kubectl(['delete', '-f', ex('5-transaction-begin.yaml'), '-f', ex('4-transaction.yaml'), '-f', ex('3-rollback.yaml'), '-f', ex('2-snapshot.yaml'), '-f', ex('1-pvc-pod.yaml'), '--wait=true'], { timeoutMs: 240_000 });
  });

  it('8. helm uninstall leaves only what the docs say stays (the volumes\' data)', async () => {
    // Docs: delete flashcsi PVCs before uninstalling.
    await cluster.kubectl(['delete', 'namespace', NS, 'other', '--ignore-not-found', '--wait=true', '--timeout=300s'], { timeoutMs: 330_000 });
    await cluster.kubectl(['delete', 'pv', `${NS}-foreign`, '--ignore-not-found', '--wait=true']); // this test's own hostPath PV (Retain)
    await waitFor('every flashcsi PV deleted', async () => ((await cluster.kubectl(['get', 'pv', '-o', 'name'])).trim() === '' ? true : undefined), { timeoutMs: 180_000, intervalMs: 1000 });
    await cluster.kubectl(['delete', 'storageclass', 'flashcsi-xfs', 'flashcsi-typo', '--ignore-not-found']); // this test's own
    await cluster.helm(['uninstall', 'flashcsi', '--namespace', RELEASE_NAMESPACE, '--wait', '--timeout=180s']);
    // The DaemonSet's and Deployment's pods, and the capacity objects they own, go by garbage collection.
    await cluster.kubectl(['-n', RELEASE_NAMESPACE, 'wait', '--for=delete', 'pods', '--all', '--timeout=120s'], { timeoutMs: 135_000 });
    await waitFor(
      'CSIStorageCapacity objects collected',
      async () => ((await cluster.kubectl(['get', 'csistoragecapacity', '-A', '-o', 'name'])).trim() === '' ? true : undefined),
      { timeoutMs: 60_000, intervalMs: 500 },
    );
    const left = await cluster.kubectl(['get', 'all,csidriver,storageclass,volumesnapshotclass,clusterrole,clusterrolebinding,csistoragecapacity', '-A', '-o', 'name']);
    assert.doesNotMatch(left, /flashcsi/, left);
    // The CRDs stay (Helm never deletes crds/), as the docs say; so do the state directory's volumes — none now.
    assert.match(await cluster.kubectl(['get', 'crd', '-o', 'name']), /volumetransactions\.flashcsi\.io/);
    for (const node of cluster.nodes) {
      assert.equal((await node.exec('sh', ['-c', 'ls /var/lib/flashcsi/volumes 2>/dev/null | wc -l'])).trim(), '0', `no volume left on ${node.name}`);
      assert.equal((await node.exec('sh', ['-c', "grep -c ' /var/lib/kubelet/' /proc/self/mountinfo || true"])).trim(), '0', `no mount left in ${node.name}'s kubelet directory`);
    }
  });
});
