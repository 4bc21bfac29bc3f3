// kubectl-flashcsi, run as a real process (dist/cmd/kubectl-flashcsi.js) against a real kube-apiserver
// with the harness's kubeconfig: every command writes exactly what `kubectl apply` / `kubectl patch`
// would (compared with objects made by the real kubectl from YAML), --wait follows real status
// changes, and every error path prints one line and exits non-zero.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CustomObjectsApi, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { applySnapshotCrds, freePort, startControlPlane, waitFor, type ControlPlane } from '../k8s/harness.js';
import { ROOT, applyFlashcsiCrds, kubectl, run, show, type RunResult } from './helpers.js';

const PLUGIN = join(ROOT, 'dist', 'cmd', 'kubectl-flashcsi.js');
const NS = 'app';
const GROUP = 'flashcsi.io';
const VERSION = 'v1alpha1';

type Obj = Record<string, unknown> & { metadata: Record<string, unknown>; spec?: Record<string, unknown> };

/** The parts of an object its writer chose: everything but server-set metadata and kubectl's bookkeeping. */
function comparable(o: Obj): Obj {
  const serverSet = new Set(['name', 'uid', 'resourceVersion', 'creationTimestamp', 'generation', 'managedFields', 'annotations']);
  const metadata: Record<string, unknown> = Object.fromEntries(Object.entries(o.metadata).filter(([k]) => !serverSet.has(k)));
  const annotations = Object.entries((o.metadata['annotations'] as Record<string, string> | undefined) ?? {}).filter(
    ([k]) => k !== 'kubectl.kubernetes.io/last-applied-configuration',
  );
  if (annotations.length > 0) metadata['annotations'] = Object.fromEntries(annotations);
  return { ...o, metadata };
}

