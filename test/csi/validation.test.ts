/** Table-driven request validation tests (hostpath style: "failure case - …" / "success case - …"). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CsiError, CsiErrorCode } from '../../src/volumes/errors.js';
import type { CreateVolumeRequest__Output } from '../../src/csi/generated/csi/v1/CreateVolumeRequest.js';
import type { VolumeCapability__Output } from '../../src/csi/generated/csi/v1/VolumeCapability.js';
import {
  capabilityProblem,
  parseCapacityRange,
  parseGrainSize,
  parseInt64,
  parseSnapshotId,
  parseVolumeParameters,
  validateControllerExpandVolumeRequest,
  validateCreateSnapshotRequest,
  validateCreateVolumeGroupSnapshotRequest,
  validateCreateVolumeRequest,
  validateDeleteSnapshotRequest,
  validateDeleteVolumeRequest,
  validateNodePublishVolumeRequest,
  validateNodeStageVolumeRequest,
  validateValidateVolumeCapabilitiesRequest,
  validateVolumeId,
  validateVolumePath,
} from '../../src/csi/validation.js';
import { formatSnapshotId } from '../../src/volumes/ids.js';
import { chooseCapacity, MIN_FS_BYTES, minimumVolumeBytes } from '../../src/volumes/spec.js';

const mount = (mode: string, fs_type = ''): VolumeCapability__Output =>
  ({ mount: { fs_type, mount_flags: [], volume_mount_group: '' }, access_mode: { mode }, access_type: 'mount' }) as VolumeCapability__Output;
const block = (mode: string): VolumeCapability__Output => ({ block: {}, access_mode: { mode }, access_type: 'block' }) as VolumeCapability__Output;

function createReq(overrides: Partial<CreateVolumeRequest__Output> = {}): CreateVolumeRequest__Output {
  return {
    name: 'pvc-1',
    capacity_range: null,
    volume_capabilities: [mount('SINGLE_NODE_WRITER', 'ext4')],
    parameters: {},
    secrets: {},
    volume_content_source: null,
    accessibility_requirements: null,
    mutable_parameters: {},
    ...overrides,
  };
}

function assertCsiError(fn: () => unknown, code: CsiErrorCode, message?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof CsiError, `expected CsiError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (message) assert.match(err.message, message);
    return true;
  });
}

describe('validateCreateVolumeRequest', () => {
  const failures: Array<[string, Partial<CreateVolumeRequest__Output>, CsiErrorCode, RegExp]> = [
    ['no name', { name: '' }, 'INVALID_ARGUMENT', /name is required/],
    ['name longer than 128 bytes', { name: 'x'.repeat(129) }, 'INVALID_ARGUMENT', /128 bytes/],
    ['no volume capabilities', { volume_capabilities: [] }, 'INVALID_ARGUMENT', /volume_capabilities is required/],
    ['MULTI_NODE_MULTI_WRITER', { volume_capabilities: [mount('MULTI_NODE_MULTI_WRITER')] }, 'INVALID_ARGUMENT', /MULTI_NODE_MULTI_WRITER is not supported/],
    ['MULTI_NODE_READER_ONLY', { volume_capabilities: [block('MULTI_NODE_READER_ONLY')] }, 'INVALID_ARGUMENT', /not supported/],
    ['MULTI_NODE_SINGLE_WRITER', { volume_capabilities: [block('MULTI_NODE_SINGLE_WRITER')] }, 'INVALID_ARGUMENT', /not supported/],
    ['UNKNOWN access mode', { volume_capabilities: [block('UNKNOWN')] }, 'INVALID_ARGUMENT', /UNKNOWN is not supported/],
    ['missing access mode', { volume_capabilities: [{ block: {}, access_mode: null, access_type: 'block' } as VolumeCapability__Output] }, 'INVALID_ARGUMENT', /not supported/],
    ['fs_type btrfs', { volume_capabilities: [mount('SINGLE_NODE_WRITER', 'btrfs')] }, 'INVALID_ARGUMENT', /btrfs/],
    ['neither block nor mount', { volume_capabilities: [{ access_mode: { mode: 'SINGLE_NODE_WRITER' } } as VolumeCapability__Output] }, 'INVALID_ARGUMENT', /neither block nor mount/],
    ['one bad capability among good ones', { volume_capabilities: [block('SINGLE_NODE_WRITER'), mount('MULTI_NODE_MULTI_WRITER')] }, 'INVALID_ARGUMENT', /volume_capabilities\[1\]/],
    ['negative required_bytes', { capacity_range: { required_bytes: '-1', limit_bytes: '0' } }, 'INVALID_ARGUMENT', /negative/],
    ['negative limit_bytes', { capacity_range: { required_bytes: '0', limit_bytes: '-5' } }, 'INVALID_ARGUMENT', /negative/],
    ['required_bytes > limit_bytes', { capacity_range: { required_bytes: '2048', limit_bytes: '1024' } }, 'INVALID_ARGUMENT', /exceeds limit_bytes/],
    ['empty capacity range', { capacity_range: { required_bytes: '0', limit_bytes: '0' } }, 'INVALID_ARGUMENT', /must set/],
    ['int64 overflow', { capacity_range: { required_bytes: '9223372036854775808', limit_bytes: '0' } }, 'INVALID_ARGUMENT', /int64 range/],
    ['non-numeric bytes', { capacity_range: { required_bytes: '1e9', limit_bytes: '0' } }, 'INVALID_ARGUMENT', /not an int64/],
    ['grainSize not a power of two', { parameters: { grainSize: '12288' } }, 'INVALID_ARGUMENT', /power of two/],
    ['grainSize below 4 KiB', { parameters: { grainSize: '2048' } }, 'INVALID_ARGUMENT', /power of two/],
    ['grainSize above 1 MiB', { parameters: { grainSize: '2Mi' } }, 'INVALID_ARGUMENT', /power of two/],
    ['grainSize not a number', { parameters: { grainSize: 'big' } }, 'INVALID_ARGUMENT', /not a size/],
    ['fsType parameter btrfs', { parameters: { fsType: 'btrfs' } }, 'INVALID_ARGUMENT', /btrfs/],
    ['unknown parameter', { parameters: { grainsize: '65536' } }, 'INVALID_ARGUMENT', /unknown key "grainsize"/],
    ['content source with nothing set', { volume_content_source: {} }, 'INVALID_ARGUMENT', /neither snapshot nor volume/],
    ['malformed source snapshot id', { volume_content_source: { snapshot: { snapshot_id: 'no-separator' }, type: 'snapshot' } }, 'NOT_FOUND', /not found/],
    ['empty source snapshot id', { volume_content_source: { snapshot: { snapshot_id: '' }, type: 'snapshot' } }, 'INVALID_ARGUMENT', /required/],
    ['malformed source volume id', { volume_content_source: { volume: { volume_id: '../etc' }, type: 'volume' } }, 'NOT_FOUND', /not found/],
  ];
  for (const [name, overrides, code, message] of failures) {
    it(`failure case - ${name}`, () => assertCsiError(() => validateCreateVolumeRequest(createReq(overrides)), code, message));
  }

  const successes: Array<[string, Partial<CreateVolumeRequest__Output>, (args: ReturnType<typeof validateCreateVolumeRequest>) => void]> = [
    ['minimal mount request', {}, (a) => {
      assert.equal(a.name, 'pvc-1');
      assert.deepEqual(a.capabilities, [{ kind: 'mount', accessMode: 'SINGLE_NODE_WRITER', fsType: 'ext4', mountFlags: [], volumeMountGroup: '' }]);
      assert.equal(a.capacity, undefined);
      assert.deepEqual(a.parameters, { grainSize: undefined, fsType: undefined });
    }],
    ['128-byte name', { name: 'n'.repeat(128) }, (a) => assert.equal(a.name.length, 128)],
    ['every supported access mode, block and mount', {
      volume_capabilities: [block('SINGLE_NODE_WRITER'), block('SINGLE_NODE_READER_ONLY'), mount('SINGLE_NODE_SINGLE_WRITER', 'xfs'), mount('SINGLE_NODE_MULTI_WRITER', '')],
    }, (a) => assert.deepEqual(a.capabilities.map((cap) => cap.accessMode), ['SINGLE_NODE_WRITER', 'SINGLE_NODE_READER_ONLY', 'SINGLE_NODE_SINGLE_WRITER', 'SINGLE_NODE_MULTI_WRITER'])],
    ['capacity beyond 2^53 stays exact', { capacity_range: { required_bytes: '9007199254740993', limit_bytes: '9223372036854775807' } }, (a) => {
      assert.equal(a.capacity?.requiredBytes, 9007199254740993n);
      assert.equal(a.capacity?.limitBytes, 9223372036854775807n);
    }],
    ['only limit_bytes', { capacity_range: { required_bytes: '0', limit_bytes: '1073741824' } }, (a) => assert.deepEqual(a.capacity, { requiredBytes: 0n, limitBytes: 1073741824n })],
    ['required equals limit', { capacity_range: { required_bytes: '4096', limit_bytes: '4096' } }, (a) => assert.equal(a.capacity?.requiredBytes, 4096n)],
    ['grainSize in bytes, fsType xfs, and sidecar keys ignored', {
      parameters: { grainSize: '65536', fsType: 'xfs', 'csi.storage.k8s.io/pvc/name': 'data', 'csi.storage.k8s.io/pvc/namespace': 'default' },
    }, (a) => assert.deepEqual(a.parameters, { grainSize: 65536, fsType: 'xfs' })],
    ['grainSize with suffixes at both ends of the range', { parameters: { grainSize: '4Ki' } }, (a) => assert.equal(a.parameters.grainSize, 4096)],
    ['grainSize 1Mi', { parameters: { grainSize: '1Mi' } }, (a) => assert.equal(a.parameters.grainSize, 1048576)],
    ['snapshot source', { volume_content_source: { snapshot: { snapshot_id: 'pvc-1@snap-a' }, type: 'snapshot' } }, (a) =>
      assert.deepEqual(a.contentSource, { kind: 'snapshot', snapshotId: 'pvc-1@snap-a', snapshot: { volumeId: 'pvc-1', checkpoint: 'snap-a' } })],
    ['volume source', { volume_content_source: { volume: { volume_id: 'pvc-0' }, type: 'volume' } }, (a) => assert.deepEqual(a.contentSource, { kind: 'volume', volumeId: 'pvc-0' })],
  ];
  for (const [name, overrides, check] of successes) {
    it(`success case - ${name}`, () => check(validateCreateVolumeRequest(createReq(overrides))));
  }
});

describe('capacity', () => {
  const policy = { defaultBytes: 1n << 30n, alignBytes: 1n << 20n, maxBytes: 1n << 60n };
  const cases: Array<[string, [string, string] | undefined, bigint | CsiErrorCode]> = [
    ['no range → default', undefined, 1n << 30n],
    ['required rounded up to the alignment', ['1', '0'], 1n << 20n],
    ['required already aligned', [String(3n << 20n), '0'], 3n << 20n],
    ['only a limit below the default → the limit, rounded down', ['0', String((5n << 20n) + 7n)], 5n << 20n],
    ['only a limit above the default → the default', ['0', String(1n << 40n)], 1n << 30n],
    ['limit smaller than one alignment unit', ['0', '4096'], 'OUT_OF_RANGE'],
    ['rounding up passes the limit', ['1', '4096'], 'OUT_OF_RANGE'],
    ['larger than the plugin maximum', [String((1n << 60n) + 1n), '0'], 'OUT_OF_RANGE'],
    ['exact above 2^53', [String((1n << 53n) + (1n << 20n)), '0'], (1n << 53n) + (1n << 20n)],
  ];
  for (const [name, range, expected] of cases) {
    const label = typeof expected === 'bigint' ? 'success case' : 'failure case';
    it(`${label} - ${name}`, () => {
      const parsed = range === undefined ? undefined : parseCapacityRange({ required_bytes: range[0], limit_bytes: range[1] });
      if (typeof expected === 'bigint') assert.equal(chooseCapacity(parsed, policy), expected);
      else assertCsiError(() => chooseCapacity(parsed, policy), expected);
    });
  }

  const xfsMin = { ...policy, minBytes: 300n << 20n, minReason: 'an xfs file system can be made in' };
  it('a minimum raises a smaller required_bytes, within limit_bytes; a limit below it is OUT_OF_RANGE', () => {
    assert.equal(chooseCapacity(parseCapacityRange({ required_bytes: '1', limit_bytes: '0' }), xfsMin), 300n << 20n);
    assert.equal(chooseCapacity(parseCapacityRange({ required_bytes: String(400n << 20n), limit_bytes: '0' }), xfsMin), 400n << 20n);
    assertCsiError(() => chooseCapacity(parseCapacityRange({ required_bytes: '1', limit_bytes: String(100n << 20n) }), xfsMin), 'OUT_OF_RANGE');
  });

  it('minimumVolumeBytes: the largest file-system minimum of the mount capabilities; none for block', () => {
    const params = parseVolumeParameters({});
    const caps = (list: VolumeCapability__Output[]) => validateCreateVolumeRequest(createReq({ volume_capabilities: list })).capabilities;
    assert.equal(minimumVolumeBytes(caps([mount('SINGLE_NODE_WRITER', 'xfs')]), params).bytes, MIN_FS_BYTES.xfs);
    assert.equal(minimumVolumeBytes(caps([mount('SINGLE_NODE_WRITER')]), params).bytes, MIN_FS_BYTES.ext4);
    assert.equal(minimumVolumeBytes(caps([mount('SINGLE_NODE_WRITER')]), parseVolumeParameters({ fsType: 'xfs' })).bytes, MIN_FS_BYTES.xfs);
    assert.equal(minimumVolumeBytes(caps([block('SINGLE_NODE_WRITER')]), params).bytes, 0n);
  });

  const int64s: Array<[string | number, bigint | null]> = [
    ['0', 0n], ['', 0n], ['-9223372036854775808', -(2n ** 63n)], ['9223372036854775807', 2n ** 63n - 1n],
    ['9223372036854775808', null], ['12.5', null], [' 1', null], ['0x10', null], [2 ** 53 + 2, null], [4096, 4096n],
  ];
  for (const [input, expected] of int64s) {
    it(`${expected === null ? 'failure' : 'success'} case - parseInt64(${JSON.stringify(input)})`, () => {
      if (expected === null) assertCsiError(() => parseInt64(input, 'f'), 'INVALID_ARGUMENT');
      else assert.equal(parseInt64(input, 'f'), expected);
    });
  }
});

describe('ids', () => {
  const volumeIds: Array<[string, CsiErrorCode | null]> = [
    ['pvc-0f1e2d3c-aaaa-bbbb-cccc-111122223333', null],
    ['sanity-controller-create-single-vol-6BD5D4A8-8A05CA43', null],
    ['v'.repeat(128), null],
    ['a.b_c-d', null],
    ['', 'INVALID_ARGUMENT'],
    ['v'.repeat(129), 'NOT_FOUND'],
    ['../../etc/passwd', 'NOT_FOUND'],
    ['has/slash', 'NOT_FOUND'],
    ['.hidden', 'NOT_FOUND'],
    ['-dash-first', 'NOT_FOUND'],
    ['with space', 'NOT_FOUND'],
    ['vol@snap', 'NOT_FOUND'],
  ];
  for (const [id, code] of volumeIds) {
    it(`${code === null ? 'success' : 'failure'} case - volume id ${JSON.stringify(id.length > 40 ? `${id.slice(0, 20)}…(${id.length})` : id)}`, () => {
      if (code === null) assert.equal(validateVolumeId(id), id);
      else assertCsiError(() => validateVolumeId(id), code);
    });
  }

  it('success case - snapshot ids round-trip', () => {
    const id = formatSnapshotId('pvc-1', 'snapshot-2');
    assert.equal(id, 'pvc-1@snapshot-2');
    assert.deepEqual(parseSnapshotId(id), { volumeId: 'pvc-1', checkpoint: 'snapshot-2' });
  });
  for (const bad of ['pvc-1', '@snap', 'pvc-1@', 'pvc-1@a@b', 'a/b@c', 'pvc-1@../x']) {
    it(`failure case - snapshot id ${JSON.stringify(bad)} is NOT_FOUND`, () => assertCsiError(() => parseSnapshotId(bad), 'NOT_FOUND'));
  }
  it('failure case - empty snapshot id is INVALID_ARGUMENT', () => assertCsiError(() => parseSnapshotId(''), 'INVALID_ARGUMENT'));
  it('failure case - formatSnapshotId refuses a malformed part', () => assertCsiError(() => formatSnapshotId('pvc-1', 'a b'), 'INVALID_ARGUMENT'));
});

describe('other requests', () => {
  it('success case - volume_path: an absolute path is accepted', () => assert.equal(validateVolumePath('/var/lib/kubelet/pods/x'), '/var/lib/kubelet/pods/x'));
  it('failure case - volume_path missing → INVALID_ARGUMENT', () => assertCsiError(() => validateVolumePath(''), 'INVALID_ARGUMENT'));
  it('failure case - volume_path relative → NOT_FOUND (no volume can be there; csi-sanity expects it)', () =>
    assertCsiError(() => validateVolumePath('some/path'), 'NOT_FOUND'));
  it('success case - DeleteVolume with a malformed id is well-formed=false (handled as already deleted)', () => {
    assert.deepEqual(validateDeleteVolumeRequest({ volume_id: 'x/y', secrets: {} }), { volumeId: 'x/y', wellFormed: false });
    assert.deepEqual(validateDeleteVolumeRequest({ volume_id: 'pvc-1', secrets: {} }), { volumeId: 'pvc-1', wellFormed: true });
  });
  it('failure case - DeleteVolume without an id', () => assertCsiError(() => validateDeleteVolumeRequest({ volume_id: '', secrets: {} }), 'INVALID_ARGUMENT'));
  it('success case - DeleteSnapshot with a malformed id has no snapshot ref', () => {
    assert.equal(validateDeleteSnapshotRequest({ snapshot_id: 'nonsense', secrets: {} }).snapshot, undefined);
  });
  it('failure case - CreateSnapshot without a source volume', () =>
    assertCsiError(() => validateCreateSnapshotRequest({ name: 's', source_volume_id: '', secrets: {}, parameters: {} }), 'INVALID_ARGUMENT', /source_volume_id/));
  it('failure case - CreateSnapshot with an unknown parameter', () =>
    assertCsiError(() => validateCreateSnapshotRequest({ name: 's', source_volume_id: 'v', secrets: {}, parameters: { x: 'y' } }), 'INVALID_ARGUMENT', /unknown key/));
  it('success case - CreateSnapshot', () =>
    assert.deepEqual(validateCreateSnapshotRequest({ name: 'snap', source_volume_id: 'v', secrets: {}, parameters: { 'csi.storage.k8s.io/volumesnapshot/name': 'n' } }), { name: 'snap', sourceVolumeId: 'v' }));
  it('failure case - ControllerExpandVolume without a capacity range', () =>
    assertCsiError(() => validateControllerExpandVolumeRequest({ volume_id: 'v', capacity_range: null, secrets: {}, volume_capability: null }), 'INVALID_ARGUMENT', /capacity_range is required/));
  it('failure case - group snapshot listing a volume twice', () =>
    assertCsiError(() => validateCreateVolumeGroupSnapshotRequest({ name: 'g', source_volume_ids: ['a', 'a'], secrets: {}, parameters: {} }), 'INVALID_ARGUMENT', /twice/));
  it('failure case - group snapshot without volumes', () =>
    assertCsiError(() => validateCreateVolumeGroupSnapshotRequest({ name: 'g', source_volume_ids: [], secrets: {}, parameters: {} }), 'INVALID_ARGUMENT'));
  it('success case - ValidateVolumeCapabilities reports an unsupported mode instead of failing', () => {
    const res = validateValidateVolumeCapabilitiesRequest({ volume_id: 'v', volume_context: {}, volume_capabilities: [block('MULTI_NODE_MULTI_WRITER')], parameters: {}, secrets: {}, mutable_parameters: {} });
    assert.match(res.unsupported ?? '', /MULTI_NODE_MULTI_WRITER/);
    assert.equal(capabilityProblem(block('SINGLE_NODE_WRITER')), undefined);
  });
  it('failure case - NodeStageVolume with a relative staging path', () =>
    assertCsiError(() => validateNodeStageVolumeRequest({ volume_id: 'v', publish_context: {}, staging_target_path: 'rel', volume_capability: block('SINGLE_NODE_WRITER'), secrets: {}, volume_context: {} }), 'INVALID_ARGUMENT', /absolute/));
  it('failure case - NodeStageVolume without a capability', () =>
    assertCsiError(() => validateNodeStageVolumeRequest({ volume_id: 'v', publish_context: {}, staging_target_path: '/s', volume_capability: null, secrets: {}, volume_context: {} }), 'INVALID_ARGUMENT', /volume_capability is required/));
  it('failure case - NodePublishVolume without a target path', () =>
    assertCsiError(() => validateNodePublishVolumeRequest({ volume_id: 'v', publish_context: {}, staging_target_path: '/s', target_path: '', volume_capability: block('SINGLE_NODE_WRITER'), readonly: false, secrets: {}, volume_context: {} }), 'INVALID_ARGUMENT', /target_path is required/));
  it('success case - NodePublishVolume', () => {
    const a = validateNodePublishVolumeRequest({ volume_id: 'v', publish_context: {}, staging_target_path: '/s', target_path: '/t', volume_capability: mount('SINGLE_NODE_MULTI_WRITER'), readonly: true, secrets: {}, volume_context: { k: 'v' } });
    assert.deepEqual(a, { volumeId: 'v', stagingTargetPath: '/s', targetPath: '/t', capability: { kind: 'mount', accessMode: 'SINGLE_NODE_MULTI_WRITER', fsType: '', mountFlags: [], volumeMountGroup: '' }, readonly: true, volumeContext: { k: 'v' } });
  });
  it('success case - parseGrainSize and parseVolumeParameters', () => {
    assert.equal(parseGrainSize('131072'), 131072);
    assert.deepEqual(parseVolumeParameters(undefined), { grainSize: undefined, fsType: undefined });
  });
});
