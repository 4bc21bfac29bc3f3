/** Byte ranges: sorted, non-overlapping, non-empty. */
export interface Extent {
  readonly offset: number;
  readonly length: number;
}

/** Sorts and merges touching or overlapping ranges. */
export function normalize(extents: Iterable<Extent>): Extent[] {
  const sorted = [...extents].filter((e) => e.length > 0).sort((a, b) => a.offset - b.offset);
  const out: Extent[] = [];
  for (const e of sorted) {
    const prev = out.at(-1);
    if (prev && e.offset <= prev.offset + prev.length) {
      const end = Math.max(prev.offset + prev.length, e.offset + e.length);
      out[out.length - 1] = { offset: prev.offset, length: end - prev.offset };
    } else {
      out.push(e);
    }
  }
  return out;
}

/** Ranges covered by whole grains, from a set of grain numbers; clipped to `limit` bytes. */
export function grainExtents(grains: Iterable<number>, grainSize: number, limit: number): Extent[] {
  const sorted = [...grains].sort((a, b) => a - b);
  const out: Extent[] = [];
  for (const g of sorted) {
    const offset = g * grainSize;
    if (offset >= limit) break;
    const end = Math.min(offset + grainSize, limit);
    const prev = out.at(-1);
    if (prev && prev.offset + prev.length === offset) out[out.length - 1] = { offset: prev.offset, length: end - prev.offset };
    else out.push({ offset, length: end - offset });
  }
  return out;
}

/** `a` minus `b`; both normalized. */
export function subtract(a: readonly Extent[], b: readonly Extent[]): Extent[] {
  const out: Extent[] = [];
  let j = 0;
  for (const e of a) {
    let start = e.offset;
    const end = e.offset + e.length;
    while (j < b.length && (b[j] as Extent).offset + (b[j] as Extent).length <= start) j++;
    for (let k = j; k < b.length && (b[k] as Extent).offset < end; k++) {
      const cut = b[k] as Extent;
      if (cut.offset > start) out.push({ offset: start, length: cut.offset - start });
      start = Math.max(start, cut.offset + cut.length);
    }
    if (start < end) out.push({ offset: start, length: end - start });
  }
  return out;
}

/** Restricts normalized extents to [0, limit). */
export function clip(extents: readonly Extent[], limit: number): Extent[] {
  const out: Extent[] = [];
  for (const e of extents) {
    if (e.offset >= limit) break;
    out.push({ offset: e.offset, length: Math.min(e.length, limit - e.offset) });
  }
  return out;
}
