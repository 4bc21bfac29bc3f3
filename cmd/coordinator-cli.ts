/**
 * `flashcsi coordinator`: runs two-phase commit for VolumeTransactions and validates
 * VolumeRollbacks, while it holds the leader Lease. Exits non-zero when it loses leadership, so
 * its Deployment restarts it as a follower rather than letting two leaders act.
 * `--metrics-address HOST:PORT` adds a plain-HTTP, read-only /metrics and /healthz endpoint, up
 * from the start (a follower reports flashcsi_coordinator_leader 0); docs/metrics.md.
 */
import * as os from 'node:os';
import type { Command } from 'commander';
import { DEFAULT_LIMITS } from '../src/k8s/transaction-plan.js';
import { parseWholeNumber } from './units.js';

export function registerCoordinatorCommand(program: Command): void {
  program
    .command('coordinator')
    .description('the VolumeTransaction/VolumeRollback coordinator (leader-elected through a Lease)')
    .option('--kubeconfig <path>', 'kubeconfig file (default: in-cluster, then $KUBECONFIG, then ~/.kube/config)')
    .option('--namespace <ns>', 'namespace of the leader Lease', process.env.POD_NAMESPACE ?? 'flashcsi-system')
    .option('--lease-name <name>', 'name of the leader Lease', 'flashcsi-coordinator')
    .option('--identity <id>', 'this candidate\'s identity in the Lease', process.env.POD_NAME ?? `${os.hostname()}-${process.pid}`)
    .option('--lease-duration-seconds <s>', 'how long the leader Lease lasts without a renewal before a standby takes over', '15')
    .option('--no-leader-elect', 'act without leader election (one coordinator only)')
    .option(
      '--prepare-timeout-seconds <s>',
      'how long the volumes of a VolumeTransaction may take to prepare after decision Commit before the decision is Rollback (PrepareTimeout)',
      String(DEFAULT_LIMITS.prepareTimeoutMs / 1000),
    )
    .option('--log-level <level>', 'log level', 'info')
    .option('--metrics-address <host:port>', 'serve Prometheus /metrics and /healthz over plain HTTP (read-only) on this address; ":9809" = every interface (default: off)')
    .action(async (o: { kubeconfig?: string; namespace: string; leaseName: string; identity: string; leaseDurationSeconds: string; prepareTimeoutSeconds: string; leaderElect: boolean; logLevel: string; metricsAddress?: string }) => {
      // Loaded here, not at the top: every `flashcsi serve` (one per volume) runs this binary too, and
      // the Kubernetes client alone would cost each of them tens of MiB.
      const [{ createLogger }, { Coordinator }, { Kube, loadKubeConfig }, { CoordinatorMetrics }, { parseListenAddress, startMetricsServer }] = await Promise.all([
        import('../src/log/logger.js'),
        import('../src/k8s/coordinator.js'),
        import('../src/k8s/kube.js'),
        import('../src/metrics/coordinator.js'),
        import('../src/metrics/http.js'),
      ]);
      const metricsAddress = o.metricsAddress === undefined ? undefined : parseListenAddress(o.metricsAddress);
      const leaseDurationSeconds = parseWholeNumber(o.leaseDurationSeconds, 2, '--lease-duration-seconds must be an integer of at least 2');
      const prepareTimeoutSeconds = parseWholeNumber(o.prepareTimeoutSeconds, 1, '--prepare-timeout-seconds must be an integer of at least 1');
      const log = createLogger({ level: o.logLevel as 'info', name: 'flashcsi-coordinator' });
      const metrics = new CoordinatorMetrics(() => coordinator.phaseCounts());
      const coordinator = new Coordinator({
        kube: new Kube(loadKubeConfig(o.kubeconfig)),
        log,
        onDecision: (decision, reason) => metrics.decision(decision, reason),
        onReconcileError: (kind) => metrics.reconcileError(kind),
        limits: { ...DEFAULT_LIMITS, prepareTimeoutMs: prepareTimeoutSeconds * 1000 },
        ...(o.leaderElect ? { lease: { namespace: o.namespace, name: o.leaseName, identity: o.identity, leaseDurationSeconds } } : {}),
      });
      // Up before the election: a standby answers too (leader 0).
      const metricsServer =
        metricsAddress === undefined ? undefined : await startMetricsServer({ address: metricsAddress, render: () => metrics.registry.metrics(), log: log.child({ component: 'metrics' }) });
      let stopping = false;
      const stop = async (code: number): Promise<void> => {
        if (stopping) return;
        stopping = true;
        metrics.setLeader(false);
        await coordinator.stop();
        await metricsServer?.close();
        process.exitCode = code;
        // Informer watches keep sockets open; the process is done acting, so leave now.
        setImmediate(() => process.exit(code));
      };
      process.once('SIGTERM', () => void stop(0));
      process.once('SIGINT', () => void stop(0));
      const { lost } = await coordinator.start();
      metrics.setLeader(true);
      process.stdout.write(`${JSON.stringify({ ready: true, identity: o.identity })}\n`);
      await lost;
      if (stopping) return; // SIGTERM: stop() gave the Lease up, which also resolves `lost`
      log.error({}, 'lost leadership; exiting');
      await stop(1);
    });
}
