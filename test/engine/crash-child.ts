/**
 * The workload the crash test kills: opens a volume (running recovery) and performs random
 * operations for ever. Before issuing an operation it writes an "issue" line to stdout, and after
 * it completes an "ack" line. Pipe writes are synchronous on Linux, so every line written before
 * the SIGKILL reaches the parent, which mirrors the volume's state from them. Reads (checkpoint
 * reads among the concurrent writes, clones of a checkpoint or of the live volume) ack with the
 * sha256 of what they read, which the parent compares with its model. Half the writes first try
 * the worker threads' fast path (fast-path.ts, called synchronously here) and ack with `fast` when
 * it took them.
 *
 *   node crash-child.js DIR SEED
 */
import { rmSync } from 'node:fs';
import { FastPath, Volume } from '../../src/engine/index.js';
import { pattern, seededRandom, sha256 } from './helpers.js';

export type CrashEvent =
  | { e: 'ready' }
  | { e: 'write'; id: number; at: number; len: number; seed: number; fua: boolean }
  | { e: 'trim'; id: number; at: number; len: number }
  | { e: 'readcp'; id: number; name: string; at: number; len: number }
  | { e: 'clone'; id: number; name: string | null }
  | { e: 'flush'; id: number }
  | { e: 'cut'; id: number; name: string }
  | { e: 'delete'; id: number; name: string }
  | { e: 'rollback'; id: number; name: string }
  | { e: 'begin'; id: number; txid: string }
  | { e: 'prepare'; id: number; txid: string }
  | { e: 'commit'; id: number; txid: string }
  | { e: 'abort'; id: number; txid: string }
  | { e: 'ack'; id: number; deferred?: boolean; sha?: string; fast?: boolean };

function emit(event: CrashEvent): void {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

async function main(): Promise<void> {
  const [dir, seedArg] = process.argv.slice(2);
  if (!dir || !seedArg) throw new Error('usage: crash-child DIR SEED');
  const seed = Number(seedArg);
  const rnd = seededRandom(seed);
  const vol = await Volume.open(dir);
  const fast = new FastPath(vol.fastPath());
  emit({ e: 'ready' });
  let id = 0;
  let names = 0;
  const grain = vol.grainSize;
  const cloneDir = `${dir}.clone`;
  for (;;) {
    const r = rnd();
    const tx = vol.transaction();
    const userCheckpoints = vol.checkpoints().map((c) => c.name);
    const allCheckpoints = vol.checkpoints({ includeInternal: true }).map((c) => c.name);
    if (r < 0.5) {
      // A batch of concurrent writes and trims on non-overlapping ranges, and checkpoint reads.
      const n = 1 + Math.floor(rnd() * 4);
      const slot = Math.floor(vol.size / n);
      await Promise.all(
        Array.from({ length: n + (allCheckpoints.length > 0 && rnd() < 0.5 ? 1 : 0) }, async (_, k) => {
          const op = ++id;
          if (k === n) {
            const name = allCheckpoints[Math.floor(rnd() * allCheckpoints.length)] as string;
            const len = 1 + Math.floor(rnd() * 64 * grain);
            const at = Math.floor(rnd() * (vol.size - len));
            emit({ e: 'readcp', id: op, name, at, len });
            const sha = sha256(await vol.readCheckpoint(name, at, len));
            emit({ e: 'ack', id: op, sha });
            return;
          }
          const len = 1 + Math.floor(rnd() * Math.min(slot, 32 * grain));
          const at = k * slot + Math.floor(rnd() * (slot - len));
          if (rnd() < 0.85) {
            const wseed = Math.floor(rnd() * 2 ** 30) + 1;
            const fua = rnd() < 0.2;
            emit({ e: 'write', id: op, at, len, seed: wseed, fua });
            const data = pattern(wseed, len);
            if (rnd() < 0.5 && fast.write(data, at, fua)) {
              emit({ e: 'ack', id: op, fast: true });
              return;
            }
            await vol.write(at, data, { fua });
          } else {
            emit({ e: 'trim', id: op, at, len });
            await vol.trim(at, len);
          }
          emit({ e: 'ack', id: op });
        }),
      );
    } else if (r < 0.54) {
      // A clone (CreateVolume from a snapshot or a volume): a checkpoint's image, or the live
      // image through a temporary internal checkpoint, copied into a new volume and read back.
      const name = userCheckpoints.length > 0 && rnd() < 0.6 ? (userCheckpoints[Math.floor(rnd() * userCheckpoints.length)] as string) : null;
      if (name === null && tx) continue;
      rmSync(cloneDir, { recursive: true, force: true }); // left by a kill during an earlier clone
      const op = ++id;
      emit({ e: 'clone', id: op, name });
      const copy = await vol.clone(cloneDir, name === null ? {} : { checkpoint: name });
      const sha = sha256(await copy.read(0, copy.size));
      await copy.close();
      rmSync(cloneDir, { recursive: true, force: true });
      emit({ e: 'ack', id: op, sha });
    } else if (r < 0.59) {
      const op = ++id;
      emit({ e: 'flush', id: op });
      await vol.flush();
      emit({ e: 'ack', id: op });
    } else if (r < 0.67) {
      if (userCheckpoints.length >= 5) continue;
      const op = ++id;
      const name = `c${seed}-${++names}`;
      emit({ e: 'cut', id: op, name });
      const res = await vol.createCheckpoint(name);
      emit({ e: 'ack', id: op, deferred: res.state === 'deferred' });
    } else if (r < 0.77) {
      if (userCheckpoints.length === 0) continue;
      const name = userCheckpoints[Math.floor(rnd() * userCheckpoints.length)] as string;
      const op = ++id;
      emit({ e: 'delete', id: op, name });
      await vol.deleteCheckpoint(name);
      emit({ e: 'ack', id: op });
    } else if (r < 0.87) {
      if (tx || userCheckpoints.length === 0) continue;
      const name = userCheckpoints[Math.floor(rnd() * userCheckpoints.length)] as string;
      const op = ++id;
      emit({ e: 'rollback', id: op, name });
      await vol.rollback(name);
      emit({ e: 'ack', id: op });
    } else {
      const op = ++id;
      if (!tx) {
        const txid = `t${seed}-${++names}`;
        emit({ e: 'begin', id: op, txid });
        await vol.begin(txid);
      } else {
        const which = rnd();
        const kind = tx.state === 'open' && which < 0.3 ? 'prepare' : which < 0.65 ? 'commit' : 'abort';
        emit({ e: kind, id: op, txid: tx.txid });
        if (kind === 'prepare') await vol.prepare(tx.txid);
        else if (kind === 'commit') await vol.commit(tx.txid);
        else await vol.abort(tx.txid);
      }
      emit({ e: 'ack', id: op });
    }
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`crash-child: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exitCode = 1;
});
