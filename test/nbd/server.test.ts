/**
 * Server behaviour over real Unix sockets with a raw client: reply layouts and cookies,
 * out-of-order completion, FLUSH/FUA, block status, DISC, export errors, graceful shutdown,
 * backpressure, socket hygiene, lifecycle and chunking robustness.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import fc from 'fast-check';
import { pino } from 'pino';

import { ExportError, type Extent, MapExportProvider, type NbdExport, type WriteZeroesOptions } from '../../src/nbd/export.js';
import { MemoryExport } from '../../src/nbd/memory-export.js';
import { NbdServer, NbdServerError } from '../../src/nbd/server.js';
import { type Fixture, GatedExport, MiB, assertServes, run, startServer, tempDir } from './helpers/fixture.js';
import { pollUntil } from '../../src/host/poll.js';
import { CMD, ERR, FLAG, OPT, REP, RawClient, TFLAG } from './helpers/raw-client.js';

/** An export whose operations fail on demand (by offset), to exercise error mapping. */
class FaultyExport implements NbdExport {
  readonly name = 'faulty';
  readonly readOnly = false;
  readonly fastZero = true;
  constructor(private readonly inner: MemoryExport) {}
  size(): number {
    return this.inner.size();
  }
  private fault(offset: number): void {
    if (offset === 4096) throw new ExportError('NO_SPACE', 'disk full');
    if (offset === 8192) throw new Error('no code at all');
    if (offset === 12288) throw Object.assign(new Error('engine closing'), { code: 'CLOSED' });
    if (offset === 16384) throw Object.assign(new Error('fs'), { code: 'EROFS' });
  }
  read(offset: number, length: number, into: Buffer): Promise<Buffer> {
    if (offset === 20480) return Promise.resolve(Buffer.alloc(length - 1)); // wrong length
    this.fault(offset); // synchronous throw from a non-async method
    return this.inner.read(offset, length, into);
  }
  async write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    this.fault(offset);
    return this.inner.write(offset, data, fua);
  }
  writeZeroes(offset: number, length: number, opts: WriteZeroesOptions): Promise<void> {
    return this.inner.writeZeroes(offset, length, opts);
  }
  trim(offset: number, length: number, fua: boolean): Promise<void> {
    return this.inner.trim(offset, length, fua);
  }
  flush(): Promise<void> {
    return Promise.reject(new ExportError('IO', 'flush failed'));
  }
  async blockStatus(): Promise<Extent[]> {
    return []; // nothing usable: the server must fall back to "data"
  }
}

