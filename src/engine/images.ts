/**
 * Checkpoint images and allocation maps: reading the past, and saying where data is.
 *
 * Design notes
 * - Reading checkpoint Ci at grain g looks in Ci, Ci+1, …, Cn and finally the base: the first
 *   store holding g has Ci's content, because g did not change between Ci and the checkpoint whose
 *   store holds it (docs/format.md §6.1). A store may hold a grain as "zero" with no data.
 * - A checkpoint reader takes the tokens of the grains it would read from the base, so a
 *   concurrent first write cannot copy and overwrite them between the lookup and the read; after
 *   taking them it looks again, since a write may have copied a grain meanwhile.
 * - allocated() is conservative (a range is left out only where no layer holds data) and costs
 *   O(extents + copied grains), or O(grains in the range) if that is fewer. changed() costs
 *   O(changed grains): the grains copied after `from` was cut are exactly the ones that changed.
 */
import { baseDataExtents, readInto } from './cow.js';
import { fromSystemError } from './errors.js';
import { publish } from './events.js';
import { clip, grainExtents, normalize, subtract, type Extent } from './extents.js';
import { invalid, type VolumeCore } from './volume-core.js';

/**
 * Reads a checkpoint's point-in-time image. Safe at any moment, while the volume is written:
 * grains still in the base are read under their tokens, so a concurrent first write cannot
 * overwrite them between the lookup and the read.
 */
export async function readCheckpointInto(core: VolumeCore, name: string, dest: Buffer, offset: number): Promise<void> {
  await core.gate.enterRead();
  try {
    core.checkOpen();
    const i = core.layerIndex(name);
    core.checkRange(offset, dest.length, core.layerAt(i).rec.size);
    const G = core.grainSize;
    const fromBase: Array<{ grain: number; at: number; within: number; length: number }> = [];
    const reads: Promise<void>[] = [];
    for (let at = 0; at < dest.length; ) {
      const abs = offset + at;
      const grain = Math.floor(abs / G);
      const within = abs - grain * G;
      const n = Math.min(G - within, dest.length - at);
      const holder = core.holder(i, grain);
      if (holder) reads.push(holder.store.read(grain, within, dest.subarray(at, at + n)));
      else fromBase.push({ grain, at, within, length: n });
      at += n;
    }
    await Promise.all(reads);
    if (fromBase.length === 0) return;
    const grains = fromBase.map((s) => s.grain);
    await core.tokens.acquire(grains, () => publish({ type: 'token-wait', dir: core.dir, grains: grains.length }));
    try {
      const later: Promise<void>[] = [];
      let run: { at: number; length: number } | null = null;
      const flushRun = (): void => {
        if (run) later.push(core.base.read(dest.subarray(run.at, run.at + run.length), offset + run.at));
        run = null;
      };
      for (const s of fromBase) {
        const holder = core.holder(i, s.grain); // a write may have copied it meanwhile
        if (holder) {
          flushRun();
          later.push(holder.store.read(s.grain, s.within, dest.subarray(s.at, s.at + s.length)));
        } else if (run && run.at + run.length === s.at) {
          run.length += s.length;
        } else {
          flushRun();
          run = { at: s.at, length: s.length };
        }
      }
      flushRun();
      await Promise.all(later);
    } finally {
      core.tokens.release(grains);
    }
  } catch (err) {
    throw fromSystemError(err, `read checkpoint ${name} of ${core.dir}`);
  } finally {
    core.gate.leaveRead();
  }
}

/**
 * Ranges that may hold data in the live volume (name omitted) or in a checkpoint's image, within
 * [from, to) (default: the whole image). Conservative: a range is left out only where no layer
 * holds data for it. Costs O(extents + copied grains), or O(grains in the range) if fewer.
 */
export async function allocated(core: VolumeCore, name: string | undefined, from: number, to: number): Promise<Extent[]> {
  await core.gate.enterRead();
  try {
    core.checkOpen();
    if (name === undefined) return normalize(await baseDataExtents(core, from, Math.min(to, core.meta.size)));
    const i = core.layerIndex(name);
    const size = core.layerAt(i).rec.size;
    const end = Math.min(to, size);
    if (from >= end) return [];
    const G = core.grainSize;
    const first = Math.floor(from / G);
    const last = Math.ceil(end / G) - 1;
    // Which grains of the range a store answers for, and whether with data.
    const resolved = new Map<number, boolean>();
    const stored = core.layers.slice(i).reduce((n, l) => n + l.store.count, 0);
    if (last - first + 1 <= stored) {
      for (let g = first; g <= last; g++) {
        const holder = core.holder(i, g);
        if (holder) resolved.set(g, holder.store.hasData(g));
      }
    } else {
      for (let k = i; k < core.layers.length; k++) {
        const store = core.layerAt(k).store;
        for (const g of store.grains()) if (g >= first && g <= last && !resolved.has(g)) resolved.set(g, store.hasData(g));
      }
    }
    const inRange = (extents: Extent[]): Extent[] =>
      extents
        .map((e) => ({ offset: Math.max(e.offset, from), length: Math.min(e.offset + e.length, end) - Math.max(e.offset, from) }))
        .filter((e) => e.length > 0);
    const overlay = grainExtents(resolved.keys(), G, size);
    const dataGrains = [...resolved].filter(([, hasData]) => hasData).map(([g]) => g);
    const fromBase = subtract(normalize(await baseDataExtents(core, from, Math.min(end, core.meta.size))), overlay);
    return normalize(inRange([...fromBase, ...grainExtents(dataGrains, G, size)]));
  } finally {
    core.gate.leaveRead();
  }
}

/**
 * Ranges that changed between checkpoint `from` and checkpoint `to` (or the live volume when
 * `to` is omitted): the grains copied after `from` was cut and before `to` was. O(changed grains).
 */
export function changed(core: VolumeCore, from: string, to?: string): Extent[] {
  core.checkOpen();
  const a = core.layerIndex(from);
  const b = to === undefined ? core.layers.length : core.layerIndex(to);
  if (b < a) throw invalid(`checkpoint ${to} is older than ${from}`);
  const limit = to === undefined ? core.meta.size : core.layerAt(b).rec.size;
  const grains = new Set<number>();
  for (let k = a; k < b; k++) for (const g of core.layerAt(k).store.grains()) grains.add(g);
  return clip(grainExtents(grains, core.grainSize, limit), limit);
}

/** Feeds the allocated ranges of an image (live when name is null) to `sink`, in chunks. */
export async function copyImage(core: VolumeCore, name: string | null, sink: (buf: Buffer, offset: number) => Promise<void>, chunk: number): Promise<void> {
  const extents = await allocated(core, name ?? undefined, 0, Number.POSITIVE_INFINITY);
  for (const e of extents) {
    for (let at = e.offset; at < e.offset + e.length; at += chunk) {
      const n = Math.min(chunk, e.offset + e.length - at);
      const buf = Buffer.alloc(n);
      if (name === null) await readInto(core, buf, at);
      else await readCheckpointInto(core, name, buf, at);
      if (!core.isZero(buf)) await sink(buf, at);
    }
  }
}
