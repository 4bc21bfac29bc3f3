/**
 * The storage behind the Controller and SnapshotMetadata services: volumes and snapshots in the
 * plugin's state directory (state.ts), acted on through VolumeAccess (volume-access.ts: the engine
 * directly, or the volume's `flashcsi serve` process when it is staged). The services validate,
 * lock and translate; everything here speaks domain terms and throws CsiError/EngineError, which
 * src/csi/status.ts maps to gRPC codes.
 *
 * Callers serialise per volume (the services take the plugin's InFlight keys): nothing here locks.
 * Listing and get methods read metadata lock-free (`inspectVolume`) and never open a volume.
 *
 * Decisions (docs/csi.md has the full list):
 * - Snapshots outlive their volume. DeleteVolume on a volume with snapshots marks it `deleted` in
 *   csi.json: hidden from ListVolumes, not stageable, its data kept for the snapshots; the last
 *   DeleteSnapshot removes the directory. DeleteVolume refuses (FAILED_PRECONDITION) only while
 *   the volume is staged or in an open transaction.
 * - CreateSnapshot while a transaction is open: the engine records the cut as deferred; the call
 *   answers ABORTED (retryable) naming the transaction, and the retry after the transaction ends
 *   finds the checkpoint cut.
 * - A snapshot that belongs to a group snapshot cannot be deleted alone (INVALID_ARGUMENT, as the
 *   spec asks); DeleteVolumeGroupSnapshot deletes it.
 */
import { promises as fsp } from 'node:fs';
import {
  DEFAULT_GRAIN_SIZE,
  MAX_VOLUME_SIZE,
  Volume,
  inspectVolume,
  isEngineError,
  ErrorCode,
  type Extent,
  type VolumeSummary,
} from '../engine/index.js';
import { componentLogger, type Logger } from '../log/logger.js';
import { CsiError, CsiErrorCode } from './errors.js';
import { checkpointNameForSnapshot, formatSnapshotId, isGroupId, volumeIdForName, type SnapshotRef } from './ids.js';
import type { StateDir, VolumeRecord } from './state.js';
import { chooseCapacity, type CapacityPolicy, type ContentSource, type ParsedCapacityRange, type VolumeParameters } from './spec.js';
import { withVolume, type VolumeAccess } from './volume-access.js';

const MiB = 1024n * 1024n;

/** Default size, alignment and maximum of new volumes. */
export const CAPACITY_POLICY: CapacityPolicy = Object.freeze({
  defaultBytes: 1024n * MiB,
  alignBytes: MiB,
  maxBytes: (BigInt(MAX_VOLUME_SIZE) / MiB) * MiB,
});

/** A VolumeCondition: abnormal with a message, or normal. */
export interface Condition {
  readonly abnormal: boolean;
  readonly message: string;
}

export const NORMAL: Condition = Object.freeze({ abnormal: false, message: '' });

export interface VolumeDescription {
  readonly volumeId: string;
  readonly capacityBytes: number;
  readonly contentSource: VolumeRecord['contentSource'];
  readonly parameters: Readonly<Record<string, string>>;
  readonly condition: Condition;
}

export interface SnapshotDescription {
  readonly snapshotId: string;
  readonly sourceVolumeId: string;
  readonly checkpoint: string;
  readonly sizeBytes: number;
  readonly createdAt: Date;
  /** '' unless the snapshot was cut as a member of a group snapshot. */
  readonly groupSnapshotId: string;
}

export interface CreateVolumeInput {
  readonly name: string;
  readonly capacity: ParsedCapacityRange | undefined;
  readonly parameters: VolumeParameters;
  /** The StorageClass parameters as given. */
  readonly rawParameters: Readonly<Record<string, string>>;
  readonly contentSource: ContentSource | undefined;
  /** The smallest size its file system can be made in (minimumVolumeBytes), if any. */
  readonly minimum?: { readonly bytes: bigint; readonly reason: string };
}

export interface ExpandResult {
  readonly capacityBytes: number;
  /** Whether the attached block device (if staged here) shows the new size already. */
  readonly deviceGrown: boolean;
}

