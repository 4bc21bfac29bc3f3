/**
 * src/metrics in process: the NBD request accounting through a real NbdServer and a raw NBD
 * client, the scrape merge (aggregation, dead and malformed sources), the HTTP endpoint, the
 * coordinator's phase gauges, the strict text checker itself, and docs/metrics.md against the
 * metric definitions.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { lstatSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Registry } from 'prom-client';
import { MapExportProvider, MemoryExport, NbdServer } from '../../src/nbd/index.js';
import { ControlError, controlCall } from '../../src/nbd/control.js';
import { ALL_METRICS, FUSE_LATENCY_BUCKETS, Metric, NBD_OPS } from '../../src/metrics/names.js';
import { registerFuseIo } from '../../src/metrics/fuse.js';
import { CoordinatorMetrics } from '../../src/metrics/coordinator.js';
import { EngineMetrics } from '../../src/metrics/engine.js';
import { bucketIndex } from '../../src/metrics/families.js';
import { parseListenAddress, startMetricsServer } from '../../src/metrics/http.js';
import { NbdIoMetrics } from '../../src/metrics/nbd.js';
import { PluginMetrics } from '../../src/metrics/plugin.js';
import { scrape } from '../../src/metrics/scrape.js';
import { repoRoot } from '../k8s/harness.js';
import { CMD, ERR, RawClient } from '../nbd/helpers/raw-client.js';
import { httpGet } from './helpers.js';
import { parsePrometheusText, sampleValue, samplesNamed } from './prom-text.js';

const quiet = { info: () => undefined, warn: () => undefined };

describe('the strict Prometheus text checker', () => {
  it('accepts a well-formed exposition and rejects each broken rule', () => {
    const ok = '# HELP a_total A.\n# TYPE a_total counter\na_total{x="1"} 2\na_total{x="2"} 3\n# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 3\nh_count 2\n';
    const fams = parsePrometheusText(ok);
    assert.equal(sampleValue(fams, 'a_total', { x: '2' }), 3);
    assert.equal(sampleValue(fams, 'h_count'), 2);
    const bad: Array<[string, RegExp]> = [
      ['a_total 1\n', /no # TYPE'd family/],
      ['# TYPE a counter\na 1\na 2\n', /duplicate series/],
      ['# TYPE a counter\na{x="1",x="2"} 1\n', /label x twice/],
      ['# TYPE a counter\na 1\n# TYPE a counter\n', /after samples|second # TYPE/],
      ['# TYPE a counter\n# TYPE b counter\na{x="1"} 1\nb 1\na{x="2"} 1\n', /not contiguous/],
      ['# TYPE a counter\na one\n', /bad sample value/],
      ['# TYPE a counter\na{x="1} 1\n', /unterminated|expected/],
      ['# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_count 1\n', /not cumulative/],
      ['# TYPE h histogram\nh_bucket{le="1"} 1\nh_count 1\n', /\+Inf/],
      ['# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_count 1\n', /_count/],
      ['# TYPE a counter\na 1', /newline/],
    ];
    for (const [text, why] of bad) assert.throws(() => parsePrometheusText(text), why, JSON.stringify(text));
  });
});

describe('metric definitions', () => {
  it('follow the Prometheus naming rules', () => {
    const names = new Set<string>();
    for (const m of ALL_METRICS) {
      assert.match(m.name, /^flashcsi_[a-z0-9_]+$/, m.name);
      assert.ok(!names.has(m.name), `${m.name} defined twice`);
      names.add(m.name);
      assert.equal(m.name.endsWith('_total'), m.type === 'counter', `${m.name}: counters, and only counters, end in _total`);
      if (m.type === 'histogram') assert.match(m.name, /_seconds$|_bytes$/, `${m.name}: a histogram has a unit`);
      assert.ok(!m.labelNames.includes('le'), m.name);
    }
  });

  it('docs/metrics.md documents every metric with its type and labels, and no other', () => {
    const doc = readFileSync(join(repoRoot(), 'docs/metrics.md'), 'utf8');
    const rows = new Map<string, { type: string; labels: string }>();
    for (const line of doc.split('\n')) {
      const m = /^\| `(flashcsi_[a-z0-9_]+)` \| (counter|gauge|histogram) \| ([^|]*) \|/.exec(line);
      if (m) rows.set(m[1] as string, { type: m[2] as string, labels: (m[3] as string).trim() });
    }
    for (const m of ALL_METRICS) {
      const row = rows.get(m.name);
      assert.ok(row, `docs/metrics.md has no row for ${m.name}`);
      assert.equal(row.type, m.type, m.name);
      const labels = m.labelNames.length === 0 ? '—' : m.labelNames.map((l) => `\`${l}\``).join(', ');
      assert.equal(row.labels, labels, `${m.name}: labels`);
    }
    assert.deepEqual([...rows.keys()].filter((n) => !ALL_METRICS.some((m) => m.name === n)), [], 'docs/metrics.md documents metrics that do not exist');
  });

  it('bucketIndex finds the first bound at or above the value', () => {
    const b = [1, 2, 5];
    assert.deepEqual([0, 1, 1.5, 2, 4, 5, 6].map((v) => bucketIndex(b, v)), [0, 0, 1, 1, 2, 2, 3]);
  });

  it('parseListenAddress takes HOST:PORT, :PORT and [IPv6]:PORT', () => {
    assert.deepEqual(parseListenAddress(':9808'), { host: undefined, port: 9808 });
    assert.deepEqual(parseListenAddress('127.0.0.1:0'), { host: '127.0.0.1', port: 0 });
    assert.deepEqual(parseListenAddress('[::1]:9809'), { host: '::1', port: 9809 });
    assert.deepEqual(parseListenAddress('node-1.example:80'), { host: 'node-1.example', port: 80 });
    for (const bad of ['9808', ':', 'host:', ':70000', '::1:80', 'a:b']) assert.throws(() => parseListenAddress(bad), /HOST:PORT/, bad);
  });
});

describe('NBD request accounting through a real NbdServer', () => {
  let dir: string;
  let server: NbdServer;
  const io = new NbdIoMetrics();
  const registry = new Registry();

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fcsi-m-'));
    server = new NbdServer({ provider: new MapExportProvider([new MemoryExport({ size: 4 * 1024 * 1024 })]), observer: io });
    io.register(registry, 'mem', { connections: () => server.connections.size, inflight: () => server.inflight, accepted: () => server.stats.accepted });
    await server.listenUnix(join(dir, 'sock', 'nbd.sock'));
  });
  after(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('counts every answered request once, by op, with bytes and latency, immediate replies and errors included', async () => {
    const c = await RawClient.connect(join(dir, 'sock', 'nbd.sock'));
    await c.negotiate({ name: '' });
    const data = Buffer.alloc(64 * 1024, 7);
    let cookie = 0n;
    const roundTrip = async (type: number, offset: number, length: number, payload?: Buffer, readLength = 0): Promise<number> => {
      await c.send(type, 0, ++cookie, offset, length, payload);
      return (await c.readReply(readLength)).error;
    };
    for (let i = 0; i < 3; i++) assert.equal(await roundTrip(CMD.write, i * data.length, data.length, data), 0);
    assert.equal(await roundTrip(CMD.read, 0, 8192, undefined, 8192), 0);
    assert.equal(await roundTrip(CMD.trim, 0, 4096), 0);
    assert.equal(await roundTrip(CMD.writeZeroes, 65536, 65536), 0);
    assert.equal(await roundTrip(CMD.flush, 0, 0), 0);
    assert.equal(await roundTrip(CMD.read, 0, 0), 0, 'a zero-length read is answered at once');
    assert.equal(await roundTrip(CMD.read, 8 * 1024 * 1024, 4096), ERR.EINVAL, 'a read past the end is refused');
    assert.equal(await roundTrip(CMD.resize, 0, 0), ERR.EINVAL, 'an unknown command is refused');

    const fams = parsePrometheusText(await registry.metrics());
    const v = (name: string, op: string): number | undefined => sampleValue(fams, name, { volume: 'mem', op });
    assert.equal(v('flashcsi_nbd_requests_total', 'write'), 3);
    assert.equal(v('flashcsi_nbd_bytes_total', 'write'), 3 * data.length);
    assert.equal(v('flashcsi_nbd_requests_total', 'read'), 3);
    assert.equal(v('flashcsi_nbd_request_errors_total', 'read'), 1);
    assert.equal(v('flashcsi_nbd_bytes_total', 'read'), 8192, 'bytes of successful reads only');
    assert.equal(v('flashcsi_nbd_bytes_total', 'trim'), 4096);
    assert.equal(v('flashcsi_nbd_bytes_total', 'write_zeroes'), 65536);
    assert.equal(v('flashcsi_nbd_requests_total', 'flush'), 1);
    assert.equal(v('flashcsi_nbd_requests_total', 'other'), 1);
    assert.equal(v('flashcsi_nbd_request_errors_total', 'other'), 1);
    assert.equal(sampleValue(fams, 'flashcsi_nbd_bytes_total', { op: 'flush' }), undefined, 'no bytes series for ops without a range');
    assert.equal(sampleValue(fams, 'flashcsi_nbd_requests_total', { op: 'disc' }), undefined);
    for (const op of NBD_OPS.filter((o) => o !== 'disc')) {
      assert.equal(v('flashcsi_nbd_request_duration_seconds_count', op), v('flashcsi_nbd_requests_total', op), `latency observations = requests (${op})`);
    }
    assert.ok((v('flashcsi_nbd_request_duration_seconds_sum', 'write') as number) > 0);
    assert.equal(sampleValue(fams, 'flashcsi_nbd_connections', { volume: 'mem' }), 1);
    assert.equal(sampleValue(fams, 'flashcsi_nbd_connections_accepted_total', { volume: 'mem' }), 1);
    assert.equal(sampleValue(fams, 'flashcsi_nbd_inflight_requests', { volume: 'mem' }), 0);
    await c.disconnect();
  });
});

/** A registry of one volume's families, as a serve process would answer `metrics`. */
async function volumeJson(volume: string, writes: number, copied: number): Promise<unknown> {
  const r = new Registry();
  const io = new NbdIoMetrics();
  for (let i = 0; i < writes; i++) io.observe(1, 4096, 0.0002, true);
  io.register(r, volume, { connections: () => 1, inflight: () => 0, accepted: () => 1 });
  // As serve reads its FUSE counters (src/fuse/stats.ts): `writes` 4 KiB writes, all forwarded.
  const buckets = new Float64Array(FUSE_LATENCY_BUCKETS.length + 1);
  buckets[4] = writes;
  registerFuseIo(r, volume, () =>
    ['read', 'write', 'flush', 'trim', 'write_zeroes'].map((op) =>
      op === 'write'
        ? { op, fast: 0, forwarded: writes, errors: 0, bytes: writes * 4096, seconds: writes * 0.0002, buckets }
        : { op, fast: 0, forwarded: 0, errors: 0, bytes: 0, seconds: 0, buckets: new Float64Array(FUSE_LATENCY_BUCKETS.length + 1) },
    ),
  );
  const engine = new EngineMetrics(r);
  engine.zero(volume);
  if (copied > 0) engine.copied(volume, copied, copied * 65536);
  return r.getMetricsAsJSON();
}

