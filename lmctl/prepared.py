"""Kept import path: ``lmctl.prepared`` is now :mod:`lmctl.core.prepared` (re-exported for plugins and scripts)."""

from lmctl.core.prepared import *  # noqa: F403
