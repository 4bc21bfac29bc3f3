/**
 * Targeted tests of the volume engine: token semantics and cut atomicity made deterministic by
 * holding I/O at exact steps, chain shapes, rollback, transactions, locking, corrupted metadata,
 * costs measured by counting operations, and injected ENOSPC/EIO.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Volume, inspectVolume, isEngineError, type EngineError } from '../../src/engine/index.js';
import { subscribe, type EngineEvent } from '../../src/engine/events.js';
import { IoCounter, instrumentedIO } from './instrumented-io.js';
import { Faults, GiB, Holder, KiB, MiB, TiB, fill, tempDir, withVolume } from './helpers.js';

const G = 64 * KiB;

function rejectsWith(code: string): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(isEngineError(err), `expected an EngineError, got ${String(err)}`);
    assert.equal((err as EngineError).code, code, (err as Error).message);
    return true;
  };
}

/** Resolves on the first engine event matching `pred`. */
function nextEvent(pred: (e: EngineEvent) => boolean): Promise<EngineEvent> {
  return new Promise((resolve) => {
    const stop = subscribe((e) => {
      if (pred(e)) {
        stop();
        resolve(e);
      }
    });
  });
}

describe('tokens and cuts', () => {
  test('a cut waits for in-flight writes, so a write lands entirely before or after it', async () => {
    const hold = new Holder();
    await withVolume('cut', { size: 4 * MiB, hold }, async ({ vol, dir }) => {
      hold.arm((i) => i.kind === 'base' && i.op === 'write');
      const write = vol.write(100, fill(7, 3 * G));
      await hold.reached; // the write is inside the data path, its bytes not yet in the base
      const quiesced = nextEvent((e) => e.type === 'quiesce' && e.op === 'cut');
      const cut = vol.createCheckpoint('c1');
      // A correct cut reports that it waits for the write; a broken one just completes.
      const first = await Promise.race([quiesced, cut.then(() => null)]);
      assert.ok(first !== null, 'the cut completed while a write was in flight');
      assert.equal(first.type === 'quiesce' && first.writers, 1, 'the cut must wait for the one in-flight write');
      const recorded = (await inspectVolume(dir)).checkpoints.length;
      assert.equal(recorded, 0, 'the cut must not be recorded before the write is done');
      hold.release();
      await write;
      await cut;
      const image = await vol.readCheckpoint('c1', 0, 4 * MiB);
      assert.ok(image.subarray(100, 100 + 3 * G).equals(fill(7, 3 * G)), 'the write landed before the cut');
    });
  });

  test('concurrent writes to one grain make exactly one copy', async () => {
    const hold = new Holder();
    await withVolume('onecopy', { size: 4 * MiB, hold }, async ({ vol }) => {
      await vol.write(0, fill(1, G));
      await vol.createCheckpoint('c');
      hold.arm((i) => i.kind === 'store' && i.op === 'write');
      const writes = [vol.write(0, fill(2, 4 * KiB))];
      await hold.reached; // the first writer holds the grain's token and is copying it
      for (let k = 1; k < 8; k++) writes.push(vol.write(k * 8 * KiB, fill(2 + k, 4 * KiB)));
      const waits = nextEvent((e) => e.type === 'token-wait');
      await waits; // later writers queue on the token instead of copying again
      hold.release();
      await Promise.all(writes);
      assert.equal(vol.counters.grainsCopied, 1);
      assert.equal(vol.checkpoint('c').storedGrains, 1);
      assert.ok(vol.tokenWaits >= 1);
      assert.ok((await vol.readCheckpoint('c', 0, G)).equals(fill(1, G)));
      const live = await vol.read(0, G);
      for (let k = 0; k < 8; k++) assert.ok(live.subarray(k * 8 * KiB, k * 8 * KiB + 4 * KiB).equals(fill(2 + k, 4 * KiB)));
    });
  });

  test('a checkpoint reader never sees a torn or post-checkpoint grain', async () => {
    const hold = new Holder();
    await withVolume('reader', { size: 4 * MiB, hold }, async ({ vol }) => {
      await vol.write(0, fill(0xaa, 2 * G));
      await vol.createCheckpoint('c');
      // Reader arrives while the grain's copy is in progress: it waits for the token.
      hold.arm((i) => i.kind === 'store' && i.op === 'write');
      const w1 = vol.write(0, fill(0xbb, G + 4096));
      await hold.reached;
      const waited = nextEvent((e) => e.type === 'token-wait');
      const r1 = vol.readCheckpoint('c', 0, 2 * G);
      await waited;
      hold.release();
      await w1;
      assert.ok((await r1).equals(fill(0xaa, 2 * G)), 'reader during the copy');
      // Reader arrives after the copy, while the base is being overwritten: it reads the store.
      await vol.write(0, fill(0xcc, G)); // grain 0 already copied: no copy, no token
      hold.arm((i) => i.kind === 'base' && i.op === 'write');
      const w2 = vol.write(0, fill(0xdd, 2 * G));
      await hold.reached;
      const r2 = await vol.readCheckpoint('c', 0, 2 * G);
      assert.ok(r2.equals(fill(0xaa, 2 * G)), 'reader during the base overwrite');
      hold.release();
      await w2;
    });
  });

  test('writes to other grains and checkpoint reads proceed while a grain is being copied', async () => {
    const hold = new Holder();
    await withVolume('parallel', { size: 4 * MiB, hold }, async ({ vol }) => {
      await vol.write(0, fill(1, 4 * MiB));
      await vol.createCheckpoint('c');
      await vol.write(10 * G, fill(2, G)); // grain 10 now has its copy
      hold.arm((i) => i.kind === 'store' && i.op === 'write');
      const slow = vol.write(0, fill(3, 4096)); // copying grain 0, held
      await hold.reached;
      await vol.write(10 * G + 512, fill(4, 4096)); // another grain: done while grain 0 is held
      assert.ok((await vol.readCheckpoint('c', 20 * G, G)).equals(fill(1, G)));
      assert.ok((await vol.read(10 * G + 512, 4096)).equals(fill(4, 4096)));
      assert.equal(hold.held, true, 'grain 0 was still being copied throughout');
      hold.release();
      await slow;
    });
  });
});

