/**
 * A node plugin with its agent (`flashcsi plugin --agent`) started while the API server cannot be
 * reached: the CSI services work at once (they never need the API server), the agent keeps
 * retrying its first list with backoff, and SIGTERM still drains the plugin and exits 0.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { pollUntil } from '../../src/host/poll.js';
import { call, shortTempDir, startPlugin, sweep } from '../csi/plugin-process.js';

test('plugin --agent with the API server unreachable: serves CSI, retries with backoff, drains on SIGTERM', async () => {
  const dir = await shortTempDir();
  try {
    // Port 9 (discard) on loopback: nothing listens, every request is refused at once.
    const kubeconfig = join(dir, 'kubeconfig');
    writeFileSync(
      kubeconfig,
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [{ name: 'c', cluster: { server: 'https://127.0.0.1:9', 'insecure-skip-tls-verify': true } }],
        users: [{ name: 'u', user: { token: 'not-a-secret' } }],
        contexts: [{ name: 'x', context: { cluster: 'c', user: 'u' } }],
        'current-context': 'x',
      }),
      { mode: 0o600 },
    );
    const p = await startPlugin(dir, { extraArgs: ['--agent', '--kubeconfig', kubeconfig] });
    await p.waitReady();
    const info = await call<{ node_id: string }>(p.c.node, 'NodeGetInfo', {});
    assert.equal(info.node_id, 'test-node');
    const retries = (): number[] =>
      readFileSync(p.logFile, 'utf8')
        .split('\n')
        .filter((l) => l.includes('first list failed; retrying'))
        .map((l) => (JSON.parse(l) as { retryInMs: number }).retryInMs);
    // Wait until the agent has retried a few times (its log is the observable condition).
    await pollUntil(() => retries().length >= 4, 30_000, 'the agent to retry its first list', {
      intervalMs: 100,
      detail: () => readFileSync(p.logFile, 'utf8').slice(-3000),
    });
    const delays = retries();
    assert.ok(Math.max(...delays) > Math.min(...delays), `the retries back off: ${JSON.stringify(delays)}`);
    assert.equal(await p.stop(), 0, 'SIGTERM drains and exits 0 although the agent never started');
    assert.match(readFileSync(p.logFile, 'utf8'), /plugin: draining/);
  } finally {
    await sweep(dir);
  }
});
