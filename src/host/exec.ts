/** Runs one host command with a deadline; a failure is a CommandError naming the command and its stderr. */
import { execFile } from 'node:child_process';
import { CommandError } from './errors.js';

const DEFAULT_TIMEOUT_MS = 120_000;

/** `word` as one POSIX shell word, quoted only when it must be (for a command line shown to an operator or given to sh). */
export function shellQuote(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

export interface CommandOutput {
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `cmd args…`; resolves its output, rejects CommandError (COMMAND_FAILED) with its stderr. */
export function run(cmd: string, args: readonly string[], timeoutMs = DEFAULT_TIMEOUT_MS): Promise<CommandOutput> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, encoding: 'utf8', maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err === null) resolve({ stdout, stderr });
      else {
        const exitCode = typeof err.code === 'number' ? err.code : undefined;
        reject(new CommandError(`${cmd} ${args.join(' ')} failed: ${stderr.trim() || err.message}`, exitCode, stderr, { cause: err }));
      }
    });
  });
}
