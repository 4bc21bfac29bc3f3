// Static checks of the Dockerfile (this machine has no Docker engine, so the image is not built here):
// the base image is pinned to a Node 24 LTS patch release on Debian slim, the build stage installs and
// builds, the runtime stage has the data path's Debian packages and the production dependencies, runs as
// the non-root "node" user, and its entrypoint is a file the build really produces; the layers are
// ordered so that a source change rebuilds neither apt-get nor an npm install.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './helpers.js';

interface Instruction {
  op: string;
  args: string;
  line: number;
}

/** Dockerfile instructions with continuation lines joined and comments dropped. */
function parseDockerfile(text: string): Instruction[] {
  const out: Instruction[] = [];
  let pending = '';
  let start = 0;
  text.split('\n').forEach((raw, i) => {
    const line = raw.trimEnd();
    if (pending === '' && (line.trim() === '' || line.trimStart().startsWith('#'))) return;
    if (pending === '') start = i + 1;
    if (line.endsWith('\\')) {
      pending += line.slice(0, -1) + ' ';
      return;
    }
    pending += line;
    const m = /^\s*([A-Za-z]+)\s+(.*)$/s.exec(pending);
    if (m) out.push({ op: (m[1] ?? '').toUpperCase(), args: (m[2] ?? '').replace(/\s+/g, ' ').trim(), line: start });
    pending = '';
  });
  return out;
}

interface Stage {
  from: string;
  name: string;
  instructions: Instruction[];
}

function stages(ins: Instruction[]): { globalArgs: Map<string, string>; stages: Stage[] } {
  const globalArgs = new Map<string, string>();
  const out: Stage[] = [];
  for (const i of ins) {
    if (i.op === 'FROM') {
      const m = /^(\S+)(?: AS (\S+))?$/i.exec(i.args);
      out.push({ from: m?.[1] ?? '', name: m?.[2] ?? '', instructions: [] });
    } else if (out.length === 0) {
      if (i.op === 'ARG') {
        const [k = '', v = ''] = i.args.split('=');
        globalArgs.set(k, v);
      }
    } else {
      out[out.length - 1]?.instructions.push(i);
    }
  }
  return { globalArgs, stages: out };
}

const text = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
const parsed = stages(parseDockerfile(text));

/** The distinct context paths the stages COPY (not --from another stage). */
function contextSources(): string[] {
  const copies = parsed.stages.flatMap((s) => s.instructions).filter((i) => i.op === 'COPY' && !i.args.startsWith('--from'));
  return [...new Set(copies.flatMap((c) => c.args.split(' ').slice(0, -1).map((s) => s.replace(/\/$/, ''))))];
}

