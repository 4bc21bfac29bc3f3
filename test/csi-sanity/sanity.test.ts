/**
 * csi-sanity v5.5.0 (the kubernetes-csi conformance suite) against `flashcsi plugin --mode all`
 * started as a real process on a temp state dir and sockets, with real staging and mount
 * directories: NodeStageVolume really starts `flashcsi serve`, attaches it through nbdfuse + a loop
 * device, makes and mounts ext4 (or hands out the block device). Run twice: mount volumes, then
 * `--csi.testvolumeaccesstype block`.
 *
 * Asserts 0 failed specs, and that every skipped spec is skipped for a capability flashcsi truly
 * lacks (the table below); the list is printed as test diagnostics. Afterwards nothing is left:
 * no volumes, stage records, mounts, loop devices or processes.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { assertNothingLeft, MiB, shortTempDir, startPlugin, sweep, type PluginProcess } from '../csi/plugin-process.js';

const cache = process.env['FLASHCSI_CACHE'] ?? join(homedir(), '.cache', 'flashcsi');
const CSI_SANITY = join(cache, 'bin', 'csi-sanity');
const BUILD = `GOBIN=${join(cache, 'bin')} go install github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@v5.5.0   (or: scripts/go-tools.sh)`;

/** Skip reasons csi-sanity prints, and the capability flashcsi does not have that each stands for. */
const ALLOWED_SKIPS: ReadonlyArray<{ readonly reason: RegExp; readonly capability: string }> = [
  {
    reason: /^skipped - (ControllerModifyVolume|Modify [Vv]olume) not supported$/,
    capability: 'MODIFY_VOLUME (ControllerModifyVolume / VolumeAttributesClass): flashcsi has no mutable volume parameters',
  },
  {
    reason: /^skipped - (ControllerPublishVolume|ControllerUnpublishVolume|Controller Publish, UnpublishVolume) not supported$/,
    capability: 'PUBLISH_UNPUBLISH_VOLUME (ControllerPublish/Unpublish): volumes are node-local, there is no attach step',
  },
];

interface Spec {
  readonly name: string;
  readonly status: string;
  readonly message: string;
}

function unescapeXml(s: string): string {
  return s.replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&#xA;/g, '\n').replace(/&amp;/g, '&');
}

/** The specs of a Ginkgo JUnit report. */
export function parseJunit(xml: string): Spec[] {
  const specs: Spec[] = [];
  const re = /<testcase name="([^"]*)"[^>]*status="([a-z]+)"[^>]*>([\s\S]*?)<\/testcase>/g;
  for (let m = re.exec(xml); m !== null; m = re.exec(xml)) {
    const body = m[3] ?? '';
    const message = /<(?:skipped|failure|error) message="([^"]*)"/.exec(body)?.[1] ?? '';
    specs.push({ name: unescapeXml(m[1] ?? ''), status: m[2] ?? '', message: unescapeXml(message) });
  }
  return specs;
}

function runSanity(args: string[], timeoutMs: number): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile(CSI_SANITY, args, { timeout: timeoutMs, maxBuffer: 256 * MiB, encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
      resolve({ code, output: `${stdout}${stderr}` });
    });
  });
}

describe('csi-sanity v5.5.0 against flashcsi plugin --mode all', () => {
  const dirs: string[] = [];
  after(async () => {
    for (const d of dirs) await sweep(d);
  });

  for (const accessType of ['mount', 'block'] as const) {
    it(`${accessType} volumes: 0 failed, every skip for a capability flashcsi lacks`, { timeout: 240_000 }, async (t) => {
      assert.ok(existsSync(CSI_SANITY), `csi-sanity is not built at ${CSI_SANITY}; build it with:\n  ${BUILD}`);
      const dir = await shortTempDir();
      dirs.push(dir);
      const plugin: PluginProcess = await startPlugin(dir);
      await plugin.waitReady();
      const junit = join(dir, 'junit.xml');
      const started = Date.now();
      const { code, output } = await runSanity(
        [
          '--csi.endpoint',
          `unix://${plugin.socket}`,
          '--csi.mountdir',
          join(dir, 'mnt'),
          '--csi.stagingdir',
          join(dir, 'staging'),
          '--csi.testvolumesize',
          String(64 * MiB),
          '--csi.testvolumeexpandsize',
          String(128 * MiB),
          '--csi.testvolumeaccesstype',
          accessType,
          '--ginkgo.junit-report',
          junit,
          '--ginkgo.no-color',
        ],
        200_000,
      );
      const seconds = ((Date.now() - started) / 1000).toFixed(1);
      assert.ok(existsSync(junit), `csi-sanity wrote no JUnit report (exit ${code}):\n${output.slice(-4000)}`);
      const specs = parseJunit(await fsp.readFile(junit, 'utf8'));
      const count = (s: string): number => specs.filter((x) => x.status === s).length;
      t.diagnostic(`csi-sanity (${accessType}) in ${seconds}s: ${count('passed')} passed, ${count('failed')} failed, ${count('skipped')} skipped, ${count('pending')} pending`);
      const failed = specs.filter((s) => s.status === 'failed' || s.status === 'panicked' || s.status === 'interrupted' || s.status === 'timedout');
      assert.deepEqual(
        failed.map((s) => `${s.name}: ${s.message}`),
        [],
        `failed specs; plugin log: ${plugin.logFile}\n${output.slice(-6000)}`,
      );
      assert.equal(code, 0, `csi-sanity exited ${code}:\n${output.slice(-4000)}`);
      assert.ok(count('passed') >= 70, `only ${count('passed')} specs passed`);
      for (const s of specs.filter((x) => x.status === 'skipped')) {
        const allowed = ALLOWED_SKIPS.find((a) => a.reason.test(s.message));
        assert.ok(allowed !== undefined, `spec skipped for a reason flashcsi should not have: ${s.name}: ${s.message}`);
        t.diagnostic(`skipped: ${s.name} — needs ${allowed.capability}`);
      }
      for (const s of specs.filter((x) => x.status === 'pending')) t.diagnostic(`pending (disabled upstream with XIt, runs for no driver): ${s.name}`);

      // Everything csi-sanity created was deleted, and nothing is left attached or running.
      assert.deepEqual(await fsp.readdir(join(plugin.stateDir, 'volumes')), [], 'no volumes left');
      assert.deepEqual(await fsp.readdir(join(plugin.stateDir, 'node')), [], 'no stage records left');
      assert.equal(await plugin.stop(), 0, 'the plugin drains and exits 0 on SIGTERM');
      await assertNothingLeft(dir);
    });
  }
});
