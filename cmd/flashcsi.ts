#!/usr/bin/env node
/**
 * The flashcsi binary: volume and checkpoint tools, the NBD server of a volume, and the CSI plugin.
 * Errors print as one line on stderr with a non-zero exit status chosen by their code (errors.ts).
 */
import { createRequire } from 'node:module';
import { Command, CommanderError } from 'commander';
import { exitStatusOf } from './errors.js';
import { registerPluginCommand } from './plugin-cli.js';
import { registerCoordinatorCommand } from './coordinator-cli.js';
import { registerServeCommand } from './serve-cli.js';
import { registerSuperviseCommand } from './supervise-cli.js';
import { registerVolumeCommands } from './volume-cli.js';

const require = createRequire(import.meta.url);
const { version } = require('../../package.json') as { version: string };

const program = new Command('flashcsi')
  .description('flashcsi: copy-on-write checkpoints, in-place rollback and transactions for block volumes')
  .version(version)
  .showHelpAfterError(false)
  .exitOverride();

registerVolumeCommands(program);
registerServeCommand(program);
registerCoordinatorCommand(program);
registerPluginCommand(program);
registerSuperviseCommand(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    // Commander has printed its message (or the help/version text) already.
    process.exitCode = err.exitCode;
  } else {
    process.stderr.write(`flashcsi: error: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = exitStatusOf(err);
  }
}
