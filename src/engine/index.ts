/** The flashcopy volume engine: public surface. Knows nothing of NBD, gRPC or Kubernetes. */
export { Volume, DEFAULT_GRAIN_SIZE, MAX_VOLUME_SIZE, inspectVolume, validateCheckpointName } from './volume.js';
export type {
  CheckpointInfo,
  CheckpointResult,
  CreateOptions,
  DeferredCheckpoint,
  FrozenVolume,
  OpenOptions,
  RollbackResult,
  TransactionInfo,
  TransactionState,
  VolumeCounters,
  VolumeInfo,
  VolumeSummary,
  WriteOptions,
  ZeroOptions,
} from './volume.js';
export type { Extent } from './extents.js';
export { EngineError, ErrorCode, isEngineError } from './errors.js';
export type { FileIO, IoFile, OpenMode } from './file-io.js';
export { nodeFileIO } from './file-io.js';
export { ENGINE_CHANNEL, subscribe as subscribeEngineEvents } from './events.js';
export type { EngineEvent } from './events.js';
