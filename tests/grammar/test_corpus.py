"""The scope-language corpus (``grammar/corpus/scopes.yaml``), case by case.

Each valid case must give its canonical text and its plan (the ``plan`` object
of ``scoped explain --json``), and its canonical text must read back to the
same canonical text, AST and plan. Each invalid case must raise the named
error, at the given line and column, with the given fragment in its message.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from scoped_grammar import parse

from scoped.errors import ScopedError
from scoped.explain import explain

CORPUS = Path(__file__).parents[2] / "grammar/corpus/scopes.yaml"

MIN_CASES = 100

_COMMON_FIELDS = {"scope", "sites", "home", "id", "repeat", "length"}
_VALID_FIELDS = _COMMON_FIELDS | {"canonical", "plan"}
_INVALID_FIELDS = _COMMON_FIELDS | {"error", "line", "column", "message"}

Case = dict[str, Any]


def _load() -> list[Case]:
    with CORPUS.open(encoding="utf-8") as f:
        cases = yaml.safe_load(f)
    assert isinstance(cases, list), f"{CORPUS} must hold a YAML list"
    return cases


def _expand(text: str, case: Case) -> str:
    """Replace each ``repeat`` marker with its text repeated ``times`` times."""
    for rep in case.get("repeat", ()):
        text = text.replace(rep["marker"], rep["text"] * rep["times"])
    return text


def _scope(case: Case) -> str:
    for rep in case.get("repeat", ()):
        assert rep["marker"] in case["scope"], f"marker {rep['marker']!r} not in the scope"
    text = _expand(case["scope"], case)
    if "length" in case:
        assert len(text) == case["length"], "the built scope has the wrong length"
    return text


def _sites(case: Case) -> Sequence[str] | None:
    sites = case.get("sites")
    return None if sites is None else [str(s) for s in sites]


def _home(case: Case) -> str | None:
    home = case.get("home")
    return None if home is None else str(home)


def _case_id(index: int, case: Case) -> str:
    label = case.get("id") or case.get("scope", "")
    label = label.encode("unicode_escape").decode("ascii")
    if len(label) > 60:
        label = label[:57] + "..."
    kind = "err" if "error" in case else "ok"
    return f"{index:03d}-{kind}-{label}"


CASES = _load()


def _params(*, valid: bool | None = None) -> list[Any]:
    """The cases as pytest params (all, or only the valid or invalid ones)."""
    return [
        pytest.param(c, id=_case_id(i, c))
        for i, c in enumerate(CASES)
        if valid is None or valid == ("error" not in c)
    ]


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= MIN_CASES, f"the corpus has {len(CASES)} cases; want {MIN_CASES}"


@pytest.mark.parametrize("case", _params())
def test_case_is_well_formed(case: Case) -> None:
    assert isinstance(case, dict)
    assert isinstance(case.get("scope"), str)
    fields = set(case)
    if "error" in case:
        assert fields <= _INVALID_FIELDS, f"unknown fields {fields - _INVALID_FIELDS}"
        assert {"error", "column", "message"} <= fields
    else:
        assert fields <= _VALID_FIELDS, f"unknown fields {fields - _VALID_FIELDS}"
        assert {"canonical", "plan"} <= fields
        assert isinstance(case["plan"], dict)


@pytest.mark.parametrize("case", _params(valid=True))
def test_valid_scope(case: Case) -> None:
    result = explain(_scope(case), _sites(case), _home(case)).to_json()
    assert result == {
        "canonical": _expand(case["canonical"], case),
        "plan": case["plan"],
    }


@pytest.mark.parametrize("case", _params(valid=True))
def test_canonical_reads_back(case: Case) -> None:
    text = _scope(case)
    first = explain(text, _sites(case), _home(case))
    again = explain(first.canonical, _sites(case), _home(case))
    assert again.canonical == first.canonical
    assert again.plan.to_json() == first.plan.to_json()
    assert parse(first.canonical) == parse(text)


@pytest.mark.parametrize("case", _params(valid=False))
def test_invalid_scope(case: Case) -> None:
    with pytest.raises(ScopedError) as info:
        explain(_scope(case), _sites(case), _home(case))
    err = info.value
    assert type(err).__name__ == case["error"], str(err)
    column = case["column"]
    line = case.get("line", 1 if column is not None else None)
    assert (getattr(err, "line", None), getattr(err, "column", None)) == (line, column), str(err)
    assert case["message"] in str(err)
