"""Replica handles (scoped.handles): a stateless ID for a resource that an
``&`` create made at several sites, each under its own ID."""

from __future__ import annotations

import base64
import uuid

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scoped.handles import (
    PREFIX,
    HandleTooLong,
    has_handle,
    make_handle,
    path_at,
    path_handle,
    read_handle,
)


def encoded(data: object) -> str:
    """``scoped.`` and the unpadded base64url of ``data`` as JSON."""
    return PREFIX + base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode("ascii")


BERLIN_ID = "2f5c1a4e-8d2b-4c7e-9a61-0d3b7f9e1c22"
DENVER_ID = "42"
HANDLE = make_handle({"Berlin": BERLIN_ID, "Denver": DENVER_ID})


def test_a_handle_reads_back_as_the_replicas_it_was_made_of() -> None:
    ids = {"Berlin": BERLIN_ID, "Denver": DENVER_ID, "Paris": "a1b2c3"}
    handle = make_handle(ids)
    assert handle.startswith("scoped.")
    assert read_handle(handle) == ids
    assert list(read_handle(handle) or {}) == ["Berlin", "Denver", "Paris"], "plan order kept"


def test_a_handle_fits_in_one_path_segment_and_a_query() -> None:
    # Many sites with long IDs: the encoding must never need a '/', '+',
    # '=' or '?' that would split or change the path.
    handle = make_handle({f"Site{i}": str(uuid.UUID(int=i * 7919)) for i in range(40)})
    body = handle[len(PREFIX) :]
    assert set(body) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert "." not in body


@pytest.mark.parametrize(
    "text",
    [
        BERLIN_ID,  # a plain UUID
        "42",  # Nova's integer-like flavor IDs
        "0123456789abcdef0123456789abcdef",  # Keystone's hex IDs
        "",
        "scoped.",
        "scoped.!!!",
        "scoped.not base64 at all",
        "scoped.%%%%",
        "scoped.é",  # not ASCII
        "scoped." + base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode(),  # not UTF-8
        "scoped." + base64.urlsafe_b64encode(b'{"Berlin": "x"').decode(),  # truncated JSON
        "Scoped." + HANDLE[len(PREFIX) :],  # the prefix is exact
        " " + HANDLE,
    ],
)
def test_text_that_is_not_a_handle_reads_as_none(text: str) -> None:
    assert read_handle(text) is None


@pytest.mark.parametrize(
    "data",
    [
        {},
        [],
        ["Berlin", "x"],
        "Berlin",
        42,
        None,
        True,
        {"Berlin": 42},
        {"Berlin": None},
        {"Berlin": ["x"]},
        {"Berlin": {"id": "x"}},
        {"Berlin": "x", "Denver": 1},
    ],
)
def test_json_of_the_wrong_shape_is_not_a_handle(data: object) -> None:
    assert read_handle(encoded(data)) is None


def test_an_overlong_handle_is_not_read() -> None:
    # Every ID is a string, so only the length refuses it.
    big = {f"Site{i}": "x" * 40 for i in range(400)}
    with pytest.raises(HandleTooLong):
        make_handle(big)  # what read_handle would not read is not made
    raw = base64.urlsafe_b64encode(orjson.dumps(big)).rstrip(b"=").decode()
    handle = PREFIX + raw
    assert len(handle) > 8192
    assert read_handle(handle) is None
    small = {f"Site{i}": "x" * 40 for i in range(100)}
    assert len(make_handle(small)) < 8192
    assert read_handle(make_handle(small)) == small


def test_padding_is_not_needed_but_the_unpadded_form_is_what_is_made() -> None:
    ids = {"Be": "x"}  # 10 bytes of JSON: padded base64 would end in '=='
    raw = base64.urlsafe_b64encode(orjson.dumps(ids)).decode()
    assert raw.endswith("==")
    assert make_handle(ids) == PREFIX + raw.rstrip("=")
    assert read_handle(make_handle(ids)) == ids


