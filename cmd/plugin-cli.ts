/**
 * `flashcsi plugin --mode all|controller|node --endpoint unix:///PATH --state-dir DIR --node-id NAME`:
 * the CSI plugin, until SIGTERM or SIGINT, which drain it (running calls finish) and exit. Volumes
 * staged on this node keep running while it is down; the next start adopts them.
 * `--metrics-address HOST:PORT` (`:9808` = every interface) adds a plain-HTTP, read-only /metrics
 * and /healthz endpoint (docs/metrics.md). `--fuse-workers N` goes to every `flashcsi serve` the plugin
 * starts (volumes staged from then on; adopted ones keep the count they were started with).
 */
import { hostname } from 'node:os';
import type { Command } from 'commander';
import { DEFAULT_WORKERS, MAX_WORKERS } from '../src/fuse/export.js';
import { ATTACH_PREFERENCES, type AttachPreference } from '../src/host/attachment.js';
import { PLUGIN_MODES, type PluginMode } from '../src/csi/modes.js';
import type { NodeAgent } from '../src/k8s/agent.js';
import { parseIntegerIn, parseWholeNumber } from './units.js';
import { CliError } from './errors.js';

interface PluginFlags {
  mode: string;
  endpoint?: string;
  stateDir: string;
  nodeId?: string;
  snapshotMetadataEndpoint?: string;
  logLevel: string;
  attach: string;
  fuseWorkers: string;
  maxVolumesPerNode: string;
  drainTimeout: string;
  agent?: boolean;
  kubeconfig?: string;
  metricsAddress?: string;
  registrationDir?: string;
  kubeletRegistrationPath?: string;
}

