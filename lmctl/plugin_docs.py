"""Kept import path: ``lmctl.plugin_docs`` is now :mod:`lmctl.plugins.docs` (``python -m lmctl.plugin_docs`` works too)."""

from lmctl.plugins.docs import *  # noqa: F403
from lmctl.plugins.docs import main

if __name__ == "__main__":
    raise SystemExit(main())