describe('scrape(): merging the plugin and its volumes', () => {
  it('merges volumes by label, sums shared series, skips and reports dead, slow and malformed sources', async () => {
    const plugin = new PluginMetrics({ processMetrics: false });
    plugin.calls.observeCall('/csi.v1.Node/NodeStageVolume', 'OK', 0.2);
    plugin.engine.copied('a', 2, 2 * 65536); // the plugin itself copied grains of volume a (a clone, say)
    const errors: string[] = [];
    const text = await scrape({
      local: plugin.local,
      shared: [plugin.shared],
      timeoutMs: 200,
      sources: [
        { name: 'a', fetch: () => volumeJson('a', 5, 3) },
        { name: 'b', fetch: () => volumeJson('b', 7, 0) },
        { name: 'dead', fetch: () => Promise.reject(new Error('ECONNREFUSED')) },
        { name: 'hung', fetch: () => new Promise(() => undefined) },
        { name: 'garbage', fetch: () => Promise.resolve([{ name: 'x', values: 'no' }]) },
        { name: 'clash', fetch: () => Promise.resolve([{ name: Metric.csiRequests.name, help: 'h', type: 'counter', aggregator: 'sum', values: [{ labels: {}, value: 99 }] }]) },
      ],
      onError: (name) => {
        errors.push(name);
        plugin.scrapeError(name);
      },
    });
    assert.deepEqual(errors.sort(), ['dead', 'garbage', 'hung']);
    const fams = parsePrometheusText(text);
    assert.equal(sampleValue(fams, 'flashcsi_nbd_requests_total', { volume: 'a', op: 'write' }), 5);
    assert.equal(sampleValue(fams, 'flashcsi_nbd_requests_total', { volume: 'b', op: 'write' }), 7);
    assert.equal(sampleValue(fams, 'flashcsi_cow_copied_grains_total', { volume: 'a' }), 5, "the volume's 3 and the plugin's 2");
    assert.equal(sampleValue(fams, 'flashcsi_cow_copied_grains_total', { volume: 'b' }), 0);
    assert.equal(sampleValue(fams, 'flashcsi_nbd_request_duration_seconds_count', { volume: 'b', op: 'write' }), 7);
    assert.equal(sampleValue(fams, 'flashcsi_fuse_requests_total', { volume: 'a', op: 'write', path: 'forwarded' }), 5);
    assert.equal(sampleValue(fams, 'flashcsi_fuse_bytes_total', { volume: 'b', op: 'write' }), 7 * 4096);
    assert.equal(sampleValue(fams, 'flashcsi_fuse_request_duration_seconds_bucket', { volume: 'b', op: 'write', le: String(FUSE_LATENCY_BUCKETS[4]) }), 7);
    assert.equal(sampleValue(fams, 'flashcsi_fuse_request_duration_seconds_count', { volume: 'a', op: 'write' }), 5);
    assert.equal(sampleValue(fams, 'flashcsi_scrape_errors_total', { volume: 'hung' }), 1);
    assert.equal(sampleValue(fams, 'flashcsi_csi_requests_total', { grpc_service: 'csi.v1.Node', grpc_method: 'NodeStageVolume', grpc_code: 'OK' }), 1, "a source's family of a local name is dropped");
    assert.equal(sampleValue(fams, 'flashcsi_csi_request_duration_seconds_count', { grpc_method: 'NodeStageVolume' }), 1);
  });
});

