#!/usr/bin/env bash
# Builds the pinned Go tools (the local cluster's control plane, kubelet, containerd, runc, the
# kubernetes-csi sidecars, helm; the test peers csi-sanity and grpcurl; the storage e2e suite) once
# each into the cache, from the versions in scripts/go-tools.versions, and copies the snapshot CRDs
# out of external-snapshotter's client module.
#
#   scripts/go-tools.sh                 build whatever is missing of the tiers cluster and test
#   scripts/go-tools.sh --tier T …      only the binaries of tier T (cluster, test, e2e; repeatable)
#   scripts/go-tools.sh NAME…           only these binaries (names from the versions file)
#   scripts/go-tools.sh --check         exit 1 and list what is missing; build nothing
#   scripts/go-tools.sh --list          print "binary version path tier" for every pinned binary
#
# Tiers (the versions file's tier= option): cluster = what `npm start` runs (control plane, node,
# images' binaries, helm); test = the other peers of `npm test`; e2e = the upstream storage e2e suite
# (e2e.test, ginkgo, agnhost), built only when asked for (scripts/setup.sh e2e).
#
# Layout under cache=${FLASHCSI_CACHE:-$HOME/.cache/flashcsi}:
#   go/<binary>@<version>/<binary>      the build, keyed by version (never rebuilt once present)
#   go/src/<module>@<version>/          the wrapper go.mod/go.sum each module is built from
#   bin/<binary>                        symlink to the pinned build — what tests run
#   crd/snapshot -> crd/snapshot@<ver>  the VolumeSnapshot / VolumeGroupSnapshot CRDs
# Environment: FLASHCSI_GO_JOBS (modules built at once, default 2), FLASHCSI_GO_FETCH_JOBS (module downloads
# at once, default 4).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
versions_file=$root/scripts/go-tools.versions
cache=${FLASHCSI_CACHE:-$HOME/.cache/flashcsi}
build_jobs=${FLASHCSI_GO_JOBS:-2}
fetch_jobs=${FLASHCSI_GO_FETCH_JOBS:-4}

mode=build
selected=()
tiers=()
while [ $# -gt 0 ]; do
  case "$1" in
    --check) mode=check ;;
    --list) mode=list ;;
    --tier) [ $# -ge 2 ] || { echo "go-tools: --tier needs a value" >&2; exit 2; }; tiers+=("$2"); shift ;;
    --tier=*) tiers+=("${1#--tier=}") ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    -*) echo "go-tools: unknown option $1" >&2; exit 2 ;;
    *) selected+=("$1") ;;
  esac
  shift
done
[ ${#selected[@]} -eq 0 ] && [ ${#tiers[@]} -eq 0 ] && tiers=(cluster test)

# ---- read the versions file ----------------------------------------------------------------------
# A line: NAME MODULE VERSION PACKAGE [tier=T] [cgo=1] [tags=a,b] [test=1]
#   tier  which set it belongs to (default test); cgo=1 builds with cgo (runc's nsenter, seccomp);
#   tags  go build tags; test=1 builds the package's test binary (`go test -c`).
bins=(); bin_mod=(); bin_ver=(); bin_pkg=(); bin_tier=(); bin_cgo=(); bin_tags=(); bin_test=()
files=(); file_mod=(); file_ver=(); file_dir=()
while read -r name mod ver pkg opts; do
  [ -z "${name:-}" ] && continue
  case "$name" in \#*) continue ;; esac
  if [ -z "${pkg:-}" ]; then echo "go-tools: bad line in $versions_file: $name $mod $ver" >&2; exit 2; fi
  if [ "${name:0:1}" = "@" ]; then
    files+=("${name:1}"); file_mod+=("$mod"); file_ver+=("$ver"); file_dir+=("$pkg")
    continue
  fi
  tier=test; cgo=0; tags=""; test=0
  for o in ${opts:-}; do
    case "$o" in
      tier=*) tier=${o#tier=} ;;
      cgo=1) cgo=1 ;;
      tags=*) tags=${o#tags=} ;;
      test=1) test=1 ;;
      *) echo "go-tools: bad option '$o' for $name in $versions_file" >&2; exit 2 ;;
    esac
  done
  bins+=("$name"); bin_mod+=("$mod"); bin_ver+=("$ver"); bin_pkg+=("$pkg")
  bin_tier+=("$tier"); bin_cgo+=("$cgo"); bin_tags+=("$tags"); bin_test+=("$test")
