/**
 * Power loss, simulated at the file-system boundary (sim-disk.ts): the engine runs a random
 * sequence of writes (some FUA), trims, flushes, cuts, deletions and rollbacks on a SimDisk; the
 * power fails at a random file operation, and the disk keeps only what was made durable (fdatasync,
 * O_DSYNC, synced directory entries) plus any subset of the dirty pages, some written back early.
 * The volume is then opened on what survived, and checked against docs/format.md's promises:
 * - every page of the live image is a version that page legitimately may have: the one it had at
 *   its last acknowledged sync (a flush, its own FUA write, a completed rollback) or one written
 *   since; a flushed write is never lost;
 * - every checkpoint that was acknowledged exists (unless its deletion was acknowledged), and a
 *   checkpoint followed by a sync of a page reads that page exactly as it was at the cut; before any
 *   sync, as one of the versions the page could have had at the cut;
 * - an interrupted rollback either completed or left the volume as it was.
 * So durability rests on the fdatasync order alone, not on the page cache surviving.
 * FLASHCSI_POWER_CUTS sets the number of power cuts (default 400).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Volume, isEngineError } from '../../src/engine/index.js';
import { SimDisk, type DiskImage } from './sim-disk.js';
import { seededRandom } from './helpers.js';
import { apply, checkAfterPowerLoss, Model, PAGE, randomOp, runOp, type Op } from './power-model.js';

const PAGES = 48;
const SIZE = PAGES * PAGE;
const DIR = '/data/vol';

class PowerCut extends Error {
  constructor(readonly image: DiskImage) {
    super('power cut');
  }
}

async function oneCut(seed: number): Promise<{ ops: number; inFlight: string; ioOps: number }> {
  const rnd = seededRandom(seed);
  const disk = new SimDisk(rnd);
  const io = disk.io();
  const model = new Model(PAGES);
  await io.mkdir('/data');
  await io.syncDir('/');
  const vol = await Volume.create(DIR, { size: SIZE, grainSize: PAGE, io });
  await vol.settled();
  const start = disk.ops;
  const cutAt = start + 1 + Math.floor(rnd() * 600);
  const keepDirty = rnd();
  let image: DiskImage | null = null;
  disk.onOp = (n) => {
    if (n !== cutAt) return;
    image = disk.powerCut(keepDirty);
    disk.dead = true;
    throw new PowerCut(image);
  };
  let names = 0;
  let t = 0;
  let inFlight: Op | null = null;
  const seen: Op[] = [];
  while (image === null) {
    const op = randomOp(rnd, PAGES, [...model.checkpoints.keys()], () => `c${++names}`);
    t++;
    try {
      await runOp(vol, op);
      apply(model, op, t, false);
      seen.push(op);
      await vol.settled(); // the background spare store counts as part of the operation
    } catch (err) {
      if (image === null) throw err;
      inFlight = op;
    }
  }
  if (inFlight) apply(model, inFlight, t, true);
  const crashed = inFlight ?? { kind: 'flush' as const };
  // The machine reboots: a new disk holding what survived.
  const after = new SimDisk(seededRandom(seed + 1), image);
  const reopened = await Volume.open(DIR, { io: after.io() }).catch((err: unknown) => {
    throw new Error(`power cut at I/O ${cutAt - start} during ${JSON.stringify(crashed)}: the volume does not open: ${String(err)}`);
  });
  const where = `seed ${seed}, power cut at I/O ${cutAt - start} during ${JSON.stringify(crashed)}`;
  try {
    await checkAfterPowerLoss(reopened, model, crashed, t, where);
  } finally {
    await reopened.close();
  }
  return { ops: seen.length, inFlight: crashed.kind, ioOps: cutAt - start };
}

test('power loss at any file operation: nothing flushed is lost, checkpoints stay within their promise', async () => {
  const cuts = Number(process.env.FLASHCSI_POWER_CUTS ?? 400);
  const base = Number(process.env.FLASHCSI_SEED ?? Date.now() % 2 ** 31);
  const during = new Map<string, number>();
  let ops = 0;
  for (let i = 0; i < cuts; i++) {
    const r = await oneCut(base + i * 7919);
    ops += r.ops;
    during.set(r.inFlight, (during.get(r.inFlight) ?? 0) + 1);
  }
  console.log(`power-loss simulation: ${cuts} power cuts after ${ops} acknowledged operations (seed ${base}), 0 violations; cut during: ${JSON.stringify(Object.fromEntries(during))}`);
  assert.ok((during.get('rollback') ?? 0) > 0 && (during.get('delete') ?? 0) > 0, JSON.stringify(Object.fromEntries(during)));
});

test('a volume created just before the power fails survives: its directory entry is synced', async () => {
  const disk = new SimDisk(seededRandom(5));
  const io = disk.io();
  await io.mkdir('/data');
  await io.syncDir('/');
  const vol = await Volume.create('/data/v', { size: SIZE, grainSize: PAGE, io });
  await vol.settled();
  const after = new SimDisk(seededRandom(6), disk.powerCut(0));
  const v = await Volume.open('/data/v', { io: after.io() });
  await v.close();
  await vol.close().catch((err: unknown) => assert.ok(isEngineError(err)));
});
