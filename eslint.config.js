// Lint: typescript-eslint strict + layering rules (src/ layers import downward only; docs/design.md
// draws the map).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const GRPC = ['@grpc/grpc-js', '@grpc/proto-loader'];
const KUBE = ['@kubernetes/client-node'];
/** The src/ layers, bottom first: each may import the ones before it, never one after it. */
const ORDER = ['engine', 'fuse', 'nbd', 'host', 'volumes', 'csi', 'k8s'];
const above = (name) => ORDER.slice(ORDER.indexOf(name) + 1);

/** A layer may not import the src/ folders in `forbidden`, nor the npm packages in `packages`. */
const layer = (name, forbidden, packages) => ({
  files: [`src/${name}/**/*.ts`],
  rules: {
    'no-restricted-imports': [
      'error',
      {
        patterns: forbidden.map((f) => ({
          group: [`**/${f}/*`, `../${f}/*`, `../../${f}/*`],
          message: `src/${name} must not import from src/${f} (layers import downward only: ${ORDER.join(' → ')})`,
        })),
        paths: packages.map((p) => ({ name: p, message: `src/${name} must not depend on ${p}` })),
      },
    ],
  },
});

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'src/csi/generated/**', '.cache/**'] },
  js.configs.recommended,
  ...tseslint.configs.strict,
  {
    languageOptions: { parserOptions: { ecmaVersion: 2022, sourceType: 'module' } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_' }],
      'no-restricted-properties': [
        'error',
        { object: 'describe', property: 'only', message: 'focused tests must not land' },
        { object: 'it', property: 'only', message: 'focused tests must not land' },
        { object: 'test', property: 'only', message: 'focused tests must not land' },
      ],
    },
  },
  // The engine publishes events (src/engine/events.ts) and knows nothing about metrics.
  layer('engine', [...above('engine'), 'metrics'], [...GRPC, ...KUBE]),
  // The FUSE export of a volume, served from the data-path process (flashcsi serve).
  layer('fuse', above('fuse'), [...GRPC, ...KUBE]),
  layer('nbd', above('nbd'), [...GRPC, ...KUBE]),
  // The node's side of attaching: block devices, mounts, processes; may use engine and nbd.
  layer('host', above('host'), [...GRPC, ...KUBE]),
  // The node's volume bookkeeping (state directory, staging, groups, locks): no gRPC, no Kubernetes.
  layer('volumes', above('volumes'), [...GRPC, ...KUBE]),
  // The gRPC surface: one file per CSI service, validation, status mapping, the server.
  layer('csi', above('csi'), KUBE),
  // The logger (pino) serves every layer but the engine and metrics, and imports none.
  layer('log', [...ORDER, 'metrics'], [...GRPC, ...KUBE]),
  // src/errors.ts and src/constants.ts: leaves every layer imports; they import nothing of ours.
  {
    files: ['src/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [...ORDER, 'metrics', 'log'].map((f) => ({ group: [`./${f}/*`], message: `src/*.ts are leaves: they must not import from src/${f}` })),
          paths: [...GRPC, ...KUBE].map((p) => ({ name: p, message: `src/*.ts are leaves: they must not depend on ${p}` })),
        },
      ],
    },
  },
  // src/metrics is imported by nbd, csi and cmd/, and depends on prom-client only.
  {
    files: ['src/metrics/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: ['engine', 'nbd', 'host', 'volumes', 'csi', 'k8s', 'log'].map((f) => ({
            group: [`**/${f}/*`, `../${f}/*`],
            message: `src/metrics must not import from src/${f}: it depends on prom-client only`,
          })),
          paths: ['@grpc/grpc-js', '@grpc/proto-loader', '@kubernetes/client-node', 'pino'].map((p) => ({ name: p, message: `src/metrics must not depend on ${p}` })),
        },
      ],
    },
  },
  {
    files: ['src/**/*.ts'],
    rules: {
      'no-restricted-syntax': [
        'error',
        { selector: "CallExpression[callee.object.name='process'][callee.property.name='exit']", message: 'only cmd/ may exit the process' },
      ],
    },
  },
);
