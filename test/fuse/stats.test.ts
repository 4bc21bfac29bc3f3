/**
 * The FUSE export's shared I/O counters (src/fuse/stats.ts), without a mount: the operation of each
 * FUSE opcode, what one answered request adds (path, errors, bytes, latency bucket), counts from
 * another thread's view of the same memory, and the Prometheus families built from them.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Registry } from 'prom-client';
import { FUSE_STAT_OPS, FuseCounter, FuseStats, statOp } from '../../src/fuse/stats.js';
import { Falloc, Op } from '../../src/fuse/wire.js';
import { registerFuseIo } from '../../src/metrics/fuse.js';
import { FUSE_LATENCY_BUCKETS } from '../../src/metrics/names.js';
import { parsePrometheusText, sampleValue } from '../metrics/prom-text.js';

/** An hrtime `ms` milliseconds ago. */
const ago = (ms: number): bigint => process.hrtime.bigint() - BigInt(ms * 1e6);

describe('FUSE I/O counters', () => {
  it('name the operation of every data request, and none for metadata', () => {
    const names = (opcode: number, mode = 0): string | undefined => FUSE_STAT_OPS[statOp(opcode, mode)];
    assert.equal(names(Op.Read), 'read');
    assert.equal(names(Op.Write), 'write');
    assert.equal(names(Op.Fsync), 'flush');
    assert.equal(names(Op.Fallocate, Falloc.PunchHole | Falloc.KeepSize), 'trim');
    assert.equal(names(Op.Fallocate, Falloc.ZeroRange), 'write_zeroes');
    assert.equal(names(Op.Fallocate, Falloc.ZeroRange | Falloc.KeepSize), 'write_zeroes');
    for (const op of [Op.Getattr, Op.Lookup, Op.Open, Op.Flush, Op.Init]) assert.equal(statOp(op), -1, String(op));
  });

  it('count requests by path, errors, bytes of successes only, and latency in the right bucket', () => {
    const stats = new FuseStats([0.001, 1000]);
    // Two counters on the one shared buffer, as a worker and the main thread have.
    const worker = new FuseCounter(structuredClone(stats.handle));
    const main = new FuseCounter(stats.handle);
    worker.answered(statOp(Op.Write), false, 0, 65536, ago(2));
    worker.answered(statOp(Op.Write), false, 0, 4096, ago(2));
    main.answered(statOp(Op.Write), true, 0, 8192, ago(2));
    main.answered(statOp(Op.Write), true, 28, 8192, ago(2)); // ENOSPC: no bytes
    worker.answered(statOp(Op.Read), false, 0, 0, ago(2)); // a read at the end of the file: nothing to count in bytes
    main.answered(statOp(Op.Fallocate, Falloc.PunchHole | Falloc.KeepSize), true, 0, 5 * 2 ** 32, ago(2)); // beyond 32 bits
    worker.answered(-1, false, 0, 100, ago(2)); // metadata: not counted

    const snap = new Map(stats.snapshot().map((s) => [s.op, s]));
    assert.deepEqual([...snap.keys()], [...FUSE_STAT_OPS]);
    const write = snap.get('write');
    assert.ok(write);
    assert.deepEqual([write.fast, write.forwarded, write.errors, write.bytes], [2, 2, 1, 65536 + 4096 + 8192]);
    assert.deepEqual([...write.buckets], [0, 4, 0], 'each 2 ms request in the (1 ms, 1000 s] bucket');
    assert.ok(write.seconds >= 4 * 0.002 && write.seconds < 1000, String(write.seconds));
    assert.deepEqual([snap.get('read')?.fast, snap.get('read')?.bytes], [1, 0]);
    assert.equal(snap.get('trim')?.bytes, 5 * 2 ** 32);
    assert.equal(snap.get('flush')?.fast, 0);
    assert.equal(snap.get('write_zeroes')?.forwarded, 0);
  });

  it('become Prometheus families labelled with the volume: requests by path, errors, bytes, a histogram', async () => {
    const stats = new FuseStats(FUSE_LATENCY_BUCKETS);
    const c = new FuseCounter(stats.handle);
    c.answered(statOp(Op.Write), false, 0, 4096, ago(2));
    c.answered(statOp(Op.Write), true, 0, 4096, ago(2));
    c.answered(statOp(Op.Fsync), false, 0, 0, ago(2));
    const registry = new Registry();
    registerFuseIo(registry, 'v1', () => stats.snapshot());
    const fams = parsePrometheusText(await registry.metrics());
    assert.equal(sampleValue(fams, 'flashcsi_fuse_requests_total', { volume: 'v1', op: 'write', path: 'fast' }), 1);
    assert.equal(sampleValue(fams, 'flashcsi_fuse_requests_total', { volume: 'v1', op: 'write', path: 'forwarded' }), 1);
    assert.equal(sampleValue(fams, 'flashcsi_fuse_bytes_total', { volume: 'v1', op: 'write' }), 8192);
    assert.equal(sampleValue(fams, 'flashcsi_fuse_bytes_total', { volume: 'v1', op: 'flush' }), undefined, 'a flush covers no range');
    assert.equal(sampleValue(fams, 'flashcsi_fuse_request_errors_total', { volume: 'v1', op: 'trim' }), 0);
    assert.equal(sampleValue(fams, 'flashcsi_fuse_request_duration_seconds_count', { volume: 'v1', op: 'write' }), 2);
    assert.equal(sampleValue(fams, 'flashcsi_fuse_request_duration_seconds_count', { volume: 'v1', op: 'flush' }), 1);
    assert.ok((sampleValue(fams, 'flashcsi_fuse_request_duration_seconds_sum', { volume: 'v1', op: 'write' }) ?? 0) >= 0.004);
  });
});
