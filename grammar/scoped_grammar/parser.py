"""Text -> :class:`~scoped_grammar.nodes.Scope`.

The gateway parses the scope of every request, so parsing is cached by text:
a scope seen before costs one dictionary lookup. Whatever the input, only
:class:`~scoped_grammar.errors.ScopeError` (and its subclasses) escapes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import lru_cache
from typing import Any, NamedTuple

from lark import Lark, Token, Transformer
from lark.exceptions import (
    LarkError,
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)

from .canonical import canonical
from .errors import (
    DuplicateServiceError,
    ScopeError,
    ScopeSyntaxError,
    ScopeTooLongError,
    UnknownServiceError,
    nearest,
)
from .nodes import STAR, EverySite, Expr, Scope, Site, all_of, first_of, opt
from .services import known_service_names, official_service_type

MAX_SCOPE_LENGTH = 4096
"""Longest scope text accepted, in characters; longer is rejected unparsed."""

MAX_NESTING = 32
"""Deepest parenthesis nesting accepted; keeps every later walk of the AST shallow."""

CACHE_SIZE = 4096

# What each terminal is, in the words an operator would use.
_WORDS: dict[str, str] = {
    "KEY": "a service name",
    "SITE": "a site name",
    "STRING": "a quoted string",
    "STAR": "'*'",
    "LESSTHAN": "'<'",
    "MORETHAN": "'>'",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "COLON": "':'",
    "COMMA": "','",
    "VBAR": "'|'",
    "AMPERSAND": "'&'",
    "QMARK": "'?'",
    "LPAR": "'('",
    "RPAR": "')'",
    "$END": "the end of the scope",
}
_WORD_ORDER = list(_WORDS)


class _Leaf(NamedTuple):
    """A site expression leaf and the token it came from (for the JSON form)."""

    expr: Expr
    token: Token


_Entry = tuple[Token, "Expr | _Leaf"]


def _expr(x: Expr | _Leaf) -> Expr:
    return x.expr if isinstance(x, _Leaf) else x


class _Located(Exception):
    """A ScopeError raised inside the transformer, before the text is at hand."""

    def __init__(self, error: type[ScopeError], message: str, pos: int, **kw: Any) -> None:
        super().__init__(message)
        self.error, self.message, self.pos, self.kw = error, message, pos, kw


class _ToAst(Transformer[Token, Any]):
    """Parse-tree callbacks, run inline by the LALR parser as it reduces."""

    def site(self, children: list[Token]) -> _Leaf:
        (tok,) = children
        return _Leaf(Site(str(tok)), tok)

    def quoted_site(self, children: list[Token]) -> _Leaf:
        (tok,) = children
        return _Leaf(Site(_unquote(tok, "site name")), tok)

    def every_site(self, children: list[Token]) -> _Leaf:
        (tok,) = children
        return _Leaf(EverySite(), tok)

    def group(self, children: list[Expr | _Leaf]) -> Expr:
        # A parenthesised value is an expression, not a lone JSON string.
        return _expr(children[0])

    def optional(self, children: list[Expr | _Leaf]) -> Expr:
        return opt(_expr(children[0]))

    def conj(self, children: list[Expr | _Leaf]) -> Expr:
        return all_of(*(_expr(c) for c in children))

    def disj(self, children: list[Expr | _Leaf]) -> Expr:
        return first_of(*(_expr(c) for c in children))

    def key(self, children: list[Token]) -> Token:
        return children[0]

    def entry(self, children: list[Any]) -> tuple[Token, Expr | _Leaf]:
        return children[0], children[1]

    def entries(self, children: list[_Entry]) -> list[_Entry]:
        return children

    def angle(self, children: list[Any]) -> list[tuple[Token, Expr]]:
        return [(k, _expr(v)) for k, v in (children[0] or ())]

    def brace(self, children: list[Any]) -> list[tuple[Token, Expr]]:
        entries: list[tuple[Token, Expr | _Leaf]] = children[0] or []
        is_json = bool(entries) and all(
            k.type == "STRING" and isinstance(v, _Leaf) and v.token.type == "STRING"
            for k, v in entries
        )
        if not is_json:
            return [(k, _expr(v)) for k, v in entries]
        # The JSON form: every value is itself a site expression.
        out: list[tuple[Token, Expr]] = []
        for k, v in entries:
            assert isinstance(v, _Leaf)
            out.append((k, _parse_json_value(v.token)))
        return out


def _unquote(tok: Token, what: str) -> str:
    value = json.loads(str(tok))
    if not isinstance(value, str) or not value:
        raise _Located(ScopeSyntaxError, f"an empty {what}", tok.start_pos or 0)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _Located(
            ScopeSyntaxError, f"a {what} must be valid Unicode text", tok.start_pos or 0
        ) from None
    return value


def _parse_json_value(tok: Token) -> Expr:
    text = _unquote(tok, "site expression")
    start = tok.start_pos or 0
    try:
        _check_bounds(text)  # a JSON string is held to the bounds of the scope around it
        return _parse_expr(text)
    except ScopeError as err:
        # Point into the original text; exact unless the JSON string had escapes.
        exact = "\\" not in tok and err.pos is not None
        pos = start + 1 + (err.pos or 0) if exact else start
        raise _Located(type(err), err.message, pos, **_error_kwargs(err)) from None


def _error_kwargs(err: ScopeError) -> dict[str, Any]:
    if isinstance(err, ScopeSyntaxError):
        return {"expected": err.expected}
    return {}


_LARK = Lark.open_from_package(
    "scoped_grammar",
    "scope.lark",
    parser="lalr",
    start=["start", "expr"],
    transformer=_ToAst(),
    maybe_placeholders=True,
)


def parse(text: str) -> Scope:
    """Parse a scope in any surface form (angle, brace, JSON); cached by text.

    Raises :class:`ScopeError` (a subclass saying what is wrong, where, and
    what was expected), and nothing else.
    """
    _check_bounds(text)
    return _parse_cached(text)


def parse_expr(text: str) -> Expr:
    """Parse a bare site expression (``Berlin&Denver|Paris``)."""
    _check_bounds(text)
    return _parse_expr(text)


def _check_bounds(text: object) -> None:
    if not isinstance(text, str):
        raise ScopeError(f"a scope is text, not {type(text).__name__}")
    if len(text) > MAX_SCOPE_LENGTH:
        raise ScopeTooLongError(
            f"a scope is at most {MAX_SCOPE_LENGTH} characters; this one has {len(text)}"
        )
    if text.count("(") > MAX_NESTING:
        _check_nesting(text)


def _check_nesting(text: str) -> None:
    depth = 0
    quoted = escaped = False
    for pos, char in enumerate(text):
        if quoted:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == "(":
            depth += 1
            if depth > MAX_NESTING:
                raise ScopeTooLongError(f"parentheses nest at most {MAX_NESTING} deep", text, pos)
        elif char == ")":
            depth = max(0, depth - 1)


@lru_cache(maxsize=CACHE_SIZE)
def _parse_cached(text: str) -> Scope:
    entries = _run(text, "start")
    try:
        scope = _build_scope(text, entries)
    except _Located as loc:
        raise loc.error(loc.message, text, loc.pos, **loc.kw) from None
    # What is accepted must be accepted again as the gateway writes it back
    # (X-Scope, the token suffix): canonical text may be longer (an alias
    # becomes its service type, spaces after ':' and ','). Found by fuzzing.
    size = len(canonical(scope))
    if size > MAX_SCOPE_LENGTH:
        raise ScopeTooLongError(
            f"a scope is at most {MAX_SCOPE_LENGTH} characters as the gateway writes it "
            f"(canonical form); this one has {size}"
        )
    return scope


def _parse_expr(text: str) -> Expr:
    return _expr(_run(text, "expr"))


def _run(text: str, start: str) -> Any:
    try:
        return _LARK.parse(text, start=start)
    except _Located as loc:
        raise loc.error(loc.message, text, loc.pos, **loc.kw) from None
    except VisitError as err:
        inner = err.orig_exc
        if isinstance(inner, _Located):
            raise inner.error(inner.message, text, inner.pos, **inner.kw) from None
        raise ScopeError(f"cannot read this scope ({inner})", text, 0) from None
    except UnexpectedInput as err:
        raise _syntax_error(text, err, start) from None
    except LarkError as err:  # pragma: no cover - any other Lark failure is still ours
        raise ScopeError(f"cannot read this scope ({err})", text, 0) from None


def _build_scope(text: str, entries: list[tuple[Token, Expr]]) -> Scope:
    seen: dict[str, Token] = {}
    seen_as: dict[str, str] = {}
    mapping: dict[str, Expr] = {}
    for tok, expr in entries:
        written = _unquote(tok, "service name") if tok.type == "STRING" else str(tok)
        pos = tok.start_pos or 0
        if written == STAR:
            service = STAR
        else:
            found = official_service_type(written)
            if found is None:
                raise UnknownServiceError(
                    written, nearest(written, known_service_names()), text, pos
                )
            service = found
        if service in seen:
            first = seen[service]
            if seen_as[service] != written:
                same = f"{seen_as[service]!r} and {written!r} both name"
            else:
                same = "named twice:"
            raise DuplicateServiceError(
                f"{same} service {service!r} (first at column {first.column})", text, pos
            )
        seen[service] = tok
        seen_as[service] = written
        mapping[service] = expr
    return Scope.of(mapping)


_PUNCTUATION = frozenset('<>{}:,|&?()"*')


def _expected_at(text: str, pos: int, start: str) -> tuple[str, ...]:
    """What the parser would accept at ``pos``: parse the text up to there.

    The contextual lexer only knows which terminals its state allows, which
    can be more than the parser accepts; asking the parser, fed with the
    prefix, is exact. Only ever run on the error path.
    """
    try:
        interactive = _LARK.parse_interactive(text[:pos], start=start)
        interactive.exhaust_lexer()
        accepts: set[str] = interactive.accepts()  # type: ignore[no-untyped-call]
        return _words(accepts)
    except Exception:  # best effort: fall back to the lexer's view
        return ()


def _syntax_error(text: str, err: UnexpectedInput, start: str) -> ScopeSyntaxError:
    if isinstance(err, UnexpectedToken):
        expected = _words(err.accepts or err.expected)
        tok = err.token
        if tok.type == "$END":
            pos, got = len(text), "the end of the scope"
        else:
            pos, got = (tok.start_pos or 0), repr(str(tok))
        message = f"expected {_either(expected)}, got {got}"
    elif isinstance(err, UnexpectedCharacters):
        pos = err.pos_in_stream or 0
        expected = _expected_at(text, pos, start) or _words(err.allowed or ())
        char = text[pos] if pos < len(text) else ""
        message = f"unexpected character {char!r}; expected {_either(expected)}"
        if char not in _PUNCTUATION:
            message += " (names are letters, digits, '_', '.' and '-'; quote anything else)"
    elif isinstance(err, UnexpectedEOF):
        expected = _words(err.expected)
        pos = len(text)
        message = f"the scope ends too early; expected {_either(expected)}"
    else:  # pragma: no cover - Lark has no other kind today
        expected, pos, message = (), 0, str(err).strip()
    if not text.strip():
        message = "the scope is empty; expected '<' or '{', as in <compute: Berlin>"
    return ScopeSyntaxError(message, text, pos, expected)


def _words(names: Iterable[str]) -> tuple[str, ...]:
    known = [n for n in names if n in _WORDS]
    known.sort(key=_WORD_ORDER.index)
    return tuple(dict.fromkeys(_WORDS[n] for n in known))


def _either(words: tuple[str, ...]) -> str:
    if not words:
        return "nothing more"
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def site_positions(text: str) -> list[tuple[str | None, int]]:
    """Every site written in a (valid) scope, in text order: ``(name, pos)``,
    with None as the name of a ``*`` site.

    The AST carries no positions (it is a value, shared through the parse
    cache); errors found later, such as an unknown site, use this to put the
    caret under the right name. Only run on the error path.
    """
    return _site_positions(text, "start", 0)


def _site_positions(text: str, start: str, offset: int) -> list[tuple[str | None, int]]:
    try:
        tokens = list(_LARK.parse_interactive(text, start=start).iter_parse())
    except (LarkError, _Located, ScopeError):
        return []
    out: list[tuple[str | None, int]] = []
    for i, tok in enumerate(tokens):
        nxt = tokens[i + 1].type if i + 1 < len(tokens) else None
        pos = offset + (tok.start_pos or 0)
        if tok.type == "SITE":
            out.append((str(tok), pos))
        elif tok.type == "STAR" and nxt != "COLON":
            out.append((None, pos))
        elif tok.type == "STRING" and nxt != "COLON":
            try:
                value = json.loads(str(tok))
            except ValueError:
                continue
            if "\\" not in tok:  # the JSON form: the string holds an expression
                out.extend(_site_positions(value, "expr", pos + 1))
            out.append((value, pos))
    return out
