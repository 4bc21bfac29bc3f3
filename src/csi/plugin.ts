/**
 * `flashcsi plugin`: builds the services for a mode, serves them, and runs start-up recovery.
 *
 * Start-up, in order: the state directory is created (0700); the gRPC servers start at once, so
 * Probe answers (not ready) and the capability RPCs work; then, in node modes, every staged volume
 * is re-adopted (src/volumes/stager.ts `adoptAll`), and in controller modes every volume nobody serves is opened
 * once so the engine finishes what a crash interrupted and unfinished creates are removed
 * (src/volumes/local-volumes.ts `recover`). Only then does Probe report ready; until then every other RPC answers
 * UNAVAILABLE. If recovery itself fails, the plugin stays not ready and says why in its log.
 *
 * With `metricsAddress`, a plain-HTTP, read-only endpoint serves /metrics (the plugin's own metrics
 * merged with every staged volume's, see metrics.ts) and /healthz (200 once ready), from before
 * the gRPC servers start.
 *
 * With `registrationDir` (node modes), the plugin registers itself with the kubelet: once its CSI
 * socket listens it serves the kubelet's plugin-registration API in that directory (server.ts
 * startRegistrationServer, registration.ts); stop() removes that socket first, which deregisters it.
 *
 * stop() drains the gRPC servers (running calls finish, new ones are refused, then a deadline).
 * It never stops a volume's data-path server or nbdfuse: staged volumes keep working while the
 * plugin is down, and the next start adopts them.
 */
import { nbdAttacher } from '../host/attach.js';
import type { AttachPreference } from '../host/attachment.js';
import { linuxMounter, type Mounter } from '../host/mounter.js';
import { serveLauncher, type ServeLauncher } from '../host/serve-process.js';
import { componentLogger, type Logger } from '../log/logger.js';
import type { ListenAddress } from '../metrics/http.js';
import type { AdoptionResult } from '../metrics/plugin.js';
import { createControllerService } from './controller.js';
import { CsiError, CsiErrorCode } from '../volumes/errors.js';
import { createGroupControllerService } from './group-controller.js';
import { GroupSnapshots } from '../volumes/groups.js';
import { createIdentityService, ReadinessGate } from './identity.js';
import { InFlight } from '../volumes/locks.js';
import { startPluginMetrics, type RunningPluginMetrics } from './metrics.js';
import { createNodeService } from './node.js';
import { parseUnixEndpoint, startCsiServer, startRegistrationServer, startSnapshotMetadataServer, type PluginMode, type RunningServer } from './server.js';
import { DRIVER_NAME } from '../constants.js';
import { createSnapshotMetadataService } from './snapshot-metadata.js';
import { NodeStager } from '../volumes/stager.js';
import { StateDir } from '../volumes/state.js';
import type { AsyncService } from './unary.js';
import { engineVolumeAccess, type VolumeAccess } from '../volumes/volume-access.js';
import { LocalVolumes } from '../volumes/local-volumes.js';
import { isValidVolumeId } from '../volumes/ids.js';

export interface PluginOptions {
  readonly mode: PluginMode;
  /** `unix:///path/csi.sock`. */
  readonly endpoint: string;
  /** `unix:///path/metadata.sock`: serve SnapshotMetadata (with Identity) on this second socket. */
  readonly snapshotMetadataEndpoint?: string;
  readonly stateDir: string;
  readonly nodeId: string;
  readonly logger: Logger;
  readonly maxVolumesPerNode?: number;
  readonly drainTimeoutMs?: number;
  /** How staged volumes become block devices (`--attach`); `auto` unless set. */
  readonly attach?: AttachPreference;
  /** --log-level of the volumes' `flashcsi serve` processes. */
  readonly serveLogLevel?: string;
  /** --fuse-workers of the volumes' `flashcsi serve` processes (serve's default unless set). */
  readonly fuseWorkers?: number;
  /** Serve /metrics and /healthz over plain HTTP here (off unless set). */
  readonly metricsAddress?: ListenAddress;
  /** Register with the kubelet: serve its plugin-registration API in this directory (its plugins_registry). */
  readonly registrationDir?: string;
  /** The CSI socket's path as the kubelet sees it (default: the endpoint's path). */
  readonly kubeletEndpoint?: string;
  /** Overrides for tests. */
  readonly launcher?: ServeLauncher;
  readonly mounter?: Mounter;
}

