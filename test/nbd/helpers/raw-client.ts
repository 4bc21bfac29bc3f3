/**
 * A deliberately small NBD client over a raw socket, for driving the server byte by byte
 * (malformed input, exact reply layouts). It hard-codes the wire constants instead of importing
 * src/nbd/protocol.ts, so a wrong constant there cannot hide behind a matching one here.
 */
import net from 'node:net';

export const MAGIC = {
  nbd: 0x4e42444d41474943n,
  ihaveopt: 0x49484156454f5054n,
  optReply: 0x0003e889045565a9n,
  request: 0x25609513,
  simple: 0x67446698,
  structured: 0x668e33ef,
} as const;

export const OPT = { exportName: 1, abort: 2, list: 3, startTls: 5, info: 6, go: 7, structured: 8, listMeta: 9, setMeta: 10, extHeaders: 11 } as const;
export const REP = {
  ack: 1,
  server: 2,
  info: 3,
  meta: 4,
  errUnsup: 0x80000001,
  errPolicy: 0x80000002,
  errInvalid: 0x80000003,
  errUnknown: 0x80000006,
  errShutdown: 0x80000007,
  errTooBig: 0x80000009,
} as const;
export const CMD = { read: 0, write: 1, disc: 2, flush: 3, trim: 4, cache: 5, writeZeroes: 6, blockStatus: 7, resize: 8 } as const;
export const FLAG = { fua: 1, noHole: 2, df: 4, reqOne: 8, fastZero: 16 } as const;
export const ERR = { EPERM: 1, EIO: 5, EINVAL: 22, ENOSPC: 28, EOVERFLOW: 75, ENOTSUP: 95, ESHUTDOWN: 108 } as const;
export const TFLAG = {
  hasFlags: 1,
  readOnly: 2,
  flush: 4,
  fua: 8,
  rotational: 16,
  trim: 32,
  writeZeroes: 64,
  df: 128,
  multiConn: 256,
  resize: 512,
  cache: 1024,
  fastZero: 2048,
} as const;

export interface OptionReply {
  opt: number;
  type: number;
  data: Buffer;
}

export interface Reply {
  kind: 'simple' | 'structured';
  cookie: Buffer;
  /** Simple: error field. Structured: error of an ERROR chunk, else 0. */
  error: number;
  /** Structured only. */
  flags: number;
  type: number;
  payload: Buffer;
}

export class ClosedError extends Error {}

