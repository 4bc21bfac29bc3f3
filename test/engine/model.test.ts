/**
 * Model-based randomized test of the volume engine against an in-memory reference model.
 *
 * Each step runs a batch concurrently: at most one "barrier" operation (cut, delete first/middle/
 * last, rollback, expand, transaction begin/prepare/commit/abort, flush, reopen) together with data
 * operations on non-overlapping, grain-unaligned ranges (writes, trims, write-zeroes, live reads,
 * checkpoint reads). A write racing a barrier must land entirely before or entirely after it; the
 * test finds which from the engine's state, applies that to the model, and then compares the
 * whole state — the live image and every checkpoint image — byte for byte. Allocation and
 * changed-range maps are checked to be conservative (they must cover every non-zero or changed byte).
 * About two thirds of the live writes and reads first try the worker threads' fast path
 * (fast-path.ts, called synchronously here) and go to the Volume only when it answers false, as
 * the FUSE server's workers do; the test checks that the fast path took some of them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import fc from 'fast-check';
import { FastPath, Volume, isEngineError, type Extent, type FileIO } from '../../src/engine/index.js';
import { DIRECT_IO_ALIGN, alignedBuffer } from '../../src/engine/native.js';
import { instrumentedIO, jitter } from './instrumented-io.js';
import { pattern } from './helpers.js';

type DataOp =
  | { kind: 'write'; at: number; len: number; seed: number; fua: boolean }
  | { kind: 'zero'; at: number; len: number; noHole: boolean }
  | { kind: 'trim'; at: number; len: number }
  | { kind: 'read'; at: number; len: number }
  | { kind: 'readcp'; pick: number; at: number; len: number };

type Barrier =
  | { kind: 'cut' }
  | { kind: 'delete'; which: 'first' | 'middle' | 'last' }
  | { kind: 'rollback'; pick: number }
  | { kind: 'expand'; sectors: number }
  | { kind: 'begin' }
  | { kind: 'prepare' }
  | { kind: 'commit' }
  | { kind: 'abort' }
  | { kind: 'flush' }
  | { kind: 'reopen' };

interface Batch {
  barrier: Barrier | null;
  data: DataOp[];
  /** Ticks to delay the barrier by, so it lands at different points among the data operations. */
  delay: number;
  /** Milliseconds to delay each data operation's start, so some arrive while the barrier runs. */
  startMs: number[];
}

const fraction = fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true });
const dataOp: fc.Arbitrary<DataOp> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ kind: fc.constant('write' as const), at: fraction, len: fc.integer({ min: 1, max: 40000 }), seed: fc.integer({ min: 1, max: 2 ** 30 }), fua: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('zero' as const), at: fraction, len: fc.integer({ min: 1, max: 70000 }), noHole: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('trim' as const), at: fraction, len: fc.integer({ min: 1, max: 70000 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('read' as const), at: fraction, len: fc.integer({ min: 1, max: 40000 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('readcp' as const), pick: fraction, at: fraction, len: fc.integer({ min: 1, max: 40000 }) }) },
);
const barrier: fc.Arbitrary<Barrier> = fc.oneof(
  { weight: 4, arbitrary: fc.constant({ kind: 'cut' as const }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('delete' as const), which: fc.constantFrom('first' as const, 'middle' as const, 'last' as const) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('rollback' as const), pick: fraction }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('expand' as const), sectors: fc.integer({ min: 1, max: 600 }) }) },
  { weight: 2, arbitrary: fc.constant({ kind: 'begin' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'prepare' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'commit' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'abort' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'flush' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'reopen' as const }) },
);
const batch: fc.Arbitrary<Batch> = fc.record({
  barrier: fc.option(barrier, { freq: 2 }),
  data: fc.array(dataOp, { minLength: 0, maxLength: 5 }),
  delay: fc.integer({ min: 0, max: 3 }),
  startMs: fc.array(fc.constantFrom(0, 0, 1, 2, 3, 5), { minLength: 5, maxLength: 5 }),
});

