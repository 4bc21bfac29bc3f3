/** Shared helpers for engine tests: temp dirs, held volumes, patterned data, and I/O that can be held or failed. */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import fc from 'fast-check';
import { Volume, type CreateOptions, type OpenOptions } from '../../src/engine/index.js';
import { instrumentedIO, type Hook, type OpInfo } from './instrumented-io.js';

export function tempDir(prefix: string, parent = os.tmpdir()): { dir: string; cleanup: () => void } {
  const dir = fs.mkdtempSync(path.join(parent, `flashcsi-${prefix}-`));
  return { dir, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/** A volume held by one test (withVolume); reopen() replaces `vol`. */
export interface HeldVolume {
  vol: Volume;
  /** The volume's directory. */
  readonly dir: string;
  /** The temp dir around it, for the test's other files. */
  readonly tmp: string;
  /** Closes the volume and opens it again (with the same I/O), as after a restart. */
  reopen(opts?: OpenOptions): Promise<Volume>;
}

export interface HeldVolumeOptions extends CreateOptions {
  /** Route the volume's file operations through `hold` (released again before the volume is closed). */
  readonly hold?: Holder;
}

/**
 * Creates a volume in a fresh temp dir for one test, runs `fn`, then always releases a held file
 * operation, closes the volume and removes the dir.
 */
export async function withVolume<T>(name: string, opts: HeldVolumeOptions, fn: (h: HeldVolume) => Promise<T>): Promise<T> {
  const t = tempDir(name);
  const { hold, ...create } = opts;
  const io = hold === undefined ? create.io : instrumentedIO(hold.hook);
  const dir = path.join(t.dir, 'v');
  const h: HeldVolume = {
    vol: await Volume.create(dir, { ...create, ...(io === undefined ? {} : { io }) }),
    dir,
    tmp: t.dir,
    async reopen(reopenOpts = {}) {
      await h.vol.close();
      h.vol = await Volume.open(dir, { ...(io === undefined ? {} : { io }), ...reopenOpts });
      return h.vol;
    },
  };
  try {
    return await fn(h);
  } finally {
    hold?.release();
    await h.vol.close();
    t.cleanup();
  }
}

/** `len` bytes of one repeated value. */
export function fill(byte: number, len: number): Buffer {
  return Buffer.alloc(len, byte);
}

/** Deterministic pseudo-random bytes (xorshift32), so every write is distinguishable. */
export function pattern(seed: number, len: number): Buffer {
  const b = Buffer.allocUnsafe(len);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

export function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** A small seeded random generator (mulberry32) returning floats in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;
export const TiB = 1024 * GiB;

/**
 * Holds the first file operation matching a predicate once armed: `reached` resolves when an
 * operation is held, and it proceeds only after `release()`. Lets a test freeze the engine at an
 * exact step instead of guessing with timers.
 */
export class Holder {
  private armed: ((info: OpInfo) => boolean) | null = null;
  private releaseFn: (() => void) | null = null;
  private reachedFn: ((info: OpInfo) => void) | null = null;
  reached: Promise<OpInfo> = Promise.resolve({ op: 'read', file: '', kind: 'other', bytes: 0 });
  held = false;

  readonly hook: Hook = async (info) => {
    if (!this.armed || !this.armed(info)) return;
    this.armed = null;
    this.held = true;
    const gate = new Promise<void>((resolve) => {
      this.releaseFn = resolve;
    });
    this.reachedFn?.(info);
    await gate;
    this.held = false;
  };

  arm(match: (info: OpInfo) => boolean): void {
    this.armed = match;
    this.reached = new Promise((resolve) => {
      this.reachedFn = resolve;
    });
  }

  release(): void {
    const release = this.releaseFn;
    this.releaseFn = null;
    release?.();
  }
}

/** Fails file operations matching a predicate with a system error code, while armed. */
export class Faults {
  private rule: { match: (info: OpInfo) => boolean; code: string; remaining: number } | null = null;
  /** Operations that matched and failed. */
  hits = 0;
  /** Matching operations seen so far (failed or not); lets a test fail "the n-th step". */
  seen = 0;

  readonly hook: Hook = (info) => {
    const rule = this.rule;
    if (!rule || !rule.match(info)) return;
    this.seen++;
    if (rule.remaining <= 0) return;
    rule.remaining--;
    this.hits++;
    const err = new Error(`injected ${rule.code} on ${info.op} ${path.basename(info.file)}`) as NodeJS.ErrnoException;
    err.code = rule.code;
    throw err;
  };

  /** Fails the next `times` matching operations with `code` (e.g. 'ENOSPC', 'EIO'). */
  fail(match: (info: OpInfo) => boolean, code: string, times = Infinity): void {
    this.rule = { match, code, remaining: times };
    this.hits = 0;
    this.seen = 0;
  }

  clear(): void {
    this.rule = null;
  }
}

/**
 * fc.assert that puts the failing property's own error (fast-check 4 keeps it in `cause`) into
 * the message, so a failure report shows what was wrong and not only the counterexample.
 */
export async function assertProperty<Ts>(property: fc.IAsyncProperty<Ts> | fc.IProperty<Ts>, params: fc.Parameters<Ts>): Promise<void> {
  try {
    await fc.assert(property, params);
  } catch (err) {
    const cause = (err as { cause?: unknown }).cause;
    if (cause === undefined) throw err;
    throw new Error(`${(err as Error).message}\ncaused by: ${cause instanceof Error ? (cause.stack ?? cause.message) : String(cause)}`, { cause: err });
  }
}