/** What a node agent (src/k8s/agent.ts) needs from the plugin it runs in. */
export interface NodeAccess {
  readonly access: VolumeAccess;
  /** The per-volume in-flight keys the CSI RPCs take. */
  readonly inflight: InFlight;
  volumeDir(volumeId: string): string;
  isStaged(volumeId: string): Promise<boolean>;
  /** Whether the volume is in this node's state directory (deleted ones that keep snapshots too). */
  holdsVolume(volumeId: string): Promise<boolean>;
}

export interface RunningPlugin {
  readonly socketPath: string;
  readonly snapshotMetadataSocketPath: string | undefined;
  readonly node: NodeAccess;
  /** Resolves when start-up recovery is done and Probe reports ready. */
  readonly ready: Promise<void>;
  /** The metrics endpoint, when `metricsAddress` was given. */
  readonly metrics: RunningPluginMetrics | undefined;
  /** Drains and stops the gRPC servers. Idempotent. */
  stop(): Promise<void>;
}

/** Methods that answer before recovery is done (they do not touch volumes). */
const ALWAYS_AVAILABLE = /GetCapabilities$|^NodeGetInfo$/;

/** Wraps every method so it answers UNAVAILABLE until the plugin is ready. */
export function untilReady<S extends object>(service: S, readiness: ReadinessGate): S {
  const wrapped: Record<string, unknown> = {};
  const refuse = (): CsiError => new CsiError(CsiErrorCode.Unavailable, `the plugin is starting (${readiness.reason}); retry shortly`);
  for (const [name, fn] of Object.entries(service) as Array<[string, (...args: unknown[]) => unknown]>) {
    if (ALWAYS_AVAILABLE.test(name)) wrapped[name] = fn;
    else if (fn.constructor.name === 'AsyncGeneratorFunction') {
      wrapped[name] = async function* (...args: unknown[]) {
        if (!readiness.isReady()) throw refuse();
        yield* fn(...args) as AsyncIterable<unknown>;
      };
    } else {
      wrapped[name] = async (...args: unknown[]) => {
        if (!readiness.isReady()) throw refuse();
        return fn(...args);
      };
    }
  }
  return wrapped as S;
}

