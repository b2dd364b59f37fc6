"""The ``lmctl`` command line: a thin Typer layer over the library.

Start-up must stay instant (``lmctl --help`` < 0.3 s): nothing here, nor in ``lmctl/commands``,
imports torch, transformers, datasets or accelerate at module level.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import typer

from lmctl import __version__
from lmctl.commands import (
    eval_cmd,
    export_cmd,
    generate_cmd,
    plugins_cmd,
    prepare_cmd,
    quickstart_cmd,
    runs_cmd,
    train_cmd,
)
from lmctl.errors import click_error_line, print_error


class OneLineErrorsGroup(typer.core.TyperGroup):
    """The root command group: usage errors found while parsing the command line (an unknown
    option, a value that is not a number, a missing option) are one ``error:`` line with exit
    code 2, like lmctl's own errors, instead of Typer's framed panel."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with one_line_usage_errors():  # `lmctl --bogus`
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        with one_line_usage_errors():  # `lmctl train --bogus`, and typer.BadParameter in a command
            return super().invoke(ctx)


@contextlib.contextmanager
def one_line_usage_errors() -> Iterator[None]:
    try:
        yield
    except typer.TyperException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare `lmctl eval`: Typer shows the help
            raise
        print_error(click_error_line(exc))
        raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    cls=OneLineErrorsGroup,
    name="lmctl",
    help="From raw text to a trained, evaluated, sampled language model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

BUILTIN_COMMANDS = ("prepare", "train", "eval", "generate", "plugins", "export", "runs", "plot", "quickstart")


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
app.command("quickstart", help=quickstart_cmd.HELP)(quickstart_cmd.quickstart_command)
app.command("export", help=export_cmd.HELP, no_args_is_help=True)(export_cmd.export_command)
app.command("runs", help=runs_cmd.RUNS_HELP)(runs_cmd.runs_command)
app.command("plot", help=runs_cmd.PLOT_HELP, no_args_is_help=True)(runs_cmd.plot_command)
app.add_typer(plugins_cmd.app, name="plugins")


def _command_name(command: typer.models.CommandInfo) -> str:
    # Typer's own rule for unnamed commands: the function name, lower case, "_" -> "-".
    return command.name or command.callback.__name__.lower().replace("_", "-")


def _group_name(group: typer.models.TyperInfo) -> str:
    return group.name or getattr(group.typer_instance.info, "name", None) or ""


def add_plugin_commands(typer_app: typer.Typer = app) -> None:
    """Let plugins add subcommands (``register_commands`` hook).

    A command or command group that would replace a built-in (or an earlier plugin's) command is
    dropped with a one-line warning; a plugin whose hook raises loses all its commands.
    """
    from lmctl.plugins import get_registry, hook_impls

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


def main() -> None:
    """Console-script entry point."""
    add_plugin_commands(app)
    app()


if __name__ == "__main__":
    main()
