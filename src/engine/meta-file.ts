/**
 * volume.meta as two fixed-size slots written alternately in place (docs/format.md §2.4).
 *
 * An update encodes the metadata, writes it over the slot that does not hold the current
 * generation, and fdatasyncs: one write and one sync, no rename and no directory fsync. The slots
 * are allocated when the file is made, so the overwrite changes no file-system metadata and the
 * sync needs no journal commit. A write torn by a crash fails its slot's checksum, and the other
 * slot — the previous generation, which the torn update never replaced — is read instead.
 *
 * Metadata larger than a slot moves to a new file with bigger slots, through the slower
 * temp-file + fdatasync + rename + directory-fsync path.
 */
import * as path from 'node:path';
import { EngineError, ErrorCode, fromSystemError } from './errors.js';
import type { FileIO, IoFile } from './file-io.js';
import { META_HEADER_LENGTH, decodeMeta, encodeMeta, type VolumeMeta } from './format.js';

export const META_FILE = 'volume.meta';
const META_TMP = 'volume.meta.tmp';
export const MIN_SLOT_SIZE = 64 * 1024;
/** Metadata larger than this is refused as implausible. */
const MAX_SLOT_SIZE = 64 * 1024 * 1024;

function slotSizeFor(bytes: number): number {
  let size = MIN_SLOT_SIZE;
  while (size < bytes) size *= 2;
  return size;
}

/** Decodes one slot: null if it holds no valid metadata (never written, or torn). */
function decodeSlot(slot: Buffer, file: string): { meta: VolumeMeta } | { error: EngineError } {
  if (slot.length < META_HEADER_LENGTH + 8) return { error: new EngineError(ErrorCode.Corrupt, `${file}: truncated slot`) };
  const length = slot.readBigUInt64BE(80);
  if (length < BigInt(META_HEADER_LENGTH + 8) || length > BigInt(slot.length)) {
    return { error: new EngineError(ErrorCode.Corrupt, `${file}: corrupt metadata (slot length ${length})`) };
  }
  try {
    return { meta: decodeMeta(slot.subarray(0, Number(length)), file) };
  } catch (err) {
    return { error: err instanceof EngineError ? err : new EngineError(ErrorCode.Corrupt, `${file}: ${String(err)}`) };
  }
}

/** Reads both slots and picks the valid one with the higher generation. */
async function readSlots(f: IoFile, file: string): Promise<{ meta: VolumeMeta; slot: 0 | 1; slotSize: number }> {
  const size = await f.size();
  if (size === 0 || size % 2 !== 0 || size / 2 < MIN_SLOT_SIZE || size / 2 > MAX_SLOT_SIZE || (size / 2) % MIN_SLOT_SIZE !== 0) {
    throw new EngineError(ErrorCode.Corrupt, `${file}: corrupt metadata (file size ${size} is not two valid slots)`);
  }
  const slotSize = size / 2;
  const buf = Buffer.alloc(size);
  await f.read(buf, 0);
  const a = decodeSlot(buf.subarray(0, slotSize), file);
  const b = decodeSlot(buf.subarray(slotSize), file);
  if ('meta' in a && 'meta' in b) return a.meta.generation >= b.meta.generation ? { meta: a.meta, slot: 0, slotSize } : { meta: b.meta, slot: 1, slotSize };
  if ('meta' in a) return { meta: a.meta, slot: 0, slotSize };
  if ('meta' in b) return { meta: b.meta, slot: 1, slotSize };
  throw a.error;
}

export class MetaFile {
  private constructor(
    private readonly io: FileIO,
    private readonly dir: string,
    private file: IoFile,
    private slotSize: number,
    private current: 0 | 1,
  ) {}

  /** Writes a new volume.meta (slot 0 holds `meta`) atomically: temp file, sync, rename, dir sync. */
  private static async replace(io: FileIO, dir: string, meta: VolumeMeta): Promise<number> {
    const encoded = encodeMeta(meta);
    const slotSize = slotSizeFor(encoded.length);
    const tmp = path.join(dir, META_TMP);
    await io.unlink(tmp).catch(() => undefined);
    const f = await io.open(tmp, 'create');
    try {
      const image = Buffer.alloc(2 * slotSize);
      encoded.copy(image);
      await f.write(image, 0);
      await f.datasync();
    } finally {
      await f.close();
    }
    await io.rename(tmp, path.join(dir, META_FILE));
    await io.syncDir(dir);
    return slotSize;
  }

  static async create(io: FileIO, dir: string, meta: VolumeMeta): Promise<void> {
    await MetaFile.replace(io, dir, meta);
  }

  /** Reads the current metadata without any lock: the slots are only ever overwritten whole. */
  static async read(io: FileIO, dir: string): Promise<VolumeMeta> {
    const file = path.join(dir, META_FILE);
    const f = await io.open(file, 'read').catch((err: unknown) => {
      throw fromSystemError(err, `open ${file}`);
    });
    try {
      return (await readSlots(f, file)).meta;
    } finally {
      await f.close();
    }
  }

  /** Opens volume.meta for updates (the caller holds the volume's exclusive lock). */
  static async open(io: FileIO, dir: string): Promise<{ metaFile: MetaFile; meta: VolumeMeta }> {
    const file = path.join(dir, META_FILE);
    await io.unlink(path.join(dir, META_TMP)).catch(() => undefined);
    const f = await io.open(file, 'readwrite').catch((err: unknown) => {
      throw fromSystemError(err, `open ${file}`);
    });
    try {
      const { meta, slot, slotSize } = await readSlots(f, file);
      return { metaFile: new MetaFile(io, dir, f, slotSize, slot), meta };
    } catch (err) {
      await f.close();
      throw err;
    }
  }

  /** Makes `meta` the current metadata, durably. */
  async write(meta: VolumeMeta): Promise<void> {
    const encoded = encodeMeta(meta);
    if (encoded.length > this.slotSize) {
      // Outgrew the slots: a new file with bigger ones replaces this one.
      await this.file.close();
      this.slotSize = await MetaFile.replace(this.io, this.dir, meta);
      this.file = await this.io.open(path.join(this.dir, META_FILE), 'readwrite');
      this.current = 0;
      return;
    }
    // Only the encoded bytes: its length field and checksum make any older bytes after it inert.
    const next = this.current === 0 ? 1 : 0;
    await this.file.write(encoded, next * this.slotSize);
    await this.file.datasync();
    this.current = next;
  }

  close(): Promise<void> {
    return this.file.close();
  }
}
