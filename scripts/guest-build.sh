#!/usr/bin/env bash
# Builds the test guest for the kernel nbd tests (test/kernel/), once, into the cache:
#   - Debian's kernel: the package linux-image-amd64 depends on, fetched with `apt-get download`
#     and unpacked with `dpkg-deb -x` (nothing is installed on the host);
#   - an initramfs: busybox-static, scripts/guest/init as /init, the kernel modules the tests need
#     (nbd, virtio net/pci, 9p, ext4, xfs, crc32c, with their dependencies; modules.dep from
#     busybox depmod) and the host's nbd-client, e2fsprogs and xfsprogs binaries with their
#     libraries (found with ldd).
# It installs the host packages it needs itself (qemu-system-x86 to run the guest, cpio to pack it,
# busybox-static) and is called by scripts/setup.sh test.
#
#   scripts/guest-build.sh            build unless the current build is up to date
#   scripts/guest-build.sh --print    print the directory of the current build (after building it)
#
# Layout under ${FLASHCSI_CACHE:-$HOME/.cache/flashcsi}/guest:
#   <kernel package version>-<recipe hash>/{vmlinuz,initrd.cpio,kernel-release}
#   current -> the build above; what the tests use
# The recipe hash covers this script, scripts/guest/init and the host tools' versions, so a change
# to any of them (or a new Debian kernel) makes a new build; an unchanged one costs one apt-cache call.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
cache=${FLASHCSI_CACHE:-$HOME/.cache/flashcsi}/guest
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
host_pkgs=(qemu-system-x86 cpio busybox-static nbd-client e2fsprogs xfsprogs)
missing=()
for p in "${host_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
kernel_pkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'; }
if [ ${#missing[@]} -gt 0 ] || [ -z "$(kernel_pkg)" ]; then
  echo "guest-build: apt-get update; installing ${missing[*]:-nothing}" >&2
  $sudo apt-get update -qq
  if [ ${#missing[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi
kpkg=$(kernel_pkg)
[ -n "$kpkg" ] || { echo "guest-build: apt-cache knows no linux-image-amd64" >&2; exit 1; }
kver=$(apt-cache policy "$kpkg" | awk '/Candidate:/ {print $2}')

# Host binaries copied into the guest (with their libraries) and the modules it loads, in order.
tools=(nbd-client mke2fs mkfs.ext4 e2fsck fsck.ext4 mkfs.xfs xfs_repair xfs_db blkid)
modules=(nbd virtio_pci virtio_net 9pnet_virtio 9p crc32c_generic ext4 xfs)
recipe=$( {
  cat "$0" scripts/guest/init
  dpkg-query -W -f='${Package} ${Version}\n' busybox-static nbd-client e2fsprogs xfsprogs libc6
} | sha256sum | cut -c1-12)
build="$cache/$kpkg-$kver-$recipe"
if [ ! -f "$build/done" ]; then
  echo "guest-build: building $build" >&2
  start=$SECONDS
  rm -rf "$build"
  work=$(mktemp -d "$cache/tmp.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && apt-get download -o APT::Sandbox::User=root "$kpkg=$kver" >/dev/null)
  dpkg-deb -x "$work"/"$kpkg"_*.deb "$work/kernel"
  release=$(basename "$(ls -d "$work"/kernel/lib/modules/*)")
  kmods="$work/kernel/lib/modules/$release"
  busybox depmod -b "$work/kernel" "$release"

  rd="$work/initrd"
  mkdir -p "$rd"/usr/{bin,sbin,lib,lib64} "$rd"/{dev,proc,sys,tmp,run,etc,host,work}
  for l in bin sbin lib lib64; do ln -s "usr/$l" "$rd/$l"; done
  cp /bin/busybox "$rd/usr/bin/busybox"
  for applet in $(busybox --list); do
    [ -e "$rd/usr/bin/$applet" ] || ln -s busybox "$rd/usr/bin/$applet"
  done
  copy() { # copy a host file to the same path in the guest (links resolved, merged /usr honoured)
    local real dest
    real=$(readlink -f "$1")
    dest="$rd/${real#/}"
    mkdir -p "$(dirname "$dest")"
    [ -e "$dest" ] || cp "$real" "$dest"
    if [ "$real" != "$(readlink -f "$rd/${1#/}")" ] && [ ! -e "$rd/${1#/}" ]; then
      mkdir -p "$(dirname "$rd/${1#/}")"
      ln -s "$real" "$rd/${1#/}"
    fi
  }
  for t in "${tools[@]}"; do
    p=$(command -v "$t")
    rm -f "$rd/usr/sbin/$t" "$rd/usr/bin/$t" # a real tool wins over a busybox applet of that name
    copy "$p"
    for lib in $(ldd "$p" | awk '/=> \// {print $3} /^\t\/lib/ {print $1}'); do copy "$lib"; done
  done
  cp /etc/mke2fs.conf "$rd/etc/"
  printf '%s\n' "${modules[@]}" >"$rd/etc/guest-modules"

  # The modules and everything they depend on (modules.dep lists the closure).
  wanted=$(for m in "${modules[@]}"; do
    awk -v m="$m" -F: '{ n = $1; sub(/.*\//, "", n); sub(/\.ko$/, "", n); gsub(/-/, "_", n) } n == m { print $0 }' "$kmods/modules.dep"
  done | tr ': ' '\n\n' | sed '/^$/d' | sort -u)
  for ko in $wanted; do
    mkdir -p "$rd/lib/modules/$release/$(dirname "$ko")"
    cp "$kmods/$ko" "$rd/lib/modules/$release/$ko"
  done
  for f in "${modules[@]}"; do
    grep -q "/$f.ko:" "$kmods/modules.dep" || grep -q "/${f//_/-}.ko:" "$kmods/modules.dep" || { echo "guest-build: no module $f in $release" >&2; exit 1; }
  done
  cp "$kmods"/modules.{builtin,order} "$rd/lib/modules/$release/"
  busybox depmod -b "$rd" "$release"
  cp "$root/scripts/guest/init" "$rd/init"
  chmod 755 "$rd/init"

  mkdir -p "$work/out"
  (cd "$rd" && find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 >"$work/out/initrd.cpio")
  cp "$work/kernel/boot/vmlinuz-$release" "$work/out/vmlinuz"
  echo "$release" >"$work/out/kernel-release"
  echo "$kpkg $kver" >"$work/out/kernel-package"
  mv "$work/out" "$build"
  touch "$build/done"
  echo "guest-build: built $build ($(du -sh "$build/initrd.cpio" | cut -f1) initramfs, kernel $release) in $((SECONDS - start)) s" >&2
fi
ln -sfn "$(basename "$build")" "$cache/current"
# Older builds are removed: only the current one is used.
for old in "$cache"/linux-image-*; do
  [ "$old" = "$build" ] || rm -rf "$old"
done
[ "${1:-}" = --print ] && echo "$build"
exit 0
