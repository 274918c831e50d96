#!/bin/bash
# One-time: Debian packages + the probe's venv (Debian's python3 so that uwsgi links the right libpython).
set -euo pipefail
cd "$(dirname "$0")"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xmlsec1 apache2 libapache2-mod-auth-mellon
[ -x venv/bin/python ] || /usr/bin/python3 -m venv venv
export PATH=$PWD/venv/bin:/usr/bin:/bin
venv/bin/pip install -q -c ../lab/constraints.txt keystone==30.0.0 keystoneauth1 python-openstackclient pysaml2
# a cached uwsgi wheel linked to another libpython fails ("No module named '_socket'"): build from source
venv/bin/pip install -q --force-reinstall --no-deps --no-cache-dir --no-binary uwsgi uwsgi==2.0.31
