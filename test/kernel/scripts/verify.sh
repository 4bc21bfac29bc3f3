#!/bin/sh
# Checks every file LOG lists ("<n> <sha256>") in DIR after dropping the page cache, so the data
# comes from the device. Prints "verified <count>" and one line per missing or different file;
# exits 1 if any.
#   verify.sh DIR LOG
dir=$1 log=$2
echo 3 >/proc/sys/vm/drop_caches
bad=0 n=0
while read -r i want; do
  n=$((n + 1))
  if [ ! -f "$dir/f$i" ]; then echo "lost f$i"; bad=$((bad + 1)); continue; fi
  got=$(sha256sum <"$dir/f$i")
  [ "${got%% *}" = "$want" ] || { echo "changed f$i"; bad=$((bad + 1)); }
done <"$log"
echo "verified $n, bad $bad"
[ "$bad" -eq 0 ]
