"""Adding plugins' commands to a Typer app (the ``register_commands`` hook).

The CLI layer calls :func:`add_plugin_commands` on its app; ``lmctl plugins check`` calls it on a
scratch app.  Kept here, below the CLI, so the check does not import the CLI.
"""

from __future__ import annotations

import typer

from lmctl.plugins.registry import get_registry, hook_impls

BUILTIN_COMMANDS = ("prepare", "train", "eval", "generate", "plugins", "export", "runs", "plot", "quickstart")


def _command_name(command: typer.models.CommandInfo) -> str:
    # Typer's own rule for unnamed commands: the function name, lower case, "_" -> "-".
    return command.name or command.callback.__name__.lower().replace("_", "-")


def _group_name(group: typer.models.TyperInfo) -> str:
    return group.name or getattr(group.typer_instance.info, "name", None) or ""


def add_plugin_commands(typer_app: typer.Typer) -> None:
    """Let plugins add subcommands (``register_commands`` hook).

    A command or command group that would replace a built-in (or an earlier plugin's) command is
    dropped with a one-line warning; a plugin whose hook raises loses all its commands.
    """
    registry = get_registry()
    if getattr(typer_app, "_lmctl_plugin_registry", None) is registry:
        return  # already done for this registry (main() called twice in one process)
    typer_app._lmctl_plugin_registry = registry  # type: ignore[attr-defined]
    registry.commands_attributed = True
    for info in list(registry.plugins.values()):
        impl = hook_impls(registry, info.name).get("register_commands")
        if impl is None:
            continue
        existing = (
            set(BUILTIN_COMMANDS)
            | {_command_name(c) for c in typer_app.registered_commands}
            | {_group_name(g) for g in typer_app.registered_groups}
        )
        commands_before = len(typer_app.registered_commands)
        groups_before = len(typer_app.registered_groups)
        try:
            impl.function(**{name: typer_app for name in impl.argnames})
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the CLI
            registry.warn(f"plugin '{info.name}' failed in register_commands(): {type(exc).__name__}: {exc}", info.name)
            del typer_app.registered_commands[commands_before:]
            del typer_app.registered_groups[groups_before:]
            continue
        kept_commands, kept_groups, names = [], [], []
        for entry, name in [(c, _command_name(c)) for c in typer_app.registered_commands[commands_before:]] + [
            (g, _group_name(g)) for g in typer_app.registered_groups[groups_before:]
        ]:
            if name in existing:
                registry.warn(f"plugin '{info.name}' tried to replace the command '{name}'; skipped", info.name)
                continue
            existing.add(name)
            (kept_groups if isinstance(entry, typer.models.TyperInfo) else kept_commands).append(entry)
            names.append(name)
        typer_app.registered_commands[commands_before:] = kept_commands
        typer_app.registered_groups[groups_before:] = kept_groups
        info.commands = names
