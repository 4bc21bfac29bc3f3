/**
 * Which snapshot contents the node agent labels for its node's csi-snapshotter (src/k8s/snapshot-contents.ts):
 * only flashcsi's, only unlabelled ones, and the volume ids they name — source volume, the volume of a
 * snapshot handle, every member of a group. The labelling itself runs against the real snapshot-controller
 * and csi-snapshotter in test/k8s-e2e (an imported snapshot becomes ready).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { unlabelledVolumes, type SnapshotContentObject } from '../../src/k8s/snapshot-contents.js';

const content = (source: NonNullable<NonNullable<SnapshotContentObject['spec']>['source']>, o: { driver?: string; labels?: Record<string, string> } = {}): SnapshotContentObject => ({
  metadata: { name: 'c', ...(o.labels ? { labels: o.labels } : {}) },
  spec: { driver: o.driver ?? 'flashcsi.io', source },
});

describe('unlabelledVolumes: the contents the agent labels, and the volumes they name', () => {
  it('a dynamic content names its source volume; a pre-provisioned one the volume of its snapshot handle', () => {
    assert.deepEqual(unlabelledVolumes(content({ volumeHandle: 'pvc-1' })), ['pvc-1']);
    assert.deepEqual(unlabelledVolumes(content({ snapshotHandle: 'pvc-1@snapshot-2' })), ['pvc-1']);
  });

  it('a group content names every member, dynamic or pre-provisioned', () => {
    assert.deepEqual(unlabelledVolumes(content({ volumeHandles: ['pvc-1', 'pvc-2'] })), ['pvc-1', 'pvc-2']);
    assert.deepEqual(unlabelledVolumes(content({ groupSnapshotHandles: { volumeGroupSnapshotHandle: 'g-1', volumeSnapshotHandles: ['pvc-1@g-1', 'pvc-2@g-1'] } })), ['pvc-1', 'pvc-2']);
  });

  it("leaves alone another driver's contents, labelled ones, malformed handles and contents naming nothing", () => {
    assert.equal(unlabelledVolumes(content({ volumeHandle: 'pvc-1' }, { driver: 'hostpath.csi.k8s.io' })), undefined);
    assert.equal(unlabelledVolumes(content({ volumeHandle: 'pvc-1' }, { labels: { 'snapshot.storage.kubernetes.io/managed-by': 'node-b' } })), undefined);
    assert.equal(unlabelledVolumes(content({ snapshotHandle: 'no-at-sign' })), undefined);
    assert.equal(unlabelledVolumes(content({})), undefined);
  });
});
