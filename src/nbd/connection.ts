/**
 * One client connection: handshake, then the transmission loop, with backpressure and a
 * lifecycle the server can drive (shutdown, drain, close).
 *
 * Data flow: socket 'data' → ByteQueue → `pump()` decodes as many complete messages as allowed
 * → each request calls the export asynchronously → its completion encodes the reply and writes
 * it whole (header and payload in one synchronous step) on this same socket. Replies therefore
 * go out in completion order, never interleaved; they are corked in batches of up to 8 (or until
 * the tick ends) to save syscalls.
 *
 * Backpressure: `pump()` stops decoding new requests and pauses the socket while the bytes in
 * flight (WRITE payloads being applied + READ data being produced) exceed the budget, while too
 * many requests are in flight, or while the socket's write buffer is above its high-water mark
 * (`write()` returned false, until 'drain'). Completions resume it and re-run `pump()` over what
 * is already queued. Memory per connection is thus bounded by budget + one request (≤ 32 MiB
 * payload) + one socket read.
 *
 * Accounting: with an observer (metrics), each answered request is reported once, with its
 * latency from the socket read that delivered it (the last read before it was decoded) to its
 * reply handed to the socket; the observer only adds to preallocated numbers.
 *
 * Failure containment: every entry point (socket events, export completions) is wrapped; an
 * exception destroys this connection only. Export errors fail the one request with an errno.
 */
import type { Socket } from 'node:net';

import { toNbdErrno, errorCode } from './errno.js';
import type { NbdExport } from './export.js';
import { ByteQueue } from './framing.js';
import { Handshake, type Negotiated } from './handshake.js';
import { Cmd, CmdFlag, Errno, MAX_PAYLOAD, META_BASE_ALLOCATION_ID, ReplyFlag, ReplyType, REQUEST_HEADER_SIZE, SIMPLE_REPLY_SIZE, cmdName, errnoName } from './protocol.js';
import type { ExportProvider } from './export.js';
import {
  type Request,
  decodeRequestHeader,
  encodeBlockStatus,
  encodeChunkHeader,
  encodeSimpleReply,
  encodeStructuredError,
  normaliseExtents,
  OFFSET_DATA_PREFIX_SIZE,
  validateRequest,
  writeOffsetDataPrefix,
  writeSimpleReply,
} from './transmission.js';
import type { BufferPool, Slab } from './slab.js';
import type { NbdRequestObserver } from '../metrics/nbd.js';

/** Minimal structured logger; a pino logger fits. */
export interface NbdLogger {
  debug(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

const noop = (): void => undefined;
export const silentLogger: NbdLogger = { debug: noop, info: noop, warn: noop, error: noop };

/** Per-connection limits (server options pass them through). */
export interface ConnectionLimits {
  /** Pause reading while WRITE payload + READ data in flight exceed this (default 64 MiB). */
  readonly inflightBudget: number;
  /** Pause reading while this many requests are in flight (default 512). */
  readonly maxInflightRequests: number;
  /**
   * An oversize WRITE (> maximum payload) up to this many bytes has its payload read and
   * discarded, then gets EINVAL; above it the connection is dropped (default 64 MiB).
   */
  readonly discardLimit: number;
  /** Drop clients that have not finished negotiating after this long (default 30 s; 0 = never). */
  readonly handshakeTimeoutMs: number;
}

export const DEFAULT_LIMITS: ConnectionLimits = {
  inflightBudget: 64 * 1024 * 1024,
  maxInflightRequests: 512,
  discardLimit: 64 * 1024 * 1024,
  handshakeTimeoutMs: 30_000,
};

export interface ConnectionContext {
  readonly id: number;
  readonly provider: ExportProvider;
  readonly logger: NbdLogger;
  readonly limits: ConnectionLimits;
  /** True once the server is shutting down. */
  readonly isShuttingDown: () => boolean;
  /** Allocator for small reply buffers (shared by the server's connections). */
  readonly slab: Slab;
  /** Recycled large buffers for READ replies and WRITE payloads (shared). */
  readonly pool: BufferPool;
  /**
   * Told of every answered request (metrics). It must be cheap: it runs once per request on the
   * data path. Without it, the only extra work per request is one undefined check.
   */
  readonly observer?: NbdRequestObserver;
}

export type ConnectionPhase = 'handshake' | 'transmission' | 'closing' | 'closed';

/** Counters for diagnostics and tests. */
export interface ConnectionStats {
  requests: number;
  errors: number;
  /** Highest inflightBytes seen. */
  peakInflightBytes: number;
  /** Highest number of bytes buffered in the receive queue. */
  peakQueuedBytes: number;
  /** Times reading was paused for backpressure. */
  pauses: number;
}

/** Most replies corked into one writev. */
const MAX_BATCH = 8;

/** How long a graceful close may take to flush pending replies before the socket is dropped. */
const END_TIMEOUT_MS = 10_000;

function callExport<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return fn();
  } catch (err) {
    return Promise.reject(err);
  }
}

