"""lmctl-prefixlm: hooks only (imported on every lmctl start, so nothing heavy here)."""

from lmctl.hookspecs import hookimpl


@hookimpl
def register_families(register):
    from lmctl_prefixlm.family import PrefixLMFamily

    register(PrefixLMFamily())


@hookimpl
def register_data_readers(register):
    from lmctl_prefixlm.notes import read_notes

    register("notes", (".md",), read_notes)  # .md is the built-in text reader's: lmctl warns


@hookimpl
def register_callbacks(register):
    from lmctl_prefixlm.runlog import RunLog

    register(RunLog(), name="prefixlm-log")
