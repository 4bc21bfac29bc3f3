/**
 * Loads proto/csi.proto once per process, with the same options the generated types in
 * ./generated were made with (scripts/generate-csi-types.sh): field names as in the proto, int64 as
 * decimal strings, enums as names, defaults filled in, and a virtual field naming the set member of
 * each oneof. The google/protobuf imports resolve to the copies bundled with protobufjs.
 */
import { loadPackageDefinition } from '@grpc/grpc-js';
import { loadSync, type Options } from '@grpc/proto-loader';
import type { ProtoGrpcType } from './generated/csi.js';
import { protoDir } from './package-root.js';

/** proto-loader options; keep in step with the flags in scripts/generate-csi-types.sh. */
export const LOADER_OPTIONS: Readonly<Options> = Object.freeze({
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});

/** The `csi.v1` package: service constructors (clients) with `.service` definitions, and message types. */
export type CsiV1 = ProtoGrpcType['csi']['v1'];

let loaded: CsiV1 | undefined;

/** The loaded `csi.v1` package (loaded on first use, then cached). */
export function csiProto(): CsiV1 {
  if (loaded === undefined) {
    const definition = loadSync('csi.proto', { ...LOADER_OPTIONS, includeDirs: [protoDir()] });
    loaded = (loadPackageDefinition(definition) as unknown as ProtoGrpcType).csi.v1;
  }
  return loaded;
}
