/**
 * Load soak: many volumes served at once on one node, concurrent CSI calls from several clients,
 * I/O on the volumes, and the plugin's and servers' memory and descriptors sampled throughout.
 *
 * FLASHCSI_SOAK_VOLUMES volumes (default 50) are created and staged + published (ext4 over the
 * default attach here, serve-fuse + loop: one `flashcsi serve` with its FUSE workers and one loop
 * device each), staged by four
 * clients at once. Then, for FLASHCSI_SOAK_SECONDS (default 60):
 * - four CSI clients (separate gRPC channels) loop over CreateSnapshot and DeleteSnapshot on the
 *   staged volumes (through each volume's server), ListSnapshots, ListVolumes, ControllerGetVolume,
 *   NodeGetVolumeStats, and CreateVolume + DeleteVolume of scratch volumes; ABORTED (another call
 *   on the same volume in flight) is counted, any other error fails;
 * - a writer writes, fsyncs and reads back files on randomly chosen volumes;
 * - every 2 s, the RSS and open descriptors of the plugin and of every serve process are sampled.
 * Flat means: the maximum over the last third of the samples is at most the first third's maximum
 * × 1.2 plus a small slack (8 MiB of RSS, 4 descriptors) — for the plugin, and for the largest serve
 * process. Then everything is unstaged and deleted, and nothing is left on the machine.
 *
 * A "12-hour equivalent": a node whose 50 volumes are each snapshotted hourly (and the snapshot
 * later deleted) sees 50 × 12 = 600 CreateSnapshot + 600 DeleteSnapshot in 12 hours; the torture
 * run (`npm run torture`, 600 s) makes far more than that, and the CI run a tenth of it.
 */
import assert from 'node:assert/strict';
import { promises as fsp, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ServiceError } from '@grpc/grpc-js';
import type { StageRecord } from '../../src/volumes/state.js';
import { clients } from '../csi/helpers.js';
import {
  assertNothingLeft,
  call,
  MiB,
  MOUNT_CAP,
  shortTempDir,
  stageAndPublish,
  startPlugin,
  sweep,
  unpublishAndUnstage,
  type PluginProcess,
} from '../csi/plugin-process.js';
import { fdCount, rssKiB, thirds } from './helpers.js';

const VOLUMES = Number(process.env.FLASHCSI_SOAK_VOLUMES ?? 50);
const SECONDS = Number(process.env.FLASHCSI_SOAK_SECONDS ?? 60);
const MAX_HELD = 8;
const CLIENTS = 4;
const SAMPLE_MS = 2000;

type Clients = ReturnType<typeof clients>;

