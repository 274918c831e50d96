"""The ``scoped`` command. A thin adapter: it parses arguments, calls the core
and prints; exit status 2 for bad input, with the error on stderr."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from . import __version__
from .errors import ScopedError
from .explain import explain

EXIT_OK = 0
EXIT_BAD_INPUT = 2


def _site_list(value: str) -> list[str]:
    names = [n.strip() for n in value.split(",")]
    if any(not n for n in names):
        raise argparse.ArgumentTypeError(
            f"--sites takes site names separated by commas, as in Berlin,Denver; got {value!r}"
        )
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise argparse.ArgumentTypeError(f"--sites names {n!r} twice")
        seen.add(n)
    return names


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
        type=_site_list,
        metavar="A,B,...",
        help="the site registry, in preference order: checks names and expands '*'",
    )
    ex.add_argument("--home", metavar="SITE", help="the home site: where unnamed services go")
    ex.set_defaults(func=_explain)
    return parser


def _explain(args: argparse.Namespace) -> int:
    result = explain(args.scope, args.sites, args.home)
    if args.json:
        print(json.dumps(result.to_json(), ensure_ascii=False))
    else:
        print(result.render())
    return EXIT_OK


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
