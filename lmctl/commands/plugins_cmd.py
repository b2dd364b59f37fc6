"""``lmctl plugins``: list, install, uninstall and check plugins."""

from __future__ import annotations

import json

import typer

from lmctl.errors import friendly_errors

app = typer.Typer(help="List, install, uninstall and check lmctl plugins.", no_args_is_help=True)


@app.command("list")
@friendly_errors
def list_command(
    show_all: bool = typer.Option(False, "--all", help="Include the built-in plugins."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show installed plugins with their version, hooks and the families they provide.

    The four built-in families are plugins too: they are always shown, other built-ins with --all.
    """
    from lmctl.cli import app as root_app
    from lmctl.plugins import get_registry

    registry = get_registry()
    _ = root_app  # plugin commands are attributed when the CLI registered them
    rows = [
        info
        for info in registry.plugins.values()
        if show_all or not info.builtin or info.families
    ]
    if as_json:
        typer.echo(json.dumps([info.as_dict() for info in rows], indent=2))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title="lmctl plugins")
    for column in ("plugin", "version", "builtin", "hooks", "provides"):
        table.add_column(column)
    for info in rows:
        provides = []
        if info.families:
            provides.append("families: " + ", ".join(info.families))
        if info.tokenizer_trainers:
            provides.append("tokenizers: " + ", ".join(info.tokenizer_trainers))
        if info.data_readers:
            provides.append("readers: " + ", ".join(info.data_readers))
        if info.commands:
            provides.append("commands: " + ", ".join(info.commands))
        if info.callbacks:
            provides.append(f"callbacks: {info.callbacks}")
        table.add_row(
            Text(info.name),
            Text(info.version or "-"),
            "yes" if info.builtin else "no",
            Text(", ".join(info.hooks)),
            Text("; ".join(provides)),
        )
    Console().print(table)
