/**
 * Fuzzing CSI request validation (fast-check): every validate…Request in src/csi/validation.ts is
 * fed requests exactly as the gRPC server hands them to a handler — built from arbitrary values for
 * every field of the request message (found by reflection on proto/csi.proto, nested messages,
 * oneofs, maps and int64s included), encoded, and decoded by the method's own deserializer with
 * the plugin's loader options; and decoded from arbitrary bytes. Each call must either return the
 * parsed values or throw a CsiError with a code the CSI spec allows for a bad request
 * (INVALID_ARGUMENT, NOT_FOUND, OUT_OF_RANGE) and a message — never any other exception.
 * FLASHCSI_CSI_FUZZ_RUNS sets the cases per method and kind (default 300).
 */
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import path from 'node:path';
import { describe, it } from 'node:test';
import { loadSync, type MethodDefinition } from '@grpc/proto-loader';
import fc from 'fast-check';
import type * as Protobuf from 'protobufjs';
import { CsiError } from '../../src/volumes/errors.js';
import { protoDir } from '../../src/csi/package-root.js';
import { LOADER_OPTIONS } from '../../src/csi/proto.js';
import * as validation from '../../src/csi/validation.js';

const require = createRequire(import.meta.url);
const protobuf = require('protobufjs') as typeof Protobuf;

const RUNS = Number(process.env.FLASHCSI_CSI_FUZZ_RUNS ?? 300);
const ALLOWED = new Set(['INVALID_ARGUMENT', 'NOT_FOUND', 'OUT_OF_RANGE']);

/** RPC → its validator (every validate…Request the module exports). */
const VALIDATORS: Record<string, (req: never) => unknown> = {
  'csi.v1.Controller/CreateVolume': validation.validateCreateVolumeRequest,
  'csi.v1.Controller/DeleteVolume': validation.validateDeleteVolumeRequest,
  'csi.v1.Controller/ValidateVolumeCapabilities': validation.validateValidateVolumeCapabilitiesRequest,
  'csi.v1.Controller/ControllerExpandVolume': validation.validateControllerExpandVolumeRequest,
  'csi.v1.Controller/CreateSnapshot': validation.validateCreateSnapshotRequest,
  'csi.v1.Controller/DeleteSnapshot': validation.validateDeleteSnapshotRequest,
  'csi.v1.GroupController/CreateVolumeGroupSnapshot': validation.validateCreateVolumeGroupSnapshotRequest,
  'csi.v1.Node/NodeStageVolume': validation.validateNodeStageVolumeRequest,
  'csi.v1.Node/NodeUnstageVolume': validation.validateNodeUnstageVolumeRequest,
  'csi.v1.Node/NodePublishVolume': validation.validateNodePublishVolumeRequest,
  'csi.v1.Node/NodeUnpublishVolume': validation.validateNodeUnpublishVolumeRequest,
  'csi.v1.Node/NodeExpandVolume': validation.validateNodeExpandVolumeRequest,
  'csi.v1.Node/NodeGetVolumeStats': validation.validateNodeGetVolumeStatsRequest,
};

const definition = loadSync('csi.proto', { ...LOADER_OPTIONS, includeDirs: [protoDir()] });
const root = protobuf.loadSync(path.join(protoDir(), 'csi.proto'));

/** Strings that sit on the validators' edges, plus arbitrary ones. */
const text = fc.oneof(
  fc.constantFrom('', 'pvc-1', 'v', 'a'.repeat(128), 'a'.repeat(129), '-x', 'x y', 'vol@snap', '@', 'vol@', 'vol@@s', '/staging/p', '/', 'relative/p', '/a\0b'),
  fc.constantFrom('ext4', 'xfs', 'btrfs', 'grainSize', '4096', '65536', '3000', '1Mi', '2Gi', '-1', '18446744073709551616', 'é'.repeat(70)),
  fc.string({ maxLength: 40 }),
  fc.string({ unit: 'grapheme', maxLength: 10 }),
);
const int64 = fc.oneof(
  fc.constantFrom('0', '1', '-1', '1048576', '1073741824', '9223372036854775807', '-9223372036854775808', '9007199254740993'),
  fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }).map(String),
);
const paramKey = fc.oneof(fc.constantFrom('grainSize', 'fsType', 'csi.storage.k8s.io/fstype', 'csi.storage.k8s.io/pvc/name', 'unknown'), fc.string({ maxLength: 12 }));

