/** The flashcopy volume engine: public surface. Knows nothing of NBD, gRPC or Kubernetes. */
export { Volume, DEFAULT_GRAIN_SIZE } from './volume.js';
export type { CreateOptions, FrozenVolume, OpenOptions, VolumeInfo } from './volume.js';
export { MAX_VOLUME_SIZE } from './volume-core.js';
export type { CheckpointInfo, TransactionState, VolumeCounters } from './volume-core.js';
export { validateCheckpointName } from './chain.js';
export type { CheckpointResult, DeferredCheckpoint, RollbackResult } from './chain.js';
export type { WriteOptions, ZeroOptions } from './cow.js';
export type { TransactionInfo } from './transactions.js';
export { inspectVolume } from './recovery.js';
export type { VolumeSummary } from './recovery.js';
export type { Extent } from './extents.js';
export { EngineError, ErrorCode, isEngineError } from './errors.js';
export type { FileIO, IoFile, OpenMode } from './file-io.js';
export { nodeFileIO } from './file-io.js';
export { ENGINE_CHANNEL, subscribe as subscribeEngineEvents } from './events.js';
export type { EngineEvent } from './events.js';
export { FastPath } from './fast-path.js';
export type { FastPathHandle } from './fast-path.js';