describe('freeze', () => {
  test('freeze all, cut all, thaw all gives write-order consistent checkpoints across volumes', async () => {
    const t = tempDir('freeze');
    const a = await Volume.create(path.join(t.dir, 'a'), { size: MiB });
    const b = await Volume.create(path.join(t.dir, 'b'), { size: MiB });
    let stop = false;
    let writer: Promise<void> = Promise.resolve();
    try {
      // A writer stamps n into A, then (after A acknowledged) n into B.
      let n = 0;
      const stamp = (v: number): Buffer => {
        const buf = Buffer.alloc(4096);
        buf.writeUInt32BE(v, 0);
        return buf;
      };
      let stamped: () => void = () => undefined;
      const nextStamp = (): Promise<void> => new Promise((resolve) => (stamped = resolve));
      writer = (async () => {
        while (!stop) {
          n++;
          await a.write(0, stamp(n));
          await b.write(0, stamp(n));
          stamped();
        }
      })();
      for (let round = 0; round < 20; round++) {
        await nextStamp(); // every round finds the writer moving: it is never starved by freezes
        const fa = await a.freeze();
        const fb = await b.freeze();
        await fa.createCheckpoint(`g${round}`);
        await fb.createCheckpoint(`g${round}`);
        fa.thaw();
        fb.thaw();
        fa.thaw(); // idempotent
        const sa = (await a.readCheckpoint(`g${round}`, 0, 4)).readUInt32BE(0);
        const sb = (await b.readCheckpoint(`g${round}`, 0, 4)).readUInt32BE(0);
        // Write-order consistent: B's stamp n is written only after A's was acknowledged, so B may
        // lag A by the one write in flight, but never hold a stamp A lacks.
        assert.ok(sb === sa || sb === sa - 1, `round ${round}: A holds stamp ${sa}, B holds ${sb}`);
      }
      stop = true;
      await writer;
      assert.ok(n > 20, `the writer made progress between freezes (${n} stamps)`);
      const fa = await a.freeze();
      const held = a.write(0, stamp(0));
      await assert.rejects(Promise.race([held.then(() => 'written'), fa.begin('tx1').then(() => 'begun')]).then((first) => {
        throw new Error(first);
      }), /begun/, 'a write waits while frozen; work under the freeze proceeds');
      fa.thaw();
      await held; // and goes through once thawed
      assert.equal(a.transaction()?.txid, 'tx1');
      const summary = await inspectVolume(path.join(t.dir, 'a'));
      assert.equal(summary.transaction?.txid, 'tx1');
      assert.equal(summary.size, MiB);
      assert.deepEqual(summary.checkpoints.filter((c) => !c.internal).map((c) => c.name).slice(0, 2), ['g0', 'g1']);
    } finally {
      stop = true;
      await writer.catch(() => undefined);
      await a.close();
      await b.close();
      t.cleanup();
    }
  });
});

