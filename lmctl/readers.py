"""Kept import path: ``lmctl.readers`` is now :mod:`lmctl.data.readers` (re-exported for plugins and scripts)."""

from lmctl.data.readers import *  # noqa: F403
