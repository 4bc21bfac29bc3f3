/** Public surface of the NBD layer (protocol only; it knows nothing about the storage engine). */
export type { BlockSizeConstraints, Extent, ExportProvider, NbdExport, WriteZeroesOptions } from './export.js';
export { ExportError, ExportErrorCode, MapExportProvider, extentsFromDataRanges } from './export.js';
export { errorCode, toNbdErrno } from './errno.js';
export { MemoryExport, type MemoryExportOptions } from './memory-export.js';
export { NbdServer, NbdServerError, type CloseOptions, type NbdServerOptions, type NbdServerStats } from './server.js';
export type { ConnectionLimits, ConnectionStats, NbdLogger } from './connection.js';
