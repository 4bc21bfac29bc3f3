/**
 * Serves an engine volume over NBD: the live volume as the default export "" (read-write), and
 * each checkpoint as a read-only export under its own name. The set of checkpoint exports follows
 * the volume: a checkpoint cut while serving is exported at once, a deleted one disappears (its
 * open connections then get errors).
 */
import type { Volume } from '../engine/index.js';
import { extentsFromDataRanges, type BlockSizeConstraints, type Extent, type ExportProvider, type NbdExport, type WriteZeroesOptions } from './export.js';

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

/** The live volume as "", plus every checkpoint by name (internal ones are not listed). */
export class VolumeExportProvider implements ExportProvider {
  private readonly live: VolumeExport;

  constructor(private readonly volume: Volume) {
    this.live = new VolumeExport(volume);
  }

  list(): Iterable<NbdExport> {
    return [this.live, ...this.volume.checkpoints().map((c) => new CheckpointExport(this.volume, c.name))];
  }

  get(name: string): NbdExport | undefined {
    if (name === '') return this.live;
    return this.volume.checkpoints({ includeInternal: true }).some((c) => c.name === name) ? new CheckpointExport(this.volume, name) : undefined;
  }
}
