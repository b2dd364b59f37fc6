"""Kept import path: ``lmctl.generate`` is now :mod:`lmctl.workflows.generate` (re-exported for plugins and scripts)."""

from lmctl.workflows.generate import *  # noqa: F403
