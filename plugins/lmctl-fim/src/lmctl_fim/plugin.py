"""The lmctl hooks of lmctl-fim: the ``fim`` family and the ``lmctl infill`` command.

Registered through the ``lmctl`` entry-point group (see pyproject.toml).  Kept light: the family
module imports torch only inside its methods, and the command imports lmctl.workflows.generate when run.
"""

from __future__ import annotations

from typing import Any

from lmctl.hookspecs import hookimpl


@hookimpl
def register_families(register: Any) -> None:
    from lmctl_fim.family import FimFamily

    register(FimFamily())


@hookimpl
def register_commands(app: Any) -> None:
    from lmctl_fim.infill import infill_command

    app.command("infill", help="Fill in the middle: generate the text between --prefix and --suffix with a fim model.")(
        infill_command
    )
