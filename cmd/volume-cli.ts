/**
 * `flashcsi volume …`, `flashcsi checkpoint …` and `flashcsi rollback`. Each opens the volume
 * directly; when another process serves it (the lock is taken), the commands that make sense on a
 * live volume go to that server's control socket instead, and the others refuse with a clear reason.
 */
import * as fs from 'node:fs';
import type { Command } from 'commander';
import { EngineError, ErrorCode, Volume, isEngineError, type CheckpointInfo, type VolumeInfo } from '../src/engine/index.js';
import { controlCall, readServeInfo, type ControlRequest } from '../src/nbd/control.js';
import { formatSize, parseSize } from './units.js';

/** Runs `local` on the opened volume, or `remote` against its server if it is served. */
async function onVolume<T>(
  dir: string,
  opts: { readOnly: boolean; remote?: ControlRequest; refuse?: string },
  local: (v: Volume) => Promise<T>,
): Promise<T> {
  let vol: Volume;
  try {
    vol = await Volume.open(dir, { readOnly: opts.readOnly });
  } catch (err) {
    if (!isEngineError(err, ErrorCode.Locked)) throw err;
    const served = readServeInfo(dir);
    if (!served) throw new EngineError(ErrorCode.Locked, `volume ${dir} is in use by another process`);
    if (opts.remote) return controlCall<T>(served.control, opts.remote);
    throw new EngineError(ErrorCode.Locked, `volume ${dir} is served by flashcsi serve (pid ${served.pid}); ${opts.refuse ?? 'stop it first'}`);
  }
  try {
    return await local(vol);
  } finally {
    await vol.close();
  }
}

function printInfo(info: VolumeInfo): void {
  const tx = info.transaction;
  const lines = [
    `volume:       ${info.dir}`,
    `size:         ${formatSize(info.size)} (${info.size} bytes)`,
    `grain:        ${formatSize(info.grainSize)}`,
    `allocated:    ${formatSize(info.allocatedBytes)}`,
    `checkpoints:  ${info.checkpoints.filter((c) => !c.internal).length}`,
    `transaction:  ${tx ? `${tx.txid} (${tx.state})` : 'none'}`,
  ];
  for (const d of info.deferred) lines.push(`deferred:     ${d.name} (cut when ${d.txid} completes)`);
  if (info.recovery.completed.length > 0) lines.push(`recovered:    ${info.recovery.completed.join('; ')}`);
  process.stdout.write(`${lines.join('\n')}\n`);
}

function printCheckpoints(checkpoints: readonly CheckpointInfo[], deferred: ReadonlyArray<{ name: string; txid: string }>): void {
  const rows = [['NAME', 'SIZE', 'CREATED', 'COPIED'], ...checkpoints.map((c) => [c.name, formatSize(c.size), new Date(c.createdAt).toISOString(), formatSize(c.storeBytes)])];
  for (const d of deferred) rows.push([d.name, '-', `deferred until ${d.txid} completes`, '-']);
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  for (const r of rows) process.stdout.write(`${r.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join('  ').trimEnd()}\n`);
}

