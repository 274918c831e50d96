"""Start a site's gateway under an ASGI (or aiohttp) server.

The servers are imported only here, and only the one asked for: the core
knows none of them, and an install without granian still runs the default.
"""

from __future__ import annotations

import importlib
import logging
import os
import resource
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


LOG = logging.getLogger("scoped.gateway")

WANTED_OPEN_FILES = 65536
"""Open files a gateway asks for: a wide fan-out holds a connection per site
(and a 1024 soft limit, a common default, runs out at a few hundred sites
times a few requests in flight)."""
ENOUGH_OPEN_FILES = 8192
"""Below this (the hard limit allowing no more), the log says to raise it."""


def raise_open_files_limit() -> int:
    """Raise the soft limit of open files towards :data:`WANTED_OPEN_FILES`,
    as far as the hard limit allows; say so when it cannot. Returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = WANTED_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, WANTED_OPEN_FILES)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as err:
            LOG.warning("open files limit stays at %d (could not raise it: %s)", soft, err)
    if soft != resource.RLIM_INFINITY and soft < ENOUGH_OPEN_FILES:
        LOG.warning(
            "open files limit is %d (hard limit %d): a wide fan-out may run out; "
            "raise it (ulimit -n, LimitNOFILE=) to %d",
            soft,
            hard,
            WANTED_OPEN_FILES,
        )
    return soft


def serve(
    server: str, config: Config, config_file: str, host: str, port: int, log_level: str
) -> None:
    """Serve ``config``'s gateway on ``host:port`` until stopped."""
    raise_open_files_limit()
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
    for old in [h for h in logger.handlers if getattr(h, "scoped_stderr", False)]:
        logger.removeHandler(old)  # called again in one process (tests): one handler
    handler.scoped_stderr = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
