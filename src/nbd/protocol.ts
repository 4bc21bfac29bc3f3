/**
 * The NBD wire protocol: every magic, flag, option, reply type, command, command flag and errno
 * flashcsi uses, with a byte table for each message (in the spirit of nbdkit's nbd-protocol.h).
 *
 * All NBD fields are sent on the wire in network byte order (big-endian). Offsets in the tables
 * are byte offsets from the start of each message. A "cookie" (older texts: "handle") is 8 opaque
 * bytes chosen by the client and echoed verbatim; flashcsi never turns it into a JS number.
 *
 * Source: NetworkBlockDevice/nbd doc/proto.md (fixed newstyle, structured replies, metadata
 * contexts, INFO/GO). Extended headers (NBD_OPT_EXTENDED_HEADERS) are listed for reference only;
 * the server answers them with NBD_REP_ERR_UNSUP, which no client on our path minds.
 *
 * This module holds constants, small encoders for fixed-size headers, and names for logs. It has
 * no state and no I/O.
 */

// ─── Magics ───────────────────────────────────────────────────────────────────────────────────

/** Every handshake starts with 'NBDMAGIC' (a.k.a. INIT_PASSWD). 64 bits. */
export const NBD_MAGIC = 0x4e42444d41474943n;
/** 'IHAVEOPT': newstyle greeting, and the prefix of every option request. 64 bits. */
export const NBD_IHAVEOPT = 0x49484156454f5054n;
/**
 * Magic of every option reply. 64 bits: 0x0003e889045565a9. Its decimal value happens to read
 * 1100100111001001, a classic typo trap; write it from this constant only.
 */
export const NBD_OPT_REPLY_MAGIC = 0x0003e889045565a9n;
/** Transmission request magic (32 bits). */
export const NBD_REQUEST_MAGIC = 0x25609513;
/** Extended-header request magic (32 bits). Not negotiated by flashcsi. */
export const NBD_EXTENDED_REQUEST_MAGIC = 0x21e41c71;
/** Simple reply magic (32 bits). The only reply the Linux kernel client understands. */
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
/** Structured reply chunk magic (32 bits). Only after NBD_OPT_STRUCTURED_REPLY was acked. */
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;
/** Extended reply chunk magic (32 bits). Not negotiated by flashcsi. */
export const NBD_EXTENDED_REPLY_MAGIC = 0x6e8a278c;

// ─── Handshake ────────────────────────────────────────────────────────────────────────────────
//
// Greeting, server → client (18 bytes):
//   | off | size | field                                                    |
//   |   0 |    8 | NBD_MAGIC                                                |
//   |   8 |    8 | NBD_IHAVEOPT                                             |
//   |  16 |    2 | handshake flags (HandshakeFlag)                          |
//
// Client flags, client → server (4 bytes):
//   |   0 |    4 | client flags (ClientFlag). Unknown bits, or a bit the server did not
//   |     |      | advertise → the server MUST drop the connection.               |
//
// Option request, client → server (16 + len bytes):
//   |   0 |    8 | NBD_IHAVEOPT                                             |
//   |   8 |    4 | option (Opt)                                             |
//   |  12 |    4 | length of option data (unsigned)                         |
//   |  16 |  len | option data                                              |
//
// Option reply, server → client (20 + len bytes), for every option except EXPORT_NAME:
//   |   0 |    8 | NBD_OPT_REPLY_MAGIC                                      |
//   |   8 |    4 | the option being answered                                |
//   |  12 |    4 | reply type (Rep)                                         |
//   |  16 |    4 | length of reply data (may be 0)                          |
//   |  20 |  len | reply data                                               |
//
// EXPORT_NAME reply (no reply header!), server → client (10 or 134 bytes):
//   |   0 |    8 | export size in bytes                                     |
//   |   8 |    2 | transmission flags (TransmissionFlag)                    |
//   |  10 |  124 | zeroes, omitted when ClientFlag.NoZeroes was negotiated  |

