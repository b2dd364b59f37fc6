"""Kept import path: ``lmctl.prepare`` is now :mod:`lmctl.workflows.prepare` (re-exported for plugins and scripts)."""

from lmctl.workflows.prepare import *  # noqa: F403
