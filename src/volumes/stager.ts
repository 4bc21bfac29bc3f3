/**
 * The node side's storage logic (the Node service stays thin): stage a volume by starting its
 * data-path server and attaching it as a block device, publish it with bind mounts, tear it all
 * down again, report stats and health, grow it online, and re-adopt everything after a plugin
 * restart.
 *
 * Staging, step by step (stage.json records each step as it completes, so a crash at any point
 * leaves a record that says what to undo):
 *   1. `flashcsi serve <voldir> --socket <state>/run/<id>.sock` as its own detached process
 *      (src/host/serve-process.ts);
 *   2. attach (src/host/attach.ts): kernel nbd where /dev/nbd* exists (export ""), else serve's own
 *      FUSE file (or nbdfuse on the hidden `.attach` export, `--attach nbdfuse`) plus a loop device
 *      limited to the volume's size, so the device can grow;
 *   3. mount volumes: mkfs if the device is blank (`blkid -p`), grow an ext4 file system that is
 *      smaller than its device (offline, before mounting: the volume grew while unstaged, or an
 *      online grow was refused), mount at the staging path (xfs: also `nouuid`, as clones share
 *      their source's UUID; then xfs_growfs if it is smaller); block volumes: just the device.
 * Unstaging reverses it: unmount → detach (losetup -d, unmount the FUSE file) → SIGTERM
 * the server and wait for it by pid (it is not our child after a restart) → remove stage.json.
 *
 * Neither stopping nor SIGKILLing the plugin stops a server or nbdfuse: both run in their own
 * sessions and write their logs to files. At start-up `adoptAll` reads every stage.json:
 * everything alive → adopted as is; kernel nbd device still attached → its server is restarted if
 * it died and the device reconnected (kernel-keeper.ts, which also does this while the plugin
 * runs): the application sees no error; nbdfuse and only the server died → it is restarted on the
 * same socket, but the volume is reported abnormal, because nbdfuse's connections were to the dead
 * server and libnbd does not reconnect; everything gone (e.g. after a reboot) → the record is
 * cleaned up.
 *
 * Callers serialise per volume (the Node service takes the plugin's InFlight key).
 */
import { promises as fsp, readFileSync } from 'node:fs';
import path from 'node:path';
import { inspectVolume } from '../engine/index.js';
import { nbdAttacher, type Attacher } from '../host/attach.js';
import type { AttachmentRecord } from '../host/attachment.js';
import { FUSE_MOUNT_DIR } from '../host/fuse-loop.js';
import { blockDeviceSize } from '../host/block.js';
import type { FsStats, FsType, Mounter } from '../host/mounter.js';
import { deviceMajMin } from '../host/mounts.js';
import { isProcessAlive } from '../host/process.js';
import type { ServeLauncher } from '../host/serve-process.js';
import { readServeInfo } from '../nbd/control.js';
import { ATTACH_EXPORT_NAME } from '../nbd/volume-export.js';
import { componentLogger, type Logger } from '../log/logger.js';
import { CsiError, CsiErrorCode } from './errors.js';
import { KernelVolumeKeeper } from './kernel-keeper.js';
import type { InFlight } from './locks.js';
import type { Publication, StageRecord, StateDir } from './state.js';
import { chooseCapacity, resolveFsType, type ParsedCapability } from './spec.js';
import { engineVolumeAccess, withVolume, type VolumeAccess } from './volume-access.js';
import { CAPACITY_POLICY, type NodeHooks } from './local-volumes.js';

export interface StageInput {
  readonly volumeId: string;
  readonly stagingPath: string;
  readonly capability: ParsedCapability;
}

export interface PublishInput extends StageInput {
  readonly targetPath: string;
  readonly readOnly: boolean;
}

export interface VolumeStats {
  readonly kind: 'mount' | 'block';
  /** Mount volumes: statfs of the path. */
  readonly fs?: FsStats;
  /** Block volumes: the device's size. */
  readonly deviceBytes?: number;
  readonly problems: readonly string[];
}