/** Handshake flags (u16) sent by the server in the greeting. */
export const HandshakeFlag = {
  /** bit 0: fixed newstyle negotiation; MUST be set. */
  FixedNewstyle: 1 << 0,
  /** bit 1: the server can omit the 124 zero bytes after EXPORT_NAME. */
  NoZeroes: 1 << 1,
} as const;
export type HandshakeFlag = (typeof HandshakeFlag)[keyof typeof HandshakeFlag];

/** Client flags (u32) sent by the client right after the greeting. */
export const ClientFlag = {
  /** bit 0: the client speaks fixed newstyle. */
  FixedNewstyle: 1 << 0,
  /** bit 1: the client does not want the 124 zero bytes after EXPORT_NAME. */
  NoZeroes: 1 << 1,
} as const;
export type ClientFlag = (typeof ClientFlag)[keyof typeof ClientFlag];
/** Every client flag this server understands. */
export const KNOWN_CLIENT_FLAGS = ClientFlag.FixedNewstyle | ClientFlag.NoZeroes;

/** Option codes (u32). */
export const Opt = {
  /** Data: export name, NO length prefix. Ends negotiation; reply has no header; unknown → hard disconnect. */
  ExportName: 1,
  /** No data. Reply ACK, then close. */
  Abort: 2,
  /** No data (else ERR_INVALID). Reply: one REP_SERVER per export, then ACK. */
  List: 3,
  /** Withdrawn experimental extension. */
  PeekExport: 4,
  /** TLS upgrade. flashcsi serves node-local Unix sockets without TLS → ERR_UNSUP. */
  StartTls: 5,
  /** Data: u32 namelen, name, u16 nrinfos, u16 info[nrinfos]. Reply: REP_INFO…, ACK. */
  Info: 6,
  /** As INFO, but the ACK enters transmission (no padding after the ACK). */
  Go: 7,
  /** No data. ACK → structured replies for READ (and every reply carrying a payload). */
  StructuredReply: 8,
  /** Data: u32 namelen, name, u32 nqueries, {u32 qlen, query}*. Reply: REP_META_CONTEXT (id 0)…, ACK. */
  ListMetaContext: 9,
  /** Same data as LIST_META_CONTEXT; replaces the selection. Reply: REP_META_CONTEXT (id)…, ACK. */
  SetMetaContext: 10,
  /** 32-byte headers and 64-bit lengths. Not implemented → ERR_UNSUP. */
  ExtendedHeaders: 11,
} as const;
export type Opt = (typeof Opt)[keyof typeof Opt];

/** Bit 31 marks an error reply type. */
export const REP_ERR_BIT = 0x80000000;

/** Option reply types (u32). Error types have bit 31 set and MAY carry a UTF-8 message. */
export const Rep = {
  /** Success, no data; also terminates a multi-reply answer (LIST, INFO, GO, META). */
  Ack: 1,
  /** Data: u32 namelen, name, [description]. One per export, answering LIST. */
  Server: 2,
  /** Data: u16 info type (Info) + body. Answering INFO/GO. */
  Info: 3,
  /** Data: u32 context id, context name. Answering LIST/SET_META_CONTEXT. */
  MetaContext: 4,
  /** The option is unknown to this server. */
  ErrUnsup: (REP_ERR_BIT | 1) >>> 0,
  /** Known and valid, but forbidden by policy. */
  ErrPolicy: (REP_ERR_BIT | 2) >>> 0,
  /** Known, but syntactically invalid (bad lengths, data where none is allowed…). */
  ErrInvalid: (REP_ERR_BIT | 3) >>> 0,
  /** Not supported on this platform. */
  ErrPlatform: (REP_ERR_BIT | 4) >>> 0,
  /** TLS required first. */
  ErrTlsReqd: (REP_ERR_BIT | 5) >>> 0,
  /** Unknown export (INFO/GO/META). */
  ErrUnknown: (REP_ERR_BIT | 6) >>> 0,
  /** The server is shutting down. The client must soft-disconnect. */
  ErrShutdown: (REP_ERR_BIT | 7) >>> 0,
  /** The server requires the client to ask for NBD_INFO_BLOCK_SIZE. */
  ErrBlockSizeReqd: (REP_ERR_BIT | 8) >>> 0,
  /** The request (or a string in it) is too large to process. */
  ErrTooBig: (REP_ERR_BIT | 9) >>> 0,
  /** Extended headers are required. */
  ErrExtHeaderReqd: (REP_ERR_BIT | 10) >>> 0,
} as const;
export type Rep = (typeof Rep)[keyof typeof Rep];

