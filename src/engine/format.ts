/**
 * On-disk layouts of a flashcsi volume, encoded and decoded in one place.
 * docs/format.md is the normative description; every byte offset below matches its tables.
 * All integers are big-endian. Decoders never trust a length before checking it against the
 * buffer, and every failure is an EngineError(CORRUPT) naming the file and the field.
 */
import { crc32 } from 'node:zlib';
import { EngineError, ErrorCode } from './errors.js';

export const META_MAGIC = Buffer.from('FLCSIVOL', 'latin1');
export const STORE_MAGIC = Buffer.from('FLCSISTR', 'latin1');
export const BATCH_MAGIC = 0x46424154; // "FBAT"
export const FORMAT_VERSION = 1;
export const META_HEADER_LENGTH = 128;
export const STORE_HEADER_LENGTH = 4096;
export const BATCH_HEADER_LENGTH = 4096;
const BATCH_ENTRY_OFFSET = 32;
const BATCH_ENTRY_LENGTH = 16;
/** Entries one batch header can describe. */
export const MAX_BATCH_ENTRIES = (BATCH_HEADER_LENGTH - BATCH_ENTRY_OFFSET) / BATCH_ENTRY_LENGTH;

export const MIN_GRAIN_SHIFT = 12; // 4 KiB
export const MAX_GRAIN_SHIFT = 20; // 1 MiB
export const MAX_NAME_BYTES = 255;

/** Feature bits this implementation knows. None are defined yet in version 1. */
export const KNOWN_INCOMPATIBLE_FEATURES = 0n;

/** volume.meta header flag: the volume was opened for writing and not closed cleanly. */
export const META_FLAG_DIRTY = 1n;

/** Section types in volume.meta. Bit 31 set means "must understand": unknown ones refuse the open. */
const Section = {
  End: 0,
  Checkpoints: 1,
  Transaction: 2,
  TxHistory: 3,
  Deferred: 4,
  Pending: 5,
  StoreLengths: 6,
} as const;
const MUST_UNDERSTAND = 0x80000000;

export const CheckpointFlag = {
  /** Cut by a transaction's begin() or a clone; hidden from user listings by default. */
  Internal: 1,
} as const;

export interface CheckpointRecord {
  readonly id: number;
  readonly name: string;
  /** Volume size when cut; the checkpoint image has exactly this many bytes. */
  readonly size: number;
  readonly createdNs: bigint;
  readonly flags: number;
}

export const TxState = { Open: 1, Prepared: 2, Committing: 3, Aborting: 4 } as const;
export type TxState = (typeof TxState)[keyof typeof TxState];

export interface TxRecord {
  readonly txid: string;
  readonly state: TxState;
  readonly checkpointId: number;
}

export const TxOutcome = { Committed: 1, Aborted: 2 } as const;
export type TxOutcome = (typeof TxOutcome)[keyof typeof TxOutcome];

export interface TxHistoryRecord {
  readonly txid: string;
  readonly outcome: TxOutcome;
}

export interface DeferredRecord {
  readonly name: string;
  readonly requestedNs: bigint;
}

export const PendingKind = { Rollback: 1, Delete: 2 } as const;
export type PendingKind = (typeof PendingKind)[keyof typeof PendingKind];

export interface PendingOp {
  readonly kind: PendingKind;
  readonly checkpointId: number;
}

export interface VolumeMeta {
  readonly size: number;
  readonly grainShift: number;
  readonly dirty: boolean;
  readonly generation: bigint;
  readonly nextCheckpointId: number;
  /** Oldest first. */
  readonly checkpoints: readonly CheckpointRecord[];
  readonly tx: TxRecord | null;
  /** Outcomes of recent transactions, newest last, so retried commit/abort calls stay idempotent. */
  readonly history: readonly TxHistoryRecord[];
  /** Checkpoints requested while a transaction was open; cut when it completes. */
  readonly deferred: readonly DeferredRecord[];
  readonly pending: PendingOp | null;
  /**
   * Bytes of valid batches each checkpoint's store held when this metadata was written (by id).
   * Stores only grow, so these are lower bounds: a store found shorter lost durable batches.
   */
  readonly storeLengths?: ReadonlyMap<number, number>;
}

