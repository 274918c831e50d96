"""Start a site's gateway under an ASGI (or aiohttp) server.

The servers are imported only here, and only the one asked for: the core
knows none of them, and an install without granian still runs the default.
"""

from __future__ import annotations

import importlib
import logging
import os
from types import ModuleType

from scoped.config import Config
from scoped.errors import ScopedError
from scoped.tuning import tune_gc

SERVERS = ("uvicorn", "granian", "aiohttp")
"""``--server`` choices; uvicorn (with uvloop and httptools) is the default:
the lowest added latency at one request in flight (README, "Speed")."""


class ServerNotInstalledError(ScopedError):
    """The server asked for is not installed."""


def _import(server: str, module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        package = (err.name or module).split(".")[0]
        raise ServerNotInstalledError(
            f"--server {server}: the {package!r} package is not installed here "
            f"(pip install {package}); --server uvicorn is the default"
        ) from None


def serve(
    server: str, config: Config, config_file: str, host: str, port: int, log_level: str
) -> None:
    """Serve ``config``'s gateway on ``host:port`` until stopped."""
    if server == "granian":
        granian = _import(server, "granian")
        _import(server, "uvloop")
        # granian imports the app by name in its worker: the config goes by
        # environment (scoped_middleware.asgi.app_from_env reads it).
        from scoped_middleware.asgi import CONFIG_ENV  # noqa: PLC0415

        os.environ[CONFIG_ENV] = os.path.abspath(config_file)
        granian.Granian(
            "scoped_middleware.asgi:app_from_env",
            factory=True,
            address=host,
            port=port,
            interface="asgi",
            loop="uvloop",
            workers=1,
            websockets=False,
            log_level=log_level,
        ).serve()
        return
    if server == "aiohttp":
        web = _import(server, "aiohttp.web")
        uvloop = _import(server, "uvloop")
        from scoped_middleware.aio import create_aiohttp_app  # noqa: PLC0415

        uvloop.install()
        web.run_app(create_aiohttp_app(config), host=host, port=port, print=None, access_log=None)
        return
    uvicorn = _import(server, "uvicorn")
    from scoped_middleware.asgi import create_app  # noqa: PLC0415

    app = create_app(config)
    tune_gc()
    uvicorn.run(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level=log_level,
        server_header=False,
        proxy_headers=False,
        date_header=False,
    )


def log_to_stderr(level: str) -> None:
    """The gateway's own log lines (one JSON line per request on ``scoped.request``
    at info, circuit changes at warning) on stderr, at ``--log-level``."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("scoped")
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
