/**
 * The plugin's state directory, and the small JSON records it keeps there. Layout:
 *
 *     <state>/volumes/<volumeId>/          an engine volume directory, plus
 *                        csi.json           its CSI record (VolumeRecord); written last on create,
 *                                           so a directory without it is an unfinished create
 *     <state>/run/                         0700: `<socket>` (NBD) and `<socket>.ctl` (control) of
 *                                           each served volume (see socketPath)
 *     <state>/node/<volumeId>/             the attach work dir (nbdfuse mountpoint, pid file, log)
 *                        stage.json         everything needed to re-adopt or tear down a staged
 *                                           volume after a plugin restart (StageRecord)
 *     <state>/groups/<groupId>.json        group snapshot records (GroupRecord)
 *     <state>/log/<volumeId>.log           the volume's `flashcsi serve` log
 *
 * Every record is replaced atomically: temp file, fsync, rename, directory fsync. A record that
 * fails to parse is reported, never guessed at.
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { AttachmentRecord } from '../host/attachment.js';
import type { FsType } from '../host/mounter.js';
import type { ProcessRef } from '../host/process.js';
import { CsiError, CsiErrorCode } from './errors.js';
import type { AccessMode } from './spec.js';

const VOLUME_RECORD = 'csi.json';
const STAGE_RECORD = 'stage.json';
/** sun_path holds 107 bytes; the control socket adds `.ctl`. */
const MAX_SOCKET_PATH = 107 - '.ctl'.length;

/** What CreateVolume recorded about a volume (csi.json). */
export interface VolumeRecord {
  readonly version: 1;
  /** The CSI name it was created under. */
  readonly name: string;
  readonly volumeId: string;
  /** Size chosen at creation, in bytes (decimal); a retried CreateVolume is compared with it. */
  readonly createdBytes: string;
  readonly grainSize: number;
  /** The StorageClass `fsType`, if any (the volume capability's fs_type wins at stage time). */
  readonly fsType: FsType | null;
  /** The StorageClass parameters as given (for ValidateVolumeCapabilities and ALREADY_EXISTS checks). */
  readonly parameters: Readonly<Record<string, string>>;
  readonly contentSource: { readonly kind: 'snapshot' | 'volume'; readonly id: string } | null;
  readonly created: string;
  /**
   * DeleteVolume ran while snapshots remained: the volume is hidden from ListVolumes and cannot be
   * staged; its directory goes when its last snapshot is deleted.
   */
  readonly deleted: boolean;
}

/** One NodePublishVolume target of a staged volume. */
export interface Publication {
  readonly targetPath: string;
  readonly readOnly: boolean;
}

/** What NodeStageVolume set up (stage.json), updated as each step completes. */
export interface StageRecord {
  readonly version: 1;
  readonly volumeId: string;
  /** 'staging' until every step succeeded; a record left in 'staging' is torn down at start-up. */
  readonly phase: 'staging' | 'staged';
  readonly stagingPath: string;
  readonly kind: 'mount' | 'block';
  readonly accessMode: AccessMode;
  /** Mount volumes: the file system mounted at the staging path. */
  readonly fsType: FsType | null;
  readonly mountFlags: readonly string[];
  /** The `flashcsi serve` process of the volume. */
  readonly serve: { readonly process: ProcessRef; readonly socket: string; readonly log: string } | null;
  readonly attachment: AttachmentRecord | null;
  /** Mount volumes: whether the staging path has been mounted. */
  readonly mounted: boolean;
  readonly publications: readonly Publication[];
  /** Set when start-up adoption found the data path damaged; reported as an abnormal condition. */
  readonly problem: string | null;
  readonly stagedAt: string;
}

/** A group snapshot (groups/<groupId>.json). */
export interface GroupRecord {
  readonly version: 1;
  readonly name: string;
  readonly groupId: string;
  /** Member volumes in request order; each member's snapshot is `<volumeId>@<groupId>`. */
  readonly volumeIds: readonly string[];
  readonly created: string;
}

