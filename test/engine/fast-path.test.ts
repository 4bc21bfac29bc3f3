/**
 * The worker threads' fast path (src/engine/fast-path.ts): the gate's shared counters, what the
 * fast path takes and what it forwards, and three real Workers writing through it (forwarding
 * what it refuses) while the main thread cuts, deletes, rolls back, expands and runs transactions.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { FastPath, nodeFileIO } from '../../src/engine/index.js';
import { GateWord } from '../../src/engine/fast-path.js';
import { alignedBuffer } from '../../src/engine/native.js';
import { BASE_FILE } from '../../src/engine/volume-core.js';
import { Gate } from '../../src/engine/gate.js';
import { Ctl, blockOf, decode, stamp, type Forward, type WorkerData } from './fast-path-worker.js';
import { Faults, Holder, KiB, MiB, fill, seededRandom, withVolume } from './helpers.js';
import { instrumentedIO, type OpInfo } from './instrumented-io.js';

const WORKER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fast-path-worker.js');

/** A thread that follows the workers' gate protocol by hand: enter (increment, then check), hold, leave (decrement, notify at zero). */
const HOLDING_WORKER = `
const { workerData, parentPort } = require('node:worker_threads');
const { words, ctl, side, closedAt, state } = workerData;
const w = new Int32Array(words);
const c = new Int32Array(ctl);
Atomics.add(w, side, 1);
const entered = Atomics.load(w, state) < closedAt;
if (!entered && Atomics.sub(w, side, 1) === 1) Atomics.notify(w, side);
parentPort.postMessage(entered);
if (entered) {
  Atomics.wait(c, 0, 0);
  if (Atomics.sub(w, side, 1) === 1 && Atomics.load(w, state) !== 0) Atomics.notify(w, side);
}
`;

function holdingWorker(words: Int32Array, side: number, closedAt: number): { worker: Worker; entered: Promise<boolean>; leave: () => void; exited: Promise<void> } {
  const ctl = new Int32Array(new SharedArrayBuffer(4));
  const worker = new Worker(HOLDING_WORKER, { eval: true, workerData: { words: words.buffer, ctl: ctl.buffer, side, closedAt, state: GateWord.State } });
  const entered = new Promise<boolean>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  return {
    worker,
    entered,
    exited,
    leave: () => {
      Atomics.store(ctl, 0, 1);
      Atomics.notify(ctl, 0);
    },
  };
}

test('gate: a close waits for a worker thread inside the gate, and a worker entering a closed gate backs off', { timeout: 60_000 }, async () => {
  const gate = new Gate();
  const words = new Int32Array(new SharedArrayBuffer(64));
  let reopened = 0;
  gate.share(words, () => reopened++);

  const writer = holdingWorker(words, GateWord.Writers, 1);
  assert.equal(await writer.entered, true, 'the gate is open: the worker enters');
  const reader = holdingWorker(words, GateWord.Readers, 2);
  assert.equal(await reader.entered, true);

  let closed = false;
  const reports: Array<[number, number]> = [];
  const closing = gate.closeWrites((w, r) => reports.push([w, r])).then(() => {
    closed = true;
  });
  // The close must wait for the writer; a new writer sees the closed state and backs off.
  const late = holdingWorker(words, GateWord.Writers, 1);
  assert.equal(await late.entered, false, 'a worker entering after the close sees it');
  await late.exited;
  assert.equal(closed, false, 'closeWrites returned while a worker was writing');
  assert.deepEqual(reports, [[1, 0]]);
  writer.leave();
  await closing; // the writer's decrement to zero wakes it; the reader does not hold writes
  assert.equal(Atomics.load(words, GateWord.State), 1);
  gate.open();
  assert.equal(reopened, 1, 'the reopening hook ran');
  assert.equal(Atomics.load(words, GateWord.State), 0);

  // closeAll waits for the reader as well.
  let allClosed = false;
  const closingAll = gate.closeAll().then(() => {
    allClosed = true;
  });
  const lateReader = holdingWorker(words, GateWord.Readers, 2);
  assert.equal(await lateReader.entered, false);
  await lateReader.exited;
  assert.equal(allClosed, false, 'closeAll returned while a worker was reading');
  reader.leave();
  await closingAll;
  gate.open();
  await Promise.all([writer.exited, reader.exited]);
  assert.equal(Atomics.load(words, GateWord.Writers), 0);
  assert.equal(Atomics.load(words, GateWord.Readers), 0);
});