/** Volumes (Controller service). */
export interface VolumeProvisioner {
  createVolume(input: CreateVolumeInput): Promise<VolumeDescription>;
  /** Not an error when the volume does not exist. */
  deleteVolume(volumeId: string): Promise<void>;
  /** NOT_FOUND for an unknown or deleted volume. */
  getVolume(volumeId: string): Promise<VolumeDescription>;
  listVolumes(): Promise<VolumeDescription[]>;
  /** Grows the volume to the range (never shrinks). */
  expandVolume(volumeId: string, capacity: ParsedCapacityRange): Promise<ExpandResult>;
  /** Free bytes of the file system that holds the state directory. */
  availableCapacity(): Promise<bigint>;
}

/** Snapshots (Controller service). */
export interface SnapshotProvider {
  createSnapshot(sourceVolumeId: string, name: string): Promise<SnapshotDescription>;
  /** Not an error when the snapshot does not exist. */
  deleteSnapshot(ref: SnapshotRef): Promise<void>;
  /** NOT_FOUND for an unknown snapshot. */
  getSnapshot(ref: SnapshotRef): Promise<SnapshotDescription>;
  /** Every snapshot, ordered by volume id, then age. */
  listSnapshots(): Promise<SnapshotDescription[]>;
}

/** Allocation and change maps of snapshots (SnapshotMetadata service). */
export interface BlockMetadataProvider {
  allocated(ref: SnapshotRef): Promise<{ readonly sizeBytes: number; readonly extents: Extent[] }>;
  changed(base: SnapshotRef, target: SnapshotRef): Promise<{ readonly sizeBytes: number; readonly extents: Extent[] }>;
}

/** What the node side knows about a volume: problems of its data path, and growing an attached device. */
export interface NodeHooks {
  /** Problems of a staged volume's data path on this node (empty when healthy or not staged). */
  problems(volumeId: string): Promise<string[]>;
  /** Whether the volume is staged on this node (DeleteVolume refuses then). */
  stagedAt(volumeId: string): Promise<string | undefined>;
  /** Raises the attached device's size after an expansion; false when the node must do more. */
  volumeGrown(volumeId: string, size: number): Promise<boolean>;
  /** Whether the staged volume is a block volume (no file system to grow). */
  isBlock(volumeId: string): Promise<boolean | undefined>;
}

export interface LocalVolumesOptions {
  readonly state: StateDir;
  readonly access: VolumeAccess;
  readonly logger: Logger;
  readonly node?: NodeHooks;
}

function notFound(what: string): CsiError {
  return new CsiError(CsiErrorCode.NotFound, what);
}

/** Volumes and snapshots in the state directory. */
export class LocalVolumes implements VolumeProvisioner, SnapshotProvider, BlockMetadataProvider {
  readonly #state: StateDir;
  readonly #access: VolumeAccess;
  readonly #log: Logger;
  readonly #node: NodeHooks | undefined;

  constructor(options: LocalVolumesOptions) {
    this.#state = options.state;
    this.#access = options.access;
    this.#log = componentLogger(options.logger, 'volumes');
    this.#node = options.node;
  }

  get state(): StateDir {
    return this.#state;
  }

  get access(): VolumeAccess {
    return this.#access;
  }

  // ---- helpers

  /** The volume's record; NOT_FOUND when it does not exist or (unless allowed) was deleted. */
  async requireRecord(volumeId: string, opts: { allowDeleted?: boolean } = {}): Promise<VolumeRecord> {
    const rec = await this.#state.readVolume(volumeId);
    if (rec === undefined || (rec.deleted && opts.allowDeleted !== true)) throw notFound(`volume ${JSON.stringify(volumeId)} not found`);
    return rec;
  }

