"""A plugin whose hook takes an argument the spec does not have (tests)."""

from lmctl.hookspecs import hookimpl


@hookimpl
def register_families(registr):  # the spec says `register`
    raise AssertionError("never called: the plugin is refused at load time")
