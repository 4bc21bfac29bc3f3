/**
 * Serves an engine volume over NBD: the live volume as the default export "" (read-write), and
 * each checkpoint as a read-only export under its own name. The set of checkpoint exports follows
 * the volume: a checkpoint cut while serving is exported at once, a deleted one disappears (its
 * open connections then get errors).
 *
 * A hidden export, `.attach` (never listed; no checkpoint can have that name), is the live volume
 * behind a fixed, huge advertised size (1 PiB). The CSI node plugin attaches nbdfuse to it and
 * puts a loop device with `--sizelimit=<volume size>` on top: nbdfuse fixes its file's size when
 * it mounts, so only a file larger than any future size lets the volume grow while attached (the
 * loop device's limit is raised instead). Reads and writes past the volume's real size fail
 * (EINVAL, ENOSPC for writes); block status reports a hole there.
 */
import type { Volume } from '../engine/index.js';
import {
  ExportError,
  ExportErrorCode,
  extentsFromDataRanges,
  type BlockSizeConstraints,
  type Extent,
  type ExportProvider,
  type NbdExport,
  type WriteZeroesOptions,
} from './export.js';

/** Name of the hidden export the node plugin attaches (see the module comment). */
export const ATTACH_EXPORT_NAME = '.attach';
/** Size the attach export advertises: 1 PiB, beyond any volume a node will hold. */
export const ATTACH_EXPORT_SIZE = 2 ** 50;

const BLOCK_SIZE: BlockSizeConstraints = { minimum: 1, preferred: 4096, maximum: 32 * 1024 * 1024 };

/** The live volume. */
export class VolumeExport implements NbdExport {
  readonly name = '';
  readonly readOnly = false;
  readonly fastZero = true; // zeroing punches holes: a metadata update
  readonly multiConn = true; // one engine behind every connection
  readonly blockSize = BLOCK_SIZE;

  constructor(private readonly volume: Volume, readonly description = 'flashcsi volume') {}

  size(): number {
    return this.volume.size;
  }

  async read(offset: number, length: number, into: Buffer): Promise<Buffer> {
    await this.volume.readInto(into.subarray(0, length), offset);
    return into;
  }

  write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    return this.volume.write(offset, data, { fua });
  }

  writeZeroes(offset: number, length: number, opts: WriteZeroesOptions): Promise<void> {
    return this.volume.writeZeroes(offset, length, { fua: opts.fua, noHole: opts.noHole });
  }

  trim(offset: number, length: number, fua: boolean): Promise<void> {
    return this.volume.trim(offset, length, { fua });
  }

  flush(): Promise<void> {
    return this.volume.flush();
  }

  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    return extentsFromDataRanges(offset, length, await this.volume.allocated(undefined, offset, offset + length));
  }
}

/** A checkpoint's point-in-time image, read-only. */
export class CheckpointExport implements NbdExport {
  readonly readOnly = true;
  readonly fastZero = false;
  readonly multiConn = true;
  readonly blockSize = BLOCK_SIZE;
  private readonly bytes: number;

  constructor(private readonly volume: Volume, readonly name: string) {
    this.bytes = volume.checkpoint(name).size;
  }

  get description(): string {
    return `checkpoint ${this.name} (read-only)`;
  }

  size(): number {
    return this.bytes;
  }

  async read(offset: number, length: number, into: Buffer): Promise<Buffer> {
    await this.volume.readCheckpointInto(this.name, into.subarray(0, length), offset);
    return into;
  }

  private refuse(): Promise<void> {
    return Promise.reject(Object.assign(new Error(`checkpoint ${this.name} is read-only`), { code: 'READ_ONLY' }));
  }

  write(): Promise<void> {
    return this.refuse();
  }

  writeZeroes(): Promise<void> {
    return this.refuse();
  }

  trim(): Promise<void> {
    return this.refuse();
  }

  async flush(): Promise<void> {
    // Nothing to persist: a checkpoint never changes.
  }

  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    return extentsFromDataRanges(offset, length, await this.volume.allocated(this.name, offset, offset + length));
  }
}

/** The live volume behind a 1 PiB advertised size; I/O past the volume's real size fails. */
export class AttachExport implements NbdExport {
  readonly name = ATTACH_EXPORT_NAME;
  readonly description = 'flashcsi volume for the node attach (fixed large size)';
  readonly readOnly = false;
  readonly fastZero = true;
  readonly multiConn = true;
  readonly blockSize = BLOCK_SIZE;

  constructor(private readonly volume: Volume, private readonly live: VolumeExport = new VolumeExport(volume)) {}

  size(): number {
    return ATTACH_EXPORT_SIZE;
  }

  /** Rejects a range that does not lie within the volume's current size. */
  private inside(offset: number, length: number): void {
    if (offset + length > this.volume.size) {
      throw new ExportError(ExportErrorCode.OutOfRange, `${offset}+${length} is past the end of the volume (${this.volume.size} bytes)`);
    }
  }

  async read(offset: number, length: number, into: Buffer): Promise<Buffer> {
    this.inside(offset, length);
    return this.live.read(offset, length, into);
  }

  async write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    this.inside(offset, data.length);
    return this.live.write(offset, data, fua);
  }

  async writeZeroes(offset: number, length: number, opts: WriteZeroesOptions): Promise<void> {
    this.inside(offset, length);
    return this.live.writeZeroes(offset, length, opts);
  }

  async trim(offset: number, length: number, fua: boolean): Promise<void> {
    this.inside(offset, length);
    return this.live.trim(offset, length, fua);
  }

  flush(): Promise<void> {
    return this.live.flush();
  }

  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    const end = Math.min(offset + length, this.volume.size);
    const data = offset < end ? await this.volume.allocated(undefined, offset, end) : [];
    return extentsFromDataRanges(offset, length, data); // past the end: a hole that reads as zeros
  }
}

/** The live volume as "", every checkpoint by name (internal ones are not listed), and the hidden `.attach`. */
export class VolumeExportProvider implements ExportProvider {
  private readonly live: VolumeExport;
  private readonly attach: AttachExport;

  constructor(private readonly volume: Volume) {
    this.live = new VolumeExport(volume);
    this.attach = new AttachExport(volume, this.live);
  }

  list(): Iterable<NbdExport> {
    return [this.live, ...this.volume.checkpoints().map((c) => new CheckpointExport(this.volume, c.name))];
  }

  get(name: string): NbdExport | undefined {
    if (name === '') return this.live;
    if (name === ATTACH_EXPORT_NAME) return this.attach;
    return this.volume.checkpoints({ includeInternal: true }).some((c) => c.name === name) ? new CheckpointExport(this.volume, name) : undefined;
  }
}