describe('transmission over a raw socket', () => {
  let fx: Fixture;
  const gated = new GatedExport(new MemoryExport({ name: 'gated', size: 16 * MiB }));
  const faulty = new FaultyExport(new MemoryExport({ name: 'faulty', size: 16 * MiB }));

  before(async () => {
    fx = await startServer({ size: 64 * MiB, exports: [gated, faulty] });
  });
  after(async () => {
    await fx.close();
  });

  async function open(opts: { name?: string; structured?: boolean; meta?: string[] } = {}): Promise<RawClient> {
    const c = await RawClient.connect(fx.sock);
    await c.negotiate({ structured: true, ...opts });
    return c;
  }

  it('echoes 64-bit cookies verbatim and lays out simple and structured READ replies', async () => {
    const data = randomBytes(8192);
    fx.mem.writeSync(1 * MiB, data);
    const cookies = [Buffer.from('ffffffffffffffff', 'hex'), Buffer.from('8000000000000001', 'hex'), randomBytes(8)];
    for (const structured of [false, true]) {
      const c = await open({ structured });
      for (const cookie of cookies) {
        await c.send(CMD.read, 0, cookie, 1 * MiB + 512, 4096);
        const r = await c.readReply(4096);
        assert.ok(r.cookie.equals(cookie), `cookie ${cookie.toString('hex')} (structured=${structured})`);
        assert.equal(r.error, 0);
        if (structured) {
          assert.equal(r.kind, 'structured');
          assert.equal(r.type, 1, 'OFFSET_DATA');
          assert.equal(r.flags, 1, 'DONE');
          assert.equal(r.payload.readBigUInt64BE(0), BigInt(1 * MiB + 512), 'offset field');
          assert.ok(r.payload.subarray(8).equals(data.subarray(512, 512 + 4096)));
        } else {
          assert.equal(r.kind, 'simple');
          assert.ok(r.payload.equals(data.subarray(512, 512 + 4096)));
        }
      }
      // Zero-length read: NONE chunk with DONE, or a bare simple reply.
      await c.send(CMD.read, 0, 77n, 0, 0);
      const z = await c.readReply(0);
      assert.equal(z.error, 0);
      assert.equal(z.payload.length, 0);
      if (structured) assert.deepEqual([z.type, z.flags], [0, 1]);
      await c.disconnect();
    }
  });

  it('replies out of order when an earlier request is slower', async () => {
    const c = await open({ name: 'gated' });
    const release = gated.hold('read');
    const arrived = gated.arrived('read');
    await c.send(CMD.read, 0, 1n, 0, 4096);
    await arrived;
    await c.send(CMD.write, 0, 2n, 65536, 4096, Buffer.alloc(4096, 3));
    const first = await c.readReply();
    assert.ok(first.cookie.equals(RawClient.cookie(2n)), 'the write completes first');
    release();
    const second = await c.readReply();
    assert.ok(second.cookie.equals(RawClient.cookie(1n)));
    assert.equal(second.payload.length, 8 + 4096);
    await c.disconnect();
  });

  it('passes FUA through, and FLUSH reaches the export after earlier writes were answered', async () => {
    const c = await open({ structured: false });
    const before = { ...fx.mem.counters };
    await c.send(CMD.write, FLAG.fua, 1n, 0, 512, Buffer.alloc(512, 1));
    assert.equal((await c.readReply()).error, 0);
    await c.send(CMD.write, 0, 2n, 512, 512, Buffer.alloc(512, 2));
    assert.equal((await c.readReply()).error, 0);
    await c.send(CMD.flush, 0, 3n, 0, 0);
    assert.equal((await c.readReply()).error, 0);
    assert.equal(fx.mem.counters.fuaWrites - before.fuaWrites, 1);
    assert.equal(fx.mem.counters.writes - before.writes, 2);
    assert.equal(fx.mem.counters.flushes - before.flushes, 1);
    await c.disconnect();
  });

  it('reports base:allocation extents: data after WRITE, hole after TRIM; REQ_ONE gives one extent', async () => {
    const mem = new MemoryExport({ name: 'bs', size: 1 * MiB });
    fx.provider.add(mem);
    const c = await open({ name: 'bs', meta: ['base:allocation'] });
    await c.send(CMD.write, 0, 1n, 65536, 131072, Buffer.alloc(131072, 0xaa));
    assert.equal((await c.readReply()).error, 0);
    const status = async (flags: number, offset: number, length: number): Promise<[number, number][]> => {
      await c.send(CMD.blockStatus, flags, 5n, offset, length);
      const r = await c.readReply();
      assert.equal(r.type, 5, 'BLOCK_STATUS chunk');
      assert.equal(r.flags, 1, 'DONE');
      assert.equal(r.payload.readUInt32BE(0), 1, 'context id from SET_META_CONTEXT');
      const out: [number, number][] = [];
      for (let p = 4; p < r.payload.length; p += 8) out.push([r.payload.readUInt32BE(p), r.payload.readUInt32BE(p + 4)]);
      return out;
    };
    assert.deepEqual(await status(0, 0, 1 * MiB), [
      [65536, 3],
      [131072, 0],
      [1 * MiB - 196608, 3],
    ]);
    assert.deepEqual(await status(FLAG.reqOne, 0, 1 * MiB), [[65536, 3]]);
    assert.deepEqual(await status(FLAG.reqOne, 70000, 1000), [[1000, 0]], 'clipped to the request');
    await c.send(CMD.trim, 0, 6n, 65536, 65536);
    assert.equal((await c.readReply()).error, 0);
    assert.deepEqual(await status(0, 0, 262144), [
      [131072, 3],
      [65536, 0],
      [65536, 3],
    ]);
    // WRITE_ZEROES with NO_HOLE keeps the range allocated; without it punches a hole.
    await c.send(CMD.writeZeroes, FLAG.noHole, 7n, 0, 65536);
    assert.equal((await c.readReply()).error, 0);
    assert.deepEqual((await status(0, 0, 65536))[0], [65536, 0]);
    await c.send(CMD.writeZeroes, 0, 8n, 0, 65536);
    assert.equal((await c.readReply()).error, 0);
    assert.deepEqual((await status(0, 0, 65536))[0], [65536, 3]);
    assert.ok(mem.readSync(131072, 65536).every((b) => b === 0xaa));
    await c.send(CMD.cache, 0, 9n, 0, 65536);
    assert.equal((await c.readReply()).error, 0);
    assert.equal(mem.counters.caches, 1);
    await c.disconnect();
  });

  it('maps export errors to errnos and keeps the connection', async () => {
    for (const structured of [true, false]) {
      const c = structured ? await open({ name: 'faulty', meta: ['base:allocation'] }) : await open({ name: 'faulty', structured: false });
      const expect = async (type: number, offset: number, errno: number): Promise<void> => {
        const payload = type === CMD.write ? Buffer.alloc(512) : undefined;
        await c.send(type, 0, 1n, offset, 512, payload);
        const r = await c.readReply(512);
        assert.equal(r.error, errno, `${type}@${offset}`);
        if (structured && errno !== 0) assert.ok(r.payload.readUInt16BE(4) > 0, "error chunk carries a message");
      };
      await expect(CMD.write, 4096, ERR.ENOSPC);
      await expect(CMD.write, 8192, ERR.EIO);
      await expect(CMD.write, 12288, 108 /* ESHUTDOWN */);
      await expect(CMD.write, 16384, ERR.EPERM);
      await expect(CMD.read, 4096, ERR.ENOSPC);
      await expect(CMD.read, 20480, ERR.EIO);
      await expect(CMD.read, 0, 0);
      await c.send(CMD.flush, 0, 2n, 0, 0);
      assert.equal((await c.readReply()).error, ERR.EIO);
      if (structured) {
        await c.send(CMD.blockStatus, 0, 3n, 0, 8192);
        const r = await c.readReply();
        assert.deepEqual([r.payload.readUInt32BE(4), r.payload.readUInt32BE(8)], [8192, 0], 'fallback: all data');
      }
      await c.disconnect();
    }
    await assertServes(fx.sock);
  });

  it('DISC waits for in-flight requests, answers them, then closes', async () => {
    const c = await open({ name: 'gated' });
    const release = gated.hold('write');
    const arrived = gated.arrived('write');
    await c.send(CMD.write, 0, 1n, 0, 4096, Buffer.alloc(4096, 5));
    await arrived;
    await c.send(CMD.disc, 0, 2n, 0, 0);
    // A request after DISC is ignored (the client must not send it).
    await c.send(CMD.read, 0, 3n, 0, 512).catch(() => undefined);
    await new Promise((r) => setImmediate(r));
    assert.equal(c.closed, false, 'not closed while a request is in flight');
    release();
    const r = await c.readReply();
    assert.ok(r.cookie.equals(RawClient.cookie(1n)));
    assert.equal(r.error, 0);
    assert.equal((await c.expectClosed()).length, 0, 'nothing after the last reply');
    assert.ok(gated.inner.readSync(0, 4096).every((b) => b === 5));
  });

  it('enters transmission via EXPORT_NAME (with and without NO_ZEROES) using simple replies', async () => {
    for (const noZeroes of [true, false]) {
      const c = await RawClient.connect(fx.sock);
      await c.greeting();
      await c.sendClientFlags(noZeroes ? 3 : 1);
      await c.sendOption(OPT.exportName, Buffer.from(''));
      const reply = await c.read(noZeroes ? 10 : 134);
      assert.equal(reply.readBigUInt64BE(0), 64n * BigInt(MiB));
      const flags = reply.readUInt16BE(8);
      assert.equal(flags & TFLAG.df, 0, 'no DF without structured replies');
      assert.equal(flags & TFLAG.multiConn, TFLAG.multiConn);
      if (!noZeroes) assert.ok(reply.subarray(10).equals(Buffer.alloc(124)));
      await c.send(CMD.read, 0, 1n, 0, 512);
      const r = await c.readReply(512);
      assert.equal(r.kind, 'simple');
      await c.disconnect();
    }
  });

  it('shares state across connections (multi-conn) and sees size changes on new connections', async () => {
    const a = await open();
    const b = await open();
    await a.send(CMD.write, 0, 1n, 3 * MiB, 4096, Buffer.alloc(4096, 0x42));
    assert.equal((await a.readReply()).error, 0);
    await b.send(CMD.read, 0, 2n, 3 * MiB, 4096);
    assert.ok((await b.readReply()).payload.subarray(8).equals(Buffer.alloc(4096, 0x42)));
    fx.mem.resize(128 * MiB);
    try {
      const c = await RawClient.connect(fx.sock);
      const { size } = await c.negotiate({ structured: true });
      assert.equal(size, 128n * BigInt(MiB), 'new connection sees the new size');
      await c.disconnect();
      await a.send(CMD.read, 0, 3n, 100 * MiB, 512);
      assert.equal((await a.readReply()).error, ERR.EINVAL, 'old connection keeps the size it negotiated');
    } finally {
      fx.mem.resize(64 * MiB);
    }
    await a.disconnect();
    await b.disconnect();
  });

  it('exports can disappear: new GO gets ERR_UNKNOWN, established connections keep working', async () => {
    const tmp = new MemoryExport({ name: 'tmp', size: MiB });
    fx.provider.add(tmp);
    const c = await open({ name: 'tmp' });
    fx.provider.remove('tmp');
    const d = await RawClient.connect(fx.sock);
    await d.greeting();
    await d.sendClientFlags(3);
    await d.sendOption(OPT.go, RawClient.infoData('tmp'));
    assert.equal((await d.readOptionReply()).type, REP.errUnknown);
    d.close();
    await c.send(CMD.read, 0, 1n, 0, 512);
    assert.equal((await c.readReply()).error, 0);
    await c.disconnect();
  });

  it('replies are identical whatever the chunking of the client byte stream', async () => {
    // One script: negotiate, write, read back, block status, flush, DISC; written in random pieces.
    const mem = new MemoryExport({ name: 'split', size: MiB });
    fx.provider.add(mem);
    const payload = Buffer.alloc(3000, 0x61);
    const script = Buffer.concat([
      Buffer.from('00000003', 'hex'),
      RawClient.option(OPT.structured),
      RawClient.option(OPT.setMeta, RawClient.metaData('split', ['base:allocation'])),
      RawClient.option(OPT.go, RawClient.infoData('split', [3])),
      RawClient.request(CMD.write, 0, RawClient.cookie(1n), 100, payload.length, payload),
      RawClient.request(CMD.flush, 0, RawClient.cookie(2n), 0, 0),
      RawClient.request(CMD.read, 0, RawClient.cookie(3n), 100, 3000),
      RawClient.request(CMD.blockStatus, 0, RawClient.cookie(4n), 0, 65536),
      RawClient.request(CMD.disc, 0, RawClient.cookie(5n), 0, 0),
    ]);
    const transcript = async (pieces: Buffer[]): Promise<Buffer> => {
      const c = await RawClient.connect(fx.sock);
      for (const p of pieces) {
        await c.write(p);
        await new Promise((r) => setImmediate(r)); // let the server see each piece on its own
      }
      return c.expectClosed();
    };
    const reference = await transcript([script]);
    assert.ok(reference.length > 18 + 20);
    await fc.assert(
      fc.asyncProperty(fc.array(fc.nat({ max: script.length }), { minLength: 1, maxLength: 12 }), async (cuts) => {
        const points = [...new Set(cuts)].sort((x, y) => x - y);
        const pieces: Buffer[] = [];
        let prev = 0;
        for (const p of [...points, script.length]) {
          if (p > prev) pieces.push(script.subarray(prev, p));
          prev = p;
        }
        const got = await transcript(pieces);
        assert.equal(got.toString('hex'), reference.toString('hex'));
      }),
      { numRuns: 25 },
    );
  });

  it('survives arbitrary byte streams on many connections and still serves', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 4096 }), fc.boolean(), async (junk, negotiated) => {
        const c = await RawClient.connect(fx.sock);
        if (negotiated) await c.negotiate({ structured: true });
        await c.write(Buffer.from(junk)).catch(() => undefined);
        c.close();
      }),
      { numRuns: 60 },
    );
    await pollUntil(() => [...fx.server.connections].every((c) => c.phase !== 'closing'), 5000, 'junk connections to go away');
    await assertServes(fx.sock);
  });
});

