#!/usr/bin/env bash
# Generates the TypeScript types for proto/csi.proto into src/csi/generated/ (proto-loader-gen-types).
#   scripts/generate-csi-types.sh          — rewrite src/csi/generated/ (npm run generate)
#   scripts/generate-csi-types.sh --check  — regenerate into a temp dir and fail on any difference from
#                                            the committed copy (npm run verify:generated)
# The options match the runtime loader in src/csi/server.ts (keepCase, longs String, enums String,
# defaults, oneofs). --importFileExtension .js is needed because the project resolves modules as NodeNext.
set -euo pipefail
cd "$(dirname "$0")/.."
out=src/csi/generated

generate() {
  node_modules/.bin/proto-loader-gen-types \
    --keepCase --longs String --enums String --defaults --oneofs \
    --grpcLib @grpc/grpc-js --importFileExtension .js \
    -I proto -O "$1" csi.proto
}

if [ "${1:-}" = --check ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  generate "$tmp"
  if ! diff -r "$tmp" "$out" >"$tmp.diff" 2>&1; then
    head -n 40 "$tmp.diff" >&2
    rm -f "$tmp.diff"
    echo "verify:generated: $out is stale or hand-edited; run 'npm run generate'" >&2
    exit 1
  fi
  rm -f "$tmp.diff"
  echo "verify:generated: $out is up to date" >&2
else
  rm -rf "$out"
  generate "$out"
fi
