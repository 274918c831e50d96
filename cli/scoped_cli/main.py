"""The ``scoped`` command. A thin adapter: it parses arguments, calls the core
(or the server start-up, or the lab runner) and prints; exit status 2 for bad
input, with the error on stderr."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from scoped import __version__
from scoped.config import load_config
from scoped.errors import EXIT_BAD_INPUT, ScopedError
from scoped.explain import explain, site_names
from scoped.urlscope import scope_url

from .serve import SERVERS, log_to_stderr, serve

EXIT_OK = 0


def site_list(value: str) -> list[str]:
    try:
        return site_names(value)
    except ScopedError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, as in 127.0.0.1:8001; got {value!r}")
    return host.strip("[]"), int(port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scoped",
        description="Scope-aware gateway for independent OpenStack sites.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ex = sub.add_parser(
        "explain",
        help="parse, check and show a scope",
        description="Parse a scope, check it against the sites, and show its canonical "
        "text and plan. Exit 0 on success, 2 on a bad scope (error on stderr).",
    )
    ex.add_argument(
        "scope", metavar="SCOPE", help='e.g. "<nova: Berlin&Denver, glance: Denver|Paris>"'
    )
    ex.add_argument("--json", action="store_true", help="print one JSON object")
    ex.add_argument(
        "--sites",
        type=site_list,
        metavar="A,B,...",
        help="the site registry, in preference order: checks names and expands '*'",
    )
    ex.add_argument("--home", metavar="SITE", help="the home site: where unnamed services go")
    ex.set_defaults(func=_explain)

    url = sub.add_parser(
        "url",
        help="print a gateway's URL that carries a scope (for any OpenStack client)",
        description="Print http://GATEWAY/scope/<base64url of the scope>/identity/v3: "
        "given as auth_url to any OpenStack client (openstacksdk, Terraform, gophercloud, "
        "curl), every request it makes through that gateway has the scope. Exit 2 on a "
        "bad scope.",
    )
    url.add_argument("scope", metavar="SCOPE", help='e.g. "<nova: Berlin&Denver>"')
    url.add_argument(
        "--gateway", required=True, metavar="URL", help="the gateway, e.g. http://127.0.0.1:18000"
    )
    url.add_argument(
        "--path",
        default="/identity/v3",
        metavar="PATH",
        help="the service path after the scope (default: /identity/v3, an auth_url)",
    )
    url.set_defaults(func=_url)

    gw = sub.add_parser(
        "gateway",
        help="run a site's gateway",
        description="Serve one site's gateway (ASGI, under uvicorn with uvloop and httptools).",
    )
    gw.add_argument("--config", required=True, metavar="FILE", help="the gateway's YAML config")
    gw.add_argument(
        "--listen", required=True, type=_listen, metavar="HOST:PORT", help="e.g. 127.0.0.1:8001"
    )
    gw.add_argument(
        "--log-level",
        default="warning",
        choices=("critical", "error", "warning", "info", "debug"),
        help="server log level (default: warning)",
    )
    gw.add_argument(
        "--server",
        default="uvicorn",
        choices=SERVERS,
        help="ASGI server (default: uvicorn with uvloop and httptools; see the README)",
    )
    gw.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N",
        help="worker processes on the listen address (default 1; e.g. the number of cores: "
        "each is a whole gateway, /metrics and circuits are shared; uvicorn only)",
    )
    gw.set_defaults(func=_gateway)

    lab = sub.add_parser(
        "lab",
        help="the multi-site lab: real OpenStack sites on 127.0.0.1 with scoped in front",
        description="Run the lab of deploy/lab/ (a source checkout): independent OpenStack "
        "sites (Keystone, Glance, Placement, Nova with the fake driver, Neutron) on "
        "127.0.0.1, a scoped gateway in front of each, the WSGI filter inside Paris's "
        "services, the sites joined by emulated WAN links. Exit 0 on success, non-zero "
        "on failure, 2 on bad input.",
    )
    actions = lab.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (
        ("up", "install what is missing and start the sites (default: Berlin,Denver,Paris)"),
        ("down", "stop everything the lab started, or only the named sites (an outage drill)"),
        ("status", "what runs, where, and where its logs are; the WAN links"),
    ):
        act = actions.add_parser(action, help=text, description=text)
        act.add_argument("--dir", required=True, metavar="DIR", help="the lab's state directory")
        if action != "status":
            act.add_argument(
                "--sites",
                type=site_list,
                default=[],
                metavar="A,B,...",
                help="only these sites" if action == "down" else "the sites to start",
            )
        if action == "up":
            act.add_argument(
                "--wan",
                metavar="FILE",
                help="the WAN between the sites (YAML: one-way delays in ms, jitter, "
                "bandwidth; see deploy/lab/README.md), or 'default'; every link is set from "
                "it. Without it, links keep their state, new ones get the lab's WAN",
            )
        act.set_defaults(func=_lab)
    _lab_link_parser(actions)
    return parser


def _lab_link_parser(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = "change a WAN link between two sites of the running lab, at once"
    link = actions.add_parser("link", help=text, description=text)
    verbs = link.add_subparsers(dest="link_action", required=True, metavar="cut|heal|set")
    for verb, about in (
        ("cut", "cut the link: a black hole (connects time out, open connections stall; "
         "the default) or refused (ECONNREFUSED, open connections reset)"),
        ("heal", "bring the link back up (what a black hole held is delivered, in order)"),
        ("set", "change the link's delay, jitter or bandwidth"),
    ):  # fmt: skip
        act = verbs.add_parser(verb, help=about, description=about)
        act.add_argument("--dir", required=True, metavar="DIR", help="the lab's state directory")
        act.add_argument("a", metavar="A", help="a site")
        act.add_argument("b", metavar="B", help="another site")
        if verb == "cut":
            act.add_argument("--mode", metavar="blackhole|refuse", help="default: blackhole")
        if verb == "set":
            act.add_argument(
                "--delay", metavar="MS[,MS]", help="one-way delay in ms; two: A->B,B->A"
            )
            act.add_argument("--jitter", metavar="FRACTION", help="e.g. 0.1: each delay +-10%%")
            act.add_argument(
                "--bandwidth",
                metavar="MBIT[,MBIT]",
                help="Mbit/s each way (two: A->B,B->A); none: no cap",
            )
        act.set_defaults(func=_lab_link)


def _explain(args: argparse.Namespace) -> int:
    result = explain(args.scope, args.sites, args.home)
    if args.json:
        print(json.dumps(result.to_json(), ensure_ascii=False))
    else:
        print(result.render())
    return EXIT_OK


def _url(args: argparse.Namespace) -> int:
    gateway = args.gateway.rstrip("/")
    if not gateway.startswith(("http://", "https://")) or "/" in gateway.split("://", 1)[1]:
        raise ScopedError(
            f"--gateway takes the gateway's origin, as in http://127.0.0.1:18000; got {gateway!r}"
        )
    print(scope_url(gateway, args.scope, args.path))
    return EXIT_OK


def _workers(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 256:
        raise argparse.ArgumentTypeError(f"expected 1 to 256 processes, got {text!r}")
    return int(text)


def _gateway(args: argparse.Namespace) -> int:
    config = load_config(args.config)  # fail early, with the key at fault
    log_to_stderr(args.log_level)
    host, port = args.listen
    serve(args.server, config, args.config, host, port, args.log_level, args.workers)
    return EXIT_OK


def _lab(args: argparse.Namespace) -> int:
    from .lab import run  # noqa: PLC0415 - only this command needs it

    return run(args.action, args.dir, getattr(args, "sites", []) or [], getattr(args, "wan", None))


def _lab_link(args: argparse.Namespace) -> int:
    from .lab import link  # noqa: PLC0415 - only this command needs it

    options = {k: getattr(args, k, None) for k in ("delay", "jitter", "bandwidth", "mode")}
    return link(args.link_action, args.dir, args.a, args.b, **options)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.func(args)
    except ScopedError as err:
        print(f"scoped {args.command}: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return status


if __name__ == "__main__":
    sys.exit(main())