describe('backpressure', () => {
  it('pauses reading while replies are not consumed; memory stays bounded; all replies arrive intact', async () => {
    const fx = await startServer({ size: 256 * MiB, limits: { inflightBudget: 8 * MiB }, highWaterMark: 1 * MiB });
    try {
      const pattern = randomBytes(1 * MiB);
      for (let i = 0; i < 256; i++) fx.mem.writeSync(i * MiB, pattern);
      const c = await RawClient.connect(fx.sock);
      await c.negotiate({ structured: true });
      c.socket.pause(); // do not read replies
      const n = 200; // 200 MiB of READ replies requested
      const reqs = Buffer.concat(Array.from({ length: n }, (_, i) => RawClient.request(CMD.read, 0, RawClient.cookie(BigInt(i)), i * MiB, MiB)));
      c.socket.write(reqs);
      const conn = [...fx.server.connections][0];
      assert.ok(conn !== undefined);
      await pollUntil(() => conn.stats.pauses > 0, 5000, 'server to pause reading');
      // The server stopped producing replies long before all 200 MiB were read.
      assert.ok(conn.stats.requests < n, `served ${conn.stats.requests} requests while the client read nothing`);
      assert.ok(conn.stats.peakInflightBytes <= 8 * MiB + MiB, `in flight peaked at ${conn.stats.peakInflightBytes}`);
      assert.ok(conn.stats.peakQueuedBytes <= 1 * MiB, `receive queue peaked at ${conn.stats.peakQueuedBytes}`);
      c.socket.resume();
      for (let i = 0; i < n; i++) {
        const r = await c.readReply();
        assert.equal(r.error, 0);
        assert.ok(r.cookie.equals(RawClient.cookie(BigInt(i))), 'memory export completes in order');
        assert.ok(r.payload.subarray(8).equals(pattern));
      }
      assert.equal(conn.stats.requests, n);
      await c.disconnect();
    } finally {
      await fx.close();
    }
  });

  it('pauses on the in-flight budget when the export is slow (large WRITEs)', async () => {
    const gated = new GatedExport(new MemoryExport({ name: '', size: 256 * MiB }));
    const fx = await startServer({ defaultExport: gated.inner, limits: { inflightBudget: 16 * MiB } });
    fx.provider.add(gated); // replace "" with the gated wrapper
    try {
      const c = await RawClient.connect(fx.sock);
      await c.negotiate({ structured: true });
      const release = gated.hold('write');
      const payload = Buffer.alloc(4 * MiB, 0x33);
      const n = 40; // 160 MiB of writes
      for (let i = 0; i < n; i++) c.socket.write(RawClient.request(CMD.write, 0, RawClient.cookie(BigInt(i)), i * 4 * MiB, payload.length, payload));
      const conn = [...fx.server.connections][0];
      assert.ok(conn !== undefined);
      await pollUntil(() => conn.stats.pauses > 0 && conn.inflightBytes >= 16 * MiB, 10_000, 'in-flight budget to fill');
      assert.ok(conn.inflightBytes <= 16 * MiB + 4 * MiB, `in flight ${conn.inflightBytes}`);
      assert.ok(conn.stats.peakQueuedBytes <= 4 * MiB + 28 + 4 * MiB, `queue peaked at ${conn.stats.peakQueuedBytes}`);
      release();
      for (let i = 0; i < n; i++) assert.equal((await c.readReply()).error, 0);
      assert.ok(gated.inner.readSync(39 * 4 * MiB, 4 * MiB).equals(payload));
      await c.disconnect();
    } finally {
      await fx.close();
    }
  });
});