test('fast path: takes reads and copied or uncovered writes, forwards closed gates, first writes after a cut, out-of-range and closed volumes', async () => {
  const G = 64 * KiB;
  // 1024 grains: large enough that a cut clears the bits copies set word by word, not by a fill.
  const SIZE = 64 * MiB;
  await withVolume('fastpath', { size: SIZE, grainSize: G }, async (h) => {
    const vol = h.vol;
    const fast = new FastPath(vol.fastPath());
    assert.equal(vol.fastPath(), vol.fastPath(), 'one handle per volume');
    // No checkpoint: every write in range is fast.
    assert.equal(fast.write(fill(1, 3 * G), 0, false), true);
    assert.equal(fast.write(fill(2, 100), G - 50, true), true, 'FUA through the O_DSYNC fd');
    assert.equal(fast.write(fill(1, 10), SIZE - 5, false), false, 'past the end');
    assert.equal(fast.write(Buffer.alloc(0), 0, false), false, 'empty: the main thread answers');
    const buf = Buffer.alloc(G);
    assert.equal(fast.read(buf, G - 50), true);
    assert.ok(buf.subarray(0, 100).equals(fill(2, 100)) && buf.subarray(100).equals(fill(1, G - 100)));
    assert.equal(fast.flush(), true);

    await vol.createCheckpoint('a');
    assert.equal(fast.write(fill(3, 10), 5, false), false, 'grain 0 needs a copy');
    await vol.write(5, fill(3, 10)); // the main thread copies it
    assert.equal(fast.write(fill(4, 10), 20, false), true, 'grain 0 is copied now');
    assert.equal(fast.write(fill(4, 10), G - 5, false), false, 'grain 1 is not');
    assert.ok((await vol.readCheckpoint('a', 0, 3 * G)).equals(fill(1, 3 * G).fill(2, G - 50, G + 50)));

    // Expand under a checkpoint: the new grains are past what it covers, so need no copy.
    await vol.expand(2 * SIZE);
    assert.equal(fast.write(fill(5, G), SIZE + SIZE / 2, false), true, 'beyond the checkpoint');
    await vol.createCheckpoint('b');
    assert.equal(fast.write(fill(5, 10), SIZE + SIZE / 2, false), false, 'a new cut clears every bit');
    assert.equal(fast.write(fill(5, 10), 20, false), false);
    await vol.write(SIZE + SIZE / 2, fill(6, 10));
    assert.equal(fast.write(fill(7, 10), SIZE + SIZE / 2 + 100, false), true, 'a grain the new bitmap (grown) holds');

    // Deleting the newest checkpoint makes 'a' the newest again: its bits come back ('a' holds
    // grain 0; grain 1536 is beyond what 'a' covers; grain 2 it still needs).
    await vol.deleteCheckpoint('b');
    assert.equal(fast.write(fill(8, 10), 30, false), true);
    assert.equal(fast.write(fill(8, 10), SIZE + SIZE / 2, false), true);
    assert.equal(fast.write(fill(8, 10), 2 * G, false), false);

    // While frozen (writes closed) writes forward and reads go on.
    const frozen = await vol.freeze();
    try {
      assert.equal(fast.write(fill(9, 10), 30, false), false);
      assert.equal(fast.read(buf, 0), true);
    } finally {
      frozen.thaw();
    }
    assert.equal(fast.write(fill(9, 10), 30, false), true);

    await vol.close();
    assert.equal(fast.read(buf, 0), false, 'closed: forward, the main thread reports it');
    assert.equal(fast.write(fill(9, 10), 30, false), false);
    assert.equal(fast.flush(), false);
  });
});