export class NbdConnection {
  readonly stats: ConnectionStats = { requests: 0, errors: 0, peakInflightBytes: 0, peakQueuedBytes: 0, pauses: 0 };
  private phaseValue: ConnectionPhase = 'handshake';
  private readonly queue = new ByteQueue();
  private readonly handshake: Handshake;
  private neg: Negotiated | undefined;
  private exp: NbdExport | undefined;
  private readonly log: NbdLogger;

  /** Header of a WRITE whose payload has not fully arrived. */
  private pendingWrite: Request | undefined;
  /** Oversize WRITE whose payload is being discarded, and how much of it remains. */
  private discardReq: Request | undefined;
  private discardLeft = 0;

  private inflightRequests = 0;
  /** performance.now() at the last socket read (kept only with an observer). */
  private receivedAt = 0;
  private inflightBytesValue = 0;
  private readPaused = false;
  private writeBlocked = false;
  private pumpScheduled = false;
  /** Replies written since the current cork() (0 = not corked). */
  private batched = 0;
  /** DISC received or shutdown: decode nothing more (shutdown still answers ESHUTDOWN). */
  private discReceived = false;
  private shuttingDown = false;
  private socketClosed = false;
  private handshakeTimer: NodeJS.Timeout | undefined;
  private idleWaiters: (() => void)[] = [];
  private readonly closedPromise: Promise<void>;
  private resolveClosed!: () => void;

  constructor(
    private readonly socket: Socket,
    private readonly ctx: ConnectionContext,
  ) {
    this.log = ctx.logger;
    this.closedPromise = new Promise((resolve) => (this.resolveClosed = resolve));
    this.handshake = new Handshake({ provider: ctx.provider, isShuttingDown: ctx.isShuttingDown }, (b) => this.out(b));
  }

  get id(): number {
    return this.ctx.id;
  }
  get phase(): ConnectionPhase {
    return this.phaseValue;
  }
  get inflightBytes(): number {
    return this.inflightBytesValue;
  }
  get inflight(): number {
    return this.inflightRequests;
  }
  /** The negotiated export, once in transmission. */
  get export(): NbdExport | undefined {
    return this.exp;
  }
  /** Resolves when the socket is closed and no export call of this connection is pending. */
  get closed(): Promise<void> {
    return this.closedPromise;
  }

  /** Sends the greeting and starts reading. */
  start(): void {
    const s = this.socket;
    s.on('data', (chunk: Buffer) => this.guard(() => this.onData(chunk)));
    s.on('error', (err) => this.log.debug({ conn: this.id, err: err.message }, 'nbd: socket error'));
    s.on('close', () => this.guard(() => this.onSocketClose()));
    s.on('drain', () => this.guard(() => this.onDrain()));
    if (this.ctx.limits.handshakeTimeoutMs > 0) {
      this.handshakeTimer = setTimeout(() => this.guard(() => this.abort('handshake timeout')), this.ctx.limits.handshakeTimeoutMs);
      this.handshakeTimer.unref();
    }
    this.out(this.handshake.greeting());
  }

