#!/bin/bash
# Start, per site, a uwsgi Keystone (uwsgi protocol on 127.0.0.1:26<i>01) and an Apache+mod_auth_mellon
# in front of it (START_ONLY="site ..." starts only those) (http 127.0.0.1:26<i>00 = the site's public Keystone URL). PIDs in sites/<s>/run/.
set -euo pipefail
source "$(dirname "$0")/common.sh"
for s in ${START_ONLY:-$SITES}; do
  d=$(site_dir $s); mkdir -p $d/run
  nice -n 10 $VENV/bin/uwsgi --master --processes 1 --threads 4 --die-on-term --need-app \
    --module keystone.wsgi.api:application --virtualenv $VENV --buffer-size 65535 \
    --socket 127.0.0.1:$(site_uport $s) --env OS_KEYSTONE_CONFIG_FILES=$d/keystone.conf \
    --pidfile $d/run/uwsgi.pid --daemonize $d/logs/uwsgi.log
  nice -n 10 /usr/sbin/apache2 -f $d/apache/httpd.conf -k start
done
for i in $(seq 1 120); do
  ok=1; for s in $SITES; do curl -sf $(site_url $s)/v3 >/dev/null || ok=0; done
  [ $ok = 1 ] && { echo "all sites answer after $SECONDS s"; break; }; sleep 0.5
done
[ $ok = 1 ] || { echo "sites not up"; exit 1; }
for s in $SITES; do d=$(site_dir $s); echo "$s: uwsgi master $(cat $d/run/uwsgi.pid), apache $(cat $d/apache/run/httpd.pid), $(site_url $s)/v3"; done