/**
 * NBD_REP_INFO payload types (u16), requested by INFO/GO and sent as REP_INFO:
 *   EXPORT (0):      | u16 0 | u64 size | u16 transmission flags |                 (12 bytes)
 *   NAME (1):        | u16 1 | name (rest of the reply) |
 *   DESCRIPTION (2): | u16 2 | description (rest of the reply) |
 *   BLOCK_SIZE (3):  | u16 3 | u32 minimum | u32 preferred | u32 maximum payload | (14 bytes)
 */
export const Info = {
  Export: 0,
  Name: 1,
  Description: 2,
  BlockSize: 3,
} as const;
export type Info = (typeof Info)[keyof typeof Info];

/** Transmission flags (u16), in INFO_EXPORT and the EXPORT_NAME reply. */
export const TransmissionFlag = {
  /** bit 0: MUST be 1. */
  HasFlags: 1 << 0,
  /** bit 1: writes will fail with EPERM. */
  ReadOnly: 1 << 1,
  /** bit 2: NBD_CMD_FLUSH is supported. */
  SendFlush: 1 << 2,
  /** bit 3: NBD_CMD_FLAG_FUA is supported. */
  SendFua: 1 << 3,
  /** bit 4: the medium is rotational (scheduling hint). */
  Rotational: 1 << 4,
  /** bit 5: NBD_CMD_TRIM is supported. */
  SendTrim: 1 << 5,
  /** bit 6: NBD_CMD_WRITE_ZEROES (and NO_HOLE) is supported. */
  SendWriteZeroes: 1 << 6,
  /** bit 7: READ honours NBD_CMD_FLAG_DF. MUST be clear without structured replies. */
  SendDf: 1 << 7,
  /** bit 8: flush/FUA on one connection is visible on all; clients may open several. */
  CanMultiConn: 1 << 8,
  /** bit 9: NBD_CMD_RESIZE (experimental). Never set. */
  SendResize: 1 << 9,
  /** bit 10: NBD_CMD_CACHE is supported. */
  SendCache: 1 << 10,
  /** bit 11: NBD_CMD_FLAG_FAST_ZERO is supported (only together with SEND_WRITE_ZEROES). */
  SendFastZero: 1 << 11,
  /** bit 12: BLOCK_STATUS carries a payload (extended headers only). Never set. */
  BlockStatusPayload: 1 << 12,
} as const;
export type TransmissionFlag = (typeof TransmissionFlag)[keyof typeof TransmissionFlag];

/** Metadata context names. The standard one is the only one flashcsi offers. */
export const META_BASE_ALLOCATION = 'base:allocation';
/** Namespace prefix of the standard contexts; a LIST query of exactly "base:" lists them all. */
export const META_BASE_NAMESPACE = 'base:';
/** Context id flashcsi assigns to base:allocation on SET_META_CONTEXT (LIST replies use 0). */
export const META_BASE_ALLOCATION_ID = 1;

/** base:allocation status flags (u32 per extent). Reporting 0 (data) is always safe. */
export const State = {
  /** bit 0: unallocated; writing there may fail with ENOSPC. */
  Hole: 1 << 0,
  /** bit 1: reads as zeroes. */
  Zero: 1 << 1,
} as const;
export type State = (typeof State)[keyof typeof State];

