/**
 * The hidden `.attach` export the node plugin attaches nbdfuse to (src/nbd/volume-export.ts): a
 * fixed 1 PiB advertised size, the live volume inside its real size, errors past it, never listed.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { join } from 'node:path';
import { Volume } from '../../src/engine/index.js';
import { ATTACH_EXPORT_NAME, ATTACH_EXPORT_SIZE, VolumeExportProvider } from '../../src/nbd/volume-export.js';
import { tempDir } from './helpers.js';

describe('the .attach export', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let volume: Volume;
  before(async () => {
    tmp = await tempDir();
    volume = await Volume.create(join(tmp.dir, 'v'), { size: 1 << 20 });
  });
  after(async () => {
    await volume.close();
    await tmp.cleanup();
  });

  it('success case - advertises 1 PiB, serves the live volume, is never listed', async () => {
    const provider = new VolumeExportProvider(volume);
    const exp = provider.get(ATTACH_EXPORT_NAME);
    assert.ok(exp !== undefined);
    assert.equal(exp.size(), ATTACH_EXPORT_SIZE);
    assert.equal(ATTACH_EXPORT_SIZE, 2 ** 50);
    assert.ok(![...provider.list()].some((e) => e.name === ATTACH_EXPORT_NAME));
    await exp.write(4096, Buffer.alloc(4096, 7), false);
    assert.deepEqual(await volume.read(4096, 4096), Buffer.alloc(4096, 7));
    assert.deepEqual(await exp.read(4096, 4096, Buffer.alloc(4096)), Buffer.alloc(4096, 7));
  });

  it('failure case - I/O past the volume\'s real size fails with OUT_OF_RANGE; block status there is a hole', async () => {
    const exp = new VolumeExportProvider(volume).get(ATTACH_EXPORT_NAME);
    assert.ok(exp !== undefined);
    const end = volume.size;
    await assert.rejects(exp.read(end - 512, 1024, Buffer.alloc(1024)), { code: 'OUT_OF_RANGE' });
    await assert.rejects(exp.write(end, Buffer.alloc(512), false), { code: 'OUT_OF_RANGE' });
    await assert.rejects(exp.writeZeroes(end, 512, { fua: false, noHole: false, fastZero: false }), { code: 'OUT_OF_RANGE' });
    await assert.rejects(exp.trim(end + 4096, 512, false), { code: 'OUT_OF_RANGE' });
    assert.deepEqual(await exp.blockStatus(end, 8192), [{ length: 8192, hole: true, zero: true }]);
    await volume.expand(2 << 20);
    await exp.write(end, Buffer.alloc(512, 1), false); // grown: the same offset is inside now
  });
});
