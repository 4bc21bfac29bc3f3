/**
 * Handshake encoders/decoders and the negotiation state machine, driven without sockets: golden
 * bytes (nbd.md §1.7 trace), per-option behaviour, and fast-check properties (any chunking gives
 * the same replies; arbitrary garbage never throws and yields bounded output).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import fc from 'fast-check';

import { MapExportProvider } from '../../src/nbd/export.js';
import { ByteQueue } from '../../src/nbd/framing.js';
import {
  Handshake,
  type HandshakeResult,
  effectiveBlockSize,
  encodeExportNameReply,
  encodeGreeting,
  isParseError,
  parseInfoRequest,
  parseMetaContextRequest,
  transmissionFlags,
} from '../../src/nbd/handshake.js';
import { MemoryExport } from '../../src/nbd/memory-export.js';
import { OPT, REP, RawClient } from './helpers/raw-client.js';

const GiB = 1024 * 1024 * 1024;

function provider(): MapExportProvider {
  return new MapExportProvider([
    new MemoryExport({ name: '', size: GiB, description: 'scratch' }),
    new MemoryExport({ name: 'ro', size: 16 * 1024 * 1024, readOnly: true }),
  ]);
}

/** Reply types of a run of option replies. */
function replyTypes(out: Buffer): number[] {
  const types: number[] = [];
  for (let pos = 0; pos < out.length; pos += 20 + out.readUInt32BE(pos + 16)) types.push(out.readUInt32BE(pos + 12));
  return types;
}

/** Feeds chunks to a fresh Handshake; returns everything it sent and its final result. */
function drive(chunks: Buffer[], p = provider()): { out: Buffer; result: HandshakeResult; state: string } {
  const sent: Buffer[] = [];
  const hs = new Handshake({ provider: p }, (b) => sent.push(b));
  const q = new ByteQueue();
  let result: HandshakeResult = { kind: 'need-more' };
  for (const c of chunks) {
    q.push(c);
    result = hs.advance(q);
    if (result.kind !== 'need-more') break;
  }
  return { out: Buffer.concat(sent), result, state: hs.state };
}

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

/** The client half of the nbd.md §1.7 golden trace (nbdinfo --map against nbdkit memory 1G). */
const goldenClient = hex(`
  00000003
  49484156454f5054 00000008 00000000
  49484156454f5054 0000000a 0000001b 00000000 00000001 0000000f ${Buffer.from('base:allocation').toString('hex')}
  49484156454f5054 00000007 00000008 00000000 0001 0003`);

describe('handshake encoders', () => {
  it('greets with NBDMAGIC, IHAVEOPT, FIXED_NEWSTYLE|NO_ZEROES', () => {
    assert.equal(encodeGreeting().toString('hex'), '4e42444d41474943' + '49484156454f5054' + '0003');
  });

  it('EXPORT_NAME reply is 10 bytes with NO_ZEROES, 134 without', () => {
    const a = encodeExportNameReply(GiB, 0x0ded, true);
    assert.equal(a.toString('hex'), '0000000040000000' + '0ded');
    const b = encodeExportNameReply(GiB, 0x0ded, false);
    assert.equal(b.length, 134);
    assert.ok(b.subarray(10).equals(Buffer.alloc(124)));
  });

  it('advertises exactly the implemented transmission flags', () => {
    const rw = new MemoryExport({ size: 1 });
    const ro = new MemoryExport({ size: 1, readOnly: true });
    // nbdkit memory advertises the same 0x0ded (HAS_FLAGS|FLUSH|FUA|TRIM|WRITE_ZEROES|DF|MULTI_CONN|CACHE|FAST_ZERO).
    assert.equal(transmissionFlags(rw, true), 0x0ded);
    assert.equal(transmissionFlags(rw, false), 0x0ded & ~0x80, 'SEND_DF only with structured replies');
    assert.equal(transmissionFlags(ro, true), 0x0587);
    assert.equal(transmissionFlags(ro, false), 0x0507);
  });

  it('sanitises block size constraints', () => {
    assert.deepEqual(effectiveBlockSize(new MemoryExport({ size: 1 })), { minimum: 1, preferred: 4096, maximum: 32 * 1024 * 1024 });
    const odd = new MemoryExport({ size: 1, blockSize: { minimum: 3, preferred: 100, maximum: 1 << 30 } });
    assert.deepEqual(effectiveBlockSize(odd), { minimum: 1, preferred: 4096, maximum: 32 * 1024 * 1024 });
    const fine = new MemoryExport({ size: 1, blockSize: { minimum: 512, preferred: 4096, maximum: 1 << 20 } });
    assert.deepEqual(effectiveBlockSize(fine), { minimum: 512, preferred: 4096, maximum: 1 << 20 });
  });
});

