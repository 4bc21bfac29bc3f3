// The upstream Kubernetes storage e2e suite (k8s.io/kubernetes test/e2e, "External Storage") run
// against flashcsi on a LocalCluster (test/cluster), the way csi-release-tools' prow.sh runs it:
// three passes of `ginkgo e2e.test -- -storage.testdriver=test-driver-<fs>.yaml`, one JUnit and one
// JSON report each, then every spec of the pass classified: passed, failed, or skipped for a reason
// that test/e2e-storage/skips.yaml names (a capability flashcsi lacks, or this machine).
//
//   const outcome = await runPass({ cluster, fs: 'ext4', pass: PASSES[0], dir, procs: 4 });
//   outcome.failed.length === 0 && outcome.unexplained.length === 0
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import yaml from 'js-yaml';
import { pinnedVersions, repoRoot, toolPath } from '../k8s/harness.js';

export const FS_TYPES = ['ext4', 'xfs'] as const;
export type FsType = (typeof FS_TYPES)[number];

/** One of prow.sh's passes: ginkgo focus and skip (Go regular expressions), parallel or not. */
export interface Pass {
  readonly id: 1 | 2 | 3;
  readonly name: 'parallel' | 'features' | 'serial';
  /** The spec must match `External.Storage.*<tail>` (tail empty: anything). */
  readonly tail: string;
  readonly skip: string;
  readonly parallel: boolean;
}

/**
 * prow.sh's three runs (csi-release-tools: "parallel", "parallel-features", "serial"):
 *  1. everything but [Serial], [Disruptive] and [Feature:…] specs, in parallel;
 *  2. the non-alpha feature-tagged specs in parallel: snapshots (VolumeSnapshotDataSource, prow.sh's
 *     list), plus group snapshots (volumegroupsnapshot: registered only when the driver file has
 *     groupSnapshot) and VolumeSourceXFS (the node has xfs; prow.sh leaves it out because its kind
 *     nodes may not). [Serial] specs of these stay in: ginkgo runs them alone at the end of the run;
 *  3. [Serial] and [Disruptive] specs one at a time, without [Feature:…] ones (they ran in pass 2).
 */
export const PASSES: readonly Pass[] = [
  { id: 1, name: 'parallel', tail: '', skip: String.raw`\[Serial\]|\[Disruptive\]|\[Feature:`, parallel: true },
  {
    id: 2,
    name: 'features',
    tail: String.raw`(\[Feature:VolumeSnapshotDataSource\]|\[Feature:volumegroupsnapshot\]|\[Feature:VolumeSourceXFS\])`,
    skip: String.raw`\[Disruptive\]`,
    parallel: true,
  },
  { id: 3, name: 'serial', tail: String.raw`(\[Serial\]|\[Disruptive\])`, skip: String.raw`\[Feature:`, parallel: false },
];

/** The test suites (storage/testsuites) CI runs, in passes 1 and 2: the representative subset. */
export const CI_SUITES = ['provisioning', 'snapshottable', 'volume-expand', 'volumes', 'multiVolume', 'volumeMode'] as const;
/**
 * The file systems CI runs them for: ext4 only. Measured at load 20–40 (docs/conformance.md), passes 1
 * and 2 took 13 min for ext4 and xfs pass 1 alone 11 min more, and the whole of `npm test` must stay under
 * 30 min; `npm run e2e:storage` runs xfs in full.
 */
export const CI_FS_TYPES = ['ext4'] as const satisfies readonly FsType[];

/** ginkgo's --focus for a pass, optionally narrowed to some test suites (names as the specs show them). */
export function focusOf(pass: Pass, suites?: readonly string[]): string {
  const within = suites && suites.length > 0 ? String.raw`.*\] (${suites.join('|')}) ` : '';
  return `External.Storage${within}${pass.tail ? `.*${pass.tail}` : ''}`;
}

