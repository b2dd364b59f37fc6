"""Kept import path: ``lmctl.plugin_check`` is now :mod:`lmctl.plugins.check` (re-exported for plugins and scripts)."""

from lmctl.plugins.check import *  # noqa: F403
