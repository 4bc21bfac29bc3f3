import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isCsiError, OperationInFlightError } from '../../src/volumes/errors.js';
import { InFlight, KeyedMutex } from '../../src/volumes/locks.js';
import { deferred } from './helpers.js';

describe('InFlight', () => {
  it('failure case - a second call for a busy key is refused with ABORTED', async () => {
    const inFlight = new InFlight();
    const release = deferred();
    const first = inFlight.run('vol-1', () => release.promise);
    await assert.rejects(inFlight.run('vol-1', async () => 'never'), (err: unknown) => err instanceof OperationInFlightError && isCsiError(err, 'ABORTED') && err.key === 'vol-1');
    assert.equal(await inFlight.run('vol-2', async () => 'other key'), 'other key');
    release.resolve();
    await first;
    assert.equal(await inFlight.run('vol-1', async () => 'free again'), 'free again');
    assert.equal(inFlight.size, 0);
  });

  it('success case - the key is freed when the operation throws', async () => {
    const inFlight = new InFlight();
    await assert.rejects(inFlight.run('vol-1', async () => { throw new Error('boom'); }), /boom/);
    assert.equal(inFlight.has('vol-1'), false);
  });

  it('failure case - multi-key acquire is all or nothing', () => {
    const inFlight = new InFlight();
    const release = inFlight.acquire('b');
    assert.throws(() => inFlight.acquire(['a', 'b', 'c']), OperationInFlightError);
    assert.equal(inFlight.has('a'), false);
    assert.equal(inFlight.has('c'), false);
    release();
    const all = inFlight.acquire(['a', 'b', 'c', 'a']);
    assert.equal(inFlight.size, 3);
    all();
    assert.equal(inFlight.size, 0);
  });

  it('failure case - releasing twice is a bug and throws', () => {
    const release = new InFlight().acquire('k');
    release();
    assert.throws(release, /BUG/);
  });
});

describe('KeyedMutex', () => {
  it('success case - callers for one key run one at a time, in arrival order', async () => {
    const mutex = new KeyedMutex();
    const order: string[] = [];
    const gate = deferred();
    const a = mutex.withLock('k', async () => {
      order.push('a start');
      await gate.promise;
      order.push('a end');
    });
    const b = mutex.withLock('k', async () => void order.push('b'));
    const c = mutex.withLock('k', async () => void order.push('c'));
    const other = mutex.withLock('other', async () => void order.push('other'));
    await other;
    assert.deepEqual(order, ['a start', 'other']);
    gate.resolve();
    await Promise.all([a, b, c]);
    assert.deepEqual(order, ['a start', 'other', 'a end', 'b', 'c']);
    assert.equal(mutex.isLocked('k'), false);
  });

  it('success case - the lock is released when the function throws', async () => {
    const mutex = new KeyedMutex();
    await assert.rejects(mutex.withLock('k', async () => { throw new Error('boom'); }), /boom/);
    assert.equal(await mutex.withLock('k', async () => 'next'), 'next');
  });

  it('success case - multi-key locks in opposite orders do not deadlock', async () => {
    const mutex = new KeyedMutex();
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => mutex.withLock(i % 2 === 0 ? ['x', 'y'] : ['y', 'x'], async () => i)),
    );
    assert.equal(results.length, 20);
    assert.equal(mutex.isLocked('x') || mutex.isLocked('y'), false);
  });

  it('failure case - releasing twice is a bug and throws', async () => {
    const release = await new KeyedMutex().lock('k');
    release();
    assert.throws(release, /BUG/);
  });
});
