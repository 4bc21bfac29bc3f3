#!/usr/bin/env bash
# Installs what flashcsi needs on a fresh Debian machine, and caches it.
#   scripts/setup.sh run   — what `npm start` needs (npm packages, NBD/filesystem tools)
#   scripts/setup.sh test  — all of the above plus the test peers and the pinned Go tools
# Every step is skipped when its stamp is current, so a warm machine pays almost nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
purpose=${1:-test}
cache=${FLASHCSI_CACHE:-$HOME/.cache/flashcsi}
mkdir -p "$cache"

# Debian packages: the data path's peers (NBD clients, nbdfuse, filesystems) and the test peers.
run_pkgs=(nbd-client libnbd-bin fuse3 e2fsprogs xfsprogs util-linux)
test_pkgs=(qemu-utils nbdkit fio)
pkgs=("${run_pkgs[@]}")
[ "$purpose" = test ] && pkgs+=("${test_pkgs[@]}")
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm packages, reinstalled only when package-lock.json changes.
lock_hash=$(sha256sum package-lock.json | cut -c1-16)
if [ ! -f node_modules/.flashcsi-lock ] || [ "$(cat node_modules/.flashcsi-lock)" != "$lock_hash" ]; then
  echo "setup: npm ci" >&2
  npm ci --no-audit --no-fund >/dev/null
  echo "$lock_hash" > node_modules/.flashcsi-lock
fi

# Pinned Go tools (csi-sanity, sidecars, kube-apiserver, etcd, helm…), built once into the cache.
if [ "$purpose" = test ] && [ -x scripts/go-tools.sh ]; then
  scripts/go-tools.sh
fi
