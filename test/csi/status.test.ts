import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { status } from '@grpc/grpc-js';
import { EngineError, ErrorCode } from '../../src/engine/errors.js';
import { CsiError, CsiErrorCode, OperationInFlightError } from '../../src/volumes/errors.js';
import { STATUS_BY_CODE, statusName, toGrpcStatus } from '../../src/csi/status.js';
import { HostError } from '../../src/host/errors.js';
import { NbdClientError } from '../../src/nbd/client.js';
import { ControlError } from '../../src/nbd/control.js';

describe('toGrpcStatus', () => {
  const engineCases: Array<[keyof typeof ErrorCode, status]> = [
    ['VolumeNotFound', status.NOT_FOUND],
    ['AlreadyExists', status.ALREADY_EXISTS],
    ['CheckpointNotFound', status.NOT_FOUND],
    ['InvalidArgument', status.INVALID_ARGUMENT],
    ['OutOfRange', status.OUT_OF_RANGE],
    ['Locked', status.ABORTED],
    ['FailedPrecondition', status.FAILED_PRECONDITION],
    ['ReadOnly', status.FAILED_PRECONDITION],
    ['NoSpace', status.RESOURCE_EXHAUSTED],
    ['Io', status.INTERNAL],
    ['Corrupt', status.INTERNAL],
    ['Closed', status.UNAVAILABLE],
  ];
  it('success case - the table covers every engine code', () => {
    assert.deepEqual(engineCases.map(([k]) => k).sort(), Object.keys(ErrorCode).sort());
  });
  for (const [key, code] of engineCases) {
    it(`success case - EngineError ${ErrorCode[key]} → ${status[code]}`, () => {
      assert.deepEqual(toGrpcStatus(new EngineError(ErrorCode[key], 'msg')), { code, details: 'msg' });
    });
  }

  for (const [key, value] of Object.entries(CsiErrorCode)) {
    it(`success case - CsiError ${value} → the gRPC status of the same name`, () => {
      const st = toGrpcStatus(new CsiError(value, `m-${key}`));
      assert.equal(statusName(st.code), value);
      assert.equal(st.details, `m-${key}`);
    });
  }

  for (const [code, expected] of [
    ['NO_DEVICE', status.RESOURCE_EXHAUSTED],
    ['BUSY', status.FAILED_PRECONDITION],
    ['TIMEOUT', status.DEADLINE_EXCEEDED],
    ['COMMAND_FAILED', status.INTERNAL],
    ['INVALID_ARGUMENT', status.INVALID_ARGUMENT],
    ['FAILED_PRECONDITION', status.FAILED_PRECONDITION],
    ['NETLINK_FAILED', status.INTERNAL],
  ] as const) {
    it(`success case - HostError ${code} → ${status[expected]}`, () => {
      assert.equal(toGrpcStatus(new HostError(code, 'm')).code, expected);
    });
  }

  for (const [code, expected] of [
    ['UNREACHABLE', status.UNAVAILABLE],
    ['PROTOCOL_ERROR', status.INTERNAL],
    ['REFUSED', status.INTERNAL],
    ['TIMEOUT', status.DEADLINE_EXCEEDED],
  ] as const) {
    it(`success case - NbdClientError ${code} (the kernel path's handshake) → ${status[expected]}`, () => {
      assert.equal(toGrpcStatus(new NbdClientError(code, 'm')).code, expected);
    });
  }

  it('success case - a ControlError from a served volume maps by its engine code', () => {
    assert.equal(toGrpcStatus(new ControlError('CHECKPOINT_NOT_FOUND', 'gone')).code, status.NOT_FOUND);
    assert.equal(toGrpcStatus(new ControlError('UNAVAILABLE', 'server gone')).code, status.UNAVAILABLE);
  });

  it('success case - OperationInFlightError → ABORTED', () => {
    assert.equal(toGrpcStatus(new OperationInFlightError('vol')).code, status.ABORTED);
  });

  it('success case - a numeric gRPC status (nested client call) passes through', () => {
    assert.deepEqual(toGrpcStatus(Object.assign(new Error('x'), { code: status.NOT_FOUND, details: 'nested' })), { code: status.NOT_FOUND, details: 'nested' });
  });

  it('success case - an AbortError becomes CANCELLED', () => {
    const err = Object.assign(new Error('cancelled'), { name: 'AbortError' });
    assert.equal(toGrpcStatus(err).code, status.CANCELLED);
  });

  const internal: Array<[string, unknown]> = [
    ['a plain Error', new Error('boom')],
    ['a Node system error', Object.assign(new Error('EIO: i/o error'), { code: 'EIO' })],
    ['an unknown string code', Object.assign(new Error('odd'), { code: 'SOMETHING_ELSE' })],
    ['an out-of-range numeric code', Object.assign(new Error('odd'), { code: 99 })],
    ['a string', 'boom'],
    ['undefined', undefined],
    ['null', null],
    ['a circular object', (() => { const o: Record<string, unknown> = {}; o['self'] = o; return o; })()],
  ];
  for (const [what, value] of internal) {
    it(`failure case - ${what} becomes INTERNAL`, () => {
      const st = toGrpcStatus(value);
      assert.equal(st.code, status.INTERNAL);
      assert.match(st.details, /^internal error/);
    });
  }

  it('success case - every table entry is a gRPC status other than OK', () => {
    for (const code of Object.values(STATUS_BY_CODE)) assert.ok(code > status.OK && code <= status.UNAUTHENTICATED);
  });
});