done < "$versions_file"

want_index() { # want_index I — is binary I selected (by name, or by its tier)?
  local s
  for s in "${selected[@]}"; do [ "$s" = "${bins[$1]}" ] && return 0; done
  for s in "${tiers[@]}"; do [ "$s" = "${bin_tier[$1]}" ] && return 0; done
  return 1
}
for s in "${selected[@]}"; do
  found=0; for b in "${bins[@]}"; do [ "$b" = "$s" ] && found=1; done
  [ $found = 1 ] || { echo "go-tools: $s is not in $versions_file" >&2; exit 2; }
done
for s in "${tiers[@]}"; do
  found=0; for t in "${bin_tier[@]}"; do [ "$t" = "$s" ] && found=1; done
  [ $found = 1 ] || { echo "go-tools: no binary of tier $s in $versions_file" >&2; exit 2; }
done
bin_out() { echo "$cache/go/$1@$2/$1"; }

if [ "$mode" = list ]; then
  for i in "${!bins[@]}"; do echo "${bins[$i]} ${bin_ver[$i]} $(bin_out "${bins[$i]}" "${bin_ver[$i]}") ${bin_tier[$i]}"; done
  exit 0
fi
if [ "$mode" = check ]; then
  missing=0
  for i in "${!bins[@]}"; do
    want_index "$i" || continue
    out=$(bin_out "${bins[$i]}" "${bin_ver[$i]}")
    if [ ! -x "$out" ] || [ "$(readlink -f "$cache/bin/${bins[$i]}" 2>/dev/null)" != "$(readlink -f "$out")" ]; then
      echo "go-tools: missing ${bins[$i]}@${bin_ver[$i]}" >&2; missing=1
    fi
  done
  for i in "${!files[@]}"; do
    [ -d "$cache/${files[$i]}@${file_ver[$i]}" ] || { echo "go-tools: missing ${files[$i]}@${file_ver[$i]}" >&2; missing=1; }
  done
  exit $missing
fi

# ---- build ---------------------------------------------------------------------------------------
command -v go >/dev/null || { echo "go-tools: no 'go' on PATH (Go >= 1.26 is needed)" >&2; exit 1; }
command -v node >/dev/null || { echo "go-tools: no 'node' on PATH" >&2; exit 1; }
export GOTOOLCHAIN=local          # never switch to a downloaded toolchain; the machine's Go builds everything
export GOFLAGS="-trimpath -buildvcs=false -mod=mod"
export GOWORK=off
mkdir -p "$cache/go/src" "$cache/bin" "$cache/go/logs"
exec 9>"$cache/go/.lock"
flock 9                           # one go-tools.sh at a time per cache
t_all=$(date +%s)

