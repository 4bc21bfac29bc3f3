/**
 * Fixed-newstyle negotiation, server side, as an explicit state machine (see PROTOCOL.md):
 *
 *   AwaitClientFlags ──4 bytes──▶ AwaitOption ──16-byte header──▶ AwaitOptionData ──data──▶ (handler)
 *        │                            ▲                                                     │
 *        │ bad flags                  └──────────── option answered, keep negotiating ──────┤
 *        ▼                                                                                  │
 *      Closed ◀── ABORT, bad magic, oversize option, unknown EXPORT_NAME, too many options ──┤
 *                                                                                           ▼
 *                                                        Transmission ◀── GO acked / EXPORT_NAME
 *
 * The machine is synchronous and does no I/O: `advance()` consumes bytes from a ByteQueue and
 * hands reply buffers to a `send` callback; the connection decides what to do with the result.
 * One handler per option; every option that is not implemented gets ERR_UNSUP and framing is
 * kept (the option length is known).
 */
import type { BlockSizeConstraints, ExportProvider, NbdExport } from './export.js';
import type { ByteQueue } from './framing.js';
import {
  CLIENT_FLAGS_SIZE,
  ClientFlag,
  DEFAULT_BLOCK_SIZE,
  EXPORT_NAME_PADDING,
  GREETING_SIZE,
  HandshakeFlag,
  Info,
  KNOWN_CLIENT_FLAGS,
  MAX_OPTION_LENGTH,
  MAX_PAYLOAD,
  MAX_STRING,
  META_BASE_ALLOCATION,
  META_BASE_ALLOCATION_ID,
  META_BASE_NAMESPACE,
  NBD_IHAVEOPT,
  NBD_MAGIC,
  NBD_OPT_REPLY_MAGIC,
  OPTION_HEADER_SIZE,
  OPTION_REPLY_HEADER_SIZE,
  Opt,
  Rep,
  TransmissionFlag,
} from './protocol.js';

// ─── Encoders ─────────────────────────────────────────────────────────────────────────────────

/** Handshake flags this server advertises. */
export const SERVER_HANDSHAKE_FLAGS = HandshakeFlag.FixedNewstyle | HandshakeFlag.NoZeroes;

/** The 18-byte greeting: NBDMAGIC, IHAVEOPT, handshake flags. */
export function encodeGreeting(): Buffer {
  const b = Buffer.allocUnsafe(GREETING_SIZE);
  b.writeBigUInt64BE(NBD_MAGIC, 0);
  b.writeBigUInt64BE(NBD_IHAVEOPT, 8);
  b.writeUInt16BE(SERVER_HANDSHAKE_FLAGS, 16);
  return b;
}

/** An option reply: 20-byte header + data. */
export function encodeOptionReply(opt: number, type: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.allocUnsafe(OPTION_REPLY_HEADER_SIZE + data.length);
  b.writeBigUInt64BE(NBD_OPT_REPLY_MAGIC, 0);
  b.writeUInt32BE(opt >>> 0, 8);
  b.writeUInt32BE(type >>> 0, 12);
  b.writeUInt32BE(data.length, 16);
  data.copy(b, OPTION_REPLY_HEADER_SIZE);
  return b;
}

/** An error option reply with a UTF-8 message. */
export function encodeOptionError(opt: number, type: number, message: string): Buffer {
  return encodeOptionReply(opt, type, Buffer.from(message.slice(0, 256), 'utf8'));
}

/** REP_INFO payload for NBD_INFO_EXPORT: u16 0, u64 size, u16 transmission flags. */
export function encodeInfoExport(size: number, flags: number): Buffer {
  const b = Buffer.allocUnsafe(12);
  b.writeUInt16BE(Info.Export, 0);
  b.writeBigUInt64BE(BigInt(size), 2);
  b.writeUInt16BE(flags, 10);
  return b;
}

/** REP_INFO payload for NBD_INFO_BLOCK_SIZE: u16 3, u32 minimum, u32 preferred, u32 maximum. */
export function encodeInfoBlockSize(bs: BlockSizeConstraints): Buffer {
  const b = Buffer.allocUnsafe(14);
  b.writeUInt16BE(Info.BlockSize, 0);
  b.writeUInt32BE(bs.minimum, 2);
  b.writeUInt32BE(bs.preferred, 6);
  b.writeUInt32BE(bs.maximum, 10);
  return b;
}