/** Requests the fast path took (answered true) and all it was offered, over the whole run. */
const fastCounts = { writes: 0, reads: 0, offered: 0, directWrites: 0, directReads: 0 };

/**
 * Where a write or live read of `op` lands. Ops of even length become whole 4 KiB blocks in
 * memory and on disk, so the fast path's O_DIRECT side runs beside its page-cache side (and
 * beside the main thread, which always uses the page cache).
 */
function rangeOf(op: { at: number; len: number }, size: number): { at: number; len: number; aligned: boolean } {
  if (op.len % 2 !== 0) {
    const at = Math.floor(op.at * size);
    return { at, len: Math.min(op.len, size - at), aligned: false };
  }
  const at = Math.floor((op.at * size) / DIRECT_IO_ALIGN) * DIRECT_IO_ALIGN;
  const len = Math.min(Math.ceil(op.len / DIRECT_IO_ALIGN) * DIRECT_IO_ALIGN, size - at);
  return { at, len, aligned: len % DIRECT_IO_ALIGN === 0 };
}

/** A buffer for `range`, on a DIRECT_IO_ALIGN boundary in memory when the range is aligned. */
function bufferFor(range: { len: number; aligned?: boolean }): Buffer {
  return range.aligned === true ? alignedBuffer(range.len, 0) : Buffer.alloc(range.len);
}
const fastPaths = new WeakMap<Volume, FastPath>();

/** The volume's fast path, as a worker thread would build it from the handle. */
function fastPathOf(vol: Volume): FastPath {
  let fast = fastPaths.get(vol);
  if (!fast) {
    const handle = vol.fastPath();
    // The counts of O_DIRECT ops below assume the base image's file system takes O_DIRECT (tmpfs does not).
    if (handle.baseFd >= 0) assert.ok(handle.baseDirectFd >= 0, `the base image under ${os.tmpdir()} refused O_DIRECT; run the test on a disk file system`);
    fast = new FastPath(handle);
    fastPaths.set(vol, fast);
  }
  return fast;
}

interface ModelCheckpoint {
  name: string;
  image: Buffer;
}

/** The reference: plain byte arrays, no copy-on-write at all. */
class Model {
  live: Buffer;
  checkpoints: ModelCheckpoint[] = [];
  tx: { txid: string; image: Buffer; prepared: boolean } | null = null;
  deferred: string[] = [];
  txCount = 0;
  cutCount = 0;
  constructor(size: number) {
    this.live = Buffer.alloc(size);
  }
  grow(size: number): void {
    const next = Buffer.alloc(size);
    this.live.copy(next);
    this.live = next;
  }
  /** Live image after rolling back to `image` (zeros past its size). */
  restored(image: Buffer): Buffer {
    const out = Buffer.alloc(this.live.length);
    image.copy(out);
    return out;
  }
}

interface Resolved {
  range: { at: number; len: number };
  after: Buffer; // the range's content once the operation applied
}

function overlaps(a: { at: number; len: number }, b: { at: number; len: number }): boolean {
  return a.at < b.at + b.len && b.at < a.at + a.len;
}

function covered(extents: readonly Extent[], at: number): boolean {
  return extents.some((e) => at >= e.offset && at < e.offset + e.length);
}

