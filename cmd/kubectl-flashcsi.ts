#!/usr/bin/env node
/**
 * kubectl-flashcsi: the kubectl plugin (`kubectl flashcsi …` once it is on PATH). It writes the same
 * VolumeRollback and VolumeTransaction objects `kubectl apply` would; see src/k8s/kubectl/. Errors
 * print as one line on stderr (`error: …`) with exit status 1.
 */
import { createRequire } from 'node:module';
import { CommanderError } from 'commander';
import { describeError } from '../src/k8s/kubectl/errors.js';
import { buildProgram } from '../src/k8s/kubectl/program.js';

const require = createRequire(import.meta.url);
const { version } = require('../../package.json') as { version: string };

const program = buildProgram({
  version,
  io: {
    out: (s) => process.stdout.write(s),
    err: (s) => process.stderr.write(s),
  },
});

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    // Commander has printed its one-line message (or the help/version text) already.
    process.exitCode = err.exitCode;
  } else {
    process.stderr.write(`error: ${describeError(err)}\n`);
    process.exitCode = 1;
  }
}
