/**
 * The kubelet's plugin registration, served by the plugin itself (no node-driver-registrar).
 *
 * The kubelet watches `<kubelet root>/plugins_registry` and, for every socket that appears there,
 * calls `pluginregistration.Registration/GetInfo` (1 s deadline), checks the answer (type
 * `CSIPlugin`, a 1.x entry in `supported_versions`), calls the plugin's NodeGetInfo over `endpoint`,
 * writes the CSINode entry, and reports the outcome with `NotifyRegistrationStatus`. Removing the
 * socket deregisters the plugin; a socket created again (a restarted plugin) registers it again.
 * proto/pluginregistration/api.proto (k8s.io/kubelet v0.37.2) is the API; proto/README.md says where
 * it comes from.
 *
 * The registration socket is `<dir>/<driver>-reg.sock`, as node-driver-registrar names it, and is
 * only created once the CSI socket listens (server.ts startRegistrationServer), so the kubelet's
 * NodeGetInfo never finds nothing. A refused registration is logged with the kubelet's reason and
 * retried by making the socket again after a back-off: the kubelet only looks at new sockets.
 */
import { loadPackageDefinition, type ServiceDefinition } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import type { Logger } from '../log/logger.js';
import { protoDir } from './package-root.js';
import { LOADER_OPTIONS } from './proto.js';

/** What the kubelet's CSI handler accepts (node-driver-registrar sends the same). */
export const SUPPORTED_VERSIONS: readonly string[] = ['1.0.0'];
/** pluginregistration constants.go: the plugin type of CSI drivers. */
export const CSI_PLUGIN_TYPE = 'CSIPlugin';

export interface PluginInfo {
  type: string;
  name: string;
  endpoint: string;
  supported_versions: string[];
}
export interface RegistrationStatus {
  plugin_registered: boolean;
  error: string;
}

let definition: ServiceDefinition | undefined;

/** The `pluginregistration.Registration` service definition (loaded once). */
export function registrationServiceDefinition(): ServiceDefinition {
  if (definition === undefined) {
    const pkg = loadPackageDefinition(loadSync('pluginregistration/api.proto', { ...LOADER_OPTIONS, includeDirs: [protoDir()] })) as unknown as {
      pluginregistration: { Registration: { service: ServiceDefinition } };
    };
    definition = pkg.pluginregistration.Registration.service;
  }
  return definition;
}

export interface RegistrationServiceOptions {
  readonly driverName: string;
  /** The CSI socket's path as the kubelet sees it (on the host). */
  readonly kubeletEndpoint: string;
  readonly logger: Logger;
  /** Told of every status the kubelet reports. */
  readonly onStatus?: (status: RegistrationStatus) => void;
}

/** GetInfo and NotifyRegistrationStatus, for the unary adapter. */
export function createRegistrationService(o: RegistrationServiceOptions): {
  GetInfo(): Promise<PluginInfo>;
  NotifyRegistrationStatus(status: RegistrationStatus): Promise<Record<string, never>>;
} {
  return {
    async GetInfo() {
      return { type: CSI_PLUGIN_TYPE, name: o.driverName, endpoint: o.kubeletEndpoint, supported_versions: [...SUPPORTED_VERSIONS] };
    },
    async NotifyRegistrationStatus(status) {
      if (status.plugin_registered) o.logger.info({ endpoint: o.kubeletEndpoint }, 'registered with the kubelet');
      else o.logger.error({ endpoint: o.kubeletEndpoint, reason: status.error }, 'the kubelet refused the registration');
      o.onStatus?.(status);
      return {};
    },
  };
}
