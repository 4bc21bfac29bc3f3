#!/usr/bin/env bash
# `npm run e2e:storage`: the upstream Kubernetes storage e2e suite (k8s.io/kubernetes v1.37.2,
# "External Storage") against flashcsi, in full: a one-node local cluster of real processes
# (test/cluster), the chart installed by helm, prow.sh's three passes for ext4 and for xfs
# (test/e2e-storage/README.md). Reports and summary.md under .local/e2e-storage/<UTC time>/.
# Arguments go to test/e2e-storage/run.ts: [--fs ext4,xfs] [--passes 1,2,3] [--procs 4] [--suites a,b] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh e2e
npm run build >/dev/null
exec node dist/test/e2e-storage/run.js "$@"