/** Writes an image's allocated data to a sparse raw file of the image's size. */
async function exportImage(vol: Volume, checkpoint: string | null, file: string): Promise<void> {
  const size = checkpoint === null ? vol.size : vol.checkpoint(checkpoint).size;
  const fd = fs.openSync(file, 'w', 0o600);
  try {
    fs.ftruncateSync(fd, size);
    await vol.copyImage(checkpoint, async (buf, offset) => {
      fs.writeSync(fd, buf, 0, buf.length, offset);
    });
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

export function registerVolumeCommands(program: Command): void {
  const volume = program.command('volume').description('create and inspect volumes');

  volume
    .command('create')
    .description('create a volume: a directory holding a sparse base image and its checkpoints')
    .argument('<dir>', 'volume directory (must not exist)')
    .requiredOption('--size <size>', 'volume size, e.g. 512M, 10G, 1T')
    .option('--grain <size>', 'copy-on-write grain, a power of two from 4K to 1M', '64K')
    .action(async (dir: string, o: { size: string; grain: string }) => {
      const vol = await Volume.create(dir, { size: parseSize(o.size, 'size'), grainSize: parseSize(o.grain, 'grain') });
      await vol.close();
      process.stdout.write(`created ${dir}: ${formatSize(vol.size)}, grain ${formatSize(vol.grainSize)}\n`);
    });

  volume
    .command('info')
    .description('show size, allocation, checkpoints and transaction state')
    .argument('<dir>', 'volume directory')
    .option('--json', 'print JSON')
    .action(async (dir: string, o: { json?: boolean }) => {
      const info = await onVolume<VolumeInfo>(dir, { readOnly: true, remote: { op: 'info' } }, (v) => v.info());
      if (o.json) process.stdout.write(`${JSON.stringify(info, null, 2)}\n`);
      else printInfo(info);
    });

  volume
    .command('write')
    .description('write a file into the volume through the flashcopy layer')
    .argument('<dir>', 'volume directory')
    .argument('<file>', 'file to write ("-" for stdin)')
    .option('--offset <bytes>', 'byte offset in the volume (units allowed)', '0')
    .action(async (dir: string, file: string, o: { offset: string }) => {
      const offset = parseSize(o.offset, 'offset');
      await onVolume(dir, { readOnly: false, refuse: 'write through its NBD socket instead' }, async (v) => {
        const st = file === '-' ? null : fs.statSync(file);
        if (st?.isFile() && offset + st.size > v.size) {
          throw new EngineError(ErrorCode.OutOfRange, `${file} (${st.size} bytes) does not fit at offset ${offset} in a volume of ${v.size} bytes; nothing was written`);
        }
        let at = offset;
        const input = file === '-' ? process.stdin : fs.createReadStream(file, { highWaterMark: 4 << 20 });
        for await (const chunk of input) {
          const buf = chunk as Buffer;
          await v.write(at, buf);
          at += buf.length;
        }
        await v.flush();
        process.stdout.write(`wrote ${at - offset} bytes at offset ${offset}\n`);
      });
    });

  volume
    .command('export')
    .description("copy the volume's current image to a sparse raw file")
    .argument('<dir>', 'volume directory')
    .argument('<file>', 'output file')
    .action(async (dir: string, file: string) => {
      await onVolume(dir, { readOnly: true, refuse: 'read it through its NBD socket (e.g. nbdcopy) instead' }, (v) => exportImage(v, null, file));
    });

  const checkpoint = program.command('checkpoint').description('cut, list, delete and export checkpoints');

  checkpoint
    .command('create')
    .description('cut a checkpoint (deferred until the open transaction completes, if any)')
    .argument('<dir>', 'volume directory')
    .argument('<name>', 'checkpoint name')
    .action(async (dir: string, name: string) => {
      const res = await onVolume(dir, { readOnly: false, remote: { op: 'checkpoint.create', name } }, (v) => v.createCheckpoint(name));
      if (res.state === 'created') process.stdout.write(`checkpoint ${name} created\n`);
      else process.stdout.write(`checkpoint ${name} deferred: it is cut when transaction ${res.deferred.txid} completes\n`);
    });

  checkpoint
    .command('list')
    .description('list checkpoints, oldest first')
    .argument('<dir>', 'volume directory')
    .option('--json', 'print JSON')
    .action(async (dir: string, o: { json?: boolean }) => {
      const res = await onVolume(dir, { readOnly: true, remote: { op: 'checkpoint.list' } }, async (v) => ({
        checkpoints: v.checkpoints(),
        deferred: v.deferredCheckpoints(),
      }));
      if (o.json) process.stdout.write(`${JSON.stringify(res, null, 2)}\n`);
      else printCheckpoints(res.checkpoints, res.deferred);
    });

  checkpoint
    .command('delete')
    .description('delete a checkpoint; every other checkpoint stays byte-exact')
    .argument('<dir>', 'volume directory')
    .argument('<name>', 'checkpoint name')
    .action(async (dir: string, name: string) => {
      await onVolume(dir, { readOnly: false, remote: { op: 'checkpoint.delete', name } }, (v) => v.deleteCheckpoint(name));
      process.stdout.write(`checkpoint ${name} deleted\n`);
    });

  checkpoint
    .command('export')
    .description("copy a checkpoint's point-in-time image to a sparse raw file")
    .argument('<dir>', 'volume directory')
    .argument('<name>', 'checkpoint name')
    .argument('<file>', 'output file')
    .action(async (dir: string, name: string, file: string) => {
      await onVolume(dir, { readOnly: true, refuse: `read its NBD export "${name}" instead (e.g. nbdcopy)` }, (v) => exportImage(v, name, file));
    });

  program
    .command('rollback')
    .description('roll the volume back, in place, to a checkpoint (refused while the volume is served)')
    .argument('<dir>', 'volume directory')
    .argument('<name>', 'checkpoint name')
    .action(async (dir: string, name: string) => {
      const res = await onVolume(dir, { readOnly: false, remote: { op: 'rollback', name } }, (v) => v.rollback(name));
      process.stdout.write(`rolled back to ${name}: ${formatSize(res.restoredBytes)} restored\n`);
    });
}
