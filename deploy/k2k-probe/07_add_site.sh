#!/bin/bash
# Join one more site to a RUNNING mesh (after 01-03): ./07_add_site.sh oslo
# init the newcomer, give every site the new peer list, graceful-restart the existing Apaches so mellon
# reads the newcomer's IdP metadata, start the newcomer, federate all pairs involving it, re-test the mesh.
set -euo pipefail
cd "$(dirname "$0")"
source ./common.sh
NEW=$1; OLD=$SITES; export SITES="$SITES $NEW"
t0=$(date +%s.%N)
INIT_ONLY=$NEW ./01_init.sh
for s in $OLD; do /usr/sbin/apache2 -f $(site_dir $s)/apache/httpd.conf -k graceful; done
START_ONLY=$NEW ./02_start.sh
CONFIGURE_ONLY=$NEW $VENV/bin/python 03_configure.py
t1=$(date +%s.%N)
python3 -c "print(f'adding $NEW to a mesh of $(echo $OLD | wc -w): {$t1-$t0:.1f} s (init+graceful+start+configure)')" | tee -a results/add_site.txt
sleep 1   # let the old Apache children finish their graceful exit
K2K_REPEAT=${K2K_REPEAT:-1} $VENV/bin/python 04_test_k2k.py | grep -v '^  ok'
# stop with: SITES="$SITES" ./99_stop.sh
