/**
 * A data-path restart under a real kernel is invisible to the application: `flashcsi serve` is
 * SIGKILLed while the guest writes and fsyncs files on a mounted file system, and started again;
 * the project's own reconnect (KernelDeviceKeeper, run in the guest) sees the kernel's LINK_DEAD
 * event and hands the device new connections (NBD_CMD_RECONFIGURE). Required afterwards:
 *   - no I/O error in the guest (the writer's calls, and the kernel log);
 *   - every file the writer had fsynced reads back intact from the device (page cache dropped);
 *   - fsck clean at the end.
 * The device is attached with the plugin's defaults (I/O timeout, dead-connection timeout). Half of
 * the kills hit ext4 on one connection, half xfs on two: FLASHCSI_KERNEL_KILLS kills (default 0:
 * CI runs only the plugin test below, which kills serve twice; `npm run torture`: 50). Each summary
 * line reports the stall: from the kill to the first file written and fsynced afterwards.
 *
 * Then the node plugin itself, in the guest, on the kernel path: serve SIGKILLed under writes (the
 * plugin restarts it and reconnects the device), then the plugin and serve SIGKILLed together and
 * the plugin started again (adoption restarts serve and reconnects).
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';

import { KERNEL_DEFAULTS } from '../../src/host/kernel-nbd.js';
import {
  attachInGuest,
  cleanUpAfterFailure,
  detachInGuest,
  ioErrorLines,
  loggedFiles,
  MiB,
  startKeeper,
  startWriterCommand,
  stopKeeper,
  stopWriter,
  waitForFile,
  useServedVolumeAndGuest,
  type GuestDevice,
} from './harness.js';

const KILLS = Number(process.env.FLASHCSI_KERNEL_KILLS ?? 0);
/** Files the writer must fsync between kills (I/O has really resumed). */
const FILES_BETWEEN_KILLS = 8;

/**
 * Whether the writer logged a file it started after `before` was read: the writer is sequential,
 * so the file after the last one logged may have been in flight already; the one after it was not.
 */
function startedAfter(now: Map<number, string>, before: Map<number, string>): boolean {
  const last = Math.max(0, ...before.keys());
  return [...now.keys()].some((n) => n >= last + 2);
}

const phases = [
  { fs: 'ext4', mkfs: 'mkfs.ext4 -q -F -E nodiscard', fsck: 'e2fsck -f -n', connections: 1, kills: Math.ceil(KILLS / 2) },
  { fs: 'xfs', mkfs: 'mkfs.xfs -q -f -K', fsck: 'xfs_repair -n', connections: 2, kills: Math.floor(KILLS / 2) },
].filter((p) => p.kills > 0);