describe('checkpoint chains', () => {
  for (const shape of ['first', 'middle', 'last', 'only'] as const) {
    test(`deleting the ${shape} checkpoint keeps every other image byte-exact`, async () => {
      await withVolume(`del-${shape}`, { size: 2 * MiB, grainSize: 16 * KiB }, async ({ vol, dir }) => {
        const names = shape === 'only' ? ['a'] : ['a', 'b', 'c'];
        const images = new Map<string, Buffer>();
        for (const [k, name] of names.entries()) {
          await vol.write(k * 5000, fill(10 + k, 40 * KiB + 123));
          await vol.writeZeroes(300 * KiB + k * 7000, 20 * KiB);
          images.set(name, await vol.read(0, 2 * MiB));
          await vol.createCheckpoint(name);
        }
        await vol.write(1000, fill(99, 100 * KiB));
        const live = await vol.read(0, 2 * MiB);
        const victim = shape === 'first' || shape === 'only' ? 'a' : shape === 'middle' ? 'b' : 'c';
        const victimStore = path.join(dir, `cp-${String(vol.checkpoint(victim).id).padStart(8, '0')}.store`);
        assert.ok(fs.existsSync(victimStore));
        await vol.deleteCheckpoint(victim);
        await assert.rejects(vol.readCheckpoint(victim, 0, 1), rejectsWith('CHECKPOINT_NOT_FOUND'));
        for (const name of names.filter((n) => n !== victim)) {
          assert.ok((await vol.readCheckpoint(name, 0, 2 * MiB)).equals(images.get(name) as Buffer), name);
        }
        assert.ok((await vol.read(0, 2 * MiB)).equals(live));
        assert.equal(fs.existsSync(victimStore), false, "the deleted checkpoint's store is gone");
      });
    });
  }

  test('rollback to an older checkpoint keeps newer ones, and can itself be undone', async () => {
    await withVolume('rb', { size: 1 * MiB, grainSize: 4 * KiB }, async ({ vol }) => {
      await vol.write(0, fill(1, 100 * KiB));
      const a = await vol.read(0, MiB);
      await vol.createCheckpoint('a');
      await vol.write(50 * KiB, fill(2, 100 * KiB));
      const b = await vol.read(0, MiB);
      await vol.createCheckpoint('b');
      await vol.write(10 * KiB, fill(3, 10 * KiB));
      const result = await vol.rollback('a');
      assert.ok((await vol.read(0, MiB)).equals(a));
      assert.ok(result.restoredBytes > 0);
      assert.ok((await vol.readCheckpoint('b', 0, MiB)).equals(b), 'the newer checkpoint survives');
      await vol.rollback('b');
      assert.ok((await vol.read(0, MiB)).equals(b));
    });
  });

  test('rollback to a checkpoint taken before an expand keeps the size and zeroes the new space', async () => {
    await withVolume('rb-expand', { size: 1 * MiB + 512 }, async ({ vol }) => {
      await vol.write(MiB, fill(5, 512));
      const a = await vol.read(0, MiB + 512);
      await vol.createCheckpoint('a');
      await vol.expand(3 * MiB);
      await vol.write(MiB, fill(6, 2 * MiB));
      await vol.rollback('a');
      assert.equal(vol.size, 3 * MiB);
      const live = await vol.read(0, 3 * MiB);
      assert.ok(live.subarray(0, MiB + 512).equals(a));
      assert.ok(live.subarray(MiB + 512).equals(Buffer.alloc(2 * MiB - 512)));
      await assert.rejects(vol.expand(MiB), rejectsWith('INVALID_ARGUMENT'));
    });
  });

  test('clone copies only allocated data of a checkpoint into a new volume', async () => {
    await withVolume('clone', { size: 64 * MiB }, async ({ vol, tmp }) => {
      await vol.write(5 * MiB, fill(8, MiB));
      await vol.createCheckpoint('a');
      await vol.write(5 * MiB, fill(9, MiB));
      const clone = await vol.clone(path.join(tmp, 'c'), { checkpoint: 'a' });
      try {
        assert.equal(clone.size, 64 * MiB);
        assert.ok((await clone.read(5 * MiB, MiB)).equals(fill(8, MiB)));
        const info = await clone.info();
        assert.ok(info.allocatedBytes <= 2 * MiB, `clone allocated ${info.allocatedBytes} bytes`);
      } finally {
        await clone.close();
      }
      const live = await vol.clone(path.join(tmp, 'l'));
      try {
        assert.ok((await live.read(5 * MiB, MiB)).equals(fill(9, MiB)));
        assert.deepEqual(vol.checkpoints().map((c) => c.name), ['a'], 'the temporary checkpoint is gone');
      } finally {
        await live.close();
      }
    });
  });
});