def test_characters_outside_base64url_make_text_not_a_handle() -> None:
    # base64.urlsafe_b64decode drops them and decodes the rest.
    body = HANDLE[len(PREFIX) :]
    for junk in ("!", "*", "~", " "):
        text = PREFIX + body[:4] + junk + body[4:]
        assert read_handle(text) is None, text


def test_path_at_puts_each_sites_own_id_in_place_of_the_handle() -> None:
    assert path_at(f"/v2.1/servers/{HANDLE}", "Berlin") == f"/v2.1/servers/{BERLIN_ID}"
    assert path_at(f"/v2.1/servers/{HANDLE}", "Denver") == f"/v2.1/servers/{DENVER_ID}"
    assert path_at(f"/v2.1/servers/{HANDLE}/action", "Denver") == "/v2.1/servers/42/action"


def test_path_at_replaces_every_handle_in_the_path() -> None:
    volume = make_handle({"Berlin": "vol-b", "Denver": "vol-d"})
    path = f"/v2.1/servers/{HANDLE}/os-volume_attachments/{volume}"
    assert path_at(path, "Denver") == "/v2.1/servers/42/os-volume_attachments/vol-d"
    assert path_at(path, "Berlin") == f"/v2.1/servers/{BERLIN_ID}/os-volume_attachments/vol-b"


def test_path_at_is_none_where_the_site_has_no_replica() -> None:
    assert path_at(f"/v2.1/servers/{HANDLE}", "Paris") is None
    assert path_at(f"/v2.1/servers/{HANDLE}/action", "paris") is None
    # Site names are exact: no case folding.
    assert path_at(f"/v2.1/servers/{HANDLE}", "berlin") is None
    # One handle without a replica there is enough.
    only_berlin = make_handle({"Berlin": "vol-b"})
    assert path_at(f"/v2.1/servers/{HANDLE}/volumes/{only_berlin}", "Denver") is None


@pytest.mark.parametrize(
    "path",
    [
        "/v2.1/servers",
        f"/v2.1/servers/{BERLIN_ID}",
        "/v2.1/servers/detail",
        "/",
        "",
        "/v2/images/scoped.!!!",  # the prefix, but no handle: left as it is
        "/v2/images/x.scoped.y",
    ],
)
def test_a_path_without_handles_is_left_as_it_is(path: str) -> None:
    assert path_at(path, "Berlin") == path
    assert path_at(path, "Paris") == path
    assert path_handle(path) == {}


def test_has_handle_sees_the_prefix() -> None:
    assert has_handle(f"/v2.1/servers/{HANDLE}")
    assert not has_handle(f"/v2.1/servers/{BERLIN_ID}")


def test_path_handle_is_the_first_handle_in_its_order() -> None:
    handle = make_handle({"Denver": "d", "Paris": "p", "Berlin": "b"})
    assert list(path_handle(f"/v2.1/servers/{handle}")) == ["Denver", "Paris", "Berlin"]
    other = make_handle({"Tokyo": "t"})
    assert list(path_handle(f"/v2.1/servers/{handle}/x/{other}")) == ["Denver", "Paris", "Berlin"]
    assert path_handle(f"/v2.1/servers/scoped.!!!/x/{other}") == {"Tokyo": "t"}


_text = st.text(st.characters(codec="utf-8"), max_size=40)


@given(st.text(max_size=300))
def test_read_handle_never_raises_on_any_text(text: str) -> None:
    for candidate in (text, PREFIX + text):
        result = read_handle(candidate)
        assert result is None or (
            isinstance(result, dict)
            and result
            and all(isinstance(k, str) and isinstance(v, str) for k, v in result.items())
        )


@given(st.binary(max_size=300))
def test_read_handle_never_raises_on_any_encoded_bytes(raw: bytes) -> None:
    text = PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    result = read_handle(text)
    assert result is None or isinstance(result, dict)


@given(st.dictionaries(_text, _text, min_size=1, max_size=8))
def test_every_mapping_of_text_round_trips(ids: dict[str, str]) -> None:
    handle = make_handle(ids)
    assert read_handle(handle) == ids
    assert "/" not in handle and "?" not in handle and "#" not in handle
    assert path_handle(f"/v2.1/servers/{handle}") == ids
