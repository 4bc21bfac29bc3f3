#!/usr/bin/env bash
# Verifies that proto/ holds the CSI spec v1.12.0 files unmodified (see proto/README.md).
#   scripts/verify-proto.sh          — offline: checks the sha256 of proto/csi.proto and proto/LICENSE
#   scripts/verify-proto.sh --fetch  — also re-downloads the Go module through the module proxy, checks
#                                      the module's h1: hash and compares both files byte for byte
set -euo pipefail
cd "$(dirname "$0")/.."

module=github.com/container-storage-interface/spec
version=v1.12.0
module_sum='h1:zrFOEqpR5AghNaaDG4qyedwPBqU2fU0dWjLQMP/azK0='
sha256sum --check --quiet --strict - <<'EOF'
5b81236a3809f3ff0b877ff9b82215d0b74a8e291d7f3ec6ee1a44f537c0f86a  proto/csi.proto
b40930bbcf80744c86c46a12bc9da056641d722716c378f5659b9e555ef833e1  proto/LICENSE
EOF
echo "verify-proto: proto/csi.proto and proto/LICENSE match $module@$version" >&2

[ "${1:-}" = --fetch ] || exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
info=$(cd "$tmp" && go mod init verify-proto >/dev/null 2>&1 && go mod download -json "$module@$version")
sum=$(printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"Sum": "\(.*\)",\{0,1\}$/\1/p')
dir=$(printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
if [ "$sum" != "$module_sum" ]; then
  echo "verify-proto: $module@$version has Sum $sum, expected $module_sum" >&2
  exit 1
fi
cmp "$dir/csi.proto" proto/csi.proto
cmp "$dir/LICENSE" proto/LICENSE
echo "verify-proto: re-fetched $module@$version ($sum): byte-identical" >&2
