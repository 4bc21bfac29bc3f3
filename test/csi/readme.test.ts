/**
 * The README's "Drive it with grpcurl" walkthrough, run verbatim: its code blocks are extracted and
 * run by bash, in a directory laid out like the repository root (`proto/`, `./.local/`), against a
 * real `flashcsi plugin` started with the flags `npm run start:plugin` (scripts/start-plugin.sh) uses. The restored
 * volume must show the pre-snapshot file, and the walkthrough's clean-up must leave nothing behind.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, promises as fsp, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { packageRoot } from '../../src/csi/package-root.js';
import { assertNothingLeft, call, shortTempDir, startPlugin, sweep } from './plugin-process.js';

const cache = process.env['FLASHCSI_CACHE'] ?? join(homedir(), '.cache', 'flashcsi');
const GRPCURL = join(cache, 'bin', 'grpcurl');

/** The shell commands of the README section, as a reader sees them rendered. */
function walkthrough(): string {
  const readme = readFileSync(join(packageRoot(), 'README.md'), 'utf8');
  const start = readme.indexOf('## Drive it with grpcurl');
  const end = readme.indexOf('\n## ', start + 1);
  assert.ok(start >= 0 && end > start, 'README has the grpcurl section');
  const lines: string[] = [];
  for (const line of readme.slice(start, end).split('\n')) {
    if (line.startsWith('       ')) lines.push(line.slice(7)); // code inside a numbered step
    else if (/^ {4}\S/.test(line)) lines.push(line.slice(4)); // top-level code block
  }
  return lines.join('\n').replaceAll('$HOME/.cache/flashcsi/bin/grpcurl', GRPCURL);
}

describe('README: driving the plugin with grpcurl', () => {
  let dir: string | undefined;
  after(async () => {
    if (dir !== undefined) await sweep(dir);
  });

  it('create a volume, snapshot it, restore it — the exact commands work', { timeout: 120_000 }, async () => {
    assert.ok(existsSync(GRPCURL), `grpcurl is not built at ${GRPCURL}; build it with: scripts/go-tools.sh grpcurl`);
    const root = await shortTempDir();
    dir = root;
    await fsp.symlink(join(packageRoot(), 'proto'), join(root, 'proto'));
    const local = join(root, '.local');
    await fsp.mkdir(local, { mode: 0o700 });
    // The flags of scripts/start-plugin.sh (npm run start:plugin), which the section tells the reader to run.
    assert.match(readFileSync(join(packageRoot(), 'README.md'), 'utf8'), /## Drive it with grpcurl[^#]*`npm run start:plugin`/);
    assert.match(readFileSync(join(packageRoot(), 'scripts', 'start-plugin.sh'), 'utf8'), /exec node dist\/cmd\/flashcsi.js plugin --mode all/);
    const p = await startPlugin(root, {
      socket: `${local}/csi.sock`,
      metadataSocket: `${local}/metadata.sock`,
      stateDir: `${local}/state`,
      nodeId: 'readme',
      drainTimeoutMs: null,
      logFile: join(root, 'plugin.log'),
    });
    try {
      await p.waitReady(30_000);
      const { stdout } = await promisify(execFile)('bash', ['-e', '-c', walkthrough()], { cwd: root, timeout: 100_000, maxBuffer: 16 << 20 });
      assert.match(stdout, /changed after the snapshot\nhello from flashcsi\n/, 'the restored volume holds the pre-snapshot file');
      assert.match(stdout, /"snapshotId": "demo@demo-snap1"/);
      // The walkthrough cleaned up after itself.
      const vols = await call<{ entries: unknown[] }>(p.c.controller, 'ListVolumes', {});
      assert.deepEqual(vols.entries, []);
    } finally {
      await p.stop();
    }
    await assertNothingLeft(root);
  });
});
