#!/bin/bash
# Full run from scratch with an existing venv (see setup_venv.sh):
# stop leftovers -> init -> start -> configure (timed = bring-up) -> test -> memory -> inventory -> stop.
# SITES="berlin denver paris" by default; e.g. SITES="berlin denver paris oslo rome" K2K_REPEAT=3 ./run_all.sh
set -euo pipefail
cd "$(dirname "$0")"
source ./common.sh
mkdir -p results
./99_stop.sh > /dev/null 2>&1 || true
trap './99_stop.sh' EXIT
now() { date +%s.%N; }
t0=$(now); ./01_init.sh
t1=$(now); ./02_start.sh
t2=$(now); $VENV/bin/python 03_configure.py
t3=$(now)
python3 - "$t0" "$t1" "$t2" "$t3" <<PY | tee results/bringup.txt
import sys; t0, t1, t2, t3 = map(float, sys.argv[1:])
print(f"bring-up of {len('$SITES'.split())} sites ($SITES): init {t1-t0:.1f} s + start {t2-t1:.1f} s + configure {t3-t2:.1f} s = {t3-t0:.1f} s")
PY
rm -f results/mem.txt; ./05_mem.sh "idle, after configure"
$VENV/bin/python 04_test_k2k.py
./05_mem.sh "after the tests incl. step breakdown and negative checks"
$VENV/bin/python 06_inventory.py
