/**
 * The FUSE I/O metrics of a real `serveVolume` (in process, as `flashcsi serve` runs it): the
 * volume's FUSE file mounted through the control op `fuse.mount`, a loop device with direct I/O on
 * it (as the serve-fuse stager attaches it), known I/O through that device (direct writes and reads,
 * an fsync, a discard, a zero-out), then the control op `metrics`, and the plugin's merge of that
 * answer. The counters move by at least the I/O done, fast + forwarded = requests = latency
 * observations, and every series carries the volume label.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Volume } from '../../src/engine/index.js';
import { pollUntil } from '../../src/host/poll.js';
import { createLogger } from '../../src/log/logger.js';
import type { FamilyJSON } from '../../src/metrics/families.js';
import { PluginMetrics } from '../../src/metrics/plugin.js';
import { scrape } from '../../src/metrics/scrape.js';
import { controlCall } from '../../src/nbd/control.js';
import { controlSocketPath, serveVolume, type RunningServe } from '../../src/nbd/serve.js';
import { tempDir } from '../engine/helpers.js';
import { run, runOk } from '../nbd/helpers/fixture.js';
import { parsePrometheusText, sampleValue, type PromFamily } from '../metrics/prom-text.js';

const MiB = 1024 * 1024;
const BLOCK = 64 * 1024;
const BLOCKS = 48;
const LABEL = 'pv-fuse-metrics';
const OPS = ['read', 'write', 'flush', 'trim', 'write_zeroes'] as const;

describe("serve's FUSE I/O metrics", { timeout: 120_000 }, () => {
  const t = tempDir('fuse-metrics');
  const dir = path.join(t.dir, LABEL);
  const socket = path.join(t.dir, 'run', 'nbd.sock');
  const mnt = path.join(t.dir, 'fuse');
  let served: RunningServe;
  let loop: string | undefined;

  const metrics = (): Promise<FamilyJSON[]> => controlCall<FamilyJSON[]>(controlSocketPath(socket), { op: 'metrics' }, 10_000);
  /** The control op's answer through the plugin's merge (scrape()), as the plugin's /metrics shows it. */
  const merged = async (): Promise<Map<string, PromFamily>> => {
    const plugin = new PluginMetrics({ processMetrics: false });
    const text = await scrape({ local: plugin.local, shared: [plugin.shared], timeoutMs: 10_000, sources: [{ name: LABEL, fetch: metrics }], onError: (name) => assert.fail(`no metrics from ${name}`) });
    return parsePrometheusText(text);
  };

  before(async () => {
    await (await Volume.create(dir, { size: 32 * MiB })).close();
    fs.mkdirSync(mnt);
    served = await serveVolume({ dir, socket, logger: createLogger({ level: 'warn' }) });
  });
  after(async () => {
    try {
      if (loop !== undefined) await run('losetup', ['-d', loop]).catch(() => undefined);
      // udev may hold a just-detached loop device for a moment; serve's stop unmounts lazily anyway.
      await served.stop();
    } finally {
      t.cleanup();
    }
  });

  it('series exist, at 0, before the file is mounted', async () => {
    const f = await merged();
    for (const op of OPS) {
      for (const p of ['fast', 'forwarded']) assert.equal(sampleValue(f, 'flashcsi_fuse_requests_total', { volume: LABEL, op, path: p }), 0, `${op} ${p}`);
      assert.equal(sampleValue(f, 'flashcsi_fuse_request_errors_total', { volume: LABEL, op }), 0, op);
      assert.equal(sampleValue(f, 'flashcsi_fuse_request_duration_seconds_count', { volume: LABEL, op }), 0, op);
    }
  });

  it('count the I/O done through the loop device, by operation and path', async () => {
    const mounted = await controlCall<{ file: string }>(controlSocketPath(socket), { op: 'fuse.mount', mountpoint: mnt }, 10_000);
    loop = (await runOk('losetup', ['--find', '--show', '--direct-io=on', mounted.file])).trim();
    const before = await merged();

    const src = path.join(t.dir, 'data');
    fs.writeFileSync(src, Buffer.alloc(BLOCKS * BLOCK, 0x5a));
    await runOk('dd', [`if=${src}`, `of=${loop}`, `bs=${BLOCK}`, `count=${BLOCKS}`, 'oflag=direct', 'conv=notrunc,fsync', 'status=none']);
    await runOk('dd', [`if=${loop}`, 'of=/dev/null', `bs=${BLOCK}`, `count=${BLOCKS}`, 'iflag=direct', 'status=none']);
    await runOk('blkdiscard', ['-o', String(4 * MiB), '-l', String(MiB), loop]);
    await runOk('blkdiscard', ['-z', '-o', String(6 * MiB), '-l', String(MiB), loop]);
    // Plain allocation: a worker refuses it at once (EOPNOTSUPP), counted under write_zeroes.
    const refused = await run('fallocate', ['-o', '0', '-l', '4096', mounted.file]);
    assert.ok(refused.code !== 0 && /not supported/i.test(refused.stderr), refused.stderr);
    const after = await merged();

    const v = (f: Map<string, PromFamily>, name: string, labels: Record<string, string>): number => {
      const x = sampleValue(f, name, { volume: LABEL, ...labels });
      assert.ok(x !== undefined, `${name} ${JSON.stringify(labels)} present with volume=${LABEL}`);
      return x;
    };
    const delta = (name: string, labels: Record<string, string>): number => v(after, name, labels) - v(before, name, labels);
    const requests = (op: string): number => delta('flashcsi_fuse_requests_total', { op, path: 'fast' }) + delta('flashcsi_fuse_requests_total', { op, path: 'forwarded' });

    assert.ok(delta('flashcsi_fuse_bytes_total', { op: 'write' }) >= BLOCKS * BLOCK, 'bytes written');
    assert.ok(requests('write') >= BLOCKS, 'one write request per direct block at least');
    assert.ok(delta('flashcsi_fuse_bytes_total', { op: 'read' }) >= BLOCKS * BLOCK, 'bytes read');
    assert.ok(requests('read') >= BLOCKS);
    // No checkpoint: the engine's fast path takes live reads and writes in the workers.
    assert.ok(delta('flashcsi_fuse_requests_total', { op: 'write', path: 'fast' }) >= BLOCKS, 'writes answered by the workers');
    assert.ok(delta('flashcsi_fuse_requests_total', { op: 'read', path: 'fast' }) >= BLOCKS, 'reads answered by the workers');
    assert.ok(requests('flush') >= 1, "dd's fsync reached the file as FSYNC");
    assert.ok(delta('flashcsi_fuse_bytes_total', { op: 'trim' }) >= MiB, 'the discarded range');
    assert.ok(delta('flashcsi_fuse_bytes_total', { op: 'write_zeroes' }) >= MiB, 'the zeroed range');
    // Trim and zeroes always go to the main thread; what a worker refuses at once counts as fast.
    assert.ok(delta('flashcsi_fuse_requests_total', { op: 'trim', path: 'forwarded' }) >= 1);
    assert.equal(delta('flashcsi_fuse_requests_total', { op: 'trim', path: 'fast' }), 0);
    assert.ok(delta('flashcsi_fuse_requests_total', { op: 'write_zeroes', path: 'forwarded' }) >= 1);
    assert.equal(delta('flashcsi_fuse_requests_total', { op: 'write_zeroes', path: 'fast' }), 1, 'the refused fallocate');
    assert.equal(delta('flashcsi_fuse_request_errors_total', { op: 'write_zeroes' }), 1);
    for (const op of OPS) {
      if (op !== 'write_zeroes') assert.equal(delta('flashcsi_fuse_request_errors_total', { op }), 0, `${op}: no errors`);
      assert.equal(v(after, 'flashcsi_fuse_request_duration_seconds_count', { op }), v(after, 'flashcsi_fuse_requests_total', { op, path: 'fast' }) + v(after, 'flashcsi_fuse_requests_total', { op, path: 'forwarded' }), `${op}: one latency observation per request`);
    }
    assert.ok(delta('flashcsi_fuse_request_duration_seconds_sum', { op: 'write' }) > 0);
    // Every FUSE series carries the volume label, and only this volume's.
    for (const [name, fam] of after) {
      if (!name.startsWith('flashcsi_fuse_')) continue;
      for (const s of fam.samples) assert.equal(s.labels['volume'], LABEL, `${s.name} ${JSON.stringify(s.labels)}`);
    }

    await runOk('losetup', ['-d', loop]);
    loop = undefined;
    // The counts run on after the export ends (serve keeps one set for all its mounts).
    await pollUntil(async () => (await run('umount', [mnt])).code === 0, 10_000, `${mnt} to unmount`);
    const later = await merged();
    assert.equal(v(later, 'flashcsi_fuse_bytes_total', { op: 'write' }), v(after, 'flashcsi_fuse_bytes_total', { op: 'write' }));
  });
});
