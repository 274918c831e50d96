#!/bin/bash
# Experiment: is a per-site mellon cookie name (MellonVariable) needed when all sites share one host?
# Runs the mesh with mellon's default cookie name on every site and does exchanges over ONE shared
# keystoneauth1 Session (one cookie jar), sequentially and from 6 threads at once.
set -euo pipefail
cd "$(dirname "$0")"
source ./common.sh
./99_stop.sh > /dev/null 2>&1 || true
trap './99_stop.sh > /dev/null' EXIT
./01_init.sh > /dev/null
for s in $SITES; do sed -i 's/MellonVariable ".*"/MellonVariable "cookie"/' $(site_dir $s)/apache/httpd.conf; done
./02_start.sh > /dev/null; $VENV/bin/python 03_configure.py > /dev/null
$VENV/bin/python - <<'PY'
import concurrent.futures as cf
from keystoneauth1 import session
from keystoneauth1.identity import v3
from k2klib import url, SITES
base = v3.Password(auth_url=url('berlin'), username='alice', password='alice-pw', user_domain_id='default',
                   project_name='demo', project_domain_id='default')
shared = session.Session()
ok = 0; bad = []
def one(t):
    try:
        return v3.Keystone2Keystone(base, t, project_name='demo', project_domain_id='default').get_access(shared).project_id
    except Exception as e:
        return f'ERR {type(e).__name__}: {e}'[:160]
for t in ['denver', 'paris'] * 5:
    r = one(t); print('sequential', t, r)
with cf.ThreadPoolExecutor(6) as ex:
    for t, r in zip(['denver', 'paris'] * 6, ex.map(one, ['denver', 'paris'] * 6)):
        print('parallel', t, r)
PY
for s in $SITES; do echo "$s:"; grep -c auth_mellon:error $(site_dir $s)/apache/logs/error.log || true; done