describe('kernel nbd reconnect after SIGKILL of flashcsi serve (qemu TCG guest)', { timeout: 600_000 + KILLS * 180_000 }, () => {
  const env = useServedVolumeAndGuest('flashcsi-reconnect-', 1024 * MiB);

  for (const phase of phases) {
    it(`${phase.fs}, ${phase.connections} connection(s): ${phase.kills} SIGKILL(s) under writes and fsyncs, no I/O error, nothing fsynced lost`, async (t) => {
      const { guest, served } = env;
      const run: { dev?: GuestDevice; passed?: true } = {};
      t.after(() => (run.passed ? undefined : cleanUpAfterFailure(guest, run.dev)));
      const dev = (run.dev = await attachInGuest(guest, served, {
        connections: phase.connections,
        ioTimeoutSeconds: KERNEL_DEFAULTS.ioTimeoutSeconds,
        deadConnTimeoutSeconds: KERNEL_DEFAULTS.deadConnTimeoutSeconds,
        identifier: `flashcsi:reconnect-${phase.fs}`,
      }));
      const mnt = `/mnt/${phase.fs}`;
      await guest.sh(`${phase.mkfs} ${dev.device} && mkdir -p ${mnt} && mount ${dev.device} ${mnt}`);
      const keeperLog = `keeper-${phase.fs}.log`;
      await startKeeper(guest, served, dev, keeperLog);
      const log = `/work/${phase.fs}.log`;
      const hostLog = path.join(guest.opts.workDir, `${phase.fs}.log`);
      const stop = `/work/${phase.fs}.stop`;
      await guest.sh(startWriterCommand(`${mnt}/files`, log, stop));
      const stalls: number[] = [];
      let fsynced = 0;
      for (let kill = 1; kill <= phase.kills; kill++) {
        const target = fsynced + FILES_BETWEEN_KILLS;
        const before = loggedFiles(await waitForFile(hostLog, (t) => loggedFiles(t).size >= target, 300_000, `${target} fsynced files`));
        const killedAt = Date.now();
        await served.kill();
        await served.restart();
        const resumed = await waitForFile(hostLog, (t) => startedAfter(loggedFiles(t), before), 300_000, `a file written and fsynced after kill ${kill}`);
        stalls.push(Date.now() - killedAt);
        fsynced = loggedFiles(resumed).size;
      }
      const { summary, failures } = await stopWriter(guest, log, stop);
      const reconnects = await stopKeeper(guest, keeperLog);
      const verified = await guest.sh(`sh /work/verify.sh ${mnt}/files ${log}`, 600_000);
      await guest.sh(`umount ${mnt} && ${phase.fsck} ${dev.device}`, 300_000);
      await detachInGuest(guest, dev);
      const sorted = [...stalls].sort((a, b) => a - b);
      console.log(
        `${phase.fs}: ${phase.kills} kills, ${reconnects} reconnects; ${summary}; ${verified.trim().split('\n').at(-1) ?? ''}; ` +
          `stall after a kill (ms): min ${sorted[0]}, median ${sorted[Math.floor(sorted.length / 2)]}, max ${sorted.at(-1)}`,
      );
      assert.equal(failures, '', 'the guest writer saw failed calls');
      assert.ok(reconnects >= phase.kills, `${reconnects} reconnects for ${phase.kills} kills`);
      assert.deepEqual(ioErrorLines(guest.console()), []);
      run.passed = true;
    });
  }

  it('node plugin on the kernel path: it restarts a SIGKILLed serve and reconnects; killed together with serve, the restarted plugin does it at adoption', async () => {
    const { guest } = env;
    const plugin = (cmd: string): Promise<Record<string, unknown>> =>
      guest.sh(`${guest.node('test/kernel/guest-plugin.js', [cmd, '/tmp/fcsi'])} 2>&1`, 600_000).then((out) => JSON.parse(out.trim().split('\n').at(-1) ?? '{}') as Record<string, unknown>);
    const inGuest = (p: string): string => `/host${p}`; // the chroot's /tmp is the guest's /host/tmp
    const started = await plugin('start');
    const stage = JSON.parse(await guest.sh(`cat ${inGuest('/tmp/fcsi/state/node/kvol/stage.json')}`)) as { attachment: { method: string; device: string } };
    assert.equal(stage.attachment.method, 'kernel', 'the plugin must stage through the kernel nbd path where /dev/nbd* exists');
    const files = `${inGuest(String(started.target))}/files`;
    const log = '/work/plugin.log';
    const hostLog = path.join(guest.opts.workDir, 'plugin.log');
    await guest.sh(startWriterCommand(files, log, '/work/plugin.stop'));
    const servePid = async (): Promise<number> => (JSON.parse(await guest.sh(`cat ${inGuest('/tmp/fcsi/state/volumes/kvol/serve.json')}`)) as { pid: number }).pid;
    const stalls: number[] = [];
    const killAndWait = async (what: string, pids: number[], then?: () => Promise<unknown>): Promise<void> => {
      const before = loggedFiles(await waitForFile(hostLog, (t) => loggedFiles(t).size >= 8 + stalls.length * 8, 300_000, 'fsynced files'));
      const killedAt = Date.now();
      // SIGKILL takes effect when a task leaves the kernel: wait until the processes are gone.
      await guest.sh(`kill -9 ${pids.join(' ')}; timeout 60 sh -c 'while ${pids.map((p) => `[ -e /proc/${p} ] ||`).join(' ')} false; do usleep 20000; done'`);
      await then?.();
      await waitForFile(hostLog, (t) => startedAfter(loggedFiles(t), before), 600_000, `a file written and fsynced after ${what}`);
      stalls.push(Date.now() - killedAt);
    };
    const firstServe = await servePid();
    await killAndWait('SIGKILL of serve', [firstServe]);
    assert.notEqual(await servePid(), firstServe, 'the plugin started a new serve');
    await killAndWait('SIGKILL of the plugin and serve', [Number(await guest.sh(`cat ${inGuest('/tmp/fcsi/plugin.pid')}`)), await servePid()], () => plugin('restart'));
    const stats = await plugin('stats');
    assert.equal(stats.abnormal, false, `volume condition after the restarts: ${String(stats.message)}`);
    const { summary, failures } = await stopWriter(guest, log, '/work/plugin.stop');
    const verified = await guest.sh(`sh /work/verify.sh ${files} ${log}`, 600_000);
    const pluginLogs = await guest.sh(`cat ${inGuest('/tmp/fcsi')}/plugin-*.log`);
    assert.match(pluginLogs, /restarted the volume's data-path server/);
    assert.match(pluginLogs, /kernel nbd: device reconnected/);
    const left = await plugin('teardown');
    console.log(`plugin: ${summary}; ${verified.trim().split('\n').at(-1) ?? ''}; stall after serve kill ${stalls[0]} ms, after plugin+serve kill (incl. plugin start) ${stalls[1]} ms`);
    assert.equal(failures, '', 'the application saw failed calls');
    assert.deepEqual(left.left, []);
    assert.deepEqual(ioErrorLines(guest.console()), []);
  });
});