export async function startPlugin(options: PluginOptions): Promise<RunningPlugin> {
  // Refuse a bad endpoint before anything listens (the metrics server starts first).
  parseUnixEndpoint(options.endpoint);
  if (options.snapshotMetadataEndpoint !== undefined) parseUnixEndpoint(options.snapshotMetadataEndpoint);
  const log = componentLogger(options.logger, 'plugin');
  const state = new StateDir(options.stateDir);
  await state.init();
  const readiness = new ReadinessGate();
  const inflight = new InFlight();
  const stager = new NodeStager({
    state,
    launcher:
      options.launcher ??
      serveLauncher({
        ...(options.serveLogLevel === undefined ? {} : { logLevel: options.serveLogLevel }),
        ...(options.fuseWorkers === undefined ? {} : { fuseWorkers: options.fuseWorkers }),
      }),
    mounter: options.mounter ?? linuxMounter,
    attacher: nbdAttacher(options.attach),
    logger: options.logger,
    inflight,
  });
  const volumes = new LocalVolumes({ state, access: engineVolumeAccess, logger: options.logger, node: stager });
  const groups = new GroupSnapshots({ state, access: engineVolumeAccess, volumes, logger: options.logger });
  const controllerMode = options.mode !== 'node';
  const nodeMode = options.mode !== 'controller';

  const identity = createIdentityService({ readiness });
  const metrics =
    options.metricsAddress === undefined
      ? undefined
      : await startPluginMetrics({
          address: options.metricsAddress,
          state,
          logger: componentLogger(options.logger, 'metrics'),
          health: () => (readiness.isReady() ? { ok: true, message: 'ok' } : { ok: false, message: `not ready: ${readiness.reason}` }),
        });
  const callObserver = metrics === undefined ? {} : { callObserver: metrics.metrics.calls };
  const servers: RunningServer[] = [];
  let registration: RunningServer | undefined;
  try {
    servers.push(
      await startCsiServer({
        endpoint: options.endpoint,
        mode: options.mode,
        logger: options.logger,
        ...callObserver,
        ...(options.drainTimeoutMs === undefined ? {} : { drainTimeoutMs: options.drainTimeoutMs }),
        services: {
          identity,
          ...(controllerMode
            ? {
                controller: untilReady(
                  createControllerService({ volumes, snapshots: volumes, inflight, nodeId: options.nodeId, node: stager, delegateExpansion: options.mode === 'controller' }),
                  readiness,
                ),
                groupController: untilReady(createGroupControllerService({ groups, state, inflight }), readiness),
              }
            : {}),
          ...(nodeMode
            ? {
                node: untilReady(
                  createNodeService({ volumes: stager, inflight, nodeId: options.nodeId, ...(options.maxVolumesPerNode === undefined ? {} : { maxVolumesPerNode: options.maxVolumesPerNode }) }),
                  readiness,
                ),
              }
            : {}),
        },
      }),
    );
    if (options.snapshotMetadataEndpoint !== undefined) {
      servers.push(
        await startSnapshotMetadataServer({
          endpoint: options.snapshotMetadataEndpoint,
          logger: options.logger,
          ...callObserver,
          ...(options.drainTimeoutMs === undefined ? {} : { drainTimeoutMs: options.drainTimeoutMs }),
          identity,
          snapshotMetadata: untilReady(createSnapshotMetadataService({ metadata: volumes, inflight }) as AsyncService<object>, readiness),
        }),
      );
    }
    if (options.registrationDir !== undefined && nodeMode) {
      // Only now: the kubelet calls NodeGetInfo on the CSI socket as soon as it sees this one.
      registration = await startRegistrationServer({
        dir: options.registrationDir,
        driverName: DRIVER_NAME,
        kubeletEndpoint: options.kubeletEndpoint ?? parseUnixEndpoint(options.endpoint),
        logger: options.logger,
      });
    }
  } catch (err) {
    for (const s of servers) await s.stop().catch(() => undefined);
    await metrics?.stop().catch(() => undefined);
    throw err;
  }

  const ready = (async () => {
    const started = Date.now();
    readiness.markNotReady('re-adopting staged volumes and recovering volumes');
    const adoption = nodeMode ? await stager.adoptAll() : undefined;
    const recovery = controllerMode ? await volumes.recover() : undefined;
    readiness.markReady();
    if (metrics !== undefined) {
      const count = (ids: readonly string[] | undefined): number => ids?.length ?? 0;
      const counts: Record<AdoptionResult, number> = {
        adopted: count(adoption?.adopted),
        restarted: count(adoption?.restarted),
        abnormal: count(adoption?.abnormal),
        cleaned: count(adoption?.cleaned),
      };
      metrics.metrics.setAdoption(counts);
      metrics.metrics.setReady(true);
    }
    log.info({ durationMs: Date.now() - started, adoption, recovery, mode: options.mode, nodeId: options.nodeId }, 'start-up recovery done; ready');
  })();
  ready.catch((err: unknown) => {
    readiness.markNotReady(`start-up recovery failed: ${err instanceof Error ? err.message : String(err)}`);
    log.error({ err }, 'start-up recovery failed; the plugin stays not ready');
  });

  let stopping: Promise<void> | undefined;
  return {
    socketPath: servers[0]?.socketPath ?? '',
    snapshotMetadataSocketPath: servers[1]?.socketPath,
    node: {
      access: engineVolumeAccess,
      inflight,
      volumeDir: (volumeId) => state.volumeDir(volumeId),
      isStaged: async (volumeId) => (await stager.stagedAt(volumeId)) !== undefined,
      holdsVolume: async (volumeId) => isValidVolumeId(volumeId) && (await state.readVolume(volumeId)) !== undefined,
    },
    ready,
    metrics,
    stop: () =>
      (stopping ??= (async () => {
        await registration?.stop();
        await Promise.all(servers.map((s) => s.stop()));
        stager.close();
        await metrics?.stop();
        log.info('plugin stopped; staged volumes keep running');
      })()),
  };
}