export class RawClient {
  /** Received, unread bytes as a list of chunks (no concatenation of the whole backlog). */
  private chunks: Buffer[] = [];
  private size = 0;
  private ended = false;
  private waiter: (() => void) | undefined;
  readonly socket: net.Socket;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (d: Buffer) => {
      this.chunks.push(d);
      this.size += d.length;
      this.wake();
    });
    socket.on('close', () => {
      this.ended = true;
      this.wake();
    });
    socket.on('error', () => {
      this.ended = true;
      this.wake();
    });
  }

  /** Connects to a Unix socket path, or to a TCP address. */
  static connect(target: string | { host: string; port: number }): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = typeof target === 'string' ? net.connect(target) : net.connect(target.port, target.host);
      s.once('connect', () => resolve(new RawClient(s)));
      s.once('error', reject);
    });
  }

  get closed(): boolean {
    return this.ended;
  }

  /** Bytes received but not read yet. */
  get pending(): number {
    return this.size;
  }

  /** Removes and returns the first n (≤ size) received bytes. */
  private takeBytes(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const c = this.chunks[0] as Buffer;
      const k = Math.min(c.length, n - filled);
      c.copy(out, filled, 0, k);
      filled += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    this.size -= n;
    return out;
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  /** Waits until `cond` holds or the deadline passes (event-driven, no polling). */
  private async until(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!cond()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timeout waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  }

  /** Reads exactly n bytes; throws ClosedError if the server closes first. */
  async read(n: number, timeoutMs = 5000): Promise<Buffer> {
    await this.until(() => this.size >= n || this.ended, timeoutMs, `${n} bytes`);
    if (this.size < n) throw new ClosedError(`connection closed with ${this.size}/${n} bytes`);
    return this.takeBytes(n);
  }

  write(b: Buffer): Promise<void> {
    return new Promise((resolve, reject) => this.socket.write(b, (err) => (err ? reject(err) : resolve())));
  }

  /** Resolves once the server has closed the connection; returns whatever it sent meanwhile. */
  async expectClosed(timeoutMs = 5000): Promise<Buffer> {
    await this.until(() => this.ended, timeoutMs, 'server to close the connection');
    return this.takeBytes(this.size);
  }

  close(): void {
    this.socket.destroy();
  }

  // ─── Handshake ──────────────────────────────────────────────────────────────────────────────

  /** Reads and checks the 18-byte greeting; returns the handshake flags. */
  async greeting(): Promise<number> {
    const g = await this.read(18);
    if (g.readBigUInt64BE(0) !== MAGIC.nbd || g.readBigUInt64BE(8) !== MAGIC.ihaveopt) throw new Error('bad greeting');
    return g.readUInt16BE(16);
  }

  sendClientFlags(flags: number): Promise<void> {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(flags >>> 0, 0);
    return this.write(b);
  }

  static option(opt: number, data: Buffer = Buffer.alloc(0), length = data.length): Buffer {
    const h = Buffer.alloc(16);
    h.writeBigUInt64BE(MAGIC.ihaveopt, 0);
    h.writeUInt32BE(opt >>> 0, 8);
    h.writeUInt32BE(length >>> 0, 12);
    return Buffer.concat([h, data]);
  }

  sendOption(opt: number, data: Buffer = Buffer.alloc(0)): Promise<void> {
    return this.write(RawClient.option(opt, data));
  }

  async readOptionReply(): Promise<OptionReply> {
    const h = await this.read(20);
    if (h.readBigUInt64BE(0) !== MAGIC.optReply) throw new Error(`bad option reply magic ${h.readBigUInt64BE(0).toString(16)}`);
    const len = h.readUInt32BE(16);
    return { opt: h.readUInt32BE(8), type: h.readUInt32BE(12), data: await this.read(len) };
  }

  /** Reads replies until a final one (ACK or error); returns them all. */
  async readOptionReplies(): Promise<OptionReply[]> {
    const out: OptionReply[] = [];
    for (;;) {
      const r = await this.readOptionReply();
      out.push(r);
      if (r.type === REP.ack || r.type >= 0x80000000) return out;
    }
  }

  static infoData(name: string, infos: number[] = []): Buffer {
    const n = Buffer.from(name);
    const b = Buffer.alloc(4 + n.length + 2 + 2 * infos.length);
    b.writeUInt32BE(n.length, 0);
    n.copy(b, 4);
    b.writeUInt16BE(infos.length, 4 + n.length);
    infos.forEach((t, i) => b.writeUInt16BE(t, 6 + n.length + 2 * i));
    return b;
  }

  static metaData(name: string, queries: string[]): Buffer {
    const parts: Buffer[] = [];
    const n = Buffer.from(name);
    const h = Buffer.alloc(4);
    h.writeUInt32BE(n.length, 0);
    parts.push(h, n);
    const c = Buffer.alloc(4);
    c.writeUInt32BE(queries.length, 0);
    parts.push(c);
    for (const q of queries) {
      const qb = Buffer.from(q);
      const l = Buffer.alloc(4);
      l.writeUInt32BE(qb.length, 0);
      parts.push(l, qb);
    }
    return Buffer.concat(parts);
  }

  /**
   * Full fixed-newstyle negotiation ending in GO. Returns the export size and transmission flags
   * from NBD_INFO_EXPORT.
   */
  async negotiate(opts: { name?: string; structured?: boolean; meta?: string[]; noZeroes?: boolean } = {}): Promise<{ size: bigint; flags: number }> {
    const name = opts.name ?? '';
    await this.greeting();
    await this.sendClientFlags(opts.noZeroes === false ? 1 : 3);
    if (opts.structured) {
      await this.sendOption(OPT.structured);
      const r = await this.readOptionReply();
      if (r.type !== REP.ack) throw new Error(`STRUCTURED_REPLY not acked: ${r.type}`);
    }
    if (opts.meta !== undefined) {
      await this.sendOption(OPT.setMeta, RawClient.metaData(name, opts.meta));
      const rs = await this.readOptionReplies();
      const last = rs[rs.length - 1];
      if (last?.type !== REP.ack) throw new Error(`SET_META_CONTEXT failed: ${last?.type}`);
    }
    await this.sendOption(OPT.go, RawClient.infoData(name, [3]));
    const rs = await this.readOptionReplies();
    const last = rs[rs.length - 1];
    if (last?.type !== REP.ack) throw new Error(`GO failed: 0x${last?.type.toString(16)} ${last?.data.toString()}`);
    const exp = rs.find((r) => r.type === REP.info && r.data.readUInt16BE(0) === 0);
    if (exp === undefined) throw new Error('no NBD_INFO_EXPORT');
    return { size: exp.data.readBigUInt64BE(2), flags: exp.data.readUInt16BE(10) };
  }

  // ─── Transmission ───────────────────────────────────────────────────────────────────────────

  static cookie(n: bigint): Buffer {
    const c = Buffer.alloc(8);
    c.writeBigUInt64BE(n, 0);
    return c;
  }

  static request(type: number, flags: number, cookie: Buffer, offset: bigint | number, length: number, payload?: Buffer): Buffer {
    const h = Buffer.alloc(28);
    h.writeUInt32BE(MAGIC.request, 0);
    h.writeUInt16BE(flags, 4);
    h.writeUInt16BE(type, 6);
    cookie.copy(h, 8);
    h.writeBigUInt64BE(BigInt(offset), 16);
    h.writeUInt32BE(length >>> 0, 24);
    return payload === undefined ? h : Buffer.concat([h, payload]);
  }

  send(type: number, flags: number, cookie: Buffer | bigint, offset: bigint | number, length: number, payload?: Buffer): Promise<void> {
    const c = typeof cookie === 'bigint' ? RawClient.cookie(cookie) : cookie;
    return this.write(RawClient.request(type, flags, c, offset, length, payload));
  }

  /**
   * Reads one reply (simple, or one structured chunk). For a successful simple reply to a READ,
   * pass `readLength` to read its data into `payload`.
   */
  async readReply(readLength = 0): Promise<Reply> {
    const m = await this.read(4);
    const magic = m.readUInt32BE(0);
    if (magic === MAGIC.simple) {
      const r = await this.read(12);
      const error = r.readUInt32BE(0);
      const payload = error === 0 && readLength > 0 ? await this.read(readLength) : Buffer.alloc(0);
      return { kind: 'simple', error, cookie: r.subarray(4, 12), flags: 0, type: 0, payload };
    }
    if (magic === MAGIC.structured) {
      const r = await this.read(16);
      const flags = r.readUInt16BE(0);
      const type = r.readUInt16BE(2);
      const len = r.readUInt32BE(12);
      const payload = await this.read(len);
      const error = (type & 0x8000) !== 0 ? payload.readUInt32BE(0) : 0;
      return { kind: 'structured', error, cookie: r.subarray(4, 12), flags, type, payload };
    }
    throw new Error(`bad reply magic 0x${magic.toString(16)}`);
  }

  /** Sends DISC and waits for the server to close. */
  async disconnect(): Promise<void> {
    await this.send(CMD.disc, 0, 0n, 0, 0);
    await this.expectClosed();
  }
}
