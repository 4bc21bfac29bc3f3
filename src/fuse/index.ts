/** The FUSE export of a volume, served from the data-path process: public surface. */
export { DEFAULT_WORKERS, mountFuseExport } from './export.js';
export type { FuseExport, FuseExportOptions } from './export.js';
export { FuseError } from './errors.js';
export type { FuseErrorCode } from './errors.js';
export { ERRNO_BY_CODE, toFuseErrno } from './errno.js';
export { FUSE_STAT_OPS, FuseStats } from './stats.js';
export type { FuseOpStats, FuseStatOp } from './stats.js';
