// The kubelet's part, played by the test: register the node (Node + CSINode from the plugin's
// NodeGetInfo, as node-driver-registrar and the kubelet do), and make the CSI node calls a kubelet
// makes for a pod's volume — NodeStageVolume then NodePublishVolume, with real staging and target
// paths, and back. "Attached" in the tests means staged and published through these calls.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, promises as fsp } from 'node:fs';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { CoreV1Api, StorageV1Api, type KubeConfig, type V1PersistentVolume } from '@kubernetes/client-node';
import { DRIVER_NAME as DRIVER } from '../../src/constants.js';
import { call } from '../csi/plugin-process.js';
import type { NodeHost } from './cluster.js';

const execFileP = promisify(execFile);

/** `dd` with its output as a Buffer. */
async function dd(args: string[]): Promise<Buffer> {
  const { stdout } = await execFileP('dd', [...args, 'status=none'], { encoding: 'buffer', maxBuffer: 64 * 1024 * 1024 });
  return stdout;
}

export interface Attachment {
  readonly pvc: string;
  readonly pv: string;
  readonly volumeId: string;
  readonly block: boolean;
  readonly staging: string;
  /** Where the pod sees the volume: a directory (file system) or a device file (block). */
  readonly target: string;
}

const GRAIN = 4096;

/**
 * A CSI node call as the kubelet makes it: ABORTED (another operation on the volume is in flight,
 * e.g. the node agent looking at it) and UNAVAILABLE (the plugin is restarting) are retried with
 * back-off until a deadline; any other error fails at once.
 */
async function kubeletCall<T = Record<string, unknown>>(service: object, method: string, req: unknown, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (let delay = 100; ; delay = Math.min(delay * 2, 2000)) {
    try {
      return await call<T>(service, method, req);
    } catch (err) {
      const code = (err as { code?: number }).code;
      if ((code !== 10 && code !== 14) || Date.now() + delay > deadline) throw err;
    }
    // The kubelet's retry back-off for a failed volume operation.
    await new Promise((r) => setTimeout(r, delay));
  }
}

export class Kubelet {
  /** volumeId → staging path, and the publications of each. */
  private readonly staged = new Map<string, { staging: string; targets: Set<string>; cap: unknown }>();

  constructor(
    private readonly host: NodeHost,
    private readonly kc: KubeConfig,
  ) {}

  /** Creates this node's Node and CSINode objects from the plugin's NodeGetInfo. */
  async register(): Promise<void> {
    const info = await call<{ node_id: string; accessible_topology?: { segments?: Record<string, string> } }>(this.host.csi().node, 'NodeGetInfo', {});
    const segments = info.accessible_topology?.segments ?? {};
    const core = this.kc.makeApiClient(CoreV1Api);
    const storage = this.kc.makeApiClient(StorageV1Api);
    const node = await core.createNode({ body: { metadata: { name: this.host.name, labels: { ...segments, 'kubernetes.io/hostname': this.host.name } } } });
    await storage.createCSINode({
      body: {
        metadata: { name: this.host.name, ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name: this.host.name, uid: node.metadata?.uid ?? '' }] },
        spec: { drivers: [{ name: DRIVER, nodeID: info.node_id, topologyKeys: Object.keys(segments) }] },
      },
    });
  }

  private async pvOf(ns: string, pvc: string): Promise<V1PersistentVolume> {
    const core = this.kc.makeApiClient(CoreV1Api);
    const claim = await core.readNamespacedPersistentVolumeClaim({ namespace: ns, name: pvc });
    const pvName = claim.spec?.volumeName;
    if (!pvName) throw new Error(`PVC ${ns}/${pvc} is not bound`);
    return core.readPersistentVolume({ name: pvName });
  }

  /** NodeStageVolume (unless staged) + NodePublishVolume for a pod, as the kubelet does before starting it. */
  async attach(ns: string, pvc: string, pod = 'pod'): Promise<Attachment> {
    const pv = await this.pvOf(ns, pvc);
    const csi = pv.spec?.csi;
    if (!csi) throw new Error(`PV ${pv.metadata?.name} is not a CSI volume`);
    const block = pv.spec?.volumeMode === 'Block';
    const cap = block
      ? { block: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } }
      : { mount: { fs_type: csi.fsType ?? 'ext4', mount_flags: pv.spec?.mountOptions ?? [] }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
    const pvName = pv.metadata?.name ?? '';
    const staging = join(this.host.dir, 'k', 'stage', pvName);
    const target = join(this.host.dir, 'k', 'pods', pod, pvName);
    const volumeId = csi.volumeHandle;
    let rec = this.staged.get(volumeId);
    if (!rec) {
      mkdirSync(staging, { recursive: true });
      await kubeletCall(this.host.csi().node, 'NodeStageVolume', {
        volume_id: volumeId,
        staging_target_path: staging,
        volume_capability: cap,
        volume_context: csi.volumeAttributes ?? {},
      });
      rec = { staging, targets: new Set(), cap };
      this.staged.set(volumeId, rec);
    }
    mkdirSync(dirname(target), { recursive: true });
    await kubeletCall(this.host.csi().node, 'NodePublishVolume', {
      volume_id: volumeId,
      staging_target_path: staging,
      target_path: target,
      volume_capability: cap,
      volume_context: csi.volumeAttributes ?? {},
      readonly: false,
    });
    rec.targets.add(target);
    return { pvc, pv: pvName, volumeId, block, staging, target };
  }

  /** NodeUnpublishVolume of every pod, then NodeUnstageVolume: the volume is detached from this node. */
  async detach(a: Pick<Attachment, 'volumeId'>): Promise<void> {
    const rec = this.staged.get(a.volumeId);
    if (!rec) return;
    for (const target of [...rec.targets]) {
      await kubeletCall(this.host.csi().node, 'NodeUnpublishVolume', { volume_id: a.volumeId, target_path: target });
      rec.targets.delete(target);
    }
    await kubeletCall(this.host.csi().node, 'NodeUnstageVolume', { volume_id: a.volumeId, staging_target_path: rec.staging });
    this.staged.delete(a.volumeId);
  }

  isStaged(volumeId: string): boolean {
    return this.staged.has(volumeId);
  }

  async detachAll(): Promise<void> {
    for (const volumeId of [...this.staged.keys()]) await this.detach({ volumeId });
  }
}

