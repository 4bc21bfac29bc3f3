/**
 * The copy-on-write data path: reads, writes, zeroes and flushes of the live volume.
 *
 * Design notes
 * - The base image holds the live data. After checkpoint Cn is cut, the first write to a grain
 *   copies the grain's old contents into Cn's store; later writes to it copy nothing. Only the
 *   newest checkpoint ever receives copies: an older one reads through its newer neighbours
 *   (images.ts).
 * - Order: the copy is durable (its store batch fdatasync'd) before the base is overwritten, so a
 *   crash at any point leaves every checkpoint byte-exact (docs/format.md §5).
 * - Concurrency: a write copies only grains the newest store lacks, under those grains' tokens
 *   (tokens.ts), so two writers never copy one grain twice and a checkpoint reader never sees the
 *   base change under it. The copy holds the read side of the gate and the overwrite the write
 *   side (see overwrite), so a cut does not wait for a copy's fdatasync and a stream of cuts
 *   cannot starve a write.
 * - Zeroing a grain that is a hole in the base changes nothing, so it copies nothing.
 * - Reads of the live volume go straight to the base image.
 */
import { fromSystemError } from './errors.js';
import { publish } from './events.js';
import type { Extent } from './extents.js';
import type { IoFile } from './file-io.js';
import { MAX_BATCH_ENTRIES } from './format.js';
import type { CheckpointStore } from './store.js';
import type { VolumeCore } from './volume-core.js';

export interface WriteOptions {
  /** Forced unit access: durable when the call returns. */
  readonly fua?: boolean;
}

export interface ZeroOptions extends WriteOptions {
  /** Keep the range allocated (NBD_CMD_FLAG_NO_HOLE). */
  readonly noHole?: boolean;
}

/** Reads `dest.length` bytes of the live volume at `offset`. */
export async function readInto(core: VolumeCore, dest: Buffer, offset: number): Promise<void> {
  core.checkRange(offset, dest.length, core.meta.size);
  await core.gate.enterRead();
  try {
    core.checkOpen();
    await core.base.read(dest, offset);
  } catch (err) {
    throw fromSystemError(err, `read ${core.dir}`);
  } finally {
    core.gate.leaveRead();
  }
}

export async function write(core: VolumeCore, offset: number, data: Buffer, opts: WriteOptions): Promise<void> {
  core.checkWritable();
  core.checkRange(offset, data.length, core.meta.size);
  if (data.length === 0) return;
  try {
    await overwrite(core, offset, data.length, 'data', () => (opts.fua ? (core.baseSync as IoFile) : core.base).write(data, offset));
  } catch (err) {
    throw fromSystemError(err, `write ${core.dir}`);
  }
}

/** Zeroes a range. Without `noHole` the range is deallocated (a hole). */
export async function writeZeroes(core: VolumeCore, offset: number, length: number, opts: ZeroOptions): Promise<void> {
  core.checkWritable();
  core.checkRange(offset, length, core.meta.size);
  if (length === 0) return;
  try {
    await overwrite(core, offset, length, 'zero', async () => {
      if (opts.noHole) await core.base.zeroRange(offset, length);
      else await core.base.punchHole(offset, length);
      if (opts.fua) await core.base.datasync();
    });
  } catch (err) {
    throw fromSystemError(err, `write zeroes ${core.dir}`);
  }
}

/**
 * Copies what the newest checkpoint still needs, then runs `change` on the base image.
 * First try: the copy holds only the read side of the gate (rollback and deletion wait for it;
 * cuts do not), so a cut does not wait for a copy's fdatasync; the change then holds the write
 * side and runs if the newest checkpoint has every grain it needs. If a cut came in during the
 * copy, the second try copies into the new checkpoint holding the write side (the cut that
 * follows waits for it), so a stream of cuts can never starve a write. Either way the write
 * lands after every cut whose checkpoint got a copy of its grains.
 */
async function overwrite(core: VolumeCore, offset: number, length: number, kind: 'data' | 'zero', change: () => Promise<void>): Promise<void> {
  await core.gate.enterRead();
  try {
    core.checkOpen();
    await copyOnWrite(core, offset, length, kind);
  } finally {
    core.gate.leaveRead();
  }
  await core.gate.enterWrite();
  try {
    core.checkOpen();
    await copyOnWrite(core, offset, length, kind); // nothing to do unless a cut came in meanwhile
    await change();
  } finally {
    core.gate.leaveWrite();
  }
}

