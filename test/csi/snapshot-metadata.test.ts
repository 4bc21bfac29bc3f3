/**
 * SnapshotMetadata with a real grpc-js streaming client on the plugin's metadata socket: data is
 * written through the staged volume's NBD server in three phases around two snapshots; the streamed
 * delta between the snapshots equals exactly the grains the second phase touched (the grain-aligned
 * cover of the written ranges, adjacent grains merged), and the allocated map of a snapshot covers
 * all data written before it and nothing written after. Paging (max_results), resuming
 * (starting_offset) and the error codes, with the volume staged (served) and unstaged (local).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { status, type ServiceError } from '@grpc/grpc-js';
import {
  assertNothingLeft,
  BLOCK_CAP,
  call,
  MiB,
  nbdConnection,
  shortTempDir,
  stageAndPublish,
  startPlugin,
  streamAll,
  sweep,
  unpublishAndUnstage,
  type PluginProcess,
} from './plugin-process.js';

const SIZE = 32 * MiB;
const GRAIN = 64 * 1024;

interface Range {
  readonly offset: number;
  readonly length: number;
}

interface MetadataMessage {
  block_metadata_type: string;
  volume_capacity_bytes: string;
  block_metadata: Array<{ byte_offset: string; size_bytes: string }>;
}

const PHASE1: Range[] = [
  { offset: 0, length: 4096 },
  { offset: 3 * MiB + 5000, length: 70_000 },
  { offset: 20 * MiB, length: 1 },
];
const PHASE2: Range[] = [
  { offset: 5 * GRAIN + 10, length: 100 },
  { offset: 10 * MiB - 3, length: 6 }, // crosses a grain boundary
  { offset: 0, length: 4096 }, // again: grain 0
  { offset: 30 * MiB, length: 200 * 1024 },
];
const PHASE3: Range[] = [{ offset: 16 * MiB, length: 4096 }];

/** The grain-aligned cover of `ranges`, adjacent grains merged. */
function grainCover(ranges: readonly Range[]): Range[] {
  const grains = new Set<number>();
  for (const r of ranges) for (let g = Math.floor(r.offset / GRAIN); g * GRAIN < r.offset + r.length; g++) grains.add(g);
  const out: Range[] = [];
  for (const g of [...grains].sort((a, b) => a - b)) {
    const last = out.at(-1);
    if (last !== undefined && last.offset + last.length === g * GRAIN) out[out.length - 1] = { offset: last.offset, length: last.length + GRAIN };
    else out.push({ offset: g * GRAIN, length: GRAIN });
  }
  return out;
}

function flatten(messages: MetadataMessage[]): Range[] {
  return messages.flatMap((m) => m.block_metadata.map((b) => ({ offset: Number(b.byte_offset), length: Number(b.size_bytes) })));
}

function covered(ranges: readonly Range[], r: Range): boolean {
  return ranges.some((x) => x.offset <= r.offset && r.offset + r.length <= x.offset + x.length);
}

function overlaps(ranges: readonly Range[], r: Range): boolean {
  return ranges.some((x) => x.offset < r.offset + r.length && r.offset < x.offset + x.length);
}

function assertWellFormed(messages: MetadataMessage[], max: number): void {
  let end = -1;
  for (const m of messages) {
    assert.equal(m.block_metadata_type, 'VARIABLE_LENGTH');
    assert.equal(m.volume_capacity_bytes, String(SIZE));
    assert.ok(m.block_metadata.length <= max && m.block_metadata.length > 0);
    for (const b of m.block_metadata) {
      const offset = Number(b.byte_offset);
      const length = Number(b.size_bytes);
      assert.ok(length > 0 && offset > end && offset + length <= SIZE, `range ${offset}+${length} ascending, non-overlapping, inside`);
      end = offset + length - 1;
    }
  }
}

