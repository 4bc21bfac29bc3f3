/**
 * GroupController against a real plugin process: while a writer stamps an increasing sequence
 * number into volume A and then volume B (two staged block volumes, written through the NBD sockets
 * of their `flashcsi serve` processes with FUA, each write awaited: fast, so a cut that is not
 * atomic across the volumes would be caught), group snapshots of [A, B] are cut repeatedly. Each
 * group's two checkpoints are read back through the volumes' own NBD servers (the checkpoint
 * exports) with qemu-io.
 *
 * Write-order consistency, exactly: the writer finishes A=n before it starts B=n, and B=n before
 * A=n+1. Every point in that write stream has B ≤ A ≤ B+1: (n, n) between rounds, (n, n-1) between
 * A=n and B=n. A group cut at one instant relative to both streams must show one of those; a torn
 * group (cut A, then let writes through, then cut B) shows B > A. So the test asserts B ≤ A ≤ B+1
 * for every group, and reports how often the cut fell between rounds (A = B).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { status } from '@grpc/grpc-js';
import { nbdUnixUri } from '../../src/host/nbdfuse.js';
import {
  assertNothingLeft,
  BLOCK_CAP,
  call,
  callError,
  MiB,
  nbdConnection,
  shortTempDir,
  stageAndPublish,
  startPlugin,
  sweep,
  unpublishAndUnstage,
  type PluginProcess,
} from './plugin-process.js';

const exec = promisify(execFile);
const BLOCK = 4096;

function stampBlock(n: number): Buffer {
  const b = Buffer.alloc(BLOCK);
  b.write(`stamp:${String(n).padStart(10, '0')}\n`);
  return b;
}

/** Writer lanes: each stamps its own block (lane × 4 KiB), so writes are in flight on both volumes at any instant. */
const LANES = 8;

/** Reads every lane's stamp in a checkpoint export, through the volume's NBD server. */
async function readStamps(socket: string, checkpoint: string): Promise<number[]> {
  const cmds = Array.from({ length: LANES }, (_, lane) => ['-c', `read -v ${lane * BLOCK} 16`]).flat();
  const { stdout } = await exec('qemu-io', ['-f', 'raw', '-r', nbdUnixUri(socket, checkpoint), ...cmds]);
  const stamps = new Array<number>(LANES).fill(0);
  for (const line of stdout.split('\n')) {
    const m = /^([0-9a-f]{8}):\s+((?:[0-9a-f]{2} ){16})/.exec(line);
    if (m === null) continue;
    const text = Buffer.from((m[2] ?? '').trim().split(' ').map((h) => parseInt(h, 16))).toString('latin1');
    const stamp = /^stamp:(\d{10})/.exec(text);
    stamps[parseInt(m[1] ?? '0', 16) / BLOCK] = stamp === null ? 0 : Number(stamp[1]);
  }
  return stamps;
}

interface Writer {
  /** Rounds every lane has completed. */
  readonly rounds: () => number;
  /** Resolves once every lane has completed `n` rounds. */
  reached(n: number): Promise<void>;
  stop(): Promise<void>;
}

/**
 * In every lane: stamp n into A, then n into B, each write awaited (acknowledged by the server),
 * n = 1, 2, 3, … Lanes run concurrently, each on its own NBD connections to the volumes' sockets.
 */
async function startWriter(socketA: string, socketB: string): Promise<Writer> {
  let running = true;
  const counts = new Array<number>(LANES).fill(0);
  const waiters: Array<{ n: number; resolve: () => void }> = [];
  const rounds = (): number => Math.min(...counts);
  const lanes = await Promise.all(
    counts.map(async (_, lane) => {
      const a = await nbdConnection(socketA);
      const b = await nbdConnection(socketB);
      // Wrapped: an async function returning a bare promise would wait for it (the loop) to end.
      return {
        done: (async () => {
        try {
          while (running) {
            const block = stampBlock((counts[lane] ?? 0) + 1);
            await a.write(lane * BLOCK, block);
            await b.write(lane * BLOCK, block);
            counts[lane] = (counts[lane] ?? 0) + 1;
            for (const w of waiters.filter((x) => x.n <= rounds())) {
              waiters.splice(waiters.indexOf(w), 1);
              w.resolve();
            }
          }
        } finally {
          await a.close();
          await b.close();
        }
        })(),
      };
    }),
  );
  return {
    rounds,
    reached: (target) => (target <= rounds() ? Promise.resolve() : new Promise<void>((resolve) => waiters.push({ n: target, resolve }))),
    async stop() {
      running = false;
      await Promise.all(lanes.map((l) => l.done));
    },
  };
}

