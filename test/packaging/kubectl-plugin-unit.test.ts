// The kubectl-flashcsi plugin's pure parts: durations, ages, names, manifests, the status table and
// error lines. The end-to-end behaviour against a real API server is in kubectl-plugin.test.ts.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ApiException } from '@kubernetes/client-node';
import type { VolumeRollback, VolumeTransaction } from '../../src/k8s/api.js';
import { humanDuration, parseDurationSeconds } from '../../src/k8s/kubectl/duration.js';
import { describeError, PluginError } from '../../src/k8s/kubectl/errors.js';
import { defaultRollbackName, volumeRollbackManifest, volumeTransactionManifest } from '../../src/k8s/kubectl/manifests.js';
import { renderTable, statusRows } from '../../src/k8s/kubectl/status-table.js';

describe('kubectl-flashcsi internals', () => {
  it('parses durations like kubectl (Go syntax or seconds)', () => {
    assert.equal(parseDurationSeconds('90', '--timeout'), 90);
    assert.equal(parseDurationSeconds('90s', '--timeout'), 90);
    assert.equal(parseDurationSeconds('10m', '--timeout'), 600);
    assert.equal(parseDurationSeconds('1h30m', '--timeout'), 5400);
    assert.equal(parseDurationSeconds('1.5h', '--timeout'), 5400);
    assert.equal(parseDurationSeconds('1500ms', '--timeout'), 2);
    for (const bad of ['', 'ten', '10 m', '-5s', '5d', 'm']) assert.throws(() => parseDurationSeconds(bad, '--timeout'), PluginError, bad);
  });

  it('formats ages as kubectl does (apimachinery HumanDuration)', () => {
    const s = 1000;
    const cases: Array<[number, string]> = [
      [0, '0s'],
      [119 * s, '119s'],
      [120 * s, '2m'],
      [130 * s, '2m10s'],
      [10 * 60 * s, '10m'],
      [179 * 60 * s, '179m'],
      [3 * 3600 * s, '3h'],
      [3.5 * 3600 * s, '3h30m'],
      [30 * 3600 * s, '30h'],
      [50 * 3600 * s, '2d2h'],
      [9 * 24 * 3600 * s, '9d'],
      [800 * 24 * 3600 * s, '2y70d'],
    ];
    for (const [ms, want] of cases) assert.equal(humanDuration(ms), want, String(ms));
  });

  it('names rollbacks <pvc>-to-<snapshot>-<suffix>, within 253 characters', () => {
    assert.equal(defaultRollbackName('data', 'snap1', 'abcde'), 'data-to-snap1-abcde');
    const long = defaultRollbackName('p'.repeat(200), 's'.repeat(200), 'abcde');
    assert.equal(long.length, 253);
    assert.match(long, /^p+-to-s+-abcde$/);
    // A cut that ends on '-' is trimmed, so the name stays valid.
    assert.equal(defaultRollbackName('a'.repeat(246), 'x', 'abcde'), `${'a'.repeat(246)}-abcde`);
  });

  it('builds manifests with only what the user chose', () => {
    assert.deepEqual(volumeRollbackManifest('ns', 'rb', 'snap'), {
      apiVersion: 'flashcsi.io/v1alpha1',
      kind: 'VolumeRollback',
      metadata: { name: 'rb', namespace: 'ns' },
      spec: { volumeSnapshotName: 'snap' },
    });
    assert.deepEqual(volumeTransactionManifest('ns', 'tx', ['a', 'b'], undefined).spec, { persistentVolumeClaims: ['a', 'b'] });
    assert.deepEqual(volumeTransactionManifest('ns', 'tx', ['a'], 600).spec, { persistentVolumeClaims: ['a'], timeoutSeconds: 600 });
    assert.throws(() => volumeRollbackManifest('ns', 'rb', 'other/snap'), /cross-namespace references are not allowed/);
    assert.throws(() => volumeTransactionManifest('ns', 'tx', [], undefined), /at least one --pvc/);
    assert.throws(() => volumeTransactionManifest('ns', 'tx', Array.from({ length: 65 }, (_, i) => `p${i}`), undefined), /at most 64/);
    assert.throws(() => volumeTransactionManifest('ns', 'TX', ['a'], undefined), /not a valid object name/);
  });

  it('renders the status table with participants under their transaction', () => {
    const now = Date.parse('2026-01-01T01:00:00Z');
    const rb: VolumeRollback = {
      apiVersion: 'flashcsi.io/v1alpha1',
      kind: 'VolumeRollback',
      metadata: { name: 'rb', namespace: 'ns', creationTimestamp: '2026-01-01T00:55:00Z' },
      spec: { volumeSnapshotName: 's1' },
      status: { phase: 'WaitingForDetach', persistentVolumeClaimName: 'data', message: 'pod app-0 uses it' },
    };
    const tx: VolumeTransaction = {
      apiVersion: 'flashcsi.io/v1alpha1',
      kind: 'VolumeTransaction',
      metadata: { name: 'tx', namespace: 'ns', creationTimestamp: '2026-01-01T00:00:00Z' },
      spec: { persistentVolumeClaims: ['a', 'b'], decision: 'Commit' },
      status: { phase: 'Preparing', participants: [{ persistentVolumeClaimName: 'a', node: 'n1', state: 'Prepared' }] },
    };
    const table = renderTable(statusRows([rb], [tx], now), false);
    assert.equal(
      table,
      [
        'KIND                NAME   PHASE              TARGET                          AGE   DETAIL',
        'VolumeRollback      rb     WaitingForDetach   pvc/data <- volumesnapshot/s1   5m    pod app-0 uses it',
        'VolumeTransaction   tx     Preparing          pvc/a, pvc/b                    60m   decision Commit',
        '  participant       a      Prepared           node/n1                               -',
        '  participant       b      -                  -                                     -',
        '',
      ].join('\n'),
    );
  });

  it('describes errors in one line', () => {
    const api = new ApiException(
      422,
      'Unknown API Status Code!',
      JSON.stringify({ kind: 'Status', reason: 'Invalid', message: 'VolumeTransaction.flashcsi.io "t" is invalid:\nspec: the decision cannot be changed' }),
      {},
    );
    assert.equal(describeError(api), '(Invalid) VolumeTransaction.flashcsi.io "t" is invalid:; spec: the decision cannot be changed');
    assert.match(describeError(new ApiException(401, 'Unauthorized', undefined, {})), /^Unauthorized/);
    assert.equal(describeError(new PluginError('INVALID_ARGUMENT', 'a\nb')), 'a; b');
    const net = Object.assign(new Error('request to https://127.0.0.1:1/ failed'), { code: 'ECONNREFUSED' });
    assert.match(describeError(net), /^cannot reach the API server \(ECONNREFUSED\)/);
  });
});