export function registerPluginCommand(program: Command): void {
  program
    .command('plugin')
    .description('run the CSI plugin (Identity, Controller, GroupController, Node; SnapshotMetadata on its own socket)')
    .option('--mode <mode>', `which services to serve: ${PLUGIN_MODES.join(', ')}`, 'all')
    .option('--endpoint <unix:///path>', 'CSI socket (default: $CSI_ENDPOINT)')
    .requiredOption('--state-dir <dir>', 'state directory: volumes, sockets, stage records, logs')
    .option('--node-id <name>', 'this node\'s id and topology value (default: $NODE_ID, else the host name)')
    .option('--snapshot-metadata-endpoint <unix:///path>', 'also serve SnapshotMetadata on this socket')
    .option('--log-level <level>', 'log level (trace, debug, info, warn, error)', 'info')
    .option('--attach <method>', `how staged volumes become block devices: ${ATTACH_PREFERENCES.join(', ')} (auto: the kernel's nbd client where its module is loaded, else serve-fuse)`, 'auto')
    .option('--fuse-workers <n>', `FUSE worker threads of each volume's flashcsi serve (serve-fuse), 1 to ${MAX_WORKERS} (about 8 MiB each)`, String(DEFAULT_WORKERS))
    .option('--max-volumes-per-node <n>', 'NodeGetInfo.max_volumes_per_node (0 = no limit)', '0')
    .option('--drain-timeout <ms>', 'how long SIGTERM lets running calls finish', '10000')
    .option('--agent', 'also run the node agent: carry out VolumeRollbacks and VolumeTransaction steps for this node\'s volumes')
    .option('--metrics-address <host:port>', 'serve Prometheus /metrics and /healthz over plain HTTP (read-only) on this address; ":9808" = every interface (default: off)')
    .option('--registration-dir <dir>', 'register with the kubelet: serve its plugin-registration socket in this directory (<kubelet root>/plugins_registry)')
    .option('--kubelet-registration-path <path>', 'the CSI socket\'s path as the kubelet sees it, for --registration-dir (default: the --endpoint path)')
    .option('--kubeconfig <path>', 'kubeconfig for --agent (default: in-cluster, then $KUBECONFIG, then ~/.kube/config)')
    .action(async (o: PluginFlags) => {
      if (!(PLUGIN_MODES as readonly string[]).includes(o.mode)) throw new CliError(`--mode must be one of ${PLUGIN_MODES.join(', ')}, got ${JSON.stringify(o.mode)}`);
      const endpoint = o.endpoint ?? process.env['CSI_ENDPOINT'];
      if (endpoint === undefined || endpoint === '') throw new CliError('--endpoint (or $CSI_ENDPOINT) is required');
      if (!(ATTACH_PREFERENCES as readonly string[]).includes(o.attach)) throw new CliError(`--attach must be one of ${ATTACH_PREFERENCES.join(', ')}, got ${JSON.stringify(o.attach)}`);
      const fuseWorkers = parseIntegerIn(o.fuseWorkers, 1, MAX_WORKERS, '--fuse-workers');
      const nodeId = o.nodeId ?? process.env['NODE_ID'] ?? hostname();
      const maxVolumes = parseWholeNumber(o.maxVolumesPerNode, 0, '--max-volumes-per-node must be a non-negative integer');
      const drainMs = parseWholeNumber(o.drainTimeout, 0, '--drain-timeout must be a non-negative number of milliseconds');
      // Loaded here, not at the top: every `flashcsi serve` (one per volume) runs this binary too, and
      // gRPC and the Kubernetes client would cost each of them tens of MiB.
      const [{ startPlugin }, { componentLogger, createLogger }, { parseListenAddress }] = await Promise.all([
        import('../src/csi/plugin.js'),
        import('../src/log/logger.js'),
        import('../src/metrics/http.js'),
      ]);
      const metricsAddress = o.metricsAddress === undefined ? undefined : parseListenAddress(o.metricsAddress);
      const logger = createLogger({ level: o.logLevel as 'info', name: 'flashcsi-plugin' });
      const plugin = await startPlugin({
        mode: o.mode as PluginMode,
        endpoint,
        stateDir: o.stateDir,
        nodeId,
        logger,
        maxVolumesPerNode: maxVolumes,
        drainTimeoutMs: drainMs,
        serveLogLevel: o.logLevel,
        attach: o.attach as AttachPreference,
        fuseWorkers,
        ...(metricsAddress === undefined ? {} : { metricsAddress }),
        ...(o.snapshotMetadataEndpoint === undefined ? {} : { snapshotMetadataEndpoint: o.snapshotMetadataEndpoint }),
        ...(o.registrationDir === undefined ? {} : { registrationDir: o.registrationDir }),
        ...(o.kubeletRegistrationPath === undefined ? {} : { kubeletEndpoint: o.kubeletRegistrationPath }),
      });
      let agent: NodeAgent | undefined;
      // Signals are handled from here on, even while the agent still waits for the API server.
      const stopped = new Promise<void>((resolve) => {
        const stop = (signal: string): void => {
          logger.info({ signal }, 'plugin: draining');
          Promise.all([agent?.stop(), plugin.stop()]).then(() => resolve(), (err: unknown) => {
            logger.error({ err }, 'plugin: stop failed');
            process.exitCode = 1;
            resolve();
          });
        };
        process.once('SIGTERM', () => stop('SIGTERM'));
        process.once('SIGINT', () => stop('SIGINT'));
      });
      if (o.agent) {
        await plugin.ready;
        const [{ NodeAgent }, { Kube, loadKubeConfig }] = await Promise.all([import('../src/k8s/agent.js'), import('../src/k8s/kube.js')]);
        agent = new NodeAgent({ kube: new Kube(loadKubeConfig(o.kubeconfig)), log: componentLogger(logger, 'agent'), nodeId, ...plugin.node });
        // Not awaited before waiting for a signal: start() returns once the API server has answered.
        agent.start().catch((err: unknown) => logger.error({ err }, 'agent: start failed'));
      }
      await stopped;
      // An agent still starting keeps watch retries pending; the plugin has drained, so leave now.
      if (agent) setImmediate(() => process.exit());
    });
}