describe('graceful shutdown', () => {
  it('finishes in-flight requests, answers new ones ESHUTDOWN, flushes once, closes, removes the socket', async () => {
    const gated = new GatedExport(new MemoryExport({ name: 'g', size: 16 * MiB }));
    const fx = await startServer({ exports: [gated] });
    const c = await RawClient.connect(fx.sock);
    await c.negotiate({ name: 'g', structured: false });
    const idle = await RawClient.connect(fx.sock); // still negotiating: dropped at shutdown
    await idle.greeting();
    const release = gated.hold('write');
    const arrived = gated.arrived('write');
    await c.send(CMD.write, 0, 1n, 0, 4096, Buffer.alloc(4096, 8));
    await arrived;
    const closing = fx.server.close({ graceMs: 5000 });
    await idle.expectClosed();
    await c.send(CMD.read, 0, 2n, 0, 4096);
    const shut = await c.readReply();
    assert.ok(shut.cookie.equals(RawClient.cookie(2n)));
    assert.equal(shut.error, ERR.ESHUTDOWN);
    assert.equal(gated.inner.counters.flushes, 0, 'no flush before in-flight writes finished');
    release();
    const done = await c.readReply();
    assert.ok(done.cookie.equals(RawClient.cookie(1n)));
    assert.equal(done.error, 0, 'in-flight write completed normally');
    await c.expectClosed();
    await closing;
    assert.equal(gated.inner.counters.flushes, 1);
    assert.ok(gated.inner.readSync(0, 4096).every((b) => b === 8));
    await assert.rejects(fsp.stat(fx.sock), { code: 'ENOENT' }, 'socket removed');
    await assert.rejects(RawClient.connect(fx.sock));
    await fsp.rm(fx.dir, { recursive: true, force: true });
  });

  it('drops a client that never finishes negotiating (handshake timeout)', async () => {
    const fx = await startServer({ limits: { handshakeTimeoutMs: 200 } });
    try {
      const c = await RawClient.connect(fx.sock);
      await c.greeting();
      const t0 = Date.now();
      await c.expectClosed(5000);
      assert.ok(Date.now() - t0 >= 150);
      await assertServes(fx.sock);
    } finally {
      await fx.close();
    }
  });
});