async function runScenario(dir: string, grainSize: number, sizeSectors: number, batches: Batch[], seed: number): Promise<void> {
  const size = sizeSectors * 512;
  // Real files, with I/O delayed by a few event-loop turns to widen race windows.
  let x = seed || 1;
  const io: FileIO = instrumentedIO(
    jitter(() => {
      x = (x * 1103515245 + 12345) % 2147483648;
      return x / 2147483648;
    }),
    undefined,
    { exposeFds: true },
  );
  let vol = await Volume.create(dir, { size, grainSize, io });
  reopenIO = io;
  const model = new Model(size);
  try {
    for (const [step, b] of batches.entries()) {
      const where = `step ${step}: ${JSON.stringify(b.barrier)} + ${b.data.map((d) => d.kind).join(',')}`;
      // Resolve abstract operations against the current state.
      const taken: Array<{ at: number; len: number }> = [];
      const writes: Array<{ op: DataOp; range: { at: number; len: number; aligned: boolean }; data: Buffer }> = [];
      const reads: Array<{ range: { at: number; len: number; aligned?: boolean }; cp: ModelCheckpoint | null }> = [];
      const expandsLive = b.barrier?.kind === 'expand' || b.barrier?.kind === 'rollback' || b.barrier?.kind === 'abort' || b.barrier?.kind === 'reopen';
      for (const op of b.data) {
        if (op.kind === 'readcp') {
          const cps = model.checkpoints;
          if (cps.length === 0) continue;
          const cp = cps[Math.floor(op.pick * cps.length)] as ModelCheckpoint;
          if (b.barrier?.kind === 'delete' || b.barrier?.kind === 'reopen') continue; // may be the one deleted
          if ((b.barrier?.kind === 'commit' || b.barrier?.kind === 'abort') && cp.name.startsWith('tx:')) continue;
          const at = Math.floor(op.at * cp.image.length);
          reads.push({ range: { at, len: Math.min(op.len, cp.image.length - at) }, cp });
          continue;
        }
        const range = rangeOf(op, model.live.length);
        if (range.len <= 0 || taken.some((t) => overlaps(t, range))) continue;
        if (b.barrier?.kind === 'reopen') continue;
        if (op.kind === 'read') {
          if (expandsLive) continue; // a live read racing a rollback may see either side
          taken.push(range);
          reads.push({ range, cp: null });
          continue;
        }
        taken.push(range);
        const data = bufferFor(range);
        if (op.kind === 'write') pattern(op.seed, range.len).copy(data);
        writes.push({ op, range, data });
      }

      let started = 0;
      const startLater = async (): Promise<void> => {
        const ms = b.startMs[started++ % b.startMs.length] ?? 0;
        if (ms > 0) await new Promise((r) => setTimeout(r, ms));
      };
      const dataPromises = [
        ...writes.map(async ({ op, range, data }) => {
          await startLater();
          if (op.kind === 'write') {
            if (op.seed % 3 !== 0) {
              fastCounts.offered++;
              if (fastPathOf(vol).write(data, range.at, op.fua)) {
                fastCounts.writes++;
                if (range.aligned && !op.fua) fastCounts.directWrites++;
                return;
              }
            }
            await vol.write(range.at, data, { fua: op.fua });
          } else if (op.kind === 'zero') await vol.writeZeroes(range.at, range.len, { noHole: op.noHole });
          else await vol.trim(range.at, range.len);
        }),
        ...reads.map(async ({ range, cp }) => {
          await startLater();
          let got: Buffer;
          if (cp) got = await vol.readCheckpoint(cp.name, range.at, range.len);
          else if ((range.at + range.len) % 3 !== 0 && fastPathOf(vol).read((got = bufferFor(range)), range.at)) {
            fastCounts.reads++;
            if (range.aligned === true) fastCounts.directReads++;
          }
          else got = await vol.read(range.at, range.len);
          const want = (cp ? cp.image : model.live).subarray(range.at, range.at + range.len);
          assert.ok(got.equals(want), `${where}: ${cp ? `checkpoint ${cp.name}` : 'live'} read at ${range.at}+${range.len} differs`);
        }),
      ];
      const before = Buffer.from(model.live);
      let barrierDone: Promise<(() => Promise<void>) | null> = Promise.resolve(null);
      if (b.barrier) {
        const bar = b.barrier;
        barrierDone = (async () => {
          for (let i = 0; i < b.delay; i++) await new Promise((r) => setImmediate(r));
          return runBarrier(vol, model, bar, where, (v) => {
            vol = v;
          });
        })();
      }
      const results = await Promise.allSettled([...dataPromises, barrierDone]);
      for (const r of results) if (r.status === 'rejected') throw r.reason;
      // Writes always reach the live image (unless a racing rollback undid them: resolved below).
      for (const w of writes) w.data.copy(model.live, w.range.at);
      const settle = (results.at(-1) as PromiseFulfilledResult<(() => Promise<void>) | null>).value;
      if (settle) {
        // The barrier produced artifacts whose content depends on each write's side of it.
        await resolveRaces(vol, model, writes.map((w) => ({ range: w.range, after: w.data })), before, where, settle);
      }
      await verifyAll(vol, model, where);
    }
    await vol.close();
    // Everything must survive a clean close and reopen.
    vol = await Volume.open(dir, { io });
    await verifyAll(vol, model, 'after reopen');
  } finally {
    await vol.close().catch(() => undefined);
  }
}

