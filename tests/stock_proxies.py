"""A stock nginx and a stock HAProxy in front of a gateway: each with
nothing but a proxy to it, every buffer at its default (the 1000-sites
issue saw both refuse a wide fan-out). The command lines of each, for the
tests (tests/deploy/test_stock_proxies.py) and the benchmark
(tests/bench/bench_scale.py)."""

from __future__ import annotations

from pathlib import Path

NGINX = "/usr/sbin/nginx"
HAPROXY = "/usr/sbin/haproxy"


def stock_nginx(folder: Path, port: int, upstream: int, binary: str = NGINX) -> list[str]:
    """Debian's nginx with nothing but a proxy_pass: default buffers
    (large_client_header_buffers 4 8k, proxy_buffer_size one page)."""
    folder.mkdir()
    temp = " ".join(
        f"{kind}_temp_path {folder}/{kind};" for kind in ("client_body", "proxy", "fastcgi")
    )
    (folder / "nginx.conf").write_text(
        f"""
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    {temp} uwsgi_temp_path {folder}/uwsgi; scgi_temp_path {folder}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{ proxy_pass http://127.0.0.1:{upstream}; }}
    }}
}}
"""
    )
    return [binary, "-p", str(folder), "-c", "nginx.conf", "-e", "stderr", "-g", "daemon off;"]


def stock_haproxy(folder: Path, port: int, upstream: int, binary: str = HAPROXY) -> list[str]:
    """Debian's haproxy with defaults only (tune.bufsize 16384)."""
    folder.mkdir()
    (folder / "haproxy.cfg").write_text(
        f"""
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend front
    bind 127.0.0.1:{port}
    default_backend gateway
backend gateway
    server gateway 127.0.0.1:{upstream}
"""
    )
    return [binary, "-db", "-f", str(folder / "haproxy.cfg")]
