/**
 * A client that is not grpc-js (grpcurl, Go) talks to the server using the vendored proto. grpcurl
 * is one of the pinned Go tools (scripts/go-tools.sh builds it into the flashcsi cache, or set
 * FLASHCSI_GRPCURL); without it the test fails and says how to build it, as the README test does.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { createIdentityService, ReadinessGate } from '../../src/csi/identity.js';
import { packageRoot, packageVersion } from '../../src/csi/package-root.js';
import { startCsiServer } from '../../src/csi/server.js';
import { captureLogger, tempDir } from './helpers.js';

const cache = process.env['FLASHCSI_CACHE'] ?? join(homedir(), '.cache', 'flashcsi');
const grpcurl = process.env['FLASHCSI_GRPCURL'] ?? join(cache, 'bin', 'grpcurl');

describe('grpcurl against the server', () => {
  it('success case - GetPluginInfo and Probe over the unix socket', async () => {
    assert.ok(existsSync(grpcurl), `grpcurl is not built at ${grpcurl}; build it with: scripts/go-tools.sh grpcurl`);
    const tmp = await tempDir();
    const readiness = new ReadinessGate();
    readiness.markReady();
    const { logger } = captureLogger();
    // A short drain: grpc-js can miss the close of a session whose peer process already exited
    // (grpc-node#1458), so tryShutdown may only finish at the deadline.
    const server = await startCsiServer({
      endpoint: `unix://${join(tmp.dir, 'csi.sock')}`,
      mode: 'node',
      logger,
      drainTimeoutMs: 500,
      services: { identity: createIdentityService({ readiness }) },
    });
    const call = async (method: string): Promise<Record<string, unknown>> => {
      const { stdout } = await promisify(execFile)(
        grpcurl,
        ['-plaintext', '-unix', '-import-path', join(packageRoot(), 'proto'), '-proto', 'csi.proto', '-d', '{}', server.socketPath, method],
        { timeout: 30_000 },
      );
      return JSON.parse(stdout) as Record<string, unknown>;
    };
    try {
      assert.deepEqual(await call('csi.v1.Identity/GetPluginInfo'), { name: 'flashcsi.io', vendorVersion: packageVersion() });
      assert.deepEqual(await call('csi.v1.Identity/Probe'), { ready: true });
    } finally {
      await server.stop();
      await tmp.cleanup();
    }
  });
});
