/**
 * The workload the crash test kills: opens a volume (running recovery) and performs random
 * operations for ever. Before issuing an operation it writes an "issue" line to stdout, and after
 * it completes an "ack" line. Pipe writes are synchronous on Linux, so every line written before
 * the SIGKILL reaches the parent, which mirrors the volume's state from them.
 *
 *   node crash-child.js DIR SEED
 */
import { Volume } from '../../src/engine/index.js';
import { pattern, seededRandom } from './helpers.js';

export type CrashEvent =
  | { e: 'ready' }
  | { e: 'write'; id: number; at: number; len: number; seed: number; fua: boolean }
  | { e: 'trim'; id: number; at: number; len: number }
  | { e: 'flush'; id: number }
  | { e: 'cut'; id: number; name: string }
  | { e: 'delete'; id: number; name: string }
  | { e: 'rollback'; id: number; name: string }
  | { e: 'begin'; id: number; txid: string }
  | { e: 'prepare'; id: number; txid: string }
  | { e: 'commit'; id: number; txid: string }
  | { e: 'abort'; id: number; txid: string }
  | { e: 'ack'; id: number; deferred?: boolean };

function emit(event: CrashEvent): void {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

async function main(): Promise<void> {
  const [dir, seedArg] = process.argv.slice(2);
  if (!dir || !seedArg) throw new Error('usage: crash-child DIR SEED');
  const seed = Number(seedArg);
  const rnd = seededRandom(seed);
  const vol = await Volume.open(dir);
  emit({ e: 'ready' });
  let id = 0;
  let names = 0;
  const grain = vol.grainSize;
  for (;;) {
    const r = rnd();
    const tx = vol.transaction();
    const userCheckpoints = vol.checkpoints().map((c) => c.name);
    if (r < 0.5) {
      // A batch of concurrent writes and trims on non-overlapping ranges.
      const n = 1 + Math.floor(rnd() * 4);
      const slot = Math.floor(vol.size / n);
      await Promise.all(
        Array.from({ length: n }, async (_, k) => {
          const len = 1 + Math.floor(rnd() * Math.min(slot, 32 * grain));
          const at = k * slot + Math.floor(rnd() * (slot - len));
          const op = ++id;
          if (rnd() < 0.85) {
            const wseed = Math.floor(rnd() * 2 ** 30) + 1;
            const fua = rnd() < 0.2;
            emit({ e: 'write', id: op, at, len, seed: wseed, fua });
            await vol.write(at, pattern(wseed, len), { fua });
          } else {
            emit({ e: 'trim', id: op, at, len });
            await vol.trim(at, len);
          }
          emit({ e: 'ack', id: op });
        }),
      );
    } else if (r < 0.57) {
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
