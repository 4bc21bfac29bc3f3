/**
 * Group snapshots (the GroupController service's storage side). A group snapshot is one checkpoint
 * per member volume, all named after the group id, cut write-order consistently:
 *
 *   1. open every member (locally, or through its server's control socket when it is staged);
 *   2. freeze ALL of them: each freeze waits for that volume's in-flight writes and holds new ones;
 *   3. cut every member's checkpoint under its freeze;
 *   4. thaw all.
 *
 * While every member is frozen no write completes anywhere, so the cuts are all taken at one
 * instant relative to each write stream: a write that completed before the cut of any member was
 * issued before all of them (the spec's write-order consistency). On any failure every member is
 * thawed and the checkpoints already cut are deleted. The record in groups/<id>.json is written
 * only after every cut succeeded; a crash before that leaves member checkpoints without a record,
 * which a retry of the same request finds and replaces.
 *
 * Callers serialise on the group id and every member volume id.
 */
import { inspectVolume } from '../engine/index.js';
import { componentLogger, type Logger } from '../log/logger.js';
import { CsiError, CsiErrorCode } from './errors.js';
import { formatSnapshotId, groupIdForName } from './ids.js';
import type { GroupRecord, StateDir } from './state.js';
import type { FrozenHandle, VolumeAccess, VolumeHandle } from './volume-access.js';
import type { LocalVolumes, SnapshotDescription } from './local-volumes.js';

export interface GroupSnapshotDescription {
  readonly groupSnapshotId: string;
  readonly snapshots: readonly SnapshotDescription[];
  readonly createdAt: Date;
  readonly readyToUse: boolean;
}

export interface GroupSnapshotProvider {
  createGroupSnapshot(name: string, volumeIds: readonly string[]): Promise<GroupSnapshotDescription>;
  /** NOT_FOUND for an unknown group; INVALID_ARGUMENT when `snapshotIds` (if given) do not match. */
  getGroupSnapshot(groupId: string, snapshotIds: readonly string[]): Promise<GroupSnapshotDescription>;
  /** Deletes the group and its member snapshots; not an error when it does not exist. */
  deleteGroupSnapshot(groupId: string, snapshotIds: readonly string[]): Promise<void>;
}

export interface GroupSnapshotsOptions {
  readonly state: StateDir;
  readonly access: VolumeAccess;
  readonly volumes: LocalVolumes;
  readonly logger: Logger;
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && [...a].sort().join('\n') === [...b].sort().join('\n');
}

export class GroupSnapshots implements GroupSnapshotProvider {
  readonly #state: StateDir;
  readonly #access: VolumeAccess;
  readonly #volumes: LocalVolumes;
  readonly #log: Logger;

  constructor(options: GroupSnapshotsOptions) {
    this.#state = options.state;
    this.#access = options.access;
    this.#volumes = options.volumes;
    this.#log = componentLogger(options.logger, 'group-snapshots');
  }

  /** The group id of a name, for the caller's locks. */
  static idFor(name: string): string {
    return groupIdForName(name);
  }

  async #describe(rec: GroupRecord): Promise<GroupSnapshotDescription> {
    const snapshots: SnapshotDescription[] = [];
    for (const volumeId of rec.volumeIds) {
      const summary = await inspectVolume(this.#state.volumeDir(volumeId)).catch(() => undefined);
      const cp = summary?.checkpoints.find((c) => c.name === rec.groupId && !c.internal);
      if (cp === undefined) throw new CsiError(CsiErrorCode.Internal, `group snapshot ${rec.groupId}: member volume ${volumeId} has lost its checkpoint`);
      snapshots.push(this.#volumes.describeSnapshot(volumeId, cp, rec.groupId));
    }
    return { groupSnapshotId: rec.groupId, snapshots, createdAt: new Date(rec.created), readyToUse: true };
  }

  #checkSnapshotIds(rec: GroupRecord, snapshotIds: readonly string[]): void {
    if (snapshotIds.length === 0) return;
    const members = rec.volumeIds.map((v) => formatSnapshotId(v, rec.groupId));
    if (!sameSet(members, snapshotIds)) {
      throw new CsiError(CsiErrorCode.InvalidArgument, `snapshot_ids do not match group snapshot ${rec.groupId} (members: ${members.join(', ')})`);
    }
  }

