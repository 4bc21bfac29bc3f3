/**
 * The power-loss contract of docs/format.md §5, as a checkable model (shared by the simulated-disk
 * test, test/engine/power-loss.test.ts, and the device-level one, test/reliability/power-loss.test.ts).
 *
 * Operations are page-aligned (4 KiB) and sequential; operation i completes at time i. The model
 * keeps, per page, every content it was given and every moment it was synced (a flush, its own FUA
 * write, a trim with FUA, a completed rollback — the operations that fdatasync the base). After a
 * power loss at time `now` (the operation then in flight has time `now`):
 * - the live page may be the version it had at its last sync, or any version written since;
 * - a checkpoint cut at time t reads, for a page synced after t, exactly the version at t; for a
 *   page not synced since, the version at its last sync before t or any written between that and t;
 * - acknowledged checkpoints exist unless their deletion was acknowledged; an in-flight cut or
 *   deletion may have happened or not; an in-flight rollback may have completed (recovery finishes
 *   a recorded one) or not.
 */
import assert from 'node:assert/strict';
import type { Volume } from '../../src/engine/index.js';
import { pattern } from './helpers.js';

export const PAGE = 4096;
const ZERO: Buffer = Buffer.alloc(PAGE);

export type Op =
  | { kind: 'write'; page: number; n: number; seed: number; fua: boolean }
  | { kind: 'trim'; page: number; n: number; fua: boolean }
  | { kind: 'flush' }
  | { kind: 'cut'; name: string }
  | { kind: 'delete'; name: string }
  | { kind: 'rollback'; name: string };

/** Per-page history of contents and syncs, in operation time (op i completes at time i). */
export class Model {
  readonly versions: Array<Array<{ t: number; data: Buffer }>>;
  readonly syncs: number[][];
  readonly checkpoints = new Map<string, number>();

  constructor(readonly pages: number) {
    this.versions = Array.from({ length: pages }, () => [{ t: 0, data: ZERO }]);
    this.syncs = Array.from({ length: pages }, () => [0]);
  }

  versionAt(p: number, t: number): Buffer {
    const vs = this.versions[p] as Array<{ t: number; data: Buffer }>;
    let out = ZERO;
    for (const v of vs) if (v.t <= t) out = v.data;
    return out;
  }

  /** Contents page p may show for the image as of time t, after a power loss at time `now`. */
  allowed(p: number, t: number, now: number): Buffer[] {
    const syncs = this.syncs[p] as number[];
    if (syncs.some((s) => s > t && s < now)) return [this.versionAt(p, t)]; // synced after t: exact
    const last = Math.max(...syncs.filter((s) => s <= t));
    return [this.versionAt(p, last), ...(this.versions[p] as Array<{ t: number; data: Buffer }>).filter((v) => v.t > last && v.t <= t).map((v) => v.data)];
  }

  write(p: number, data: Buffer, t: number): void {
    (this.versions[p] as Array<{ t: number; data: Buffer }>).push({ t, data });
  }

  sync(p: number, t: number): void {
    (this.syncs[p] as number[]).push(t);
  }
}

export function randomOp(rnd: () => number, pages: number, names: string[], next: () => string): Op {
  const r = rnd();
  const page = Math.floor(rnd() * pages);
  const n = 1 + Math.floor(rnd() * Math.min(6, pages - page));
  if (r < 0.45) return { kind: 'write', page, n, seed: 1 + Math.floor(rnd() * 2 ** 30), fua: rnd() < 0.2 };
  if (r < 0.55) return { kind: 'trim', page, n, fua: rnd() < 0.2 };
  if (r < 0.68) return { kind: 'flush' };
  if (r < 0.8 || names.length === 0) return names.length >= 5 ? { kind: 'flush' } : { kind: 'cut', name: next() };
  const name = names[Math.floor(rnd() * names.length)] as string;
  return r < 0.9 ? { kind: 'delete', name } : { kind: 'rollback', name };
}