describe(`soak: ${VOLUMES} volumes served at once, ${CLIENTS} CSI clients, I/O, flat memory and descriptors`, () => {
  let dir: string;
  let p: PluginProcess;
  const ids = Array.from({ length: VOLUMES }, (_, i) => `soak-${String(i).padStart(2, '0')}`);
  const paths = new Map<string, { staging: string; target: string }>();
  const cs: Clients[] = [];
  const counts = new Map<string, number>();
  const count = (what: string): void => void counts.set(what, (counts.get(what) ?? 0) + 1);
  const samples = { pluginRss: [] as number[], pluginFds: [] as number[], serveRss: [] as number[], serveFds: [] as number[], serveRssTotal: [] as number[] };
  let stageSeconds = 0;

  before(async () => {
    dir = await shortTempDir();
    p = await startPlugin(dir, { extraArgs: ['--log-level', 'warn'] });
    await p.waitReady();
    for (let i = 0; i < CLIENTS; i++) cs.push(clients(p.socket));
  });

  after(async () => {
    for (const c of cs) c.close();
    await p.stop().catch(() => undefined);
    await sweep(dir);
  });

  it(`creates, stages and publishes ${VOLUMES} volumes from ${CLIENTS} clients at once`, async () => {
    const t0 = Date.now();
    const queue = [...ids];
    await Promise.all(
      cs.map(async (c) => {
        for (let id = queue.shift(); id !== undefined; id = queue.shift()) {
          await call(c.controller, 'CreateVolume', { name: id, capacity_range: { required_bytes: String(32 * MiB) }, volume_capabilities: [MOUNT_CAP()] });
          paths.set(id, await stageAndPublish({ ...p, c } as PluginProcess, id, MOUNT_CAP()));
        }
      }),
    );
    stageSeconds = (Date.now() - t0) / 1000;
    assert.equal(paths.size, VOLUMES);
  });

  it(`runs the mixed load for ${SECONDS} s; RSS and descriptors stay flat`, async () => {
    const serves = ids.map((id) => (JSON.parse(readFileSync(join(p.stateDir, 'node', id, 'stage.json'), 'utf8')) as StageRecord).serve?.process.pid as number);
    const plugin = p.child.pid as number;
    const deadline = Date.now() + SECONDS * 1000;
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)] as T;
    /** Runs a call; true if it succeeded, false if ABORTED (the CO would retry), throws otherwise. */
    const tolerate = async (what: string, fn: () => Promise<unknown>): Promise<boolean> => {
      try {
        await fn();
        count(what);
        return true;
      } catch (err) {
        if ((err as ServiceError).code !== 10) throw new Error(`${what}: ${(err as Error).message}`, { cause: err });
        count('ABORTED (a call on the same object in flight)');
        return false;
      }
    };
    const client = async (c: Clients, k: number): Promise<void> => {
      let n = 0;
      const mine: string[] = [];
      while (Date.now() < deadline) {
        n++;
        const r = Math.random();
        // Each client keeps at most MAX_HELD snapshots: every live checkpoint holds its store open in
        // its volume's server, so an unbounded pile-up would read as a descriptor leak.
        if (mine.length === 0 || (r < 0.3 && mine.length < MAX_HELD)) {
          const name = `s${k}-${n}`;
          const vol = pick(ids);
          await tolerate('CreateSnapshot', async () => {
            const res = await call<{ snapshot: { snapshot_id: string } }>(c.controller, 'CreateSnapshot', { name, source_volume_id: vol });
            mine.push(res.snapshot.snapshot_id);
          });
        } else if (r < 0.55 || mine.length >= MAX_HELD) {
          const snap = mine.shift() as string;
          if (!(await tolerate('DeleteSnapshot', () => call(c.controller, 'DeleteSnapshot', { snapshot_id: snap })))) mine.push(snap);
        } else if (r < 0.65) {
          await tolerate('ListSnapshots', () => call(c.controller, 'ListSnapshots', { max_entries: 100 }));
        } else if (r < 0.72) {
          await tolerate('ListVolumes', () => call(c.controller, 'ListVolumes', {}));
        } else if (r < 0.8) {
          await tolerate('ControllerGetVolume', () => call(c.controller, 'ControllerGetVolume', { volume_id: pick(ids) }));
        } else if (r < 0.92) {
          const id = pick(ids);
          await tolerate('NodeGetVolumeStats', async () => {
            const s = await call<{ volume_condition: { abnormal: boolean; message: string } }>(c.node, 'NodeGetVolumeStats', { volume_id: id, volume_path: paths.get(id)?.target });
            assert.equal(s.volume_condition.abnormal, false, s.volume_condition.message);
          });
        } else {
          const name = `scratch-${k}-${n}`;
          await tolerate('CreateVolume + DeleteVolume (scratch)', async () => {
            await call(c.controller, 'CreateVolume', { name, capacity_range: { required_bytes: String(16 * MiB) }, volume_capabilities: [MOUNT_CAP()] });
            await call(c.controller, 'DeleteVolume', { volume_id: name });
          });
        }
      }
      // Left over at the end: deleted now, retrying while another call holds the volume.
      for (const snap of mine) while (!(await tolerate('DeleteSnapshot', () => call(c.controller, 'DeleteSnapshot', { snapshot_id: snap }))));
    };
    // Each writer has its own file names: two writers never race on one file.
    const writer = async (k: number): Promise<void> => {
      let n = 0;
      while (Date.now() < deadline) {
        const target = paths.get(pick(ids))?.target as string;
        const file = join(target, `w${k}-${n++ % 20}`);
        const data = Buffer.alloc(64 * 1024, n & 0xff);
        const fh = await fsp.open(file, 'w');
        try {
          await fh.write(data);
          await fh.sync();
        } finally {
          await fh.close();
        }
        assert.ok((await fsp.readFile(file)).equals(data), `${file} read back different bytes than were written and fsynced`);
        count('file written + fsynced + read back');
      }
    };
    const sampler = async (): Promise<void> => {
      while (Date.now() < deadline) {
        const rss = serves.map(rssKiB);
        samples.pluginRss.push(rssKiB(plugin));
        samples.pluginFds.push(fdCount(plugin));
        samples.serveRss.push(Math.max(...rss));
        samples.serveRssTotal.push(rss.reduce((a, b) => a + b, 0));
        samples.serveFds.push(Math.max(...serves.map(fdCount)));
        await new Promise((r) => setTimeout(r, SAMPLE_MS)); // the sampling period, not a synchronisation
      }
    };
    await Promise.all([...cs.map((c, k) => client(c, k)), writer(0), writer(1), sampler()]);
    const flat = (name: string, series: number[], slack: number): string => {
      const { first, last } = thirds(series);
      assert.ok(last <= first * 1.2 + slack, `${name} grew: first third max ${first}, last third max ${last} (${series.join(' ')})`);
      return `${name} ${first}→${last}`;
    };
    const report = [
      flat('plugin RSS KiB', samples.pluginRss, 8 * 1024),
      flat('plugin fds', samples.pluginFds, 4),
      flat('largest serve RSS KiB', samples.serveRss, 8 * 1024),
      flat('serve fds (max)', samples.serveFds, 4),
      flat(`all ${VOLUMES} serves RSS KiB`, samples.serveRssTotal, 8 * 1024 * VOLUMES),
    ];
    console.log(
      `soak: ${VOLUMES} volumes staged+published in ${stageSeconds.toFixed(1)} s; ${SECONDS} s of load, ${samples.pluginRss.length} samples; ` +
        `calls: ${JSON.stringify(Object.fromEntries(counts))}; first-third max → last-third max: ${report.join('; ')}`,
    );
  });

  it('unstages and deletes everything; nothing is left', async () => {
    const queue = [...ids];
    await Promise.all(
      cs.map(async (c) => {
        for (let id = queue.shift(); id !== undefined; id = queue.shift()) {
          await unpublishAndUnstage({ ...p, c } as PluginProcess, id, paths.get(id) as { staging: string; target: string });
          await call(c.controller, 'DeleteVolume', { volume_id: id });
        }
      }),
    );
    const left = await call<{ entries: unknown[] }>(p.c.controller, 'ListVolumes', {});
    assert.deepEqual(left.entries, []);
    for (const c of cs) c.close();
    cs.length = 0;
    assert.equal(await p.stop(), 0);
    await assertNothingLeft(dir);
  });
});
