/**
 * The CSI Identity service: plugin name and version, plugin capabilities, and Probe. It is served
 * in every mode and on the SnapshotMetadata socket too (the external-snapshot-metadata sidecar
 * probes and reads capabilities there).
 *
 * Probe reports the readiness source: false until the plugin has finished recovery (re-attaching
 * volumes, replaying journals), so kubelet and the sidecars wait instead of sending calls the
 * plugin cannot serve yet.
 */
import { DRIVER_NAME } from '../constants.js';
import { pluginCapabilitiesResponse } from './capabilities.js';
import type { IdentityHandlers } from './generated/csi/v1/Identity.js';
import { packageVersion } from './package-root.js';
import type { AsyncService } from './unary.js';

/** Tells Probe whether the plugin can serve calls. */
export interface Readiness {
  isReady(): boolean | Promise<boolean>;
}

/**
 * A readiness flag that starts not ready. The plugin calls `markReady()` once its recovery is
 * done, and may call `markNotReady(reason)` if it later loses something it needs.
 */
export class ReadinessGate implements Readiness {
  #ready = false;
  #reason = 'recovery has not finished';

  isReady(): boolean {
    return this.#ready;
  }

  /** Why the plugin is not ready ('' when ready). */
  get reason(): string {
    return this.#ready ? '' : this.#reason;
  }

  markReady(): void {
    this.#ready = true;
  }

  markNotReady(reason: string): void {
    this.#ready = false;
    this.#reason = reason;
  }
}

export interface IdentityOptions {
  readonly readiness: Readiness;
  /** Defaults to DRIVER_NAME. */
  readonly name?: string;
  /** Defaults to package.json's version. */
  readonly version?: string;
  /** Extra GetPluginInfo manifest entries (e.g. git commit). */
  readonly manifest?: Readonly<Record<string, string>>;
}

export function createIdentityService(options: IdentityOptions): AsyncService<IdentityHandlers> {
  const name = options.name ?? DRIVER_NAME;
  const version = options.version ?? packageVersion();
  const manifest = { ...options.manifest };
  return {
    GetPluginInfo: async () => ({ name, vendor_version: version, manifest }),
    GetPluginCapabilities: async () => pluginCapabilitiesResponse(),
    Probe: async () => ({ ready: { value: await options.readiness.isReady() } }),
  };
}
