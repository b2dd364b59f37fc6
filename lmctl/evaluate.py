"""Kept import path: ``lmctl.evaluate`` is now :mod:`lmctl.workflows.evaluate` (re-exported for plugins and scripts)."""

from lmctl.workflows.evaluate import *  # noqa: F403
