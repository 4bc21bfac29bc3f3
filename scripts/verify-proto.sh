#!/usr/bin/env bash
# Verifies that proto/ holds its vendored files unmodified (see proto/README.md):
#   proto/csi.proto, proto/LICENSE                    the CSI spec v1.12.0
#   proto/pluginregistration/{api.proto,LICENSE}      the kubelet's plugin-registration API, k8s.io/kubelet v0.37.2
#   scripts/verify-proto.sh          — offline: checks the sha256 of every vendored file
#   scripts/verify-proto.sh --fetch  — also re-downloads the Go modules through the module proxy, checks
#                                      each module's h1: hash and compares the files byte for byte
set -euo pipefail
cd "$(dirname "$0")/.."

# module version h1-sum  file-in-module=vendored-file…
sources=(
  "github.com/container-storage-interface/spec v1.12.0 h1:zrFOEqpR5AghNaaDG4qyedwPBqU2fU0dWjLQMP/azK0= csi.proto=proto/csi.proto LICENSE=proto/LICENSE"
  "k8s.io/kubelet v0.37.2 h1:AaRApKAcqmMD4pxmsxdghJHbTNfOxYOIlPCARw8+01A= pkg/apis/pluginregistration/v1/api.proto=proto/pluginregistration/api.proto LICENSE=proto/pluginregistration/LICENSE"
)
sha256sum --check --quiet --strict - <<'SUMS'
5b81236a3809f3ff0b877ff9b82215d0b74a8e291d7f3ec6ee1a44f537c0f86a  proto/csi.proto
b40930bbcf80744c86c46a12bc9da056641d722716c378f5659b9e555ef833e1  proto/LICENSE
7a67a0000a1a167c155286834bc9ccb489f8bcdb394e006daba270189c272afa  proto/pluginregistration/api.proto
cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30  proto/pluginregistration/LICENSE
SUMS
echo "verify-proto: proto/ matches github.com/container-storage-interface/spec@v1.12.0 and k8s.io/kubelet@v0.37.2" >&2

[ "${1:-}" = --fetch ] || exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && go mod init verify-proto >/dev/null 2>&1)
for s in "${sources[@]}"; do
  read -r module version module_sum files <<<"$s"
  info=$(cd "$tmp" && go mod download -json "$module@$version")
  sum=$(printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"Sum": "\(.*\)",\{0,1\}$/\1/p')
  dir=$(printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
  if [ "$sum" != "$module_sum" ]; then
    echo "verify-proto: $module@$version has Sum $sum, expected $module_sum" >&2
    exit 1
  fi
  for f in $files; do cmp "$dir/${f%%=*}" "${f#*=}"; done
  echo "verify-proto: re-fetched $module@$version ($sum): byte-identical" >&2
done
