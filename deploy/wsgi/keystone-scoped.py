"""Keystone behind the scoped WSGI filter (Keystone is a Flask app: no paste file).

Serve this file instead of ``keystone.wsgi.api:application``::

    uwsgi --http-socket 127.0.0.1:5000 --wsgi-file /etc/scoped/keystone-scoped.py \
          --master --processes 2 --threads 4

or with mod_wsgi: ``WSGIScriptAlias /identity /etc/scoped/keystone-scoped.py``.
``SCOPED_CONFIG`` names the site's scoped YAML (default ``/etc/scoped/scoped.yaml``).
"""

import os

from keystone.wsgi.api import application as keystone
from scoped_middleware.wsgi import wrap

application = wrap(
    keystone,
    config_file=os.environ.get("SCOPED_CONFIG", "/etc/scoped/scoped.yaml"),
    service_type="identity",
)
