/**
 * The one error base (src/errors.ts): every layer's error class is a FlashcsiError with its class's
 * name, a code from its union and the cause it wraps; the CLI and NBD maps read the code.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { CliError, exitStatusOf } from '../../cmd/errors.js';
import { EndpointError } from '../../src/csi/server.js';
import { EngineError, ErrorCode } from '../../src/engine/errors.js';
import { FlashcsiError } from '../../src/errors.js';
import { CommandError, HostError } from '../../src/host/errors.js';
import { KubeError } from '../../src/k8s/kube.js';
import { PluginError } from '../../src/k8s/kubectl/errors.js';
import { NbdClientError } from '../../src/nbd/client.js';
import { ControlError, controlCall } from '../../src/nbd/control.js';
import { ERRNO_BY_CODE, toNbdErrno } from '../../src/nbd/errno.js';
import { ExportError } from '../../src/nbd/export.js';
import { Errno } from '../../src/nbd/protocol.js';
import { NbdServerError } from '../../src/nbd/server.js';
import { CsiError, OperationInFlightError } from '../../src/volumes/errors.js';

describe('FlashcsiError', () => {
  const cause = new Error('underneath');
  const cases: Array<[FlashcsiError, string, string]> = [
    [new EngineError('LOCKED', 'm', { cause }), 'EngineError', 'LOCKED'],
    [new ExportError('NOT_SUPPORTED', 'm', { cause }), 'ExportError', 'NOT_SUPPORTED'],
    [new NbdServerError('ADDRESS_IN_USE', 'm', { cause }), 'NbdServerError', 'ADDRESS_IN_USE'],
    [new ControlError('UNAVAILABLE', 'm', { cause }), 'ControlError', 'UNAVAILABLE'],
    [new NbdClientError('REFUSED', 'm', { cause }), 'NbdClientError', 'REFUSED'],
    [new HostError('BUSY', 'm', { cause }), 'HostError', 'BUSY'],
    [new CommandError('m', 2, 'stderr', { cause }), 'CommandError', 'COMMAND_FAILED'],
    [new CsiError('NOT_FOUND', 'm', { cause }), 'CsiError', 'NOT_FOUND'],
    [new EndpointError('INVALID_ENDPOINT', 'm', { cause }), 'EndpointError', 'INVALID_ENDPOINT'],
    [new KubeError(409, 'm', { cause }), 'KubeError', 'CONFLICT'],
    [new PluginError('TIMEOUT', 'm', { cause }), 'PluginError', 'TIMEOUT'],
  ];
  for (const [err, name, code] of cases) {
    it(`${name}: name, code, message and cause`, () => {
      assert.ok(err instanceof FlashcsiError);
      assert.equal(err.name, name);
      assert.equal(err.code, code);
      assert.equal(err.message, 'm');
      assert.equal(err.cause, cause);
    });
  }

  it('a subclass of a subclass names itself', () => {
    const err = new OperationInFlightError('vol-1');
    assert.equal(err.name, 'OperationInFlightError');
    assert.equal(err.code, 'ABORTED');
    assert.ok(err instanceof CsiError);
  });
});

describe('error maps read the code', () => {
  it('every engine code has an NBD errno of its own in the table', () => {
    for (const code of Object.values(ErrorCode)) assert.ok(Object.hasOwn(ERRNO_BY_CODE, code), code);
    assert.equal(toNbdErrno(new EngineError('NO_SPACE', 'full')), Errno.ENOSPC);
    assert.equal(toNbdErrno(Object.assign(new Error('x'), { code: 'EROFS' })), Errno.EPERM);
    assert.equal(toNbdErrno(new Error('no code')), Errno.EIO);
  });

  it('the CLI exit status comes from the code (sysexits.h), 1 without one', () => {
    assert.equal(exitStatusOf(new CliError('--size is required')), 64);
    assert.equal(exitStatusOf(new EngineError('VOLUME_NOT_FOUND', 'm')), 66);
    assert.equal(exitStatusOf(new EngineError('LOCKED', 'm')), 75);
    assert.equal(exitStatusOf(new HostError('COMMAND_FAILED', 'm')), 71);
    assert.equal(exitStatusOf(new HostError('NETLINK_FAILED', 'm')), 71);
    assert.equal(exitStatusOf(new NbdClientError('PROTOCOL_ERROR', 'm')), 76);
    assert.equal(exitStatusOf(new Error('plain')), 1);
  });

  it('a control answer with a code this client does not know becomes INTERNAL, naming it', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'flashcsi-ctl-'));
    const sock = path.join(dir, 'ctl.sock');
    const server = net.createServer((c) => c.once('data', () => c.end('{"ok":false,"code":"FROM_THE_FUTURE","message":"x"}\n')));
    await new Promise<void>((resolve) => server.listen(sock, resolve));
    try {
      await assert.rejects(controlCall(sock, { op: 'info' }), (e: unknown) => e instanceof ControlError && e.code === 'INTERNAL' && /FROM_THE_FUTURE/.test(e.message));
    } finally {
      await new Promise((resolve) => server.close(resolve));
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