describe('containment and options', () => {
  it('an internal exception destroys only the connection it happened on', async () => {
    // An export breaking its contract (blockStatus resolving to a non-array) makes the reply
    // encoder throw inside the connection: that connection is dropped, the others carry on.
    const broken = new MemoryExport({ name: 'broken', size: MiB });
    const bad: NbdExport = Object.assign(Object.create(broken) as MemoryExport, { blockStatus: () => Promise.resolve(null as unknown as Extent[]) });
    const fx = await startServer({ exports: [bad] });
    try {
      const victim = await RawClient.connect(fx.sock);
      await victim.negotiate({ name: 'broken', structured: true, meta: ['base:allocation'] });
      const bystander = await RawClient.connect(fx.sock);
      await bystander.negotiate({ structured: true });
      await bystander.send(CMD.read, 0, 1n, 0, 4096);
      await victim.send(CMD.blockStatus, 0, 2n, 0, 4096);
      await victim.expectClosed();
      assert.equal((await bystander.readReply()).error, 0);
      await bystander.send(CMD.write, 0, 3n, 0, 512, Buffer.alloc(512, 1));
      assert.equal((await bystander.readReply()).error, 0);
      await bystander.disconnect();
      await assertServes(fx.sock);
    } finally {
      await fx.close();
    }
  });

  it('serves TCP only when asked, and logs through a pino logger', async () => {
    const lines: string[] = [];
    const logger = pino({ level: 'debug' }, { write: (l: string) => void lines.push(l) });
    const mem = new MemoryExport({ name: '', size: MiB });
    const server = new NbdServer({ provider: new MapExportProvider([mem]), logger });
    try {
      const addr = await server.listenTcp('127.0.0.1', 0);
      assert.equal(server.path, undefined);
      const c = await RawClient.connect({ host: '127.0.0.1', port: addr.port });
      await c.negotiate({ structured: true });
      await c.send(CMD.write, 0, 1n, 0, 512, Buffer.alloc(512, 7));
      assert.equal((await c.readReply()).error, 0);
      await c.disconnect();
      assert.ok(mem.readSync(0, 512).every((b) => b === 7));
    } finally {
      await server.close();
    }
    const msgs = lines.map((l) => (JSON.parse(l) as { msg: string }).msg);
    assert.ok(msgs.includes('nbd: listening on TCP'));
    assert.ok(msgs.includes('nbd: transmission'));
    assert.ok(msgs.includes('nbd: closed'));
  });
});

