"""Architecture families: the built-in ones are plugins like any other.

Each module here (``causal``, ``masked``, ``permuted``, ``electra``) defines a
:class:`~lmctl.families.base.Family` subclass and registers it through the
:func:`~lmctl.hookspecs.register_families` hook.  Look a family up with
:func:`lmctl.plugins.registry.get_family` or :func:`lmctl.plugins.registry.family_for_model`.
"""