describe('Dockerfile (static checks; no Docker engine here)', () => {
  it('has a pinned Node.js 24 LTS Debian slim base, used by both stages', () => {
    const base = parsed.globalArgs.get('NODE_IMAGE') ?? '';
    assert.match(base, /^node:24\.\d+\.\d+-(bookworm|trixie)-slim(@sha256:[0-9a-f]{64})?$/, `pinned base image, got ${base}`);
    assert.deepEqual(parsed.stages.map((s) => [s.from, s.name]), [
      ['${NODE_IMAGE}', 'build'],
      ['${NODE_IMAGE}', 'runtime'],
    ]);
  });

  it('build stage: npm ci, then the sources, then npm run build', () => {
    const build = parsed.stages.find((s) => s.name === 'build');
    assert.ok(build);
    const ins = build.instructions;
    const npmCi = ins.findIndex((i) => i.op === 'RUN' && i.args.startsWith('npm ci'));
    const copySrc = ins.findIndex((i) => i.op === 'COPY' && i.args.startsWith('src '));
    const compile = ins.findIndex((i) => i.op === 'RUN' && i.args.includes('npm run build'));
    assert.ok(npmCi >= 0 && copySrc >= 0 && compile >= 0, 'build runs npm ci, copies src/, runs npm run build');
    assert.ok(npmCi < copySrc && copySrc < compile, 'in that order: a source change keeps the npm ci layer');
    const beforeCi = ins.slice(0, npmCi).filter((i) => i.op === 'COPY').flatMap((c) => c.args.split(' ').slice(0, -1));
    assert.deepEqual(beforeCi.sort(), ['package-lock.json', 'package.json'], 'only the package files are copied before npm ci');
  });

  it('every path a stage copies from the context exists and reaches the build (not in .dockerignore)', () => {
    const ignored = readFileSync(join(ROOT, '.dockerignore'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'));
    for (const s of contextSources()) {
      assert.ok(existsSync(join(ROOT, s)), `COPY source ${s} exists`);
      assert.ok(!ignored.includes(s), `COPY source ${s} is not in .dockerignore`);
    }
  });

  it('scripts/images.sh keys the image by exactly what the stages copy (a test edit never rebuilds it)', () => {
    const inputs = /^FLASHCSI_INPUTS=\(([^)]*)\)$/m.exec(readFileSync(join(ROOT, 'scripts', 'images.sh'), 'utf8'))?.[1]?.split(' ');
    assert.deepEqual(inputs?.sort(), ['Dockerfile', ...contextSources()].sort());
  });

  it('runtime stage: the data-path packages, non-root USER node, the entrypoint of the build', () => {
    const runtime = parsed.stages.find((s) => s.name === 'runtime');
    assert.ok(runtime);
    const install = runtime.instructions.find((i) => i.op === 'RUN' && i.args.includes('apt-get install'));
    assert.ok(install, 'runtime installs Debian packages');
    const words = new Set(install.args.split(/\s+/));
    for (const pkg of ['libnl-genl-3-200', 'nbd-client', 'libnbd-bin', 'fuse3', 'e2fsprogs', 'xfsprogs', 'util-linux', 'mount', 'kmod', 'tini']) {
      assert.ok(words.has(pkg), `runtime installs ${pkg}`);
    }
    assert.ok(words.has('--no-install-recommends'));
    assert.match(install.args, /rm -rf \/var\/lib\/apt\/lists/);
    const users = runtime.instructions.filter((i) => i.op === 'USER');
    assert.equal(users.at(-1)?.args, 'node', 'the image runs as the non-root "node" user by default');
    const entry = runtime.instructions.filter((i) => i.op === 'ENTRYPOINT').at(-1);
    assert.ok(entry);
    assert.deepEqual(JSON.parse(entry.args) as unknown, ['tini', '--', 'node', '/app/dist/cmd/flashcsi.js'], 'exec-form entrypoint, tini as PID 1');
    // The entrypoint's file is produced by the build (npm test builds dist/ before running this).
    assert.ok(existsSync(join(ROOT, 'dist', 'cmd', 'flashcsi.js')), 'dist/cmd/flashcsi.js exists after npm run build');
    const copies = runtime.instructions.filter((i) => i.op === 'COPY').map((i) => i.args);
    for (const want of ['/app/dist/cmd', '/app/dist/src']) {
      assert.ok(copies.some((c) => c.startsWith('--from=build ') && c.includes(want)), `runtime copies ${want} from the build stage`);
    }
    for (const want of ['package.json', 'package-lock.json', 'proto']) {
      assert.ok(copies.some((c) => !c.startsWith('--from') && c.split(' ').slice(0, -1).includes(want)), `runtime copies ${want} from the context`);
    }
    // The production dependencies are installed from the lock file, before anything the build stage
    // compiled is copied: a source change rebuilds neither them nor the Debian packages.
    const ins = runtime.instructions;
    const firstFromBuild = ins.findIndex((i) => i.op === 'COPY' && i.args.startsWith('--from=build '));
    const prodDeps = ins.findIndex((i) => i.op === 'RUN' && i.args.startsWith('npm ci --omit=dev'));
    assert.ok(prodDeps >= 0, 'runtime runs npm ci --omit=dev');
    assert.ok(ins.indexOf(install) < firstFromBuild && prodDeps < firstFromBuild, 'apt-get and npm ci come before the copies of dist/');
    const labels = runtime.instructions.filter((i) => i.op === 'LABEL').map((i) => i.args).join(' ');
    for (const l of ['org.opencontainers.image.title', 'org.opencontainers.image.version', 'org.opencontainers.image.source', 'org.opencontainers.image.licenses']) {
      assert.ok(labels.includes(l), `label ${l}`);
    }
  });

  it('the chart runs the image as documented: only the node plugin overrides to root', () => {
    // uid 1000 is the "node" user of the official node images; the coordinator pod runs as it.
    const values = readFileSync(join(ROOT, 'charts', 'flashcsi', 'values.yaml'), 'utf8');
    assert.match(values, /runAsUser: 1000/);
    assert.match(values, /repository: ghcr\.io\/flashcsi\/flashcsi/);
  });

  it('.dockerignore keeps build outputs and local state out of the context', () => {
    const ignored = readFileSync(join(ROOT, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim());
    for (const p of ['node_modules', 'dist', '.git', '.local', '.cache']) assert.ok(ignored.includes(p), `.dockerignore has ${p}`);
  });
});