describe("asking a dead volume server for its metrics", () => {
  it('rejects with UNAVAILABLE, and the asking process lives on (readline used to re-throw the socket error)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fcsi-m-'));
    try {
      // A socket file nobody listens on, as a SIGKILLed server leaves it (ECONNREFUSED).
      const dead = join(dir, 'dead.ctl');
      const r = spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(dead)}, () => process.kill(process.pid, 'SIGKILL'))`]);
      assert.equal(r.signal, 'SIGKILL');
      assert.ok(lstatSync(dead).isSocket());
      for (const path of [join(dir, 'dead.ctl'), join(dir, 'missing.ctl')]) {
        await assert.rejects(controlCall(path, { op: 'metrics' }, 1000), (err: unknown) => err instanceof ControlError && err.code === 'UNAVAILABLE');
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('the metrics HTTP endpoint', () => {
  it('serves /metrics and /healthz read-only, 404 and 405 otherwise', async () => {
    let healthy = false;
    const server = await startMetricsServer({
      address: parseListenAddress('127.0.0.1:0'),
      render: () => Promise.resolve('# TYPE flashcsi_x gauge\nflashcsi_x 1\n'),
      health: () => (healthy ? { ok: true, message: 'ok' } : { ok: false, message: 'not ready: starting' }),
      log: quiet,
    });
    try {
      const base = `http://127.0.0.1:${server.address.port}`;
      const m = await httpGet(`${base}/metrics`);
      assert.equal(m.status, 200);
      assert.equal(m.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
      assert.equal(m.body, '# TYPE flashcsi_x gauge\nflashcsi_x 1\n');
      assert.equal((await httpGet(`${base}/metrics?x=1`)).status, 200);
      const h = await httpGet(`${base}/metrics`, 'HEAD');
      assert.equal(h.status, 200);
      assert.equal(h.body, '');
      assert.deepEqual(await httpGet(`${base}/healthz`).then((r) => [r.status, r.body]), [503, 'not ready: starting\n']);
      healthy = true;
      assert.deepEqual(await httpGet(`${base}/healthz`).then((r) => [r.status, r.body]), [200, 'ok\n']);
      assert.equal((await httpGet(`${base}/`)).status, 404);
      const post = await httpGet(`${base}/metrics`, 'POST');
      assert.equal(post.status, 405);
      assert.equal(post.headers['allow'], 'GET, HEAD');
    } finally {
      await server.close();
    }
  });

  it('answers 500 when rendering fails, and keeps serving', async () => {
    let fail = true;
    const server = await startMetricsServer({
      address: parseListenAddress('127.0.0.1:0'),
      render: () => (fail ? Promise.reject(new Error('boom')) : Promise.resolve('')),
      log: quiet,
    });
    try {
      const url = `http://127.0.0.1:${server.address.port}/metrics`;
      assert.equal((await httpGet(url)).status, 500);
      fail = false;
      assert.equal((await httpGet(url)).status, 200);
    } finally {
      await server.close();
    }
  });
});

