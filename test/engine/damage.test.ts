/**
 * Regression tests for what the crash torture and the metadata fuzzer found: each case is a
 * volume damaged (or interrupted) one exact way, and what it must do instead of serving wrong data
 * or leaking a checkpoint.
 * - A clone interrupted by a crash left its temporary internal checkpoint for ever (every later
 *   first write copied a grain into it): recovery now removes it.
 * - A damaged newest volume.meta slot fell back to the previous generation even when data depended
 *   on the newer one (a checkpoint cut, then writes copied into it): older checkpoints then read the
 *   base for grains copied only into the lost checkpoint. Now refused as CORRUPT.
 * - A flipped byte in a store's grain data was served as checkpoint data: reads now check CRCs.
 * - A store truncated at a batch boundary silently lost its last batches: volume.meta now records
 *   each store's length, and a shorter store is refused.
 * - A damaged batch header in the middle of a store's log ended the log there, silently dropping
 *   the valid batches after it: a valid batch after the end of the log is now refused (a torn batch
 *   is always the last one).
 * - A store file volume.meta names but which is missing was VOLUME_NOT_FOUND: now CORRUPT.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { crc32 } from 'node:zlib';
import { Volume, isEngineError } from '../../src/engine/index.js';
import { Holder, KiB, fill, tempDir } from './helpers.js';
import { instrumentedIO } from './instrumented-io.js';

const SIZE = 64 * KiB;
const G = 4 * KiB;
const STORE_HEADER = 4096;
const BATCH_HEADER = 4096;

const corrupt = (what: RegExp) => (err: unknown) => {
  assert.ok(isEngineError(err, 'CORRUPT'), `expected CORRUPT, got ${String(err)}`);
  assert.match(err.message, what);
  return true;
};

function flip(file: string, at: number): void {
  const b = fs.readFileSync(file);
  b[at] = (b[at] as number) ^ 0x40;
  fs.writeFileSync(file, b);
}

/** The volume.meta slot holding the newest generation (slot size 64 KiB, generation at byte 48). */
function newestSlot(dir: string): number {
  const b = fs.readFileSync(path.join(dir, 'volume.meta'));
  const half = b.length / 2;
  return b.readBigUInt64BE(48) > b.readBigUInt64BE(half + 48) ? 0 : half;
}