describe('transactions', () => {
  test('commit releases the checkpoint and cuts the checkpoint deferred meanwhile', async () => {
    await withVolume('tx-commit', { size: MiB }, async ({ vol }) => {
      await vol.begin('tx1');
      assert.deepEqual(await vol.begin('tx1'), vol.transaction(), 'begin is idempotent');
      await assert.rejects(vol.begin('tx2'), rejectsWith('FAILED_PRECONDITION'));
      await vol.write(0, fill(1, 4096));
      const deferred = await vol.createCheckpoint('snap');
      assert.equal(deferred.state, 'deferred');
      assert.equal(deferred.state === 'deferred' && deferred.deferred.txid, 'tx1');
      await assert.rejects(vol.rollback('tx:tx1'), rejectsWith('FAILED_PRECONDITION'));
      await vol.write(4096, fill(2, 4096));
      assert.equal((await vol.prepare('tx1')).state, 'prepared');
      await vol.commit('tx1');
      await vol.commit('tx1'); // idempotent
      await assert.rejects(vol.abort('tx1'), rejectsWith('FAILED_PRECONDITION'));
      assert.equal(vol.transaction(), null);
      assert.deepEqual(vol.checkpoints({ includeInternal: true }).map((c) => c.name), ['snap']);
      const snap = await vol.readCheckpoint('snap', 0, 8192);
      assert.ok(snap.equals(Buffer.concat([fill(1, 4096), fill(2, 4096)])), 'the deferred cut sees the committed state');
    });
  });

  test('abort rolls back every write since begin, survives reopen, and refuses a late begin', async () => {
    await withVolume('tx-abort', { size: MiB }, async (h) => {
      await h.vol.write(0, fill(1, 64 * KiB));
      await h.vol.createCheckpoint('before');
      await h.vol.begin('tx1');
      await h.vol.write(0, fill(2, 128 * KiB));
      await h.vol.prepare('tx1');
      const vol = await h.reopen();
      assert.equal(vol.transaction()?.state, 'prepared', 'PREPARED is durable');
      await vol.abort('tx1');
      await vol.abort('tx1');
      assert.ok((await vol.read(0, 128 * KiB)).equals(Buffer.concat([fill(1, 64 * KiB), Buffer.alloc(64 * KiB)])));
      assert.deepEqual(vol.checkpoints({ includeInternal: true }).map((c) => c.name), ['before']);
      await assert.rejects(vol.begin('tx1'), rejectsWith('FAILED_PRECONDITION'));
      await vol.abort('never-begun'); // presumed abort
      await assert.rejects(vol.begin('never-begun'), rejectsWith('FAILED_PRECONDITION'));
      await assert.rejects(vol.commit('never-begun'), rejectsWith('FAILED_PRECONDITION'));
    });
  });
});