/** Writes `data` to `file` atomically (temp file, fsync, rename, directory fsync), mode 0600. */
export async function writeFileAtomic(file: string, data: string): Promise<void> {
  const tmp = `${file}.tmp`;
  const fh = await fsp.open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fsp.rename(tmp, file);
  const dir = await fsp.open(path.dirname(file), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

async function readJson<T>(file: string): Promise<T | undefined> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw err;
  }
  try {
    return JSON.parse(text) as T;
  } catch (err) {
    throw new CsiError(CsiErrorCode.Internal, `${file} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
}

async function listNames(dir: string): Promise<string[]> {
  return (await fsp.readdir(dir).catch(() => [] as string[])).sort();
}

/** The state directory. Paths, and reading and writing its records. */
export class StateDir {
  constructor(readonly root: string) {}

  get volumesDir(): string {
    return path.join(this.root, 'volumes');
  }

  get runDir(): string {
    return path.join(this.root, 'run');
  }

  get nodeRoot(): string {
    return path.join(this.root, 'node');
  }

  get groupsDir(): string {
    return path.join(this.root, 'groups');
  }

  get logDir(): string {
    return path.join(this.root, 'log');
  }

  /** Creates the directories (0700). */
  async init(): Promise<void> {
    for (const dir of [this.root, this.volumesDir, this.runDir, this.nodeRoot, this.groupsDir, this.logDir]) {
      await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
      await fsp.chmod(dir, 0o700);
    }
  }

  volumeDir(volumeId: string): string {
    return path.join(this.volumesDir, volumeId);
  }

  /** Work dir of a staged volume (nbdfuse mountpoint, stage.json). */
  nodeDir(volumeId: string): string {
    return path.join(this.nodeRoot, volumeId);
  }

  /** Log of the volume's `flashcsi serve`. */
  logFile(volumeId: string): string {
    return path.join(this.logDir, `${volumeId}.log`);
  }

  /** Log of the nbdfuse attaching the volume on this node. */
  nbdfuseLogFile(volumeId: string): string {
    return path.join(this.logDir, `${volumeId}.nbdfuse.log`);
  }

  /**
   * The NBD socket of a served volume: `<run>/<volumeId>.sock`, or `<run>/h-<24 hex>.sock` when
   * that path (with `.ctl`) would not fit in a unix socket address.
   */
  socketPath(volumeId: string): string {
    const plain = path.join(this.runDir, `${volumeId}.sock`);
    if (Buffer.byteLength(plain) <= MAX_SOCKET_PATH) return plain;
    const hashed = path.join(this.runDir, `h-${createHash('sha256').update(volumeId).digest('hex').slice(0, 24)}.sock`);
    if (Buffer.byteLength(hashed) > MAX_SOCKET_PATH) {
      throw new CsiError(CsiErrorCode.FailedPrecondition, `state directory ${this.root} is too long for unix socket paths (at most ${MAX_SOCKET_PATH - 32} bytes)`);
    }
    return hashed;
  }

  // ---- volumes

  /** Ids of every directory under volumes/ (finished or not). */
  listVolumeIds(): Promise<string[]> {
    return listNames(this.volumesDir);
  }

  readVolume(volumeId: string): Promise<VolumeRecord | undefined> {
    return readJson<VolumeRecord>(path.join(this.volumeDir(volumeId), VOLUME_RECORD));
  }

  writeVolume(rec: VolumeRecord): Promise<void> {
    return writeFileAtomic(path.join(this.volumeDir(rec.volumeId), VOLUME_RECORD), `${JSON.stringify(rec, null, 2)}\n`);
  }

  /** Removes a volume's directory and its logs. */
  async removeVolume(volumeId: string): Promise<void> {
    await fsp.rm(this.volumeDir(volumeId), { recursive: true, force: true });
    await fsp.rm(this.logFile(volumeId), { force: true });
    await fsp.rm(this.nbdfuseLogFile(volumeId), { force: true });
  }

  // ---- node stage records

  readStage(volumeId: string): Promise<StageRecord | undefined> {
    return readJson<StageRecord>(path.join(this.nodeDir(volumeId), STAGE_RECORD));
  }

  async writeStage(rec: StageRecord): Promise<void> {
    await fsp.mkdir(this.nodeDir(rec.volumeId), { recursive: true, mode: 0o700 });
    await writeFileAtomic(path.join(this.nodeDir(rec.volumeId), STAGE_RECORD), `${JSON.stringify(rec, null, 2)}\n`);
  }

  /** Removes a volume's node work dir (stage.json and the empty FUSE mountpoint). */
  async removeStage(volumeId: string): Promise<void> {
    await fsp.rm(this.nodeDir(volumeId), { recursive: true, force: true });
  }

  /** Ids of volumes with a node work dir. */
  listStagedIds(): Promise<string[]> {
    return listNames(this.nodeRoot);
  }

  // ---- group snapshots

  private groupFile(groupId: string): string {
    return path.join(this.groupsDir, `${groupId}.json`);
  }

  readGroup(groupId: string): Promise<GroupRecord | undefined> {
    return readJson<GroupRecord>(this.groupFile(groupId));
  }

  writeGroup(rec: GroupRecord): Promise<void> {
    return writeFileAtomic(this.groupFile(rec.groupId), `${JSON.stringify(rec, null, 2)}\n`);
  }

  async removeGroup(groupId: string): Promise<void> {
    await fsp.rm(this.groupFile(groupId), { force: true });
  }

  async listGroups(): Promise<GroupRecord[]> {
    const out: GroupRecord[] = [];
    for (const name of await listNames(this.groupsDir)) {
      if (!name.endsWith('.json')) continue;
      const rec = await this.readGroup(name.slice(0, -'.json'.length));
      if (rec !== undefined) out.push(rec);
    }
    return out;
  }
}
