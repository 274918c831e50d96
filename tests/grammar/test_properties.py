"""Laws of the language, checked on generated scopes and arbitrary text."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scoped_grammar import (
    AllOf,
    FirstOf,
    Opt,
    Scope,
    ScopeError,
    Site,
    canonical,
    expr_text,
    parse,
)

from .strategies import bare_names, exprs, scopes


@given(scopes)
def test_canonical_text_parses_back_to_the_same_scope(scope: Scope) -> None:
    assert parse(canonical(scope)) == scope


@given(scopes)
def test_canonical_is_idempotent(scope: Scope) -> None:
    text = canonical(scope)
    assert canonical(parse(text)) == text


@given(scopes)
def test_brace_form_means_the_same(scope: Scope) -> None:
    text = canonical(scope)
    assert parse("{" + text[1:-1] + "}") == scope


@given(scopes.filter(lambda s: len(s) > 0))
def test_json_form_means_the_same(scope: Scope) -> None:
    text = json.dumps({k: expr_text(e) for k, e in scope.items()})
    assert parse(text) == scope


@given(scopes)
def test_canonical_has_no_spaces_around_operators(scope: Scope) -> None:
    text = canonical(scope)
    quoted_free = re.sub(r'"(?:[^"\\]|\\.)*"', "X", text)  # quoted names as one X
    for op in "&|?":
        assert f" {op}" not in quoted_free
        assert f"{op} " not in quoted_free


@given(exprs)
def test_chains_stay_flat(expr: object) -> None:
    def check(e: object) -> None:
        if isinstance(e, (AllOf, FirstOf)):
            assert len(e.items) >= 2
            assert not any(isinstance(i, type(e)) for i in e.items)
            for i in e.items:
                check(i)
        elif isinstance(e, Opt):
            assert not isinstance(e.item, Opt)
            check(e.item)

    check(parse(f"<compute: {expr_text(expr)}>")["compute"])  # type: ignore[arg-type]


names3 = st.tuples(bare_names, bare_names, bare_names)


@given(names3)
def test_and_binds_tighter_than_or(abc: tuple[str, str, str]) -> None:
    a, b, c = abc
    assert parse(f"<compute: {a}&{b}|{c}>") == parse(f"<compute: ({a}&{b})|{c}>")
    assert parse(f"<compute: {a}|{b}&{c}>") == parse(f"<compute: {a}|({b}&{c})>")
    assert parse(f"<compute: {a}&{b}|{c}>") != parse(f"<compute: {a}&({b}|{c})>")


@given(names3)
def test_optional_binds_tightest(abc: tuple[str, str, str]) -> None:
    a, b, c = abc
    assert parse(f"<compute: {a}&{b}?>") == parse(f"<compute: {a}&({b}?)>")
    assert parse(f"<compute: {a}|{b}&{c}?>") == parse(f"<compute: {a}|({b}&({c}?))>")
    whole = parse(f"<compute: ({a}&{b})?>")["compute"]
    assert isinstance(whole, Opt)


@given(names3)
def test_associative_chains_flatten(abc: tuple[str, str, str]) -> None:
    a, b, c = abc
    for op in "&|":
        left = parse(f"<compute: ({a}{op}{b}){op}{c}>")
        right = parse(f"<compute: {a}{op}({b}{op}{c})>")
        flat = parse(f"<compute: {a}{op}{b}{op}{c}>")
        assert left == right == flat


@given(st.text(max_size=300))
@example("<compute: \ud800>")
@example('{"compute": "\\ud800"}')
@example("<" * 5000)
@example("(" * 40)
@settings(max_examples=400)
def test_arbitrary_text_raises_only_scope_errors(text: str) -> None:
    try:
        scope = parse(text)
    except ScopeError as err:
        assert str(err)
    else:
        assert isinstance(scope, Scope)


scope_alphabet = st.text(alphabet='<>{}:,|&?()*" \nabAB.-\\', max_size=60)


@given(st.builds(lambda body: "<compute: " + body, scope_alphabet) | scope_alphabet)
@settings(max_examples=600)
def test_grammar_shaped_noise_raises_only_scope_errors(text: str) -> None:
    try:
        scope = parse(text)
    except ScopeError as err:
        assert err.pos is None or 0 <= err.pos <= len(text)
    else:
        assert parse(canonical(scope)) == scope


def test_quoted_names_round_trip() -> None:
    scope = parse('<compute: "my site"&"Zürich \\"Nord\\""|plain>')
    assert scope["compute"] == FirstOf(
        (AllOf((Site("my site"), Site('Zürich "Nord"'))), Site("plain"))
    )
    assert parse(canonical(scope)) == scope


@pytest.mark.parametrize(
    "text", ["<compute: Berlin>", "{compute: Berlin}", '{"compute": "Berlin"}']
)
def test_repeated_parses_share_one_result(text: str) -> None:
    assert parse(text) is parse(text)
