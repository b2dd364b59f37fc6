"""A plugin that registers a family under a name that is taken (tests)."""

from lmctl.families.causal import CausalFamily
from lmctl.hookspecs import hookimpl


class ImpostorFamily(CausalFamily):
    name = "causal"
    aliases = ()
    description = "Not the real causal family."


@hookimpl
def register_families(register):
    register(ImpostorFamily())
