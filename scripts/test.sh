#!/usr/bin/env bash
# The test suite, by tiers (test/tiers.ts lists which file is in which; test/README.md says what each
# tier needs and how long it takes).
#   scripts/test.sh          lint, type-check and build, then every tier (= npm test)
#   scripts/test.sh TIER…    build, then only those tiers (npm run test:unit = scripts/test.sh unit)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then npm run lint; fi
if [ "$*" = unit ]; then
  # The unit tier alone is the quick loop: its slowest randomized tests run a third to a half of their
  # CI counts (npm test runs them in full, npm run torture far beyond). A count already set wins.
  # The engine crash test keeps its CI count: below it, its check that kills landed in every kind
  # of operation would fail by chance.
  : "${FLASHCSI_MODEL_RUNS:=80}" "${FLASHCSI_POWER_CUTS:=150}" "${FLASHCSI_CORRUPTION_RUNS:=100}"
  : "${FLASHCSI_PLAN_RUNS:=600}" "${FLASHCSI_NBD_FUZZ_RUNS:=600}" "${FLASHCSI_CSI_FUZZ_RUNS:=100}"
  export FLASHCSI_MODEL_RUNS FLASHCSI_POWER_CUTS FLASHCSI_CORRUPTION_RUNS FLASHCSI_PLAN_RUNS \
    FLASHCSI_NBD_FUZZ_RUNS FLASHCSI_CSI_FUZZ_RUNS
fi
npm run build
mapfile -t files < <(node dist/test/tiers.js "$@")
node --test --test-concurrency=2 --test-reporter=spec "${files[@]}"
