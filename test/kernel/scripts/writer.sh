#!/bin/sh
# Guest workload (busybox sh): writes files of 16-128 KiB with fresh random data until the stop
# file appears, fsyncs each file and its directory, and only then logs "<n> <sha256>" to LOG: every
# logged file was durable before its line was written. Every 20 files it drops the page cache and
# re-reads an earlier file from the device, checking it against the log. Failures of any call go to
# LOG.failures with the call that failed; the exit status is the number of failures (capped).
# With MAX it also stops after MAX files.
#   writer.sh DIR LOG STOPFILE [MAX]
dir=$1 log=$2 stop=$3 max=${4:-0}
failures=$log.failures
: >"$failures"
mkdir -p "$dir" || exit 1
i=0
while [ ! -e "$stop" ] && { [ "$max" -eq 0 ] || [ "$i" -lt "$max" ]; }; do
  i=$((i + 1))
  f=$dir/f$i
  if ! dd if=/dev/urandom of="$f" bs=16k count=$((1 + i % 8)) 2>/dev/null; then echo "$i write" >>"$failures"; continue; fi
  if ! sync "$f" "$dir"; then echo "$i fsync" >>"$failures"; continue; fi
  sum=$(sha256sum <"$f") || { echo "$i read" >>"$failures"; continue; }
  echo "$i ${sum%% *}" >>"$log"
  if [ $((i % 20)) -eq 0 ]; then
    echo 3 >/proc/sys/vm/drop_caches
    j=$((i / 2))
    want=$(grep "^$j " "$log" | cut -d' ' -f2)
    if [ -n "$want" ]; then
      got=$(sha256sum <"$dir/f$j") || { echo "$j reread" >>"$failures"; continue; }
      [ "${got%% *}" = "$want" ] || echo "$j mismatch" >>"$failures"
    fi
  fi
done
n=$(wc -l <"$failures")
echo "writer: $i files started, $n failures"
[ "$n" -gt 100 ] && n=100
exit "$n"