  async createGroupSnapshot(name: string, volumeIds: readonly string[]): Promise<GroupSnapshotDescription> {
    const groupId = groupIdForName(name);
    const existing = await this.#state.readGroup(groupId);
    if (existing !== undefined) {
      if (existing.name !== name || !sameSet(existing.volumeIds, volumeIds)) {
        throw new CsiError(CsiErrorCode.AlreadyExists, `group snapshot ${JSON.stringify(name)} already exists with other source volumes (${existing.volumeIds.join(', ')})`);
      }
      return this.#describe(existing);
    }
    for (const id of volumeIds) await this.#volumes.requireRecord(id); // NOT_FOUND unless on this node

    const handles: VolumeHandle[] = [];
    const frozen: FrozenHandle[] = [];
    let failure: unknown;
    try {
      for (const id of volumeIds) handles.push(await this.#access.open(this.#state.volumeDir(id)));
      // Checkpoints of this name without a record are left by an attempt that crashed: start over.
      for (const h of handles) await this.#dropLeftover(h, groupId);
      for (const h of handles) frozen.push(await h.freeze());
      for (const [i, f] of frozen.entries()) {
        const res = await f.checkpoint(groupId);
        if (res.state === 'deferred') {
          throw new CsiError(
            CsiErrorCode.Aborted,
            `volume ${volumeIds[i] ?? '?'} is in transaction ${res.deferred.txid}; a group snapshot cannot wait for it: retry when the transaction completes`,
          );
        }
      }
    } catch (err) {
      failure = err;
    } finally {
      for (const f of frozen) await f.thaw().catch((err: unknown) => this.#log.error({ err: (err as Error).message }, 'thaw failed'));
    }
    try {
      if (failure !== undefined) {
        for (const h of handles) await this.#dropLeftover(h, groupId).catch((err: unknown) => this.#log.error({ err: (err as Error).message }, 'cleanup after a failed group snapshot failed'));
        throw failure;
      }
    } finally {
      for (const h of handles) await h.close().catch(() => undefined);
    }
    const rec: GroupRecord = { version: 1, name, groupId, volumeIds: [...volumeIds], created: new Date().toISOString() };
    await this.#state.writeGroup(rec);
    this.#log.info({ groupId, volumeIds }, 'group snapshot cut');
    return this.#describe(rec);
  }

  async #dropLeftover(h: VolumeHandle, groupId: string): Promise<void> {
    const view = await h.view();
    if (view.checkpoints.some((c) => c.name === groupId) || view.deferred.some((d) => d.name === groupId)) await h.deleteCheckpoint(groupId);
  }

  async getGroupSnapshot(groupId: string, snapshotIds: readonly string[]): Promise<GroupSnapshotDescription> {
    const rec = await this.#state.readGroup(groupId);
    if (rec === undefined) throw new CsiError(CsiErrorCode.NotFound, `group snapshot ${JSON.stringify(groupId)} not found`);
    this.#checkSnapshotIds(rec, snapshotIds);
    return this.#describe(rec);
  }

  async deleteGroupSnapshot(groupId: string, snapshotIds: readonly string[]): Promise<void> {
    const rec = await this.#state.readGroup(groupId);
    if (rec === undefined) return;
    this.#checkSnapshotIds(rec, snapshotIds);
    for (const volumeId of rec.volumeIds) {
      const vol = await this.#state.readVolume(volumeId);
      if (vol !== undefined) await this.#volumes.deleteCheckpoints(vol, [groupId]);
    }
    await this.#state.removeGroup(groupId);
    this.#log.info({ groupId }, 'group snapshot deleted');
  }
}
