"""The operators' dashboard (``/dashboard/``): wiring that composes every context.

It reads each context only through its selectors and acts only through its services (the same
ones the management commands call), never another context's tables. One module per page under
``views/``, one template per page under ``templates/dashboard/``.
"""