/** Barrier artifacts to settle after the batch: see resolveRaces. */
let pendingArtifacts: Array<{ kind: 'checkpoint'; name: string; base: 'pre' | 'post-live' } | { kind: 'live-rollback'; image: Buffer }> = [];

let reopenIO: FileIO;

async function runBarrier(vol: Volume, model: Model, bar: Barrier, where: string, reopened: (v: Volume) => void): Promise<(() => Promise<void>) | null> {
  pendingArtifacts = [];
  const expectError = async (p: Promise<unknown>, code: string): Promise<void> => {
    await assert.rejects(p, (err: unknown) => isEngineError(err) && err.code === code, `${where}: expected ${code}`);
  };
  switch (bar.kind) {
    case 'cut': {
      if (model.checkpoints.length >= 6) return null;
      const name = `cp${++model.cutCount}`;
      const res = await vol.createCheckpoint(name);
      if (model.tx) {
        assert.equal(res.state, 'deferred', `${where}: cut during a transaction must be deferred`);
        model.deferred.push(name);
        return null;
      }
      assert.equal(res.state, 'created');
      model.checkpoints.push({ name, image: Buffer.alloc(0) });
      pendingArtifacts.push({ kind: 'checkpoint', name, base: 'pre' });
      // A checkpoint is immutable from the moment the cut returns, even with writes in flight.
      const atCut = await vol.readCheckpoint(name, 0, vol.checkpoint(name).size);
      return async () => {
        const later = model.checkpoints.find((c) => c.name === name) as ModelCheckpoint;
        assert.ok(atCut.equals(later.image), `${where}: checkpoint ${name} changed after its cut returned`);
      };
    }
    case 'delete': {
      const deletable = model.checkpoints.filter((c) => !c.name.startsWith('tx:'));
      if (deletable.length === 0) return null;
      const pick = bar.which === 'first' ? deletable[0] : bar.which === 'last' ? deletable.at(-1) : deletable[Math.floor(deletable.length / 2)];
      const victim = pick as ModelCheckpoint;
      await vol.deleteCheckpoint(victim.name);
      model.checkpoints = model.checkpoints.filter((c) => c !== victim);
      return null;
    }
    case 'rollback': {
      if (model.checkpoints.length === 0) return null;
      const target = model.checkpoints[Math.floor(bar.pick * model.checkpoints.length)] as ModelCheckpoint;
      if (model.tx) {
        await expectError(vol.rollback(target.name), 'FAILED_PRECONDITION');
        return null;
      }
      await vol.rollback(target.name);
      pendingArtifacts.push({ kind: 'live-rollback', image: target.image });
      return async () => undefined;
    }
    case 'expand': {
      const size = model.live.length + bar.sectors * 512;
      await vol.expand(size);
      model.grow(size);
      return null;
    }
    case 'begin': {
      const txid = `t${++model.txCount}`;
      if (model.tx) {
        await expectError(vol.begin(txid), 'FAILED_PRECONDITION');
        return null;
      }
      await vol.begin(txid);
      model.tx = { txid, image: Buffer.alloc(0), prepared: false };
      model.checkpoints.push({ name: `tx:${txid}`, image: Buffer.alloc(0) });
      pendingArtifacts.push({ kind: 'checkpoint', name: `tx:${txid}`, base: 'pre' });
      return async () => {
        const cp = model.checkpoints.find((c) => c.name === `tx:${txid}`) as ModelCheckpoint;
        (model.tx as NonNullable<Model['tx']>).image = cp.image;
      };
    }
    case 'prepare': {
      if (!model.tx) return null;
      await vol.prepare(model.tx.txid);
      model.tx.prepared = true;
      return null;
    }
    case 'commit':
    case 'abort': {
      if (!model.tx) return null;
      const tx = model.tx;
      if (bar.kind === 'commit') await vol.commit(tx.txid);
      else await vol.abort(tx.txid);
      model.checkpoints = model.checkpoints.filter((c) => c.name !== `tx:${tx.txid}`);
      model.tx = null;
      if (bar.kind === 'abort') pendingArtifacts.push({ kind: 'live-rollback', image: tx.image });
      for (const name of model.deferred) {
        model.checkpoints.push({ name, image: Buffer.alloc(0) });
        // Deferred cuts happen inside the completion, after the rollback if it aborted.
        pendingArtifacts.push({ kind: 'checkpoint', name, base: bar.kind === 'abort' ? 'post-live' : 'pre' });
      }
      model.deferred = [];
      // Retrying the decision is idempotent.
      if (bar.kind === 'commit') await vol.commit(tx.txid);
      else await vol.abort(tx.txid);
      return async () => undefined;
    }
    case 'flush':
      await vol.flush();
      return null;
    case 'reopen': {
      await vol.close();
      reopened(await Volume.open(vol.dir, { io: reopenIO }));
      return null;
    }
  }
}

