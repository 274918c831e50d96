"""Front ends of scoped: the ASGI gateway app and the WSGI paste filter.

Thin adapters over the core in :mod:`scoped`; they hold no policy.
"""