describe('GroupController: write-order consistent group snapshots', () => {
  let dir: string;
  let p: PluginProcess;
  const paths = new Map<string, { staging: string; target: string }>();
  const groups: Array<{ id: string; a: number[]; b: number[] }> = [];

  before(async () => {
    dir = await shortTempDir();
    p = await startPlugin(dir);
    await p.waitReady();
    for (const name of ['ga', 'gb', 'gc']) {
      await call(p.c.controller, 'CreateVolume', { name, capacity_range: { required_bytes: String(16 * MiB) }, volume_capabilities: [BLOCK_CAP()] });
    }
  });
  after(async () => {
    await p.stop().catch(() => undefined);
    await sweep(dir);
  });

  it('under concurrent stamped writes to two staged volumes, every group shows B ≤ A ≤ B+1 in every lane', { timeout: 120_000 }, async (t) => {
    for (const id of ['ga', 'gb']) paths.set(id, await stageAndPublish(p, id, BLOCK_CAP(), { block: true }));
    const writer = await startWriter(join(p.stateDir, 'run', 'ga.sock'), join(p.stateDir, 'run', 'gb.sock'));
    try {
      for (let i = 0; i < 12; i++) {
        await writer.reached(writer.rounds() + 10); // let the writer run between cuts
        const res = await call<{ group_snapshot: { group_snapshot_id: string; snapshots: Array<{ snapshot_id: string; source_volume_id: string; group_snapshot_id: string; ready_to_use: boolean }>; ready_to_use: boolean } }>(
          p.c.groupController,
          'CreateVolumeGroupSnapshot',
          // Listed opposite to the writer's order: a plugin that cut B, let writes through, then cut A
          // would catch A=n+1 (and more) after B=n, which B ≤ A ≤ B+1 rejects.
          { name: `group-${i}`, source_volume_ids: ['gb', 'ga'] },
        );
        const g = res.group_snapshot;
        assert.match(g.group_snapshot_id, /^g-[0-9a-f]{40}$/);
        assert.equal(g.ready_to_use, true);
        assert.deepEqual(g.snapshots.map((s) => s.source_volume_id), ['gb', 'ga']);
        for (const s of g.snapshots) assert.equal(s.group_snapshot_id, g.group_snapshot_id);
        const a = await readStamps(join(p.stateDir, 'run', 'ga.sock'), g.group_snapshot_id);
        const b = await readStamps(join(p.stateDir, 'run', 'gb.sock'), g.group_snapshot_id);
        groups.push({ id: g.group_snapshot_id, a, b });
        for (let lane = 0; lane < LANES; lane++) {
          const [sa, sb] = [a[lane] ?? 0, b[lane] ?? 0];
          assert.ok(sa >= 1, `lane ${lane} had stamped A before the cut`);
          assert.ok(sb <= sa && sa <= sb + 1, `group ${i}, lane ${lane}: A=${sa}, B=${sb} is not a point of the write stream (torn group)`);
        }
      }
    } finally {
      await writer.stop();
    }
    const pairs = groups.flatMap((g) => g.a.map((a, lane) => [a, g.b[lane] ?? 0] as const));
    const between = pairs.filter(([a, b]) => a === b).length;
    t.diagnostic(`lane 0 stamps (A, B) per group: ${groups.map((g) => `(${g.a[0]}, ${g.b[0]})`).join(' ')}`);
    t.diagnostic(`${pairs.length} (group, lane) pairs: ${between} cut between rounds (A = B), ${pairs.length - between} between A=n and B=n (A = B + 1), 0 torn`);
    for (let i = 1; i < groups.length; i++) assert.ok((groups[i]?.a[0] ?? 0) > (groups[i - 1]?.a[0] ?? 0), 'later groups see later stamps');
  });

  it('a group mixing a served and an unstaged volume; Get, idempotency, conflicts, member deletion refused', async () => {
    const created = await call<{ group_snapshot: { group_snapshot_id: string; snapshots: Array<{ snapshot_id: string }> } }>(p.c.groupController, 'CreateVolumeGroupSnapshot', {
      name: 'mixed',
      source_volume_ids: ['ga', 'gc'],
    });
    const id = created.group_snapshot.group_snapshot_id;
    const snapshotIds = created.group_snapshot.snapshots.map((s) => s.snapshot_id);
    assert.deepEqual(snapshotIds, [`ga@${id}`, `gc@${id}`]);
    const again = await call<{ group_snapshot: { group_snapshot_id: string } }>(p.c.groupController, 'CreateVolumeGroupSnapshot', { name: 'mixed', source_volume_ids: ['gc', 'ga'] });
    assert.equal(again.group_snapshot.group_snapshot_id, id, 'idempotent by name');
    const conflict = await callError(p.c.groupController, 'CreateVolumeGroupSnapshot', { name: 'mixed', source_volume_ids: ['ga', 'gb'] });
    assert.equal(conflict.code, status.ALREADY_EXISTS);
    const got = await call<{ group_snapshot: { snapshots: Array<{ snapshot_id: string }> } }>(p.c.groupController, 'GetVolumeGroupSnapshot', { group_snapshot_id: id, snapshot_ids: snapshotIds });
    assert.deepEqual(got.group_snapshot.snapshots.map((s) => s.snapshot_id), snapshotIds);
    const listed = await call<{ entries: Array<{ snapshot: { snapshot_id: string; group_snapshot_id: string } }> }>(p.c.controller, 'ListSnapshots', { source_volume_id: 'gc' });
    assert.deepEqual(listed.entries.map((e) => [e.snapshot.snapshot_id, e.snapshot.group_snapshot_id]), [[`gc@${id}`, id]]);
    const memberDelete = await callError(p.c.controller, 'DeleteSnapshot', { snapshot_id: `gc@${id}` });
    assert.equal(memberDelete.code, status.INVALID_ARGUMENT, 'a member cannot be deleted alone (spec)');
    const mismatch = await callError(p.c.groupController, 'DeleteVolumeGroupSnapshot', { group_snapshot_id: id, snapshot_ids: [`ga@${id}`] });
    assert.equal(mismatch.code, status.INVALID_ARGUMENT);
    const missing = await callError(p.c.groupController, 'CreateVolumeGroupSnapshot', { name: 'missing', source_volume_ids: ['ga', 'nope'] });
    assert.equal(missing.code, status.NOT_FOUND);
    await call(p.c.groupController, 'DeleteVolumeGroupSnapshot', { group_snapshot_id: id, snapshot_ids: snapshotIds });
    await call(p.c.groupController, 'DeleteVolumeGroupSnapshot', { group_snapshot_id: id, snapshot_ids: snapshotIds }); // idempotent
    assert.equal((await callError(p.c.groupController, 'GetVolumeGroupSnapshot', { group_snapshot_id: id })).code, status.NOT_FOUND);
    const left = await call<{ entries: unknown[] }>(p.c.controller, 'ListSnapshots', { source_volume_id: 'gc' });
    assert.deepEqual(left.entries, []);
  });

  it('a restored member shows its group stamp; teardown leaves nothing', async () => {
    const last = groups.at(-1);
    assert.ok(last !== undefined);
    await call(p.c.controller, 'CreateVolume', {
      name: 'restored-a',
      volume_capabilities: [BLOCK_CAP()],
      volume_content_source: { snapshot: { snapshot_id: `ga@${last.id}` } },
    });
    const restored = await stageAndPublish(p, 'restored-a', BLOCK_CAP(), { block: true });
    const fh = await fsp.open(restored.target, 'r');
    const buf = Buffer.alloc(32);
    await fh.read(buf, 0, 32, 0);
    await fh.close();
    assert.equal(buf.toString('latin1', 0, 16), `stamp:${String(last.a[0]).padStart(10, '0')}`);
    await unpublishAndUnstage(p, 'restored-a', restored);
    for (const [id, pp] of paths) await unpublishAndUnstage(p, id, pp);
    for (const g of groups) await call(p.c.groupController, 'DeleteVolumeGroupSnapshot', { group_snapshot_id: g.id, snapshot_ids: [`ga@${g.id}`, `gb@${g.id}`] });
    for (const id of ['ga', 'gb', 'gc', 'restored-a']) await call(p.c.controller, 'DeleteVolume', { volume_id: id });
    assert.deepEqual(await fsp.readdir(join(p.stateDir, 'volumes')), []);
    assert.deepEqual(await fsp.readdir(join(p.stateDir, 'groups')), []);
    assert.equal(await p.stop(), 0);
    await assertNothingLeft(dir);
  });
});
