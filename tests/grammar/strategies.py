"""Hypothesis strategies for scopes: ASTs that keep the invariants by construction."""

from __future__ import annotations

from hypothesis import strategies as st
from scoped_grammar import STAR, EverySite, Expr, Scope, Site, all_of, first_of, opt

SERVICES = ["compute", "image", "identity", "network", "block-storage", "placement", "object-store"]

bare_names = st.from_regex(r"[A-Za-z0-9_.\-]{1,12}", fullmatch=True)
odd_names = st.text(
    alphabet=st.characters(exclude_categories=("Cs",), min_codepoint=32), min_size=1, max_size=8
)
site_names = st.one_of(bare_names, bare_names, odd_names)

leaves: st.SearchStrategy[Expr] = st.one_of(
    site_names.map(Site), site_names.map(Site), st.just(EverySite())
)


def _extend(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    chains = st.lists(children, min_size=2, max_size=4)
    return st.one_of(
        chains.map(lambda xs: all_of(*xs)),
        chains.map(lambda xs: first_of(*xs)),
        children.map(opt),
    )


exprs: st.SearchStrategy[Expr] = st.recursive(leaves, _extend, max_leaves=12)

scopes: st.SearchStrategy[Scope] = st.dictionaries(
    st.sampled_from([*SERVICES, STAR]), exprs, max_size=4
).map(Scope.of)