/** A file of the pinned k8s.io/kubernetes module (the one e2e.test is built from), from Go's module cache. */
export function kubernetesModuleFile(rel: string): string {
  const pin = pinnedVersions().bins.get('e2e.test');
  if (pin === undefined) throw new Error('e2e.test is not pinned in scripts/go-tools.versions');
  const out = execFileSync('go', ['mod', 'download', '-json', `${pin.module}@${pin.version}`], {
    cwd: tmpdir(),
    env: { ...process.env, GOFLAGS: '', GOTOOLCHAIN: 'local' },
    encoding: 'utf8',
  });
  return join((JSON.parse(out) as { Dir: string }).Dir, rel);
}

export function driverFile(fs: FsType): string {
  return join(repoRoot(), 'test', 'e2e-storage', `test-driver-${fs}.yaml`);
}

// ---- the skip list --------------------------------------------------------------------------------

/** A spec skipped by name (--ginkgo.skip) because of this machine. */
export interface MachineSkip {
  readonly spec: string;
  readonly fs?: readonly FsType[];
  readonly reason: string;
}
/** A skip the suite makes itself (its message), following from a capability flashcsi lacks. */
export interface CapabilitySkip {
  readonly message: string;
  readonly capability: string;
  readonly reason: string;
}
/** A skip the suite makes itself for every driver (a combination the test does not cover). */
export interface SuiteSkip {
  readonly message: string;
  readonly reason: string;
}
export interface SkipList {
  readonly machine: readonly MachineSkip[];
  readonly capability: readonly CapabilitySkip[];
  readonly suite: readonly SuiteSkip[];
}

export const SKIP_LIST_FILE = 'test/e2e-storage/skips.yaml';

export function loadSkipList(file = join(repoRoot(), SKIP_LIST_FILE)): SkipList {
  const doc = yaml.load(readFileSync(file, 'utf8')) as Partial<SkipList> | null;
  return { machine: doc?.machine ?? [], capability: doc?.capability ?? [], suite: doc?.suite ?? [] };
}

/** The machine skips that apply to one file system. */
export function machineSkipsFor(list: SkipList, fs: FsType): MachineSkip[] {
  return list.machine.filter((m) => m.fs === undefined || m.fs.includes(fs));
}

// ---- reports --------------------------------------------------------------------------------------

/** One spec of a ginkgo JSON report, as much of it as the classification needs. */
export interface SpecResult {
  /** The text ginkgo's focus and skip match: container texts and the It text, space-joined. */
  readonly text: string;
  readonly state: string;
  /** The skip message or failure message (empty for specs filtered out by focus/skip). */
  readonly message: string;
  readonly seconds: number;
}

interface GinkgoSpecReport {
  ContainerHierarchyTexts?: string[] | null;
  LeafNodeText?: string;
  LeafNodeType?: string;
  State?: string;
  RunTime?: number;
  Failure?: { Message?: string };
}

/** The It specs of a ginkgo --json-report file. */
export function readReport(file: string): SpecResult[] {
  const suites = JSON.parse(readFileSync(file, 'utf8')) as Array<{ SpecReports?: GinkgoSpecReport[] | null }>;
  const out: SpecResult[] = [];
  for (const s of suites) {
    for (const r of s.SpecReports ?? []) {
      if (r.LeafNodeType !== 'It') continue;
      out.push({
        text: [...(r.ContainerHierarchyTexts ?? []), r.LeafNodeText ?? ''].join(' '),
        state: r.State ?? 'unknown',
        message: r.Failure?.Message ?? '',
        seconds: (r.RunTime ?? 0) / 1e9,
      });
    }
  }
  return out;
}

export interface SkippedSpec {
  readonly text: string;
  /** `machine` (skips.yaml by name), or the suite's own skip that skips.yaml explains: `capability` or `suite`. */
  readonly kind: 'machine' | 'capability' | 'suite';
  readonly reason: string;
}

export interface PassOutcome {
  readonly fs: FsType;
  readonly pass: Pass;
  /** Specs the pass selects (its focus and skip), before the machine skips. */
  readonly selected: number;
  readonly passed: string[];
  readonly failed: SpecResult[];
  readonly skipped: SkippedSpec[];
  /** Skipped specs no entry of skips.yaml explains, and specs in any other state (interrupted…). */
  readonly unexplained: SpecResult[];
  readonly seconds: number;
}