export const TX_HISTORY_LIMIT = 32;

function corrupt(file: string, what: string): EngineError {
  return new EngineError(ErrorCode.Corrupt, `${file}: corrupt metadata (${what})`);
}

/** A damaged checkpoint store: refused, never served. */
export function corruptStore(file: string, what: string): EngineError {
  return new EngineError(ErrorCode.Corrupt, `${file}: corrupt checkpoint store (${what})`);
}

function pad8(n: number): number {
  return (n + 7) & ~7;
}

/** A growable big-endian writer. */
class Writer {
  private buf = Buffer.alloc(4096);
  length = 0;
  private ensure(n: number): void {
    if (this.length + n <= this.buf.length) return;
    const next = Buffer.alloc(Math.max(this.buf.length * 2, this.length + n));
    this.buf.copy(next, 0, 0, this.length);
    this.buf = next;
  }
  u16(v: number): void {
    this.ensure(2);
    this.buf.writeUInt16BE(v, this.length);
    this.length += 2;
  }
  u32(v: number): void {
    this.ensure(4);
    this.buf.writeUInt32BE(v >>> 0, this.length);
    this.length += 4;
  }
  u64(v: number | bigint): void {
    this.ensure(8);
    this.buf.writeBigUInt64BE(BigInt(v), this.length);
    this.length += 8;
  }
  bytes(b: Buffer): void {
    this.ensure(b.length);
    b.copy(this.buf, this.length);
    this.length += b.length;
  }
  zeros(n: number): void {
    this.ensure(n);
    this.buf.fill(0, this.length, this.length + n);
    this.length += n;
  }
  /** Pads with zeros to a multiple of 8 bytes. */
  align8(): void {
    this.zeros(pad8(this.length) - this.length);
  }
  patchU32(at: number, v: number): void {
    this.buf.writeUInt32BE(v >>> 0, at);
  }
  result(): Buffer {
    return this.buf.subarray(0, this.length);
  }
}

