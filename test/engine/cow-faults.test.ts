/**
 * ENOSPC and EIO at each I/O step of the copy-on-write path: the first writes after a checkpoint
 * is cut (read the grain from the base, append it to the checkpoint's store, fdatasync the store,
 * then change the base), for plain writes, FUA writes, trims, write-zeroes and multi-grain writes.
 * For every step and both codes:
 * - the operation fails with a clear EngineError (NO_SPACE or IO, naming the file), never another
 *   exception and never a silent success;
 * - nothing is lost: the checkpoint still reads exactly the image it was cut with, and the live
 *   volume outside the failed range is unchanged (inside it each grain is old or new);
 * - the volume recovers: the same operation succeeds when retried (after a reopen if a failed
 *   store fdatasync poisoned the store, as documented), and after close + reopen the checkpoint is
 *   still exact and the retried data is there.
 * test/engine/volume.test.ts covers rollback's steps the same way.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { Volume, isEngineError } from '../../src/engine/index.js';
import { instrumentedIO, type OpInfo } from './instrumented-io.js';
import { Faults, KiB, fill, pattern, tempDir } from './helpers.js';

const SIZE = 256 * KiB;
const G = 16 * KiB;

interface Variant {
  readonly name: string;
  /** The operation under test, and the image it produces from `before`. */
  readonly run: (vol: Volume) => Promise<void>;
  readonly apply: (before: Buffer) => Buffer;
  /** The byte range it changes. */
  readonly range: readonly [number, number];
}

function writeVariant(name: string, at: number, len: number, fua: boolean): Variant {
  const data = pattern(at + len, len);
  return {
    name,
    run: (vol) => vol.write(at, data, { fua }),
    apply: (before) => {
      const out = Buffer.from(before);
      data.copy(out, at);
      return out;
    },
    range: [at, at + len],
  };
}

function zeroVariant(name: string, at: number, len: number, opts: { noHole?: boolean; fua?: boolean }, trim: boolean): Variant {
  return {
    name,
    run: (vol) => (trim ? vol.trim(at, len, opts) : vol.writeZeroes(at, len, opts)),
    apply: (before) => {
      const out = Buffer.from(before);
      out.fill(0, at, at + len);
      return out;
    },
    range: [at, at + len],
  };
}

const VARIANTS: Variant[] = [
  writeVariant('write within one grain', 3 * G + 100, 5000, false),
  writeVariant('FUA write', 5 * G + 4096, 8192, true),
  writeVariant('write across four grains', G + 777, 3 * G + 10, false),
  zeroVariant('trim', 2 * G + 512, 2 * G, {}, true),
  zeroVariant('write-zeroes (no hole, FUA)', 7 * G, G + 4096, { noHole: true, fua: true }, false),
];

/** The bytes outside [from, to) of two images are equal; inside it every grain is from one or the other. */
function assertOldOrNew(got: Buffer, old: Buffer, updated: Buffer, range: readonly [number, number], where: string): void {
  const [from, to] = range;
  assert.ok(got.subarray(0, from).equals(old.subarray(0, from)), `${where}: data before the failed range changed`);
  assert.ok(got.subarray(to).equals(old.subarray(to)), `${where}: data after the failed range changed`);
  for (let g = Math.floor(from / G) * G; g < to; g += G) {
    const a = Math.max(g, from);
    const b = Math.min(g + G, to);
    const part = got.subarray(a, b);
    assert.ok(part.equals(old.subarray(a, b)) || part.equals(updated.subarray(a, b)), `${where}: grain at ${g} is neither old nor new`);
  }
}

