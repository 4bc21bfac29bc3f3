/**
 * Transmission phase, pure parts: request header decoding, request validation (nbdkit's
 * validate_request), and reply encoding (simple replies and structured reply chunks).
 *
 * Numbers: offsets are read with readBigUInt64BE and bounds-checked before Number(); an offset
 * that does not fit in 2^53 becomes Infinity, which every range check rejects. Lengths are u32
 * (readUInt32BE, never signed). Cookies stay 8-byte Buffers from decode to reply.
 */
import type { BlockSizeConstraints, Extent } from './export.js';
import {
  Cmd,
  CmdFlag,
  Errno,
  MAX_PAYLOAD,
  NBD_REQUEST_MAGIC,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
  REQUEST_HEADER_SIZE,
  ReplyFlag,
  ReplyType,
  SIMPLE_REPLY_SIZE,
  STRUCTURED_REPLY_HEADER_SIZE,
  State,
  TransmissionFlag,
} from './protocol.js';

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** A decoded request header. */
export interface Request {
  readonly flags: number;
  readonly type: number;
  /** The 8 cookie bytes, echoed verbatim in every reply chunk. */
  readonly cookie: Buffer;
  /** Offset; Infinity when it does not fit in a safe integer. */
  readonly offset: number;
  readonly length: number;
}

/** Decodes a 28-byte request header; undefined if the magic is wrong (framing is lost). */
export function decodeRequestHeader(b: Buffer): Request | undefined {
  if (b.length !== REQUEST_HEADER_SIZE || b.readUInt32BE(0) !== NBD_REQUEST_MAGIC) return undefined;
  const off = b.readBigUInt64BE(16);
  return {
    flags: b.readUInt16BE(4),
    type: b.readUInt16BE(6),
    cookie: b.subarray(8, 16),
    offset: off <= MAX_SAFE ? Number(off) : Infinity,
    length: b.readUInt32BE(24),
  };
}

/** Encodes a request header (used by tests and tools; the server only decodes). */
export function encodeRequestHeader(type: number, flags: number, cookie: Buffer, offset: bigint | number, length: number): Buffer {
  const b = Buffer.allocUnsafe(REQUEST_HEADER_SIZE);
  b.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  cookie.copy(b, 8, 0, 8);
  b.writeBigUInt64BE(BigInt(offset), 16);
  b.writeUInt32BE(length >>> 0, 24);
  return b;
}

/** What validation needs to know about the connection. */
export interface ValidationContext {
  /** Export size as negotiated. */
  readonly size: number;
  /** Transmission flags as advertised. */
  readonly flags: number;
  readonly structured: boolean;
  /** base:allocation selected for this export. */
  readonly baseAllocation: boolean;
  readonly blockSize: BlockSizeConstraints;
}

/** Command flags each command accepts (FUA additionally needs SEND_FUA, DF structured replies). */
const allowedFlags: Readonly<Record<number, number>> = {
  [Cmd.Read]: CmdFlag.Fua | CmdFlag.Df,
  [Cmd.Write]: CmdFlag.Fua,
  [Cmd.Flush]: CmdFlag.Fua,
  [Cmd.Trim]: CmdFlag.Fua,
  [Cmd.Cache]: CmdFlag.Fua,
  [Cmd.WriteZeroes]: CmdFlag.Fua | CmdFlag.NoHole | CmdFlag.FastZero,
  [Cmd.BlockStatus]: CmdFlag.Fua | CmdFlag.ReqOne,
};

const isWriteLike = (type: number): boolean => type === Cmd.Write || type === Cmd.WriteZeroes || type === Cmd.Trim;

/**
 * Validates a request (not DISC) against the negotiated parameters. Returns 0 or the errno to
 * answer with, in this order: unknown command → EINVAL; write-like on a read-only export → EPERM;
 * a flag that does not belong to the command (or was not advertised) → EINVAL; READ/WRITE larger
 * than 32 MiB → EINVAL; FLUSH with offset/length → EINVAL; beyond the end → ENOSPC
 * for WRITE/WRITE_ZEROES, EINVAL otherwise; misaligned to the minimum block size → EINVAL;
 * BLOCK_STATUS without base:allocation selected, or of length 0 → EINVAL.
 */
export function validateRequest(req: Request, ctx: ValidationContext): number {
  const allowed0 = allowedFlags[req.type];
  if (allowed0 === undefined) return Errno.EINVAL;
  if (isWriteLike(req.type) && (ctx.flags & TransmissionFlag.ReadOnly) !== 0) return Errno.EPERM;
  let allowed = allowed0;
  if ((ctx.flags & TransmissionFlag.SendFua) === 0) allowed &= ~CmdFlag.Fua;
  if (!ctx.structured || (ctx.flags & TransmissionFlag.SendDf) === 0) allowed &= ~CmdFlag.Df;
  if ((req.flags & ~allowed) !== 0) return Errno.EINVAL;
  // The advertised maximum is a hint for clients that asked for it; the kernel never asks, so
  // anything up to 32 MiB is accepted (the spec: payloads ≤ 32 MiB SHOULD NOT be refused).
  if ((req.type === Cmd.Read || req.type === Cmd.Write) && req.length > MAX_PAYLOAD) return Errno.EINVAL;
  if (req.type === Cmd.Flush) return req.offset === 0 && req.length === 0 ? 0 : Errno.EINVAL;
  if (req.offset + req.length > ctx.size) {
    return req.type === Cmd.Write || req.type === Cmd.WriteZeroes ? Errno.ENOSPC : Errno.EINVAL;
  }
  const min = ctx.blockSize.minimum;
  if (min > 1 && (req.offset % min !== 0 || req.length % min !== 0)) return Errno.EINVAL;
  if (req.type === Cmd.BlockStatus && (!ctx.baseAllocation || req.length === 0)) return Errno.EINVAL;
  return 0;
}

