#!/usr/bin/env bash
# The long reliability runs (`npm run torture`): the CI tests with their counts raised. Each stage
# is one test file run with the environment below; every count can be overridden from outside.
# The log of each stage and a summary table go to .local/torture/<UTC time>/ (summary.md is what
# docs/reliability.md quotes). Exits non-zero if any stage failed; the other stages still run.
set -uo pipefail
cd "$(dirname "$0")/.."

: "${FLASHCSI_CRASH_KILLS:=1000}"          # engine SIGKILLs under mixed load (CI: 60)
: "${FLASHCSI_NBD_CRASH_KILLS:=200}"       # flashcsi serve SIGKILLs under fio (CI: 30)
: "${FLASHCSI_POWER_CUTS:=4000}"           # simulated power cuts at the file-system boundary (CI: 400)
: "${FLASHCSI_DEVICE_POWER_CUTS:=40}"      # power cuts of a volatile NBD disk under ext4 (CI: 4)
: "${FLASHCSI_SERVE_FUSE_POWER_CUTS:=40}" # the same under serve-fuse, serve SIGKILLed with the power (CI: 6)
: "${FLASHCSI_MODEL_RUNS:=1500}"           # model-based engine runs (CI: 150)
: "${FLASHCSI_FASTPATH_OPS:=600}"          # main-thread cuts/deletes/rollbacks under worker fast-path writes (CI: 60)
: "${FLASHCSI_CORRUPTION_RUNS:=3000}"      # metadata/store corruptions (CI: 300)
: "${FLASHCSI_NBD_FUZZ_RUNS:=100000}"      # NBD parser byte streams (CI: 2000)
: "${FLASHCSI_CSI_FUZZ_RUNS:=5000}"        # CSI requests per method (CI: 300)
: "${FLASHCSI_RESTARTS:=20}"               # plugin restarts of each kind under I/O (CI: 20)
: "${FLASHCSI_SUPERVISED_KILLS:=20}"       # plugin kills under flashcsi supervise (CI: 5)
: "${FLASHCSI_SOAK_VOLUMES:=50}"           # volumes served at once in the soak (CI: 50)
: "${FLASHCSI_SOAK_SECONDS:=600}"          # soak duration (CI: 60)
: "${FLASHCSI_KERNEL_KILLS:=50}"           # serve SIGKILLs under a real kernel's nbd client, qemu guest (CI: 0; the plugin's 2 kills run in both)
export FLASHCSI_CRASH_KILLS FLASHCSI_NBD_CRASH_KILLS FLASHCSI_POWER_CUTS FLASHCSI_DEVICE_POWER_CUTS FLASHCSI_SERVE_FUSE_POWER_CUTS \
  FLASHCSI_MODEL_RUNS FLASHCSI_FASTPATH_OPS FLASHCSI_CORRUPTION_RUNS FLASHCSI_NBD_FUZZ_RUNS FLASHCSI_CSI_FUZZ_RUNS \
  FLASHCSI_RESTARTS FLASHCSI_SUPERVISED_KILLS FLASHCSI_SOAK_VOLUMES FLASHCSI_SOAK_SECONDS FLASHCSI_KERNEL_KILLS

STAGES=(
  "engine crash|FLASHCSI_CRASH_KILLS|test/engine/crash.test.js"
  "serve crash|FLASHCSI_NBD_CRASH_KILLS|test/serve/crash.test.js"
  "power loss (simulated disk)|FLASHCSI_POWER_CUTS|test/engine/power-loss.test.js"
  "power loss (volatile NBD disk + ext4)|FLASHCSI_DEVICE_POWER_CUTS|test/reliability/power-loss.test.js"
  "power loss under serve-fuse|FLASHCSI_SERVE_FUSE_POWER_CUTS|test/reliability/serve-fuse-power-loss.test.js"
  "engine model|FLASHCSI_MODEL_RUNS|test/engine/model.test.js"
  "worker fast path|FLASHCSI_FASTPATH_OPS|test/engine/fast-path.test.js"
  "metadata corruption|FLASHCSI_CORRUPTION_RUNS|test/engine/corruption.test.js"
  "NBD parser fuzz|FLASHCSI_NBD_FUZZ_RUNS|test/nbd/fuzz.test.js"
  "CSI validation fuzz|FLASHCSI_CSI_FUZZ_RUNS|test/csi/validation-fuzz.test.js"
  "plugin restarts|FLASHCSI_RESTARTS|test/reliability/restart.test.js"
  "soak|FLASHCSI_SOAK_SECONDS|test/reliability/soak.test.js"
  "kernel nbd reconnect|FLASHCSI_KERNEL_KILLS|test/kernel/reconnect.test.js"
)
if [ -n "${FLASHCSI_TORTURE_ONLY:-}" ]; then # e.g. FLASHCSI_TORTURE_ONLY="engine crash"
  selected=()
  for s in "${STAGES[@]}"; do [[ ",${FLASHCSI_TORTURE_ONLY}," == *",${s%%|*},"* ]] && selected+=("$s"); done
  STAGES=("${selected[@]}")
fi

npm run build >/dev/null || exit 1
out=".local/torture/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
summary="$out/summary.md"
{
  echo "| Stage | Count | Result | Seconds |"
  echo "|---|---|---|---|"
} >"$summary"
failed=0
for s in "${STAGES[@]}"; do
  IFS='|' read -r name var file <<<"$s"
  log="$out/$(echo "$name" | tr -c 'a-zA-Z0-9\n' '-').log"
  echo "torture: $name ($var=${!var}) → $log"
  start=$SECONDS
  if node --test --test-reporter=spec "dist/$file" >"$log" 2>&1; then result=pass; else result=FAIL; failed=1; fi
  echo "| $name | $var=${!var} | $result ($(grep -E '^ℹ (pass|fail) ' "$log" | tr '\n' ' ' | sed 's/ℹ //g')) | $((SECONDS - start)) |" >>"$summary"
done
echo "torture: seed-free summary in $summary (seeds are printed in each log)"
cat "$summary"
exit $failed