// ------------------------------------------------------------------ data through an attachment

/** Writes `data` at `offset` of a block attachment, with direct I/O, and flushes it. */
export async function writeBlock(a: Attachment, offset: number, data: Buffer, scratchDir: string): Promise<void> {
  if (!a.block) throw new Error(`${a.pvc} is not a block volume`);
  if (offset % GRAIN !== 0 || data.length % GRAIN !== 0) throw new Error('block writes are 4 KiB aligned');
  const src = join(scratchDir, `w-${randomBytes(6).toString('hex')}`);
  await fsp.writeFile(src, data);
  try {
    await dd([`if=${src}`, `of=${a.target}`, `bs=${GRAIN}`, `seek=${offset / GRAIN}`, 'oflag=direct', 'conv=notrunc,fsync']);
  } finally {
    await fsp.rm(src, { force: true });
  }
}

/** Reads `length` bytes at `offset` of a block attachment, with direct I/O (what the volume holds, not a cache). */
export async function readBlock(a: Attachment, offset: number, length: number): Promise<Buffer> {
  if (!a.block) throw new Error(`${a.pvc} is not a block volume`);
  return dd([`if=${a.target}`, `bs=${GRAIN}`, `skip=${offset / GRAIN}`, `count=${Math.ceil(length / GRAIN)}`, 'iflag=direct']);
}

/** Writes a file in a file-system attachment and makes it durable (file and directory fsync). */
export async function writeFileDurably(a: Attachment, name: string, text: string): Promise<void> {
  if (a.block) throw new Error(`${a.pvc} is a block volume`);
  const path = join(a.target, name);
  const fh = await fsp.open(path, 'w');
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
  const dir = await fsp.open(a.target, 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

/** The files of a file-system attachment (lost+found left out) and their contents. */
export async function readFiles(a: Attachment): Promise<Record<string, string>> {
  if (a.block) throw new Error(`${a.pvc} is a block volume`);
  const out: Record<string, string> = {};
  for (const name of (await fsp.readdir(a.target)).sort()) {
    if (name === 'lost+found') continue;
    out[name] = await fsp.readFile(join(a.target, name), 'utf8');
  }
  return out;
}

/** A recognisable 64 KiB block: `stamp` repeated (what each test writes and later looks for). */
export function stampBlock(stamp: string, size = 64 * 1024): Buffer {
  const unit = Buffer.from(`${stamp};`);
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i += unit.length) unit.copy(b, i, 0, Math.min(unit.length, size - i));
  return b;
}

/** What a stamped block holds: the stamp, "zero" for an unwritten block, or "other". */
export function stampOf(b: Buffer): string {
  if (b.every((x) => x === 0)) return 'zero';
  const end = b.indexOf(';');
  const stamp = end > 0 ? b.subarray(0, end).toString() : '';
  return stamp !== '' && stampBlock(stamp, b.length).equals(b) ? stamp : 'other';
}
