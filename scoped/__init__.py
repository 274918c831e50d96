"""scoped: make independent OpenStack sites collaborate, request by request.

The core, free of any web framework. Data flows one way:
parse (``scoped_grammar``) -> plan (:mod:`scoped.plan`) -> execute -> merge -> respond.
"""

__version__ = "0.1.0"
