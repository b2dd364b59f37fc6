"""Kept import path: ``lmctl.presets`` is now :mod:`lmctl.core.presets` (re-exported for plugins and scripts)."""

from lmctl.core.presets import *  # noqa: F403
