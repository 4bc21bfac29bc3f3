/**
 * Each staged volume runs its own `flashcsi serve`, from the same binary as the plugin and the
 * coordinator. Loading gRPC and the Kubernetes client there would cost every volume's process tens
 * of MiB (measured: 134 MiB RSS per idle serve with them, 62 MiB without), so the CLI loads them
 * only inside the commands that need them. The module graph of the binary at start-up, and of a
 * real `flashcsi serve`, must not include them.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as readline from 'node:readline';
import { tempDir } from '../engine/helpers.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const BIN = path.join(HERE, '../../cmd/flashcsi.js');
const TRACE = path.join(HERE, 'import-trace.js');
const HEAVY = ['@kubernetes/client-node', '@grpc/grpc-js', '@grpc/proto-loader', 'protobufjs'];

function heavyIn(traceFile: string): string[] {
  const urls = readFileSync(traceFile, 'utf8').split('\n');
  return HEAVY.filter((pkg) => urls.some((u) => u.includes(`/node_modules/${pkg}/`)));
}

test('the binary loads neither gRPC nor the Kubernetes client at start-up', () => {
  const t = tempDir('imports');
  try {
    const trace = path.join(t.dir, 'trace');
    const r = spawnSync(process.execPath, ['--import', TRACE, BIN, '--help'], { encoding: 'utf8', env: { ...process.env, FLASHCSI_IMPORT_TRACE: trace } });
    assert.equal(r.status, 0, r.stderr);
    assert.match(readFileSync(trace, 'utf8'), /commander/, 'the trace records modules (so an empty list means something)');
    assert.deepEqual(heavyIn(trace), [], 'packages loaded by `flashcsi --help`');
  } finally {
    t.cleanup();
  }
});

test('a running flashcsi serve has not loaded gRPC or the Kubernetes client', async () => {
  const t = tempDir('imports-serve');
  try {
    const trace = path.join(t.dir, 'trace');
    const run = path.join(t.dir, 'run');
    mkdirSync(run, { mode: 0o700 });
    assert.equal(spawnSync(process.execPath, [BIN, 'volume', 'create', path.join(t.dir, 'v'), '--size', '16M']).status, 0);
    const serve = spawn(process.execPath, ['--import', TRACE, BIN, 'serve', path.join(t.dir, 'v'), '--socket', path.join(run, 's.sock')], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, FLASHCSI_IMPORT_TRACE: trace },
    });
    const exited = new Promise((resolve) => serve.on('exit', resolve));
    try {
      // Serving: its ready line is out, so every module it loads to serve is loaded.
      for await (const line of readline.createInterface({ input: serve.stdout })) if (line.includes('"ready":true')) break;
      assert.match(readFileSync(trace, 'utf8'), /src\/nbd\/serve\.js/, 'the trace records the serve modules');
      assert.deepEqual(heavyIn(trace), [], 'packages loaded by a serving `flashcsi serve`');
    } finally {
      serve.kill('SIGTERM');
      await exited;
    }
  } finally {
    t.cleanup();
  }
});
