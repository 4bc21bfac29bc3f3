/**
 * The storage e2e suite's test-driver files say what flashcsi is. The suite ignores unknown keys and
 * the two files (ext4, xfs) must not drift apart, so this checks: every capability key is one the
 * pinned suite knows (storage/framework/testdriver.go), every one it knows is stated; the xfs file is
 * the ext4 file but for the file system, its StorageClass, its Min (the smallest volume of that file
 * system, MIN_FS_BYTES) and its comments; the StorageClass and
 * VolumeSnapshotClass they name are the chart's (the xfs one as `--set storageClass.fsType=xfs`
 * renders it).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import yaml from 'js-yaml';
import { MIN_FS_BYTES } from '../../src/volumes/spec.js';
import { repoRoot } from '../k8s/harness.js';
import { CHART, find, helm, parseManifests, show } from '../packaging/helpers.js';
import { driverFile, kubernetesModuleFile } from './suite.js';

interface DriverDefinition {
  StorageClass: { FromExistingClassName?: string; FromFile?: string };
  SnapshotClass: { FromExistingClassName?: string };
  DriverInfo: {
    Name: string;
    SupportedSizeRange: { Min: string };
    SupportedFsType: Record<string, unknown>;
    SupportedMountOption: Record<string, unknown>;
    TopologyKeys: string[];
    Capabilities: Record<string, boolean>;
  };
}

const load = (file: string): DriverDefinition => yaml.load(readFileSync(file, 'utf8')) as DriverDefinition;

/** The capability names of the pinned suite: `CapX Capability = "name"` in testdriver.go. */
function suiteCapabilities(): string[] {
  const src = readFileSync(kubernetesModuleFile('test/e2e/storage/framework/testdriver.go'), 'utf8');
  return [...src.matchAll(/^\s*Cap\w+\s+Capability\s*=\s*"([^"]+)"/gm)].map((m) => m[1] ?? '');
}

describe('storage e2e test-driver files', () => {
  const ext4 = load(driverFile('ext4'));
  const xfs = load(driverFile('xfs'));

  it('state every capability the pinned suite knows, and only those', () => {
    const known = suiteCapabilities();
    assert.ok(known.length >= 20, `found the suite's capabilities (${known.join(', ')})`);
    assert.deepEqual(Object.keys(ext4.DriverInfo.Capabilities).sort(), [...known].sort());
    for (const [k, v] of Object.entries(ext4.DriverInfo.Capabilities)) assert.equal(typeof v, 'boolean', k);
  });

  it('the xfs file is the ext4 file but for the file system, its StorageClass and its Min: the smallest volume of that file system', () => {
    assert.deepEqual(Object.keys(ext4.DriverInfo.SupportedFsType).sort(), ['', 'ext4']);
    assert.deepEqual(Object.keys(xfs.DriverInfo.SupportedFsType).sort(), ['', 'xfs']);
    assert.equal(ext4.DriverInfo.SupportedSizeRange.Min, `${MIN_FS_BYTES.ext4 >> 20n}Mi`);
    assert.equal(xfs.DriverInfo.SupportedSizeRange.Min, `${MIN_FS_BYTES.xfs >> 20n}Mi`);
    const rest = (d: DriverDefinition): unknown => ({ ...d, StorageClass: undefined, DriverInfo: { ...d.DriverInfo, SupportedFsType: undefined, SupportedSizeRange: undefined } });
    assert.deepEqual(rest(xfs), rest(ext4));
    assert.equal(ext4.DriverInfo.Name, 'flashcsi.io');
    assert.deepEqual(ext4.DriverInfo.TopologyKeys, ['topology.flashcsi.io/node']);
  });

  it("name the chart's StorageClass and VolumeSnapshotClass; storageclass-xfs.yaml is the chart's class with fsType xfs", async () => {
    const defaults = parseManifests((await helm(['template', 'flashcsi', CHART])).stdout);
    const chartClass = find(defaults, 'StorageClass', ext4.StorageClass.FromExistingClassName ?? '');
    assert.equal((chartClass['parameters'] as Record<string, string>)['csi.storage.k8s.io/fstype'], 'ext4');
    find(defaults, 'VolumeSnapshotClass', ext4.SnapshotClass.FromExistingClassName ?? '');
    assert.equal(xfs.SnapshotClass.FromExistingClassName, ext4.SnapshotClass.FromExistingClassName);

    const r = await helm(['template', 'flashcsi', CHART, '--set', 'storageClass.fsType=xfs']);
    assert.equal(r.code, 0, show(r));
    const rendered = find(parseManifests(r.stdout), 'StorageClass', 'flashcsi');
    const file = yaml.load(readFileSync(join(repoRoot(), xfs.StorageClass.FromFile ?? ''), 'utf8')) as Record<string, unknown>;
    const shape = (sc: Record<string, unknown>): unknown => ({ ...sc, metadata: undefined });
    assert.deepEqual(shape(file), shape(rendered));
  });
});
