/**
 * Manual peer: serves in-memory exports on a Unix socket until SIGINT/SIGTERM.
 *   node dist/test/nbd/helpers/serve-memory.js SOCKET [SIZE_BYTES]
 * Exports: "" (writable, SIZE bytes) and "ro" (read-only, 16 MiB).
 */
import { MapExportProvider } from '../../../src/nbd/export.js';
import { MemoryExport } from '../../../src/nbd/memory-export.js';
import { NbdServer } from '../../../src/nbd/server.js';

const [socket, sizeArg] = process.argv.slice(2);
if (socket === undefined) throw new Error('usage: serve-memory.js SOCKET [SIZE]');
const size = Number(sizeArg ?? 1024 * 1024 * 1024);
const provider = new MapExportProvider([
  new MemoryExport({ name: '', size, description: 'scratch' }),
  new MemoryExport({ name: 'ro', size: 16 * 1024 * 1024, readOnly: true }),
]);
const env = process.env;
const server = new NbdServer({
  provider,
  ...(env['NBD_HWM'] !== undefined ? { highWaterMark: Number(env['NBD_HWM']) } : {}),
  ...(env['NBD_BUDGET'] !== undefined ? { limits: { inflightBudget: Number(env['NBD_BUDGET']) } } : {}),
});
await server.listenUnix(socket);
process.stderr.write(`serving on ${socket}\n`);
const stop = (): void => {
  const pauses = [...server.connections].map((c) => c.stats.pauses);
  void server.close().then(() => process.stderr.write(`closed (pauses of live connections: ${pauses.join(',')})\n`));
};
process.once('SIGINT', stop);
process.once('SIGTERM', stop);
