/**
 * The CSI SnapshotMetadata service (served on its own socket for the external-snapshot-metadata
 * sidecar): the allocated ranges of a snapshot, and the ranges changed between two snapshots of one
 * volume, streamed as VARIABLE_LENGTH block metadata. Both come from the engine's copy-on-write
 * maps: allocation from the checkpoint's layers and the base image's extents, the delta from the
 * grains the stores between the two checkpoints hold, so a delta costs O(changed grains), not
 * O(volume size). The ranges are computed under the volume's in-flight key (the volume is opened for
 * that moment only), then streamed: ascending, non-overlapping, clipped to start at
 * starting_offset, at most max_results per message (default 256).
 */
import type { Extent } from '../engine/index.js';
import { CsiError, CsiErrorCode, invalidArgument } from '../volumes/errors.js';
import type { GetMetadataAllocatedResponse } from './generated/csi/v1/GetMetadataAllocatedResponse.js';
import type { SnapshotMetadataHandlers } from './generated/csi/v1/SnapshotMetadata.js';
import type { InFlight } from '../volumes/locks.js';
import type { AsyncService } from './unary.js';
import { parseInt64, parseSnapshotId } from './validation.js';
import type { BlockMetadataProvider } from '../volumes/local-volumes.js';

export const DEFAULT_MAX_RESULTS = 256;

export interface SnapshotMetadataServiceOptions {
  readonly metadata: BlockMetadataProvider;
  readonly inflight: InFlight;
}

/** starting_offset: OUT_OF_RANGE when negative or beyond the snapshot (checked once its size is known). */
function startingOffset(value: string): number {
  const n = parseInt64(value, 'starting_offset');
  if (n < 0n) throw new CsiError(CsiErrorCode.OutOfRange, `starting_offset ${n} is negative`);
  return Number(n);
}

function maxResults(value: number): number {
  if (!Number.isInteger(value) || value < 0) throw invalidArgument(`max_results ${value} must not be negative`);
  return value === 0 ? DEFAULT_MAX_RESULTS : value;
}

/** Splits ranges (from `start` on) into response messages of at most `max` tuples. */
export function* metadataMessages(extents: readonly Extent[], sizeBytes: number, start: number, max: number): Generator<GetMetadataAllocatedResponse> {
  if (start > sizeBytes) throw new CsiError(CsiErrorCode.OutOfRange, `starting_offset ${start} is beyond the snapshot's ${sizeBytes} bytes`);
  let batch: Array<{ byte_offset: string; size_bytes: string }> = [];
  const message = (): GetMetadataAllocatedResponse => ({ block_metadata_type: 'VARIABLE_LENGTH', volume_capacity_bytes: String(sizeBytes), block_metadata: batch });
  for (const e of extents) {
    const end = e.offset + e.length;
    if (end <= start) continue;
    const offset = Math.max(e.offset, start);
    batch.push({ byte_offset: String(offset), size_bytes: String(end - offset) });
    if (batch.length === max) {
      yield message();
      batch = [];
    }
  }
  if (batch.length > 0) yield message();
}

export function createSnapshotMetadataService(options: SnapshotMetadataServiceOptions): AsyncService<SnapshotMetadataHandlers> {
  const { metadata, inflight } = options;
  return {
    async *GetMetadataAllocated(req) {
      const ref = parseSnapshotId(req.snapshot_id);
      const start = startingOffset(req.starting_offset);
      const max = maxResults(req.max_results);
      const { sizeBytes, extents } = await inflight.run(ref.volumeId, () => metadata.allocated(ref));
      yield* metadataMessages(extents, sizeBytes, start, max);
    },

    async *GetMetadataDelta(req) {
      const base = parseSnapshotId(req.base_snapshot_id, 'base_snapshot_id');
      const target = parseSnapshotId(req.target_snapshot_id, 'target_snapshot_id');
      const start = startingOffset(req.starting_offset);
      const max = maxResults(req.max_results);
      const { sizeBytes, extents } = await inflight.run(base.volumeId, () => metadata.changed(base, target));
      yield* metadataMessages(extents, sizeBytes, start, max);
    },
  };
}