/** Classifies every spec the pass selects (focus, minus skip; optionally only some suites). */
export function classify(results: readonly SpecResult[], fs: FsType, pass: Pass, list: SkipList, seconds: number, suites?: readonly string[]): PassOutcome {
  const focus = new RegExp(focusOf(pass, suites));
  const skip = new RegExp(pass.skip);
  const machine = machineSkipsFor(list, fs).map((m) => ({ re: new RegExp(m.spec), m }));
  // The suite's own skips: a capability flashcsi lacks, or a combination no driver runs.
  const explained = [
    ...list.capability.map((c) => ({ re: new RegExp(c.message), kind: 'capability' as const, reason: `${c.capability}: ${c.reason}` })),
    ...list.suite.map((c) => ({ re: new RegExp(c.message), kind: 'suite' as const, reason: c.reason })),
  ];
  const outcome = { fs, pass, selected: 0, passed: [] as string[], failed: [] as SpecResult[], skipped: [] as SkippedSpec[], unexplained: [] as SpecResult[], seconds };
  for (const r of results) {
    if (!focus.test(r.text) || skip.test(r.text)) continue;
    outcome.selected++;
    const byName = machine.find((x) => x.re.test(r.text));
    if (r.state === 'passed') outcome.passed.push(r.text);
    else if (r.state === 'failed' || r.state === 'panicked' || r.state === 'timedout') outcome.failed.push(r);
    else if (r.state === 'skipped' && byName !== undefined) outcome.skipped.push({ text: r.text, kind: 'machine', reason: byName.m.reason });
    else if (r.state === 'skipped' && r.message !== '') {
      const why = explained.find((x) => x.re.test(r.message));
      if (why !== undefined) outcome.skipped.push({ text: r.text, kind: why.kind, reason: why.reason });
      else outcome.unexplained.push(r);
    } else outcome.unexplained.push(r);
  }
  return outcome;
}