describe('unix socket hygiene', () => {
  it('creates the directory 0700 and the socket 0600', async () => {
    const fx = await startServer();
    try {
      const dirMode = (await fsp.stat(path.dirname(fx.sock))).mode & 0o777;
      const sockStat = await fsp.lstat(fx.sock);
      assert.ok(sockStat.isSocket());
      assert.equal(dirMode, 0o700);
      assert.equal(sockStat.mode & 0o777, 0o600);
    } finally {
      await fx.close();
    }
  });

  it('replaces a stale socket, refuses a live one, a regular file, a world-writable dir, a relative path', async () => {
    const dir = await tempDir();
    const mk = (): NbdServer => new NbdServer({ provider: { list: () => [], get: () => undefined } });
    try {
      const sock = path.join(dir, 's.sock');
      // Stale: the socket file of a server that was SIGKILLed (no chance to unlink it).
      const r = await run(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(sock)}, () => process.kill(process.pid, 'SIGKILL'))`]).catch((e: unknown) => e);
      assert.ok(r instanceof Error && /SIGKILL/.test(r.message), 'helper died by SIGKILL');
      assert.ok((await fsp.lstat(sock)).isSocket(), 'stale socket left behind');
      const s1 = mk();
      await s1.listenUnix(sock);
      await assertServesNothingButHandshake(sock);
      // Live: refused.
      const s2 = mk();
      await assert.rejects(s2.listenUnix(sock), (e: unknown) => e instanceof NbdServerError && e.code === 'ADDRESS_IN_USE');
      await s1.close();
      // Regular file: refused and left alone.
      const file = path.join(dir, 'file');
      await fsp.writeFile(file, 'keep me');
      await assert.rejects(mk().listenUnix(file), (e: unknown) => e instanceof NbdServerError && e.code === 'INSECURE_PATH');
      assert.equal(await fsp.readFile(file, 'utf8'), 'keep me');
      // World-writable parent: refused.
      const open = path.join(dir, 'open');
      await fsp.mkdir(open);
      await fsp.chmod(open, 0o777);
      await assert.rejects(mk().listenUnix(path.join(open, 's.sock')), (e: unknown) => e instanceof NbdServerError && e.code === 'INSECURE_PATH');
      // Relative path: refused.
      await assert.rejects(mk().listenUnix('relative.sock'), (e: unknown) => e instanceof NbdServerError && e.code === 'INVALID_ARGUMENT');
    } finally {
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });
});

/** Connects and checks the greeting arrives (a server with no exports still negotiates). */
async function assertServesNothingButHandshake(sock: string): Promise<void> {
  const c = await RawClient.connect(sock);
  await c.greeting();
  await c.sendClientFlags(3);
  await c.sendOption(OPT.list);
  assert.deepEqual((await c.readOptionReplies()).map((r) => r.type), [REP.ack]);
  c.close();
}
