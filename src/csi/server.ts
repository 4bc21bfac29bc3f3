/**
 * All gRPC server setup: endpoint parsing, the unix socket, service registration by mode, and
 * graceful shutdown.
 *
 * - The CSI endpoint is a unix socket only (`unix:///abs/path`, or `unix:/abs/path`). TCP, DNS and
 *   abstract-namespace endpoints are refused: CSI runs in the same pod, and a socket file is what
 *   the sidecars and kubelet mount.
 * - The socket is created mode 0600. To leave no moment in which it is reachable with looser
 *   permissions, grpc-js binds a randomly named socket in the same directory, which is chmod'ed and
 *   then renamed onto the endpoint path. A missing parent directory is created 0700. A stale socket
 *   (nobody accepts on it) is replaced; a live one, or a path that is not a socket, is an error.
 * - Services by mode: Identity always; `controller` adds Controller and GroupController, `node`
 *   adds Node, `all` adds all three. A service the mode needs but the caller did not implement is
 *   registered empty, so every method answers UNIMPLEMENTED (and a warning is logged).
 * - SnapshotMetadata runs as a separate server on its own socket (startSnapshotMetadataServer),
 *   because the external-snapshot-metadata sidecar connects to it separately; Identity is served
 *   there too, as the sidecar probes it.
 * - The kubelet's plugin registration (registration.ts) is one more server, on
 *   `<dir>/<driver>-reg.sock` in the kubelet's plugins_registry (startRegistrationServer), started
 *   after the CSI socket listens.
 * - stop(): tryShutdown (refuse new calls, let running ones finish) with a deadline, then
 *   forceShutdown, then the socket file is removed if it is still ours. The deadline also bounds a
 *   grpc-js quirk: a session whose peer has just gone away may never report its close to
 *   tryShutdown (grpc-node#1458), so a stop can take the full drain timeout.
 */
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, chmod, rename, rm, stat } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { basename, dirname, isAbsolute, join } from 'node:path';
import { Server, ServerCredentials, type ServiceDefinition } from '@grpc/grpc-js';
import { FlashcsiError } from '../errors.js';
import { componentLogger, type Logger } from '../log/logger.js';
import type { CallObserver } from '../metrics/csi.js';
import type { ControllerHandlers } from './generated/csi/v1/Controller.js';
import type { GroupControllerHandlers } from './generated/csi/v1/GroupController.js';
import type { IdentityHandlers } from './generated/csi/v1/Identity.js';
import type { NodeHandlers } from './generated/csi/v1/Node.js';
import type { SnapshotMetadataHandlers } from './generated/csi/v1/SnapshotMetadata.js';
import { csiProto } from './proto.js';
import { createRegistrationService, registrationServiceDefinition, type RegistrationStatus } from './registration.js';
import { adaptService, type AdapterOptions, type AsyncService } from './unary.js';
import type { PluginMode } from './modes.js';

export { PLUGIN_MODES, type PluginMode } from './modes.js';

export type CsiServiceName = 'Identity' | 'Controller' | 'GroupController' | 'Node';

/** The CSI services each mode serves. */
export const SERVICES_BY_MODE: Readonly<Record<PluginMode, readonly CsiServiceName[]>> = Object.freeze({
  controller: ['Identity', 'Controller', 'GroupController'],
  node: ['Identity', 'Node'],
  all: ['Identity', 'Controller', 'GroupController', 'Node'],
});

/** Service implementations; which of them are served depends on the mode. */
export interface CsiServices {
  readonly identity: AsyncService<IdentityHandlers>;
  readonly controller?: AsyncService<ControllerHandlers>;
  readonly groupController?: AsyncService<GroupControllerHandlers>;
  readonly node?: AsyncService<NodeHandlers>;
}

export interface ServerOptions {
  /** `unix:///absolute/path/to/csi.sock`. */
  readonly endpoint: string;
  readonly logger: Logger;
  /** How long stop() lets running calls finish before cancelling them. Default 10 s. */
  readonly drainTimeoutMs?: number;
  /** Methods logged at debug level (see unary.ts); Probe unless set. */
  readonly quietMethods?: ReadonlySet<string>;
  /** Told of every finished call (metrics; see unary.ts). */
  readonly callObserver?: CallObserver;
}

export interface CsiServerOptions extends ServerOptions {
  readonly mode: PluginMode;
  readonly services: CsiServices;
}

export interface SnapshotMetadataServerOptions extends ServerOptions {
  readonly identity: AsyncService<IdentityHandlers>;
  readonly snapshotMetadata: AsyncService<SnapshotMetadataHandlers>;
}

/** A server that is listening. */
export interface RunningServer {
  /** The socket file clients connect to. */
  readonly socketPath: string;
  /** Full names of the registered services, e.g. `csi.v1.Identity`. */
  readonly services: readonly string[];
  /** Drains and stops the server and removes its socket. Safe to call more than once. */
  stop(): Promise<void>;
}

