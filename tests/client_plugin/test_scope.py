"""The client's scope: completion with the home site, the header text, settings."""

from __future__ import annotations

import base64
import copy
import json

import pytest
from hypothesis import given
from scoped_grammar import Scope, ScopeError, parse
from scoped_osc.scope import ClientScope, complete, header_text, resolve, resolve_config
from scoped_osc.setting import ScopeSetting, setting_from_config

from tests.grammar.strategies import scopes


def test_unnamed_services_go_home() -> None:
    scope = ClientScope(parse("{nova: Berlin & Denver}"), "Berlin")
    assert scope.text == "<compute: Berlin&Denver, *: Berlin>"
    assert scope.header == scope.text
    assert scope.is_complete


def test_a_star_key_is_the_users_and_stays() -> None:
    scope = ClientScope(parse("<nova: Denver, *: Paris|Oslo>"), "Berlin")
    assert scope.text == "<compute: Denver, *: Paris|Oslo>"


def test_without_a_home_the_scope_goes_as_given() -> None:
    scope = ClientScope(parse("<glance: Denver>"), None)
    assert scope.text == "<image: Denver>"
    assert not scope.is_complete
    assert complete(parse("<glance: Denver>"), None) == parse("<image: Denver>")


def test_an_odd_home_is_quoted() -> None:
    assert ClientScope(parse("<>"), "my site").text == '<*: "my site">'


def test_the_token_suffix_is_unpadded_base64url_of_the_canonical_text() -> None:
    scope = ClientScope(parse("<nova: Berlin&Denver>"), "Berlin")
    suffix = scope.token_suffix
    assert suffix.startswith("!scope!")
    encoded = suffix.removeprefix("!scope!")
    assert "=" not in encoded
    decoded = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    assert decoded == scope.text


def test_apply_suffixes_the_token_and_sets_x_scope_once() -> None:
    scope = ClientScope(parse("<nova: Denver>"), "Berlin")
    out = scope.apply({"X-Auth-Token": "tok!scope!b2xk", "x-scope": "<old>", "Accept": "a"})
    assert out["X-Auth-Token"] == "tok" + scope.token_suffix  # an earlier suffix is replaced
    assert out["X-Scope"] == "<compute: Denver, *: Berlin>"
    assert "x-scope" not in out
    assert out["Accept"] == "a"


def test_non_ascii_site_names_travel_as_ascii_headers() -> None:
    scope = ClientScope(parse('<nova: Zürich & "東京">'), "Berlin")
    assert scope.text == "<compute: Zürich&東京, *: Berlin>"
    assert scope.header == '<compute: "Z\\u00fcrich"&"\\u6771\\u4eac", *: Berlin>'
    assert parse(scope.header) == parse(scope.text)
    scope.header.encode("ascii")


@given(scopes)
def test_header_text_is_ascii_and_means_the_same_scope(scope: Scope) -> None:
    text = header_text(scope)
    assert text.isascii()
    assert parse(text) == scope


def test_settings_from_clouds_yaml() -> None:
    assert setting_from_config(None, "c") is None
    assert setting_from_config("  ", "c") is None
    text = setting_from_config("<nova: Berlin>", "c")
    assert text is not None
    assert (text.text, text.origin) == ("<nova: Berlin>", "clouds.yaml, cloud 'c', key 'scope'")
    # A YAML mapping is the JSON form; openstacksdk has turned '-' into '_' in its keys.
    mapping = setting_from_config({"block_storage": "Denver|Paris", "nova": "Berlin"}, "c")
    assert mapping is not None
    resolved = resolve(mapping, "Berlin")
    assert resolved is not None
    assert resolved.text == "<block-storage: Denver|Paris, compute: Berlin, *: Berlin>"


def test_a_setting_survives_openstacksdks_config_handling() -> None:
    setting = ScopeSetting('{"compute": "Berlin&Denver"}', "--os-scope")
    # openstacksdk formats config strings and deep-copies configs.
    assert setting.format(project_id="p") is setting
    copied = copy.deepcopy({"scope": setting})["scope"]
    assert isinstance(copied, ScopeSetting)
    assert (copied.text, copied.origin) == (setting.text, "--os-scope")
    assert json.dumps({"scope": setting}) == '{"scope": "{\\"compute\\": \\"Berlin&Denver\\"}"}'
    assert setting_from_config(setting, "c") is setting


def test_resolve_config_uses_the_region_as_home() -> None:
    resolved = resolve_config({"scope": "<nova: Denver>", "region_name": "Berlin"}, "c")
    assert resolved is not None
    assert resolved.text == "<compute: Denver, *: Berlin>"
    assert resolve_config({"region_name": "Berlin"}, "c") is None


@pytest.mark.parametrize(
    ("value", "origin"),
    [
        (ScopeSetting("<nova: Berlin&>", "--os-scope"), "--os-scope: bad scope at line 1"),
        ("<nova: Berlin&>", "clouds.yaml, cloud 'c', key 'scope': bad scope at line 1"),
        ({"compute": ["Berlin"]}, "clouds.yaml, cloud 'c', key 'scope': bad scope at line 1"),
    ],
)
def test_a_bad_setting_names_where_it_was_set_with_a_caret(value: object, origin: str) -> None:
    with pytest.raises(ScopeError) as caught:
        resolve(setting_from_config(value, "c"), "Berlin")
    message = str(caught.value)
    assert message.startswith(origin)
    assert message.splitlines()[-1].strip() == "^"
