#!/bin/bash
# Growth check: bring up the 3-site mesh, then join "oslo" to the running mesh, test all 12 pairs, stop all 4.
set -euo pipefail
cd "$(dirname "$0")"
source ./common.sh
mkdir -p results
SITES="$SITES oslo" ./99_stop.sh > /dev/null 2>&1 || true
trap 'SITES="$SITES oslo" ./99_stop.sh' EXIT
./01_init.sh > /dev/null; ./02_start.sh > /dev/null; $VENV/bin/python 03_configure.py > /dev/null
./07_add_site.sh oslo