/**
 * Settles which writes landed before the barrier. For a rollback, a write that landed before it
 * was undone; for a cut, a write that landed before it is in the checkpoint.
 */
async function resolveRaces(vol: Volume, model: Model, writes: Resolved[], before: Buffer, where: string, finish: () => Promise<void>): Promise<void> {
  const artifacts = pendingArtifacts;
  pendingArtifacts = [];
  let liveAfterRollbackNoWrites: Buffer | null = null;
  for (const a of artifacts) {
    if (a.kind === 'live-rollback') {
      const rolled = model.restored(a.image);
      liveAfterRollbackNoWrites = Buffer.from(rolled);
      // Every write either happened before the rollback (undone) or after (kept).
      for (const w of writes) {
        const got = await vol.read(w.range.at, w.range.len);
        const undone = rolled.subarray(w.range.at, w.range.at + w.range.len);
        if (got.equals(w.after)) w.after.copy(rolled, w.range.at);
        else assert.ok(got.equals(undone), `${where}: live range ${w.range.at}+${w.range.len} after rollback is torn`);
      }
      model.live = rolled;
    }
  }
  for (const a of artifacts) {
    if (a.kind !== 'checkpoint') continue;
    const cp = model.checkpoints.find((c) => c.name === a.name) as ModelCheckpoint;
    if (a.base === 'post-live') {
      // Cut inside the abort, with all I/O held off: exactly the rolled-back image.
      cp.image = Buffer.from(liveAfterRollbackNoWrites as Buffer);
      continue;
    }
    const info = vol.checkpoint(a.name);
    const image = Buffer.from(before.subarray(0, info.size));
    const actual = await vol.readCheckpoint(a.name, 0, info.size);
    for (const w of writes) {
      if (w.range.at >= info.size) continue;
      const end = Math.min(w.range.at + w.range.len, info.size);
      const seg = actual.subarray(w.range.at, end);
      const landedBefore = w.after.subarray(0, end - w.range.at);
      if (seg.equals(landedBefore)) landedBefore.copy(image, w.range.at);
      else assert.ok(seg.equals(image.subarray(w.range.at, end)), `${where}: checkpoint ${a.name} holds a torn write at ${w.range.at}+${w.range.len}`);
    }
    cp.image = image;
  }
  await finish();
}

