"""The ``lmctl`` command line: a thin Typer layer over the library.

Start-up must stay instant (``lmctl --help`` < 0.3 s): nothing here, nor in the command modules beside it,
imports torch, transformers, datasets or accelerate at module level.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import typer

from lmctl import __version__
from lmctl.cli import eval as eval_cmd
from lmctl.cli import export as export_cmd
from lmctl.cli import generate as generate_cmd
from lmctl.cli import plugins as plugins_cmd
from lmctl.cli import prepare as prepare_cmd
from lmctl.cli import quickstart as quickstart_cmd
from lmctl.cli import runs as runs_cmd
from lmctl.cli import train as train_cmd
from lmctl.errors import click_error_line, print_error
from lmctl.plugins.commands import BUILTIN_COMMANDS, add_plugin_commands


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
        print_error(suggestion_line(exc) or click_error_line(exc), exc.exit_code)
        raise typer.Exit(exc.exit_code) from None


def suggestion_line(exc: Any) -> str | None:
    """``--modle``: click lists its close matches alphabetically ("--compile, --model, --offline");
    name the closest first (difflib's order), then the others."""
    possibilities = getattr(exc, "possibilities", None)
    if type(exc).__name__ != "NoSuchOption" or not possibilities:  # click's, or Typer's vendored copy
        return None
    best, *others = possibilities  # get_close_matches: best match first
    line = f"no such option: {exc.option_name}; did you mean {best}?"
    if others:
        line += f" (or {', '.join(others)})"
    command = getattr(getattr(exc, "ctx", None), "command_path", None)
    return f"{line} (see '{command} --help')" if command else line


app = typer.Typer(
    cls=OneLineErrorsGroup,
    name="lmctl",
    help="From raw text to a trained, evaluated, sampled language model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)



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


HELP_FLAGS = ("--help", "-h")


def print_help_directly(args: list[str]) -> bool:
    """``lmctl [COMMAND ...] --help``: print the page from the command definitions, without parsing.

    Typer coerces every option value through pydantic, even on the way to a help page, and
    importing pydantic is a third of ``lmctl train --help``'s wall time; a help page needs no
    value.  The page is the one Typer prints (same command objects, same renderer: a test compares
    them).  Anything else (an option before ``--help``, an unknown command, shell completion)
    returns False and takes the normal path.
    """
    if not args or args[-1] not in HELP_FLAGS or any(a.startswith("-") for a in args[:-1]):
        return False
    if any(key.endswith("_COMPLETE") for key in os.environ):  # shell completion: Typer's own path
        return False
    from typer._click.utils import _detect_program_name

    command = typer.main.get_command(app)
    ctx = command.context_class(command, info_name=_detect_program_name(), **command.context_settings)
    for name in args[:-1]:
        sub = command.get_command(ctx, name) if hasattr(command, "get_command") else None
        if sub is None:
            return False
        command = sub
        ctx = command.context_class(command, info_name=name, parent=ctx, **command.context_settings)
    typer.echo(ctx.get_help(), color=ctx.color)
    return True


def main() -> None:
    """Console-script entry point."""
    import sys

    from lmctl.core.threads import configure_cpu_threads

    configure_cpu_threads()  # before anything loads torch: idle OpenMP threads sleep instead of spinning
    args = sys.argv[1:]
    # A built-in command's help page does not depend on plugins: skip loading them (entry points
    # and every family module, about 50 ms).  Plugins can add commands, never a built-in's options.
    if args and args[0] in BUILTIN_COMMANDS and print_help_directly(args):
        return
    add_plugin_commands(app)
    if print_help_directly(args):
        return
    from lmctl.core.device import started_by_a_launcher

    if started_by_a_launcher():
        from lmctl.cli.endings import run_worker_and_exit

        run_worker_and_exit(app)
    app()


if __name__ == "__main__":
    main()