describe('locking and metadata', () => {
  test('a second open of a volume gets a clear LOCKED error', async () => {
    const t = tempDir('lock');
    const dir = path.join(t.dir, 'v');
    const vol = await Volume.create(dir, { size: MiB });
    try {
      await assert.rejects(Volume.open(dir), rejectsWith('LOCKED'));
      await assert.rejects(Volume.open(dir, { readOnly: true }), rejectsWith('LOCKED'));
    } finally {
      await vol.close();
    }
    const ro1 = await Volume.open(dir, { readOnly: true });
    const ro2 = await Volume.open(dir, { readOnly: true });
    await assert.rejects(Volume.open(dir), rejectsWith('LOCKED'));
    await assert.rejects(ro1.write(0, fill(1, 1)), rejectsWith('READ_ONLY'));
    await ro1.close();
    await ro2.close();
    await assert.rejects(Volume.open(path.join(t.dir, 'missing')), rejectsWith('VOLUME_NOT_FOUND'));
    await assert.rejects(Volume.create(dir, { size: MiB }), rejectsWith('ALREADY_EXISTS'));
    t.cleanup();
  });

  test('bad sizes, grains, names and ranges are refused with INVALID_ARGUMENT or OUT_OF_RANGE', async () => {
    const t = tempDir('args');
    for (const size of [0, -512, 1000, 2 ** 60]) {
      await assert.rejects(Volume.create(path.join(t.dir, `s${size}`), { size }), rejectsWith('INVALID_ARGUMENT'));
    }
    for (const grainSize of [2048, 3 * 4096, 2 * MiB]) {
      await assert.rejects(Volume.create(path.join(t.dir, `g${grainSize}`), { size: MiB, grainSize }), rejectsWith('INVALID_ARGUMENT'));
    }
    const vol = await Volume.create(path.join(t.dir, 'v'), { size: MiB });
    try {
      for (const name of ['', 'tx:x', '-a', 'a/b', 'x'.repeat(300)]) {
        await assert.rejects(vol.createCheckpoint(name), rejectsWith('INVALID_ARGUMENT'));
      }
      await vol.createCheckpoint('a');
      await assert.rejects(vol.createCheckpoint('a'), rejectsWith('ALREADY_EXISTS'));
      await assert.rejects(vol.write(MiB - 1, fill(1, 2)), rejectsWith('OUT_OF_RANGE'));
      await assert.rejects(vol.read(-1, 2), rejectsWith('INVALID_ARGUMENT'));
      await assert.rejects(vol.readCheckpoint('a', MiB, 1), rejectsWith('OUT_OF_RANGE'));
      await assert.rejects(vol.deleteCheckpoint('nope'), rejectsWith('CHECKPOINT_NOT_FOUND'));
    } finally {
      await vol.close();
      t.cleanup();
    }
  });

  test('corrupted or truncated metadata is refused with CORRUPT', async () => {
    const t = tempDir('corrupt');
    const dir = path.join(t.dir, 'v');
    const vol = await Volume.create(dir, { size: MiB });
    await vol.createCheckpoint('a');
    await vol.close();
    const meta = path.join(dir, 'volume.meta');
    const good = fs.readFileSync(meta);
    const slot = good.length / 2;
    const flip = (b: Buffer, at: number): Buffer => Buffer.from(b).fill(b[at] === 0 ? 1 : 0, at, at + 1);
    const variants: Array<[string, Buffer]> = [
      ['both slots flipped', flip(flip(good, 150), slot + 150)],
      ['truncated', good.subarray(0, good.length - 9)],
      ['one slot long', good.subarray(0, slot)],
      ['empty', Buffer.alloc(0)],
      ['bad magic in both slots', Buffer.concat([Buffer.from('XXXXXXXX'), good.subarray(8, slot), Buffer.from('XXXXXXXX'), good.subarray(slot + 8)])],
    ];
    for (const [what, bytes] of variants) {
      fs.writeFileSync(meta, bytes);
      await assert.rejects(Volume.open(dir), rejectsWith('CORRUPT'), what);
    }
    // A torn write spoils one slot: the other, previous generation is used.
    for (const torn of [0, slot]) {
      fs.writeFileSync(meta, flip(good, torn + 150));
      const v = await Volume.open(dir);
      assert.deepEqual(v.checkpoints().map((c) => c.name), ['a'], `slot at ${torn} torn`);
      await v.close();
    }
    fs.writeFileSync(meta, good);
    const store = fs.readdirSync(dir).find((f) => f.endsWith('.store')) as string;
    fs.writeFileSync(path.join(dir, store), Buffer.alloc(100));
    await assert.rejects(Volume.open(dir), rejectsWith('CORRUPT'), 'store header');
    t.cleanup();
  });
});