/** An arbitrary value for one protobuf field (depth-limited for recursive messages). */
function fieldValue(field: Protobuf.Field, depth: number): fc.Arbitrary<unknown> {
  field.resolve();
  let one: fc.Arbitrary<unknown>;
  if (field.resolvedType instanceof protobuf.Type) one = depth > 3 ? fc.constant({}) : message(field.resolvedType, depth + 1);
  else if (field.resolvedType instanceof protobuf.Enum) one = fc.oneof(fc.constantFrom(...Object.values(field.resolvedType.values)), fc.integer({ min: -5, max: 100 }));
  else if (field.type === 'string') one = text;
  else if (field.type === 'bytes') one = fc.uint8Array({ maxLength: 8 }).map((a) => Buffer.from(a));
  else if (field.type === 'bool') one = fc.boolean();
  else if (/int64|fixed64/.test(field.type)) one = int64;
  else if (/int32|fixed32/.test(field.type)) one = fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 });
  else if (field.type === 'double' || field.type === 'float') one = fc.double();
  else one = fc.constant(undefined);
  if (field instanceof protobuf.MapField) return fc.dictionary(field.name === 'parameters' || field.name === 'volume_context' ? paramKey : text, one as fc.Arbitrary<unknown>, { maxKeys: 4 });
  if (field.repeated) return fc.array(one, { maxLength: 3 });
  return one;
}

/** An arbitrary object for a message type: each field present or absent, oneofs with any member. */
function message(type: Protobuf.Type, depth = 0): fc.Arbitrary<Record<string, unknown>> {
  const parts: Record<string, fc.Arbitrary<unknown>> = {};
  for (const field of type.fieldsArray) parts[field.name] = fieldValue(field, depth);
  return fc.record(parts, { requiredKeys: [] });
}

const tally = { parsed: 0, refused: 0, undecodable: 0 };

function check(rpc: string, validate: (req: never) => unknown, req: unknown): void {
  try {
    validate(req as never);
    tally.parsed++;
  } catch (err) {
    if (!(err instanceof CsiError)) throw new Error(`${rpc}: ${String(err)} (not a CsiError) for ${JSON.stringify(req)}`, { cause: err });
    assert.ok(ALLOWED.has(err.code), `${rpc}: code ${err.code} for a bad request: ${err.message}`);
    assert.ok(err.message.length > 0, `${rpc}: empty message`);
    tally.refused++;
  }
}

describe('CSI request validation fuzzing', () => {
  for (const [rpc, validate] of Object.entries(VALIDATORS)) {
    const [service, methodName] = rpc.split('/') as [string, string];
    const method = (definition[service] as Record<string, MethodDefinition<object, object>>)[methodName] as MethodDefinition<object, object>;
    const typeName = (method.requestType as { type: { name: string } }).type.name;
    const type = root.lookupType(`csi.v1.${typeName}`);

    it(`${methodName}: arbitrary field values, through the real (de)serializer`, () => {
      fc.assert(
        fc.property(message(type), (obj) => {
          let req: object;
          try {
            req = method.requestDeserialize(Buffer.from(type.encode(type.fromObject(obj)).finish()));
          } catch {
            tally.undecodable++;
            return; // protobufjs refused the values: no such request reaches a handler
          }
          check(rpc, validate, req);
        }),
        { numRuns: RUNS },
      );
    });

    it(`${methodName}: arbitrary bytes decoded as the request`, () => {
      fc.assert(
        fc.property(fc.uint8Array({ maxLength: 256 }), (bytes) => {
          let req: object;
          try {
            req = method.requestDeserialize(Buffer.from(bytes));
          } catch {
            tally.undecodable++;
            return; // grpc-js answers INTERNAL before any handler runs
          }
          check(rpc, validate, req);
        }),
        { numRuns: RUNS },
      );
    });
  }

  it('covers every validate…Request the module exports', () => {
    const exported = Object.keys(validation).filter((k) => /^validate.*Request$/.test(k)).sort();
    assert.deepEqual(Object.values(VALIDATORS).map((f) => f.name).sort(), exported);
    console.log(`csi validation fuzz: ${exported.length} validators × ${RUNS} structured + ${RUNS} byte-level cases: ${tally.parsed} parsed, ${tally.refused} refused with a CSI code, ${tally.undecodable} undecodable; 0 other exceptions`);
  });
});