/** Zeroes a range through copy-on-write, with I/O quiesced by the caller (rollback). */
export async function zeroRange(core: VolumeCore, offset: number, length: number, keepAllocated: boolean): Promise<void> {
  await copyOnWrite(core, offset, length, 'zero');
  if (keepAllocated) await core.base.zeroRange(offset, length);
  else await core.base.punchHole(offset, length);
}

/** Makes every completed write durable. Concurrent callers share one fdatasync where safe. */
export async function flush(core: VolumeCore): Promise<void> {
  core.checkOpen();
  if (core.readOnly) return;
  // A caller must wait for an fdatasync that starts after it arrived.
  if (core.flushing) {
    core.flushAgain ??= core.flushing
      .catch(() => undefined)
      .then(() => {
        core.flushAgain = null;
        return flush(core);
      });
    return core.flushAgain;
  }
  core.flushing = core.base.datasync().finally(() => {
    core.flushing = null;
  });
  try {
    await core.flushing;
  } catch (err) {
    throw fromSystemError(err, `flush ${core.dir}`);
  }
}

/**
 * Copies into the newest checkpoint every grain of the range that it lacks, before the caller
 * overwrites the base there. For 'zero' writes, grains that are holes in the base are skipped:
 * zeroing them changes nothing.
 */
export async function copyOnWrite(core: VolumeCore, offset: number, length: number, kind: 'data' | 'zero'): Promise<void> {
  const newest = core.layers.at(-1);
  if (!newest) return;
  const candidates = await uncopied(core, offset, length, kind);
  if (candidates.length === 0) return;
  await core.tokens.acquire(candidates, () => publish({ type: 'token-wait', dir: core.dir, grains: candidates.length }));
  try {
    const needed = candidates.filter((g) => !newest.store.has(g));
    if (needed.length > 0) await copyGrains(core, newest.store, needed);
  } finally {
    core.tokens.release(candidates);
  }
}

/**
 * Grains of the range (ascending) that the newest checkpoint covers but has not copied yet. For
 * 'zero' changes, grains that are holes in the base are left out: zeroing them changes nothing.
 */
async function uncopied(core: VolumeCore, offset: number, length: number, kind: 'data' | 'zero'): Promise<number[]> {
  const newest = core.layers.at(-1);
  if (!newest) return [];
  const G = core.grainSize;
  const lastCovered = Math.ceil(newest.rec.size / G) - 1;
  const grains: number[] = [];
  const consider = (from: number, to: number): void => {
    const first = Math.floor(from / G);
    const last = Math.min(Math.floor((to - 1) / G), lastCovered);
    for (let g = first; g <= last; g++) {
      if (!newest.store.has(g) && grains.at(-1) !== g) grains.push(g);
    }
  };
  if (kind === 'data') consider(offset, offset + length);
  else for (const e of await baseDataExtents(core, offset, offset + length)) consider(e.offset, e.offset + e.length);
  return grains;
}

/** Reads grains (ascending) from the base and appends them to a store, durably. */
async function copyGrains(core: VolumeCore, store: CheckpointStore, grains: readonly number[]): Promise<void> {
  const G = core.grainSize;
  const items: Array<{ grain: number; data: Buffer | null }> = [];
  for (let i = 0; i < grains.length; ) {
    let j = i + 1;
    while (j < grains.length && (grains[j] as number) === (grains[j - 1] as number) + 1 && j - i < MAX_BATCH_ENTRIES) j++;
    const first = grains[i] as number;
    const run = Buffer.allocUnsafe((j - i) * G);
    await core.base.read(run, first * G);
    for (let k = 0; k < j - i; k++) {
      const data = run.subarray(k * G, (k + 1) * G);
      items.push({ grain: first + k, data: data.equals(core.zeroGrain) ? null : data });
    }
    i = j;
  }
  await store.append(items);
  core.shared?.copied(store, grains); // durable now: worker threads may overwrite these grains
  core.counters.grainsCopied += grains.length;
  publish({ type: 'copy', dir: core.dir, grains: grains.length, bytes: grains.length * G });
}

/** Data ranges of the base image within [from, to), per SEEK_DATA/SEEK_HOLE. */
export async function baseDataExtents(core: VolumeCore, from: number, to: number): Promise<Extent[]> {
  const out: Extent[] = [];
  let at = from;
  while (at < to) {
    const data = await core.base.seek(at, 'data');
    if (data < 0 || data >= to) break;
    let hole = await core.base.seek(data, 'hole');
    if (hole < 0 || hole > to) hole = to;
    out.push({ offset: data, length: hole - data });
    at = hole;
  }
  return out;
}
