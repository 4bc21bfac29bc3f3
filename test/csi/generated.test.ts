/** The vendored proto is unmodified and the committed generated types match it. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { packageRoot } from '../../src/csi/package-root.js';
import { csiProto } from '../../src/csi/proto.js';

function run(script: string, ...args: string[]): void {
  const res = spawnSync(script, args, { cwd: packageRoot(), encoding: 'utf8' });
  assert.equal(res.status, 0, `${script} ${args.join(' ')} failed:\n${res.stdout}\n${res.stderr}`);
}

describe('proto and generated code', () => {
  it('success case - proto/csi.proto and proto/LICENSE match the recorded sha256 (npm run verify:proto)', () => {
    run('scripts/verify-proto.sh');
  });

  it('success case - src/csi/generated is what proto-loader-gen-types makes today (npm run verify:generated)', () => {
    run('scripts/generate-csi-types.sh', '--check');
  });

  it('success case - the proto loads with all five services', () => {
    const proto = csiProto();
    for (const name of ['Identity', 'Controller', 'GroupController', 'Node', 'SnapshotMetadata'] as const) {
      assert.equal(typeof proto[name].service, 'object', name);
    }
    assert.equal(proto.SnapshotMetadata.service.GetMetadataDelta.responseStream, true);
  });
});
