/**
 * The kubectl-flashcsi command line (commander): `kubectl flashcsi rollback|tx|status`. Global flags as
 * kubectl's: -n/--namespace, --kubeconfig, --context. `--help` works on every command.
 */
import { Command, Option } from 'commander';
import type { ConnectOptions, PluginClient } from './client.js';
import { rollback, status, txBegin, txDecide, type CommandContext, type Output } from './commands.js';
import { parseDurationSeconds } from './duration.js';

export interface ProgramOptions {
  io: Output;
  /** Builds the API client from the global flags (default: client-node, loaded on first use). */
  connect?: (opts: ConnectOptions) => Promise<PluginClient>;
  version: string;
}

interface GlobalFlags {
  namespace?: string;
  kubeconfig?: string;
  context?: string;
}

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** Builds the program; the caller runs `parseAsync` and turns errors into one line and an exit code. */
export function buildProgram(opts: ProgramOptions): Command {
  const connectFn = opts.connect ?? (async (o: ConnectOptions) => (await import('./client.js')).connect(o));
  const context = async (cmd: Command): Promise<CommandContext> => {
    const g = cmd.optsWithGlobals<GlobalFlags>();
    return { client: await connectFn({ namespace: g.namespace, kubeconfig: g.kubeconfig, context: g.context }), io: opts.io };
  };
  const waitTimeout = (text: string | undefined): number | undefined =>
    text === undefined ? undefined : parseDurationSeconds(text, '--wait-timeout') * 1000;

  const program = new Command('kubectl-flashcsi')
    .description('flashcsi for kubectl: roll PVCs back to VolumeSnapshots in place, and group PVCs in VolumeTransactions')
    .version(opts.version)
    .option('-n, --namespace <namespace>', 'the namespace (default: the kubeconfig context\'s, else "default")')
    .option('--kubeconfig <file>', 'kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, else in-cluster)')
    .option('--context <name>', 'kubeconfig context (default: the current context)')
    .showHelpAfterError(false)
    .showSuggestionAfterError(true)
    .exitOverride()
    .configureOutput({
      writeOut: (s) => opts.io.out(s),
      writeErr: (s) => opts.io.err(s),
    });

  program
    .command('rollback')
    .description('roll PVC back, in place, to one of its VolumeSnapshots (creates a VolumeRollback)')
    .argument('<pvc>', 'the PersistentVolumeClaim to roll back')
    .requiredOption('--to <snapshot>', 'a VolumeSnapshot of that PVC, in the same namespace')
    .option('--name <name>', 'name of the VolumeRollback (default: <pvc>-to-<snapshot>-<random>)')
    .option('--wait', 'wait until the rollback has Completed (exit 1 if it Failed)')
    .option('--wait-timeout <duration>', 'with --wait, give up after this long (e.g. 5m)')
    .action(async (pvc: string, o: { to: string; name?: string; wait?: boolean; waitTimeout?: string }, cmd: Command) => {
      await rollback(await context(cmd), { pvc, to: o.to, name: o.name, wait: o.wait === true, waitTimeoutMs: waitTimeout(o.waitTimeout) });
    });

  const tx = program.command('tx').description('VolumeTransactions: begin, commit or roll back several PVCs atomically');
  tx.command('begin')
    .description('begin a transaction over PVCs (creates a VolumeTransaction; a checkpoint is cut on every PVC at one instant)')
    .argument('<name>', 'name of the VolumeTransaction')
    .addOption(new Option('--pvc <pvc>', 'a PVC of the transaction (repeat for each)').argParser(collect).makeOptionMandatory(true))
    .option('--timeout <duration>', 'roll back if no decision is made this long after the transaction opened (e.g. 10m; default 1h)')
    .option('--wait', 'wait until the transaction is Open (exit 1 if it rolled back or failed)')
    .option('--wait-timeout <duration>', 'with --wait, give up after this long')
    .action(async (name: string, o: { pvc: string[]; timeout?: string; wait?: boolean; waitTimeout?: string }, cmd: Command) => {
      const timeoutSeconds = o.timeout === undefined ? undefined : parseDurationSeconds(o.timeout, '--timeout');
      await txBegin(await context(cmd), { name, pvcs: o.pvc, timeoutSeconds, wait: o.wait === true, waitTimeoutMs: waitTimeout(o.waitTimeout) });
    });
  for (const [verb, decision, goal] of [
    ['commit', 'Commit', 'Committed'],
    ['rollback', 'Rollback', 'RolledBack'],
  ] as const) {
    tx.command(verb)
      .description(`decide to ${verb} a transaction (sets spec.decision: ${decision}; a decision cannot be changed)`)
      .argument('<name>', 'name of the VolumeTransaction')
      .option('--wait', `wait until the transaction is ${goal} (exit 1 otherwise)`)
      .option('--wait-timeout <duration>', 'with --wait, give up after this long')
      .action(async (name: string, o: { wait?: boolean; waitTimeout?: string }, cmd: Command) => {
        await txDecide(await context(cmd), { name, decision, wait: o.wait === true, waitTimeoutMs: waitTimeout(o.waitTimeout) });
      });
  }

  program
    .command('status')
    .description('list VolumeRollbacks and VolumeTransactions (with their participants): phase, target, age')
    .option('-A, --all-namespaces', 'in every namespace')
    .action(async (o: { allNamespaces?: boolean }, cmd: Command) => {
      await status(await context(cmd), { allNamespaces: o.allNamespaces === true });
    });

  return program;
}