describe('coordinator metrics', () => {
  it('report phases only while leading, every phase listed; decisions and errors counted', async () => {
    let counts: { transactions: Record<string, number>; rollbacks: Record<string, number> } | null = null;
    const m = new CoordinatorMetrics(() => counts, { processMetrics: false });
    let fams = parsePrometheusText(await m.registry.metrics());
    assert.deepEqual(samplesNamed(fams, 'flashcsi_volume_transactions'), []);
    assert.equal(sampleValue(fams, 'flashcsi_coordinator_leader'), 0);
    counts = { transactions: { Pending: 1, Failed: 2, Open: 0 }, rollbacks: { Completed: 3 } };
    m.setLeader(true);
    m.decision('Rollback', 'Timeout');
    m.decision('Rollback', 'Timeout');
    m.reconcileError('VolumeRollback');
    fams = parsePrometheusText(await m.registry.metrics());
    assert.equal(sampleValue(fams, 'flashcsi_volume_transactions', { phase: 'Failed' }), 2);
    assert.equal(sampleValue(fams, 'flashcsi_volume_transactions', { phase: 'Open' }), 0);
    assert.equal(sampleValue(fams, 'flashcsi_volume_rollbacks', { phase: 'Completed' }), 3);
    assert.equal(sampleValue(fams, 'flashcsi_coordinator_leader'), 1);
    assert.equal(sampleValue(fams, 'flashcsi_transaction_decisions_total', { decision: 'Rollback', reason: 'Timeout' }), 2);
    assert.equal(sampleValue(fams, 'flashcsi_reconcile_errors_total', { kind: 'VolumeRollback' }), 1);
  });

  it('the rollback progress gauges exist only while a rollback runs', async () => {
    const r = new Registry();
    const e = new EngineMetrics(r);
    e.rollbackProgress('v', 1, 3);
    let fams = parsePrometheusText(await r.metrics());
    assert.equal(sampleValue(fams, 'flashcsi_rollback_restored_grains', { volume: 'v' }), 1);
    assert.equal(sampleValue(fams, 'flashcsi_rollback_grains', { volume: 'v' }), 3);
    e.rollbackProgress('v', 2, 3);
    e.rollbackProgress('v', 3, 3);
    fams = parsePrometheusText(await r.metrics());
    assert.equal(sampleValue(fams, 'flashcsi_rollback_restored_grains', { volume: 'v' }), undefined);
    assert.equal(sampleValue(fams, 'flashcsi_rollback_grains', { volume: 'v' }), undefined);
    assert.equal(sampleValue(fams, 'flashcsi_rollback_restored_grains_total', { volume: 'v' }), 3);
  });
});
