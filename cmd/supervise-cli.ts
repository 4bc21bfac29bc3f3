/**
 * `flashcsi supervise -- ARGS…`: keeps `flashcsi ARGS…` running. In a container the main process
 * is PID 1 of its namespace; when it dies, the kernel kills every other process there — here the
 * per-volume data paths (`flashcsi serve`, nbdfuse), which the plugin starts detached so that they
 * outlive it. So the node container runs `tini -- flashcsi supervise -- plugin …`: tini reaps
 * orphans, this supervisor restarts a plugin that crashed, and the data paths never notice.
 * SIGTERM and SIGINT are passed to the child; after the child exits for them, so does this.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';

const ENTRY = fileURLToPath(new URL('./flashcsi.js', import.meta.url));

export function registerSuperviseCommand(program: Command): void {
  program
    .command('supervise')
    .description('run a flashcsi command and restart it whenever it exits unexpectedly (container entry point)')
    .argument('<args...>', 'the flashcsi command to run, after --')
    .option('--max-backoff <seconds>', 'longest wait between restarts', '30')
    .action(async (args: string[], o: { maxBackoff: string }) => {
      const maxBackoffMs = Number(o.maxBackoff) * 1000;
      let stopping: NodeJS.Signals | null = null;
      let child: ChildProcess | null = null;
      let backoffMs = 500;
      for (const sig of ['SIGTERM', 'SIGINT'] as const) {
        process.on(sig, () => {
          stopping = sig;
          child?.kill(sig);
        });
      }
      for (;;) {
        const started = Date.now();
        child = spawn(process.execPath, [ENTRY, ...args], { stdio: 'inherit' });
        const { code, signal } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
          (child as ChildProcess).once('exit', (c, s) => resolve({ code: c, signal: s }));
        });
        if (stopping) {
          process.exitCode = code ?? 0;
          return;
        }
        // A child that ran a while gets restarted at once; one that keeps failing waits longer each time.
        backoffMs = Date.now() - started > 60_000 ? 500 : Math.min(maxBackoffMs, backoffMs * 2);
        process.stderr.write(`${JSON.stringify({ level: 40, time: Date.now(), msg: 'supervise: child exited; restarting', code, signal, restartInMs: backoffMs })}\n`);
        await new Promise((resolve) => setTimeout(resolve, backoffMs));
        if (stopping) return;
      }
    });
}