describe('SnapshotMetadata: allocated and delta streams', () => {
  let dir: string;
  let p: PluginProcess;
  let paths: { staging: string; target: string };
  const s1 = 'meta@s1';
  const s2 = 'meta@s2';

  before(async () => {
    dir = await shortTempDir();
    p = await startPlugin(dir);
    await p.waitReady();
    await call(p.c.controller, 'CreateVolume', { name: 'meta', capacity_range: { required_bytes: String(SIZE) }, volume_capabilities: [BLOCK_CAP()] });
    await call(p.c.controller, 'CreateVolume', { name: 'other', capacity_range: { required_bytes: String(SIZE) }, volume_capabilities: [BLOCK_CAP()] });
    await call(p.c.controller, 'CreateSnapshot', { name: 'o1', source_volume_id: 'other' });
    paths = await stageAndPublish(p, 'meta', BLOCK_CAP(), { block: true });
    const nbd = await nbdConnection(join(p.stateDir, 'run', 'meta.sock'));
    const write = async (ranges: Range[]): Promise<void> => {
      for (const r of ranges) await nbd.write(r.offset, randomBytes(r.length));
    };
    await write(PHASE1);
    await call(p.c.controller, 'CreateSnapshot', { name: 's1', source_volume_id: 'meta' });
    await write(PHASE2);
    await call(p.c.controller, 'CreateSnapshot', { name: 's2', source_volume_id: 'meta' });
    await write(PHASE3);
    await nbd.close();
  });
  after(async () => {
    await p.stop().catch(() => undefined);
    await sweep(dir);
  });

  it('the metadata socket serves Identity too', async () => {
    const info = await call<{ name: string }>(p.meta.identity, 'GetPluginInfo', {});
    assert.equal(info.name, 'flashcsi.io');
  });

  it('GetMetadataDelta streams exactly the grains written between the snapshots', async () => {
    const messages = await streamAll<MetadataMessage>(p.meta.snapshotMetadata, 'GetMetadataDelta', { base_snapshot_id: s1, target_snapshot_id: s2 });
    assertWellFormed(messages, 256);
    assert.deepEqual(flatten(messages), grainCover(PHASE2));
  });

  it('GetMetadataAllocated covers everything written before the snapshot, nothing written after', async () => {
    const messages = await streamAll<MetadataMessage>(p.meta.snapshotMetadata, 'GetMetadataAllocated', { snapshot_id: s2 });
    assertWellFormed(messages, 256);
    const ranges = flatten(messages);
    for (const r of [...PHASE1, ...PHASE2]) assert.ok(covered(ranges, r), `written range ${r.offset}+${r.length} is reported allocated`);
    for (const r of PHASE3) assert.ok(!overlaps(ranges, r), `range ${r.offset} written after s2 is not part of s2`);
    const first = flatten(await streamAll<MetadataMessage>(p.meta.snapshotMetadata, 'GetMetadataAllocated', { snapshot_id: s1 }));
    for (const r of PHASE1) assert.ok(covered(first, r));
    assert.ok(!overlaps(first, PHASE2[3] as Range), 'a range first written after s1 is not part of s1');
  });

  it('max_results pages the stream; starting_offset resumes it', async () => {
    const all = flatten(await streamAll<MetadataMessage>(p.meta.snapshotMetadata, 'GetMetadataDelta', { base_snapshot_id: s1, target_snapshot_id: s2 }));
    const paged = await streamAll<MetadataMessage>(p.meta.snapshotMetadata, 'GetMetadataDelta', { base_snapshot_id: s1, target_snapshot_id: s2, max_results: 1 });
    assertWellFormed(paged, 1);
    assert.equal(paged.length, all.length);
    assert.deepEqual(flatten(paged), all);
    const second = all[1] as Range;
    const resumeAt = second.offset + 1000;
    const resumed = flatten(await streamAll<MetadataMessage>(p.meta.snapshotMetadata, 'GetMetadataDelta', { base_snapshot_id: s1, target_snapshot_id: s2, starting_offset: String(resumeAt) }));
    assert.deepEqual(resumed, [{ offset: resumeAt, length: second.length - 1000 }, ...all.slice(2)]);
    assert.deepEqual(await streamAll(p.meta.snapshotMetadata, 'GetMetadataAllocated', { snapshot_id: s2, starting_offset: String(SIZE) }), []);
  });

  it('bad requests get the spec codes', async () => {
    const code = async (method: string, req: unknown): Promise<number> =>
      streamAll(p.meta.snapshotMetadata, method, req).then(
        () => -1,
        (err: ServiceError) => err.code,
      );
    assert.equal(await code('GetMetadataDelta', { base_snapshot_id: s2, target_snapshot_id: s1 }), status.INVALID_ARGUMENT, 'base newer than target');
    assert.equal(await code('GetMetadataDelta', { base_snapshot_id: 'other@o1', target_snapshot_id: s2 }), status.INVALID_ARGUMENT, 'different volumes');
    assert.equal(await code('GetMetadataDelta', { base_snapshot_id: s1, target_snapshot_id: 'meta@nope' }), status.NOT_FOUND);
    assert.equal(await code('GetMetadataDelta', { base_snapshot_id: '', target_snapshot_id: s2 }), status.INVALID_ARGUMENT);
    assert.equal(await code('GetMetadataAllocated', { snapshot_id: 'nope@s1' }), status.NOT_FOUND);
    assert.equal(await code('GetMetadataAllocated', { snapshot_id: 'not a snapshot id' }), status.NOT_FOUND);
    assert.equal(await code('GetMetadataAllocated', { snapshot_id: '' }), status.INVALID_ARGUMENT);
    assert.equal(await code('GetMetadataAllocated', { snapshot_id: s1, starting_offset: '-1' }), status.OUT_OF_RANGE);
    assert.equal(await code('GetMetadataAllocated', { snapshot_id: s1, starting_offset: String(SIZE + 1) }), status.OUT_OF_RANGE);
    assert.equal(await code('GetMetadataAllocated', { snapshot_id: s1, max_results: -1 }), status.INVALID_ARGUMENT);
  });

  it('the same answers with the volume unstaged (read locally instead of through its server)', async () => {
    await unpublishAndUnstage(p, 'meta', paths);
    const messages = await streamAll<MetadataMessage>(p.meta.snapshotMetadata, 'GetMetadataDelta', { base_snapshot_id: s1, target_snapshot_id: s2 });
    assert.deepEqual(flatten(messages), grainCover(PHASE2));
    for (const id of ['meta@s1', 'meta@s2', 'other@o1']) await call(p.c.controller, 'DeleteSnapshot', { snapshot_id: id });
    for (const id of ['meta', 'other']) await call(p.c.controller, 'DeleteVolume', { volume_id: id });
    assert.equal(await p.stop(), 0);
    await assertNothingLeft(dir);
  });
});
