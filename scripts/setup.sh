#!/usr/bin/env bash
# Installs what flashcsi needs on a fresh Debian machine, and caches it.
#   scripts/setup.sh plugin — what `npm run start:plugin` needs (npm packages, NBD/filesystem tools)
#   scripts/setup.sh run    — what `npm start` needs: the above, plus the local cluster: its pinned Go
#                             tools (tier cluster of scripts/go-tools.versions) and images (scripts/images.sh)
#   scripts/setup.sh test   — all of the above plus the test peers (tier test), the kernel nbd
#                             test guest (scripts/guest-build.sh) and the upstream storage e2e suite
#                             (tier e2e, and its images: `npm test` runs a subset of it)
#   scripts/setup.sh e2e    — the same as test (`npm run e2e:storage` runs the whole suite)
#   scripts/setup.sh bench  — what `npm run bench` needs: plugin's, the test peers and PostgreSQL
#                             (pgbench); no Go tools or images
# Every step is skipped when its stamp is current, so a warm machine pays almost nothing. A cold
# machine builds Go tools from source and the images (roughly 50 min on 2 cores; see README "Set-up").
set -euo pipefail
cd "$(dirname "$0")/.."
purpose=${1:-test}
case "$purpose" in plugin|run|test|e2e|bench) ;; *) echo "setup: unknown purpose $purpose (plugin, run, test, e2e, bench)" >&2; exit 2 ;; esac
cache=${FLASHCSI_CACHE:-$HOME/.cache/flashcsi}
mkdir -p "$cache"
t0=$(date +%s)

# Debian packages: the data path's peers (libnl-genl-3 for the kernel nbd path's netlink, NBD
# clients, nbdfuse, filesystems); the local cluster's (CNI plugins, image building: buildah,
# debootstrap, busybox-static; runc's cgo build: libseccomp-dev; pause: gcc, libc6-dev); the test peers.
plugin_pkgs=(libnl-genl-3-200 nbd-client libnbd-bin fuse3 e2fsprogs xfsprogs util-linux)
cluster_pkgs=(containernetworking-plugins iproute2 buildah golang-github-containers-common debootstrap busybox-static
  libseccomp-dev pkg-config gcc libc6-dev openssl curl git)
test_pkgs=(qemu-utils nbdkit fio)
pkgs=("${plugin_pkgs[@]}")
case "$purpose" in run|test|e2e) pkgs+=("${cluster_pkgs[@]}") ;; esac
case "$purpose" in test|e2e) pkgs+=("${test_pkgs[@]}") ;; bench) pkgs+=("${test_pkgs[@]}" postgresql) ;; esac
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
case "$purpose" in plugin|bench) exit 0 ;; esac

# Pinned Go tools, built once into the cache: only the tiers this purpose needs.
tiers=(--tier cluster)
case "$purpose" in test|e2e) tiers+=(--tier test --tier e2e) ;; esac
scripts/go-tools.sh "${tiers[@]}"

# The cluster's images (pause, busybox, the sidecars, flashcsi from the Dockerfile), and for the tests
# the storage e2e suite's (agnhost, nginx, glibc-dns-testing), each rebuilt only when its inputs change.
images=()
case "$purpose" in test|e2e) images=(pause busybox sidecars flashcsi e2e) ;; esac
scripts/images.sh "${images[@]}" >/dev/null

# The kernel nbd tests' guest (test/kernel/): Debian's kernel and an initramfs, built once into the
# cache (23 s cold here; warm, it only asks dpkg-query and apt-cache whether anything changed).
case "$purpose" in test|e2e) scripts/guest-build.sh ;; esac
echo "setup: $purpose ready in $(( $(date +%s) - t0 ))s" >&2