describe('handshake decoders', () => {
  it('parses INFO/GO data and rejects inconsistent lengths', () => {
    const ok = parseInfoRequest(RawClient.infoData('vol', [3, 1]));
    assert.ok(!isParseError(ok));
    assert.deepEqual(ok, { name: 'vol', infos: [3, 1] });
    const short = parseInfoRequest(Buffer.alloc(5));
    assert.ok(isParseError(short) && short.error === REP.errInvalid);
    const badName = RawClient.infoData('vol', []);
    badName.writeUInt32BE(100, 0);
    const r1 = parseInfoRequest(badName);
    assert.ok(isParseError(r1) && r1.error === REP.errInvalid);
    const badCount = RawClient.infoData('vol', [3]);
    badCount.writeUInt16BE(5, 7); // nrinfos says 5, one present
    const r2 = parseInfoRequest(badCount);
    assert.ok(isParseError(r2) && r2.error === REP.errInvalid);
  });

  it('parses meta context queries and rejects trailing or truncated data', () => {
    const ok = parseMetaContextRequest(RawClient.metaData('', ['base:allocation', 'qemu:dirty-bitmap:x']));
    assert.deepEqual(ok, { name: '', queries: ['base:allocation', 'qemu:dirty-bitmap:x'] });
    const trailing = Buffer.concat([RawClient.metaData('', ['base:allocation']), Buffer.from([0])]);
    assert.ok(isParseError(parseMetaContextRequest(trailing)));
    const lying = RawClient.metaData('', ['base:allocation']);
    lying.writeUInt32BE(0xffffffff, 4); // query count far beyond the data
    assert.ok(isParseError(parseMetaContextRequest(lying)));
    const longQ = RawClient.metaData('', ['base:allocation']);
    longQ.writeUInt32BE(1000, 8); // query length beyond the data
    assert.ok(isParseError(parseMetaContextRequest(longQ)));
  });
});

