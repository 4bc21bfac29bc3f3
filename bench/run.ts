/**
 * `npm run bench`: flashcsi against its peers in one run on one machine, written to
 * docs/benchmarks.md with the ratios, the machine, the load average and every command line.
 *
 * - nbd (bench/nbd.ts): the NBD server alone, against nbdkit and qemu-nbd, via fio's nbd engine;
 *   copy-on-write first writes; checkpoint cut latency.
 * - app, pgbench, memory (bench/app.ts): what a pod sees in its mounted volume, against nbdkit
 *   behind the same attach and a local loop device; PostgreSQL; memory per attached volume.
 *
 * Environment: BENCH_SECTIONS (comma-separated, default nbd,app,pgbench,memory), BENCH_RUNTIME
 * (seconds per timed job, default 10), BENCH_REGION (NBD-level bytes, default 1 GiB), BENCH_CUTS
 * (cuts per size, default 50), BENCH_APP_FILE / BENCH_APP_VOLUME (fio file and volume bytes,
 * default 2 and 4 GiB), BENCH_APP_TARGETS (the fio rows' targets, default F,N,K,L), BENCH_PGBENCH_RUNTIME (s, default 30), BENCH_PGBENCH_SCALE (default 20),
 * BENCH_VOLUMES (volumes staged at once for the memory figure, default 50), BENCH_OUT (default
 * docs/benchmarks.md).
 *
 * Benchmark figures are only comparable on a quiet machine: the report shows the 1-minute load
 * average when each part started.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { appReport, runApp, type AppResults } from './app.js';
import { ROOT, commandLines, load, machine, peakLoad, work } from './common.js';
import { nbdReport, runNbd, type NbdResults } from './nbd.js';

const SECTIONS = new Set((process.env.BENCH_SECTIONS ?? 'nbd,app,pgbench,memory').split(',').map((s) => s.trim()));
const OUT = process.env.BENCH_OUT ?? path.join(ROOT, 'docs/benchmarks.md');

async function main(): Promise<void> {
  const started = new Date();
  const startLoad = load();
  const host = machine();
  let nbd: NbdResults | undefined;
  let app: AppResults | undefined;
  // A part that fails is reported as such; the parts that ran are still written.
  const failures: string[] = [];
  const attempt = async <T>(part: string, run: () => Promise<T>): Promise<T | undefined> => {
    try {
      return await run();
    } catch (err) {
      process.stderr.write(`bench: ${part} failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
      failures.push(`${part}: ${err instanceof Error ? err.message : String(err)}`);
      return undefined;
    }
  };
  if (SECTIONS.has('nbd')) nbd = await attempt('nbd', runNbd);
  if (SECTIONS.has('app') || SECTIONS.has('pgbench') || SECTIONS.has('memory')) app = await attempt('app', () => runApp(SECTIONS));
  try {
    fs.rmSync(work, { recursive: true, force: true });
  } catch (err) {
    failures.push(`clean-up of ${work}: ${err instanceof Error ? err.message : String(err)}`);
  }
  const lines: string[] = ['# Benchmarks', ''];
  lines.push(`Latest \`npm run bench\` (sections: ${[...SECTIONS].join(', ')}), started ${started.toISOString()} at a 1-minute load`);
  lines.push(`average of ${startLoad}. Every target in this one run on this one machine; higher is better. The figures are only`);
  lines.push('comparable on a quiet machine: each table gives the load average as its jobs started. What the figures mean and where');
  lines.push('the time goes: [performance.md](performance.md).', '');
  if (peakLoad() > os.cpus().length) {
    lines.push(`**Taken under load** (1-minute load average up to ${peakLoad().toFixed(1)} on ${os.cpus().length} CPUs): other processes shared the CPUs, so these`);
    lines.push('figures and their ratios are not comparable with a run on a quiet machine.', '');
  }
  if (failures.length > 0) lines.push('**Incomplete**: these parts failed, and their figures are missing:', '', ...failures.map((f) => `- ${f}`), '');
  lines.push('## Machine', '', ...host, '');
  if (app !== undefined) lines.push(...appReport(app));
  if (nbd !== undefined) lines.push(...nbdReport(nbd));
  lines.push('## Command lines', '', '```', ...commandLines(), '```', '');
  fs.writeFileSync(OUT, lines.join('\n'));
  process.stderr.write(`wrote ${OUT}\n`);
  if (failures.length > 0) process.exitCode = 1;
}

await main();
