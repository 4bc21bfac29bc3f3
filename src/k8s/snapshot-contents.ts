/**
 * Hands this node's snapshot contents to this node's csi-snapshotter, inside the node agent.
 *
 * The chart runs csi-snapshotter on every node (--node-deployment). Such a sidecar watches only the
 * VolumeSnapshotContents labelled `snapshot.storage.kubernetes.io/managed-by: <its node>`, and takes
 * its VolumeGroupSnapshotContents from the same filtered watch. The snapshot-controller
 * (--enable-distributed-snapshotting) sets that label only on the contents it creates for a dynamic
 * VolumeSnapshot. Every other content of the driver stays unlabelled, so no sidecar ever handles it:
 *  - a pre-provisioned VolumeSnapshotContent (a snapshotHandle the user brings in) never becomes
 *    ready — found by the storage e2e suite ("Pre-provisioned Snapshot");
 *  - a VolumeGroupSnapshotContent is never cut, and the member contents of a group are never ready.
 * The agent of the node that holds every volume a content names sets the label — nothing else — on
 * contents that have none. Names that are not this node's volume ids (another node's, or malformed)
 * are left alone.
 */
import type { KubernetesObject } from '@kubernetes/client-node';
import { DRIVER_NAME, ForeignLabel } from '../constants.js';
import { tryParseSnapshotId } from '../volumes/ids.js';
import type { Logger } from '../log/logger.js';
import { VolumeGroupSnapshotContentResource, VolumeSnapshotContentResource, type ObjectMeta, type Resource } from './api.js';
import { watch, type Watched } from './informers.js';
import { KubeError, type Kube } from './kube.js';
import { WorkQueue } from './work-queue.js';

/** The fields of a VolumeSnapshotContent or VolumeGroupSnapshotContent (snapshot.storage.k8s.io/v1, groupsnapshot.storage.k8s.io/v1) read here. */
export interface SnapshotContentObject {
  metadata: ObjectMeta;
  spec?: {
    driver?: string;
    source?: {
      volumeHandle?: string;
      snapshotHandle?: string;
      volumeHandles?: string[];
      groupSnapshotHandles?: { volumeGroupSnapshotHandle?: string; volumeSnapshotHandles?: string[] };
    };
  };
}

/**
 * The volume ids a content of this driver names (its source volume, or the volume of its snapshot;
 * every member for a group); undefined when it is another driver's, already labelled, or names none.
 */
export function unlabelledVolumes(content: SnapshotContentObject): string[] | undefined {
  if (content.spec?.driver !== DRIVER_NAME || content.metadata.labels?.[ForeignLabel.SnapshotManagedBy] !== undefined) return undefined;
  const src = content.spec.source ?? {};
  const snapshots = [...(src.snapshotHandle !== undefined ? [src.snapshotHandle] : []), ...(src.groupSnapshotHandles?.volumeSnapshotHandles ?? [])];
  const volumes = [...(src.volumeHandle !== undefined ? [src.volumeHandle] : []), ...(src.volumeHandles ?? [])];
  for (const id of snapshots) {
    const ref = tryParseSnapshotId(id);
    if (ref === undefined) return undefined;
    volumes.push(ref.volumeId);
  }
  return volumes.length > 0 ? volumes : undefined;
}

export interface ContentLabellerOptions {
  readonly kube: Kube;
  readonly log: Logger;
  readonly nodeId: string;
  /** Whether this node holds the volume (its directory is in this node's state directory). */
  holdsVolume(volumeId: string): Promise<boolean>;
}

type Content = SnapshotContentObject & KubernetesObject;

export class ContentLabeller {
  private readonly watched = new Map<string, Watched<Content>>();
  private queue: WorkQueue | null = null;

  constructor(private readonly opts: ContentLabellerOptions) {}

  async start(): Promise<void> {
    const { kube, log } = this.opts;
    const q = new WorkQueue(
      (k) => this.reconcile(k),
      (k, err) => log.warn({ key: k, err: err instanceof Error ? err.message : String(err) }, 'snapshot contents: labelling failed; retrying'),
    );
    this.queue = q;
    for (const r of [VolumeSnapshotContentResource, VolumeGroupSnapshotContentResource]) {
      // The group snapshot CRDs are optional (docs/deployment.md): without them there is nothing to label.
      try {
        await kube.list(r);
      } catch (err) {
        if (err instanceof KubeError && err.notFound) {
          log.info({ resource: `${r.plural}.${r.group}/${r.version}` }, 'snapshot contents: resource not served; not watched');
          continue;
        }
        throw err;
      }
      const w = await watch<Content>(kube.config, `/apis/${r.group}/${r.version}/${r.plural}`, () => kube.list<Content>(r), (c) => q.add(`${r.plural}/${c.metadata.name}`), log);
      this.watched.set(r.plural, w);
      for (const c of w.list()) q.add(`${r.plural}/${c.metadata.name}`);
    }
  }

  async stop(): Promise<void> {
    this.queue?.stop();
    for (const w of this.watched.values()) await w.stop();
  }

  private async reconcile(key: string): Promise<{ requeueAfterMs?: number } | undefined> {
    const [plural = '', name = ''] = key.split('/');
    const content = this.watched.get(plural)?.get(name);
    if (content === undefined || content.metadata.deletionTimestamp !== undefined) return undefined;
    const volumes = unlabelledVolumes(content);
    if (volumes === undefined) return undefined;
    for (const v of volumes) if (!(await this.opts.holdsVolume(v))) return undefined; // another node's (or nobody's)
    const resource: Resource = plural === VolumeSnapshotContentResource.plural ? VolumeSnapshotContentResource : VolumeGroupSnapshotContentResource;
    try {
      // Conditional on the version read: a label someone set meanwhile is never overwritten.
      await this.opts.kube.patchCluster(resource, name, {
        metadata: { resourceVersion: content.metadata.resourceVersion, labels: { [ForeignLabel.SnapshotManagedBy]: this.opts.nodeId } },
      });
    } catch (err) {
      if (err instanceof KubeError && err.conflict) return { requeueAfterMs: 0 };
      if (err instanceof KubeError && err.notFound) return undefined;
      throw err;
    }
    this.opts.log.info({ kind: resource.kind, name, volumes }, "snapshot contents: labelled for this node's csi-snapshotter");
    return undefined;
  }
}