const DEFAULT_DRAIN_TIMEOUT_MS = 10_000;
/** sun_path is 108 bytes including the terminating NUL. */
const MAX_SOCKET_PATH_BYTES = 107;

/** Raised for a bad endpoint or a socket path that cannot be used. */
export type EndpointErrorCode =
  /** Not a `unix:` endpoint with an absolute path that fits a socket address. */
  | 'INVALID_ENDPOINT'
  /** Another process accepts on the socket, or the path is not a socket. */
  | 'ADDRESS_IN_USE'
  /** The socket could not be probed, or grpc-js could not bind it. */
  | 'LISTEN_FAILED';
export class EndpointError extends FlashcsiError<EndpointErrorCode> {}

/** The socket path of a `unix:` endpoint; EndpointError for any other scheme or a relative path. */
export function parseUnixEndpoint(endpoint: string): string {
  // unix:///abs or unix:/abs (gRPC's forms); unix://host... names a host, not a path, and is refused.
  const m = /^unix:(?:\/\/(\/.*)|(\/(?!\/).*))$/.exec(endpoint);
  const path = m?.[1] ?? m?.[2];
  if (path === undefined) {
    const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(endpoint)?.[1];
    const why =
      scheme !== undefined && scheme.toLowerCase() !== 'unix'
        ? `scheme ${JSON.stringify(scheme)} is not supported`
        : 'it is not a unix socket with an absolute path';
    throw new EndpointError('INVALID_ENDPOINT', `invalid CSI endpoint ${JSON.stringify(endpoint)}: ${why}; the endpoint must be unix:///absolute/path/to/csi.sock`);
  }
  if (!isAbsolute(path) || path.includes('\0')) throw new EndpointError('INVALID_ENDPOINT', `invalid CSI endpoint ${JSON.stringify(endpoint)}: bad socket path`);
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH_BYTES) {
    throw new EndpointError('INVALID_ENDPOINT', `CSI endpoint socket path is ${Buffer.byteLength(path)} bytes; unix sockets allow at most ${MAX_SOCKET_PATH_BYTES}`);
  }
  return path;
}

/** Starts the CSI server for a mode: Identity plus the mode's services. */
export async function startCsiServer(options: CsiServerOptions): Promise<RunningServer> {
  const proto = csiProto();
  const logger = componentLogger(options.logger, 'csi-server');
  const implementations: Record<CsiServiceName, { definition: ServiceDefinition; service: object | undefined }> = {
    Identity: { definition: proto.Identity.service, service: options.services.identity },
    Controller: { definition: proto.Controller.service, service: options.services.controller },
    GroupController: { definition: proto.GroupController.service, service: options.services.groupController },
    Node: { definition: proto.Node.service, service: options.services.node },
  };
  const registrations = SERVICES_BY_MODE[options.mode].map((name) => {
    const { definition, service } = implementations[name];
    if (service === undefined) logger.warn({ service: name, mode: options.mode }, 'service not implemented; all its methods answer UNIMPLEMENTED');
    return { name: `csi.v1.${name}`, definition, service: service ?? {} };
  });
  return startServer(options, logger, registrations);
}

/** Starts the SnapshotMetadata server (with Identity) on its own socket. */
export async function startSnapshotMetadataServer(options: SnapshotMetadataServerOptions): Promise<RunningServer> {
  const proto = csiProto();
  const logger = componentLogger(options.logger, 'snapshot-metadata-server');
  return startServer(options, logger, [
    { name: 'csi.v1.Identity', definition: proto.Identity.service, service: options.identity },
    { name: 'csi.v1.SnapshotMetadata', definition: proto.SnapshotMetadata.service, service: options.snapshotMetadata },
  ]);
}

export interface RegistrationServerOptions {
  /** The kubelet's plugins_registry directory (as this process sees it). */
  readonly dir: string;
  readonly driverName: string;
  /** The CSI socket's path as the kubelet sees it. */
  readonly kubeletEndpoint: string;
  readonly logger: Logger;
  /** How long to wait before offering the socket again after the kubelet refused it. Default 10 s. */
  readonly retryMs?: number;
}

/**
 * Serves `pluginregistration.Registration` on `<dir>/<driver>-reg.sock`. When the kubelet refuses the
 * registration, the socket is removed and made again after `retryMs`, which makes the kubelet try again.
 */