// ─── Transmission ─────────────────────────────────────────────────────────────────────────────
//
// Request, client → server (28 bytes + payload):
//   | off | size | field                                                      |
//   |   0 |    4 | NBD_REQUEST_MAGIC                                          |
//   |   4 |    2 | command flags (CmdFlag)                                    |
//   |   6 |    2 | type (Cmd)                                                 |
//   |   8 |    8 | cookie (opaque, echoed verbatim)                           |
//   |  16 |    8 | offset (unsigned)                                          |
//   |  24 |    4 | length (unsigned)                                          |
//   |  28 |  len | payload, NBD_CMD_WRITE only                                |
//
// Simple reply, server → client (16 bytes [+ READ data]):
//   |   0 |    4 | NBD_SIMPLE_REPLY_MAGIC                                     |
//   |   4 |    4 | error (Errno, 0 = success)                                 |
//   |   8 |    8 | cookie                                                     |
//   |  16 |  len | READ data when error = 0 and structured replies are off    |
//
// Structured reply chunk, server → client (20 bytes + payload):
//   |   0 |    4 | NBD_STRUCTURED_REPLY_MAGIC                                 |
//   |   4 |    2 | flags (ReplyFlag; DONE on the last chunk of a reply)       |
//   |   6 |    2 | type (ReplyType)                                           |
//   |   8 |    8 | cookie                                                     |
//   |  16 |    4 | payload length                                             |
//   |  20 |  len | payload                                                    |
//
// Chunk payloads:
//   NONE (0):          empty; MUST carry DONE.
//   OFFSET_DATA (1):   | u64 offset | data… |                       (length ≥ 9)
//   OFFSET_HOLE (2):   | u64 offset | u32 hole size |               (length = 12)
//   BLOCK_STATUS (5):  | u32 context id | {u32 extent length (≠0), u32 status flags}* |
//   ERROR (0x8001):    | u32 error | u16 message length | message | (length ≥ 6)
//   ERROR_OFFSET (0x8002): | u32 error | u16 msglen | message | u64 offset |

/** Command types (u16). */
export const Cmd = {
  /** Read `length` bytes at `offset`. */
  Read: 0,
  /** Write the `length`-byte payload at `offset`. The only command with a request payload. */
  Write: 1,
  /** Soft disconnect: no reply; finish in-flight requests, then close. */
  Disc: 2,
  /** Make every write-like command already replied to durable. offset = length = 0. */
  Flush: 3,
  /** Discard hint; content afterwards is unspecified (flashcsi: reads as zeroes). */
  Trim: 4,
  /** Prefetch hint. */
  Cache: 5,
  /** Write zeroes without a payload (NO_HOLE: keep allocated; FAST_ZERO: fail if not cheap). */
  WriteZeroes: 6,
  /** Report status extents for every selected metadata context. */
  BlockStatus: 7,
  /** Experimental resize. Not implemented (EINVAL). */
  Resize: 8,
} as const;
export type Cmd = (typeof Cmd)[keyof typeof Cmd];

/** Command flags (u16). */
export const CmdFlag = {
  /** bit 0: force unit access; valid on every command when SEND_FUA was advertised. */
  Fua: 1 << 0,
  /** bit 1: WRITE_ZEROES must leave the range allocated. */
  NoHole: 1 << 1,
  /** bit 2: READ must be answered with at most one data chunk. */
  Df: 1 << 2,
  /** bit 3: BLOCK_STATUS must return exactly one extent, ≤ the request length. */
  ReqOne: 1 << 3,
  /** bit 4: WRITE_ZEROES must fail with ENOTSUP unless zeroing is cheaper than writing. */
  FastZero: 1 << 4,
  /** bit 5: the request carries a payload length (extended headers only). */
  PayloadLen: 1 << 5,
} as const;
export type CmdFlag = (typeof CmdFlag)[keyof typeof CmdFlag];

