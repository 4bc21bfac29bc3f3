/**
 * The in-memory export against a flat-buffer model (fast-check), extent helpers and the errno
 * table: the test peer itself must be right for the other tests to mean anything.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import fc from 'fast-check';

import { toNbdErrno } from '../../src/nbd/errno.js';
import { ExportError, extentsFromDataRanges } from '../../src/nbd/export.js';
import { MemoryExport } from '../../src/nbd/memory-export.js';
import { Cmd, Errno } from '../../src/nbd/protocol.js';

const SIZE = 256 * 1024;

type Op =
  | { kind: 'write'; offset: number; data: Uint8Array }
  | { kind: 'zero'; offset: number; length: number; noHole: boolean }
  | { kind: 'trim'; offset: number; length: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('write' as const), offset: fc.nat({ max: SIZE - 1 }), data: fc.uint8Array({ minLength: 1, maxLength: 70_000 }) }),
  fc.record({ kind: fc.constant('zero' as const), offset: fc.nat({ max: SIZE - 1 }), length: fc.nat({ max: 140_000 }), noHole: fc.boolean() }),
  fc.record({ kind: fc.constant('trim' as const), offset: fc.nat({ max: SIZE - 1 }), length: fc.nat({ max: 140_000 }) }),
);

describe('MemoryExport', () => {
  it('behaves like a flat buffer; block status is consistent with the content', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { maxLength: 30 }), async (ops) => {
        const exp = new MemoryExport({ size: SIZE, chunkSize: 16 * 1024 });
        const model = Buffer.alloc(SIZE);
        for (const op of ops) {
          if (op.kind === 'write') {
            const data = Buffer.from(op.data.subarray(0, SIZE - op.offset));
            await exp.write(op.offset, data, false);
            data.copy(model, op.offset);
          } else {
            const length = Math.min(op.length, SIZE - op.offset);
            if (op.kind === 'zero') await exp.writeZeroes(op.offset, length, { fua: false, noHole: op.noHole, fastZero: false });
            else await exp.trim(op.offset, length, false);
            model.fill(0, op.offset, op.offset + length);
          }
        }
        assert.ok((await exp.read(0, SIZE, Buffer.alloc(SIZE))).equals(model));
        // Extents cover the range exactly; every hole reads as zeroes.
        const extents = await exp.blockStatus(0, SIZE);
        let pos = 0;
        for (const e of extents) {
          assert.ok(e.length > 0);
          if (e.hole) assert.ok(model.subarray(pos, pos + e.length).every((b) => b === 0), `hole at ${pos} is not zero`);
          pos += e.length;
        }
        assert.equal(pos, SIZE);
      }),
      { numRuns: 100 },
    );
  });

  it('reads into the caller buffer when given one; refuses writes when read-only', async () => {
    const exp = new MemoryExport({ size: 8192 });
    await exp.write(100, Buffer.from('hello'), true);
    const into = Buffer.alloc(5);
    assert.equal(await exp.read(100, 5, into), into);
    assert.equal(into.toString(), 'hello');
    assert.equal(exp.counters.fuaWrites, 1);
    const ro = exp.clone({ name: 'ro', readOnly: true });
    assert.equal((await ro.read(100, 5, Buffer.alloc(5))).toString(), 'hello');
    await assert.rejects(ro.write(0, Buffer.alloc(1), false), { code: 'READ_ONLY' });
    await assert.rejects(exp.read(8190, 4, Buffer.alloc(4)), { code: 'OUT_OF_RANGE' });
    await exp.write(100, Buffer.from('HELLO'), false);
    assert.equal((await ro.read(100, 5, Buffer.alloc(5))).toString(), 'hello', 'clone is independent');
  });
});

describe('extentsFromDataRanges', () => {
  it('turns data ranges into contiguous hole/data extents over the request', () => {
    const r = extentsFromDataRanges(1000, 9000, [
      { offset: 0, length: 500 },
      { offset: 2000, length: 1000 },
      { offset: 3000, length: 500 },
      { offset: 9500, length: 10_000 },
      { offset: 50_000, length: 1 },
    ]);
    assert.deepEqual(
      r.map((e) => [e.length, e.hole]),
      [
        [1000, true],
        [1500, false],
        [6000, true],
        [500, false],
      ],
    );
    assert.deepEqual(extentsFromDataRanges(0, 10, []), [{ length: 10, hole: true, zero: true }]);
  });
});

describe('errno mapping', () => {
  it('maps engine and system codes in one table; unknown → EIO', () => {
    assert.equal(toNbdErrno(new ExportError('NO_SPACE', 'x')), Errno.ENOSPC);
    assert.equal(toNbdErrno({ code: 'READ_ONLY' }), Errno.EPERM);
    assert.equal(toNbdErrno({ code: 'OUT_OF_RANGE' }, Cmd.Read), Errno.EINVAL);
    assert.equal(toNbdErrno({ code: 'OUT_OF_RANGE' }, Cmd.Write), Errno.ENOSPC);
    assert.equal(toNbdErrno({ code: 'INVALID_ARGUMENT' }), Errno.EINVAL);
    assert.equal(toNbdErrno({ code: 'CLOSED' }), Errno.ESHUTDOWN);
    assert.equal(toNbdErrno({ code: 'CHECKPOINT_NOT_FOUND' }), Errno.ESHUTDOWN);
    assert.equal(toNbdErrno({ code: 'EDQUOT' }), Errno.ENOSPC);
    assert.equal(toNbdErrno({ code: 'NOT_SUPPORTED' }), Errno.ENOTSUP);
    assert.equal(toNbdErrno({ code: 'IO' }), Errno.EIO);
    assert.equal(toNbdErrno(new Error('plain')), Errno.EIO);
    assert.equal(toNbdErrno('string'), Errno.EIO);
    assert.equal(toNbdErrno({ code: 42 }), Errno.EIO);
  });
});
