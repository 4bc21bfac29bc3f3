/**
 * What the NBD server serves: an export, nbdkit-callback style. The server knows nothing about
 * storage; anything that implements NbdExport can be served (the in-memory export for tests, the
 * engine's volumes and checkpoints through a thin adapter).
 *
 * Contract, for implementers:
 * - Every range passed in has already been validated by the server: 0 ≤ offset, offset + length ≤
 *   the size the connection saw at negotiation, aligned to `blockSize.minimum`, and length ≤ the
 *   maximum payload for read/write. Implementations may still throw on their own checks.
 * - Methods may run concurrently, also for overlapping ranges (replies may be out of order). An
 *   implementation must make each call atomic with respect to the others, or at least never
 *   return torn data for a single read.
 * - Durability: when a write-like call (write, writeZeroes, trim) resolves, its effect is
 *   visible to every later read on every connection. `flush()` must make every write-like call
 *   that has already resolved durable. With `fua = true` the call must be durable before it
 *   resolves. (The server replies to a command only after its call resolved, so this gives the
 *   NBD FLUSH/FUA semantics; see PROTOCOL.md.)
 * - Errors: throw (reject with) an Error carrying a stable string `code` from ExportErrorCode
 *   (the engine's EngineError codes use the same strings). errno.ts maps codes to NBD errnos in
 *   one place; an error without a known code becomes EIO. A thrown error fails that one request;
 *   the connection carries on.
 */
import { FlashcsiError } from '../errors.js';

/** Block size constraints advertised in NBD_INFO_BLOCK_SIZE. All powers of two. */
export interface BlockSizeConstraints {
  /** Smallest alignment for offsets and lengths, 1…65536. Misaligned requests get EINVAL. */
  readonly minimum: number;
  /** Preferred I/O size, ≥ max(minimum, 512). */
  readonly preferred: number;
  /** Largest READ/WRITE payload, ≥ preferred. Capped by the server at 32 MiB. */
  readonly maximum: number;
}

/** One block-status extent, as reported by an export (base:allocation). */
export interface Extent {
  /** Length in bytes, > 0. */
  readonly length: number;
  /** Unallocated: writes there might fail with ENOSPC. */
  readonly hole: boolean;
  /** Reads as zeroes. */
  readonly zero: boolean;
}

/** Options of writeZeroes, straight from the NBD command flags. */
export interface WriteZeroesOptions {
  /** Persist before resolving. */
  readonly fua: boolean;
  /** Keep the range allocated (do not punch a hole). */
  readonly noHole: boolean;
  /**
   * The client wants the call to fail fast with code NOT_SUPPORTED rather than fall back to
   * writing zeroes slowly. The server already answers ENOTSUP when `NbdExport.fastZero` is false.
   */
  readonly fastZero: boolean;
}

/** An exported block device. */
export interface NbdExport {
  /** Export name; "" is the default export. */
  readonly name: string;
  /** Human-readable description (NBD_INFO_DESCRIPTION, NBD_OPT_LIST). */
  readonly description?: string;
  /**
   * Current size in bytes (an integer ≤ 2^53). Read once per connection at negotiation, so a
   * size that grows (volume expansion) is seen by the next connection.
   */
  size(): number;
  /** Read-only exports advertise NBD_FLAG_READ_ONLY; writes get EPERM without calling in. */
  readonly readOnly: boolean;
  /**
   * Whether writeZeroes is cheap (no data written, e.g. a metadata update). When false the server
   * answers WRITE_ZEROES with FAST_ZERO by ENOTSUP without calling writeZeroes.
   */
  readonly fastZero: boolean;
  /**
   * May several connections use this export at once (NBD_FLAG_CAN_MULTI_CONN)? True when all
   * connections share one cache and backend, which holds for anything served by one process.
   * Default true.
   */
  readonly multiConn?: boolean;
  /** Block size constraints; default { minimum 1, preferred 4096, maximum 32 MiB }. */
  readonly blockSize?: BlockSizeConstraints;