export async function startRegistrationServer(options: RegistrationServerOptions): Promise<RunningServer> {
  const logger = componentLogger(options.logger, 'registration');
  const endpoint = `unix://${join(options.dir, `${options.driverName}-reg.sock`)}`;
  let current: RunningServer | undefined;
  let retry: NodeJS.Timeout | undefined;
  let stopped = false;
  const onStatus = (status: RegistrationStatus): void => {
    if (status.plugin_registered || stopped || retry !== undefined) return;
    const retryMs = options.retryMs ?? 10_000;
    logger.warn({ retryMs }, 'offering the registration socket again after a back-off');
    retry = setTimeout(() => {
      retry = undefined;
      // Its socket must disappear and come back: the kubelet registers on the socket's creation.
      void (async () => {
        await current?.stop();
        if (!stopped) current = await listen();
      })().catch((err: unknown) => logger.error({ err }, 'cannot offer the registration socket again'));
    }, retryMs);
  };
  const service = createRegistrationService({ driverName: options.driverName, kubeletEndpoint: options.kubeletEndpoint, logger, onStatus });
  const listen = (): Promise<RunningServer> =>
    startServer({ endpoint, logger: options.logger, drainTimeoutMs: 1000 }, logger, [
      { name: 'pluginregistration.Registration', definition: registrationServiceDefinition(), service },
    ]);
  current = await listen();
  return {
    socketPath: current.socketPath,
    services: current.services,
    async stop() {
      stopped = true;
      if (retry !== undefined) clearTimeout(retry);
      await current?.stop();
    },
  };
}

interface Registration {
  readonly name: string;
  readonly definition: ServiceDefinition;
  readonly service: object;
}

async function startServer(options: ServerOptions, logger: Logger, registrations: readonly Registration[]): Promise<RunningServer> {
  const socketPath = parseUnixEndpoint(options.endpoint);
  const adapterOptions: AdapterOptions = {
    logger: componentLogger(options.logger, 'csi'),
    ...(options.quietMethods === undefined ? {} : { quietMethods: options.quietMethods }),
    ...(options.callObserver === undefined ? {} : { observer: options.callObserver }),
  };
  const server = new Server();
  for (const r of registrations) server.addService(r.definition, adaptService(r.definition, r.service, adapterOptions));

  const socketIno = await listenUnix(server, socketPath);
  const services = registrations.map((r) => r.name);
  logger.info({ socket: socketPath, services }, 'gRPC server listening');

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      const drainMs = options.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS;
      const drained = await shutdown(server, drainMs);
      if (!drained) logger.warn({ socket: socketPath, drainMs }, 'calls still running after the drain timeout; cancelled them');
      await removeSocketIfOurs(socketPath, socketIno);
      logger.info({ socket: socketPath }, 'gRPC server stopped');
    })());
  return { socketPath, services, stop };
}

/** tryShutdown, then forceShutdown after `drainMs`. Resolves true if the drain finished in time. */
function shutdown(server: Server, drainMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const deadline = setTimeout(() => {
      server.forceShutdown();
      resolve(false);
    }, drainMs);
    server.tryShutdown(() => {
      clearTimeout(deadline);
      resolve(true);
    });
  });
}

/** Binds `server` to a 0600 socket at `socketPath`; returns the socket's inode number. */
async function listenUnix(server: Server, socketPath: string): Promise<number> {
  const dir = dirname(socketPath);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await removeStaleSocket(socketPath);
  const tmpPath = join(dir, `.${basename(socketPath).slice(0, 8)}-${randomBytes(4).toString('hex')}.tmp`);
  if (Buffer.byteLength(tmpPath) > MAX_SOCKET_PATH_BYTES) {
    throw new EndpointError('INVALID_ENDPOINT', `socket directory ${dir} is too long for a unix socket path`);
  }
  try {
    await new Promise<void>((resolve, reject) => {
      server.bindAsync(`unix://${tmpPath}`, ServerCredentials.createInsecure(), (err) => {
        if (err) reject(new EndpointError('LISTEN_FAILED', `cannot listen on ${socketPath}: ${err.message}`, { cause: err }));
        else resolve();
      });
    });
    await chmod(tmpPath, 0o600);
    await rename(tmpPath, socketPath);
    return (await stat(socketPath)).ino;
  } catch (err) {
    server.forceShutdown();
    await rm(tmpPath, { force: true });
    throw err;
  }
}

/** Removes a socket file nobody accepts on; refuses a live socket or a non-socket. */
async function removeStaleSocket(socketPath: string): Promise<void> {
  let st;
  try {
    st = await lstat(socketPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!st.isSocket()) throw new EndpointError('ADDRESS_IN_USE', `${socketPath} exists and is not a socket; refusing to replace it`);
  if (await isListening(socketPath)) throw new EndpointError('ADDRESS_IN_USE', `${socketPath} is in use by another process`);
  await rm(socketPath, { force: true });
}

/** Whether something accepts connections on the socket (ECONNREFUSED means a stale file). */
function isListening(socketPath: string): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ path: socketPath });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      socket.destroy();
      if (err.code === 'ECONNREFUSED' || err.code === 'ENOENT') resolve(false);
      else reject(new EndpointError('LISTEN_FAILED', `cannot tell whether ${socketPath} is in use: ${err.message}`, { cause: err }));
    });
  });
}

async function removeSocketIfOurs(socketPath: string, ino: number): Promise<void> {
  try {
    const st = await lstat(socketPath);
    if (st.isSocket() && st.ino === ino) await rm(socketPath, { force: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}