  /**
   * Server shutdown, step 1: negotiating clients are let go; in transmission, requests arriving
   * from now on get ESHUTDOWN while in-flight ones complete.
   */
  beginShutdown(): void {
    this.shuttingDown = true;
    if (this.phaseValue === 'handshake') this.end('server shutting down');
  }

  /** Resolves once no request of this connection is in flight. */
  idle(): Promise<void> {
    if (this.inflightRequests === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Flushes pending replies and closes the connection (graceful). */
  end(reason: string): void {
    if (this.phaseValue === 'closing' || this.phaseValue === 'closed') return;
    this.log.debug({ conn: this.id, reason }, 'nbd: closing connection');
    this.phaseValue = 'closing';
    this.clearHandshakeTimer();
    this.queue.clear();
    this.flushBatch();
    this.socket.end(() => this.socket.destroy());
    // A peer that stops reading would keep the socket half-closed for ever.
    setTimeout(() => this.socket.destroy(), END_TIMEOUT_MS).unref();
  }

  /** Hard disconnect: drops the socket now, pending replies included. */
  abort(reason: string): void {
    if (this.phaseValue === 'closed') return;
    this.log.debug({ conn: this.id, reason }, 'nbd: dropping connection');
    this.phaseValue = 'closing';
    this.clearHandshakeTimer();
    this.queue.clear();
    this.socket.destroy();
  }

  // ─── Input ──────────────────────────────────────────────────────────────────────────────────

  /** Runs an event handler; any exception kills this connection only. */
  private guard(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.log.error({ conn: this.id, err: err instanceof Error ? err.stack ?? err.message : String(err) }, 'nbd: internal error, dropping connection');
      this.abort('internal error');
    }
  }

  private onData(chunk: Buffer): void {
    if (this.phaseValue === 'closing' || this.phaseValue === 'closed' || this.discReceived) return;
    this.queue.push(chunk);
    if (this.queue.length > this.stats.peakQueuedBytes) this.stats.peakQueuedBytes = this.queue.length;
    // One clock read per socket read, not per request: a queue-depth-16 client sends requests in
    // batches, and their latency counts from when they arrived.
    if (this.ctx.observer !== undefined) this.receivedAt = performance.now();
    this.pump();
  }

  /** Decodes and dispatches as much as the queue and the backpressure limits allow. */
  private pump(): void {
    if (this.phaseValue === 'handshake') {
      const r = this.handshake.advance(this.queue);
      if (r.kind === 'need-more') return;
      if (r.kind === 'close') {
        this.end(r.reason);
        return;
      }
      this.enterTransmission(r.negotiated);
    }
    if (this.phaseValue !== 'transmission') return;
    const limits = this.ctx.limits;
    while (!this.discReceived && this.phaseValue === 'transmission') {
      if (this.discardLeft > 0) {
        this.discardLeft -= this.queue.skip(this.discardLeft);
        if (this.discardLeft > 0) return;
        const req = this.discardReq as Request;
        this.discardReq = undefined;
        this.stats.requests++;
        this.replyError(req, Errno.EINVAL, 'write payload too large');
        continue;
      }
      if (this.pendingWrite === undefined) {
        if (this.writeBlocked || this.inflightBytesValue >= limits.inflightBudget || this.inflightRequests >= limits.maxInflightRequests) {
          this.pauseReading();
          return;
        }
        const h = this.queue.take(REQUEST_HEADER_SIZE);
        if (h === undefined) return;
        const req = decodeRequestHeader(h);
        if (req === undefined) {
          this.abort('bad request magic');
          return;
        }
        if (req.type !== Cmd.Write) {
          this.dispatch(req, undefined);
          if (this.yieldToCompletions()) return;
          continue;
        }
        if (req.length > MAX_PAYLOAD) {
          if (req.length > limits.discardLimit) {
            this.abort(`WRITE of ${req.length} bytes exceeds the discard limit`);
            return;
          }
          this.discardReq = req;
          this.discardLeft = req.length;
          continue;
        }
        this.pendingWrite = req;
      }
      const len = this.pendingWrite.length;
      const payload = this.queue.take(len, len >= this.ctx.pool.minSize ? this.acquireLarge : undefined);
      if (payload === undefined) return;
      const req = this.pendingWrite;
      this.pendingWrite = undefined;
      this.dispatch(req, payload);
      if (this.yieldToCompletions()) return;
    }
  }

  /**
   * After each dispatched request, lets already-settled completions run (and their replies go
   * out) before decoding the next request: the client starts consuming replies while the rest of
   * a burst is still being processed, instead of getting the whole burst's replies at once.
   * Returns true if the rest of the queue will be pumped from a microtask.
   */
  private yieldToCompletions(): boolean {
    if (this.queue.length < REQUEST_HEADER_SIZE) return false;
    if (!this.pumpScheduled) {
      this.pumpScheduled = true;
      queueMicrotask(this.scheduledPump);
    }
    return true;
  }

  private readonly acquireLarge = (n: number): Buffer => this.ctx.pool.acquire(n);

  private readonly scheduledPump = (): void => {
    this.pumpScheduled = false;
    this.guard(() => this.pump());
  };

  private enterTransmission(neg: Negotiated): void {
    this.clearHandshakeTimer();
    this.neg = neg;
    this.exp = neg.export;
    this.phaseValue = 'transmission';
    this.log.debug({ conn: this.id, export: neg.export.name, size: neg.size, flags: neg.flags, structured: neg.structured }, 'nbd: transmission');
  }

  private pauseReading(): void {
    if (this.readPaused) return;
    this.readPaused = true;
    this.stats.pauses++;
    this.socket.pause();
  }

  /** After a completion or 'drain': resume reading if within limits, and decode what is queued. */
  private maybeResume(): void {
    if (this.phaseValue !== 'transmission' || this.discReceived) return;
    const limits = this.ctx.limits;
    if (this.writeBlocked || this.inflightBytesValue >= limits.inflightBudget || this.inflightRequests >= limits.maxInflightRequests) return;
    if (this.readPaused) {
      this.readPaused = false;
      this.socket.resume();
    }
    this.pump();
  }

  private onDrain(): void {
    if (!this.writeBlocked) return;
    this.writeBlocked = false;
    this.maybeResume();
  }

  private onSocketClose(): void {
    this.socketClosed = true;
    this.phaseValue = 'closed';
    this.clearHandshakeTimer();
    this.queue.clear();
    this.maybeClosed();
  }

  private maybeClosed(): void {
    if (this.socketClosed && this.inflightRequests === 0) this.resolveClosed();
  }

  private clearHandshakeTimer(): void {
    if (this.handshakeTimer !== undefined) {
      clearTimeout(this.handshakeTimer);
      this.handshakeTimer = undefined;
    }
  }

  // ─── Requests ───────────────────────────────────────────────────────────────────────────────

  private dispatch(req: Request, payload: Buffer | undefined): void {
    if (req.type === Cmd.Disc) {
      // Soft disconnect: nothing after DISC is read; close once in-flight requests are answered.
      this.discReceived = true;
      this.queue.clear();
      this.socket.pause();
      this.log.debug({ conn: this.id }, 'nbd: DISC');
      this.afterCompletion();
      return;
    }
    this.stats.requests++;
    const obs = this.ctx.observer;
    if (obs === undefined) {
      this.execute(req, payload, 0);
      return;
    }
    const started = this.receivedAt;
    const inflight = this.inflightRequests;
    const errors = this.stats.errors;
    this.execute(req, payload, started);
    // Answered at once (a no-op, or refused): account for it now; export calls do on completion.
    if (this.inflightRequests === inflight) this.report(obs, req, started, errors);
  }

  /** Validates a request and calls the export, or answers at once. `started`: performance.now() of the socket read that delivered it (0 without an observer). */
  private execute(req: Request, payload: Buffer | undefined, started: number): void {
    const neg = this.neg as Negotiated;
    const err = this.shuttingDown ? Errno.ESHUTDOWN : validateRequest(req, neg);
    if (err !== 0) {
      this.replyError(req, err, err === Errno.ESHUTDOWN ? 'server is shutting down' : `invalid ${cmdName(req.type)} request`);
      if (payload !== undefined) this.ctx.pool.release(payload);
      return;
    }
    const exp = this.exp as NbdExport;
    const fua = (req.flags & CmdFlag.Fua) !== 0;
    const { offset, length } = req;
    switch (req.type) {
      case Cmd.Read: {
        if (length === 0) return this.replyEmptyRead(req);
        // One buffer for reply header + data: the export fills the data part in place.
        const hdr = neg.structured ? OFFSET_DATA_PREFIX_SIZE : SIMPLE_REPLY_SIZE;
        const total = hdr + length;
        const pool = this.ctx.pool;
        const frame = total >= pool.minSize ? pool.acquire(total) : this.ctx.slab.alloc(total);
        const into = frame.subarray(hdr);
        return this.run(
          req,
          started,
          length,
          () => exp.read(offset, length, into),
          (data) => this.replyRead(req, frame, into, data),
          (ok) => {
            if (!ok) pool.release(frame); // sent frames are released by their write callback
          },
        );
      }
      case Cmd.Write:
        if (length === 0) return this.replyOk(req);
        return this.run(
          req,
          started,
          length,
          () => exp.write(offset, payload as Buffer, fua),
          () => this.replyOk(req),
          // The export is done with `data` once its call settled: recycle a pooled payload.
          () => this.ctx.pool.release(payload as Buffer),
        );
      case Cmd.Flush:
        return this.run(req, started, 0, () => exp.flush(), () => this.replyOk(req));
      case Cmd.Trim:
        if (length === 0) return this.replyOk(req);
        return this.run(req, started, 0, () => exp.trim(offset, length, fua), () => this.replyOk(req));
      case Cmd.WriteZeroes: {
        const fastZero = (req.flags & CmdFlag.FastZero) !== 0;
        if (fastZero && !exp.fastZero) return this.replyError(req, Errno.ENOTSUP, 'zeroing is not fast');
        if (length === 0) return this.replyOk(req);
        const opts = { fua, noHole: (req.flags & CmdFlag.NoHole) !== 0, fastZero };
        return this.run(req, started, 0, () => exp.writeZeroes(offset, length, opts), () => this.replyOk(req));
      }
      case Cmd.Cache:
        if (length === 0 || exp.cache === undefined) return this.replyOk(req);
        return this.run(req, started, 0, () => (exp.cache as NonNullable<NbdExport['cache']>).call(exp, offset, length), () => this.replyOk(req));
      case Cmd.BlockStatus: {
        const reqOne = (req.flags & CmdFlag.ReqOne) !== 0;
        return this.run(
          req,
          started,
          0,
          () => exp.blockStatus(offset, length),
          (extents) => this.out(encodeBlockStatus(req.cookie, META_BASE_ALLOCATION_ID, normaliseExtents(extents, length, reqOne))),
        );
      }
      default:
        // validateRequest rejects every other type.
        return this.replyError(req, Errno.EINVAL, 'unknown command');
    }
  }

  /**
   * Runs one export call with accounting; replies on completion. `settled(ok)` runs after the
   * reply was handed to the socket (ok) or the error reply was sent (!ok).
   */
  private run<T>(req: Request, started: number, bytes: number, call: () => Promise<T>, onOk: (v: T) => void, settled?: (ok: boolean) => void): void {
    this.inflightRequests++;
    this.inflightBytesValue += bytes;
    if (this.inflightBytesValue > this.stats.peakInflightBytes) this.stats.peakInflightBytes = this.inflightBytesValue;
    callExport(call).then(
      (v) => this.complete(req, started, bytes, () => onOk(v), settled, true),
      (err: unknown) => this.complete(req, started, bytes, () => this.replyExportError(req, err), settled, false),
    );
  }

  private complete(req: Request, started: number, bytes: number, reply: () => void, settled: ((ok: boolean) => void) | undefined, ok: boolean): void {
    this.inflightRequests--;
    this.inflightBytesValue -= bytes;
    const obs = this.ctx.observer;
    if (obs === undefined) this.guard(reply);
    else {
      // The reply decides success (an export result of the wrong size is answered EIO).
      const errors = this.stats.errors;
      this.guard(reply);
      this.report(obs, req, started, errors);
    }
    if (settled !== undefined) this.guard(() => settled(ok));
    this.guard(() => this.afterCompletion());
  }

  /** Tells the observer of an answered request: succeeded unless the error count moved past `errorsBefore`. */
  private report(obs: NbdRequestObserver, req: Request, started: number, errorsBefore: number): void {
    obs.observe(req.type, req.length, (performance.now() - started) / 1000, this.stats.errors === errorsBefore);
  }


  private afterCompletion(): void {
    if (this.inflightRequests === 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
      if (this.discReceived && this.phaseValue === 'transmission') this.end('client sent DISC');
      this.maybeClosed();
    }
    this.maybeResume();
  }

  // ─── Replies ────────────────────────────────────────────────────────────────────────────────

  private replyOk(req: Request): void {
    this.out(encodeSimpleReply(req.cookie, 0));
  }

  /**
   * Successful READ. `frame` = room for the reply header followed by `into`; if the export filled
   * `into`, header and data leave as one buffer, otherwise the header and the export's buffer.
   */
  private replyRead(req: Request, frame: Buffer, into: Buffer, data: Buffer): void {
    if (data.length !== req.length) {
      this.replyError(req, Errno.EIO, `export returned ${data.length} bytes for a ${req.length}-byte read`);
      return;
    }
    const hdr = frame.length - into.length;
    if ((this.neg as Negotiated).structured) writeOffsetDataPrefix(frame, req.cookie, req.offset, data.length);
    else writeSimpleReply(frame, req.cookie, 0);
    const release = (): void => this.ctx.pool.release(frame);
    if (data === into) this.out(frame, undefined, release);
    else this.out(frame.subarray(0, hdr), data, release);
  }

  private replyEmptyRead(req: Request): void {
    if ((this.neg as Negotiated).structured) this.out(encodeChunkHeader(req.cookie, ReplyFlag.Done, ReplyType.None, 0));
    else this.out(encodeSimpleReply(req.cookie, 0));
  }

  private replyExportError(req: Request, err: unknown): void {
    const errno = toNbdErrno(err, req.type);
    const code = errorCode(err) ?? 'unknown';
    const level = errno === Errno.EIO ? 'warn' : 'debug';
    this.log[level]({ conn: this.id, cmd: cmdName(req.type), offset: req.offset, length: req.length, code, err: err instanceof Error ? err.message : String(err) }, 'nbd: export error');
    this.replyError(req, errno, `${errnoName(errno)} (${code})`);
  }

  /** Error reply: an ERROR chunk with structured replies, else a simple reply (no payload). */
  private replyError(req: Request, errno: number, message: string): void {
    this.stats.errors++;
    if ((this.neg as Negotiated).structured) this.out(encodeStructuredError(req.cookie, errno, message));
    else this.out(encodeSimpleReply(req.cookie, errno));
  }

  /**
   * Writes one whole reply (one buffer, or header + data) to the socket, synchronously, so
   * replies never interleave. Replies are corked in small batches: the batch goes out when it
   * holds MAX_BATCH replies or when the current tick ends, whichever comes first. That saves
   * syscalls under load while the first replies of a burst still leave early.
   */
  private out(a: Buffer, b?: Buffer, written?: () => void): void {
    const s = this.socket;
    if (this.socketClosed || s.destroyed || !s.writable) return;
    // `written` runs once the socket no longer references the buffers (successful write only).
    const cb = written === undefined ? undefined : (err?: Error | null): void => (err ? undefined : written());
    if (this.batched === 0) {
      s.cork();
      process.nextTick(this.flushBatch);
    }
    this.batched++;
    let ok = s.write(a, b === undefined ? cb : undefined);
    if (b !== undefined) ok = s.write(b, cb) && ok;
    if (this.batched >= MAX_BATCH) this.flushBatch();
    if (!ok) this.writeBlocked = true;
  }

  /** Uncorks the current batch (each batch holds exactly one cork()). */
  private readonly flushBatch = (): void => {
    if (this.batched === 0) return;
    this.batched = 0;
    this.socket.uncork();
  };
}
