"""The ``lmctl`` command line: a thin Typer layer over the library.

Start-up must stay instant (``lmctl --help`` < 0.3 s): nothing here, nor in ``lmctl/commands``,
imports torch, transformers, datasets or accelerate at module level.
"""

from __future__ import annotations

import os

import typer

from lmctl import __version__
from lmctl.commands import eval_cmd, generate_cmd, plugins_cmd, prepare_cmd, train_cmd

app = typer.Typer(
    name="lmctl",
    help="From raw text to a trained, evaluated, sampled language model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

BUILTIN_COMMANDS = ("prepare", "train", "eval", "generate", "plugins")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lmctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """From raw text to a trained, evaluated, sampled language model.

    prepare -> train -> eval -> generate.  Run `lmctl COMMAND --help` for each step.
    """
    if debug:
        os.environ["LMCTL_DEBUG"] = "1"


app.command("prepare", help=prepare_cmd.HELP, no_args_is_help=True)(prepare_cmd.prepare_command)
app.command("train", help=train_cmd.HELP)(train_cmd.train_command)
app.command("eval", help=eval_cmd.HELP, no_args_is_help=True)(eval_cmd.eval_command)
app.command("generate", help=generate_cmd.HELP)(generate_cmd.generate_command)
app.add_typer(plugins_cmd.app, name="plugins")


def add_plugin_commands(typer_app: typer.Typer = app) -> None:
    """Let plugins add subcommands; one that would replace a built-in is dropped with a warning."""
    from lmctl.plugins import get_registry

    registry = get_registry()
    for info in list(registry.plugins.values()):
        plugin = registry.manager.get_plugin(info.name)
        hook = getattr(plugin, "register_commands", None)
        if not callable(hook):
            continue
        before = len(typer_app.registered_commands)
        try:
            hook(app=typer_app)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the CLI
            registry.warn(f"plugin '{info.name}' failed in register_commands(): {type(exc).__name__}: {exc}")
            del typer_app.registered_commands[before:]
            continue
        added = typer_app.registered_commands[before:]
        kept = []
        existing = set(BUILTIN_COMMANDS) | {
            c.name or c.callback.__name__.replace("_", "-") for c in typer_app.registered_commands[:before]
        } | {g.name or "" for g in typer_app.registered_groups}
        for command in added:
            name = command.name or command.callback.__name__.replace("_", "-")
            if name in existing:
                registry.warn(f"plugin '{info.name}' tried to replace the command '{name}'; skipped")
                continue
            existing.add(name)
            kept.append(command)
            info.commands.append(name)
        typer_app.registered_commands[before:] = kept


def main() -> None:
    """Console-script entry point."""
    add_plugin_commands(app)
    app()


if __name__ == "__main__":
    main()
