"""A scope as the user set it, and where: ``--os-scope``, ``OS_SCOPE`` or clouds.yaml.

Kept apart from :mod:`scoped_osc.scope` so that the OSC plugin module, which
``openstack`` imports on every run (even for ``--help``), does not import the
grammar.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

ENV_VAR = "OS_SCOPE"
CLI_OPTION = "--os-scope"
CONFIG_KEY = "scope"
"""The key of a cloud in clouds.yaml (and of openstacksdk's merged config)."""


class ScopeSetting(str):
    """A scope as the user gave it (the text itself), and where (:attr:`origin`):
    errors must say which setting is wrong.

    It travels in openstacksdk's cloud config (``--os-scope`` becomes the
    config key ``scope``), so it is a ``str``: ``openstack configuration show``
    prints it, in any format. openstacksdk also runs ``value.format(**config)``
    on every config string, to expand references such as ``{project_id}``; a
    scope is not such a template, and the braces of its brace and JSON forms
    would not survive, so :meth:`format` leaves it as it is.
    """

    origin: str

    def __new__(cls, text: str, origin: str) -> ScopeSetting:
        setting = super().__new__(cls, text)
        setting.origin = origin
        return setting

    @property
    def text(self) -> str:
        return str.__str__(self)

    def format(self, *args: object, **kwargs: object) -> str:
        return self

    def __reduce__(self) -> tuple[type[ScopeSetting], tuple[str, str]]:
        # copy.deepcopy (openstacksdk copies configs) must keep the origin.
        return (ScopeSetting, (self.text, self.origin))

    def __repr__(self) -> str:
        return f"ScopeSetting({self.text!r}, origin={self.origin!r})"


def setting_from_config(value: object, cloud: str | None = None) -> ScopeSetting | None:
    """The scope setting held in a cloud's config under ``scope``, or None.

    Besides a :class:`ScopeSetting` (put there by ``--os-scope``/``OS_SCOPE``),
    a clouds.yaml may hold text (the angle form: openstacksdk formats config
    strings, so braces there are not usable) or a mapping of service to site
    expression, read as the JSON form. Anything else is turned into text and
    left to the grammar to reject, so every bad setting gets the same caret
    message.
    """
    if value is None or isinstance(value, ScopeSetting):
        return value
    origin = f"clouds.yaml, cloud {cloud!r}, key {CONFIG_KEY!r}" if cloud else "cloud config"
    if isinstance(value, Mapping):
        text = json.dumps({str(k): v for k, v in value.items()}, ensure_ascii=False, default=str)
    else:
        text = str(value).strip()
    return ScopeSetting(text, origin) if text else None
