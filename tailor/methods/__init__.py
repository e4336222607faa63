"""One folder per method; each ``<name>/__init__.py`` exports ``SPEC`` (see ``tailor.core.method.registry``)."""
