/**
 * `flashcsi serve DIR --socket PATH [--fuse-workers N]`: the NBD server of one volume (and its FUSE
 * file, when the plugin asks for it, served by N worker threads), until SIGTERM or SIGINT.
 */
import type { Command } from 'commander';
import { createLogger } from '../src/log/logger.js';
import { CliError } from './errors.js';
import { DEFAULT_WORKERS, MAX_WORKERS } from '../src/fuse/export.js';
import { serveVolume } from '../src/nbd/serve.js';
import { parseIntegerIn } from './units.js';

function parseListen(text: string): { host: string; port: number } {
  const m = /^(.+):(\d{1,5})$/.exec(text);
  const port = Number(m?.[2]);
  if (!m || port > 65535) throw new CliError(`--listen "${text}" must be HOST:PORT`);
  return { host: (m[1] as string).replace(/^\[(.*)\]$/, '$1'), port };
}

export function registerServeCommand(program: Command): void {
  program
    .command('serve')
    .description('serve a volume over NBD: the volume as export "", each checkpoint read-only under its name')
    .argument('<dir>', 'volume directory')
    .requiredOption('--socket <path>', 'unix socket to listen on (created 0600; its directory must not be group/world-writable)')
    .option('--listen <host:port>', 'also listen on TCP (off unless asked for)')
    .option('--log-level <level>', 'log level', 'info')
    .option('--fuse-workers <n>', `worker threads serving the volume's FUSE file, 1 to ${MAX_WORKERS} (about 8 MiB each)`, String(DEFAULT_WORKERS))
    .action(async (dir: string, o: { socket: string; listen?: string; logLevel: string; fuseWorkers: string }) => {
      const fuseWorkers = parseIntegerIn(o.fuseWorkers, 1, MAX_WORKERS, '--fuse-workers');
      const logger = createLogger({ level: o.logLevel as 'info', name: 'flashcsi-serve' });
      const running = await serveVolume({ dir, socket: o.socket, logger, fuseWorkers, ...(o.listen ? { listen: parseListen(o.listen) } : {}) });
      await new Promise<void>((resolve) => {
        const stop = (signal: string): void => {
          logger.info({ signal }, 'serve: stopping');
          running.stop().then(resolve, (err: unknown) => {
            logger.error({ err: err instanceof Error ? err.message : String(err) }, 'serve: stop failed');
            process.exitCode = 1;
            resolve();
          });
        };
        process.once('SIGTERM', () => stop('SIGTERM'));
        process.once('SIGINT', () => stop('SIGINT'));
        // Readiness for whoever spawned us: one line on stdout once both sockets accept, and only
        // after the handlers above are in place, so a SIGTERM sent on reading it stops us cleanly.
        process.stdout.write(`${JSON.stringify({ ready: true, ...running.info })}\n`);
      });
    });
}