// ─── Replies ──────────────────────────────────────────────────────────────────────────────────

/** Simple reply: magic, error, cookie (16 bytes). */
export function encodeSimpleReply(cookie: Buffer, error: number): Buffer {
  return writeSimpleReply(Buffer.allocUnsafe(SIMPLE_REPLY_SIZE), cookie, error);
}

/** Writes a simple reply header into the first 16 bytes of `b`; returns `b`. */
export function writeSimpleReply(b: Buffer, cookie: Buffer, error: number): Buffer {
  b.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(error >>> 0, 4);
  cookie.copy(b, 8, 0, 8);
  return b;
}

/** Writes a structured chunk header into `b` at 0 and returns `b`. */
function writeChunkHeader(b: Buffer, cookie: Buffer, flags: number, type: number, length: number): Buffer {
  b.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  cookie.copy(b, 8, 0, 8);
  b.writeUInt32BE(length >>> 0, 16);
  return b;
}

/** A structured chunk header alone (20 bytes), e.g. NONE with DONE. */
export function encodeChunkHeader(cookie: Buffer, flags: number, type: number, length: number): Buffer {
  return writeChunkHeader(Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_SIZE), cookie, flags, type, length);
}

/** Size of the OFFSET_DATA prefix: chunk header + u64 offset. */
export const OFFSET_DATA_PREFIX_SIZE = STRUCTURED_REPLY_HEADER_SIZE + 8;

/**
 * Writes the 28-byte prefix of an OFFSET_DATA chunk with DONE (header + u64 offset) into the
 * first bytes of `b`; the `dataLength` data bytes follow it on the wire. Returns `b`.
 */
export function writeOffsetDataPrefix(b: Buffer, cookie: Buffer, offset: number, dataLength: number): Buffer {
  writeChunkHeader(b, cookie, ReplyFlag.Done, ReplyType.OffsetData, 8 + dataLength);
  // offset ≤ 2^53 (validated), so hi/lo u32 halves are exact.
  b.writeUInt32BE(Math.floor(offset / 0x100000000), STRUCTURED_REPLY_HEADER_SIZE);
  b.writeUInt32BE(offset >>> 0, STRUCTURED_REPLY_HEADER_SIZE + 4);
  return b;
}

/** An ERROR chunk with DONE: u32 error, u16 message length, message. */
export function encodeStructuredError(cookie: Buffer, error: number, message: string): Buffer {
  const msg = Buffer.from(message.slice(0, 200), 'utf8');
  const b = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_SIZE + 6 + msg.length);
  writeChunkHeader(b, cookie, ReplyFlag.Done, ReplyType.Error, 6 + msg.length);
  b.writeUInt32BE(error >>> 0, STRUCTURED_REPLY_HEADER_SIZE);
  b.writeUInt16BE(msg.length, STRUCTURED_REPLY_HEADER_SIZE + 4);
  msg.copy(b, STRUCTURED_REPLY_HEADER_SIZE + 6);
  return b;
}

/** Most extents one BLOCK_STATUS reply carries (the spec asks for ≤ 2^20). */
export const MAX_EXTENTS = 1 << 16;

/** base:allocation flags of an extent. */
export function extentFlags(e: Extent): number {
  return (e.hole ? State.Hole : 0) | (e.zero ? State.Zero : 0);
}

/**
 * Turns an export's extents into wire extents for [offset, offset+length): clipped to the range,
 * zero-length ones dropped, neighbours with equal flags merged, at most one with REQ_ONE. If the
 * export gave nothing usable, reports the whole range as data (always correct).
 * Returns flat pairs [length, flags, length, flags, …].
 */
export function normaliseExtents(extents: readonly Extent[], length: number, reqOne: boolean): number[] {
  const out: number[] = [];
  let covered = 0;
  for (const e of extents) {
    if (covered >= length) break;
    if (!Number.isSafeInteger(e.length) || e.length <= 0) break;
    const len = Math.min(e.length, length - covered);
    const flags = extentFlags(e);
    const n = out.length;
    if (n > 0 && out[n - 1] === flags) out[n - 2] = (out[n - 2] as number) + len;
    else {
      if (n / 2 >= MAX_EXTENTS) break;
      out.push(len, flags);
    }
    covered += len;
    if (reqOne) break;
  }
  if (out.length === 0) out.push(length, 0);
  return out;
}

/** A BLOCK_STATUS chunk with DONE for one context: u32 context id, {u32 length, u32 flags}*. */
export function encodeBlockStatus(cookie: Buffer, contextId: number, pairs: readonly number[]): Buffer {
  const payload = 4 + 4 * pairs.length;
  const b = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_SIZE + payload);
  writeChunkHeader(b, cookie, ReplyFlag.Done, ReplyType.BlockStatus, payload);
  b.writeUInt32BE(contextId >>> 0, STRUCTURED_REPLY_HEADER_SIZE);
  let pos = STRUCTURED_REPLY_HEADER_SIZE + 4;
  for (const v of pairs) {
    b.writeUInt32BE(v >>> 0, pos);
    pos += 4;
  }
  return b;
}
