/**
 * `flashcsi coordinator`: runs two-phase commit for VolumeTransactions and validates
 * VolumeRollbacks, while it holds the leader Lease. Exits non-zero when it loses leadership, so
 * its Deployment restarts it as a follower rather than letting two leaders act.
 */
import * as os from 'node:os';
import type { Command } from 'commander';
import { createLogger } from '../src/log/logger.js';
import { Coordinator } from '../src/k8s/coordinator.js';
import { Kube, loadKubeConfig } from '../src/k8s/kube.js';

export function registerCoordinatorCommand(program: Command): void {
  program
    .command('coordinator')
    .description('the VolumeTransaction/VolumeRollback coordinator (leader-elected through a Lease)')
    .option('--kubeconfig <path>', 'kubeconfig file (default: in-cluster, then $KUBECONFIG, then ~/.kube/config)')
    .option('--namespace <ns>', 'namespace of the leader Lease', process.env.POD_NAMESPACE ?? 'flashcsi-system')
    .option('--lease-name <name>', 'name of the leader Lease', 'flashcsi-coordinator')
    .option('--identity <id>', 'this candidate\'s identity in the Lease', process.env.POD_NAME ?? `${os.hostname()}-${process.pid}`)
    .option('--no-leader-elect', 'act without leader election (one coordinator only)')
    .option('--log-level <level>', 'log level', 'info')
    .action(async (o: { kubeconfig?: string; namespace: string; leaseName: string; identity: string; leaderElect: boolean; logLevel: string }) => {
      const log = createLogger({ level: o.logLevel as 'info', name: 'flashcsi-coordinator' });
      const coordinator = new Coordinator({
        kube: new Kube(loadKubeConfig(o.kubeconfig)),
        log,
        ...(o.leaderElect ? { lease: { namespace: o.namespace, name: o.leaseName, identity: o.identity } } : {}),
      });
      let stopping = false;
      const stop = async (code: number): Promise<void> => {
        if (stopping) return;
        stopping = true;
        await coordinator.stop();
        process.exitCode = code;
        // Informer watches keep sockets open; the process is done acting, so leave now.
        setImmediate(() => process.exit(code));
      };
      process.once('SIGTERM', () => void stop(0));
      process.once('SIGINT', () => void stop(0));
      const { lost } = await coordinator.start();
      process.stdout.write(`${JSON.stringify({ ready: true, identity: o.identity })}\n`);
      await lost;
      log.error({}, 'lost leadership; exiting');
      await stop(1);
    });
}
