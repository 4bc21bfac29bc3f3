/**
 * Bump allocator for reply buffers. Every small READ reply needs a fresh buffer (the socket keeps
 * a reference until it is written), and allocating one ArrayBuffer per 4 KiB reply makes V8 run
 * a scavenge for "external memory pressure" every few hundred requests. Carving replies out of a
 * 2 MiB slab turns that into one ArrayBuffer per slab; a slab is freed by the GC once every view
 * into it is gone. Nothing is ever reused while referenced, so this is safe with zero-copy
 * writes. Large buffers get their own allocation.
 */

export class Slab {
  private slab: Buffer;
  private used = 0;

  constructor(
    private readonly slabSize = 2 * 1024 * 1024,
    /** Requests larger than this get a dedicated buffer. */
    private readonly maxCarve = 128 * 1024,
  ) {
    this.slab = Buffer.allocUnsafeSlow(slabSize);
  }

  /** An uninitialised buffer of `n` bytes; the caller must overwrite every byte it sends. */
  alloc(n: number): Buffer {
    if (n > this.maxCarve) return Buffer.allocUnsafeSlow(n);
    if (this.used + n > this.slabSize) {
      this.slab = Buffer.allocUnsafeSlow(this.slabSize);
      this.used = 0;
    }
    const out = this.slab.subarray(this.used, this.used + n);
    // Keep views 8-byte aligned (cheap, and friendly to typed-array views over them).
    this.used += (n + 7) & ~7;
    return out;
  }
}

/**
 * Reuse of large buffers (≥ `minSize`): READ replies and WRITE payloads of hundreds of KiB up to
 * 32 MiB. A fresh allocation of that size is an mmap whose every page faults on first touch
 * (256 faults per MiB) and adds V8 external-memory pressure; sequential 1 MiB I/O would pay that
 * on every request. Buffers go back to the pool only through `release()`, and only when the
 * caller knows nobody references them any more: after the socket write callback for replies,
 * after the export call settled for WRITE payloads (the NbdExport contract says `data` is only
 * valid until then). Anything not released is simply garbage-collected.
 */
export class BufferPool {
  /** Free backing stores by size (a multiple of `granule`). */
  private readonly free = new Map<number, ArrayBuffer[]>();
  /** Buffers handed out and not yet released: guards against foreign or double releases. */
  private readonly out = new WeakSet<Buffer>();
  private pooledBytes = 0;

  constructor(
    readonly minSize = 128 * 1024,
    /** Most bytes kept in free lists. */
    private readonly maxPooledBytes = 64 * 1024 * 1024,
    private readonly granule = 64 * 1024,
  ) {}

  /** Bytes currently held in free lists. */
  get pooled(): number {
    return this.pooledBytes;
  }

  /** An uninitialised buffer of exactly `n` bytes (n ≥ minSize), recycled when possible. */
  acquire(n: number): Buffer {
    const size = Math.ceil(n / this.granule) * this.granule;
    const list = this.free.get(size);
    let ab = list?.pop();
    if (ab !== undefined) this.pooledBytes -= size;
    else ab = new ArrayBuffer(size);
    const b = Buffer.from(ab, 0, n);
    this.out.add(b);
    return b;
  }

  /** Returns a buffer obtained from acquire(); ignores anything else. */
  release(b: Buffer): void {
    if (!this.out.delete(b)) return;
    const ab = b.buffer;
    if (!(ab instanceof ArrayBuffer)) return;
    const size = ab.byteLength;
    if (this.pooledBytes + size > this.maxPooledBytes) return;
    let list = this.free.get(size);
    if (list === undefined) {
      list = [];
      this.free.set(size, list);
    }
    list.push(ab);
    this.pooledBytes += size;
  }
}
