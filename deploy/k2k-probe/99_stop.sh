#!/bin/bash
# Stop only what 02_start.sh started, by PID from the pid files (masters + their direct children).
source "$(dirname "$0")/common.sh"
PIDS=""
for s in $SITES; do d=$(site_dir $s)
  for f in $d/run/uwsgi.pid $d/apache/run/httpd.pid; do
    [ -f $f ] || continue; p=$(cat $f); PIDS="$PIDS $p $(pgrep -P $p | tr '\n' ' ')"; done
  [ -f $d/run/uwsgi.pid ] && kill -INT $(cat $d/run/uwsgi.pid) 2>/dev/null       # uwsgi: SIGINT = stop now
  [ -f $d/apache/run/httpd.pid ] && kill -TERM $(cat $d/apache/run/httpd.pid) 2>/dev/null
done
alive=""
for i in $(seq 1 20); do alive=""; for p in $PIDS; do kill -0 $p 2>/dev/null && alive="$alive $p"; done; [ -z "$alive" ] && break; sleep 0.5; done
for p in $alive; do echo "KILL $p"; kill -KILL $p 2>/dev/null; done
for s in $SITES; do rm -f $(site_dir $s)/run/uwsgi.pid $(site_dir $s)/apache/run/httpd.pid; done
echo "stopped:$PIDS"
ss -ltn | grep -E '127.0.0.1:26[0-9]{3}\b' || echo "no listeners on 127.0.0.1:26xxx"
