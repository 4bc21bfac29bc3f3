/**
 * Restart without I/O errors (the ceph-csi rbd-nbd failure, ceph-csi #2108/#2204, must not exist
 * here). Two volumes are staged and published through a real `flashcsi plugin` — ext4 and xfs, on
 * nbdfuse + loop — and a writer/verifier (workload.ts: files written, fsynced, re-read from the
 * device and checksummed) runs on each. Then the plugin is:
 * - stopped gracefully (SIGTERM) and started again, FLASHCSI_RESTARTS times (default 20);
 * - SIGKILLed and started again, FLASHCSI_RESTARTS times;
 * - run under `flashcsi supervise` (the container's entry point) and its plugin child SIGKILLed
 *   FLASHCSI_SUPERVISED_KILLS times (default 5): the supervisor starts a new one each time.
 * While the plugin is down the workloads must keep going (each must write and verify again before
 * the plugin comes back), and at every restart the new plugin must adopt both volumes as healthy.
 * Required, and checked after every cycle: zero I/O errors and zero checksum mismatches in the
 * workloads, both file systems mounted read-write (/proc/mounts), ext4's error counter at 0; at
 * the end, after unstaging, `e2fsck -f -n` and `xfs_repair -n` of the volumes' images are clean.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pollUntil } from '../../src/host/poll.js';
import type { StageRecord } from '../../src/volumes/state.js';
import {
  assertNothingLeft,
  call,
  MiB,
  MOUNT_CAP,
  probeReady,
  shortTempDir,
  stageAndPublish,
  startPlugin,
  sweep,
  unpublishAndUnstage,
  type PluginProcess,
} from '../csi/plugin-process.js';
import { assertReadWrite, childrenOf, ext4Errors, fsckVolume, startWorkload, type Workload } from './helpers.js';

const RESTARTS = Number(process.env.FLASHCSI_RESTARTS ?? 20);
const SUPERVISED_KILLS = Number(process.env.FLASHCSI_SUPERVISED_KILLS ?? 5);
const VOLUMES = [
  { id: 'rel-ext4', fsType: 'ext4' as const, size: 256 * MiB },
  { id: 'rel-xfs', fsType: 'xfs' as const, size: 320 * MiB }, // mkfs.xfs refuses less than 300 MB
];

/** The adoption report of the plugin's start-up, from its log. */
function adoption(logFile: string): { adopted: string[]; restarted: string[]; abnormal: string[]; cleaned: string[] } {
  const lines = readFileSync(logFile, 'utf8').split('\n').filter((l) => l.includes('start-up recovery done'));
  const last = lines.at(-1);
  assert.ok(last, `no start-up line in ${logFile}`);
  return (JSON.parse(last) as { adoption: { adopted: string[]; restarted: string[]; abnormal: string[]; cleaned: string[] } }).adoption;
}