test('ENOSPC or EIO at each I/O step of the copy-on-write path: a clear error, nothing lost, retry succeeds', async () => {
  const seenSteps = new Map<string, { steps: number; ops: string[] }>();
  let poisoned = 0;
  for (const variant of VARIANTS) {
    for (const code of ['ENOSPC', 'EIO']) {
      for (let step = 1; ; step++) {
        const where = `${variant.name}, ${code} at step ${step}`;
        const t = tempDir('cowfault');
        const dir = path.join(t.dir, 'v');
        const faults = new Faults();
        const io = instrumentedIO(faults.hook);
        let vol = await Volume.create(dir, { size: SIZE, grainSize: G, io });
        try {
          await vol.write(0, pattern(1, SIZE));
          await vol.trim(9 * G, 2 * G); // some holes, so zero writes meet both data and holes
          await vol.createCheckpoint('a');
          await vol.settled(); // the spare store for the next cut is made in the background
          const image = await vol.read(0, SIZE);
          const updated = variant.apply(image);
          // Fail the step-th file operation the first post-checkpoint write makes.
          let n = 0;
          const ops: string[] = [];
          faults.fail((info: OpInfo) => {
            ops.push(`${info.kind}.${info.op}`);
            return ++n === step;
          }, code, 1);
          let failed: unknown = null;
          await variant.run(vol).catch((err: unknown) => (failed = err));
          faults.clear();
          if (failed === null) {
            // The operation has fewer file operations than `step`: every one of them was failed once.
            assert.ok((await vol.read(0, SIZE)).equals(updated), `${where}: the unfailed operation`);
            assert.ok((await vol.readCheckpoint('a', 0, SIZE)).equals(image), `${where}: checkpoint after the unfailed operation`);
            seenSteps.set(`${variant.name} ${code}`, { steps: step - 1, ops: ops.slice(0, step - 1) });
            break;
          }
          const wanted = code === 'ENOSPC' ? 'NO_SPACE' : 'IO';
          assert.ok(isEngineError(failed), `${where}: not an EngineError: ${String(failed)}`);
          assert.equal(failed.code, wanted, `${where}: ${failed.message}`);
          assert.ok(failed.message.includes(dir), `${where}: the error names the volume: ${failed.message}`);
          // Nothing lost: the checkpoint is exact, live data outside the failed range is untouched.
          assert.ok((await vol.readCheckpoint('a', 0, SIZE)).equals(image), `${where}: checkpoint a changed after the failure`);
          assertOldOrNew(await vol.read(0, SIZE), image, updated, variant.range, where);
          // Retry; a store whose fdatasync failed refuses further appends until the volume is reopened.
          const retry = await variant.run(vol).then(
            () => null,
            (err: unknown) => err,
          );
          if (retry !== null) {
            assert.ok(isEngineError(retry) && /reopen the volume/.test(retry.message), `${where}: retry failed unexpectedly: ${String(retry)}`);
            poisoned++;
            await vol.close();
            vol = await Volume.open(dir, { io });
            assert.ok((await vol.readCheckpoint('a', 0, SIZE)).equals(image), `${where}: checkpoint a after reopening`);
            await variant.run(vol);
          }
          assert.ok((await vol.read(0, SIZE)).equals(updated), `${where}: the retried operation`);
          await vol.close();
          vol = await Volume.open(dir, { io });
          assert.ok((await vol.readCheckpoint('a', 0, SIZE)).equals(image), `${where}: checkpoint a after close and reopen`);
          assert.ok((await vol.read(0, SIZE)).equals(updated), `${where}: live data after close and reopen`);
        } finally {
          await vol.close().catch(() => undefined);
          t.cleanup();
        }
      }
    }
  }
  // Every variant went through a store write, a store fdatasync and a base change.
  for (const [name, { steps, ops }] of seenSteps) {
    assert.ok(ops.includes('store.write') && ops.includes('store.datasync'), `${name}: steps ${ops.join(', ')}`);
    assert.ok(ops.some((o) => o.startsWith('base.') && o !== 'base.read' && o !== 'base.seek'), `${name}: steps ${ops.join(', ')}`);
    assert.ok(steps >= 3, `${name}: only ${steps} steps`);
  }
  assert.ok(poisoned > 0, 'a failed store fdatasync must have required a reopen at least once');
  const summary = [...seenSteps].map(([name, s]) => `${name}: ${s.ops.join(' → ')}`).join('\n  ');
  console.log(`copy-on-write faults: ${VARIANTS.length} operations × 2 codes, every step failed once:\n  ${summary}`);
});

test('a checkpoint store that cannot be extended (ENOSPC on every store write) fails writes cleanly; freeing space heals it', async () => {
  const t = tempDir('cowfull');
  const dir = path.join(t.dir, 'v');
  const faults = new Faults();
  const io = instrumentedIO(faults.hook);
  const vol = await Volume.create(dir, { size: SIZE, grainSize: G, io });
  try {
    await vol.write(0, fill(7, SIZE));
    await vol.createCheckpoint('a');
    await vol.settled();
    faults.fail((info) => info.kind === 'store' && info.op === 'write', 'ENOSPC');
    for (let g = 0; g < 4; g++) {
      await assert.rejects(vol.write(g * G, fill(8, G)), (err: unknown) => isEngineError(err, 'NO_SPACE'));
    }
    // Reads still work while the disk is full.
    assert.ok((await vol.read(0, SIZE)).equals(fill(7, SIZE)));
    faults.clear();
    await vol.write(0, fill(8, G));
    assert.ok((await vol.readCheckpoint('a', 0, SIZE)).equals(fill(7, SIZE)));
    assert.ok((await vol.read(0, G)).equals(fill(8, G)));
  } finally {
    await vol.close();
    t.cleanup();
  }
});