/** Node-side volume operations (the Node service's storage interface). */
export interface NodeVolumes {
  stage(input: StageInput): Promise<void>;
  /** Not an error when the volume is not staged (at that path). */
  unstage(volumeId: string, stagingPath: string): Promise<void>;
  publish(input: PublishInput): Promise<void>;
  /** Not an error when the volume is not published at that path. */
  unpublish(volumeId: string, targetPath: string): Promise<void>;
  stats(volumeId: string, volumePath: string): Promise<VolumeStats>;
  /** Grows the attached device and file system to the volume's size; returns that size. */
  expand(volumeId: string, volumePath: string, requiredBytes: bigint): Promise<number>;
}

export interface AdoptionReport {
  readonly adopted: string[];
  readonly restarted: string[];
  readonly abnormal: string[];
  readonly cleaned: string[];
}

export interface NodeStagerOptions {
  readonly state: StateDir;
  /** How the volume itself is reached (NodeExpandVolume may grow it); engineVolumeAccess by default. */
  readonly access?: VolumeAccess;
  readonly launcher: ServeLauncher;
  readonly mounter: Mounter;
  readonly attacher?: Attacher;
  readonly logger: Logger;
  /** The plugin's in-flight keys: the kernel keeper restarts a volume's server only under its key. */
  readonly inflight?: InFlight;
}

function notFound(volumeId: string, why = 'not found'): CsiError {
  return new CsiError(CsiErrorCode.NotFound, `volume ${JSON.stringify(volumeId)} ${why}`);
}

/** How long start-up adoption waits for a kernel-attached volume to be reconnected. */
const ADOPTION_HEAL_MS = 60_000;

const RESTARTED_PROBLEM =
  "the volume's data-path server (flashcsi serve) had died; the plugin restarted it, but the attached device's NBD connections were to the old server " +
  'and cannot reconnect (libnbd does not reconnect): I/O on this volume fails until it is unstaged and staged again (restart the pods using it)';

export class NodeStager implements NodeVolumes, NodeHooks {
  readonly #state: StateDir;
  readonly #launcher: ServeLauncher;
  readonly #mounter: Mounter;
  readonly #attacher: Attacher;
  readonly #access: VolumeAccess;
  readonly #log: Logger;
  readonly #kernel: KernelVolumeKeeper;