# Every step for one module@version, in its own wrapper module:
#   go.mod  = require the module + copy its replace directives; a replace to a local directory
#             (k8s.io/kubernetes' ./staging/src/k8s.io/X, external-snapshotter's ./client) becomes the
#             published module at the matching version (v1.X.Y -> v0.X.Y for kubernetes staging).
# One wrapper per module@version serves every binary built from that module (kubernetes: the control
# plane, the kubelet, kubectl and e2e.test), so they share one dependency graph and one build cache.
# `.ready` lists the packages already resolved; asking for another one extends the wrapper in place.
prepare_module() { # prepare_module MOD VER PKG… — PKG "t:<pkg>" is a test package
  local mod=$1 ver=$2; shift 2
  local key; key=$(echo "$mod" | tr '/' '_')@$ver
  local dir=$cache/go/src/$key
  local p new=()
  for p in "$@"; do
    [ -f "$dir/.ready" ] && grep -qxF "$p" "$dir/.ready" && continue
    new+=("$p")
  done
  [ ${#new[@]} -eq 0 ] && return 0
  local tmp=$dir.tmp.$$
  rm -rf "$tmp"
  if [ -f "$dir/.ready" ]; then cp -a "$dir" "$tmp"; else mkdir -p "$tmp"; fi
  (
    # Every step checks its status explicitly: this runs in a `||` context, where `set -e` is off.
    cd "$tmp" || exit 1
    if [ ! -f go.mod ]; then
      go mod init flashcsi.local/gotools >/dev/null 2>&1 || exit 1
      go mod download -json "$mod@$ver" > upstream.json || { cat upstream.json; exit 1; }
      upstream=$(node -e 'const j=JSON.parse(require("fs").readFileSync("upstream.json","utf8"));if(j.Error){console.error(j.Error);process.exit(1)}console.log(j.GoMod)') || exit 1
      rm -f upstream.json
      staging_ver=$ver
      case "$mod" in k8s.io/kubernetes) staging_ver=v0.${ver#v1.} ;; esac
      go mod edit -json "$upstream" > upstream-mod.json || exit 1
      STAGING="$staging_ver" VER="$ver" node -e '
        const m=JSON.parse(require("fs").readFileSync("upstream-mod.json","utf8"));
        const req=new Set((m.Require||[]).map(r=>r.Path));
        for (const r of m.Replace||[]) {
          const old=r.Old.Path+(r.Old.Version?"@"+r.Old.Version:"");
          if (r.New.Version) { console.log("-replace="+old+"="+r.New.Path+"@"+r.New.Version); continue; }
          if (!req.has(r.Old.Path)) continue;   // a local module nothing requires (e.g. k8s sample-*)
          const v=r.New.Path.startsWith("./staging/")?process.env.STAGING:process.env.VER;
          console.log("-replace="+old+"="+r.Old.Path+"@"+v);
        }' > replaces.txt || exit 1
      rm -f upstream-mod.json
      mapfile -t edits < replaces.txt
      rm -f replaces.txt
      if [ ${#edits[@]} -gt 0 ]; then go mod edit "${edits[@]}" || exit 1; fi
    fi
    local targets=() imports=() tests=() q
    for p in "${new[@]}"; do
      q=${p#t:}
      if [ "$q" = . ]; then targets+=("$mod@$ver"); q=$mod; else targets+=("$mod/$q@$ver"); q=$mod/$q; fi
      if [ "${p:0:2}" = t: ]; then tests+=("$q"); else imports+=("$q"); fi
    done
    go get "${targets[@]}" || exit 1
    # Fetch every module the packages need now, so the build phase does no network I/O.
    if [ ${#imports[@]} -gt 0 ]; then go list -deps "${imports[@]}" >/dev/null || exit 1; fi
    if [ ${#tests[@]} -gt 0 ]; then go list -deps -test "${tests[@]}" >/dev/null || exit 1; fi
    printf '%s\n' "${new[@]}" >> .ready
  ) > "$cache/go/logs/fetch-$key.log" 2>&1 || { echo "go-tools: fetching $mod@$ver failed; log: $cache/go/logs/fetch-$key.log" >&2; tail -20 "$cache/go/logs/fetch-$key.log" >&2; rm -rf "$tmp"; return 1; }
  rm -rf "$dir"; mv "$tmp" "$dir"
}

ldflags_for() { # ldflags_for MOD VER
  local mod=$1 ver=$2 x=""
  case "$mod" in
    k8s.io/kubernetes)
      local mm=${ver#v}; local major=${mm%%.*}; local rest=${mm#*.}; local minor=${rest%%.*} p
      for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        x+=" -X $p.gitVersion=$ver -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
      done ;;
    helm.sh/helm/v*) x=" -X $mod/internal/version.version=$ver" ;;
    github.com/containerd/containerd/v2) x=" -X $mod/version.Version=$ver -X $mod/version.Package=$mod" ;;
    sigs.k8s.io/cri-tools) x=" -X $mod/pkg/version.Version=$ver" ;;
    github.com/onsi/ginkgo/v2) x="" ;;
    *) x=" -X main.version=$ver -X main.VERSION=$ver" ;;   # sidecars, runc: version; csi-sanity: VERSION
  esac
  echo "-s -w$x"
}

# The file name `go build -o DIR/` gives a main package: its last path element, or the one before a /vN suffix.
go_default_name() {
  local last=${1##*/}
  if [[ $last =~ ^v[0-9]+$ ]]; then local rest=${1%/*}; echo "${rest##*/}"; else echo "$last"; fi
}

import_of() { # import_of INDEX
  if [ "${bin_pkg[$1]}" = . ]; then echo "${bin_mod[$1]}"; else echo "${bin_mod[$1]}/${bin_pkg[$1]}"; fi
}

build_group() { # build_group INDEX… — the missing binaries of one module@version with the same flags, in one `go build`
  local first=$1 mod=${bin_mod[$1]} ver=${bin_ver[$1]} i todo=()
  for i in "$@"; do
    local out; out=$(bin_out "${bins[$i]}" "$ver")
    if [ -x "$out" ]; then
      ln -sfn "../go/${bins[$i]}@$ver/${bins[$i]}" "$cache/bin/${bins[$i]}"
      echo "go-tools: ${bins[$i]}@$ver cached"
    else
      todo+=("$i")
    fi
  done
  [ ${#todo[@]} -eq 0 ] && return 0
  local key; key=$(echo "$mod" | tr '/' '_')@$ver
  local names=() imports=()
  for i in "${todo[@]}"; do names+=("${bins[$i]}"); imports+=("$(import_of "$i")"); done
  if [ ! -f "$cache/go/src/$key/.ready" ]; then
    echo "go-tools: ${names[*]} @$ver not built: fetching $mod@$ver failed" >&2
    return 1
  fi
  local t0; t0=$(date +%s)
  local tmpout=$cache/go/.build-$key.$$.$first
  local log=$cache/go/logs/build-${names[0]}@$ver.log
  local flags=(-ldflags "$(ldflags_for "$mod" "$ver")")
  [ -n "${bin_tags[$first]}" ] && flags+=(-tags "${bin_tags[$first]}")
  rm -rf "$tmpout"; mkdir -p "$tmpout"
  local ok=1
  # cgo only where the tool needs it (runc); everything else static, as the upstream releases ship.
  if [ "${bin_test[$first]}" = 1 ]; then
    # A test binary (e2e.test): `go test -c`, one package per build; it shares the module's build cache.
    (cd "$cache/go/src/$key" && CGO_ENABLED=${bin_cgo[$first]} go test -c "${flags[@]}" -o "$tmpout/${names[0]}" "${imports[0]}") > "$log" 2>&1 || ok=0
  else
    # Several main packages of one module build in one `go build`, which compiles their shared packages once.
    (cd "$cache/go/src/$key" && CGO_ENABLED=${bin_cgo[$first]} go build "${flags[@]}" -o "$tmpout/" "${imports[@]}") > "$log" 2>&1 || ok=0
  fi
  if [ $ok = 1 ]; then
    local secs=$(( $(date +%s) - t0 )) n
    for n in "${!todo[@]}"; do
      i=${todo[$n]}
      local out; out=$(bin_out "${bins[$i]}" "$ver")
      local built=$tmpout/$(go_default_name "${imports[$n]}")
      [ "${bin_test[$i]}" = 1 ] && built=$tmpout/${bins[$i]}
      mkdir -p "$(dirname "$out")"
      mv "$built" "$out"
      ln -sfn "../go/${bins[$i]}@$ver/${bins[$i]}" "$cache/bin/${bins[$i]}"
      local with=""; [ ${#todo[@]} -gt 1 ] && with=" (one go build for ${names[*]})"
      echo "go-tools: ${bins[$i]}@$ver built in ${secs}s, $(du -h "$out" | cut -f1)$with"
    done
    rm -rf "$tmpout"
  else
    rm -rf "$tmpout"
    echo "go-tools: ${names[*]} @$ver FAILED to build after $(( $(date +%s) - t0 ))s; log: $log" >&2
    tail -20 "$log" >&2
    return 1
  fi
}

# Phase 1: fetch (network-bound, in parallel) every module whose binaries are missing.
declare -A mod_pkgs=()
for i in "${!bins[@]}"; do
  want_index "$i" || continue
  [ -x "$(bin_out "${bins[$i]}" "${bin_ver[$i]}")" ] && continue
  k="${bin_mod[$i]} ${bin_ver[$i]}"
  p=${bin_pkg[$i]}; [ "${bin_test[$i]}" = 1 ] && p=t:$p
  mod_pkgs[$k]="${mod_pkgs[$k]:-} $p"
done
# Background jobs record failure in $faildir (exit statuses are lost once `wait -n` has reaped a job).
faildir=$(mktemp -d)
trap 'rm -rf "$faildir"' EXIT
throttle() { while [ "$(jobs -rp | wc -l)" -ge "$1" ]; do wait -n || true; done; }
if [ ${#mod_pkgs[@]} -gt 0 ]; then
  t0=$(date +%s)
  for k in "${!mod_pkgs[@]}"; do
    throttle "$fetch_jobs"
    # shellcheck disable=SC2086
    { prepare_module $k ${mod_pkgs[$k]} || touch "$faildir/fetch.${k//[\/ ]/_}"; } &
  done
  wait
  echo "go-tools: prepared ${#mod_pkgs[@]} module(s) in $(( $(date +%s) - t0 ))s"
fi

# Phase 2: build one group at a time by default (FLASHCSI_GO_JOBS at once), kubernetes first: it is the
# longest. A group is one module@version with one set of build flags; a test binary is a group of its own.
declare -A group=()
group_order=()
for i in "${!bins[@]}"; do
  want_index "$i" || continue
  k="${bin_mod[$i]} ${bin_ver[$i]} cgo=${bin_cgo[$i]} tags=${bin_tags[$i]}"
  [ "${bin_test[$i]}" = 1 ] && k+=" test=${bins[$i]}"
  if [ -z "${group[$k]:-}" ]; then
    if [ "${bin_mod[$i]}" = k8s.io/kubernetes ] && [ "${bin_test[$i]}" = 0 ]; then group_order=("$k" "${group_order[@]}"); else group_order+=("$k"); fi
  fi
  group[$k]="${group[$k]:-} $i"
done
for k in "${group_order[@]}"; do
  throttle "$build_jobs"
  # shellcheck disable=SC2086
  { build_group ${group[$k]} || touch "$faildir/build.${k//[\/ =,]/_}"; } &
done
wait

# Phase 3: files copied out of modules (the snapshot CRDs).
for i in "${!files[@]}"; do
  dest=$cache/${files[$i]}@${file_ver[$i]}
  if [ ! -d "$dest" ]; then
    src=$(cd "$cache/go/src" && GOFLAGS='' go mod download -json "${file_mod[$i]}@${file_ver[$i]}" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const j=JSON.parse(s);if(j.Error){console.error(j.Error);process.exit(1)}console.log(j.Dir)})') || { touch "$faildir/file.${files[$i]//\//_}"; continue; }
    mkdir -p "$dest.tmp"
    cp "$src/${file_dir[$i]}"/*.yaml "$dest.tmp/"
    rm -f "$dest.tmp/kustomization.yaml"
    chmod -R u+w "$dest.tmp"
    mv "$dest.tmp" "$dest"
    echo "go-tools: ${files[$i]}@${file_ver[$i]} copied ($(ls "$dest" | wc -l) files)"
  else
    echo "go-tools: ${files[$i]}@${file_ver[$i]} cached"
  fi
  ln -sfn "$(basename "$dest")" "$cache/${files[$i]}"
done

echo "go-tools: done in $(( $(date +%s) - t_all ))s; $cache holds $(du -sh "$cache" | cut -f1)"
if [ -n "$(ls -A "$faildir")" ]; then
  echo "go-tools: FAILED: $(ls "$faildir" | tr '\n' ' ')(see above)" >&2
  exit 1
fi