test('fast path: aligned I/O goes around the page cache (O_DIRECT), the rest through it, and each sees the other\'s data', async () => {
  await withVolume('direct', { size: 16 * MiB, grainSize: 64 * KiB }, async (h) => {
    const handle = h.vol.fastPath();
    assert.ok(handle.baseDirectFd >= 0, `the base image under ${h.tmp} refused O_DIRECT; run the test on a disk file system`);
    const fast = new FastPath(handle);
    const base = path.join(h.dir, BASE_FILE);
    const cachedBytes = (): number => Number(execFileSync('fincore', ['--bytes', '--noheadings', '--raw', '--output', 'RES', base]).toString().trim());
    const aligned = (byte: number, len: number): Buffer => alignedBuffer(len, 0).fill(byte);
    assert.equal(fast.flush(), true);
    execFileSync('dd', [`if=${base}`, 'iflag=nocache', 'count=0', 'status=none']); // drop the base's clean pages
    assert.equal(cachedBytes(), 0);

    assert.equal(fast.write(aligned(1, 4 * KiB * 4), 12 * KiB, false), true);
    assert.equal(cachedBytes(), 0, 'an aligned write leaves nothing in the page cache');
    const unaligned = alignedBuffer(4 * KiB + 1, 0).subarray(1).fill(2);
    assert.equal(fast.write(unaligned, 64 * KiB, false), true);
    assert.ok(cachedBytes() > 0, 'a write from an unaligned buffer goes through the page cache');

    const got = alignedBuffer(4 * KiB, 0);
    assert.equal(fast.read(got, 64 * KiB), true);
    assert.ok(got.equals(fill(2, 4 * KiB)), 'a direct read sees data still dirty in the page cache');
    assert.equal(fast.write(aligned(3, 4 * KiB), 64 * KiB, false), true);
    assert.ok((await h.vol.read(64 * KiB, 4 * KiB)).equals(fill(3, 4 * KiB)), 'the main thread\'s buffered read sees a direct write over cached pages');
    assert.equal(fast.read(got, 16 * KiB), true);
    assert.ok(got.equals(fill(1, 4 * KiB)));
    assert.equal(fast.write(aligned(4, 4 * KiB), 100, false), true, 'an unaligned offset takes the page cache');
    assert.ok((await h.vol.read(0, 8 * KiB)).equals(Buffer.concat([fill(0, 100), fill(4, 4 * KiB), fill(0, 4 * KiB - 100)])));
  });
});

test('fast path: a copy that completes after a cut made a newer checkpoint sets no bit for it', async () => {
  const hold = new Holder();
  const storeFile = (id: number): string => `cp-${String(id).padStart(8, '0')}.store`;
  const syncOf = (id: number) => (op: OpInfo) => op.op === 'datasync' && op.file.endsWith(storeFile(id));
  await withVolume('fastpath-race', { size: MiB, grainSize: 4 * KiB, io: instrumentedIO(hold.hook, nodeFileIO, { exposeFds: true }) }, async ({ vol }) => {
    const fast = new FastPath(vol.fastPath());
    await vol.write(0, fill(1, 4 * KiB));
    await vol.createCheckpoint('a');
    await vol.settled(); // the next checkpoint's store is ready, so the cut below syncs no store
    hold.arm(syncOf(vol.checkpoint('a').id));
    const writing = vol.write(0, fill(2, 4 * KiB));
    try {
      await hold.reached; // copying grain 0 into 'a', holding only the read side of the gate
      await vol.createCheckpoint('b');
      hold.arm(syncOf(vol.checkpoint('b').id));
      hold.release(); // the copy into 'a' completes; the write then copies grain 0 into 'b'
      await hold.reached;
      assert.equal(fast.write(fill(3, 10), 0, false), false, "'b' does not hold grain 0 yet");
    } finally {
      hold.release();
      await writing;
    }
    assert.equal(fast.write(fill(3, 10), 0, false), true);
    assert.ok((await vol.readCheckpoint('a', 0, 4 * KiB)).equals(fill(1, 4 * KiB)));
    assert.ok((await vol.readCheckpoint('b', 0, 4 * KiB)).equals(fill(1, 4 * KiB)));
  });
});

test('fast path: reads forward while a rollback holds all I/O; an interrupted volume, a FileIO without fds and a read-only volume forward everything', async () => {
  const hold = new Holder();
  // instrumentedIO without exposed fds: that volume's fast path is off; this one exposes them.
  await withVolume('fastpath-hold', { size: MiB, grainSize: 4 * KiB, io: instrumentedIO(hold.hook, nodeFileIO, { exposeFds: true }) }, async ({ vol }) => {
    const fast = new FastPath(vol.fastPath());
    await vol.write(0, fill(1, 8 * KiB));
    await vol.createCheckpoint('a');
    await vol.write(0, fill(2, 8 * KiB));
    hold.arm((op) => op.kind === 'base' && op.op === 'write');
    const rolling = vol.rollback('a');
    const buf = Buffer.alloc(4 * KiB);
    try {
      await hold.reached;
      assert.equal(fast.read(buf, 0), false, 'reads wait for the rollback');
      assert.equal(fast.flush(), false);
    } finally {
      hold.release();
      await rolling;
    }
    assert.equal(fast.read(buf, 0), true);
    assert.ok(buf.equals(fill(1, 4 * KiB)));
  });
  const faults = new Faults();
  await withVolume('fastpath-interrupted', { size: MiB, grainSize: 4 * KiB, io: instrumentedIO(faults.hook, nodeFileIO, { exposeFds: true }) }, async (h) => {
    const fast = new FastPath(h.vol.fastPath());
    await h.vol.createCheckpoint('a');
    await h.vol.write(0, fill(2, 8 * KiB));
    assert.equal(fast.write(fill(3, 10), 0, false), true);
    faults.fail((op) => op.kind === 'base' && (op.op === 'write' || op.op === 'punchHole'), 'EIO');
    await assert.rejects(h.vol.rollback('a'));
    faults.clear();
    assert.equal(fast.read(Buffer.alloc(10), 0), false, 'interrupted: only a reopen may go on');
    assert.equal(fast.write(fill(3, 10), 0, false), false);
    const reopened = new FastPath((await h.reopen()).fastPath());
    assert.equal(reopened.write(fill(3, 10), 0, false), true, 'the reopened volume finished the rollback; the checkpoint holds grain 0');
  });
  await withVolume('fastpath-off', { size: MiB, io: instrumentedIO(() => undefined) }, async ({ vol }) => {
    const handle = vol.fastPath();
    assert.equal(handle.baseFd, -1, 'a FileIO without fds: off');
    assert.equal(new FastPath(handle).read(Buffer.alloc(10), 0), false);
  });
  await withVolume('fastpath-ro', { size: MiB }, async (h) => {
    const ro = await h.reopen({ readOnly: true });
    assert.equal(ro.fastPath().baseFd, -1, 'read-only: off');
  });
});

