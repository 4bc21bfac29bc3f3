/**
 * The application the reliability tests run on a mounted flashcsi volume: a writer and a verifier
 * in one process.
 * - writer: creates files of random size and content (4 KiB–256 KiB), fsyncs each, then records
 *   its sha256 as durable; now and then rewrites a durable file in place (fsync again) or deletes
 *   the oldest ones (keeping the set bounded);
 * - verifier: after every write, reads back a random durable file and checks its sha256, having
 *   first dropped the file's pages from the page cache (posix_fadvise DONTNEED on clean pages), so
 *   the read goes down to the device — through the loop device, nbdfuse and `flashcsi serve`.
 * Every failed call is recorded with its errno; every checksum mismatch is recorded as corruption.
 * It runs until it reads "stop" on stdin, then prints one JSON report line on stdout and exits.
 * Progress lines ({"written":N,"verified":N,"errors":N}) are printed every 20 operations.
 *
 *   node workload.js DIR [--keep-going]   (without --keep-going it stops writing at the first error)
 */
import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import * as readline from 'node:readline';

const require = createRequire(import.meta.url);
const koffi = require('koffi') as typeof import('koffi');
const posixFadvise = koffi.load('libc.so.6').func('int posix_fadvise(int fd, int64_t offset, int64_t len, int advice)');
const POSIX_FADV_DONTNEED = 4;

export interface WorkloadReport {
  readonly written: number;
  readonly rewritten: number;
  readonly verified: number;
  readonly deleted: number;
  readonly errors: ReadonlyArray<{ op: string; file: string; code: string; message: string }>;
  readonly corrupt: readonly string[];
  /** Every file whose last fsync succeeded, with its content hash. */
  readonly durable: Record<string, string>;
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

async function main(): Promise<void> {
  const [dir, flag] = process.argv.slice(2);
  if (dir === undefined) throw new Error('usage: workload DIR [--keep-going]');
  const keepGoing = flag === '--keep-going';
  const durable = new Map<string, string>();
  const errors: Array<{ op: string; file: string; code: string; message: string }> = [];
  const corrupt: string[] = [];
  let written = 0;
  let rewritten = 0;
  let verified = 0;
  let deleted = 0;
  let n = 0;
  let stop = false;
  const commands = readline.createInterface({ input: process.stdin });
  commands.on('line', (l) => {
    if (l.trim() === 'stop') stop = true;
  });
  const fail = (op: string, file: string, err: unknown): void => {
    const e = err as NodeJS.ErrnoException;
    errors.push({ op, file, code: e.code ?? 'UNKNOWN', message: e.message });
  };
  const writeFile = async (name: string, data: Buffer): Promise<boolean> => {
    const file = path.join(dir, name);
    durable.delete(name); // being replaced: not promised until its fsync returns
    try {
      const fh = await fsp.open(file, 'w');
      try {
        await fh.write(data, 0, data.length, 0);
        await fh.sync();
      } finally {
        await fh.close();
      }
      durable.set(name, sha(data));
      return true;
    } catch (err) {
      fail('write+fsync', name, err);
      return false;
    }
  };
  const verify = async (name: string): Promise<void> => {
    const file = path.join(dir, name);
    try {
      const fh = await fsp.open(file, 'r');
      try {
        posixFadvise(fh.fd, 0, 0, POSIX_FADV_DONTNEED);
        const { size } = await fh.stat();
        const buf = Buffer.alloc(size);
        await fh.read(buf, 0, size, 0);
        if (sha(buf) !== durable.get(name)) corrupt.push(name);
        verified++;
      } finally {
        await fh.close();
      }
    } catch (err) {
      fail('read', name, err);
    }
  };
  while (!stop) {
    if (errors.length > 0 && !keepGoing) {
      await new Promise((r) => setTimeout(r, 20)); // idle until told to stop; the error is reported then
      continue;
    }
    n++;
    const names = [...durable.keys()];
    const r = Math.random();
    if (r < 0.1 && names.length > 0) {
      const name = names[Math.floor(Math.random() * names.length)] as string;
      if (await writeFile(name, randomBytes(4096 * (1 + Math.floor(Math.random() * 64))))) rewritten++;
    } else {
      if (await writeFile(`f${n}`, randomBytes(4096 * (1 + Math.floor(Math.random() * 64))))) written++;
    }
    const pick = [...durable.keys()];
    if (pick.length > 0) await verify(pick[Math.floor(Math.random() * pick.length)] as string);
    if (durable.size > 150) {
      const oldest = durable.keys().next().value as string;
      try {
        await fsp.unlink(path.join(dir, oldest));
        durable.delete(oldest);
        deleted++;
      } catch (err) {
        fail('unlink', oldest, err);
      }
    }
    if (n % 20 === 0) process.stdout.write(`${JSON.stringify({ written, verified, errors: errors.length })}\n`);
  }
  // A last pass over everything durable.
  for (const name of [...durable.keys()]) await verify(name);
  const report: WorkloadReport = { written, rewritten, verified, deleted, errors, corrupt, durable: Object.fromEntries(durable) };
  process.stdout.write(`${JSON.stringify({ report })}\n`);
  commands.close();
  process.stdin.destroy(); // nothing else keeps the process alive: it exits
}

main().catch((err: unknown) => {
  process.stderr.write(`workload: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exitCode = 1;
});
