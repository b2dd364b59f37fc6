"""lmctl-fim: a fill-in-the-middle (FIM) family and an ``lmctl infill`` command for lmctl.

The plugin module (:mod:`lmctl_fim.plugin`) is what the ``lmctl`` entry point names; it imports
nothing heavy, so ``lmctl --help`` stays instant with the plugin installed.
"""

__version__ = "0.1.0"
