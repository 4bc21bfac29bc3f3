/**
 * The async adapter through the real server: every way a handler can fail becomes a proper status
 * (never a hang), calls are logged once with method/duration/code, Probe at debug, and secrets never
 * reach the log.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { status } from '@grpc/grpc-js';
import { EngineError, ErrorCode } from '../../src/engine/errors.js';
import { CsiError, CsiErrorCode, OperationInFlightError } from '../../src/volumes/errors.js';
import { createIdentityService, ReadinessGate } from '../../src/csi/identity.js';
import { startCsiServer, type RunningServer } from '../../src/csi/server.js';
import type { AsyncService } from '../../src/csi/unary.js';
import type { ControllerHandlers } from '../../src/csi/generated/csi/v1/Controller.js';
import type { CreateVolumeRequest } from '../../src/csi/generated/csi/v1/CreateVolumeRequest.js';
import type { CreateVolumeResponse__Output } from '../../src/csi/generated/csi/v1/CreateVolumeResponse.js';
import { CALL_OPTIONS, captureLogger, clients, rpc, rpcError, tempDir } from './helpers.js';

/** The error each volume name makes the fake CreateVolume throw (or a value it rejects with). */
const FAILURES: Record<string, () => unknown> = {
  'sync-throw': () => new Error('thrown synchronously'),
  'csi-invalid': () => new CsiError(CsiErrorCode.InvalidArgument, 'name is bad'),
  'csi-unavailable': () => new CsiError(CsiErrorCode.Unavailable, 'recovering'),
  'in-flight': () => new OperationInFlightError('vol-1'),
  'engine-no-space': () => new EngineError(ErrorCode.NoSpace, 'disk full'),
  'engine-not-found': () => new EngineError(ErrorCode.VolumeNotFound, 'no volume vol-9'),
  'engine-locked': () => new EngineError(ErrorCode.Locked, 'locked by pid 42'),
  'engine-corrupt': () => new EngineError(ErrorCode.Corrupt, 'bad magic'),
  'plain-error': () => new TypeError('undefined is not a function'),
  'string-value': () => 'a bare string',
  'undefined-value': () => undefined,
};

const SECRET = 'hunter2-very-secret-value';
const SECRET_REF = 'provisioner-secret-ref-name';

describe('unary adapter through the real server', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let server: RunningServer;
  let c: ReturnType<typeof clients>;
  const log = captureLogger();

  const controller: AsyncService<ControllerHandlers> = {
    CreateVolume: (req) => {
      if (req.name === 'sync-throw') throw new Error('thrown synchronously'); // not even a promise
      const failure = FAILURES[req.name];
      if (failure !== undefined) return Promise.reject(failure());
      return Promise.resolve({ volume: { volume_id: req.name, capacity_bytes: req.capacity_range?.required_bytes ?? '0' } });
    },
  };

  before(async () => {
    tmp = await tempDir();
    server = await startCsiServer({
      endpoint: `unix://${join(tmp.dir, 'csi.sock')}`,
      mode: 'controller',
      logger: log.logger,
      services: { identity: createIdentityService({ readiness: new ReadinessGate() }), controller },
    });
    c = clients(server.socketPath);
  });

  after(async () => {
    c.close();
    await server.stop();
    await tmp.cleanup();
  });

  const createVolume = (req: CreateVolumeRequest) => rpc<CreateVolumeResponse__Output>((cb) => c.controller.CreateVolume(req, CALL_OPTIONS(), cb));

  const expected: Array<[string, status, RegExp]> = [
    ['sync-throw', status.INTERNAL, /thrown synchronously/],
    ['csi-invalid', status.INVALID_ARGUMENT, /^name is bad$/],
    ['csi-unavailable', status.UNAVAILABLE, /recovering/],
    ['in-flight', status.ABORTED, /already in progress/],
    ['engine-no-space', status.RESOURCE_EXHAUSTED, /disk full/],
    ['engine-not-found', status.NOT_FOUND, /no volume vol-9/],
    ['engine-locked', status.ABORTED, /locked by pid 42/],
    ['engine-corrupt', status.INTERNAL, /bad magic/],
    ['plain-error', status.INTERNAL, /undefined is not a function/],
    ['string-value', status.INTERNAL, /a bare string/],
    ['undefined-value', status.INTERNAL, /internal error/],
  ];
  for (const [name, code, details] of expected) {
    it(`failure case - a handler that fails with ${name} answers ${status[code]}`, async () => {
      const err = await rpcError(createVolume({ name }));
      assert.equal(err.code, code, `${name}: got ${status[err.code]} ${err.details}`);
      assert.match(err.details, details);
    });
  }

  it('success case - int64 fields travel as exact decimal strings', async () => {
    const res = await createVolume({ name: 'big', capacity_range: { required_bytes: '9223372036854775807' } });
    assert.equal(res.volume?.capacity_bytes, '9223372036854775807');
  });

  it('success case - each call is logged once with method, duration and code', async () => {
    await createVolume({ name: 'logged-ok' });
    await rpcError(createVolume({ name: 'engine-no-space' }));
    const records = log.records().filter((r) => r['method'] === '/csi.v1.Controller/CreateVolume');
    const ok = records.find((r) => (r['req'] as { name?: string } | undefined)?.name === 'logged-ok');
    assert.ok(ok);
    assert.equal(ok['code'], 'OK');
    assert.equal(typeof ok['durationMs'], 'number');
    assert.equal(ok['component'], 'csi');
    const failed = records.find((r) => (r['req'] as { name?: string } | undefined)?.name === 'engine-no-space');
    assert.ok(failed);
    assert.equal(failed['code'], 'RESOURCE_EXHAUSTED');
    assert.equal(failed['level'], 40); // warn: the client's volume does not fit
    const internal = records.find((r) => (r['req'] as { name?: string } | undefined)?.name === 'plain-error');
    assert.ok(internal);
    assert.equal(internal['level'], 50); // error
  });

  it('success case - Probe is logged at debug level', async () => {
    await rpc((cb) => c.identity.Probe({}, CALL_OPTIONS(), cb));
    const probes = log.records().filter((r) => r['method'] === '/csi.v1.Identity/Probe');
    assert.ok(probes.length > 0);
    for (const p of probes) assert.equal(p['level'], 20);
  });

  it('success case - secrets never appear in the logs', async () => {
    const secretParams = {
      'csi.storage.k8s.io/provisioner-secret-name': SECRET_REF,
      'csi.storage.k8s.io/provisioner-secret-namespace': SECRET_REF,
      grainSize: '65536',
    };
    await createVolume({ name: 'with-secrets', secrets: { password: SECRET, token: SECRET }, parameters: secretParams });
    await rpcError(createVolume({ name: 'csi-invalid', secrets: { password: SECRET }, parameters: secretParams }));
    const all = log.lines.join('');
    assert.ok(all.includes('with-secrets'), 'the request was logged');
    assert.ok(all.includes('grainSize'), 'ordinary parameters are kept');
    assert.ok(!all.includes(SECRET), 'a secret value leaked into the log');
    assert.ok(!all.includes(SECRET_REF), 'a secret reference leaked into the log');
    assert.ok(all.includes('[REDACTED]'));
  });
});