  /** A user checkpoint of a volume, read lock-free; NOT_FOUND when absent. */
  async requireSnapshot(ref: SnapshotRef): Promise<{ record: VolumeRecord; summary: VolumeSummary; index: number }> {
    const missing = notFound(`snapshot ${JSON.stringify(formatSnapshotId(ref.volumeId, ref.checkpoint))} not found`);
    const record = await this.#state.readVolume(ref.volumeId);
    if (record === undefined) throw missing;
    const summary = await inspectVolume(this.#state.volumeDir(ref.volumeId));
    const user = summary.checkpoints.filter((c) => !c.internal);
    const index = user.findIndex((c) => c.name === ref.checkpoint);
    if (index < 0) throw missing;
    return { record, summary, index };
  }

  async #groupOf(volumeId: string, checkpoint: string): Promise<string> {
    if (!isGroupId(checkpoint)) return '';
    const group = await this.#state.readGroup(checkpoint);
    return group?.volumeIds.includes(volumeId) === true ? group.groupId : '';
  }

  describeSnapshot(volumeId: string, c: { readonly name: string; readonly size: number; readonly createdAt: Date }, groupSnapshotId: string): SnapshotDescription {
    return {
      snapshotId: formatSnapshotId(volumeId, c.name),
      sourceVolumeId: volumeId,
      checkpoint: c.name,
      sizeBytes: c.size,
      createdAt: c.createdAt,
      groupSnapshotId,
    };
  }

  async #condition(volumeId: string, summary: VolumeSummary | Error): Promise<Condition> {
    const problems: string[] = [];
    if (summary instanceof Error) problems.push(`the volume's metadata cannot be read: ${summary.message}`);
    else if (summary.pending !== null) {
      problems.push(`an interrupted ${summary.pending} is pending; it is finished when the volume is next opened (staged, or any controller operation)`);
    }
    if (this.#node !== undefined) problems.push(...(await this.#node.problems(volumeId)));
    return problems.length === 0 ? NORMAL : { abnormal: true, message: problems.join('; ') };
  }

  async #describe(rec: VolumeRecord): Promise<VolumeDescription> {
    const summary = await inspectVolume(this.#state.volumeDir(rec.volumeId)).catch((err: unknown) => (err instanceof Error ? err : new Error(String(err))));
    return {
      volumeId: rec.volumeId,
      capacityBytes: summary instanceof Error ? Number(rec.createdBytes) : summary.size,
      contentSource: rec.contentSource,
      parameters: rec.parameters,
      condition: await this.#condition(rec.volumeId, summary),
    };
  }

  // ---- volumes

  async createVolume(input: CreateVolumeInput): Promise<VolumeDescription> {
    const volumeId = volumeIdForName(input.name);
    const existing = await this.#state.readVolume(volumeId);
    if (existing !== undefined) return this.#describe(this.#checkCompatible(existing, input));

    const dir = this.#state.volumeDir(volumeId);
    // A directory without csi.json is a create that did not finish (csi.json is written last).
    await fsp.rm(dir, { recursive: true, force: true });

    const source = await this.#resolveSource(input.contentSource);
    if (source !== undefined && input.parameters.grainSize !== undefined && input.parameters.grainSize !== source.grainSize) {
      throw new CsiError(
        CsiErrorCode.InvalidArgument,
        `grainSize ${input.parameters.grainSize} differs from the source's grain size ${source.grainSize}; a copy keeps its source's grain size`,
      );
    }
    const size = this.#chooseSize(input.capacity, source?.size, input.minimum);
    const grainSize = source?.grainSize ?? input.parameters.grainSize ?? DEFAULT_GRAIN_SIZE;
    try {
      if (source === undefined) {
        await (await Volume.create(dir, { size, grainSize })).close();
      } else {
        const cloned = await withVolume(this.#access, this.#state.volumeDir(source.volumeId), (h) => h.clone(dir, source.checkpoint));
        if (size > cloned.size) {
          const copy = await Volume.open(dir);
          try {
            await copy.expand(size);
          } finally {
            await copy.close();
          }
        }
      }
      const rec: VolumeRecord = {
        version: 1,
        name: input.name,
        volumeId,
        createdBytes: String(size),
        grainSize,
        fsType: input.parameters.fsType ?? null,
        parameters: { ...input.rawParameters },
        contentSource: input.contentSource === undefined ? null : this.#sourceRecord(input.contentSource),
        created: new Date().toISOString(),
        deleted: false,
      };
      await this.#state.writeVolume(rec);
      this.#log.info({ volumeId, size, grainSize, source: rec.contentSource }, 'volume created');
      return await this.#describe(rec);
    } catch (err) {
      await fsp.rm(dir, { recursive: true, force: true }).catch(() => undefined);
      throw err;
    }
  }

  #sourceRecord(src: ContentSource): NonNullable<VolumeRecord['contentSource']> {
    return src.kind === 'snapshot' ? { kind: 'snapshot', id: src.snapshotId } : { kind: 'volume', id: src.volumeId };
  }