// A close that misses a worker's wake-up would hang: the timeout turns that into a failure.
test('fast path under three worker threads: every checkpoint holds exactly a state the writes could have produced at its cut', { timeout: 120_000 }, async () => {
  const blockSize = 4 * KiB;
  const workers = 3;
  const per = 80;
  const blocks = workers * per;
  const ops = Number(process.env.FLASHCSI_FASTPATH_OPS ?? 60);
  const rnd = seededRandom(Number(process.env.FLASHCSI_SEED ?? 7));
  await withVolume('fastpath-worker', { size: blocks * blockSize, grainSize: 8 * KiB }, async ({ vol }) => {
    const handle = vol.fastPath();
    const threads = Array.from({ length: workers }, (_, w) => {
      const control = new SharedArrayBuffer(64);
      const ctl = new Int32Array(control);
      const worker = new Worker(WORKER, { workerData: { handle, control, first: w * per, count: per, blockSize } satisfies WorkerData });
      const failed = new Promise<never>((_, reject) => worker.once('error', reject));
      failed.catch(() => undefined);
      const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
      const exitedEarly = exited.then(() => {
        if (Atomics.load(ctl, Ctl.Stop) === 0) throw new Error(`worker ${w} stopped: a forwarded write failed`);
      });
      exitedEarly.catch(() => undefined);
      worker.on('message', (m: Forward) => {
        const block = w * per + blockOf(m.seq, per);
        vol
          .write(block * blockSize, stamp(m.seq, block, blockSize), { fua: m.fua })
          .then(
            () => Atomics.store(ctl, Ctl.Answer, 1),
            () => Atomics.store(ctl, Ctl.Answer, 2),
          )
          .finally(() => Atomics.notify(ctl, Ctl.Answer));
      });
      return { ctl, failed, exited, exitedEarly };
    });
    const counts = (word: number): number[] => threads.map((t) => Atomics.load(t.ctl, word));
    const sum = (word: number): number => counts(word).reduce((a, b) => a + b, 0);
    /** Lets the workers complete `n` more writes between them (an event to wait on, not a sleep). */
    const progress = async (n: number): Promise<void> => {
      const target = sum(Ctl.Completed) + n;
      while (sum(Ctl.Completed) < target) {
        const t = threads[Math.floor(rnd() * workers)] as (typeof threads)[number];
        const w = Atomics.waitAsync(t.ctl, Ctl.Completed, Atomics.load(t.ctl, Ctl.Completed));
        if (w.async) await Promise.race([w.value, ...threads.flatMap((x) => [x.failed, x.exitedEarly])]);
      }
    };

    // What the live volume was last rolled back to: per worker, its writes issued after
    // `issuedAtEnd` landed after it, and those from `issuedAtStart` on may have.
    const zeros = Array<number>(workers).fill(0);
    let last: { issuedAtStart: number[]; issuedAtEnd: number[]; image: Buffer } = { issuedAtStart: zeros, issuedAtEnd: zeros, image: Buffer.alloc(blocks * blockSize) };
    const images = new Map<string, Buffer>();
    /** Sequence numbers of block b's writes in (from, to] of its worker. */
    const writesOf = (b: number, from: number, to: number): number[] => {
      const out: number[] = [];
      for (let s = from + 1; s <= to; s++) if (blockOf(s, per) === b % per) out.push(s);
      return out;
    };
    /** Checks each block's value against its worker's writes: `completed` surely landed, nothing after `issued` may have. */
    const check = (what: string, image: Buffer, completed: number[], issued: number[], exact: boolean): void => {
      for (let b = 0; b < blocks; b++) {
        const w = Math.floor(b / per);
        const [done, sent, start, end] = [completed[w], issued[w], last.issuedAtStart[w], last.issuedAtEnd[w]] as [number, number, number, number];
        const s = decode(image.subarray(b * blockSize, (b + 1) * blockSize), b);
        assert.ok(s >= 0, `${what}: block ${b} is torn`);
        assert.ok(s <= sent, `${what}: block ${b} holds write ${s} of worker ${w}, issued after (last issued before: ${sent})`);
        const landed = writesOf(b, end, done).at(-1);
        if (landed !== undefined) {
          if (exact) assert.equal(s, landed, `${what}: block ${b}`);
          else assert.ok(s >= landed, `${what}: block ${b} holds write ${s}, older than write ${landed} completed before the cut`);
        } else {
          const before = decode(last.image.subarray(b * blockSize, (b + 1) * blockSize), b);
          const racing = writesOf(b, Math.max(0, start - 1), sent);
          assert.ok(s === before || racing.includes(s), `${what}: block ${b} holds ${s}: neither the rolled-back ${before} nor a later write`);
        }
      }
    };
    const cutChecked = async (name: string, cut: () => Promise<unknown>): Promise<void> => {
      const completed = counts(Ctl.Completed);
      await cut();
      const issued = counts(Ctl.Issued);
      const image = await vol.readCheckpoint(name, 0, blocks * blockSize);
      check(`checkpoint ${name}`, image, completed, issued, false);
      images.set(name, image);
    };
    const rollbackTo = async (name: string, rollback: () => Promise<unknown>): Promise<void> => {
      const issuedAtStart = counts(Ctl.Issued);
      await rollback();
      last = { issuedAtStart, issuedAtEnd: counts(Ctl.Issued), image: images.get(name) as Buffer };
    };

    let cuts = 0;
    let txs = 0;
    for (let i = 0; i < ops; i++) {
      await progress(1 + Math.floor(rnd() * 60));
      const tx = vol.transaction();
      const names = vol.checkpoints().map((c) => c.name);
      const r = rnd();
      if (tx) {
        if (r < 0.5) await vol.commit(tx.txid);
        else await rollbackTo(tx.checkpoint, () => vol.abort(tx.txid));
        images.delete(tx.checkpoint);
      } else if (r < 0.4 && names.length < 5) {
        const name = `c${++cuts}`;
        await cutChecked(name, () => vol.createCheckpoint(name));
      } else if (r < 0.6 && names.length > 0) {
        const name = names[Math.floor(rnd() * names.length)] as string;
        await vol.deleteCheckpoint(name);
        images.delete(name);
      } else if (r < 0.8 && names.length > 0) {
        const name = names[Math.floor(rnd() * names.length)] as string;
        await rollbackTo(name, () => vol.rollback(name));
      } else if (r < 0.9) {
        const txid = `t${++txs}`;
        await cutChecked(`tx:${txid}`, () => vol.begin(txid));
      } else {
        await vol.expand(vol.size + 8 * KiB);
      }
    }
    for (const t of threads) Atomics.store(t.ctl, Ctl.Stop, 1);
    await Promise.all(threads.map((t) => Promise.race([t.exited, t.failed])));
    const issued = counts(Ctl.Issued);
    assert.deepEqual(counts(Ctl.Completed), issued, 'the workers completed every write');
    check('live volume', await vol.read(0, blocks * blockSize), issued, issued, true);
    for (const [name, image] of images) assert.ok((await vol.readCheckpoint(name, 0, blocks * blockSize)).equals(image), `checkpoint ${name} changed after its cut`);
    const total = sum(Ctl.Issued);
    const fast = sum(Ctl.Fast);
    const forwarded = sum(Ctl.Forwarded);
    console.log(`fast path workers: ${total} writes (${fast} fast, ${forwarded} forwarded), ${sum(Ctl.FastReads)} fast reads, ${ops} chain operations`);
    assert.ok(fast > total / 10, `the fast path took only ${fast} of ${total} writes`);
    assert.ok(forwarded > 0, 'no write was forwarded: the test did not exercise copy-on-write');
    assert.equal(sum(Ctl.TornReads), 0, 'a fast read saw a torn block');
  });
});
