/**
 * test/e2e-storage/skips.yaml, the one list of why a storage e2e spec may be skipped here, and the
 * classification every run applies with it (suite.ts). The list: every entry has a reason, compiles
 * as a regular expression, and a machine entry names specs e2e.test really registers (a ginkgo dry
 * run of the test-driver file); a capability entry names a capability the driver files declare false
 * or a field they leave out. The classification: a spec is failed, passed, or skipped for a listed
 * reason; anything else is "unexplained", which fails the run.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import yaml from 'js-yaml';
import { FS_TYPES, PASSES, classify, driverFile, focusOf, loadSkipList, registeredSpecs, type SkipList, type SpecResult } from './suite.js';

/** Capabilities that are restrictions: declared true, they make the suite skip specs (singleNodeVolume: no other node). */
const RESTRICTIONS = ['singleNodeVolume'];
/** Driver-file fields the suite reads besides Capabilities; a capability skip may name one the files leave out. */
const DRIVER_FIELDS = ['InlineVolumes', 'VolumeAttributesClass', 'GroupSnapshotClass', 'StressTestOptions', 'VolumeSnapshotStressTestOptions', 'VolumeModifyStressTestOptions', 'PerformanceTestOptions', 'VolumeGroupSnapshotStressTestOptions', 'SupportedFsType'];

describe('skips.yaml: the one list of skip reasons', () => {
  const list = loadSkipList();

  it('every entry has a reason and a regular expression that compiles; file systems are known', () => {
    for (const e of [...list.machine, ...list.capability, ...list.suite]) {
      assert.ok(typeof e.reason === 'string' && e.reason.trim().length > 10, `a reason for ${JSON.stringify(e)}`);
    }
    for (const m of list.machine) {
      assert.doesNotThrow(() => new RegExp(m.spec), m.spec);
      for (const fs of m.fs ?? []) assert.ok((FS_TYPES as readonly string[]).includes(fs), `${m.spec}: fs ${fs}`);
    }
    for (const c of [...list.capability, ...list.suite]) assert.doesNotThrow(() => new RegExp(c.message), c.message);
  });

  it('a capability entry names a capability the driver files declare false (a restriction: true), or a field they leave out', () => {
    for (const fs of FS_TYPES) {
      const driver = yaml.load(readFileSync(driverFile(fs), 'utf8')) as Record<string, unknown> & { DriverInfo: Record<string, unknown> & { Capabilities: Record<string, boolean> } };
      for (const c of list.capability) {
        const declaredFalse = driver.DriverInfo.Capabilities[c.capability] === (RESTRICTIONS.includes(c.capability) ? true : false);
        const fieldLeftOut = DRIVER_FIELDS.includes(c.capability) && driver[c.capability] === undefined && driver.DriverInfo[c.capability] === undefined;
        const fsType = c.capability === 'SupportedFsType';
        assert.ok(declaredFalse || fieldLeftOut || fsType, `${c.capability} (${c.message}) is not something test-driver-${fs}.yaml leaves out`);
      }
    }
  });

  it('every machine entry names specs e2e.test registers for the file systems it applies to', () => {
    for (const fs of FS_TYPES) {
      const specs = registeredSpecs(fs);
      assert.ok(specs.length > 50, `the dry run of test-driver-${fs}.yaml registers the suite (${specs.length})`);
      const inSomePass = specs.filter((t) => PASSES.some((p) => new RegExp(focusOf(p)).test(t) && !new RegExp(p.skip).test(t)));
      for (const m of list.machine.filter((x) => x.fs === undefined || x.fs.includes(fs))) {
        assert.ok(inSomePass.some((t) => new RegExp(m.spec).test(t)), `${fs}: "${m.spec}" matches no spec any pass selects`);
      }
    }
  });
});

describe('classify: every selected spec is passed, failed, or skipped for a listed reason', () => {
  const list: SkipList = {
    machine: [{ spec: String.raw`kubelet is down`, reason: 'the nodes have no SSH or systemd' }],
    capability: [{ message: 'does not support ROX', capability: 'capReadOnlyMany', reason: 'node-local volumes' }],
    suite: [{ message: 'should be covered by block', reason: 'the suite runs it only in block mode' }],
  };
  const spec = (text: string, state: string, message = ''): SpecResult => ({ text: `External Storage [Driver: flashcsi.io] [Testpattern: Dynamic PV (default fs)] ${text}`, state, message, seconds: 1 });
  const pass1 = PASSES[0];
  if (pass1 === undefined) throw new Error('no pass 1');

  it('counts each state, explains skips from the list, and keeps anything else apart', () => {
    const x = classify(
      [
        spec('provisioning should provision', 'passed'),
        spec('subPath should unmount if pod is deleted while kubelet is down', 'skipped'),
        spec('provisioning should provision storage with snapshot data source (ROX mode)', 'skipped', 'Driver "flashcsi.io" does not support ROX access mode - skipping'),
        spec('volumes should store data', 'skipped', 'Filesystem volume case should be covered by block volume case -- skipping'),
        spec('volumes should allow exec', 'failed', 'timed out'),
        spec('volumeIO should write files', 'skipped', 'some reason nobody listed'),
        spec('volumeIO should read files', 'interrupted'),
        spec('snapshottable [Feature:VolumeSnapshotDataSource] should snapshot', 'passed'), // not in pass 1
      ],
      'ext4',
      pass1,
      list,
      60,
    );
    assert.equal(x.selected, 7);
    assert.equal(x.passed.length, 1);
    assert.deepEqual(x.failed.map((f) => f.message), ['timed out']);
    assert.deepEqual(x.skipped.map((s) => s.kind), ['machine', 'capability', 'suite']);
    assert.equal(x.skipped[1]?.reason, 'capReadOnlyMany: node-local volumes');
    assert.deepEqual(x.unexplained.map((u) => u.state), ['skipped', 'interrupted']);
  });

  it('a machine entry for one file system does not excuse the other', () => {
    const ext4Only: SkipList = { ...list, machine: [{ spec: 'kubelet is down', fs: ['ext4'], reason: 'an ext4-only reason here' }] };
    const s = [spec('subPath should unmount while kubelet is down', 'skipped')];
    assert.equal(classify(s, 'ext4', pass1, ext4Only, 1).skipped.length, 1);
    assert.equal(classify(s, 'xfs', pass1, ext4Only, 1).unexplained.length, 1);
  });

  it('narrowed to some suites, only their specs count', () => {
    const x = classify([spec('provisioning should provision', 'passed'), spec('subPath should work', 'passed')], 'ext4', pass1, list, 1, ['provisioning']);
    assert.equal(x.selected, 1);
  });
});