/** The External Storage specs e2e.test registers for one file system's driver file (a ginkgo dry run, no cluster). */
export function registeredSpecs(fs: FsType): string[] {
  const dir = mkdtempSync(join(tmpdir(), 'flashcsi-e2e-dry-'));
  try {
    execFileSync(
      toolPath('e2e.test'),
      ['--ginkgo.dry-run', '--ginkgo.focus=External.Storage', `--storage.testdriver=${driverFile(fs)}`, `--repo-root=${repoRoot()}`, `--ginkgo.json-report=${join(dir, 'report.json')}`],
      { cwd: dir, stdio: 'ignore', timeout: 120_000 },
    );
    return readReport(join(dir, 'report.json'))
      .map((r) => r.text)
      .filter((t) => t.startsWith('External Storage'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---- running a pass -------------------------------------------------------------------------------

export interface RunPassOptions {
  readonly kubeconfig: string;
  readonly fs: FsType;
  readonly pass: Pass;
  /** Reports and logs go to DIR/<fs>-pass<N>-<name>/. */
  readonly dir: string;
  /** ginkgo processes for parallel passes. */
  readonly procs: number;
  /** Only these test suites (CI's subset). */
  readonly suites?: readonly string[];
  readonly list: SkipList;
  /** Whole-run deadline (ginkgo --timeout), default 3 h. */
  readonly timeoutMs?: number;
  readonly log?: (line: string) => void;
}

/** The directory of one pass's reports. */
export function passDir(dir: string, fs: FsType, pass: Pass): string {
  return join(dir, `${fs}-pass${pass.id}-${pass.name}`);
}

/** Runs one pass with the pinned ginkgo and e2e.test; resolves its classified outcome. */
export async function runPass(o: RunPassOptions): Promise<PassOutcome> {
  const out = passDir(o.dir, o.fs, o.pass);
  mkdirSync(out, { recursive: true });
  const machine = machineSkipsFor(o.list, o.fs).map((m) => m.spec);
  const args = [
    ...(o.pass.parallel ? ['-p', `--procs=${o.procs}`] : []),
    `--focus=${focusOf(o.pass, o.suites)}`,
    `--skip=${[o.pass.skip, ...machine].join('|')}`,
    `--timeout=${Math.round((o.timeoutMs ?? 3 * 3600_000) / 1000)}s`,
    '--no-color',
    '--output-dir', out,
    '--junit-report', 'junit.xml',
    '--json-report', 'report.json',
    toolPath('e2e.test'),
    '--',
    `--kubeconfig=${o.kubeconfig}`,
    `--storage.testdriver=${driverFile(o.fs)}`,
    `--repo-root=${repoRoot()}`,
    `--report-dir=${out}`,
  ];
  const logFile = join(out, 'ginkgo.log');
  const started = Date.now();
  o.log?.(`e2e-storage: ${o.fs} pass ${o.pass.id} (${o.pass.name}) → ${out}`);
  const fd = openSync(logFile, 'a');
  const code = await new Promise<number | string>((resolve) => {
    // The suite shells out to kubectl (subPath, provisioning): the pinned one, first on PATH.
    const env = { ...process.env, PATH: `${dirname(toolPath('kubectl'))}:${process.env['PATH'] ?? ''}` };
    const child = spawn(toolPath('ginkgo'), args, { cwd: repoRoot(), env, stdio: ['ignore', fd, fd] });
    child.once('exit', (c, s) => resolve(c ?? s ?? 'unknown'));
    child.once('error', (e) => resolve(e.message));
  });
  closeSync(fd);
  const seconds = (Date.now() - started) / 1000;
  let results: SpecResult[];
  try {
    results = readReport(join(out, 'report.json'));
  } catch (e) {
    throw new Error(`e2e-storage: ${o.fs} pass ${o.pass.id}: ginkgo exited ${code} without a readable report (${(e as Error).message}); log: ${logFile}`, { cause: e });
  }
  const outcome = classify(results, o.fs, o.pass, o.list, seconds, o.suites);
  o.log?.(`e2e-storage: ${o.fs} pass ${o.pass.id}: ${describeOutcome(outcome)} in ${Math.round(seconds)} s (ginkgo exit ${code})`);
  return outcome;
}

export function describeOutcome(x: PassOutcome): string {
  return `${x.selected} selected, ${x.passed.length} passed, ${x.failed.length} failed, ${x.skipped.length} skipped, ${x.unexplained.length} unexplained`;
}

/** A Markdown summary: one row per pass and file system, then the failures and every skip grouped by reason. */
export function summaryMarkdown(outcomes: readonly PassOutcome[]): string {
  const lines = ['| File system | Pass | Selected | Passed | Failed | Skipped | Unexplained | Minutes |', '|---|---|---|---|---|---|---|---|'];
  for (const x of outcomes) {
    lines.push(`| ${x.fs} | ${x.pass.id} (${x.pass.name}) | ${x.selected} | ${x.passed.length} | ${x.failed.length} | ${x.skipped.length} | ${x.unexplained.length} | ${(x.seconds / 60).toFixed(1)} |`);
  }
  const failed = outcomes.flatMap((x) => x.failed.map((f) => `- ${x.fs} pass ${x.pass.id}: ${f.text}\n  ${f.message.split('\n')[0] ?? ''}`));
  if (failed.length > 0) lines.push('', '## Failed', '', ...failed);
  const unexplained = outcomes.flatMap((x) => x.unexplained.map((u) => `- ${x.fs} pass ${x.pass.id} (${u.state}): ${u.text}${u.message ? ` — ${u.message.split('\n')[0] ?? ''}` : ''}`));
  if (unexplained.length > 0) lines.push('', '## Not explained by skips.yaml', '', ...unexplained);
  const byReason = new Map<string, string[]>();
  for (const x of outcomes) {
    for (const s of x.skipped) {
      const key = `${s.kind}: ${s.reason}`;
      byReason.set(key, [...(byReason.get(key) ?? []), `${x.fs} pass ${x.pass.id}: ${s.text}`]);
    }
  }
  if (byReason.size > 0) {
    lines.push('', '## Skipped, by reason');
    for (const [reason, specs] of byReason) lines.push('', `**${reason}** (${specs.length})`, '', ...specs.map((t) => `- ${t}`));
  }
  return `${lines.join('\n')}\n`;
}