async function verifyAll(vol: Volume, model: Model, where: string): Promise<void> {
  assert.equal(vol.size, model.live.length, `${where}: size`);
  const live = await vol.read(0, vol.size);
  assert.ok(live.equals(model.live), `${where}: live image differs at byte ${firstDiff(live, model.live)}`);
  const names = vol.checkpoints({ includeInternal: true }).map((c) => c.name);
  assert.deepEqual(names, model.checkpoints.map((c) => c.name), `${where}: checkpoint list`);
  assert.deepEqual(vol.deferredCheckpoints().map((d) => d.name), model.deferred, `${where}: deferred checkpoints`);
  assert.equal(vol.transaction()?.txid ?? null, model.tx?.txid ?? null, `${where}: transaction`);
  const liveMap = await vol.allocated();
  for (let i = 0; i < live.length; i++) if (live[i] !== 0) assert.ok(covered(liveMap, i), `${where}: live byte ${i} is data but not allocated`);
  for (const cp of model.checkpoints) {
    const image = await vol.readCheckpoint(cp.name, 0, cp.image.length);
    assert.ok(image.equals(cp.image), `${where}: checkpoint ${cp.name} differs at byte ${firstDiff(image, cp.image)}`);
    const map = await vol.allocated(cp.name);
    for (let i = 0; i < image.length; i++) if (image[i] !== 0) assert.ok(covered(map, i), `${where}: ${cp.name} byte ${i} is data but not allocated`);
    // A ranged query answers for exactly its range (both lookup strategies get exercised).
    const from = Math.floor(image.length / 3);
    const to = from + Math.min(image.length - from, 9000 + cp.name.length * 1000);
    const part = await vol.allocated(cp.name, from, to);
    assert.ok(part.every((e) => e.offset >= from && e.offset + e.length <= to), `${where}: ranged map leaves its range`);
    for (let i = from; i < to; i++) if (image[i] !== 0) assert.ok(covered(part, i), `${where}: ${cp.name} byte ${i} missing from ranged map`);
  }
  // changed(a, b) must cover every byte that differs between consecutive images.
  const images = [...model.checkpoints.map((c) => ({ name: c.name as string | undefined, image: c.image })), { name: undefined, image: model.live }];
  for (let k = 0; k + 1 < images.length; k++) {
    const a = images[k] as { name: string; image: Buffer };
    const b = images[k + 1] as { name: string | undefined; image: Buffer };
    const delta = vol.changed(a.name, b.name);
    const n = Math.min(a.image.length, b.image.length);
    for (let i = 0; i < n; i++) if (a.image[i] !== b.image[i]) assert.ok(covered(delta, i), `${where}: byte ${i} changed ${a.name}→${b.name ?? 'live'} but is not in changed()`);
  }
}

function firstDiff(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}

test('engine matches the reference model under concurrent, unaligned operations', async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'flashcsi-model-'));
  let run = 0;
  let operations = 0;
  try {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(4096, 8192, 16384, 65536),
        fc.integer({ min: 1, max: 1024 }),
        fc.array(batch, { minLength: 10, maxLength: 40 }),
        fc.integer({ min: 1, max: 2 ** 30 }),
        async (grainSize, sizeSectors, batches, seed) => {
          operations += batches.reduce((n, b) => n + b.data.length + (b.barrier ? 1 : 0), 0);
          await runScenario(path.join(root, `v${run++}`), grainSize, sizeSectors, batches, seed);
        },
      ),
      { numRuns: Number(process.env.FLASHCSI_MODEL_RUNS ?? 150), ...(process.env.FLASHCSI_SEED ? { seed: Number(process.env.FLASHCSI_SEED) } : {}) },
    );
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
  console.log(
    `model test: ${run} scenarios, ${operations} operations; fast path took ${fastCounts.writes} of ${fastCounts.offered} writes offered (${fastCounts.directWrites} O_DIRECT), ${fastCounts.reads} reads (${fastCounts.directReads} O_DIRECT)`,
  );
  assert.ok(operations >= 2000, `only ${operations} operations ran`);
  assert.ok(fastCounts.writes >= fastCounts.offered / 10, `the fast path took only ${fastCounts.writes} of ${fastCounts.offered} writes`);
  assert.ok(fastCounts.reads > 0, 'the fast path took no read');
  assert.ok(fastCounts.directWrites > 0 && fastCounts.directReads > 0, 'the fast path took no O_DIRECT write or read');
});
