/** Shared test fixtures: a server on a private Unix socket, a gated export, process helpers. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import type { ConnectionLimits } from '../../../src/nbd/connection.js';
import { MapExportProvider, type Extent, type NbdExport, type WriteZeroesOptions } from '../../../src/nbd/export.js';
import { MemoryExport } from '../../../src/nbd/memory-export.js';
import { NbdServer } from '../../../src/nbd/server.js';
import { CMD, RawClient } from './raw-client.js';

export const MiB = 1024 * 1024;

export interface Fixture {
  readonly dir: string;
  readonly sock: string;
  readonly server: NbdServer;
  readonly provider: MapExportProvider;
  /** The default export ("") when the fixture created it. */
  readonly mem: MemoryExport;
  uri(name?: string): string;
  close(): Promise<void>;
}

export interface FixtureOptions {
  readonly size?: number;
  /** Extra exports besides the default MemoryExport. */
  readonly exports?: NbdExport[];
  /** Replace the default export. */
  readonly defaultExport?: MemoryExport;
  readonly limits?: Partial<ConnectionLimits>;
  readonly highWaterMark?: number;
}

/** A fresh 0700 directory under the system temp dir. */
export function tempDir(prefix = 'flashcsi-nbd-'): Promise<string> {
  return fsp.mkdtemp(path.join(os.tmpdir(), prefix));
}

export async function startServer(opts: FixtureOptions = {}): Promise<Fixture> {
  const dir = await tempDir();
  const sock = path.join(dir, 'run', 'nbd.sock');
  const mem = opts.defaultExport ?? new MemoryExport({ name: '', size: opts.size ?? 64 * MiB, description: 'test export' });
  const provider = new MapExportProvider([mem, ...(opts.exports ?? [])]);
  const server = new NbdServer({
    provider,
    ...(opts.limits !== undefined ? { limits: opts.limits } : {}),
    ...(opts.highWaterMark !== undefined ? { highWaterMark: opts.highWaterMark } : {}),
  });
  await server.listenUnix(sock);
  return {
    dir,
    sock,
    server,
    provider,
    mem,
    uri: (name = '') => `nbd+unix:///${encodeURIComponent(name)}?socket=${sock}`,
    close: async () => {
      await server.close({ graceMs: 5000 });
      await fsp.rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A well-behaved client must still be served: negotiate, write a pattern, read it back, FLUSH,
 * DISC. Used after every malformed-input test.
 */
export async function assertServes(sock: string, name = ''): Promise<void> {
  const c = await RawClient.connect(sock);
  try {
    const { size } = await c.negotiate({ name, structured: true });
    assert.ok(size >= 4096n);
    const data = Buffer.alloc(4096, 0x5a);
    await c.send(CMD.write, 0, 101n, 0, data.length, data);
    const w = await c.readReply();
    assert.equal(w.error, 0);
    await c.send(CMD.read, 0, 102n, 0, 4096);
    const r = await c.readReply();
    assert.equal(r.error, 0);
    assert.equal(r.type, 1); // OFFSET_DATA
    assert.ok(r.payload.subarray(8).equals(data));
    await c.send(CMD.flush, 0, 103n, 0, 0);
    assert.equal((await c.readReply()).error, 0);
    await c.disconnect();
  } finally {
    c.close();
  }
}

export interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a program asynchronously (the in-process server must keep serving meanwhile). */
export function run(cmd: string, args: readonly string[], opts: { timeoutMs?: number; input?: Buffer } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 * MiB, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err === null) {
        resolve({ code: 0, stdout, stderr });
      } else if (err.killed || err.signal) {
        reject(new Error(`${cmd} ${args.join(' ')} killed (${err.signal ?? 'timeout'})\n${stderr}`));
      } else if (typeof err.code === 'number') {
        resolve({ code: err.code, stdout, stderr });
      } else {
        reject(new Error(`${cmd}: ${err.message}`));
      }
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** Runs a program and asserts exit 0; returns stdout. */
export async function runOk(cmd: string, args: readonly string[], opts: { timeoutMs?: number; input?: Buffer } = {}): Promise<string> {
  const r = await run(cmd, args, opts);
  assert.equal(r.code, 0, `${cmd} ${args.join(' ')} exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r.stdout;
}

/**
 * An export that delegates to a MemoryExport but can hold operations at a gate: `hold(op)` makes
 * the next calls of that kind wait until the returned release function is called. Lets tests
 * create out-of-order completion and in-flight requests deterministically.
 */
export class GatedExport implements NbdExport {
  readonly name: string;
  readonly readOnly: boolean;
  readonly fastZero: boolean;
  private readonly gates = new Map<string, Promise<void>>();
  /** Resolvers for "an operation reached the gate". */
  private readonly arrivals = new Map<string, (() => void)[]>();

  constructor(readonly inner: MemoryExport) {
    this.name = inner.name;
    this.readOnly = inner.readOnly;
    this.fastZero = inner.fastZero;
  }

  size(): number {
    return this.inner.size();
  }

  /** Holds subsequent `op` calls until the returned function is called. */
  hold(op: 'read' | 'write' | 'flush' | 'blockStatus'): () => void {
    let release!: () => void;
    this.gates.set(op, new Promise<void>((r) => (release = r)));
    return () => {
      this.gates.delete(op);
      release();
    };
  }

  /** Resolves when the next `op` call reaches its gate. */
  arrived(op: string): Promise<void> {
    return new Promise((resolve) => {
      const list = this.arrivals.get(op) ?? [];
      list.push(resolve);
      this.arrivals.set(op, list);
    });
  }

  private async pass(op: string): Promise<void> {
    const list = this.arrivals.get(op);
    if (list !== undefined) {
      this.arrivals.delete(op);
      for (const r of list) r();
    }
    const g = this.gates.get(op);
    if (g !== undefined) await g;
  }

  async read(offset: number, length: number, into: Buffer): Promise<Buffer> {
    await this.pass('read');
    return this.inner.read(offset, length, into);
  }
  async write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    await this.pass('write');
    return this.inner.write(offset, data, fua);
  }
  writeZeroes(offset: number, length: number, opts: WriteZeroesOptions): Promise<void> {
    return this.inner.writeZeroes(offset, length, opts);
  }
  trim(offset: number, length: number, fua: boolean): Promise<void> {
    return this.inner.trim(offset, length, fua);
  }
  async flush(): Promise<void> {
    await this.pass('flush');
    return this.inner.flush();
  }
  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    await this.pass('blockStatus');
    return this.inner.blockStatus(offset, length);
  }
}
