/**
 * Runs inside the test guest (test/kernel/guest.ts `node()`): the project's own kernel nbd code
 * (src/host/kernel-nbd.ts, kernel-nbd-keeper.ts) against the guest's kernel, with TCP to the host's `flashcsi serve`
 * in place of the node's unix socket.
 *
 *   attach HOST:PORT ID CONNECTIONS IO_TIMEOUT DEAD_TIMEOUT   → prints {"device":…,"index":…}
 *   keep DEVICE HOST:PORT ID CONNECTIONS                      → KernelDeviceKeeper until SIGTERM;
 *                                                               one JSON line per event on stdout
 *   detach DEVICE
 *
 * `keep` is the node plugin's reconnect, minus the plugin's server restart: here the test restarts
 * the server on the host, so `ensureServer` only names it.
 */
import { attachKernelDevice, detachKernelDevice, nbdIndex } from '../../src/host/kernel-nbd.js';
import { KernelDeviceKeeper, type KeeperLog } from '../../src/host/kernel-nbd-keeper.js';

function tcp(text: string): { host: string; port: number } {
  const [host, port] = text.split(':');
  if (host === undefined || port === undefined) throw new Error(`HOST:PORT expected, got ${text}`);
  return { host, port: Number(port) };
}

const line = (level: string) => (obj: object, msg: string) => process.stdout.write(`${JSON.stringify({ t: Date.now(), level, msg, ...obj })}\n`);
const log: KeeperLog = { info: line('info'), warn: line('warn'), error: line('error') };

const [cmd, ...args] = process.argv.slice(2);
switch (cmd) {
  case 'attach': {
    const [addr, identifier, connections, io, dead] = args;
    const dev = await attachKernelDevice({
      address: tcp(addr ?? ''),
      exportName: '',
      identifier: identifier ?? '',
      connections: Number(connections),
      ioTimeoutSeconds: Number(io),
      deadConnTimeoutSeconds: Number(dead),
    });
    process.stdout.write(`${JSON.stringify(dev)}\n`);
    break;
  }
  case 'keep': {
    const [device, addr, identifier, connections] = args;
    const address = tcp(addr ?? '');
    const keeper = new KernelDeviceKeeper({ log });
    keeper.add({
      device: device ?? '',
      index: nbdIndex(device ?? ''),
      identifier: identifier ?? '',
      connections: Number(connections),
      exportName: '',
      ensureServer: async () => address,
    });
    log.info({ device }, 'keeper: watching');
    const alive = setInterval(() => undefined, 60_000); // the keeper's own timer does not hold the process
    await new Promise<void>((resolve) => process.once('SIGTERM', () => resolve()));
    clearInterval(alive);
    keeper.close();
    log.info({ reconnects: keeper.reconnects }, 'keeper: stopped');
    break;
  }
  case 'detach':
    await detachKernelDevice(args[0] ?? '');
    break;
  default:
    throw new Error(`unknown command ${cmd ?? ''}`);
}
