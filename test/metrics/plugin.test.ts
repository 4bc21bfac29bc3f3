/**
 * /metrics of a real `flashcsi plugin --metrics-address 127.0.0.1:<port>` process, scraped with a
 * real HTTP client: two block volumes created and staged through CSI calls (each with its own
 * `flashcsi serve` process), I/O through their NBD sockets with qemu-io and through a staged block
 * device with dd, a checkpoint cut through CreateSnapshot, copy-on-write writes after it. The
 * device's I/O shows in the series of its attach method: serve's FUSE file (serve-fuse) or NBD. The per-volume counters move by what was done,
 * each volume under its own label; the CSI call counters count the calls made; the whole exposition
 * passes the strict text checker. Then one volume's serve process is SIGKILLed: the scrape still
 * answers, without that volume, and counts the failure.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { isProcessAlive } from '../../src/host/process.js';
import type { StageRecord } from '../../src/volumes/state.js';
import { freePort } from '../k8s/harness.js';
import { pollUntil } from '../../src/host/poll.js';
import { BLOCK_CAP, call, MiB, shortTempDir, startPlugin, sweep, type PluginProcess } from '../csi/plugin-process.js';
import { httpGet } from './helpers.js';
import { parsePrometheusText, sampleValue, type PromFamily } from './prom-text.js';

const exec = promisify(execFile);
const GRAIN = 64 * 1024;
const VOLUMES = ['mv-a', 'mv-b'] as const;

function stageRecord(p: PluginProcess, volumeId: string): StageRecord {
  return JSON.parse(readFileSync(join(p.stateDir, 'node', volumeId, 'stage.json'), 'utf8')) as StageRecord;
}

/** qemu-io commands on a staged volume's NBD socket (its own connection, next to nbdfuse's). */
async function qemuIo(p: PluginProcess, volumeId: string, ...commands: string[]): Promise<void> {
  const socket = stageRecord(p, volumeId).serve?.socket;
  assert.ok(socket !== undefined, `${volumeId} has a server`);
  await exec('qemu-io', ['-f', 'raw', `nbd+unix:///?socket=${socket}`, ...commands.flatMap((c) => ['-c', c])]);
}