  constructor(options: NodeStagerOptions) {
    this.#state = options.state;
    this.#access = options.access ?? engineVolumeAccess;
    this.#launcher = options.launcher;
    this.#mounter = options.mounter;
    this.#attacher = options.attacher ?? nbdAttacher();
    this.#log = componentLogger(options.logger, 'node-volumes');
    const inflight = options.inflight;
    this.#kernel = new KernelVolumeKeeper({
      state: this.#state,
      launcher: this.#launcher,
      logger: options.logger,
      ...(inflight === undefined ? {} : { lock: (volumeId: string) => inflight.acquire(volumeId) }),
    });
  }

  /** Stops watching kernel-attached volumes (the plugin is stopping; the volumes keep running). */
  close(): void {
    this.#kernel.close();
  }

  // ---- stage / unstage

  async stage(input: StageInput): Promise<void> {
    const { volumeId, stagingPath, capability } = input;
    const vol = await this.#state.readVolume(volumeId);
    if (vol === undefined || vol.deleted) throw notFound(volumeId);
    const fsType = resolveFsType(capability, { grainSize: undefined, fsType: vol.fsType ?? undefined }) ?? null;
    const existing = await this.#state.readStage(volumeId);
    if (existing?.phase === 'staged') {
      if (existing.stagingPath !== stagingPath) {
        throw new CsiError(CsiErrorCode.FailedPrecondition, `volume ${volumeId} is already staged at ${existing.stagingPath}`);
      }
      const incompatible =
        existing.kind !== capability.kind ||
        existing.accessMode !== capability.accessMode ||
        (capability.kind === 'mount' && capability.fsType !== '' && capability.fsType !== existing.fsType);
      if (incompatible) throw new CsiError(CsiErrorCode.AlreadyExists, `volume ${volumeId} is staged at ${stagingPath} with an incompatible capability`);
      return; // idempotent
    }
    if (existing !== undefined) await this.#teardown(existing); // a stage that failed or crashed midway

    const dir = this.#state.volumeDir(volumeId);
    const size = (await inspectVolume(dir)).size;
    let rec: StageRecord = {
      version: 1,
      volumeId,
      phase: 'staging',
      stagingPath,
      kind: capability.kind,
      accessMode: capability.accessMode,
      fsType: capability.kind === 'mount' ? fsType : null,
      mountFlags: capability.kind === 'mount' ? capability.mountFlags : [],
      serve: null,
      attachment: null,
      mounted: false,
      publications: [],
      problem: null,
      stagedAt: new Date().toISOString(),
    };
    const save = async (next: StageRecord): Promise<void> => {
      rec = next;
      await this.#state.writeStage(rec);
    };
    await save(rec);
    try {
      const socket = this.#state.socketPath(volumeId);
      const serve = await this.#launcher.start({ volumeDir: dir, socket, logFile: this.#state.logFile(volumeId) });
      await save({ ...rec, serve: { process: serve.process, socket, log: this.#state.logFile(volumeId) } });
      const method = await this.#attacher.method();
      const att = await this.#attacher.attach({
        socketPath: socket,
        exportName: method === 'nbdfuse' ? ATTACH_EXPORT_NAME : '',
        workDir: this.#state.nodeDir(volumeId),
        logFile: this.#state.nbdfuseLogFile(volumeId),
        identifier: `flashcsi:${volumeId}`,
        ...(method === 'kernel' ? {} : { sizeLimit: size }),
      });
      const attachment: AttachmentRecord = {
        method: att.method,
        device: att.device,
        ...(att.fuse === undefined ? {} : { fuse: att.fuse }),
        ...(att.identifier === undefined ? {} : { identifier: att.identifier }),
        ...(att.connections === undefined ? {} : { connections: att.connections }),
      };
      await save({ ...rec, attachment });
      if (capability.kind === 'mount') {
        const mountedFs = await this.#prepareFs(att.device, fsType as FsType, size);
        await fsp.mkdir(stagingPath, { recursive: true, mode: 0o750 });
        const options = [...capability.mountFlags];
        if (mountedFs === 'xfs') options.push('nouuid');
        if (capability.accessMode === 'SINGLE_NODE_READER_ONLY') options.push('ro');
        await this.#mounter.mount(att.device, stagingPath, mountedFs, options);
        await save({ ...rec, fsType: mountedFs as FsType, mounted: true });
        if (mountedFs === 'xfs' && capability.accessMode !== 'SINGLE_NODE_READER_ONLY') await this.#mounter.growFs(att.device, stagingPath, 'xfs');
      }
      await save({ ...rec, phase: 'staged' });
      this.#kernel.watch(volumeId, attachment);
      this.#log.info({ volumeId, stagingPath, device: att.device, method: att.method, kind: capability.kind }, 'volume staged');
    } catch (err) {
      this.#log.error({ volumeId, err: (err as Error).message }, 'stage failed; undoing the steps done');
      await this.#teardown(rec).catch((e: unknown) => this.#log.error({ volumeId, err: (e as Error).message }, 'undoing a failed stage failed'));
      throw err;
    }
  }

  /** Makes sure the device holds a file system that fills it; returns its type. */
  async #prepareFs(device: string, wanted: FsType, size: number): Promise<string> {
    const found = await this.#mounter.probeFsType(device);
    if (found === undefined) {
      await this.#mounter.makeFs(device, wanted);
      return wanted;
    }
    if (found !== wanted) this.#log.warn({ device, found, wanted }, 'the volume already holds another file system; mounting it as it is');
    if (found === 'ext4') {
      const fsSize = await this.#mounter.fsSize(device, found);
      if (fsSize !== undefined && fsSize < size - 1024 * 1024) await this.#mounter.growFsOffline(device, found);
    }
    return found;
  }

  async unstage(volumeId: string, stagingPath: string): Promise<void> {
    const rec = await this.#state.readStage(volumeId);
    if (rec === undefined) {
      if ((await this.#state.readVolume(volumeId)) === undefined) throw notFound(volumeId);
      return;
    }
    if (rec.stagingPath !== stagingPath) return; // not staged there: nothing to do
    for (const pub of rec.publications) {
      if (await this.#mounter.isMountPoint(pub.targetPath)) {
        throw new CsiError(CsiErrorCode.FailedPrecondition, `volume ${volumeId} is still published at ${pub.targetPath}; unpublish it first`);
      }
    }
    await this.#teardown(rec);
    this.#log.info({ volumeId, stagingPath }, 'volume unstaged');
  }

  /** Undoes whatever a stage record says was done, in reverse order; each step skips what is gone. */
  async #teardown(rec: StageRecord): Promise<void> {
    for (const pub of rec.publications) await this.#unmountTarget(rec, pub.targetPath, true);
    if (rec.kind === 'mount' && (await this.#mounter.isMountPoint(rec.stagingPath)) && (rec.mounted || (await this.#mountIsOurs(rec, rec.stagingPath)))) {
      await this.#mounter.unmount(rec.stagingPath);
    }
    await this.#kernel.unwatch(rec.volumeId);
    if (rec.attachment !== null) await this.#attacher.detach(rec.attachment);
    if (rec.serve !== null) await this.#launcher.stop(rec.serve.process);
    await this.#state.removeStage(rec.volumeId);
  }

  // ---- publish / unpublish

  async publish(input: PublishInput): Promise<void> {
    const { volumeId, targetPath, capability } = input;
    const vol = await this.#state.readVolume(volumeId);
    if (vol === undefined) throw notFound(volumeId);
    const rec = await this.#state.readStage(volumeId);
    if (rec?.phase !== 'staged') throw new CsiError(CsiErrorCode.FailedPrecondition, `volume ${volumeId} is not staged on this node; stage it first`);
    if (rec.stagingPath !== input.stagingPath) {
      throw new CsiError(CsiErrorCode.FailedPrecondition, `volume ${volumeId} is staged at ${rec.stagingPath}, not at ${input.stagingPath}`);
    }
    if (capability.kind !== rec.kind) {
      throw new CsiError(CsiErrorCode.FailedPrecondition, `volume ${volumeId} is staged as a ${rec.kind} volume; it cannot be published as ${capability.kind}`);
    }
    const readOnly = input.readOnly || capability.accessMode === 'SINGLE_NODE_READER_ONLY';
    const same = rec.publications.find((p) => p.targetPath === targetPath);
    if (same !== undefined) {
      if (same.readOnly !== readOnly) throw new CsiError(CsiErrorCode.AlreadyExists, `volume ${volumeId} is published at ${targetPath} ${same.readOnly ? 'read-only' : 'read-write'}`);
      if (await this.#mounter.isMountPoint(targetPath)) return; // idempotent
    } else if (rec.publications.length > 0 && capability.accessMode === 'SINGLE_NODE_SINGLE_WRITER') {
      throw new CsiError(CsiErrorCode.FailedPrecondition, `volume ${volumeId} (SINGLE_NODE_SINGLE_WRITER) is already published at ${rec.publications[0]?.targetPath ?? '?'}`);
    }
    const device = rec.attachment?.device;
    if (device === undefined) throw new CsiError(CsiErrorCode.Internal, `stage record of ${volumeId} has no device`);
    if (rec.kind === 'mount') {
      await fsp.mkdir(targetPath, { recursive: true, mode: 0o750 });
      await this.#mounter.bindMount(rec.stagingPath, targetPath, readOnly);
    } else {
      await fsp.mkdir(path.dirname(targetPath), { recursive: true, mode: 0o750 });
      await (await fsp.open(targetPath, 'a', 0o640)).close(); // the bind mount needs a file to cover
      await this.#mounter.bindMount(device, targetPath, readOnly);
    }
    const publications: Publication[] = [...rec.publications.filter((p) => p.targetPath !== targetPath), { targetPath, readOnly }];
    await this.#state.writeStage({ ...rec, publications });
    this.#log.info({ volumeId, targetPath, readOnly }, 'volume published');
  }

  async unpublish(volumeId: string, targetPath: string): Promise<void> {
    const rec = await this.#state.readStage(volumeId);
    if (rec === undefined && (await this.#state.readVolume(volumeId)) === undefined) throw notFound(volumeId);
    if (rec !== undefined) await this.#unmountTarget(rec, targetPath, rec.publications.some((p) => p.targetPath === targetPath));
    if (await this.#mounter.isMountPoint(targetPath)) {
      // Mounted, but not by this volume: not ours to touch (the volume is not published there).
      this.#log.info({ volumeId, targetPath }, 'unpublish: the target is a mount of something else; left alone');
      return;
    }
    await removeTarget(targetPath);
    if (rec !== undefined && rec.publications.some((p) => p.targetPath === targetPath)) {
      await this.#state.writeStage({ ...rec, publications: rec.publications.filter((p) => p.targetPath !== targetPath) });
    }
    this.#log.info({ volumeId, targetPath }, 'volume unpublished');
  }

  /** Unmounts `target` while it is a mount of this volume (bind mounts may stack). */
  async #unmountTarget(rec: StageRecord, target: string, recorded: boolean): Promise<void> {
    for (let i = 0; i < 8 && (await this.#mounter.isMountPoint(target)); i++) {
      if (!recorded && !(await this.#mountIsOurs(rec, target))) return;
      await this.#mounter.unmount(target);
    }
  }

  /** Whether the top mount at `p` is this volume's device (a file system on it, or the device node itself). */
  async #mountIsOurs(rec: StageRecord, p: string): Promise<boolean> {
    const device = rec.attachment?.device;
    if (device === undefined) return false;
    const majMin = await deviceMajMin(device);
    const top = (await this.#mounter.mounts()).filter((m) => m.mountPoint === p).at(-1);
    if (top === undefined) return false;
    return top.majMin === majMin || (top.fsType === 'devtmpfs' && top.root === `/${path.basename(device)}`);
  }

  // ---- stats / expand / health

  async stats(volumeId: string, volumePath: string): Promise<VolumeStats> {
    const rec = await this.#requireStaged(volumeId, volumePath);
    const problems = await this.problemsOf(rec);
    if (rec.kind === 'block') {
      return { kind: 'block', deviceBytes: rec.attachment === null ? 0 : await blockDeviceSize(rec.attachment.device), problems };
    }
    return { kind: 'mount', fs: await this.#mounter.statfs(volumePath), problems };
  }

  /** The stage record, if `volumePath` is its staging path or one of its targets; NOT_FOUND otherwise. */
  async #requireStaged(volumeId: string, volumePath: string): Promise<StageRecord> {
    if ((await this.#state.readVolume(volumeId)) === undefined) throw notFound(volumeId);
    const rec = await this.#state.readStage(volumeId);
    if (rec?.phase !== 'staged') throw notFound(volumeId, 'is not staged on this node');
    const known = volumePath === rec.stagingPath || rec.publications.some((p) => p.targetPath === volumePath);
    const exists = await fsp.stat(volumePath).then(
      () => true,
      () => false,
    );
    if (!known || !exists) throw notFound(volumeId, `is not available at ${volumePath}`);
    return rec;
  }

  async expand(volumeId: string, volumePath: string, requiredBytes: bigint): Promise<number> {
    const rec = await this.#requireStaged(volumeId, volumePath);
    const dir = this.#state.volumeDir(volumeId);
    let size = (await inspectVolume(dir)).size;
    if (requiredBytes > BigInt(size)) {
      // The controller did not grow it (e.g. a controller-mode plugin elsewhere that does not hold
      // the volume): the node holds it, so the node grows it, through its server.
      const wanted = Number(chooseCapacity({ requiredBytes, limitBytes: 0n }, CAPACITY_POLICY));
      await withVolume(this.#access, dir, (h) => h.expand(wanted));
      size = wanted;
    }
    const att = rec.attachment;
    if (att === null) throw new CsiError(CsiErrorCode.Internal, `stage record of ${volumeId} has no device`);
    if (!(await this.#attacher.grow(att, size))) {
      throw new CsiError(
        CsiErrorCode.FailedPrecondition,
        `volume ${volumeId} is attached through the kernel nbd driver, which does not resize an attached device: unstage and stage it again to see ${size} bytes`,
      );
    }
    if (rec.kind === 'mount' && rec.fsType !== null) await this.#mounter.growFs(att.device, rec.stagingPath, rec.fsType);
    this.#log.info({ volumeId, size }, 'volume expanded on the node');
    return size;
  }

  /** What is wrong with a staged volume's data path (empty when healthy). */
  async problemsOf(rec: StageRecord): Promise<string[]> {
    const problems: string[] = [];
    if (rec.problem !== null) problems.push(rec.problem);
    if (rec.serve !== null && !isProcessAlive(rec.serve.process)) {
      problems.push(`the volume's data-path server (flashcsi serve, pid ${rec.serve.process.pid}) is not running`);
    }
    if (rec.attachment !== null) problems.push(...(await this.#attacher.problems(rec.attachment)));
    if (rec.kind === 'mount' && rec.phase === 'staged' && !(await this.#mounter.isMountPoint(rec.stagingPath))) {
      problems.push(`the staging mount ${rec.stagingPath} is gone`);
    }
    return problems;
  }

  // ---- NodeHooks (for the controller side)

  async problems(volumeId: string): Promise<string[]> {
    const rec = await this.#state.readStage(volumeId);
    return rec?.phase === 'staged' ? this.problemsOf(rec) : [];
  }

  async stagedAt(volumeId: string): Promise<string | undefined> {
    return (await this.#state.readStage(volumeId))?.stagingPath;
  }

  async volumeGrown(volumeId: string, size: number): Promise<boolean> {
    const rec = await this.#state.readStage(volumeId);
    if (rec === undefined || rec.attachment === null) return true; // not attached: it is attached at its new size later
    return this.#attacher.grow(rec.attachment, size);
  }

  async isBlock(volumeId: string): Promise<boolean | undefined> {
    const rec = await this.#state.readStage(volumeId);
    return rec === undefined ? undefined : rec.kind === 'block';
  }

  // ---- start-up

  /** Re-adopts every staged volume after a (re)start; see the module comment. */
  async adoptAll(): Promise<AdoptionReport> {
    const report: AdoptionReport = { adopted: [], restarted: [], abnormal: [], cleaned: [] };
    for (const volumeId of await this.#state.listStagedIds()) {
      try {
        await this.#adopt(volumeId, report);
      } catch (err) {
        this.#log.error({ volumeId, err: (err as Error).message }, 'adoption failed; the volume is reported abnormal');
        report.abnormal.push(volumeId);
      }
    }
    await this.#stopOrphanServers();
    this.#log.info(report, 'node adoption done');
    return report;
  }

  async #adopt(volumeId: string, report: AdoptionReport): Promise<void> {
    const rec = await this.#state.readStage(volumeId);
    if (rec === undefined) {
      const fuse = path.join(this.#state.nodeDir(volumeId), FUSE_MOUNT_DIR);
      if (!(await this.#mounter.isMountPoint(fuse))) await this.#state.removeStage(volumeId);
      return;
    }
    if (rec.phase === 'staging') {
      await this.#teardown(rec); // the plugin died while staging: the CO retries the stage
      report.cleaned.push(volumeId);
      return;
    }
    const serveAlive = rec.serve !== null && isProcessAlive(rec.serve.process);
    const attachProblems = rec.attachment === null ? ['not attached'] : await this.#attacher.problems(rec.attachment);
    const mountOk = rec.kind === 'block' || (await this.#mounter.isMountPoint(rec.stagingPath));
    if (rec.attachment?.method === 'kernel' && rec.attachment.identifier !== undefined && attachProblems.length === 0 && mountOk && rec.problem === null) {
      // The device holds the application's I/O while its connections are dead: restart the server
      // if it died and reconnect, so nothing reaches the application (kernel-keeper.ts). A device
      // recorded without an identifier (attached by nbd-client, before the netlink attach) cannot be
      // reconfigured: it takes the nbdfuse path's way below.
      this.#kernel.watch(volumeId, rec.attachment);
      let timer: NodeJS.Timeout | undefined;
      const healed = await Promise.race([
        this.#kernel.heal(volumeId).then(() => true),
        new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ADOPTION_HEAL_MS))),
      ]).finally(() => clearTimeout(timer));
      (serveAlive ? report.adopted : report.restarted).push(volumeId);
      // Not healed in time: reported abnormal now; the keeper goes on trying in the background.
      if (!healed) report.abnormal.push(volumeId);
      return;
    }
    if (serveAlive && attachProblems.length === 0 && mountOk) {
      report.adopted.push(volumeId);
      if (rec.problem !== null) report.abnormal.push(volumeId);
      return;
    }
    const fuseAlive = rec.attachment?.fuse !== undefined && isProcessAlive(rec.attachment.fuse.process);
    if (!serveAlive && !fuseAlive && !mountOk) {
      await this.#teardown(rec).catch(async (err: unknown) => {
        this.#log.warn({ volumeId, err: (err as Error).message }, 'cleaning up a vanished stage left something behind');
        await this.#state.removeStage(volumeId);
      });
      report.cleaned.push(volumeId);
      return;
    }
    if (!serveAlive && attachProblems.length === 0 && mountOk && rec.serve !== null) {
      const serve = await this.#launcher.start({ volumeDir: this.#state.volumeDir(volumeId), socket: rec.serve.socket, logFile: rec.serve.log });
      await this.#state.writeStage({ ...rec, serve: { ...rec.serve, process: serve.process }, problem: RESTARTED_PROBLEM });
      this.#log.error({ volumeId, pid: serve.process.pid }, RESTARTED_PROBLEM);
      report.restarted.push(volumeId);
      report.abnormal.push(volumeId);
      return;
    }
    const problems = await this.problemsOf(rec);
    await this.#state.writeStage({ ...rec, problem: problems.join('; ') });
    this.#log.error({ volumeId, problems }, 'staged volume found damaged at start-up; it is reported abnormal until unstaged');
    report.abnormal.push(volumeId);
  }

  /** Stops `flashcsi serve` processes of volumes that no stage record claims (a stage that crashed before recording its server). */
  async #stopOrphanServers(): Promise<void> {
    for (const volumeId of await this.#state.listVolumeIds()) {
      const dir = this.#state.volumeDir(volumeId);
      const info = readServeInfo(dir);
      if (info === null || (await this.#state.readStage(volumeId)) !== undefined) continue;
      const args = procCmdline(info.pid);
      if (!args.includes('serve') || !args.includes(dir)) continue; // gone, or not a server of this volume
      this.#log.warn({ volumeId, pid: info.pid }, 'stopping a data-path server no stage record claims');
      await this.#launcher.stop({ pid: info.pid, startTime: '' });
    }
  }
}

/** The arguments of a running process ([] if it is gone). */
function procCmdline(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  } catch {
    return [];
  }
}

/** Removes a publish target: an empty directory, or the empty file a block bind mount covered. */
async function removeTarget(targetPath: string): Promise<void> {
  const st = await fsp.lstat(targetPath).catch(() => undefined);
  if (st === undefined) return;
  if (st.isDirectory()) await fsp.rmdir(targetPath);
  else if (st.isFile() && st.size === 0) await fsp.unlink(targetPath);
  else throw new CsiError(CsiErrorCode.FailedPrecondition, `${targetPath} is not a publish target flashcsi made (not an empty directory or file); left alone`);
}