/** REP_INFO payload for NBD_INFO_NAME / NBD_INFO_DESCRIPTION: u16 type, string. */
export function encodeInfoString(type: typeof Info.Name | typeof Info.Description, s: string): Buffer {
  const str = Buffer.from(s, 'utf8');
  const b = Buffer.allocUnsafe(2 + str.length);
  b.writeUInt16BE(type, 0);
  str.copy(b, 2);
  return b;
}

/** REP_SERVER payload: u32 namelen, name, description. */
export function encodeServerReply(name: string, description = ''): Buffer {
  const n = Buffer.from(name, 'utf8');
  const d = Buffer.from(description, 'utf8');
  const b = Buffer.allocUnsafe(4 + n.length + d.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  d.copy(b, 4 + n.length);
  return b;
}

/** REP_META_CONTEXT payload: u32 context id, name. */
export function encodeMetaContextReply(id: number, name: string): Buffer {
  const n = Buffer.from(name, 'utf8');
  const b = Buffer.allocUnsafe(4 + n.length);
  b.writeUInt32BE(id >>> 0, 0);
  n.copy(b, 4);
  return b;
}

/** The EXPORT_NAME reply (no header): u64 size, u16 flags, and 124 zeroes unless NO_ZEROES. */
export function encodeExportNameReply(size: number, flags: number, noZeroes: boolean): Buffer {
  const b = Buffer.alloc(10 + (noZeroes ? 0 : EXPORT_NAME_PADDING));
  b.writeBigUInt64BE(BigInt(size), 0);
  b.writeUInt16BE(flags, 8);
  return b;
}

// ─── Decoders ─────────────────────────────────────────────────────────────────────────────────

/** A decoding failure: the option reply type to send and a message. */
export interface OptionParseError {
  readonly error: number;
  readonly message: string;
}

export interface InfoRequest {
  readonly name: string;
  readonly infos: readonly number[];
}

/** Parses INFO/GO data: u32 namelen, name, u16 nrinfos, u16 info[nrinfos]; exact length. */
export function parseInfoRequest(data: Buffer): InfoRequest | OptionParseError {
  if (data.length < 6) return { error: Rep.ErrInvalid, message: 'option too short' };
  const nameLen = data.readUInt32BE(0);
  if (nameLen > data.length - 6) return { error: Rep.ErrInvalid, message: 'name length exceeds option length' };
  if (nameLen > MAX_STRING) return { error: Rep.ErrTooBig, message: 'export name too long' };
  const name = data.toString('utf8', 4, 4 + nameLen);
  const nInfos = data.readUInt16BE(4 + nameLen);
  if (data.length !== 6 + nameLen + 2 * nInfos) {
    return { error: Rep.ErrInvalid, message: 'information request count does not match option length' };
  }
  const infos: number[] = [];
  for (let i = 0; i < nInfos; i++) infos.push(data.readUInt16BE(6 + nameLen + 2 * i));
  return { name, infos };
}

export interface MetaContextRequest {
  readonly name: string;
  readonly queries: readonly string[];
}

/** Parses LIST/SET_META_CONTEXT data: u32 namelen, name, u32 nqueries, {u32 len, query}*. */
export function parseMetaContextRequest(data: Buffer): MetaContextRequest | OptionParseError {
  if (data.length < 8) return { error: Rep.ErrInvalid, message: 'option too short' };
  const nameLen = data.readUInt32BE(0);
  if (nameLen > data.length - 8) return { error: Rep.ErrInvalid, message: 'name length exceeds option length' };
  if (nameLen > MAX_STRING) return { error: Rep.ErrTooBig, message: 'export name too long' };
  const name = data.toString('utf8', 4, 4 + nameLen);
  let pos = 4 + nameLen;
  const nQueries = data.readUInt32BE(pos);
  pos += 4;
  // Each query needs at least its 4-byte length: bound the count before looping.
  if (nQueries > (data.length - pos) / 4) return { error: Rep.ErrInvalid, message: 'query count exceeds option length' };
  const queries: string[] = [];
  for (let i = 0; i < nQueries; i++) {
    if (data.length - pos < 4) return { error: Rep.ErrInvalid, message: 'truncated query' };
    const qLen = data.readUInt32BE(pos);
    pos += 4;
    if (qLen > data.length - pos) return { error: Rep.ErrInvalid, message: 'query length exceeds option length' };
    if (qLen > MAX_STRING) return { error: Rep.ErrTooBig, message: 'query too long' };
    queries.push(data.toString('utf8', pos, pos + qLen));
    pos += qLen;
  }
  if (pos !== data.length) return { error: Rep.ErrInvalid, message: 'trailing bytes after queries' };
  return { name, queries };
}

export function isParseError(x: object): x is OptionParseError {
  return 'error' in x;
}

// ─── Export parameters ────────────────────────────────────────────────────────────────────────

const isPow2 = (n: number): boolean => Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;

/** The export's block size constraints, sanitised; maximum capped at 32 MiB. */
export function effectiveBlockSize(exp: NbdExport): BlockSizeConstraints {
  const bs = exp.blockSize;
  if (bs === undefined) return DEFAULT_BLOCK_SIZE;
  const minimum = isPow2(bs.minimum) && bs.minimum <= 65536 ? bs.minimum : 1;
  const preferred = isPow2(bs.preferred) && bs.preferred >= Math.max(minimum, 512) ? bs.preferred : Math.max(4096, minimum);
  let maximum = Math.min(bs.maximum, MAX_PAYLOAD);
  if (!Number.isInteger(maximum) || maximum < preferred) maximum = MAX_PAYLOAD;
  maximum -= maximum % minimum;
  return { minimum, preferred, maximum };
}

/** Transmission flags for an export: exactly what the server implements for it. */
export function transmissionFlags(exp: NbdExport, structured: boolean): number {
  let f = TransmissionFlag.HasFlags | TransmissionFlag.SendFlush | TransmissionFlag.SendCache;
  if (exp.readOnly) {
    f |= TransmissionFlag.ReadOnly;
  } else {
    f |= TransmissionFlag.SendFua | TransmissionFlag.SendTrim | TransmissionFlag.SendWriteZeroes | TransmissionFlag.SendFastZero;
  }
  // Every READ is answered with a single data chunk, so DF is always honoured.
  if (structured) f |= TransmissionFlag.SendDf;
  if (exp.multiConn !== false) f |= TransmissionFlag.CanMultiConn;
  return f;
}

/** The export's size, checked: a non-negative safe integer. */
function exportSize(exp: NbdExport): number {
  const size = exp.size();
  if (!Number.isSafeInteger(size) || size < 0) throw new Error(`export ${JSON.stringify(exp.name)} reported invalid size ${size}`);
  return size;
}

// ─── State machine ────────────────────────────────────────────────────────────────────────────

export type HandshakeState = 'AwaitClientFlags' | 'AwaitOption' | 'AwaitOptionData' | 'Transmission' | 'Closed';

/** What negotiation settled on, frozen for the connection's lifetime. */
export interface Negotiated {
  readonly export: NbdExport;
  /** Size seen by this connection; requests are checked against it. */
  readonly size: number;
  readonly flags: number;
  readonly structured: boolean;
  /** base:allocation was selected (for this very export): BLOCK_STATUS is allowed. */
  readonly baseAllocation: boolean;
  readonly blockSize: BlockSizeConstraints;
  /** Whether the client entered transmission via GO (false: EXPORT_NAME). */
  readonly viaGo: boolean;
}

export type HandshakeResult =
  | { readonly kind: 'need-more' }
  | { readonly kind: 'transmission'; readonly negotiated: Negotiated }
  | { readonly kind: 'close'; readonly reason: string };

export interface HandshakeOptions {
  readonly provider: ExportProvider;
  /** True once the server started shutting down: options get ERR_SHUTDOWN. */
  readonly isShuttingDown?: () => boolean;
  /** Longest option data accepted (default 64 KiB). */
  readonly maxOptionLength?: number;
  /** Most options one connection may send before it is dropped (default 256). */
  readonly maxOptions?: number;
}

/** What an option handler decides. */
type Outcome = { readonly kind: 'continue' } | { readonly kind: 'transmission'; readonly negotiated: Negotiated } | { readonly kind: 'close'; readonly reason: string };
const CONTINUE: Outcome = { kind: 'continue' };
const NEED_MORE: HandshakeResult = { kind: 'need-more' };

export class Handshake {
  private stateValue: HandshakeState = 'AwaitClientFlags';
  private clientFlags = 0;
  private structured = false;
  /** Export named in the last successful SET_META_CONTEXT, and whether base:allocation was selected. */
  private metaExport: string | undefined;
  private metaBaseAllocation = false;
  private pendingOpt = 0;
  private pendingLength = 0;
  private optionCount = 0;
  private readonly maxOptionLength: number;
  private readonly maxOptions: number;

  constructor(
    private readonly opts: HandshakeOptions,
    private readonly send: (buf: Buffer) => void,
  ) {
    this.maxOptionLength = opts.maxOptionLength ?? MAX_OPTION_LENGTH;
    this.maxOptions = opts.maxOptions ?? 256;
  }

  get state(): HandshakeState {
    return this.stateValue;
  }

  /** The greeting to send as soon as the connection opens. */
  greeting(): Buffer {
    return encodeGreeting();
  }

  /** Consumes as many complete messages from `q` as possible. */
  advance(q: ByteQueue): HandshakeResult {
    for (;;) {
      switch (this.stateValue) {
        case 'AwaitClientFlags': {
          const b = q.take(CLIENT_FLAGS_SIZE);
          if (b === undefined) return NEED_MORE;
          const flags = b.readUInt32BE(0);
          if ((flags & ~KNOWN_CLIENT_FLAGS) !== 0) return this.close(`unknown client flags 0x${flags.toString(16)}`);
          this.clientFlags = flags;
          this.stateValue = 'AwaitOption';
          break;
        }
        case 'AwaitOption': {
          const b = q.take(OPTION_HEADER_SIZE);
          if (b === undefined) return NEED_MORE;
          if (b.readBigUInt64BE(0) !== NBD_IHAVEOPT) return this.close('bad option magic');
          this.pendingOpt = b.readUInt32BE(8);
          this.pendingLength = b.readUInt32BE(12);
          if (++this.optionCount > this.maxOptions) return this.close('too many options');
          if (this.pendingLength > this.maxOptionLength) {
            if (this.pendingOpt !== Opt.ExportName) {
              this.send(encodeOptionError(this.pendingOpt, Rep.ErrTooBig, 'option too long'));
            }
            return this.close(`option ${this.pendingOpt} length ${this.pendingLength} exceeds ${this.maxOptionLength}`);
          }
          this.stateValue = 'AwaitOptionData';
          break;
        }
        case 'AwaitOptionData': {
          const data = q.take(this.pendingLength);
          if (data === undefined) return NEED_MORE;
          this.stateValue = 'AwaitOption';
          const out = this.handleOption(this.pendingOpt, data);
          if (out.kind === 'close') return this.close(out.reason);
          if (out.kind === 'transmission') {
            this.stateValue = 'Transmission';
            return out;
          }
          break;
        }
        case 'Transmission':
        case 'Closed':
          return NEED_MORE;
      }
    }
  }

  private close(reason: string): HandshakeResult {
    this.stateValue = 'Closed';
    return { kind: 'close', reason };
  }

  private get shuttingDown(): boolean {
    return this.opts.isShuttingDown?.() ?? false;
  }

  /** Dispatches one option: one handler per NBD_OPT_*. */
  private handleOption(opt: number, data: Buffer): Outcome {
    if (this.shuttingDown && opt !== Opt.Abort) {
      if (opt === Opt.ExportName) return { kind: 'close', reason: 'EXPORT_NAME during shutdown' };
      this.send(encodeOptionError(opt, Rep.ErrShutdown, 'server is shutting down'));
      return CONTINUE;
    }
    switch (opt) {
      case Opt.ExportName:
        return this.optExportName(data);
      case Opt.Abort:
        return this.optAbort();
      case Opt.List:
        return this.optList(opt, data);
      case Opt.Info:
      case Opt.Go:
        return this.optInfoGo(opt, data);
      case Opt.StructuredReply:
        return this.optStructuredReply(opt, data);
      case Opt.ListMetaContext:
      case Opt.SetMetaContext:
        return this.optMetaContext(opt, data);
      default:
        // STARTTLS, EXTENDED_HEADERS and anything unknown: not supported, framing kept.
        this.send(encodeOptionError(opt, Rep.ErrUnsup, 'option not supported'));
        return CONTINUE;
    }
  }

  /** EXPORT_NAME: bare name, no reply header; an unknown name can only be a hard disconnect. */
  private optExportName(data: Buffer): Outcome {
    if (data.length > MAX_STRING) return { kind: 'close', reason: 'EXPORT_NAME too long' };
    const name = data.toString('utf8');
    const exp = this.opts.provider.get(name);
    if (exp === undefined) return { kind: 'close', reason: `EXPORT_NAME: unknown export ${JSON.stringify(name)}` };
    const negotiated = this.negotiate(exp, false);
    this.send(encodeExportNameReply(negotiated.size, negotiated.flags, (this.clientFlags & ClientFlag.NoZeroes) !== 0));
    return { kind: 'transmission', negotiated };
  }

  /** ABORT: ACK, then the connection closes. */
  private optAbort(): Outcome {
    this.send(encodeOptionReply(Opt.Abort, Rep.Ack));
    return { kind: 'close', reason: 'client sent ABORT' };
  }

  /** LIST: one REP_SERVER per export, then ACK. No data allowed. */
  private optList(opt: number, data: Buffer): Outcome {
    if (data.length !== 0) {
      this.send(encodeOptionError(opt, Rep.ErrInvalid, 'LIST takes no data'));
      return CONTINUE;
    }
    for (const exp of this.opts.provider.list()) {
      this.send(encodeOptionReply(opt, Rep.Server, encodeServerReply(exp.name, exp.description ?? '')));
    }
    this.send(encodeOptionReply(opt, Rep.Ack));
    return CONTINUE;
  }

  /** INFO / GO: REP_INFO (EXPORT, requested NAME/DESCRIPTION, BLOCK_SIZE always), then ACK. */
  private optInfoGo(opt: number, data: Buffer): Outcome {
    const req = parseInfoRequest(data);
    if (isParseError(req)) {
      this.send(encodeOptionError(opt, req.error, req.message));
      return CONTINUE;
    }
    const exp = this.opts.provider.get(req.name);
    if (exp === undefined) {
      this.send(encodeOptionError(opt, Rep.ErrUnknown, `unknown export ${JSON.stringify(req.name)}`));
      return CONTINUE;
    }
    const negotiated = this.negotiate(exp, opt === Opt.Go);
    this.send(encodeOptionReply(opt, Rep.Info, encodeInfoExport(negotiated.size, negotiated.flags)));
    if (req.infos.includes(Info.Name)) this.send(encodeOptionReply(opt, Rep.Info, encodeInfoString(Info.Name, exp.name)));
    if (req.infos.includes(Info.Description) && exp.description !== undefined) {
      this.send(encodeOptionReply(opt, Rep.Info, encodeInfoString(Info.Description, exp.description)));
    }
    // Sent whether or not it was requested (the spec allows it; nbd-client ignores it).
    this.send(encodeOptionReply(opt, Rep.Info, encodeInfoBlockSize(negotiated.blockSize)));
    this.send(encodeOptionReply(opt, Rep.Ack));
    return opt === Opt.Go ? { kind: 'transmission', negotiated } : CONTINUE;
  }

  /** STRUCTURED_REPLY: no data; ACK turns structured replies on. */
  private optStructuredReply(opt: number, data: Buffer): Outcome {
    if (data.length !== 0) {
      this.send(encodeOptionError(opt, Rep.ErrInvalid, 'STRUCTURED_REPLY takes no data'));
      return CONTINUE;
    }
    this.structured = true;
    this.send(encodeOptionReply(opt, Rep.Ack));
    return CONTINUE;
  }

  /**
   * LIST_META_CONTEXT / SET_META_CONTEXT with base:allocation as the only context. LIST with no
   * query or the query "base:" lists it; SET selects it when asked by its full name, replacing
   * any previous selection. Unknown namespaces are ignored, never errors.
   */
  private optMetaContext(opt: number, data: Buffer): Outcome {
    const isSet = opt === Opt.SetMetaContext;
    if (isSet) {
      // A failed SET leaves nothing selected.
      this.metaExport = undefined;
      this.metaBaseAllocation = false;
    }
    if (!this.structured) {
      this.send(encodeOptionError(opt, Rep.ErrInvalid, 'structured replies not negotiated'));
      return CONTINUE;
    }
    const req = parseMetaContextRequest(data);
    if (isParseError(req)) {
      this.send(encodeOptionError(opt, req.error, req.message));
      return CONTINUE;
    }
    if (this.opts.provider.get(req.name) === undefined) {
      this.send(encodeOptionError(opt, Rep.ErrUnknown, `unknown export ${JSON.stringify(req.name)}`));
      return CONTINUE;
    }
    let base: boolean;
    if (isSet) base = req.queries.includes(META_BASE_ALLOCATION);
    else base = req.queries.length === 0 || req.queries.some((q) => q === META_BASE_ALLOCATION || q === META_BASE_NAMESPACE);
    if (base) this.send(encodeOptionReply(opt, Rep.MetaContext, encodeMetaContextReply(isSet ? META_BASE_ALLOCATION_ID : 0, META_BASE_ALLOCATION)));
    if (isSet) {
      this.metaExport = req.name;
      this.metaBaseAllocation = base;
    }
    this.send(encodeOptionReply(opt, Rep.Ack));
    return CONTINUE;
  }

  private negotiate(exp: NbdExport, viaGo: boolean): Negotiated {
    return {
      export: exp,
      size: exportSize(exp),
      flags: transmissionFlags(exp, this.structured),
      structured: this.structured,
      // A selection made for another export is not usable (spec: SET_META_CONTEXT names the export).
      baseAllocation: this.metaBaseAllocation && this.metaExport === exp.name,
      blockSize: effectiveBlockSize(exp),
      viaGo,
    };
  }
}
