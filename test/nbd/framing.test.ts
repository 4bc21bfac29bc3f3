/**
 * ByteQueue under arbitrary chunk splits (fast-check): every take returns exactly the next bytes
 * of the stream, no matter how it was chunked; nothing is lost, duplicated or retained.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import fc from 'fast-check';

import { ByteQueue } from '../../src/nbd/framing.js';

/** Splits `data` at the given cut points (sorted, deduplicated, within bounds). */
function split(data: Uint8Array, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (data.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const p of [...points, data.length]) {
    out.push(Buffer.from(data.subarray(prev, p)));
    prev = p;
  }
  return out;
}

describe('ByteQueue', () => {
  it('takes exactly the stream bytes whatever the chunking and take sizes', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 0, maxLength: 4096 }),
        fc.array(fc.nat(), { maxLength: 64 }),
        fc.array(fc.integer({ min: 0, max: 600 }), { minLength: 1, maxLength: 64 }),
        (data, cuts, takes) => {
          const q = new ByteQueue();
          const chunks = split(data, cuts);
          const got: Buffer[] = [];
          let fed = 0;
          let consumed = 0;
          let ti = 0;
          // Interleave pushes and takes: after each push, take while possible.
          for (const c of chunks) {
            q.push(c);
            fed += c.length;
            for (;;) {
              const n = takes[ti % takes.length] as number;
              const b = q.take(n);
              if (b === undefined) {
                assert.ok(q.length < n, 'take refused although enough bytes were queued');
                break;
              }
              assert.equal(b.length, n);
              got.push(Buffer.from(b));
              consumed += n;
              ti++;
              assert.equal(q.length, fed - consumed);
              if (n === 0 && ti > takes.length * 4) break;
            }
          }
          const all = Buffer.concat(got);
          assert.ok(all.equals(Buffer.from(data.subarray(0, all.length))), 'bytes differ from the stream');
          assert.equal(q.length, data.length - all.length);
          // Whatever is left is exactly the tail of the stream.
          const rest = q.take(q.length) as Buffer;
          assert.ok(Buffer.concat([all, rest]).equals(Buffer.from(data)));
          assert.equal(q.length, 0);
          assert.equal(q.chunkCount, 0, 'consumed chunks are released');
        },
      ),
      { numRuns: 300 },
    );
  });

  it('skip discards exactly the requested bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2048 }), fc.array(fc.nat(), { maxLength: 32 }), fc.nat({ max: 3000 }), (data, cuts, n) => {
        const q = new ByteQueue();
        for (const c of split(data, cuts)) q.push(c);
        const skipped = q.skip(n);
        assert.equal(skipped, Math.min(n, data.length));
        const rest = q.take(q.length) as Buffer;
        assert.ok(rest.equals(Buffer.from(data.subarray(skipped))));
      }),
      { numRuns: 200 },
    );
  });

  it('returns zero-copy views when the bytes sit in one chunk, one copy otherwise', () => {
    const chunk = Buffer.from('0123456789');
    const q = new ByteQueue();
    q.push(chunk);
    const a = q.take(4) as Buffer;
    assert.equal(a.toString(), '0123');
    q.push(Buffer.from('abc'));
    const b = q.take(8) as Buffer; // straddles two chunks
    assert.equal(b.toString(), '456789ab');
    chunk.fill(0x2e); // '.'
    assert.equal(a.toString(), '....', 'single-chunk take is a view into the pushed chunk');
    assert.equal(b.toString(), '456789ab', 'straddling take is a copy');
    assert.equal(q.length, 1);
  });

  it('keeps memory bounded over a long stream of small chunks', () => {
    const q = new ByteQueue();
    for (let i = 0; i < 100_000; i++) {
      q.push(Buffer.alloc(7, i & 0xff));
      while (q.take(5) !== undefined);
      // The backlog never grows beyond what has not been consumed.
      assert.ok(q.chunkCount <= 3, `chunk list grew to ${q.chunkCount}`);
    }
    assert.ok(q.length < 5);
  });
});