describe('plugin /metrics with two staged volumes', { timeout: 240_000 }, () => {
  let dir: string;
  let p: PluginProcess;
  let base: string;

  const scrapeOk = async (): Promise<Map<string, PromFamily>> => {
    const r = await httpGet(`${base}/metrics`);
    assert.equal(r.status, 200, r.body);
    assert.equal(r.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
    return parsePrometheusText(r.body);
  };
  const nbd = (f: Map<string, PromFamily>, name: string, volume: string, op: string): number => {
    const v = sampleValue(f, name, { volume, op });
    assert.ok(v !== undefined, `${name}{volume=${volume},op=${op}} present`);
    return v;
  };
  const perVolume = (f: Map<string, PromFamily>, name: string, volume: string): number | undefined => sampleValue(f, name, { volume });

  before(async () => {
    dir = await shortTempDir();
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    p = await startPlugin(dir, { extraArgs: ['--metrics-address', `127.0.0.1:${port}`] });
    await p.waitReady();
    for (const id of VOLUMES) {
      await call(p.c.controller, 'CreateVolume', {
        name: id,
        capacity_range: { required_bytes: String(64 * MiB) },
        parameters: { grainSize: String(GRAIN) },
        volume_capabilities: [BLOCK_CAP()],
      });
      const staging = join(dir, 'staging', id);
      await call(p.c.node, 'NodeStageVolume', { volume_id: id, staging_target_path: staging, volume_capability: BLOCK_CAP() });
    }
  });
  after(async () => {
    try {
      for (const id of VOLUMES) await call(p.c.node, 'NodeUnstageVolume', { volume_id: id, staging_target_path: join(dir, 'staging', id) }).catch(() => undefined);
      await p.stop();
    } finally {
      await sweep(dir);
    }
  });

  it('/healthz answers ok once the plugin is ready', async () => {
    const r = await httpGet(`${base}/healthz`);
    assert.deepEqual([r.status, r.body], [200, 'ok\n']);
  });

  it('per-volume NBD and engine counters move by the I/O done, each volume under its own label', async () => {
    const before = await scrapeOk();
    // Volume a: 1 MiB written (16 grains), 64 KiB read; then a checkpoint; then 512 KiB over
    // data the checkpoint holds (8 grains copied first).
    await qemuIo(p, 'mv-a', 'write -P 0x11 0 1M', 'read -P 0x11 0 64k', 'flush');
    const snap = await call<{ snapshot: { snapshot_id: string } }>(p.c.controller, 'CreateSnapshot', { name: 'mv-a-snap', source_volume_id: 'mv-a' });
    await qemuIo(p, 'mv-a', 'write -P 0x22 0 512k', 'flush');
    // Volume b: 2 MiB in two writes, 1 MiB read; no checkpoint, so no copies.
    await qemuIo(p, 'mv-b', 'write -P 0x33 0 1M', 'write -P 0x44 1M 1M', 'read -P 0x44 1M 1M');
    // And 1 MiB through b's staged device, in 16 direct writes, then an fsync.
    const attachment = stageRecord(p, 'mv-b').attachment;
    assert.ok(attachment !== null, 'mv-b is attached');
    await exec('dd', ['if=/dev/urandom', `of=${attachment.device}`, 'bs=64k', 'count=16', 'seek=32', 'oflag=direct', 'conv=notrunc,fsync', 'status=none']);
    const after = await scrapeOk();

    const delta = (name: string, volume: string, op: string): number => nbd(after, name, volume, op) - nbd(before, name, volume, op);
    assert.ok(delta('flashcsi_nbd_bytes_total', 'mv-a', 'write') >= MiB + 512 * 1024, 'a: bytes written');
    assert.ok(delta('flashcsi_nbd_requests_total', 'mv-a', 'write') >= 2, 'a: write requests');
    assert.ok(delta('flashcsi_nbd_bytes_total', 'mv-a', 'read') >= 64 * 1024, 'a: bytes read');
    assert.ok(delta('flashcsi_nbd_requests_total', 'mv-a', 'flush') >= 2, 'a: flushes');
    if (attachment.method === 'serve-fuse') {
      // No NBD on that path: serve's own FUSE file carries the device's I/O.
      const fuse = (name: string, labels: Record<string, string>): number => {
        const at = (f: Map<string, PromFamily>): number => {
          const v = sampleValue(f, name, { volume: 'mv-b', ...labels });
          assert.ok(v !== undefined, `${name}{volume=mv-b,${JSON.stringify(labels)}} present`);
          return v;
        };
        return at(after) - at(before);
      };
      assert.ok(fuse('flashcsi_fuse_bytes_total', { op: 'write' }) >= MiB, 'b: bytes written through the FUSE file');
      assert.ok(fuse('flashcsi_fuse_requests_total', { op: 'write', path: 'fast' }) + fuse('flashcsi_fuse_requests_total', { op: 'write', path: 'forwarded' }) >= 16, 'b: its write requests');
      assert.ok(fuse('flashcsi_fuse_request_duration_seconds_count', { op: 'flush' }) >= 1, "b: dd's fsync");
      assert.ok(sampleValue(after, 'flashcsi_fuse_bytes_total', { volume: 'mv-a', op: 'write' }) !== undefined, "a's FUSE series too");
      assert.ok(delta('flashcsi_nbd_bytes_total', 'mv-b', 'write') >= 2 * MiB, 'b: bytes written by qemu-io');
    } else {
      assert.ok(delta('flashcsi_nbd_bytes_total', 'mv-b', 'write') >= 3 * MiB, "b: bytes written by qemu-io and through the device's NBD connection");
    }
    assert.ok(delta('flashcsi_nbd_requests_total', 'mv-b', 'write') >= 2, 'b: write requests');
    assert.ok(delta('flashcsi_nbd_bytes_total', 'mv-b', 'read') >= MiB, 'b: bytes read');
    for (const volume of VOLUMES) {
      for (const op of ['read', 'write', 'flush', 'trim', 'write_zeroes', 'block_status']) {
        assert.equal(
          nbd(after, 'flashcsi_nbd_request_duration_seconds_count', volume, op),
          nbd(after, 'flashcsi_nbd_requests_total', volume, op),
          `${volume} ${op}: one latency observation per request`,
        );
      }
      // qemu-io's connection, and nbdfuse's or the kernel's unless serve serves the FUSE file itself.
      const connections = stageRecord(p, volume).attachment?.method === 'serve-fuse' ? 1 : 2;
      assert.ok((perVolume(after, 'flashcsi_nbd_connections_accepted_total', volume) ?? 0) >= connections, `${volume}: the NBD connections`);
      assert.ok(perVolume(after, 'flashcsi_nbd_inflight_requests', volume) !== undefined);
    }
    assert.ok((nbd(after, 'flashcsi_nbd_request_duration_seconds_sum', 'mv-a', 'write') as number) > 0);

    // Copy-on-write and checkpoints: only on a.
    assert.ok((perVolume(after, 'flashcsi_cow_copied_grains_total', 'mv-a') ?? 0) >= 8, 'a: the 8 grains overwritten after the checkpoint were copied');
    assert.ok((perVolume(after, 'flashcsi_cow_copied_bytes_total', 'mv-a') ?? 0) >= 8 * GRAIN);
    assert.equal(perVolume(after, 'flashcsi_cow_copied_grains_total', 'mv-b'), 0);
    assert.equal(perVolume(after, 'flashcsi_checkpoints', 'mv-a'), 1);
    assert.equal(perVolume(after, 'flashcsi_checkpoints', 'mv-b'), 0);
    assert.equal(perVolume(after, 'flashcsi_checkpoint_cut_duration_seconds_count', 'mv-a'), 1);
    assert.equal(perVolume(after, 'flashcsi_checkpoint_cut_duration_seconds_count', 'mv-b'), 0);
    assert.equal(perVolume(after, 'flashcsi_token_waits_total', 'mv-b'), 0);

    // The plugin's own families.
    const csi = (service: string, method: string): number | undefined => sampleValue(after, 'flashcsi_csi_requests_total', { grpc_service: service, grpc_method: method, grpc_code: 'OK' });
    assert.equal(csi('csi.v1.Controller', 'CreateVolume'), 2);
    assert.equal(csi('csi.v1.Node', 'NodeStageVolume'), 2);
    assert.equal(csi('csi.v1.Controller', 'CreateSnapshot'), 1);
    assert.ok((csi('csi.v1.Identity', 'Probe') ?? 0) >= 1);
    assert.equal(sampleValue(after, 'flashcsi_csi_request_duration_seconds_count', { grpc_service: 'csi.v1.Controller', grpc_method: 'CreateSnapshot', grpc_code: 'OK' }), 1);
    assert.equal(sampleValue(after, 'flashcsi_volumes_staged'), 2);
    assert.equal(sampleValue(after, 'flashcsi_plugin_ready'), 1);
    for (const result of ['adopted', 'restarted', 'abnormal', 'cleaned']) assert.equal(sampleValue(after, 'flashcsi_adoption_volumes', { result }), 0, result);
    assert.ok(after.has('process_resident_memory_bytes'), 'Node.js process metrics');

    await call(p.c.controller, 'DeleteSnapshot', { snapshot_id: snap.snapshot.snapshot_id });
  });

  it('a killed serve process does not break the scrape: it is skipped and counted', async () => {
    const rec = stageRecord(p, 'mv-b');
    assert.ok(rec.serve !== null);
    const killed = rec.serve.process;
    process.kill(killed.pid, 'SIGKILL');
    await pollUntil(() => !isProcessAlive(killed), 10_000, `serve pid ${killed.pid} to die`);

    const first = await scrapeOk();
    assert.equal(sampleValue(first, 'flashcsi_scrape_errors_total', { volume: 'mv-b' }), 1);
    assert.equal(perVolume(first, 'flashcsi_nbd_connections', 'mv-b'), undefined, "the dead volume's data-path metrics are left out");
    assert.ok(perVolume(first, 'flashcsi_nbd_connections', 'mv-a') !== undefined, 'the live volume is still reported');
    assert.equal(sampleValue(first, 'flashcsi_scrape_errors_total', { volume: 'mv-a' }), undefined);
    const second = await scrapeOk();
    assert.equal(sampleValue(second, 'flashcsi_scrape_errors_total', { volume: 'mv-b' }), 2, 'counted on every scrape it is missing from');
    assert.match(readFileSync(p.logFile, 'utf8'), /no metrics from the volume's data-path server/);
  });
});
