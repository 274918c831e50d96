"""Service keys: whatever the user wrote, normalised to the official service type.

The service-types-authority data shipped in ``os-service-types`` is the only
source (no hand-written table): official types (``compute``), aliases
(``volumev3`` -> ``block-storage``) and project names (``nova`` -> ``compute``).
"""

from __future__ import annotations

from functools import cache, lru_cache

import os_service_types


@cache
def _service_types() -> os_service_types.ServiceTypes:
    # Uses the data bundled with the library; no network access.
    return os_service_types.ServiceTypes()


@lru_cache(maxsize=512)
def official_service_type(name: str) -> str | None:
    """The official service type ``name`` stands for, or None if it names none."""
    st = _service_types()
    low = name.lower()
    found: str | None = st.get_service_type(low)
    if found is None:
        data = st.get_service_data_for_project(low)
        if data:
            found = data["service_type"]
    return found


@cache
def known_service_names() -> tuple[str, ...]:
    """Every accepted key: official types, aliases and project names."""
    st = _service_types()
    names: set[str] = set()
    for service in st.services:
        names.add(service["service_type"])
        names.update(service.get("aliases", ()))
        if service.get("project"):
            names.add(service["project"])
    return tuple(sorted(names))
