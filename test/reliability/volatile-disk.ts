/**
 * A disk with a volatile write cache, served over NBD, for power-loss tests at the device level.
 * Writes (and trims, write-zeroes) land in the cache, 4 KiB page by page; FLUSH moves the whole
 * cache to the durable medium, a FUA write its own pages; now and then a cached page is written
 * back early, as a real disk may. Reads see the cache over the medium. Multi-connection is
 * advertised: every connection shares the one cache, so a FLUSH covers writes from all of them.
 *
 * stdin commands, one per line; each is answered by one JSON line on stdout:
 *   stats                → {"writes":N,"flushes":N,"fua":N,"dirty":N}
 *   cut KEEP FILE        → the power fails: FILE gets the medium plus each dirty page with
 *                          probability KEEP (a sparse raw image), and from then on every request
 *                          fails with EIO. {"cut":true,"dirty":N,"kept":N,…stats}
 *
 *   node volatile-disk.js SOCKET SIZE
 */
import { closeSync, openSync, writeSync, ftruncateSync } from 'node:fs';
import * as readline from 'node:readline';
import type { Extent, NbdExport, WriteZeroesOptions } from '../../src/nbd/export.js';
import { MapExportProvider } from '../../src/nbd/export.js';
import { NbdServer } from '../../src/nbd/server.js';

const PAGE = 4096;

class VolatileDisk implements NbdExport {
  readonly name = '';
  readonly readOnly = false;
  readonly fastZero = true;
  readonly multiConn = true;
  readonly blockSize = { minimum: 512, preferred: PAGE, maximum: 32 * 1024 * 1024 };
  private readonly medium = new Map<number, Buffer>();
  /** Cached pages not yet on the medium; null = zeroed. */
  private readonly pending = new Map<number, Buffer | null>();
  stats = { writes: 0, flushes: 0, fua: 0 };
  dead = false;

  get dirty(): number {
    return this.pending.size;
  }

  constructor(private readonly bytes: number) {}

  size(): number {
    return this.bytes;
  }

  private check(): void {
    if (this.dead) throw Object.assign(new Error('the power is off'), { code: 'IO' });
  }

  private page(p: number): Buffer | null {
    const c = this.pending.get(p);
    if (c !== undefined) return c;
    return this.medium.get(p) ?? null;
  }

  private persist(p: number): void {
    const c = this.pending.get(p);
    if (c === undefined) return;
    if (c === null) this.medium.delete(p);
    else this.medium.set(p, c);
    this.pending.delete(p);
  }

  private put(offset: number, data: Buffer | null, length: number): number[] {
    const touched: number[] = [];
    for (let at = offset; at < offset + length; ) {
      const p = Math.floor(at / PAGE);
      const within = at % PAGE;
      const n = Math.min(PAGE - within, offset + length - at);
      const page = Buffer.alloc(PAGE);
      this.page(p)?.copy(page);
      if (data) data.copy(page, within, at - offset, at - offset + n);
      else page.fill(0, within, within + n);
      this.pending.set(p, page.every((b) => b === 0) ? null : page);
      touched.push(p);
      at += n;
    }
    // Early writeback of one random cached page, now and then.
    if (Math.random() < 0.05 && this.pending.size > 0) {
      const keys = [...this.pending.keys()];
      this.persist(keys[Math.floor(Math.random() * keys.length)] as number);
    }
    return touched;
  }

  async read(offset: number, length: number, into: Buffer): Promise<Buffer> {
    this.check();
    for (let at = offset; at < offset + length; ) {
      const p = Math.floor(at / PAGE);
      const within = at % PAGE;
      const n = Math.min(PAGE - within, offset + length - at);
      const page = this.page(p);
      if (page) page.copy(into, at - offset, within, within + n);
      else into.fill(0, at - offset, at - offset + n);
      at += n;
    }
    return into;
  }

  async write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    this.check();
    this.stats.writes++;
    const pages = this.put(offset, data, data.length);
    if (fua) {
      this.stats.fua++;
      for (const p of pages) this.persist(p);
    }
  }

  async writeZeroes(offset: number, length: number, opts: WriteZeroesOptions): Promise<void> {
    this.check();
    const pages = this.put(offset, null, length);
    if (opts.fua) for (const p of pages) this.persist(p);
  }

  async trim(offset: number, length: number, fua: boolean): Promise<void> {
    await this.writeZeroes(offset, length, { fua, noHole: false, fastZero: false });
  }

  async flush(): Promise<void> {
    this.check();
    this.stats.flushes++;
    for (const p of [...this.pending.keys()]) this.persist(p);
  }

  async blockStatus(_offset: number, length: number): Promise<Extent[]> {
    return [{ length, hole: false, zero: false }];
  }

  /** The power fails: writes the surviving image to `file`; every later request fails. */
  cut(keep: number, file: string): { dirty: number; kept: number } {
    this.dead = true;
    const image = new Map(this.medium);
    let kept = 0;
    for (const [p, c] of this.pending) {
      if (Math.random() >= keep) continue;
      kept++;
      if (c === null) image.delete(p);
      else image.set(p, c);
    }
    const fd = openSync(file, 'w', 0o600);
    try {
      ftruncateSync(fd, this.bytes);
      for (const [p, c] of image) writeSync(fd, c, 0, PAGE, p * PAGE);
    } finally {
      closeSync(fd);
    }
    return { dirty: this.pending.size, kept };
  }
}

const [socket, sizeArg] = process.argv.slice(2);
if (socket === undefined || sizeArg === undefined) throw new Error('usage: volatile-disk.js SOCKET SIZE');
const disk = new VolatileDisk(Number(sizeArg));
const server = new NbdServer({ provider: new MapExportProvider([disk]) });
await server.listenUnix(socket);
process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const [cmd, a, b] = line.trim().split(' ');
  if (cmd === 'stats') process.stdout.write(`${JSON.stringify({ ...disk.stats, dirty: disk.dirty })}\n`);
  else if (cmd === 'cut' && a !== undefined && b !== undefined) process.stdout.write(`${JSON.stringify({ cut: true, ...disk.cut(Number(a), b), ...disk.stats })}\n`);
});
process.stdin.on('end', () => void server.close({ graceMs: 1000 }));