/** A bounds-checked big-endian reader. */
class Reader {
  constructor(private readonly buf: Buffer, public pos: number, private readonly end: number, private readonly file: string) {}
  private need(n: number, what: string): void {
    if (this.pos + n > this.end) throw corrupt(this.file, `${what} runs past the end`);
  }
  u16(what: string): number {
    this.need(2, what);
    const v = this.buf.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }
  u32(what: string): number {
    this.need(4, what);
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  u64(what: string): bigint {
    this.need(8, what);
    const v = this.buf.readBigUInt64BE(this.pos);
    this.pos += 8;
    return v;
  }
  /** A u64 that must fit a JS number exactly. */
  num(what: string): number {
    const v = this.u64(what);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw corrupt(this.file, `${what} too large`);
    return Number(v);
  }
  text(len: number, what: string): string {
    this.need(len, what);
    const s = this.buf.toString('utf8', this.pos, this.pos + len);
    this.pos += len;
    return s;
  }
  skip(n: number, what: string): void {
    this.need(n, what);
    this.pos += n;
  }
  align8(what: string): void {
    this.skip(pad8(this.pos) - this.pos, what);
  }
}

function nameBytes(name: string): Buffer {
  const b = Buffer.from(name, 'utf8');
  if (b.length === 0 || b.length > MAX_NAME_BYTES) throw new EngineError(ErrorCode.InvalidArgument, `name "${name}" must be 1-${MAX_NAME_BYTES} bytes`);
  return b;
}

function section(w: Writer, type: number, body: (w: Writer) => void): void {
  w.u32(type);
  const lenAt = w.length;
  w.u32(0);
  const start = w.length;
  body(w);
  w.align8();
  w.patchU32(lenAt, w.length - start);
}

export function encodeMeta(meta: VolumeMeta): Buffer {
  const w = new Writer();
  w.bytes(META_MAGIC);
  w.u32(FORMAT_VERSION);
  w.u32(META_HEADER_LENGTH);
  w.u64(0n); // incompatible features
  w.u64(0n); // compatible features
  w.u64(0n); // autoclear features
  w.u64(meta.dirty ? META_FLAG_DIRTY : 0n);
  w.u64(meta.generation);
  w.u64(meta.size);
  w.u32(meta.grainShift);
  w.u32(0);
  w.u64(meta.nextCheckpointId);
  const fileLengthAt = w.length;
  w.u64(0); // file length, patched below
  w.zeros(META_HEADER_LENGTH - w.length);

  section(w, Section.Checkpoints | MUST_UNDERSTAND, (s) => {
    s.u32(meta.checkpoints.length);
    s.u32(0);
    for (const cp of meta.checkpoints) {
      const name = nameBytes(cp.name);
      s.u64(cp.id);
      s.u64(cp.size);
      s.u64(cp.createdNs);
      s.u32(cp.flags);
      s.u16(name.length);
      s.u16(0);
      s.bytes(name);
      s.align8();
    }
  });
  if (meta.tx) {
    const tx = meta.tx;
    section(w, Section.Transaction | MUST_UNDERSTAND, (s) => {
      const id = nameBytes(tx.txid);
      s.u32(tx.state);
      s.u16(id.length);
      s.u16(0);
      s.u64(tx.checkpointId);
      s.bytes(id);
    });
  }
  if (meta.history.length > 0) {
    section(w, Section.TxHistory, (s) => {
      s.u32(meta.history.length);
      s.u32(0);
      for (const h of meta.history) {
        const id = nameBytes(h.txid);
        s.u32(h.outcome);
        s.u16(id.length);
        s.u16(0);
        s.bytes(id);
        s.align8();
      }
    });
  }
  if (meta.deferred.length > 0) {
    section(w, Section.Deferred | MUST_UNDERSTAND, (s) => {
      s.u32(meta.deferred.length);
      s.u32(0);
      for (const d of meta.deferred) {
        const name = nameBytes(d.name);
        s.u64(d.requestedNs);
        s.u16(name.length);
        s.zeros(6);
        s.bytes(name);
        s.align8();
      }
    });
  }
  if (meta.pending) {
    const p = meta.pending;
    section(w, Section.Pending | MUST_UNDERSTAND, (s) => {
      s.u32(p.kind);
      s.u32(0);
      s.u64(p.checkpointId);
    });
  }
  const lengths = meta.storeLengths;
  if (lengths !== undefined && lengths.size > 0) {
    section(w, Section.StoreLengths, (s) => {
      s.u32(lengths.size);
      s.u32(0);
      for (const [id, length] of lengths) {
        s.u64(id);
        s.u64(length);
      }
    });
  }
  section(w, Section.End, () => undefined);
  const total = w.length + 8;
  const out = Buffer.alloc(total);
  w.result().copy(out);
  out.writeBigUInt64BE(BigInt(total), fileLengthAt);
  out.writeUInt32BE(crc32(out.subarray(0, total - 8)) >>> 0, total - 8);
  return out;
}

export function decodeMeta(buf: Buffer, file: string): VolumeMeta {
  if (buf.length < META_HEADER_LENGTH + 8) throw corrupt(file, `truncated: ${buf.length} bytes`);
  if (!buf.subarray(0, 8).equals(META_MAGIC)) throw corrupt(file, 'bad magic');
  const version = buf.readUInt32BE(8);
  if (version !== FORMAT_VERSION) {
    throw new EngineError(ErrorCode.Corrupt, `${file}: unsupported format version ${version} (this build reads ${FORMAT_VERSION})`);
  }
  const headerLength = buf.readUInt32BE(12);
  if (headerLength < META_HEADER_LENGTH || headerLength % 8 !== 0) throw corrupt(file, `header_length ${headerLength}`);
  const incompatible = buf.readBigUInt64BE(16);
  if ((incompatible & ~KNOWN_INCOMPATIBLE_FEATURES) !== 0n) {
    throw new EngineError(ErrorCode.Corrupt, `${file}: unknown incompatible features 0x${incompatible.toString(16)}`);
  }
  const fileLength = buf.readBigUInt64BE(80);
  if (fileLength !== BigInt(buf.length)) throw corrupt(file, `file_length ${fileLength} but file has ${buf.length} bytes`);
  const storedCrc = buf.readUInt32BE(buf.length - 8);
  if (crc32(buf.subarray(0, buf.length - 8)) >>> 0 !== storedCrc) throw corrupt(file, 'checksum mismatch');

  const h = new Reader(buf, 40, headerLength, file);
  const flags = h.u64('flags');
  const generation = h.u64('generation');
  const size = h.num('size');
  const grainShift = h.u32('grain_shift');
  h.u32('reserved');
  const nextCheckpointId = h.num('next_checkpoint_id');
  if (grainShift < MIN_GRAIN_SHIFT || grainShift > MAX_GRAIN_SHIFT) throw corrupt(file, `grain_shift ${grainShift}`);
  if (size % 512 !== 0) throw corrupt(file, `size ${size} is not a multiple of 512`);

  const checkpoints: CheckpointRecord[] = [];
  const history: TxHistoryRecord[] = [];
  const deferred: DeferredRecord[] = [];
  let tx: TxRecord | null = null;
  let pending: PendingOp | null = null;
  const storeLengths = new Map<number, number>();
  let sawCheckpoints = false;
  const r = new Reader(buf, headerLength, buf.length - 8, file);
  for (;;) {
    const type = r.u32('section type');
    const length = r.u32('section length');
    const end = r.pos + length;
    if (length % 8 !== 0 || end > buf.length - 8) throw corrupt(file, `section ${type} length ${length}`);
    const s = new Reader(buf, r.pos, end, file);
    const base = type & ~MUST_UNDERSTAND;
    if (base === Section.End) break;
    switch (base) {
      case Section.Checkpoints: {
        sawCheckpoints = true;
        const count = s.u32('checkpoint count');
        s.u32('reserved');
        for (let i = 0; i < count; i++) {
          const id = s.num('checkpoint id');
          const cpSize = s.num('checkpoint size');
          const createdNs = s.u64('checkpoint created');
          const cpFlags = s.u32('checkpoint flags');
          const nameLen = s.u16('checkpoint name length');
          s.u16('reserved');
          if (nameLen === 0 || nameLen > MAX_NAME_BYTES) throw corrupt(file, `checkpoint name length ${nameLen}`);
          const name = s.text(nameLen, 'checkpoint name');
          s.align8('checkpoint padding');
          checkpoints.push({ id, name, size: cpSize, createdNs, flags: cpFlags });
        }
        break;
      }
      case Section.Transaction: {
        const state = s.u32('tx state');
        const idLen = s.u16('txid length');
        s.u16('reserved');
        const checkpointId = s.num('tx checkpoint id');
        if (state < TxState.Open || state > TxState.Aborting) throw corrupt(file, `tx state ${state}`);
        if (idLen === 0 || idLen > MAX_NAME_BYTES) throw corrupt(file, `txid length ${idLen}`);
        tx = { txid: s.text(idLen, 'txid'), state: state as TxState, checkpointId };
        break;
      }
      case Section.TxHistory: {
        const count = s.u32('history count');
        s.u32('reserved');
        for (let i = 0; i < count; i++) {
          const outcome = s.u32('tx outcome');
          const idLen = s.u16('txid length');
          s.u16('reserved');
          if (outcome !== TxOutcome.Committed && outcome !== TxOutcome.Aborted) throw corrupt(file, `tx outcome ${outcome}`);
          if (idLen === 0 || idLen > MAX_NAME_BYTES) throw corrupt(file, `txid length ${idLen}`);
          history.push({ txid: s.text(idLen, 'txid'), outcome: outcome as TxOutcome });
          s.align8('history padding');
        }
        break;
      }
      case Section.Deferred: {
        const count = s.u32('deferred count');
        s.u32('reserved');
        for (let i = 0; i < count; i++) {
          const requestedNs = s.u64('deferred requested');
          const nameLen = s.u16('deferred name length');
          s.skip(6, 'reserved');
          if (nameLen === 0 || nameLen > MAX_NAME_BYTES) throw corrupt(file, `deferred name length ${nameLen}`);
          deferred.push({ name: s.text(nameLen, 'deferred name'), requestedNs });
          s.align8('deferred padding');
        }
        break;
      }
      case Section.Pending: {
        const kind = s.u32('pending kind');
        s.u32('reserved');
        const checkpointId = s.num('pending checkpoint id');
        if (kind !== PendingKind.Rollback && kind !== PendingKind.Delete) throw corrupt(file, `pending kind ${kind}`);
        pending = { kind: kind as PendingKind, checkpointId };
        break;
      }
      case Section.StoreLengths: {
        const count = s.u32('store length count');
        s.u32('reserved');
        for (let i = 0; i < count; i++) storeLengths.set(s.num('store checkpoint id'), s.num('store length'));
        break;
      }
      default:
        if (type & MUST_UNDERSTAND) throw new EngineError(ErrorCode.Corrupt, `${file}: unknown required section ${base}`);
    }
    r.pos = end;
  }
  if (!sawCheckpoints) throw corrupt(file, 'no checkpoint table');
  const ids = new Set(checkpoints.map((c) => c.id));
  if (ids.size !== checkpoints.length) throw corrupt(file, 'duplicate checkpoint id');
  for (const cp of checkpoints) {
    if (cp.id >= nextCheckpointId) throw corrupt(file, `checkpoint id ${cp.id} ≥ next_checkpoint_id`);
    if (cp.size % 512 !== 0 || cp.size > size) throw corrupt(file, `checkpoint ${cp.name} size ${cp.size}`);
  }
  if (tx && !ids.has(tx.checkpointId)) throw corrupt(file, 'transaction names a missing checkpoint');
  if (pending && !ids.has(pending.checkpointId)) throw corrupt(file, 'pending operation names a missing checkpoint');
  return {
    size,
    grainShift,
    dirty: (flags & META_FLAG_DIRTY) !== 0n,
    generation,
    nextCheckpointId,
    checkpoints,
    tx,
    history,
    deferred,
    pending,
    storeLengths,
  };
}

export function encodeStoreHeader(checkpointId: number, grainShift: number): Buffer {
  const b = Buffer.alloc(STORE_HEADER_LENGTH);
  STORE_MAGIC.copy(b, 0);
  b.writeUInt32BE(FORMAT_VERSION, 8);
  b.writeUInt32BE(STORE_HEADER_LENGTH, 12);
  b.writeBigUInt64BE(BigInt(checkpointId), 16);
  b.writeUInt32BE(grainShift, 24);
  b.writeUInt32BE(crc32(b.subarray(0, 28)) >>> 0, 28);
  return b;
}

export function checkStoreHeader(b: Buffer, file: string, checkpointId: number, grainShift: number): void {
  if (b.length < STORE_HEADER_LENGTH || !b.subarray(0, 8).equals(STORE_MAGIC)) throw corrupt(file, 'bad store magic');
  if (crc32(b.subarray(0, 28)) >>> 0 !== b.readUInt32BE(28)) throw corrupt(file, 'store header checksum');
  if (b.readUInt32BE(8) !== FORMAT_VERSION) throw corrupt(file, `store version ${b.readUInt32BE(8)}`);
  if (b.readUInt32BE(12) !== STORE_HEADER_LENGTH) throw corrupt(file, 'store header_length');
  if (b.readBigUInt64BE(16) !== BigInt(checkpointId)) throw corrupt(file, 'store belongs to another checkpoint');
  if (b.readUInt32BE(24) !== grainShift) throw corrupt(file, 'store grain size differs from the volume');
}

/** One copied grain in a batch. `zero` entries carry no data: the grain read as zeros when copied. */
export interface BatchEntry {
  readonly grain: number;
  readonly zero: boolean;
  readonly dataCrc: number;
}

export const ENTRY_FLAG_ZERO = 1;

export function encodeBatchHeader(sequence: bigint, checkpointId: number, entries: readonly BatchEntry[]): Buffer {
  if (entries.length === 0 || entries.length > MAX_BATCH_ENTRIES) throw new Error(`BUG: batch of ${entries.length} entries`);
  const b = Buffer.alloc(BATCH_HEADER_LENGTH);
  b.writeUInt32BE(BATCH_MAGIC, 0);
  b.writeUInt16BE(entries.length, 4);
  b.writeBigUInt64BE(sequence, 8);
  b.writeBigUInt64BE(BigInt(checkpointId), 16);
  let at = BATCH_ENTRY_OFFSET;
  for (const e of entries) {
    b.writeBigUInt64BE(BigInt(e.grain), at);
    b.writeUInt32BE(e.zero ? ENTRY_FLAG_ZERO : 0, at + 8);
    b.writeUInt32BE(e.dataCrc >>> 0, at + 12);
    at += BATCH_ENTRY_LENGTH;
  }
  b.writeUInt32BE(crc32(b) >>> 0, 24);
  return b;
}

/** Decodes a batch header; null when it is not a valid header for this sequence (end of the log). */
export function decodeBatchHeader(b: Buffer, sequence: bigint, checkpointId: number): BatchEntry[] | null {
  if (b.length < BATCH_HEADER_LENGTH || b.readUInt32BE(0) !== BATCH_MAGIC || !batchChecksumOk(b)) return null;
  if (b.readBigUInt64BE(8) !== sequence || b.readBigUInt64BE(16) !== BigInt(checkpointId)) return null;
  const count = b.readUInt16BE(4);
  if (count === 0 || count > MAX_BATCH_ENTRIES) return null;
  const entries: BatchEntry[] = [];
  let at = BATCH_ENTRY_OFFSET;
  for (let i = 0; i < count; i++) {
    const grain = b.readBigUInt64BE(at);
    if (grain > BigInt(Number.MAX_SAFE_INTEGER)) return null;
    entries.push({ grain: Number(grain), zero: (b.readUInt32BE(at + 8) & ENTRY_FLAG_ZERO) !== 0, dataCrc: b.readUInt32BE(at + 12) });
    at += BATCH_ENTRY_LENGTH;
  }
  return entries;
}

/** A valid batch header of this store with a sequence after `sequence` (so not the torn last one). */
export function isLaterBatchHeader(b: Buffer, sequence: bigint, checkpointId: number): boolean {
  if (b.readUInt32BE(0) !== BATCH_MAGIC || b.readBigUInt64BE(16) !== BigInt(checkpointId) || b.readBigUInt64BE(8) <= sequence) return false;
  return batchChecksumOk(b);
}

/** The header's CRC-32, computed with its own checksum field zeroed (as encodeBatchHeader writes it). */
function batchChecksumOk(b: Buffer): boolean {
  const copy = Buffer.from(b.subarray(0, BATCH_HEADER_LENGTH));
  copy.writeUInt32BE(0, 24);
  return crc32(copy) >>> 0 === b.readUInt32BE(24);
}

export { crc32 };
