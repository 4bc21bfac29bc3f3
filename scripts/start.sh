#!/usr/bin/env bash
# Runs flashcsi locally on embedded defaults: a demo volume under ./.local, served over NBD.
set -euo pipefail
cd "$(dirname "$0")/.."
npm run build >/dev/null
state=${FLASHCSI_STATE:-$PWD/.local}
mkdir -p "$state" && chmod 700 "$state"
[ -d "$state/demo" ] || node dist/cmd/flashcsi.js volume create "$state/demo" --size 1G
echo "serving $state/demo at nbd+unix:///?socket=$state/demo.sock (Ctrl-C to stop)" >&2
exec node dist/cmd/flashcsi.js serve "$state/demo" --socket "$state/demo.sock"
