#!/bin/bash
# Usage: 05_mem.sh [label]. RSS/PSS per site of the processes 02_start.sh started: uwsgi Keystone (master+worker), Apache+mellon (master+children).
source "$(dirname "$0")/common.sh"
mkdir -p $K2K_DIR/results; OUT=$K2K_DIR/results/mem.txt; echo "--- ${1:-now} $(date +%T)" | tee -a $OUT
report() { local label=$1; shift; local tr=0 tp=0 r q p
  for p in "$@"; do
    r=$(awk '/^Rss:/{print $2}' /proc/$p/smaps_rollup 2>/dev/null); q=$(awk '/^Pss:/{print $2}' /proc/$p/smaps_rollup 2>/dev/null)
    tr=$((tr + ${r:-0})); tp=$((tp + ${q:-0})); done
  printf "%-30s nproc=%d RSS=%5d MiB  PSS=%5d MiB\n" "$label" $# $((tr/1024)) $((tp/1024)) | tee -a $OUT; }
for s in $SITES; do d=$(site_dir $s)
  u=$(cat $d/run/uwsgi.pid); a=$(cat $d/apache/run/httpd.pid)
  report "$s Keystone (uwsgi)" $u $(pgrep -P $u)
  report "$s Apache+mellon" $a $(pgrep -P $a)
done