describe('kubectl-flashcsi against a real kube-apiserver', { timeout: 240_000 }, () => {
  let cp: ControlPlane | undefined;
  let dir = '';
  const plane = (): ControlPlane => {
    if (!cp) throw new Error('control plane not started');
    return cp;
  };
  const custom = (): CustomObjectsApi => plane().kubeConfig().makeApiClient(CustomObjectsApi);
  const get = async (plural: string, name: string, ns = NS): Promise<Obj> =>
    (await custom().getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural, name })) as Obj;
  const setStatus = (plural: string, name: string, status: object): Promise<unknown> =>
    custom().patchNamespacedCustomObjectStatus(
      { group: GROUP, version: VERSION, namespace: NS, plural, name, body: { status } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );

  /** Runs the plugin with an isolated HOME (so no ~/.kube/config leaks in). */
  const plugin = (args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<RunResult> =>
    run(process.execPath, [PLUGIN, ...args], { env: { PATH: process.env['PATH'] ?? '', HOME: dir, ...env } });
  const pluginK = (args: readonly string[]): Promise<RunResult> => plugin([`--kubeconfig=${plane().kubeconfig}`, '-n', NS, ...args]);

  /** Asserts the kubectl-style failure: exit non-zero, nothing on stdout, exactly one `error: …` line on stderr. */
  function assertOneLineError(r: RunResult, want: RegExp): void {
    assert.notEqual(r.code, 0, show(r));
    assert.equal(r.stdout, '', show(r));
    const lines = r.stderr.split('\n').filter((l) => l !== '');
    assert.equal(lines.length, 1, `one line on stderr\n${show(r)}`);
    assert.match(lines[0] ?? '', /^error: /, show(r));
    assert.match(lines[0] ?? '', want, show(r));
  }

  before(async () => {
    cp = await startControlPlane();
    dir = await mkdtemp(join(tmpdir(), 'flashcsi-kubectl-plugin-'));
    await applySnapshotCrds(cp);
    await applyFlashcsiCrds(cp);
    const objects = [
      { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } },
      { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'other' } },
      ...['data', 'logs', 'cache'].map((name) => ({
        apiVersion: 'v1',
        kind: 'PersistentVolumeClaim',
        metadata: { name, namespace: NS },
        spec: { accessModes: ['ReadWriteOnce'], storageClassName: 'flashcsi', resources: { requests: { storage: '1Gi' } } },
      })),
      ...[
        ['snap1', 'data'],
        ['snap-logs', 'logs'],
      ].map(([name, pvc]) => ({
        apiVersion: 'snapshot.storage.k8s.io/v1',
        kind: 'VolumeSnapshot',
        metadata: { name, namespace: NS },
        spec: { volumeSnapshotClassName: 'flashcsi', source: { persistentVolumeClaimName: pvc } },
      })),
      {
        apiVersion: 'snapshot.storage.k8s.io/v1',
        kind: 'VolumeSnapshot',
        metadata: { name: 'preprovisioned', namespace: NS },
        spec: { source: { volumeSnapshotContentName: 'some-content' } },
      },
    ];
    const r = await kubectl(cp, ['apply', '-f', '-'], objects.map((o) => JSON.stringify(o)).join('\n---\n'));
    assert.equal(r.code, 0, show(r));
  });

  after(async () => {
    await cp?.stop();
    if (dir !== '') await rm(dir, { recursive: true, force: true });
  });

  it('rollback creates the VolumeRollback kubectl apply would', async () => {
    const r = await pluginK(['rollback', 'data', '--to', 'snap1', '--name', 'rb-plugin']);
    assert.equal(r.code, 0, show(r));
    assert.equal(r.stdout, 'volumerollback.flashcsi.io/rb-plugin created\n');
    assert.equal(r.stderr, '');
    const yaml = `apiVersion: flashcsi.io/v1alpha1\nkind: VolumeRollback\nmetadata:\n  name: rb-kubectl\n  namespace: ${NS}\nspec:\n  volumeSnapshotName: snap1\n`;
    const k = await kubectl(plane(), ['apply', '-f', '-'], yaml);
    assert.equal(k.code, 0, show(k));
    assert.deepEqual(comparable(await get('volumerollbacks', 'rb-plugin')), comparable(await get('volumerollbacks', 'rb-kubectl')));
    // Applying the same again is a no-op, as with kubectl apply.
    const again = await pluginK(['rollback', 'data', '--to', 'snap1', '--name', 'rb-plugin']);
    assert.equal(again.code, 0, show(again));
    assert.equal(again.stdout, 'volumerollback.flashcsi.io/rb-plugin unchanged\n');
  });

  it('rollback without --name makes a new object each time: <pvc>-to-<snapshot>-<random>', async () => {
    const a = await pluginK(['rollback', 'data', '--to', 'snap1']);
    const b = await pluginK(['rollback', 'data', '--to', 'snap1']);
    for (const r of [a, b]) {
      assert.equal(r.code, 0, show(r));
      assert.match(r.stdout, /^volumerollback\.flashcsi\.io\/data-to-snap1-[a-z0-9]{5} created\n$/);
    }
    assert.notEqual(a.stdout, b.stdout);
  });

  it('tx begin creates the VolumeTransaction kubectl apply would (with and without --timeout)', async () => {
    const r = await pluginK(['tx', 'begin', 'tx-plugin', '--pvc', 'data', '--pvc', 'logs', '--timeout', '10m']);
    assert.equal(r.code, 0, show(r));
    assert.equal(r.stdout, 'volumetransaction.flashcsi.io/tx-plugin created\n');
    const yaml = `apiVersion: flashcsi.io/v1alpha1\nkind: VolumeTransaction\nmetadata:\n  name: tx-kubectl\n  namespace: ${NS}\nspec:\n  persistentVolumeClaims: [data, logs]\n  timeoutSeconds: 600\n`;
    assert.equal((await kubectl(plane(), ['apply', '-f', '-'], yaml)).code, 0);
    const plugged = await get('volumetransactions', 'tx-plugin');
    assert.deepEqual(comparable(plugged), comparable(await get('volumetransactions', 'tx-kubectl')));
    assert.deepEqual(plugged.spec, { persistentVolumeClaims: ['data', 'logs'], timeoutSeconds: 600 });

    const d = await pluginK(['tx', 'begin', 'tx-default', '--pvc', 'cache']);
    assert.equal(d.code, 0, show(d));
    const yaml2 = `apiVersion: flashcsi.io/v1alpha1\nkind: VolumeTransaction\nmetadata:\n  name: tx-default-kubectl\n  namespace: ${NS}\nspec:\n  persistentVolumeClaims: [cache]\n`;
    assert.equal((await kubectl(plane(), ['apply', '-f', '-'], yaml2)).code, 0);
    assert.deepEqual(comparable(await get('volumetransactions', 'tx-default')), comparable(await get('volumetransactions', 'tx-default-kubectl')));
  });

  it('tx commit and tx rollback set spec.decision exactly as kubectl patch --type merge', async () => {
    for (const [verb, decision] of [
      ['commit', 'Commit'],
      ['rollback', 'Rollback'],
    ] as const) {
      const mine = `tx-${verb}-plugin`;
      const theirs = `tx-${verb}-kubectl`;
      for (const name of [mine, theirs]) {
        const yaml = `apiVersion: flashcsi.io/v1alpha1\nkind: VolumeTransaction\nmetadata:\n  name: ${name}\n  namespace: ${NS}\nspec:\n  persistentVolumeClaims: [data]\n`;
        assert.equal((await kubectl(plane(), ['apply', '-f', '-'], yaml)).code, 0);
      }
      const r = await pluginK(['tx', verb, mine]);
      assert.equal(r.code, 0, show(r));
      assert.equal(r.stdout, `volumetransaction.flashcsi.io/${mine} patched (decision ${decision})\n`);
      const k = await kubectl(plane(), ['patch', 'vtx', theirs, '-n', NS, '--type', 'merge', '-p', JSON.stringify({ spec: { decision } })]);
      assert.equal(k.code, 0, show(k));
      const a = await get('volumetransactions', mine);
      assert.equal(a.spec?.['decision'], decision);
      assert.deepEqual(comparable(a), comparable(await get('volumetransactions', theirs)));
      const again = await pluginK(['tx', verb, mine]);
      assert.equal(again.code, 0, show(again));
      assert.equal(again.stdout, `volumetransaction.flashcsi.io/${mine} unchanged (decision already ${decision})\n`);
    }
  });

  it('status prints rollbacks and transactions with phase, target, age and participants', async () => {
    await setStatus('volumerollbacks', 'rb-plugin', { phase: 'Completed', persistentVolumeClaimName: 'data', restoredBytes: 3 * 1024 * 1024, node: 'node-1' });
    await setStatus('volumetransactions', 'tx-plugin', {
      phase: 'Open',
      participants: [
        { persistentVolumeClaimName: 'data', node: 'node-1', state: 'Begun', checkpoint: 'tx-1-data' },
        { persistentVolumeClaimName: 'logs', node: 'node-2', state: 'Begun', checkpoint: 'tx-1-logs' },
      ],
    });
    const r = await pluginK(['status']);
    assert.equal(r.code, 0, show(r));
    const lines = r.stdout.trimEnd().split('\n');
    assert.match(lines[0] ?? '', /^KIND\s+NAME\s+PHASE\s+TARGET\s+AGE\s+DETAIL$/);
    assert.match(r.stdout, /\nVolumeRollback\s+rb-plugin\s+Completed\s+pvc\/data <- volumesnapshot\/snap1\s+\d+s\s+restored 3\.0 MiB; node node-1\n/);
    assert.match(r.stdout, /\nVolumeRollback\s+rb-kubectl\s+-\s+pvc\/\? <- volumesnapshot\/snap1\s+\d+s\s+-\n/);
    const txAt = lines.findIndex((l) => /^VolumeTransaction\s+tx-plugin\s/.test(l));
    assert.ok(txAt > 0, r.stdout);
    assert.match(lines[txAt] ?? '', /^VolumeTransaction\s+tx-plugin\s+Open\s+pvc\/data, pvc\/logs\s+\d+s\s+decision none$/);
    assert.match(lines[txAt + 1] ?? '', /^\s+participant\s+data\s+Begun\s+node\/node-1\s+checkpoint tx-1-data$/);
    assert.match(lines[txAt + 2] ?? '', /^\s+participant\s+logs\s+Begun\s+node\/node-2\s+checkpoint tx-1-logs$/);
    // Committed transactions show their decision.
    assert.match(r.stdout, /\nVolumeTransaction\s+tx-commit-plugin\s+-\s+pvc\/data\s+\d+s\s+decision Commit\n/);

    const all = await plugin([`--kubeconfig=${plane().kubeconfig}`, 'status', '-A']);
    assert.equal(all.code, 0, show(all));
    assert.match(all.stdout.split('\n')[0] ?? '', /^NAMESPACE\s+KIND\s+NAME\s+PHASE\s+TARGET\s+AGE\s+DETAIL$/);
    assert.match(all.stdout, /\napp\s+VolumeRollback\s+rb-plugin\s+Completed/);

    const empty = await plugin([`--kubeconfig=${plane().kubeconfig}`, '-n', 'other', 'status']);
    assert.equal(empty.code, 0, show(empty));
    assert.equal(empty.stdout, '');
    assert.equal(empty.stderr, 'No VolumeRollbacks or VolumeTransactions found in other namespace.\n');
  });

  it('uses $KUBECONFIG and the context namespace like kubectl when no flags are given', async () => {
    const kc = plane().kubeConfig();
    const ctx = kc.getCurrentContext();
    const withNs = join(dir, 'kubeconfig-app');
    const cfg = JSON.parse(kc.exportConfig()) as { contexts: Array<{ name: string; context: { namespace?: string } }> };
    for (const c of cfg.contexts) if (c.name === ctx) c.context.namespace = NS;
    await writeFile(withNs, JSON.stringify(cfg), { mode: 0o600 });
    const r = await plugin(['status'], { KUBECONFIG: withNs });
    assert.equal(r.code, 0, show(r));
    assert.match(r.stdout, /rb-plugin/);
    // Flags after the command, as `kubectl flashcsi status -n app --kubeconfig …` passes them.
    const late = await plugin(['status', '-n', NS, '--kubeconfig', plane().kubeconfig]);
    assert.equal(late.code, 0, show(late));
    assert.match(late.stdout, /rb-plugin/);
  });

  /** Starts the plugin and resolves its result when it exits; `lines` collects stdout lines as they come. */
  function startPlugin(args: readonly string[]): { done: Promise<RunResult>; lines: string[]; sawLine: (re: RegExp) => Promise<void> } {
    const child = spawn(process.execPath, [PLUGIN, `--kubeconfig=${plane().kubeconfig}`, '-n', NS, ...args], {
      env: { PATH: process.env['PATH'] ?? '', HOME: dir },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const lines: string[] = [];
    let stdout = '';
    let stderr = '';
    const waiters: Array<{ re: RegExp; resolve: () => void }> = [];
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      lines.splice(0, lines.length, ...stdout.split('\n').filter((l) => l !== ''));
      for (const w of [...waiters]) {
        if (lines.some((l) => w.re.test(l))) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve();
        }
      }
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const done = new Promise<RunResult>((resolve) => child.on('exit', (code) => resolve({ code: code ?? 1, stdout, stderr })));
    const sawLine = (re: RegExp): Promise<void> =>
      lines.some((l) => re.test(l))
        ? Promise.resolve()
        : Promise.race([
            new Promise<void>((resolve) => waiters.push({ re, resolve })),
            done.then((r) => {
              throw new Error(`plugin exited before printing ${re}: ${show(r)}`);
            }),
          ]);
    return { done, lines, sawLine };
  }

  const exists = (plural: string, name: string) => async (): Promise<true | undefined> => {
    try {
      await get(plural, name);
      return true;
    } catch {
      return undefined;
    }
  };

  it('rollback --wait follows the status through a watch until Completed (exit 0) or Failed (exit 1)', async () => {
    const ok = startPlugin(['rollback', 'data', '--to', 'snap1', '--name', 'rb-wait', '--wait', '--wait-timeout', '2m']);
    await ok.sawLine(/^volumerollback\.flashcsi\.io\/rb-wait created$/);
    await waitFor('rb-wait exists', exists('volumerollbacks', 'rb-wait'), { timeoutMs: 30_000 });
    await setStatus('volumerollbacks', 'rb-wait', { phase: 'WaitingForDetach', message: 'pod app-0 still uses the volume' });
    // The plugin reports the phase it saw through its watch before we move on.
    await ok.sawLine(/^volumerollback\.flashcsi\.io\/rb-wait WaitingForDetach: pod app-0 still uses the volume$/);
    await setStatus('volumerollbacks', 'rb-wait', { phase: 'Completed', message: '' });
    const r = await ok.done;
    assert.equal(r.code, 0, show(r));
    assert.match(r.stdout, /rb-wait Completed\n$/);

    const bad = startPlugin(['rollback', 'data', '--to', 'snap1', '--name', 'rb-fail', '--wait']);
    await bad.sawLine(/rb-fail created/);
    await setStatus('volumerollbacks', 'rb-fail', { phase: 'Failed', message: 'checkpoint is gone' });
    const f = await bad.done;
    assert.equal(f.code, 1, show(f));
    assert.equal(f.stderr, 'error: volumerollback.flashcsi.io "rb-fail" failed: checkpoint is gone\n');
  });

  it('tx begin --wait returns once Open; tx commit --wait once Committed', async () => {
    const begin = startPlugin(['tx', 'begin', 'tx-wait', '--pvc', 'data', '--pvc', 'logs', '--wait']);
    await begin.sawLine(/tx-wait created/);
    await setStatus('volumetransactions', 'tx-wait', { phase: 'Pending' });
    await begin.sawLine(/tx-wait Pending$/);
    await setStatus('volumetransactions', 'tx-wait', { phase: 'Open' });
    const b = await begin.done;
    assert.equal(b.code, 0, show(b));
    assert.match(b.stdout, /volumetransaction\.flashcsi\.io\/tx-wait Open\n$/);

    const commit = startPlugin(['tx', 'commit', 'tx-wait', '--wait']);
    await commit.sawLine(/tx-wait patched \(decision Commit\)/);
    await setStatus('volumetransactions', 'tx-wait', { phase: 'Preparing' });
    await commit.sawLine(/tx-wait Preparing$/);
    await setStatus('volumetransactions', 'tx-wait', { phase: 'Committed', decision: 'Commit' });
    const c = await commit.done;
    assert.equal(c.code, 0, show(c));
    assert.match(c.stdout, /tx-wait Committed\n$/);

    // A wait that cannot succeed ends with the transaction's own reason.
    assert.equal((await pluginK(['tx', 'begin', 'tx-lost', '--pvc', 'cache'])).code, 0);
    const lost = startPlugin(['tx', 'commit', 'tx-lost', '--wait']);
    await lost.sawLine(/tx-lost patched \(decision Commit\)/);
    await setStatus('volumetransactions', 'tx-lost', { phase: 'Preparing' });
    await lost.sawLine(/tx-lost Preparing$/);
    await setStatus('volumetransactions', 'tx-lost', { phase: 'Failed', message: 'participant cache: node-2 lost its volume' });
    const l = await lost.done;
    assert.equal(l.code, 1, show(l));
    assert.equal(l.stderr, 'error: volumetransaction.flashcsi.io "tx-lost" did not reach Committed: Failed: participant cache: node-2 lost its volume\n');

    // A transaction that already ended (here: timed out) cannot be decided any more.
    assert.equal((await pluginK(['tx', 'begin', 'tx-timeout', '--pvc', 'cache'])).code, 0);
    await setStatus('volumetransactions', 'tx-timeout', { phase: 'RolledBack', message: 'no decision within 3600s' });
    assertOneLineError(
      await pluginK(['tx', 'commit', 'tx-timeout']),
      /^error: volumetransaction\.flashcsi\.io "tx-timeout" has already ended: RolledBack: no decision within 3600s; it can no longer be decided$/,
    );
  });

  it('--wait-timeout gives up with one line', async () => {
    const r = await pluginK(['rollback', 'data', '--to', 'snap1', '--name', 'rb-slow', '--wait', '--wait-timeout', '1s']);
    assert.equal(r.code, 1, show(r));
    assert.equal(r.stdout, 'volumerollback.flashcsi.io/rb-slow created\n');
    assert.equal(r.stderr, 'error: timed out after 1s waiting for VolumeRollback "rb-slow"\n');
  });

  it('error paths print one clear line and exit non-zero', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['rollback', 'nope', '--to', 'snap1'], /^error: persistentvolumeclaim "nope" not found in namespace "app"$/],
      [['rollback', 'logs', '--to', 'snap1'], /^error: volumesnapshot "snap1" is a snapshot of PVC "data", not of "logs"$/],
      [['rollback', 'data', '--to', 'missing'], /^error: volumesnapshot "missing" not found in namespace "app"$/],
      [['rollback', 'data', '--to', 'preprovisioned'], /^error: volumesnapshot "preprovisioned" has no source PVC/],
      [['rollback', 'other/data', '--to', 'snap1'], /cross-namespace references are not allowed/],
      [['rollback', 'data', '--to', 'snap-logs'], /is a snapshot of PVC "logs", not of "data"/],
      [['rollback', 'data', '--to', 'snap-logs', '--name', 'rb-plugin'], /is a snapshot of PVC "logs"/],
      [['rollback', 'logs', '--to', 'snap-logs', '--name', 'rb-plugin'], /^error: volumerollback\.flashcsi\.io "rb-plugin" already exists and rolls back to "snap1"; its spec is immutable/],
      [['rollback', 'data', '--to', 'snap1', '--name', 'Bad_Name'], /^error: --name "Bad_Name" is not a valid object name/],
      [['tx', 'commit', 'nope'], /^error: volumetransaction "nope" not found in namespace "app"$/],
      [['tx', 'rollback', 'tx-commit-plugin'], /^error: volumetransaction\.flashcsi\.io "tx-commit-plugin" is already decided: Commit; a decision cannot be changed or withdrawn$/],
      [['tx', 'begin', 'tx-x', '--pvc', 'data', '--pvc', 'ghost'], /^error: persistentvolumeclaim "ghost" not found in namespace "app"$/],
      [['tx', 'begin', 'tx-x', '--pvc', 'ghost', '--pvc', 'phantom'], /^error: persistentvolumeclaims "ghost", "phantom" not found in namespace "app"$/],
      [['tx', 'begin', 'tx-x', '--pvc', 'data', '--pvc', 'data'], /^error: --pvc names a PVC twice: data$/],
      [['tx', 'begin', 'tx-plugin', '--pvc', 'data'], /^error: volumetransaction\.flashcsi\.io "tx-plugin" already exists with PVCs data, logs; its PVCs are immutable/],
      [['tx', 'begin', 'tx-x', '--pvc', 'data', '--timeout', 'ten'], /^error: --timeout: invalid duration "ten"/],
      [['tx', 'begin', 'tx-x', '--pvc', 'data', '--timeout', '200h'], /^error: --timeout must be between 1s and 168h/],
      // Bad flags: commander's own one-line messages.
      [['rollback', 'data'], /^error: required option '--to <snapshot>' not specified$/],
      [['tx', 'begin', 'tx-x'], /^error: required option '--pvc <pvc>' not specified$/],
      [['status', '--bogus'], /^error: unknown option '--bogus'$/],
      [['rollback', 'data', 'extra', '--to', 'snap1'], /^error: too many arguments for 'rollback'/],
      [['tx', 'frobnicate'], /^error: unknown command 'frobnicate'/],
      [['rollback', 'data', '--to', 'snap1', '--wait', '--wait-timeout', 'soon'], /^error: --wait-timeout: invalid duration "soon"/],
    ];
    for (const [args, want] of cases) assertOneLineError(await pluginK(args), want);
  });

  it('a bad kubeconfig, context or unreachable API server is one line too', async () => {
    assertOneLineError(await plugin(['--kubeconfig', join(dir, 'absent'), 'status']), /^error: cannot load kubeconfig .*absent/);
    assertOneLineError(await plugin(['--kubeconfig', plane().kubeconfig, '--context', 'nope', 'status']), /^error: context "nope" not found in the kubeconfig$/);
    const port = await freePort();
    const kc = plane().kubeConfig();
    const cfg = JSON.parse(kc.exportConfig()) as { clusters: Array<{ cluster: { server: string } }> };
    for (const c of cfg.clusters) c.cluster.server = `https://127.0.0.1:${port}`;
    const dead = join(dir, 'kubeconfig-dead');
    await writeFile(dead, JSON.stringify(cfg), { mode: 0o600 });
    assertOneLineError(await plugin(['--kubeconfig', dead, 'status']), /^error: cannot reach the API server \(ECONNREFUSED\)/);
    const noToken = join(dir, 'kubeconfig-anon');
    const anon = JSON.parse(kc.exportConfig()) as { users: Array<{ user: Record<string, unknown> }> };
    for (const u of anon.users) u.user = { token: 'not-a-valid-token' };
    await writeFile(noToken, JSON.stringify(anon), { mode: 0o600 });
    assertOneLineError(await plugin(['--kubeconfig', noToken, 'status']), /^error: Unauthorized/);
  });

  it('--help works on every command (exit 0, usage on stdout)', async () => {
    for (const args of [[], ['rollback'], ['tx'], ['tx', 'begin'], ['tx', 'commit'], ['tx', 'rollback'], ['status']]) {
      const r = await plugin([...args, '--help']);
      assert.equal(r.code, 0, show(r));
      assert.match(r.stdout, new RegExp(`^Usage: kubectl-flashcsi${args.length > 0 ? ' ' + args.join(' ') : ''} `), show(r));
    }
  });
});