  /**
   * Read `length` bytes at `offset`. `into` is a buffer of exactly `length` bytes provided by the
   * server (carved from its reply buffer, so filling it saves a copy): fill it and return it, or
   * return another buffer of exactly `length` bytes. Either way the returned buffer is owned by
   * the server from then on: the export must not touch it afterwards (no views into live storage).
   */
  read(offset: number, length: number, into: Buffer): Promise<Buffer>;
  /**
   * Write `data` at `offset`. `data` is only valid until the returned promise settles: it may be
   * a view into a network buffer, or a pooled buffer the server reuses for the next WRITE right
   * after. Copy it if you keep it (e.g. in a cache) beyond that.
   */
  write(offset: number, data: Buffer, fua: boolean): Promise<void>;
  /** Make `length` bytes at `offset` read as zeroes. */
  writeZeroes(offset: number, length: number, opts: WriteZeroesOptions): Promise<void>;
  /** Discard hint; afterwards the range should read as zeroes (flashcsi's choice). */
  trim(offset: number, length: number, fua: boolean): Promise<void>;
  /** Make every write-like call that has already resolved durable. */
  flush(): Promise<void>;
  /** Prefetch hint (NBD_CMD_CACHE). Optional; without it CACHE succeeds as a no-op. */
  cache?(offset: number, length: number): Promise<void>;
  /**
   * Allocation status of [offset, offset+length): consecutive extents starting at `offset`,
   * covering at least one byte. The server clips and merges them. Must be conservative: report
   * hole/zero only where that is certain; `{hole: false, zero: false}` is always correct.
   */
  blockStatus(offset: number, length: number): Promise<Extent[]>;
}

/**
 * The set of exports a server offers. Called at negotiation time, so the set may change while
 * serving (checkpoints appear and disappear); established connections keep their export object.
 */
export interface ExportProvider {
  /** Exports listed by NBD_OPT_LIST (may omit hidden ones). */
  list(): Iterable<NbdExport>;
  /** The export of that name ("" = default), or undefined if there is none. */
  get(name: string): NbdExport | undefined;
}

/**
 * Builds block-status extents for [offset, offset+length) from the data ranges of a storage
 * layer (absolute offsets, sorted, non-overlapping — e.g. what an allocation map returns):
 * overlaps are data, gaps are hole+zero. Handy for adapters whose storage reports "where is
 * data" rather than NBD extents.
 */
export function extentsFromDataRanges(offset: number, length: number, ranges: Iterable<{ readonly offset: number; readonly length: number }>): Extent[] {
  const end = offset + length;
  const out: Extent[] = [];
  let pos = offset;
  const push = (len: number, data: boolean): void => {
    if (len <= 0) return;
    const last = out[out.length - 1];
    if (last !== undefined && last.hole === !data) out[out.length - 1] = { length: last.length + len, hole: !data, zero: !data };
    else out.push({ length: len, hole: !data, zero: !data });
  };
  for (const r of ranges) {
    const rs = Math.max(r.offset, pos);
    const re = Math.min(r.offset + r.length, end);
    if (re <= rs) {
      if (r.offset >= end) break;
      continue;
    }
    push(rs - pos, false);
    push(re - rs, true);
    pos = re;
  }
  push(end - pos, false);
  return out;
}

/** Stable error codes an export may throw (the engine's EngineError uses the same strings). */
export const ExportErrorCode = {
  NoSpace: 'NO_SPACE',
  ReadOnly: 'READ_ONLY',
  OutOfRange: 'OUT_OF_RANGE',
  InvalidArgument: 'INVALID_ARGUMENT',
  Io: 'IO',
  Corrupt: 'CORRUPT',
  NotSupported: 'NOT_SUPPORTED',
  Closed: 'CLOSED',
  CheckpointNotFound: 'CHECKPOINT_NOT_FOUND',
  VolumeNotFound: 'VOLUME_NOT_FOUND',
} as const;
export type ExportErrorCode = (typeof ExportErrorCode)[keyof typeof ExportErrorCode];

/** An error an export throws on purpose. Anything with a string `code` works just as well. */
export class ExportError extends FlashcsiError<ExportErrorCode> {}

/** A provider over a mutable map of exports. Handy for tests and for the node plugin. */
export class MapExportProvider implements ExportProvider {
  private readonly exports = new Map<string, NbdExport>();

  constructor(exports: Iterable<NbdExport> = []) {
    for (const e of exports) this.add(e);
  }

  /** Adds or replaces the export of that name. */
  add(exp: NbdExport): void {
    this.exports.set(exp.name, exp);
  }

  /** Removes the export; existing connections keep using it. */
  remove(name: string): boolean {
    return this.exports.delete(name);
  }

  list(): Iterable<NbdExport> {
    return this.exports.values();
  }

  get(name: string): NbdExport | undefined {
    return this.exports.get(name);
  }
}
