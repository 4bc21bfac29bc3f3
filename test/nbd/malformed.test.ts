/**
 * Raw-socket tests, one per malformed or hostile input. Each asserts the expected error reply or
 * disconnect AND that the same server still serves a well-behaved connection afterwards.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { MemoryExport } from '../../src/nbd/memory-export.js';
import { type Fixture, MiB, assertServes, startServer } from './helpers/fixture.js';
import { pollUntil } from '../../src/host/poll.js';
import { CMD, ERR, FLAG, OPT, REP, RawClient } from './helpers/raw-client.js';

const SIZE = 16 * MiB;

describe('malformed input over a raw socket', () => {
  let fx: Fixture;
  const ro = new MemoryExport({ name: 'ro', size: SIZE, readOnly: true });
  const slowZero = new MemoryExport({ name: 'slowzero', size: SIZE, fastZero: false });
  const aligned = new MemoryExport({ name: 'aligned', size: SIZE, blockSize: { minimum: 512, preferred: 4096, maximum: MiB } });

  before(async () => {
    fx = await startServer({ size: SIZE, exports: [ro, slowZero, aligned], limits: { discardLimit: 40 * MiB } });
  });
  after(async () => {
    await fx.close();
  });

  /** Connects, negotiates (structured by default) and returns the client. */
  async function open(opts: { name?: string; structured?: boolean; meta?: string[] } = {}): Promise<RawClient> {
    const c = await RawClient.connect(fx.sock);
    await c.negotiate({ structured: true, ...opts });
    return c;
  }

  /** Sends one request and returns the error of its reply. */
  async function errorOf(c: RawClient, type: number, flags: number, offset: bigint | number, length: number, payload?: Buffer): Promise<number> {
    await c.send(type, flags, 7n, offset, length, payload);
    const r = await c.readReply();
    assert.ok(r.cookie.equals(RawClient.cookie(7n)), 'cookie echoed');
    if (r.kind === 'structured') {
      assert.equal(r.flags & 1, 1, 'error chunk carries DONE');
      if (r.error !== 0) assert.equal(r.type, 0x8001, 'ERROR chunk');
    }
    return r.error;
  }

  it('bad option magic → disconnect', async () => {
    const c = await RawClient.connect(fx.sock);
    await c.greeting();
    await c.sendClientFlags(3);
    const bad = RawClient.option(OPT.go, RawClient.infoData(''));
    bad.writeUInt32BE(0xdeadbeef, 0);
    await c.write(bad);
    assert.equal((await c.expectClosed()).length, 0, 'no reply to a bad magic');
    await assertServes(fx.sock);
  });

  it('bad request magic → disconnect', async () => {
    const c = await open();
    const req = RawClient.request(CMD.read, 0, RawClient.cookie(1n), 0, 512);
    req.writeUInt32BE(0x25609514, 0);
    await c.write(req);
    assert.equal((await c.expectClosed()).length, 0);
    await assertServes(fx.sock);
  });

  it('unknown client flags → disconnect', async () => {
    const c = await RawClient.connect(fx.sock);
    await c.greeting();
    await c.sendClientFlags(0x80000003);
    assert.equal((await c.expectClosed()).length, 0);
    await assertServes(fx.sock);
  });

  it('oversize option length → ERR_TOO_BIG, then disconnect without reading the data', async () => {
    const c = await RawClient.connect(fx.sock);
    await c.greeting();
    await c.sendClientFlags(3);
    await c.write(RawClient.option(OPT.info, Buffer.alloc(0), 0x7fffffff));
    const r = await c.readOptionReply();
    assert.equal(r.type, REP.errTooBig);
    await c.expectClosed();
    await assertServes(fx.sock);
  });

  it('truncated frames (option header, option data, request header, write payload) then EOF', async () => {
    const before = fx.server.connections.size;
    const cases: ((c: RawClient) => Promise<void>)[] = [
      async (c) => {
        await c.greeting();
        await c.sendClientFlags(3);
        await c.write(RawClient.option(OPT.go, RawClient.infoData('')).subarray(0, 10));
      },
      async (c) => {
        await c.greeting();
        await c.sendClientFlags(3);
        await c.write(RawClient.option(OPT.go, RawClient.infoData('')).subarray(0, 20));
      },
      async (c) => {
        await c.negotiate({ structured: true });
        await c.write(RawClient.request(CMD.read, 0, RawClient.cookie(1n), 0, 512).subarray(0, 13));
      },
      async (c) => {
        await c.negotiate({ structured: true });
        await c.write(RawClient.request(CMD.write, 0, RawClient.cookie(1n), 0, 4096, Buffer.alloc(4096, 1)).subarray(0, 28 + 1000));
      },
    ];
    for (const step of cases) {
      const c = await RawClient.connect(fx.sock);
      await step(c);
      c.close();
    }
    await pollUntil(() => fx.server.connections.size === before, 5000, 'server to reap truncated connections');
    // The half-sent WRITE was never applied.
    assert.ok(fx.mem.readSync(0, 4096).every((b) => b !== 1));
    await assertServes(fx.sock);
  });

  it('oversize WRITE within the discard limit → payload skipped, EINVAL, connection goes on', async () => {
    const c = await open();
    const len = 33 * MiB; // > 32 MiB maximum payload, ≤ 40 MiB discard limit
    const payload = Buffer.alloc(len, 0x77);
    assert.equal(await errorOf(c, CMD.write, 0, 0, len, payload), ERR.EINVAL);
    // Framing kept: the next request on the same connection works.
    assert.equal(await errorOf(c, CMD.flush, 0, 0, 0), 0);
    assert.ok(fx.mem.readSync(0, 4096).every((b) => b !== 0x77), 'oversize payload was not written');
    await c.disconnect();
    await assertServes(fx.sock);
  });

  it('oversize WRITE beyond the discard limit → hard disconnect', async () => {
    const c = await open();
    await c.send(CMD.write, 0, 1n, 0, 0xffffffff);
    assert.equal((await c.expectClosed()).length, 0);
    await assertServes(fx.sock);
  });

  it('oversize READ → EINVAL (structured) and simple-reply EINVAL without data', async () => {
    const c = await open();
    assert.equal(await errorOf(c, CMD.read, 0, 0, 32 * MiB + 1), ERR.EINVAL);
    await c.disconnect();
    const s = await open({ structured: false });
    await s.send(CMD.read, 0, 9n, 0, 64 * MiB);
    const r = await s.readReply(64 * MiB);
    assert.equal(r.kind, 'simple');
    assert.equal(r.error, ERR.EINVAL);
    assert.equal(r.payload.length, 0);
    assert.equal(await errorOf(s, CMD.flush, 0, 0, 0), 0, 'no stray data on the wire');
    await s.disconnect();
    await assertServes(fx.sock);
  });

  it('out-of-range offsets → EINVAL (read, trim, cache, block status), ENOSPC (write, write zeroes)', async () => {
    const c = await open({ meta: ['base:allocation'] });
    assert.equal(await errorOf(c, CMD.read, 0, SIZE, 1), ERR.EINVAL);
    assert.equal(await errorOf(c, CMD.read, 0, SIZE - 512, 1024), ERR.EINVAL);
    assert.equal(await errorOf(c, CMD.read, 0, 0xffffffffffffffffn, 512), ERR.EINVAL);
    assert.equal(await errorOf(c, CMD.read, 0, 1n << 53n, 512), ERR.EINVAL);
    assert.equal(await errorOf(c, CMD.trim, 0, SIZE, 4096), ERR.EINVAL);
    assert.equal(await errorOf(c, CMD.cache, 0, SIZE, 4096), ERR.EINVAL);
    assert.equal(await errorOf(c, CMD.blockStatus, 0, SIZE, 4096), ERR.EINVAL);
    assert.equal(await errorOf(c, CMD.write, 0, SIZE - 100, 200, Buffer.alloc(200)), ERR.ENOSPC);
    assert.equal(await errorOf(c, CMD.writeZeroes, 0, 0xfffffffffffff000n, 4096), ERR.ENOSPC);
    // The last byte is in range.
    assert.equal(await errorOf(c, CMD.read, 0, SIZE - 1, 1), 0);
    await c.disconnect();
    await assertServes(fx.sock);
  });

  it('unknown commands → EINVAL', async () => {
    const c = await open();
    for (const type of [CMD.resize, 9, 0x7fff, 0xffff]) assert.equal(await errorOf(c, type, 0, 0, 0), ERR.EINVAL, `type ${type}`);
    await c.disconnect();
    const s = await open({ structured: false });
    assert.equal(await errorOf(s, 42, 0, 0, 512), ERR.EINVAL);
    await s.disconnect();
    await assertServes(fx.sock);
  });

  it('flags that do not belong to the command → EINVAL', async () => {
    const c = await open({ meta: ['base:allocation'] });
    assert.equal(await errorOf(c, CMD.read, 0x8000, 0, 512), ERR.EINVAL, 'unknown bit');
    assert.equal(await errorOf(c, CMD.read, FLAG.noHole, 0, 512), ERR.EINVAL);
    assert.equal(await errorOf(c, CMD.write, FLAG.df, 0, 512, Buffer.alloc(512)), ERR.EINVAL);
    assert.equal(await errorOf(c, CMD.trim, FLAG.reqOne, 0, 512), ERR.EINVAL);
    assert.equal(await errorOf(c, CMD.blockStatus, FLAG.fastZero, 0, 512), ERR.EINVAL);
    assert.equal(await errorOf(c, CMD.flush, 0, 0, 512), ERR.EINVAL, 'FLUSH with a length');
    // Valid combinations still work.
    assert.equal(await errorOf(c, CMD.read, FLAG.df | FLAG.fua, 0, 512), 0);
    assert.equal(await errorOf(c, CMD.writeZeroes, FLAG.noHole | FLAG.fua | FLAG.fastZero, 0, 512), 0);
    await c.disconnect();
    // DF is only valid with structured replies.
    const s = await open({ structured: false });
    assert.equal(await errorOf(s, CMD.read, FLAG.df, 0, 512), ERR.EINVAL);
    await s.disconnect();
    await assertServes(fx.sock);
  });

  it('BLOCK_STATUS without a negotiated meta context → EINVAL', async () => {
    const plain = await open();
    assert.equal(await errorOf(plain, CMD.blockStatus, 0, 0, 4096), ERR.EINVAL);
    await plain.disconnect();
    // Selected for another export than the one finally used: not usable.
    const c = await RawClient.connect(fx.sock);
    await c.greeting();
    await c.sendClientFlags(3);
    await c.sendOption(OPT.structured);
    await c.readOptionReply();
    await c.sendOption(OPT.setMeta, RawClient.metaData('ro', ['base:allocation']));
    await c.readOptionReplies();
    await c.sendOption(OPT.go, RawClient.infoData(''));
    await c.readOptionReplies();
    assert.equal(await errorOf(c, CMD.blockStatus, 0, 0, 4096), ERR.EINVAL);
    await c.disconnect();
    // Without structured replies there is no meta context at all.
    const s = await open({ structured: false });
    assert.equal(await errorOf(s, CMD.blockStatus, 0, 0, 4096), ERR.EINVAL);
    await s.disconnect();
    await assertServes(fx.sock);
  });

  it('disconnect mid-request (WRITE payload cut, in-flight READ) does not disturb the server', async () => {
    const c = await open();
    await c.send(CMD.read, 0, 1n, 0, 1 * MiB);
    await c.write(RawClient.request(CMD.write, 0, RawClient.cookie(2n), 8192, 65536, Buffer.alloc(65536, 9)).subarray(0, 28 + 30000));
    c.close();
    await assertServes(fx.sock);
    assert.ok(fx.mem.readSync(8192, 65536).every((b) => b !== 9), 'partial write never applied');
  });

  it('EXPORT_NAME with an unknown name → disconnect without a reply', async () => {
    const c = await RawClient.connect(fx.sock);
    await c.greeting();
    await c.sendClientFlags(3);
    await c.sendOption(OPT.exportName, Buffer.from('no-such-export'));
    assert.equal((await c.expectClosed()).length, 0);
    await assertServes(fx.sock);
  });

  it('write-like commands to a read-only export → EPERM, reads still work', async () => {
    for (const structured of [true, false]) {
      const c = await open({ name: 'ro', structured });
      assert.equal(await errorOf(c, CMD.write, 0, 0, 4096, Buffer.alloc(4096, 1)), ERR.EPERM);
      assert.equal(await errorOf(c, CMD.write, FLAG.fua, 0, 4096, Buffer.alloc(4096, 1)), ERR.EPERM);
      assert.equal(await errorOf(c, CMD.trim, 0, 0, 4096), ERR.EPERM);
      assert.equal(await errorOf(c, CMD.writeZeroes, 0, 0, 4096), ERR.EPERM);
      await c.send(CMD.read, 0, 3n, 0, 4096);
      const r = await c.readReply(4096);
      assert.equal(r.error, 0);
      await c.disconnect();
    }
    assert.equal(ro.counters.writes + ro.counters.trims + ro.counters.zeroes, 0, 'the export was never asked to write');
    await assertServes(fx.sock);
  });

  it('FAST_ZERO on an export whose zeroing is slow → ENOTSUP; without FAST_ZERO it zeroes', async () => {
    const c = await open({ name: 'slowzero' });
    assert.equal(await errorOf(c, CMD.writeZeroes, FLAG.fastZero, 0, 65536), ERR.ENOTSUP);
    assert.equal(slowZero.counters.zeroes, 0);
    assert.equal(await errorOf(c, CMD.writeZeroes, 0, 0, 65536), 0);
    assert.equal(slowZero.counters.zeroes, 1);
    await c.disconnect();
    await assertServes(fx.sock);
  });

  it('requests misaligned to the minimum block size → EINVAL; the advertised maximum is only a hint', async () => {
    const c = await RawClient.connect(fx.sock);
    await c.greeting();
    await c.sendClientFlags(3);
    await c.sendOption(OPT.structured);
    await c.readOptionReply();
    await c.sendOption(OPT.go, RawClient.infoData('aligned', [3]));
    const rs = await c.readOptionReplies();
    const bs = rs.find((r) => r.type === REP.info && r.data.readUInt16BE(0) === 3);
    assert.ok(bs !== undefined, 'NBD_INFO_BLOCK_SIZE sent');
    assert.deepEqual([bs.data.readUInt32BE(2), bs.data.readUInt32BE(6), bs.data.readUInt32BE(10)], [512, 4096, MiB]);
    assert.equal(await errorOf(c, CMD.read, 0, 100, 512), ERR.EINVAL);
    assert.equal(await errorOf(c, CMD.read, 0, 512, 100), ERR.EINVAL);
    assert.equal(await errorOf(c, CMD.write, 0, 512, 100, Buffer.alloc(100)), ERR.EINVAL);
    assert.equal(await errorOf(c, CMD.trim, 0, 4096, 1000), ERR.EINVAL);
    assert.equal(await errorOf(c, CMD.read, 0, 512, 1024), 0);
    // 2 MiB > advertised 1 MiB maximum, still ≤ 32 MiB: accepted (the kernel never asks for block sizes).
    assert.equal(await errorOf(c, CMD.write, 0, 0, 2 * MiB, Buffer.alloc(2 * MiB, 4)), 0);
    assert.ok(aligned.readSync(2 * MiB - 1, 1).equals(Buffer.from([4])));
    await c.disconnect();
    await assertServes(fx.sock);
  });

  it('garbage right after the greeting, or after GO, never takes the server down', async () => {
    for (const garbage of [Buffer.alloc(5000, 0xff), Buffer.from('GET / HTTP/1.1\r\nHost: example.com\r\n\r\n')]) {
      const a = await RawClient.connect(fx.sock);
      await a.write(garbage).catch(() => undefined);
      await a.expectClosed();
      const b = await open();
      await b.write(garbage).catch(() => undefined);
      await b.expectClosed();
    }
    await assertServes(fx.sock);
  });
});