describe('costs, counted', () => {
  async function cutCost(size: number): Promise<{ ops: number; bytes: number }> {
    const counter = new IoCounter();
    return withVolume('cutcost', { size, io: instrumentedIO(counter.hook) }, async ({ vol }) => {
      await vol.write(size / 2, fill(1, MiB));
      await vol.settled();
      counter.reset();
      await vol.createCheckpoint('c');
      // The cut itself: one metadata slot written and synced (its store was made ahead of time).
      assert.equal(counter.get('meta', 'write').count, 1);
      assert.equal(counter.get('meta', 'datasync').count, 1);
      const storeWork = counter.get('store', 'write').count + counter.get('store', 'datasync').count + counter.total('dir').ops;
      assert.equal(storeWork, 0, 'the store was ready before the cut');
      await vol.settled(); // the next checkpoint's store, made in the background
      const meta = counter.total('meta');
      const store = counter.total('store');
      const base = counter.total('base');
      assert.equal(base.ops, 0, 'a cut never touches the base image');
      return { ops: meta.ops + store.ops + counter.total('dir').ops, bytes: meta.bytes + store.bytes };
    });
  }

  test('cutting a checkpoint of a 1 TiB sparse volume touches the same O(1) metadata as 1 GiB', async () => {
    const small = await cutCost(GiB);
    const huge = await cutCost(TiB);
    assert.deepEqual(huge, small);
    assert.ok(huge.bytes <= 16 * KiB && huge.ops <= 16, `cut cost ${JSON.stringify(huge)}`);
  });

  test('a rollback after changing N grains copies N grains, on a 1 TiB volume', async () => {
    const counter = new IoCounter();
    await withVolume('rbcost', { size: TiB, io: instrumentedIO(counter.hook) }, async ({ vol }) => {
      const N = 37;
      for (let k = 0; k < N; k++) await vol.write(k * 3 * GiB + 1000, fill(1, 100));
      await vol.createCheckpoint('c');
      for (let k = 0; k < N; k++) await vol.write(k * 3 * GiB + 1000, fill(2, 100));
      assert.equal(vol.checkpoint('c').storedGrains, N, 'grain index holds exactly the changed grains');
      counter.reset();
      const before = { ...vol.counters };
      await vol.rollback('c');
      assert.equal(vol.counters.grainsRestored - before.grainsRestored, N);
      assert.equal(vol.counters.grainsCopied - before.grainsCopied, 0, 'nothing new to copy');
      assert.equal(counter.get('base', 'write').bytes, N * G);
      assert.equal(counter.get('store', 'read').count, N);
      assert.ok((await vol.read(1000, 100)).equals(fill(1, 100)));
    });
  });

  test('memory for the grain index follows changed grains, not volume size', async () => {
    await withVolume('memcost', { size: TiB }, async ({ vol }) => {
      await vol.createCheckpoint('c');
      for (let k = 0; k < 500; k++) await vol.write(k * 2 * GiB, fill(3, 10));
      // The only per-grain structure is the store's index: one entry per copied grain.
      assert.equal(vol.checkpoint('c').storedGrains, 500);
      assert.deepEqual(vol.changed('c').length, 500);
    });
  });
});