describe('handshake state machine', () => {
  it('reproduces the golden nbdinfo --map negotiation byte for byte', () => {
    const { out, result } = drive([goldenClient]);
    assert.equal(result.kind, 'transmission');
    const expected = hex(`
      0003e889045565a9 00000008 00000001 00000000
      0003e889045565a9 0000000a 00000004 00000013 00000001 ${Buffer.from('base:allocation').toString('hex')}
      0003e889045565a9 0000000a 00000001 00000000
      0003e889045565a9 00000007 00000003 0000000c 0000 0000000040000000 0ded
      0003e889045565a9 00000007 00000003 0000000e 0003 00000001 00001000 02000000
      0003e889045565a9 00000007 00000001 00000000`);
    assert.equal(out.toString('hex'), expected.toString('hex'));
    if (result.kind === 'transmission') {
      assert.equal(result.negotiated.structured, true);
      assert.equal(result.negotiated.baseAllocation, true);
      assert.equal(result.negotiated.size, GiB);
    }
  });

  it('gives the same replies however the client bytes are chunked', () => {
    const whole = drive([goldenClient]);
    fc.assert(
      fc.property(fc.array(fc.nat({ max: goldenClient.length }), { maxLength: 40 }), (cuts) => {
        const points = [...new Set(cuts)].sort((a, b) => a - b);
        const chunks: Buffer[] = [];
        let prev = 0;
        for (const p of [...points, goldenClient.length]) {
          chunks.push(goldenClient.subarray(prev, p));
          prev = p;
        }
        const r = drive(chunks);
        assert.equal(r.result.kind, 'transmission');
        assert.ok(r.out.equals(whole.out));
      }),
      { numRuns: 300 },
    );
  });

  it('never throws on garbage and keeps its output bounded', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2048 }), fc.array(fc.nat(), { maxLength: 16 }), fc.boolean(), (junk, cuts, validPrefix) => {
        const data = Buffer.concat([validPrefix ? hex('00000003') : Buffer.alloc(0), Buffer.from(junk)]);
        const points = [...new Set(cuts.map((c) => c % (data.length + 1)))].sort((a, b) => a - b);
        const chunks: Buffer[] = [];
        let prev = 0;
        for (const p of [...points, data.length]) {
          chunks.push(data.subarray(prev, p));
          prev = p;
        }
        const r = drive(chunks);
        // At most one 16-byte option header per 16 input bytes; each answer is a few replies.
        assert.ok(r.out.length <= 1024 * (data.length / 16 + 1), `output ${r.out.length} for input ${data.length}`);
      }),
      { numRuns: 500 },
    );
  });

  it('closes on unknown client flags without replying', () => {
    const r = drive([hex('00000004')]);
    assert.equal(r.result.kind, 'close');
    assert.equal(r.out.length, 0);
    assert.equal(r.state, 'Closed');
  });

  it('closes on a bad option magic', () => {
    const r = drive([hex('00000003 49484156454f5055 00000007 00000000')]);
    assert.equal(r.result.kind, 'close');
  });

  it('answers unknown options with ERR_UNSUP and keeps framing', () => {
    const r = drive([hex('00000003'), RawClient.option(99, Buffer.from('junk')), RawClient.option(OPT.startTls), RawClient.option(OPT.extHeaders), RawClient.option(OPT.go, RawClient.infoData(''))]);
    assert.equal(r.result.kind, 'transmission');
    assert.deepEqual(replyTypes(r.out).slice(0, 3), [REP.errUnsup, REP.errUnsup, REP.errUnsup]);
    assert.equal(replyTypes(r.out).at(-1), REP.ack);
  });

  it('answers an oversize option with ERR_TOO_BIG and closes, without buffering it', () => {
    const r = drive([hex('00000003'), RawClient.option(OPT.go, Buffer.alloc(0), 0xffffffff)]);
    assert.equal(r.result.kind, 'close');
    assert.equal(r.out.readUInt32BE(12), REP.errTooBig);
  });

  it('EXPORT_NAME: bare name; unknown name closes without a reply', () => {
    const ok = drive([hex('00000001'), RawClient.option(OPT.exportName, Buffer.from('ro'))]);
    assert.equal(ok.result.kind, 'transmission');
    assert.equal(ok.out.length, 134, 'no NO_ZEROES: 124 bytes of padding');
    assert.equal(ok.out.readBigUInt64BE(0), 16n * 1024n * 1024n);
    assert.equal(ok.out.readUInt16BE(8) & 2, 2, 'read-only flag');
    const bad = drive([hex('00000003'), RawClient.option(OPT.exportName, Buffer.from('nope'))]);
    assert.equal(bad.result.kind, 'close');
    assert.equal(bad.out.length, 0);
  });

  it('LIST sends one SERVER per export then ACK; data → ERR_INVALID', () => {
    const r = drive([hex('00000003'), RawClient.option(OPT.list), RawClient.option(OPT.list, Buffer.from('x')), RawClient.option(OPT.abort)]);
    assert.equal(r.result.kind, 'close');
    assert.deepEqual(replyTypes(r.out), [REP.server, REP.server, REP.ack, REP.errInvalid, REP.ack]);
  });

  it('SET_META_CONTEXT needs structured replies; a selection for another export is not used', () => {
    const noSr = drive([hex('00000003'), RawClient.option(OPT.setMeta, RawClient.metaData('', ['base:allocation']))]);
    assert.equal(noSr.out.readUInt32BE(12), REP.errInvalid);
    const other = drive([
      hex('00000003'),
      RawClient.option(OPT.structured),
      RawClient.option(OPT.setMeta, RawClient.metaData('ro', ['base:allocation'])),
      RawClient.option(OPT.go, RawClient.infoData('')),
    ]);
    assert.equal(other.result.kind, 'transmission');
    if (other.result.kind === 'transmission') assert.equal(other.result.negotiated.baseAllocation, false);
  });

  it('LIST_META_CONTEXT lists base:allocation for no query or "base:", ignores other namespaces', () => {
    for (const [queries, expectContext] of [
      [[], true],
      [['base:'], true],
      [['qemu:dirty-bitmap:x'], false],
    ] as const) {
      const r = drive([hex('00000003'), RawClient.option(OPT.structured), RawClient.option(OPT.listMeta, RawClient.metaData('', [...queries]))]);
      const afterAck = r.out.subarray(20);
      assert.equal(afterAck.readUInt32BE(12), expectContext ? REP.meta : REP.ack, `queries ${JSON.stringify(queries)}`);
      if (expectContext) {
        assert.equal(afterAck.readUInt32BE(20), 0, 'LIST replies use context id 0');
        assert.equal(afterAck.subarray(24, 20 + afterAck.readUInt32BE(16)).toString(), 'base:allocation');
      }
    }
  });

  it('GO/INFO on an unknown export: ERR_UNKNOWN, negotiation continues', () => {
    const r = drive([hex('00000003'), RawClient.option(OPT.info, RawClient.infoData('nope')), RawClient.option(OPT.go, RawClient.infoData('', [1, 2]))]);
    assert.equal(r.out.readUInt32BE(12), REP.errUnknown);
    assert.equal(r.result.kind, 'transmission');
    // INFO_NAME and INFO_DESCRIPTION were requested: both present.
    const infos: number[] = [];
    for (let pos = 20 + r.out.readUInt32BE(16); pos < r.out.length; ) {
      const len = r.out.readUInt32BE(pos + 16);
      if (r.out.readUInt32BE(pos + 12) === REP.info) infos.push(r.out.readUInt16BE(pos + 20));
      pos += 20 + len;
    }
    assert.deepEqual(infos, [0, 1, 2, 3]);
  });

  it('answers ERR_SHUTDOWN while the server shuts down, except ABORT', () => {
    const sent: Buffer[] = [];
    const hs = new Handshake({ provider: provider(), isShuttingDown: () => true }, (b) => sent.push(b));
    const q = new ByteQueue();
    q.push(Buffer.concat([hex('00000003'), RawClient.option(OPT.go, RawClient.infoData('')), RawClient.option(OPT.abort)]));
    const r = hs.advance(q);
    assert.equal(r.kind, 'close');
    assert.equal(sent[0]?.readUInt32BE(12), REP.errShutdown);
    assert.equal(sent[1]?.readUInt32BE(12), REP.ack);
  });
});