describe('plugin restarts under I/O: no errors, no read-only remount, clean fsck', () => {
  let dir: string;
  let p: PluginProcess;
  const paths = new Map<string, { staging: string; target: string }>();
  const workloads = new Map<string, Workload>();
  const devices = new Map<string, string>();
  let supervisor: PluginProcess | undefined;
  const figures = { graceful: 0, killed: 0, supervisedKills: 0, supervisorRestarts: 0, cycleMs: [] as number[] };

  const stageRecord = (id: string): StageRecord => JSON.parse(readFileSync(join(p.stateDir, 'node', id, 'stage.json'), 'utf8')) as StageRecord;

  /** Everything that must hold at every moment: no error, rw mounts, ext4 clean. */
  async function checkHealthy(where: string): Promise<void> {
    for (const v of VOLUMES) {
      const w = workloads.get(v.id) as Workload;
      assert.equal(w.progress.errors, 0, `${where}: the workload on ${v.fsType} saw I/O errors`);
      const pp = paths.get(v.id) as { staging: string; target: string };
      await assertReadWrite(pp.staging, where);
      await assertReadWrite(pp.target, where);
      if (v.fsType === 'ext4') assert.equal(ext4Errors(devices.get(v.id) as string), 0, `${where}: ext4 recorded errors`);
    }
  }

  /** The plugin is down: the data path must carry on without it. */
  async function whileDown(where: string): Promise<void> {
    await Promise.all([...workloads.values()].map((w) => w.advance(1)));
    await checkHealthy(`${where} (plugin down)`);
  }

  async function restartedAndAdopted(where: string): Promise<void> {
    p = await startPlugin(dir);
    await p.waitReady();
    const a = adoption(p.logFile);
    assert.deepEqual([...a.adopted].sort(), VOLUMES.map((v) => v.id).sort(), `${where}: ${JSON.stringify(a)}`);
    assert.deepEqual(a.abnormal, [], `${where}: ${JSON.stringify(a)}`);
    await checkHealthy(where);
  }

  before(async () => {
    dir = await shortTempDir();
    p = await startPlugin(dir);
    await p.waitReady();
    for (const v of VOLUMES) {
      const cap = MOUNT_CAP(v.fsType);
      await call(p.c.controller, 'CreateVolume', { name: v.id, capacity_range: { required_bytes: String(v.size) }, volume_capabilities: [cap] });
      const pp = await stageAndPublish(p, v.id, cap);
      paths.set(v.id, pp);
      devices.set(v.id, stageRecord(v.id).attachment?.device ?? '');
      workloads.set(v.id, startWorkload(pp.target));
    }
    await Promise.all([...workloads.values()].map((w) => w.advance(5)));
  });

  after(async () => {
    await supervisor?.kill();
    for (const w of workloads.values()) w.child.kill('SIGKILL');
    await p.stop().catch(() => undefined);
    await sweep(dir);
  });

  it(`graceful stop and start, ${RESTARTS} times`, async () => {
    for (let i = 1; i <= RESTARTS; i++) {
      const t0 = Date.now();
      assert.equal(await p.stop(), 0, `graceful stop ${i} exits 0`);
      await whileDown(`graceful ${i}`);
      await restartedAndAdopted(`graceful ${i}`);
      figures.graceful++;
      figures.cycleMs.push(Date.now() - t0);
    }
  });

  it(`SIGKILL and start, ${RESTARTS} times`, async () => {
    for (let i = 1; i <= RESTARTS; i++) {
      const t0 = Date.now();
      await p.kill();
      await whileDown(`SIGKILL ${i}`);
      await restartedAndAdopted(`SIGKILL ${i}`);
      figures.killed++;
      figures.cycleMs.push(Date.now() - t0);
    }
  });

  it(`under flashcsi supervise: the plugin SIGKILLed ${SUPERVISED_KILLS} times, restarted by the supervisor each time`, async () => {
    assert.equal(await p.stop(), 0);
    const logFile = join(dir, 'supervise.log');
    const sup = await startPlugin(dir, { supervise: { maxBackoffSeconds: 0.2 }, metadataSocket: null, logFile });
    supervisor = sup;
    /** Polls (the readiness condition itself) until a plugin other than `old` runs and answers ready. */
    const newPluginReady = (old: number | undefined): Promise<number> =>
      pollUntil(
        async () => {
          const kids = childrenOf(sup.child.pid as number);
          return kids.length === 1 && kids[0] !== old && (await probeReady(sup.c, 1000)) ? kids[0] : undefined;
        },
        30_000,
        'a new plugin to become ready under the supervisor',
        { intervalMs: 50, detail: () => `children ${childrenOf(sup.child.pid as number).join()}:\n${readFileSync(logFile, 'utf8').slice(-3000)}` },
      );
    let pid = await newPluginReady(undefined);
    try {
      for (let i = 1; i <= SUPERVISED_KILLS; i++) {
        const t0 = Date.now();
        process.kill(pid, 'SIGKILL');
        await whileDown(`supervised SIGKILL ${i}`);
        const next = await newPluginReady(pid);
        assert.notEqual(next, pid);
        pid = next;
        await checkHealthy(`supervised SIGKILL ${i}`);
        figures.supervisedKills++;
        figures.cycleMs.push(Date.now() - t0);
      }
      const log = readFileSync(logFile, 'utf8');
      figures.supervisorRestarts = log.split('\n').filter((l) => l.includes('supervise: child exited; restarting') && l.includes('SIGKILL')).length;
      assert.equal(figures.supervisorRestarts, SUPERVISED_KILLS, 'the supervisor logged one restart per SIGKILL');
      const starts = log.split('\n').filter((l) => l.includes('start-up recovery done'));
      for (const line of starts.slice(1)) {
        const a = (JSON.parse(line) as { adoption: { adopted: string[]; abnormal: string[] } }).adoption;
        assert.deepEqual([...a.adopted].sort(), VOLUMES.map((v) => v.id).sort());
        assert.deepEqual(a.abnormal, []);
      }
    } finally {
      assert.equal(await sup.stop(), 0, 'the supervisor passes SIGTERM on and exits with the plugin');
      supervisor = undefined;
    }
    p = await startPlugin(dir);
    await p.waitReady();
  });

  it('the workloads saw no error and no mismatch; unstaged, both file systems check clean', async () => {
    const reports = new Map<string, Awaited<ReturnType<Workload['stop']>>>();
    for (const v of VOLUMES) reports.set(v.id, await (workloads.get(v.id) as Workload).stop());
    for (const v of VOLUMES) {
      const r = reports.get(v.id) as Awaited<ReturnType<Workload['stop']>>;
      assert.deepEqual(r.errors, [], `${v.fsType}: I/O errors`);
      assert.deepEqual(r.corrupt, [], `${v.fsType}: checksum mismatches`);
      assert.ok(r.written > 0 && r.verified > r.written / 2);
    }
    await checkHealthy('end');
    for (const v of VOLUMES) await unpublishAndUnstage(p, v.id, paths.get(v.id) as { staging: string; target: string });
    const fsck: string[] = [];
    for (const v of VOLUMES) {
      const out = await fsckVolume(join(p.stateDir, 'volumes', v.id), v.fsType, dir);
      fsck.push(`${v.fsType}: ${out}`);
    }
    for (const v of VOLUMES) await call(p.c.controller, 'DeleteVolume', { volume_id: v.id });
    assert.equal(await p.stop(), 0);
    await assertNothingLeft(dir);
    const total = (k: 'written' | 'verified' | 'rewritten'): number => [...reports.values()].reduce((n, r) => n + r[k], 0);
    const ms = [...figures.cycleMs].sort((a, b) => a - b);
    console.log(
      `restart test: ${figures.graceful} graceful restarts, ${figures.killed} SIGKILLs, ${figures.supervisedKills} SIGKILLs under supervise (${figures.supervisorRestarts} supervisor restarts); ` +
        `workloads (ext4 + xfs): ${total('written')} files written+fsynced, ${total('rewritten')} rewritten, ${total('verified')} device reads verified, 0 I/O errors, 0 mismatches, never read-only; ` +
        `cycle median ${ms[Math.floor(ms.length / 2)]} ms, max ${ms.at(-1)} ms; fsck: ${fsck.join(' | ')}`,
    );
  });
});
