/**
 * The workload of the device-level power-loss test: opens a volume and runs the power-loss model's
 * operations (test/engine/power-model.ts) one at a time, for ever. Operation t is announced by an
 * "issue" line before it starts and an "ack" line once it completed; pipe writes are atomic and
 * synchronous, so after the parent stops this process (SIGSTOP) every line written is readable.
 *
 *   node power-child.js DIR PAGES SEED
 */
import { Volume } from '../../src/engine/index.js';
import { seededRandom } from '../engine/helpers.js';
import { randomOp, runOp } from '../engine/power-model.js';

const [dir, pagesArg, seedArg] = process.argv.slice(2);
if (dir === undefined || pagesArg === undefined || seedArg === undefined) throw new Error('usage: power-child DIR PAGES SEED');
const pages = Number(pagesArg);
const rnd = seededRandom(Number(seedArg));
const vol = await Volume.open(dir);
const emit = (o: object): void => void process.stdout.write(`${JSON.stringify(o)}\n`);
emit({ e: 'ready' });
let names = 0;
for (let t = 1; ; t++) {
  const op = randomOp(rnd, pages, vol.checkpoints().map((c) => c.name), () => `c${++names}`);
  emit({ e: 'issue', t, op });
  await runOp(vol, op);
  await vol.settled();
  emit({ e: 'ack', t });
}
