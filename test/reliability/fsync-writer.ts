/**
 * The application of the serve-fuse power-loss test: writes files in DIR, fsyncs each (and DIR
 * when it created or deleted one), and says so on stdout around every step, one JSON line each:
 *   {"e":"begin","name":N}            before N is (re)written: N is promised nothing from here
 *   {"e":"durable","name":N,"sha":H}  once N's fsync (and DIR's) returned: N must read back as H
 *   {"e":"unlink","name":N}           before N is deleted: N is promised nothing any more
 *   {"e":"error",…}                   a call failed; the writer then stops
 * Pipe writes are atomic and synchronous, so once the parent has stopped this process (SIGSTOP)
 * every line written is readable, and the "durable" lines name exactly what was promised. Sizes,
 * contents and choices come from SEED; how far it gets depends on timing.
 *
 *   node fsync-writer.js DIR SEED
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { seededRandom } from '../engine/helpers.js';

const MAX_FILES = 60;

const [dir, seedArg] = process.argv.slice(2);
if (dir === undefined || seedArg === undefined) throw new Error('usage: fsync-writer DIR SEED');
const rnd = seededRandom(Number(seedArg));
const emit = (o: object): void => void process.stdout.write(`${JSON.stringify(o)}\n`);

/** 4 KiB–128 KiB of seeded bytes. */
function content(): Buffer {
  const words = new Uint32Array(1024 * (1 + Math.floor(rnd() * 32)));
  for (let i = 0; i < words.length; i++) words[i] = Math.floor(rnd() * 2 ** 32);
  return Buffer.from(words.buffer);
}

async function syncDir(): Promise<void> {
  const fh = await fsp.open(dir as string, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function writeFile(name: string, data: Buffer, created: boolean): Promise<void> {
  emit({ e: 'begin', name });
  const fh = await fsp.open(path.join(dir as string, name), 'w');
  try {
    await fh.write(data, 0, data.length, 0);
    await fh.sync();
  } finally {
    await fh.close();
  }
  if (created) await syncDir();
  emit({ e: 'durable', name, sha: createHash('sha256').update(data).digest('hex') });
}

const files: string[] = [];
let step: string | undefined;
try {
  for (let n = 1; ; n++) {
    if (files.length > 0 && rnd() < 0.15) {
      step = 'rewrite';
      await writeFile(files[Math.floor(rnd() * files.length)] as string, content(), false);
    } else {
      step = 'create';
      const name = `f${n}`;
      await writeFile(name, content(), true);
      files.push(name);
    }
    if (files.length > MAX_FILES) {
      step = 'unlink';
      const oldest = files.shift() as string;
      emit({ e: 'unlink', name: oldest });
      await fsp.unlink(path.join(dir, oldest));
      await syncDir();
    }
  }
} catch (err) {
  const e = err as NodeJS.ErrnoException;
  emit({ e: 'error', step, code: e.code ?? 'UNKNOWN', message: e.message });
  process.exitCode = 1;
}
