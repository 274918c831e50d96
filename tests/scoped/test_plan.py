"""The planner: scope + registry + home -> plan (docs/design.md §3 and §8)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scoped_grammar import Expr, ScopeError, Site, UnknownSiteError, all_of, first_of, opt, parse

from scoped.plan import All, Call, First, Node, plan_expr, plan_scope
from tests.grammar.strategies import exprs

SITES = ("Berlin", "Denver", "Paris")


def plan_of(text: str, sites: tuple[str, ...] | None = SITES) -> Node:
    node = plan_scope(parse(f"<compute: {text}>"), sites).for_service("compute")
    assert node is not None
    return node


def test_the_design_example() -> None:
    scope = parse("<nova: Berlin&Denver, glance: Denver|Paris>")
    plan = plan_scope(scope, SITES, "Berlin")
    assert plan.to_json() == {
        "compute": {"all": [{"site": "Berlin"}, {"site": "Denver"}]},
        "image": {"first": [{"site": "Denver"}, {"site": "Paris"}]},
        "*": {"site": "Berlin"},
    }
    assert plan.for_service("network") == Call("Berlin")


def test_star_expands_over_the_registry_in_its_order() -> None:
    assert plan_of("*") == All((Call("Berlin"), Call("Denver"), Call("Paris")))
    assert plan_of("Paris&*") == All((Call("Paris"), Call("Berlin"), Call("Denver")))


def test_duplicates_are_dropped_first_place_kept() -> None:
    assert plan_of("Denver&Berlin&Denver") == All((Call("Denver"), Call("Berlin")))
    assert plan_of("Paris|Berlin|Paris") == First((Call("Paris"), Call("Berlin")))
    assert plan_of("Berlin&Berlin") == Call("Berlin")


def test_a_site_both_required_and_optional_is_required() -> None:
    assert plan_of("Berlin&Denver?&Denver") == All((Call("Berlin"), Call("Denver")))
    assert plan_of("Berlin&Denver?&Denver?") == All((Call("Berlin"), Call("Denver", True)))


def test_optional_groups_are_not_flattened_into_their_parent() -> None:
    node = plan_of("Berlin&(Denver&Paris)?")
    assert node == All((Call("Berlin"), All((Call("Denver"), Call("Paris")), optional=True)))
    node = plan_of("Berlin&(Denver|Paris)?")
    assert node == All((Call("Berlin"), First((Call("Denver"), Call("Paris")), optional=True)))


def test_one_child_nodes_collapse_and_keep_optional() -> None:
    assert plan_of("(Berlin|Berlin)?") == Call("Berlin", optional=True)


def test_default_is_the_star_key_else_home_else_nothing() -> None:
    assert plan_scope(parse("<*: Denver>"), SITES, "Berlin").default == Call("Denver")
    assert plan_scope(parse("<>"), SITES, "Berlin").default == Call("Berlin")
    assert plan_scope(parse("<>"), SITES, None).default is None


def test_unknown_site_names_the_nearest_and_points_at_it() -> None:
    text = "<nova: Berlin&Denvr>"
    with pytest.raises(UnknownSiteError) as info:
        plan_scope(parse(text), SITES, "Berlin", text=text)
    assert info.value.suggestions == ("Denver",)
    assert info.value.column == 15
    assert "did you mean 'Denver'" in str(info.value)
    assert "^" in str(info.value)


def test_unknown_home_is_an_error() -> None:
    with pytest.raises(UnknownSiteError, match="Berln"):
        plan_scope(parse("<>"), SITES, "Berln")


def test_star_site_needs_a_registry() -> None:
    with pytest.raises(ScopeError, match="registry"):
        plan_of("*", sites=None)


def _walk(node: Node) -> list[Node]:
    out = [node]
    if isinstance(node, (All, First)):
        for c in node.children:
            out.extend(_walk(c))
    return out


registry = st.lists(
    st.sampled_from(["A", "B", "C", "D", "E", "F"]), min_size=1, max_size=6, unique=True
)


@given(exprs, registry)
def test_plans_are_minimal(expr: Expr, sites: list[str]) -> None:
    try:
        node = plan_expr(expr, sites)
    except UnknownSiteError as err:
        assert err.name not in sites
        return
    for n in _walk(node):
        if isinstance(n, Call):
            assert n.site in sites
        else:
            assert len(n.children) >= 2
            plain = [(c.site if isinstance(c, Call) else c) for c in n.children if not c.optional]
            assert len(plain) == len(set(map(repr, plain)))
            assert not any(isinstance(c, type(n)) and not c.optional for c in n.children)


@given(st.lists(st.sampled_from(["A", "B", "C"]), min_size=1, max_size=8))
def test_fan_out_names_each_site_once_in_first_order(names: list[str]) -> None:
    node = plan_expr(all_of(*map(Site, names)), ["A", "B", "C"])
    calls = [node] if isinstance(node, Call) else list(node.children)  # type: ignore[union-attr]
    assert [c.site for c in calls] == list(dict.fromkeys(names))  # type: ignore[union-attr]


def test_helpers_and_parser_agree() -> None:
    built = first_of(all_of(Site("A"), opt(Site("B"))), Site("C"))
    assert parse("<compute: A&B?|C>")["compute"] == built