describe('damage and interruption regressions', () => {
  test('a clone interrupted by a crash leaves no temporary checkpoint behind', async () => {
    const t = tempDir('dmg-clone');
    const dir = path.join(t.dir, 'v');
    const hold = new Holder();
    const vol = await Volume.create(dir, { size: SIZE, grainSize: G, io: instrumentedIO(hold.hook) });
    try {
      await vol.write(0, fill(1, SIZE));
      hold.arm((info) => info.file.includes(`${path.sep}dest${path.sep}`) && info.op === 'write' && info.kind === 'base');
      const cloning = vol.clone(path.join(t.dir, 'dest')).catch(() => undefined);
      await hold.reached;
      assert.ok(vol.checkpoints({ includeInternal: true }).some((c) => c.name.startsWith('clone:')));
      fs.cpSync(dir, `${dir}-crash`, { recursive: true }); // the files as a SIGKILL now leaves them
      hold.release();
      await cloning;
      const after = await Volume.open(`${dir}-crash`);
      try {
        assert.deepEqual(after.checkpoints({ includeInternal: true }), []);
        assert.match((await after.info()).recovery.completed.join(), /temporary checkpoint of an interrupted clone/);
      } finally {
        await after.close();
      }
    } finally {
      await vol.close();
      t.cleanup();
    }
  });

  test('a damaged newest metadata slot is refused when data depends on it', async () => {
    const t = tempDir('dmg-slot');
    const dir = path.join(t.dir, 'v');
    const vol = await Volume.create(dir, { size: SIZE, grainSize: G });
    try {
      await vol.write(0, fill(1, SIZE));
      await vol.createCheckpoint('c');
      await vol.createCheckpoint('d'); // the newest generation
      await vol.write(0, fill(2, G)); // copied into d only; c reads grain 0 through d
      await vol.settled();
      fs.cpSync(dir, `${dir}-crash`, { recursive: true }); // a crash now, then the newest slot rots
      flip(path.join(`${dir}-crash`, 'volume.meta'), newestSlot(`${dir}-crash`) + 200);
      await assert.rejects(Volume.open(`${dir}-crash`, { readOnly: true }), corrupt(/newest generation is damaged/));
      await assert.rejects(Volume.open(`${dir}-crash`), corrupt(/volume\.meta.*newest generation is damaged/));
    } finally {
      await vol.close();
      t.cleanup();
    }
  });

  test('a damaged older metadata slot, or a torn newest one with nothing depending on it, still opens', async () => {
    const t = tempDir('dmg-slot-ok');
    const dir = path.join(t.dir, 'v');
    try {
      const vol = await Volume.create(dir, { size: SIZE, grainSize: G });
      await vol.write(0, fill(1, SIZE));
      await vol.createCheckpoint('c');
      await vol.close();
      const meta = path.join(dir, 'volume.meta');
      const half = fs.statSync(meta).size / 2;
      flip(meta, (newestSlot(dir) === 0 ? half : 0) + 200); // the older slot
      const a = await Volume.open(dir);
      assert.deepEqual(a.checkpoints().map((c) => c.name), ['c']);
      await a.close(); // writes a new generation over the damaged slot
      flip(meta, newestSlot(dir) + 200); // newest is the close's "clean" update: nothing depends on it
      const b = await Volume.open(dir);
      assert.ok((await b.readCheckpoint('c', 0, SIZE)).equals(fill(1, SIZE)));
      await b.close();
    } finally {
      t.cleanup();
    }
  });

  test('a flipped byte in stored grain data is refused on read, never served', async () => {
    const t = tempDir('dmg-data');
    const dir = path.join(t.dir, 'v');
    try {
      const vol = await Volume.create(dir, { size: SIZE, grainSize: G });
      await vol.write(0, fill(1, SIZE));
      await vol.createCheckpoint('c');
      await vol.write(0, fill(2, 2 * G));
      await vol.close();
      flip(path.join(dir, 'cp-00000001.store'), STORE_HEADER + BATCH_HEADER + G + 17); // grain 1's data
      const v = await Volume.open(dir);
      try {
        assert.ok((await v.readCheckpoint('c', 0, G)).equals(fill(1, G)), 'grain 0 is intact');
        await assert.rejects(v.readCheckpoint('c', G + 100, 10), corrupt(/grain 1 .*fails its checksum/));
        await assert.rejects(v.rollback('c'), corrupt(/fails its checksum/));
      } finally {
        await v.close().catch(() => undefined);
      }
    } finally {
      t.cleanup();
    }
  });

  test('a store truncated at a batch boundary is refused: volume.meta recorded its length', async () => {
    const t = tempDir('dmg-trunc');
    const dir = path.join(t.dir, 'v');
    try {
      const vol = await Volume.create(dir, { size: SIZE, grainSize: G });
      await vol.write(0, fill(1, SIZE));
      await vol.createCheckpoint('c');
      await vol.write(0, fill(2, G));
      await vol.write(G, fill(2, G)); // a second batch
      await vol.close();
      const store = path.join(dir, 'cp-00000001.store');
      assert.equal(fs.statSync(store).size, STORE_HEADER + 2 * (BATCH_HEADER + G));
      fs.truncateSync(store, STORE_HEADER + BATCH_HEADER + G);
      await assert.rejects(Volume.open(dir), corrupt(/valid batches, but volume\.meta recorded/));
      assert.equal(fs.statSync(store).size, STORE_HEADER + BATCH_HEADER + G, 'a refused store is left as it was found');
      fs.truncateSync(store, 100);
      await assert.rejects(Volume.open(dir, { readOnly: true }), corrupt(/truncated to 100 bytes/));
      fs.rmSync(store);
      await assert.rejects(Volume.open(dir), corrupt(/cp-00000001\.store.*missing/));
    } finally {
      t.cleanup();
    }
  });

  test('after a crash, a torn last batch is dropped; damage to an earlier batch is refused', async () => {
    const t = tempDir('dmg-tail');
    const dir = path.join(t.dir, 'v');
    const vol = await Volume.create(dir, { size: SIZE, grainSize: G });
    try {
      await vol.write(0, fill(1, SIZE));
      await vol.createCheckpoint('c');
      await vol.write(0, fill(2, G)); // batch 1: grain 0
      await vol.write(G, fill(2, G)); // batch 2: grain 1
      await vol.settled();
      const store = 'cp-00000001.store';
      // Crash image 1: batch 1's header damaged; batch 2 follows it, so this is no tear.
      fs.cpSync(dir, `${dir}-damaged`, { recursive: true });
      flip(path.join(`${dir}-damaged`, store), STORE_HEADER + 40);
      await assert.rejects(Volume.open(`${dir}-damaged`), corrupt(/batch at offset 4096 is damaged and valid batches follow it/));
      // Crash image 2: a third batch torn mid-write (header written, its data not): dropped.
      fs.cpSync(dir, `${dir}-torn`, { recursive: true });
      const torn = path.join(`${dir}-torn`, store);
      const b = fs.readFileSync(torn);
      const third = Buffer.from(b.subarray(STORE_HEADER, STORE_HEADER + BATCH_HEADER + G));
      third.writeBigUInt64BE(2n, 32); // grain 2, still fill(1) in the base
      third.writeUInt32BE(crc32(fill(1, G)) >>> 0, 44);
      third.writeBigUInt64BE(3n, 8); // sequence 3
      third.writeUInt32BE(0, 24);
      third.writeUInt32BE(crc32(third.subarray(0, BATCH_HEADER)) >>> 0, 24);
      third.fill(0, BATCH_HEADER + 100); // the data torn
      fs.appendFileSync(torn, third);
      const v = await Volume.open(`${dir}-torn`);
      try {
        assert.ok((await v.readCheckpoint('c', 0, SIZE)).equals(fill(1, SIZE)));
        assert.equal(v.checkpoint('c').storeBytes, STORE_HEADER + 2 * (BATCH_HEADER + G), 'the torn batch was cut off');
        assert.equal(fs.statSync(torn).size, STORE_HEADER + 2 * (BATCH_HEADER + G));
      } finally {
        await v.close();
      }
    } finally {
      await vol.close();
      t.cleanup();
    }
  });
});
