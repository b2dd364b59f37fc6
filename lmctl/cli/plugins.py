"""``lmctl plugins``: list, install, uninstall and check plugins.

Thin over :mod:`lmctl.plugins.registry` (the registry), :mod:`lmctl.plugins.install` and
:mod:`lmctl.plugins.check`; nothing heavy is imported at module level.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

from lmctl.errors import friendly_errors
from lmctl.plugins.registry import PluginInfo, normalize_name

app = typer.Typer(help="List, install, uninstall and check lmctl plugins.", no_args_is_help=True)


@app.command("list")
@friendly_errors
def list_command(
    show_all: bool = typer.Option(False, "--all", help="Include the built-in tokenizer trainers and data readers."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show plugins with their version, hooks and what they provide.

    The built-in families are plugins too and are always shown; the other built-ins with --all.
    Plugins that failed to load are reported as warnings on stderr.
    """
    from lmctl.plugins.check import ensure_commands_attributed
    from lmctl.plugins.registry import get_registry

    registry = get_registry()
    ensure_commands_attributed(registry)
    rows = [info for info in registry.plugins.values() if show_all or not info.builtin or info.families]
    if as_json:
        listing = []
        for info in rows:
            entry = info.as_dict()
            entry["family_options"] = {name: registry.families[name].describe_options() for name in info.families}
            listing.append(entry)
        typer.echo(json.dumps(listing, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title="lmctl plugins", show_lines=True)
    # Names never fold (they are typed back into commands); the "provides" column wraps.
    table.add_column("plugin", no_wrap=True)
    table.add_column("hooks", no_wrap=True)
    table.add_column("provides", overflow="fold", min_width=16)
    for info in rows:
        origin = [info.version or "no version"]
        if info.builtin:
            origin.append("built-in")
        elif info.distribution and normalize_name(info.distribution) != normalize_name(info.name):
            origin.append(f"from {info.distribution}")
        name = Text(info.name)
        name.append("\n" + ", ".join(origin), style="dim")
        provides = provides_lines(info) + family_option_lines(registry, info)
        table.add_row(name, Text("\n".join(info.hooks)), Text("\n".join(provides)))
    Console().print(table)


def provides_lines(info: PluginInfo) -> list[str]:
    """What a plugin registered, one kind per line."""
    lines = []
    if info.families:
        lines.append("families: " + ", ".join(info.families))
    if info.tokenizer_trainers:
        lines.append("tokenizers: " + ", ".join(info.tokenizer_trainers))
    if info.data_readers:
        lines.append(
            "readers: "
            + ", ".join(
                f"{name} ({' '.join(info.reader_extensions[name])})" if info.reader_extensions.get(name) else name
                for name in info.data_readers
            )
        )
    if info.commands:
        lines.append("commands: " + ", ".join(info.commands))
    if info.callbacks:
        lines.append("callbacks: " + ", ".join(info.callbacks))
    return lines


def family_option_lines(registry: Any, info: PluginInfo) -> list[str]:
    """Each family's options with their defaults (``--family-option KEY=VALUE``)."""
    lines = []
    for name in info.families:
        options = registry.families[name].describe_options()
        if options:
            lines.append(f"{name} options: " + ", ".join(f"{o['name']}={_show(o['default'])}" for o in options))
    return lines


@app.command("install")
@friendly_errors
def install_command(
    packages: list[str] = typer.Argument(None, help="Packages to install: PyPI names, local paths, URLs, wheels."),
    editable: list[str] = typer.Option(
        [], "--editable", "-e", metavar="PATH", help="Install the project at PATH in editable mode (repeatable)."
    ),
    upgrade: bool = typer.Option(False, "--upgrade", "-U", help="Upgrade the packages to their newest version."),
    force_reinstall: bool = typer.Option(False, "--force-reinstall", help="Reinstall even if already up to date."),
    no_deps: bool = typer.Option(False, "--no-deps", help="Do not install the packages' dependencies."),
) -> None:
    """Install plugins into lmctl's own Python environment (with pip, or uv under uv).

    Examples: `lmctl plugins install lmctl-fim`, `lmctl plugins install -e ./plugins/lmctl-fim`.
    pip's own settings (pip.conf, PIP_INDEX_URL, ...) apply; LMCTL_INSTALLER=pip|uv picks the installer.
    """
    from lmctl.plugins.install import install_plugins

    result = install_plugins(
        packages or [], editable=editable, upgrade=upgrade, force_reinstall=force_reinstall, no_deps=no_deps
    )
    if result.unchanged:
        typer.echo("no lmctl plugin was added or updated (the packages provide no 'lmctl' entry points, or were up to date)")
        return
    for row in result.plugins:
        info = PluginInfo(**{k: row.get(k) for k in ("name", "builtin", "distribution", "version")})
        for key in ("families", "tokenizer_trainers", "data_readers", "commands"):
            setattr(info, key, row.get(key) or [])
        callbacks = row.get("callbacks") or []
        info.callbacks = callbacks if isinstance(callbacks, list) else []
        info.reader_extensions = row.get("reader_extensions") or {}
        provides = "; ".join(provides_lines(info)) or "nothing yet"
        typer.echo(f"installed plugin '{info.name}' ({info.distribution} {info.version}): {provides}")
    for problem in result.problems:
        sys.stderr.write(f"warning: {problem}\n")
    if result.failed:
        raise typer.Exit(1)


@app.command("uninstall")
@friendly_errors
def uninstall_command(
    names: list[str] = typer.Argument(..., help="Plugin or distribution names (as `lmctl plugins list` shows them)."),
) -> None:
    """Uninstall plugins from lmctl's own Python environment.

    Only distributions that provide lmctl plugins are removed; lmctl itself is refused.
    """
    from lmctl.plugins.install import uninstall_plugins

    for target in uninstall_plugins(names):
        typer.echo(f"uninstalled {target.distribution} (plugins: {', '.join(target.plugins)})")


@app.command("check")
@friendly_errors
def check_command(
    names: list[str] = typer.Argument(None, help="Plugins to check (default: every installed plugin)."),
    include_builtin: bool = typer.Option(False, "--all", help="Check the built-in plugins too."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Validate plugins: loading, hook signatures, start-up cost, and a tiny model per family.

    Each family trains its tokenizer on a little text, builds a tiny model from scratch, collates
    a batch, computes the loss, saves and reloads.  Exits 1 when there are problems (one line each).
    """
    from lmctl.plugins.check import check_plugins

    def progress(message: str) -> None:
        if not as_json:
            sys.stderr.write(f"{message}...\n")

    result = check_plugins(names or [], include_builtin=include_builtin, progress=progress)
    if as_json:
        typer.echo(json.dumps({"ok": result.ok, "checked": result.checked, "problems": result.problems}, indent=2))
    else:
        if not result.checked:
            typer.echo("no installed plugins to check (use --all to check the built-ins)")
        for line in result.passed:
            typer.echo(line)
        for line in result.problems:
            typer.echo(f"problem: {line}")
        if result.checked:
            typer.echo(f"{len(result.checked)} plugin(s) checked, {len(result.problems)} problem(s)")
    if not result.ok:
        raise typer.Exit(1)


def _show(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else repr(value)
