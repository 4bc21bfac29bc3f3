/**
 * Interoperability with real NBD clients (qemu-io, qemu-img, qemu-nbd -L, nbdinfo, nbdcopy, fio,
 * nbd-client -l) against the in-process server on a Unix socket. The clients run as child
 * processes; the test process keeps serving meanwhile (everything is async).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { MemoryExport } from '../../src/nbd/memory-export.js';
import { type Fixture, MiB, run, runOk, startServer } from './helpers/fixture.js';

const SIZE = 256 * MiB;
const TOOLS = ['qemu-io', 'qemu-img', 'qemu-nbd', 'nbdinfo', 'nbdcopy', 'fio', 'nbd-client'];

interface MapEntry {
  offset: number;
  length: number;
  type: number;
}

describe('interop with real NBD clients', () => {
  let fx: Fixture;
  let work: string;
  const roData = randomBytes(4 * MiB);
  let ro: MemoryExport;

  before(async () => {
    // Fail loudly (not skip) if a peer is missing: setup.sh installs them all.
    for (const t of TOOLS) {
      const r = await run('sh', ['-c', `command -v ${t}`]);
      assert.equal(r.code, 0, `${t} is not installed (scripts/setup.sh test installs it)`);
    }
    // A read-only "checkpoint" of a volume that holds roData.
    const origin = new MemoryExport({ name: 'origin', size: 16 * MiB });
    origin.writeSync(0, roData);
    ro = origin.clone({ name: 'ro', readOnly: true, description: 'read-only checkpoint' });
    fx = await startServer({ size: SIZE, exports: [ro] });
    work = path.join(fx.dir, 'work');
    await fsp.mkdir(work);
  });
  after(async () => {
    await fx.close();
  });

  const map = async (uri: string): Promise<MapEntry[]> => JSON.parse(await runOk('nbdinfo', ['--map', '--json', uri])) as MapEntry[];

  it('qemu-io: pattern writes (FUA via writethrough), write-zeroes, discard, flush, pattern reads', async () => {
    const fua0 = fx.mem.counters.fuaWrites;
    const out = await runOk('qemu-io', [
      '-f', 'raw', fx.uri(),
      '-c', 'write -P 0xab 0 1M',
      '-c', 'write -P 0xcd 4M 64k',
      '-c', 'write -z 8M 1M',
      '-c', 'read -P 0xab 0 1M',
      '-c', 'read -P 0xcd 4M 64k',
      '-c', 'read -P 0 8M 1M',
      '-c', 'flush',
      '-c', 'discard 4M 64k',
      '-c', 'read -P 0 4M 64k',
    ]);
    assert.match(out, /wrote 1048576\/1048576 bytes at offset 0/);
    assert.match(out, /discard 65536\/65536 bytes at offset 4194304/);
    assert.doesNotMatch(out, /Pattern verification failed/);
    assert.ok(fx.mem.counters.fuaWrites - fua0 >= 2, 'qemu-io writethrough sends FUA writes');
    assert.ok(fx.mem.readSync(0, MiB).every((b) => b === 0xab), 'data landed in the export');
    // A wrong pattern must be detected (proves the reads above really compared data).
    const bad = await run('qemu-io', ['-f', 'raw', fx.uri(), '-c', 'read -P 0xcd 0 4k']);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stdout + bad.stderr, /Pattern verification failed/);
  });

  it('qemu-img convert + compare: a raw image and the export are identical', async () => {
    const img = path.join(work, 'src.img');
    const fh = await fsp.open(img, 'w');
    await fh.write(randomBytes(8 * MiB), 0, 8 * MiB, 0);
    await fh.write(randomBytes(3 * MiB), 0, 3 * MiB, 100 * MiB);
    await fh.truncate(SIZE);
    await fh.close();
    await runOk('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', img, fx.uri()]);
    const out = await runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', img, fx.uri()]);
    assert.match(out, /Images are identical/);
    fx.mem.writeSync(50 * MiB, Buffer.from('x'));
    const diff = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', img, fx.uri()]);
    assert.equal(diff.code, 1, 'a one-byte difference is reported');
    const info = await runOk('qemu-img', ['info', '--output=json', fx.uri()]);
    assert.equal((JSON.parse(info) as { 'virtual-size': number })['virtual-size'], SIZE);
  });

  it('nbdinfo --map: data after WRITE, holes after TRIM', async () => {
    const name = 'map';
    const exp = new MemoryExport({ name, size: 64 * MiB });
    fx.provider.add(exp);
    const uri = fx.uri(name);
    assert.deepEqual(await map(uri), [{ offset: 0, length: 64 * MiB, type: 3, description: 'hole,zero' }]);
    await runOk('qemu-io', ['-f', 'raw', uri, '-c', 'write -P 0x11 1M 2M']);
    const m1 = await map(uri);
    assert.deepEqual(
      m1.map((e) => [e.offset, e.length, e.type]),
      [
        [0, MiB, 3],
        [MiB, 2 * MiB, 0],
        [3 * MiB, 61 * MiB, 3],
      ],
    );
    await runOk('qemu-io', ['-f', 'raw', uri, '-c', 'discard 1M 1M']);
    const m2 = await map(uri);
    assert.deepEqual(
      m2.map((e) => [e.offset, e.length, e.type]),
      [
        [0, 2 * MiB, 3],
        [2 * MiB, MiB, 0],
        [3 * MiB, 61 * MiB, 3],
      ],
    );
    const totals = await runOk('nbdinfo', ['--map', '--totals', uri]);
    assert.match(totals, /1048576\s+1\.6%\s+0 data/);
  });

  it('nbdcopy: round trip with 4 connections (multi-conn)', async () => {
    const name = 'copy';
    const exp = new MemoryExport({ name, size: 64 * MiB });
    fx.provider.add(exp);
    const src = path.join(work, 'copy-src.img');
    const dst = path.join(work, 'copy-dst.img');
    const data = randomBytes(48 * MiB);
    await fsp.writeFile(src, data);
    await fsp.truncate(src, 64 * MiB);
    const accepted0 = fx.server.stats.accepted;
    // nbdcopy caps connections at its thread count (default: number of CPUs), so ask for 4 threads.
    await runOk('nbdcopy', ['--connections=4', '--threads=4', '--requests=16', '--flush', src, fx.uri(name)]);
    assert.ok(fx.server.stats.accepted - accepted0 >= 4, `nbdcopy opened ${fx.server.stats.accepted - accepted0} connections`);
    assert.ok(fx.server.stats.peakConnections >= 4, 'the 4 connections were open at once');
    assert.ok(exp.counters.flushes >= 1, '--flush reached the export');
    assert.ok(exp.readSync(0, 48 * MiB).equals(data));
    await runOk('nbdcopy', ['--connections=4', '--threads=4', fx.uri(name), dst]);
    const back = await fsp.readFile(dst);
    assert.equal(back.length, 64 * MiB);
    assert.ok(back.subarray(0, 48 * MiB).equals(data));
    assert.ok(back.subarray(48 * MiB).every((b) => b === 0));
  });

  it('fio nbd engine: randwrite qd32 × 2 jobs with crc32c verify', async () => {
    const name = 'fio';
    fx.provider.add(new MemoryExport({ name, size: 64 * MiB }));
    const out = await runOk(
      'fio',
      [
        '--name=verify', '--ioengine=nbd', `--uri=${fx.uri(name)}`, '--rw=randwrite', '--bs=4k',
        '--iodepth=32', '--numjobs=2', '--size=32M', '--offset_increment=32M',
        '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--verify_state_save=0', '--output-format=json',
      ],
      { timeoutMs: 120_000 },
    );
    const json = JSON.parse(out.slice(out.indexOf('{'))) as { jobs: { error: number; write: { io_bytes: number }; read: { io_bytes: number } }[] };
    assert.equal(json.jobs.length, 2);
    for (const j of json.jobs) {
      assert.equal(j.error, 0);
      assert.equal(j.write.io_bytes, 32 * MiB);
      assert.equal(j.read.io_bytes, 32 * MiB, 'verify phase read everything back');
    }
  });

  it('qemu-nbd -L, nbdinfo --list and nbd-client -l list the exports', async () => {
    const L = await runOk('qemu-nbd', ['-L', '-k', fx.sock]);
    assert.match(L, /export: ''\n\s+description: test export/);
    assert.match(L, /export: 'ro'\n\s+description: read-only checkpoint/);
    assert.match(L, /flags: 0xded \( flush fua trim zeroes df multi cache fast-zero \)/);
    assert.match(L, /flags: 0x587 \( readonly flush df multi cache \)/);
    assert.match(L, /min block: 1\n\s+opt block: 4096\n\s+max block: 33554432/);
    assert.match(L, /base:allocation/);
    const list = JSON.parse(await runOk('nbdinfo', ['--list', '--json', fx.uri()])) as { exports: { 'export-name': string; 'export-size': number; is_read_only: boolean }[] };
    const byName = new Map(list.exports.map((e) => [e['export-name'], e]));
    assert.equal(byName.get('')?.['export-size'], SIZE);
    assert.equal(byName.get('ro')?.is_read_only, true);
    const nc = await runOk('nbd-client', ['-l', '-unix', fx.sock]);
    assert.match(nc, /^ro: read-only checkpoint$/m);
  });

  it('a read-only export: clients see it read-only, writes are refused, data intact', async () => {
    const uri = fx.uri('ro');
    assert.equal((await run('nbdinfo', ['--is', 'read-only', uri])).code, 0);
    assert.equal((await run('nbdinfo', ['--can', 'trim', uri])).code, 2, 'cannot trim');
    const w = await run('qemu-io', ['-f', 'raw', uri, '-c', 'write -P 0x01 0 4k']);
    assert.notEqual(w.code, 0);
    assert.match(w.stderr + w.stdout, /Permission denied|read-only|Operation not permitted/);
    const dst = path.join(work, 'ro.img');
    await runOk('nbdcopy', [uri, dst]);
    const back = await fsp.readFile(dst);
    assert.ok(back.subarray(0, roData.length).equals(roData));
    const c = await run('nbdcopy', [dst, uri]);
    assert.notEqual(c.code, 0, 'nbdcopy refuses a read-only destination');
    assert.equal(ro.counters.writes, 0);
  });
});