export async function runOp(vol: Volume, op: Op): Promise<void> {
  switch (op.kind) {
    case 'write':
      return vol.write(op.page * PAGE, pattern(op.seed, op.n * PAGE), { fua: op.fua });
    case 'trim':
      return vol.trim(op.page * PAGE, op.n * PAGE, { fua: op.fua });
    case 'flush':
      return vol.flush();
    case 'cut':
      await vol.createCheckpoint(op.name);
      return;
    case 'delete':
      return vol.deleteCheckpoint(op.name);
    case 'rollback':
      await vol.rollback(op.name);
      return;
  }
}

/** Applies an acknowledged operation (or, with `inFlight`, the versions it may have written). */
export function apply(model: Model, op: Op, t: number, inFlight: boolean): void {
  switch (op.kind) {
    case 'write':
    case 'trim': {
      const data = op.kind === 'write' ? pattern(op.seed, op.n * PAGE) : Buffer.alloc(op.n * PAGE);
      for (let k = 0; k < op.n; k++) {
        model.write(op.page + k, data.subarray(k * PAGE, (k + 1) * PAGE), t);
        if (op.fua && !inFlight && op.kind === 'write') model.sync(op.page + k, t);
      }
      if (op.fua && !inFlight && op.kind === 'trim') for (let p = 0; p < model.pages; p++) model.sync(p, t); // trim FUA syncs the base
      return;
    }
    case 'flush':
      if (!inFlight) for (let p = 0; p < model.pages; p++) model.sync(p, t);
      return;
    case 'cut':
      if (!inFlight) model.checkpoints.set(op.name, t);
      return;
    case 'delete':
      if (!inFlight) model.checkpoints.delete(op.name);
      return;
    case 'rollback': {
      if (inFlight) return;
      const at = model.checkpoints.get(op.name) as number;
      for (let p = 0; p < model.pages; p++) {
        model.write(p, model.versionAt(p, at), t);
        model.sync(p, t); // restoreTo ends with an fdatasync of the base
      }
      return;
    }
  }
}

/**
 * Checks a volume opened after a power loss against the model. `crashed` is the operation that was
 * in flight (a flush stands for none) and `now` its time.
 */
export async function checkAfterPowerLoss(reopened: Volume, model: Model, crashed: Op, now: number, where: string): Promise<void> {
  const PAGES = model.pages;
  const SIZE = PAGES * PAGE;
  const names2 = reopened.checkpoints().map((c) => c.name);
  for (const name of model.checkpoints.keys()) {
    if (crashed.kind === 'delete' && crashed.name === name) continue;
    assert.ok(names2.includes(name), `${where}: acknowledged checkpoint ${name} is gone (have ${names2.join()})`);
  }
  for (const name of names2) {
    const known = model.checkpoints.has(name) || (crashed.kind === 'cut' && crashed.name === name) || (crashed.kind === 'delete' && crashed.name === name);
    assert.ok(known, `${where}: unknown checkpoint ${name}`);
  }
  const cutTime = (name: string): number => model.checkpoints.get(name) ?? now;
  for (const name of names2) {
    const image = await reopened.readCheckpoint(name, 0, SIZE);
    for (let p = 0; p < PAGES; p++) {
      const got = image.subarray(p * PAGE, (p + 1) * PAGE);
      assert.ok(model.allowed(p, cutTime(name), now).some((b) => b.equals(got)), `${where}: checkpoint ${name} page ${p} is no version it could have at its cut`);
    }
  }
  const live = await reopened.read(0, SIZE);
  for (let p = 0; p < PAGES; p++) {
    const got = live.subarray(p * PAGE, (p + 1) * PAGE);
    const ok = model.allowed(p, now, now + 1).some((b) => b.equals(got));
    const rolledBack = crashed.kind === 'rollback' && model.allowed(p, cutTime(crashed.name), now).some((b) => b.equals(got));
    assert.ok(ok || rolledBack, `${where}: live page ${p} is no version it could have (a flushed write lost?)`);
  }
}
