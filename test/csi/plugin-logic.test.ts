/** Pure logic of the plugin, table-driven: ids, pagination, metadata paging, topology, readiness guard, socket paths. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TOPOLOGY_NODE_KEY } from '../../src/constants.js';
import { checkAccessibility } from '../../src/csi/controller.js';
import { CsiError } from '../../src/volumes/errors.js';
import { ReadinessGate } from '../../src/csi/identity.js';
import { checkpointNameForSnapshot, groupIdForName, isGroupId, volumeIdForName } from '../../src/volumes/ids.js';
import { untilReady } from '../../src/csi/plugin.js';
import { paginate, timestamp } from '../../src/csi/responses.js';
import { metadataMessages } from '../../src/csi/snapshot-metadata.js';
import { StateDir } from '../../src/volumes/state.js';
import { isValidVolumeId } from '../../src/volumes/ids.js';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof CsiError ? err.code : 'other';
  }
  return undefined;
}

describe('ids', () => {
  for (const [name, expected] of [
    ['pvc-0f6c2b3e-8e3f-4a52-9d27-4b6a3c1d2e10', 'pvc-0f6c2b3e-8e3f-4a52-9d27-4b6a3c1d2e10'],
    ['a', 'a'],
    ['x'.repeat(128), 'x'.repeat(128)],
  ] as const) {
    it(`success case - volume name ${name.slice(0, 20)}… is its own id`, () => assert.equal(volumeIdForName(name), expected));
  }
  for (const name of ['x'.repeat(129), '-starts-with-dash', 'has space', 'ünïcode', '.dot']) {
    it(`success case - volume name ${JSON.stringify(name.slice(0, 20))} gets a hashed id`, () => {
      const id = volumeIdForName(name);
      assert.match(id, /^v-[0-9a-f]{40}$/);
      assert.equal(volumeIdForName(name), id, 'deterministic');
      assert.ok(isValidVolumeId(id));
    });
  }
  it('success case - snapshot names: valid ones kept, others hashed', () => {
    assert.equal(checkpointNameForSnapshot('snapshot-1a2b'), 'snapshot-1a2b');
    assert.match(checkpointNameForSnapshot('a/b'), /^s-[0-9a-f]{40}$/);
    assert.match(checkpointNameForSnapshot('y'.repeat(129)), /^s-[0-9a-f]{40}$/);
    assert.notEqual(checkpointNameForSnapshot('a/b'), checkpointNameForSnapshot('a/c'));
  });
  it('success case - group ids', () => {
    assert.match(groupIdForName('my group'), /^g-[0-9a-f]{40}$/);
    assert.ok(isGroupId(groupIdForName('x')));
    assert.ok(!isGroupId('g-123'));
  });
});

describe('paginate', () => {
  const items = ['a', 'b', 'c', 'd', 'e'];
  const cases: Array<[string, number, string[], string]> = [
    ['', 0, items, ''],
    ['', 2, ['a', 'b'], '2'],
    ['2', 2, ['c', 'd'], '4'],
    ['4', 2, ['e'], ''],
    ['5', 0, [], ''],
  ];
  for (const [token, max, page, next] of cases) {
    it(`success case - token ${JSON.stringify(token)}, max ${max}`, () => assert.deepEqual(paginate(items, token, max), { page, nextToken: next }));
  }
  for (const token of ['x', '-1', '6', '1e3', ' 1']) {
    it(`failure case - token ${JSON.stringify(token)} → ABORTED`, () => assert.equal(codeOf(() => paginate(items, token, 0)), 'ABORTED'));
  }
  it('failure case - negative max_entries → INVALID_ARGUMENT', () => assert.equal(codeOf(() => paginate(items, '', -1)), 'INVALID_ARGUMENT'));
});

describe('metadataMessages', () => {
  const extents = [
    { offset: 0, length: 100 },
    { offset: 200, length: 100 },
    { offset: 400, length: 100 },
  ];
  const flat = (start: number, max: number): number[][] =>
    [...metadataMessages(extents, 1000, start, max)].map((m) => (m.block_metadata ?? []).map((b) => Number(b.byte_offset)));
  it('success case - pages of at most max_results', () => assert.deepEqual(flat(0, 2), [[0, 200], [400]]));
  it('success case - starting_offset inside a range clips it, earlier ranges are left out', () => {
    const [first] = [...metadataMessages(extents, 1000, 250, 10)];
    assert.deepEqual(first?.block_metadata, [
      { byte_offset: '250', size_bytes: '50' },
      { byte_offset: '400', size_bytes: '100' },
    ]);
  });
  it('success case - nothing at or after starting_offset: no messages', () => assert.deepEqual(flat(500, 10), []));
  it('failure case - starting_offset past the end → OUT_OF_RANGE', () => assert.equal(codeOf(() => [...metadataMessages(extents, 1000, 1001, 10)]), 'OUT_OF_RANGE'));
});

describe('checkAccessibility', () => {
  const topo = (node: string) => ({ segments: { [TOPOLOGY_NODE_KEY]: node } });
  it('success case - no requirement, or requisite including this node, or preferred only', () => {
    assert.equal(codeOf(() => checkAccessibility(null, 'n1')), undefined);
    assert.equal(codeOf(() => checkAccessibility({ requisite: [topo('n2'), topo('n1')], preferred: [] }, 'n1')), undefined);
    assert.equal(codeOf(() => checkAccessibility({ requisite: [], preferred: [topo('n2')] }, 'n1')), undefined);
  });
  it('failure case - requisite without this node → RESOURCE_EXHAUSTED', () => {
    assert.equal(codeOf(() => checkAccessibility({ requisite: [topo('n2')], preferred: [] }, 'n1')), 'RESOURCE_EXHAUSTED');
  });
});

describe('untilReady', () => {
  it('success case - refuses with UNAVAILABLE until ready, except capabilities and node info', async () => {
    const gate = new ReadinessGate();
    const svc = untilReady(
      {
        Thing: async () => 'ok',
        ControllerGetCapabilities: async () => 'caps',
        NodeGetInfo: async () => 'info',
        async *Stream() {
          yield 1;
        },
      },
      gate,
    );
    await assert.rejects(svc.Thing(), (e: unknown) => e instanceof CsiError && e.code === 'UNAVAILABLE');
    await assert.rejects(svc.Stream().next(), (e: unknown) => e instanceof CsiError && e.code === 'UNAVAILABLE');
    assert.equal(await svc.ControllerGetCapabilities(), 'caps');
    assert.equal(await svc.NodeGetInfo(), 'info');
    gate.markReady();
    assert.equal(await svc.Thing(), 'ok');
    assert.deepEqual(await svc.Stream().next(), { value: 1, done: false });
  });
});

describe('StateDir.socketPath and timestamps', () => {
  it('success case - short ids keep their name; long ones are hashed to fit sun_path with .ctl', () => {
    const s = new StateDir('/var/lib/flashcsi');
    assert.equal(s.socketPath('pvc-1'), '/var/lib/flashcsi/run/pvc-1.sock');
    const long = s.socketPath('x'.repeat(128));
    assert.match(long, /^\/var\/lib\/flashcsi\/run\/h-[0-9a-f]{24}\.sock$/);
    assert.ok(Buffer.byteLength(`${long}.ctl`) <= 107);
  });
  it('success case - timestamps keep milliseconds', () => {
    assert.deepEqual(timestamp(new Date(1_700_000_000_123)), { seconds: '1700000000', nanos: 123_000_000 });
  });
});