describe('faults', () => {
  test('ENOSPC while copying a grain fails the write cleanly and loses nothing', async () => {
    const faults = new Faults();
    await withVolume('enospc', { size: 4 * MiB, io: instrumentedIO(faults.hook) }, async (h) => {
      let vol = h.vol;
      await vol.write(0, fill(1, 4 * MiB));
      await vol.createCheckpoint('c');
      faults.fail((i) => i.kind === 'store' && i.op === 'write', 'ENOSPC');
      await assert.rejects(vol.write(G, fill(2, 4096)), rejectsWith('NO_SPACE'));
      assert.ok((await vol.read(G, 4096)).equals(fill(1, 4096)), 'the base was not overwritten');
      assert.ok((await vol.readCheckpoint('c', 0, 4 * MiB)).equals(fill(1, 4 * MiB)));
      faults.clear();
      await vol.write(G, fill(2, 4096)); // space freed: the same write now succeeds
      vol = await h.reopen();
      assert.ok((await vol.readCheckpoint('c', 0, 4 * MiB)).equals(fill(1, 4 * MiB)));
      assert.ok((await vol.read(G, 4096)).equals(fill(2, 4096)));
    });
  });

  test('EIO on a store sync stops copies until reopen; checkpoints stay intact', async () => {
    const faults = new Faults();
    await withVolume('eio', { size: 4 * MiB, io: instrumentedIO(faults.hook) }, async (h) => {
      let vol = h.vol;
      await vol.write(0, fill(1, 4 * MiB));
      await vol.createCheckpoint('c');
      await vol.write(0, fill(3, 10)); // grain 0 copied before the fault
      faults.fail((i) => i.kind === 'store' && i.op === 'datasync', 'EIO', 1);
      await assert.rejects(vol.write(2 * G, fill(2, 4096)), rejectsWith('IO'));
      await assert.rejects(vol.write(3 * G, fill(2, 4096)), rejectsWith('IO'));
      await vol.write(0, fill(4, 10)); // no copy needed: still writable
      assert.ok((await vol.read(2 * G, G)).equals(fill(1, G)));
      vol = await h.reopen();
      assert.ok((await vol.readCheckpoint('c', 0, 4 * MiB)).equals(fill(1, 4 * MiB)));
      await vol.write(2 * G, fill(2, 4096));
      assert.ok((await vol.readCheckpoint('c', 0, 4 * MiB)).equals(fill(1, 4 * MiB)));
    });
  });

  test('ENOSPC or EIO at each I/O step of a rollback: a clear error, then reopen completes it', async () => {
    const SIZE = 256 * KiB;
    let steps = 0;
    for (const code of ['ENOSPC', 'EIO']) {
      for (let step = 1; ; step++) {
        const t = tempDir('rbfault');
        const dir = path.join(t.dir, 'v');
        const faults = new Faults();
        const io = instrumentedIO(faults.hook);
        let vol = await Volume.create(dir, { size: SIZE, grainSize: 16 * KiB, io });
        await vol.write(0, fill(1, SIZE / 2));
        await vol.createCheckpoint('a');
        await vol.write(0, fill(2, SIZE));
        await vol.createCheckpoint('b');
        await vol.write(40 * KiB, fill(3, 60 * KiB));
        await vol.settled();
        const a = await vol.readCheckpoint('a', 0, SIZE);
        const b = await vol.readCheckpoint('b', 0, SIZE);
        const current = await vol.read(0, SIZE);
        // Fail the step-th file operation of the rollback.
        let n = 0;
        faults.fail(() => ++n === step, code, 1);
        let failed = false;
        try {
          await vol.rollback('a');
        } catch (err) {
          failed = true;
          assert.ok(isEngineError(err), `${code} at step ${step}: ${String(err)}`);
        }
        faults.clear();
        if (failed) {
          // Either the rollback failed before changing anything (the volume serves on, untouched),
          // or it was interrupted midway (the volume stops serving until a reopen finishes it).
          const live = await vol.read(0, SIZE).catch((e: unknown) => {
            assert.ok(isEngineError(e, 'FAILED_PRECONDITION'), `${code} step ${step}: ${String(e)}`);
            return null;
          });
          if (live) assert.ok(live.equals(current), `${code} step ${step}: a clean failure changed data`);
          await vol.close().catch(() => undefined);
          vol = await Volume.open(dir, { io });
          const after = await vol.read(0, SIZE);
          assert.ok(after.equals(a) || (live !== null && after.equals(current)), `${code} at step ${step}: neither rolled back nor untouched`);
          assert.ok((await vol.readCheckpoint('a', 0, SIZE)).equals(a), `${code} step ${step}: checkpoint a`);
          assert.ok((await vol.readCheckpoint('b', 0, SIZE)).equals(b), `${code} step ${step}: checkpoint b`);
          steps++;
        } else {
          assert.ok((await vol.read(0, SIZE)).equals(a));
        }
        await vol.close();
        t.cleanup();
        if (!failed) break; // the rollback has fewer file operations than `step`: every one was covered
      }
    }
    assert.ok(steps >= 20, `only ${steps} failing steps were exercised`);
  });
});