/** Structured reply chunk flags (u16). */
export const ReplyFlag = {
  /** bit 0: this is the last chunk of the reply. */
  Done: 1 << 0,
} as const;
export type ReplyFlag = (typeof ReplyFlag)[keyof typeof ReplyFlag];

/** Structured reply chunk types (u16). Bit 15 marks an error chunk. */
export const ReplyType = {
  None: 0,
  OffsetData: 1,
  OffsetHole: 2,
  BlockStatus: 5,
  BlockStatusExt: 6,
  Error: 0x8001,
  ErrorOffset: 0x8002,
} as const;
export type ReplyType = (typeof ReplyType)[keyof typeof ReplyType];

/** NBD error numbers (u32), Linux values, the only ones the protocol allows on the wire. */
export const Errno = {
  /** Operation not permitted: write to a read-only export. */
  EPERM: 1,
  /** I/O error: anything else. */
  EIO: 5,
  /** Out of memory. */
  ENOMEM: 12,
  /** Invalid argument: bad command, flag, range, alignment, missing meta context. */
  EINVAL: 22,
  /** No space left: write past the end, or the backing store is full. */
  ENOSPC: 28,
  /** Value too large: a DF read that cannot be unfragmented, oversize no-payload request. */
  EOVERFLOW: 75,
  /** Not supported: FAST_ZERO when zeroing is not fast. */
  ENOTSUP: 95,
  /** The server is shutting down; the client must soft-disconnect. */
  ESHUTDOWN: 108,
} as const;
export type Errno = (typeof Errno)[keyof typeof Errno];

// ─── Sizes and limits ─────────────────────────────────────────────────────────────────────────

export const GREETING_SIZE = 18;
export const CLIENT_FLAGS_SIZE = 4;
export const OPTION_HEADER_SIZE = 16;
export const OPTION_REPLY_HEADER_SIZE = 20;
export const REQUEST_HEADER_SIZE = 28;
export const SIMPLE_REPLY_SIZE = 16;
export const STRUCTURED_REPLY_HEADER_SIZE = 20;
/** Zero padding after the EXPORT_NAME reply when NO_ZEROES was not negotiated. */
export const EXPORT_NAME_PADDING = 124;

/** Largest READ/WRITE payload flashcsi accepts and advertises (NBD_INFO_BLOCK_SIZE maximum). */
export const MAX_PAYLOAD = 32 * 1024 * 1024;
/** Longest string (export name, description, query) the spec allows. */
export const MAX_STRING = 4096;
/**
 * Longest option data accepted. Longer options get ERR_TOO_BIG and a hard disconnect: reading
 * them would mean buffering (or skipping) up to 4 GiB from a peer that is already misbehaving.
 */
export const MAX_OPTION_LENGTH = 64 * 1024;
/** Default block size constraints: minimum, preferred, maximum payload. */
export const DEFAULT_BLOCK_SIZE = { minimum: 1, preferred: 4096, maximum: MAX_PAYLOAD } as const;

// ─── Names for logs ───────────────────────────────────────────────────────────────────────────

function invert(obj: Record<string, number>): Map<number, string> {
  const m = new Map<number, string>();
  for (const [k, v] of Object.entries(obj)) m.set(v, k);
  return m;
}
const optNames = invert(Opt);
const cmdNames = invert(Cmd);
const repNames = invert(Rep);
const errnoNames = invert(Errno);

/** "GO", "unknown(42)"… for logs. */
export function optName(opt: number): string {
  return optNames.get(opt) ?? `unknown(${opt})`;
}
export function cmdName(cmd: number): string {
  return cmdNames.get(cmd) ?? `unknown(${cmd})`;
}
export function repName(rep: number): string {
  return repNames.get(rep >>> 0) ?? `unknown(0x${(rep >>> 0).toString(16)})`;
}
export function errnoName(err: number): string {
  return errnoNames.get(err) ?? `errno(${err})`;
}