  /** An existing volume of the same name must match the request, else ALREADY_EXISTS. */
  #checkCompatible(existing: VolumeRecord, input: CreateVolumeInput): VolumeRecord {
    const conflict = (why: string): CsiError =>
      new CsiError(CsiErrorCode.AlreadyExists, `volume ${JSON.stringify(input.name)} already exists (id ${existing.volumeId}) but ${why}`);
    if (existing.name !== input.name) throw conflict(`under another name (${JSON.stringify(existing.name)})`);
    if (existing.deleted) throw conflict('was deleted and still holds snapshots; use another name');
    const created = BigInt(existing.createdBytes);
    const required = input.capacity?.requiredBytes ?? 0n;
    const limit = input.capacity?.limitBytes ?? 0n;
    if (created < required || (limit > 0n && created > limit)) {
      throw conflict(`its size ${created} is outside the requested range [${required}, ${limit === 0n ? 'unlimited' : limit}]`);
    }
    const wantSource = input.contentSource === undefined ? null : this.#sourceRecord(input.contentSource);
    if (JSON.stringify(wantSource) !== JSON.stringify(existing.contentSource)) throw conflict('with another content source');
    if (input.parameters.grainSize !== undefined && input.parameters.grainSize !== existing.grainSize) throw conflict(`with grain size ${existing.grainSize}`);
    if ((input.parameters.fsType ?? null) !== existing.fsType) throw conflict(`with fsType ${existing.fsType ?? '(none)'}`);
    return existing;
  }

  async #resolveSource(src: ContentSource | undefined): Promise<{ volumeId: string; checkpoint?: string; size: number; grainSize: number } | undefined> {
    if (src === undefined) return undefined;
    if (src.kind === 'snapshot') {
      const { summary, index } = await this.requireSnapshot(src.snapshot).catch((err: unknown) => {
        if (isEngineError(err, ErrorCode.VolumeNotFound)) throw notFound(`source snapshot ${JSON.stringify(src.snapshotId)} not found`);
        throw err;
      });
      const cp = summary.checkpoints.filter((c) => !c.internal)[index] as VolumeSummary['checkpoints'][number];
      return { volumeId: src.snapshot.volumeId, checkpoint: cp.name, size: cp.size, grainSize: summary.grainSize };
    }
    const rec = await this.#state.readVolume(src.volumeId);
    if (rec === undefined || rec.deleted) throw notFound(`source volume ${JSON.stringify(src.volumeId)} not found`);
    const summary = await inspectVolume(this.#state.volumeDir(src.volumeId));
    return { volumeId: src.volumeId, size: summary.size, grainSize: summary.grainSize };
  }

  /**
   * The size to create: the capacity range, at least the file system's minimum (raised within limit_bytes)
   * and at least the source's size (OUT_OF_RANGE if the range forbids). The minimum counts before the
   * comparison with the source: a claim of 1 MiB of an xfs class got 300 MiB, and a copy of it asked
   * at the same 1 MiB is a copy at the source's size, not a shrink.
   */
  #chooseSize(range: ParsedCapacityRange | undefined, sourceSize: number | undefined, minimum: CreateVolumeInput['minimum']): number {
    const policy = { ...CAPACITY_POLICY, ...(minimum ? { minBytes: minimum.bytes, minReason: minimum.reason } : {}) };
    if (sourceSize === undefined) return Number(chooseCapacity(range, policy));
    const src = BigInt(sourceSize);
    const floor = minimum?.bytes ?? 0n;
    const required = range === undefined || range.requiredBytes === 0n ? 0n : range.requiredBytes > floor ? range.requiredBytes : floor;
    if (range !== undefined && required > 0n && required < src) {
      throw new CsiError(CsiErrorCode.OutOfRange, `required_bytes ${range.requiredBytes} is smaller than the source (${src} bytes)`);
    }
    if (range !== undefined && range.limitBytes > 0n && range.limitBytes < src) {
      throw new CsiError(CsiErrorCode.OutOfRange, `limit_bytes ${range.limitBytes} is smaller than the source (${src} bytes)`);
    }
    const chosen = range === undefined ? src : chooseCapacity(range, { ...policy, defaultBytes: src });
    return Number(chosen > src ? chosen : src);
  }

  async deleteVolume(volumeId: string): Promise<void> {
    const dir = this.#state.volumeDir(volumeId);
    const rec = await this.#state.readVolume(volumeId);
    if (rec === undefined) {
      await this.#state.removeVolume(volumeId); // nothing, or an unfinished create
      return;
    }
    if (rec.deleted) return;
    const stagedAt = await this.#node?.stagedAt(volumeId);
    if (stagedAt !== undefined) {
      throw new CsiError(CsiErrorCode.FailedPrecondition, `volume ${volumeId} is staged on this node at ${stagedAt}; unstage it first`);
    }
    let volume: Volume;
    try {
      volume = await Volume.open(dir);
    } catch (err) {
      if (isEngineError(err, ErrorCode.Locked)) throw new CsiError(CsiErrorCode.FailedPrecondition, `volume ${volumeId} is in use (being served); unstage it first`);
      throw err;
    }
    let keep: boolean;
    try {
      const tx = volume.transaction();
      if (tx !== null) throw new CsiError(CsiErrorCode.FailedPrecondition, `volume ${volumeId} is in transaction ${tx.txid} (${tx.state}); commit or abort it first`);
      keep = volume.checkpoints().length > 0 || volume.deferredCheckpoints().length > 0;
    } finally {
      await volume.close();
    }
    if (keep) {
      await this.#state.writeVolume({ ...rec, deleted: true });
      this.#log.info({ volumeId }, 'volume deleted; its data stays for its snapshots');
    } else {
      await this.#state.removeVolume(volumeId);
      this.#log.info({ volumeId }, 'volume deleted');
    }
  }

  async getVolume(volumeId: string): Promise<VolumeDescription> {
    return this.#describe(await this.requireRecord(volumeId));
  }

  async listVolumes(): Promise<VolumeDescription[]> {
    const out: VolumeDescription[] = [];
    for (const id of await this.#state.listVolumeIds()) {
      const rec = await this.#state.readVolume(id).catch(() => undefined);
      if (rec !== undefined && !rec.deleted) out.push(await this.#describe(rec));
    }
    return out;
  }

  async expandVolume(volumeId: string, capacity: ParsedCapacityRange): Promise<ExpandResult> {
    await this.requireRecord(volumeId);
    const wanted = Number(chooseCapacity(capacity, CAPACITY_POLICY));
    const dir = this.#state.volumeDir(volumeId);
    // Checked lock-free first, so a request that needs no change (a retry) or cannot be met opens nothing.
    const current = (await inspectVolume(dir)).size;
    if (capacity.limitBytes > 0n && BigInt(current) > capacity.limitBytes) {
      throw new CsiError(CsiErrorCode.OutOfRange, `volume ${volumeId} is already ${current} bytes, more than limit_bytes ${capacity.limitBytes}; volumes never shrink`);
    }
    const size =
      wanted <= current
        ? current
        : await withVolume(this.#access, dir, async (h) => {
            await h.expand(wanted);
            return wanted;
          });
    const deviceGrown = (await this.#node?.volumeGrown(volumeId, size)) ?? false;
    this.#log.info({ volumeId, size, deviceGrown }, 'volume expanded');
    return { capacityBytes: size, deviceGrown };
  }

  async availableCapacity(): Promise<bigint> {
    const s = await fsp.statfs(this.#state.root, { bigint: true });
    return s.bavail * s.bsize;
  }

  // ---- snapshots

  async createSnapshot(sourceVolumeId: string, name: string): Promise<SnapshotDescription> {
    const checkpoint = checkpointNameForSnapshot(name);
    await this.requireRecord(sourceVolumeId);
    // Snapshot names are unique across volumes: the same name on another volume is a conflict.
    for (const id of await this.#state.listVolumeIds()) {
      if (id === sourceVolumeId) continue;
      const summary = await inspectVolume(this.#state.volumeDir(id)).catch(() => undefined);
      if (summary?.checkpoints.some((c) => c.name === checkpoint && !c.internal) === true || summary?.deferred.some((d) => d.name === checkpoint) === true) {
        throw new CsiError(CsiErrorCode.AlreadyExists, `snapshot ${JSON.stringify(name)} already exists on volume ${id}`);
      }
    }
    return withVolume(this.#access, this.#state.volumeDir(sourceVolumeId), async (h) => {
      const view = await h.view();
      const found = view.checkpoints.find((c) => c.name === checkpoint);
      if (found !== undefined) return this.describeSnapshot(sourceVolumeId, found, await this.#groupOf(sourceVolumeId, checkpoint));
      const deferred = view.deferred.find((d) => d.name === checkpoint);
      if (deferred !== undefined) throw this.#deferredError(sourceVolumeId, deferred.txid);
      const res = await h.createCheckpoint(checkpoint);
      if (res.state === 'deferred') throw this.#deferredError(sourceVolumeId, res.deferred.txid);
      this.#log.info({ volumeId: sourceVolumeId, checkpoint }, 'snapshot cut');
      return this.describeSnapshot(sourceVolumeId, { ...res.checkpoint, createdAt: new Date(res.checkpoint.createdAt) }, '');
    });
  }

  #deferredError(volumeId: string, txid: string): CsiError {
    return new CsiError(CsiErrorCode.Aborted, `volume ${volumeId} is in transaction ${txid}; the snapshot is cut when it completes (retry)`);
  }

  async deleteSnapshot(ref: SnapshotRef): Promise<void> {
    const rec = await this.#state.readVolume(ref.volumeId);
    if (rec === undefined) return;
    const group = await this.#groupOf(ref.volumeId, ref.checkpoint);
    if (group !== '') {
      throw new CsiError(CsiErrorCode.InvalidArgument, `snapshot ${formatSnapshotId(ref.volumeId, ref.checkpoint)} is part of group snapshot ${group}; delete the group snapshot instead`);
    }
    await this.deleteCheckpoints(rec, [ref.checkpoint]);
  }

  /**
   * Deletes checkpoints of a volume (unknown ones are fine), then removes a `deleted` volume whose
   * last snapshot this was.
   */
  async deleteCheckpoints(rec: VolumeRecord, names: readonly string[]): Promise<void> {
    const remaining = await withVolume(this.#access, this.#state.volumeDir(rec.volumeId), async (h) => {
      for (const name of names) {
        await h.deleteCheckpoint(name).catch((err: unknown) => {
          // Local (EngineError) or served (ControlError): both carry the engine's code.
          if ((err as { code?: unknown }).code !== ErrorCode.CheckpointNotFound) throw err;
        });
      }
      const view = await h.view();
      return view.checkpoints.length + view.deferred.length;
    });
    this.#log.info({ volumeId: rec.volumeId, checkpoints: names }, 'snapshots deleted');
    if (rec.deleted && remaining === 0) {
      await this.#state.removeVolume(rec.volumeId);
      this.#log.info({ volumeId: rec.volumeId }, 'last snapshot of a deleted volume gone; volume removed');
    }
  }

  async getSnapshot(ref: SnapshotRef): Promise<SnapshotDescription> {
    const { summary, index } = await this.requireSnapshot(ref);
    const cp = summary.checkpoints.filter((c) => !c.internal)[index] as VolumeSummary['checkpoints'][number];
    return this.describeSnapshot(ref.volumeId, cp, await this.#groupOf(ref.volumeId, cp.name));
  }

  async listSnapshots(): Promise<SnapshotDescription[]> {
    const groups = new Map((await this.#state.listGroups()).map((g) => [g.groupId, g]));
    const out: SnapshotDescription[] = [];
    for (const id of await this.#state.listVolumeIds()) {
      if ((await this.#state.readVolume(id).catch(() => undefined)) === undefined) continue;
      const summary = await inspectVolume(this.#state.volumeDir(id)).catch((err: unknown) => {
        this.#log.warn({ volumeId: id, err: (err as Error).message }, 'cannot read volume metadata; its snapshots are not listed');
        return undefined;
      });
      for (const c of summary?.checkpoints ?? []) {
        if (c.internal) continue;
        const group = groups.get(c.name);
        out.push(this.describeSnapshot(id, c, group?.volumeIds.includes(id) === true ? group.groupId : ''));
      }
    }
    return out;
  }

  // ---- snapshot metadata

  async allocated(ref: SnapshotRef): Promise<{ sizeBytes: number; extents: Extent[] }> {
    const { summary, index } = await this.requireSnapshot(ref);
    const cp = summary.checkpoints.filter((c) => !c.internal)[index] as VolumeSummary['checkpoints'][number];
    const extents = await withVolume(this.#access, this.#state.volumeDir(ref.volumeId), (h) => h.allocated(cp.name));
    return { sizeBytes: cp.size, extents };
  }

  async changed(base: SnapshotRef, target: SnapshotRef): Promise<{ sizeBytes: number; extents: Extent[] }> {
    const b = await this.requireSnapshot(base);
    const t = await this.requireSnapshot(target);
    if (base.volumeId !== target.volumeId) {
      throw new CsiError(CsiErrorCode.InvalidArgument, `base snapshot (volume ${base.volumeId}) and target snapshot (volume ${target.volumeId}) must be of the same volume`);
    }
    if (b.index >= t.index) {
      throw new CsiError(CsiErrorCode.InvalidArgument, `base snapshot ${base.checkpoint} must be older than target snapshot ${target.checkpoint}`);
    }
    const size = (t.summary.checkpoints.filter((c) => !c.internal)[t.index] as VolumeSummary['checkpoints'][number]).size;
    const extents = await withVolume(this.#access, this.#state.volumeDir(base.volumeId), (h) => h.changed(base.checkpoint, target.checkpoint));
    return { sizeBytes: size, extents };
  }

  // ---- start-up

  /**
   * Start-up recovery of the controller side: removes unfinished creates (no csi.json) and deleted
   * volumes without snapshots, and opens every volume nobody serves, which finishes whatever a
   * crash interrupted (engine recovery). Volumes being served are recovered by their server.
   */
  async recover(): Promise<{ recovered: string[]; removed: string[] }> {
    const recovered: string[] = [];
    const removed: string[] = [];
    for (const id of await this.#state.listVolumeIds()) {
      const rec = await this.#state.readVolume(id);
      if (rec === undefined) {
        await this.#state.removeVolume(id);
        removed.push(id);
        continue;
      }
      let volume: Volume;
      try {
        volume = await Volume.open(this.#state.volumeDir(id));
      } catch (err) {
        if (isEngineError(err, ErrorCode.Locked)) continue; // served: its server recovered it
        this.#log.error({ volumeId: id, err: (err as Error).message }, 'volume cannot be opened; it is reported abnormal');
        continue;
      }
      let empty: boolean;
      try {
        const info = await volume.info();
        if (info.recovery.completed.length > 0) {
          recovered.push(id);
          this.#log.warn({ volumeId: id, completed: info.recovery.completed }, 'finished operations a crash interrupted');
        }
        empty = volume.checkpoints().length === 0 && volume.deferredCheckpoints().length === 0 && volume.transaction() === null;
      } finally {
        await volume.close();
      }
      if (rec.deleted && empty) {
        await this.#state.removeVolume(id);
        removed.push(id);
      }
    }
    return { recovered, removed };
  }
}
