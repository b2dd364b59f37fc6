"""User-facing errors: one clear line, the right exit code, no traceback unless asked for.

Library code raises :class:`LmctlError` (a failure, exit 1) or :class:`UsageError` (the user asked
for something impossible, exit 2) with a message that names the thing at fault and what to do.
The CLI turns them into a single ``error: ...`` line on stderr.  ``--debug`` or ``LMCTL_DEBUG=1``
re-raises so the traceback is visible.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class LmctlError(Exception):
    """A failure the user can act on (exit code 1)."""

    exit_code = 1


class UsageError(LmctlError):
    """A usage mistake: bad flag values, conflicting options, impossible requests (exit code 2)."""

    exit_code = 2


def debug_enabled() -> bool:
    return os.environ.get("LMCTL_DEBUG", "").lower() not in ("", "0", "false", "no")


def print_error(message: str) -> None:
    """Print one plain ``error:`` line on stderr (never rich markup: messages carry user text)."""
    first_line = " ".join(str(message).split("\n")).strip()
    sys.stderr.write(f"error: {first_line}\n")
    sys.stderr.flush()


def describe_exception(exc: BaseException) -> tuple[str, int]:
    """Translate an exception into (one-line message, exit code)."""
    if isinstance(exc, LmctlError):
        return str(exc), exc.exit_code
    if is_click_error(exc):  # typer.BadParameter and friends raised inside a command
        return click_error_line(exc), exc.exit_code  # type: ignore[attr-defined]
    if isinstance(exc, FileNotFoundError):
        return f"file not found: {exc.filename or exc}", 1
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename or exc}", 1
    if isinstance(exc, OSError) and getattr(exc, "errno", None) == 28:
        return f"no space left on device while writing {exc.filename or ''}: free some disk space and retry".strip(), 1
    if isinstance(exc, MemoryError):
        return "out of memory: lower --batch-size or --block-size", 1
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{name}: {text} (run with --debug for the full traceback)", 1


def is_click_error(exc: BaseException) -> bool:
    """Typer's (vendored click's) usage and parameter errors: they carry an exit code and a message."""
    return callable(getattr(exc, "format_message", None)) and isinstance(getattr(exc, "exit_code", None), int)


def click_error_line(exc: BaseException) -> str:
    """``Missing option '--data'`` -> one line that also says where the help is."""
    message = " ".join(str(exc.format_message()).split())  # type: ignore[attr-defined]
    ctx = getattr(exc, "ctx", None)
    command = getattr(ctx, "command_path", None)
    return f"{message} (see '{command} --help')" if command else message


def friendly_errors(fn: F) -> F:
    """Decorate a Typer command so errors become one line and an exit code.

    Plugin authors can use it on their own commands too.
    """
    import typer

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except KeyboardInterrupt:
            if debug_enabled():
                raise
            print_error("interrupted")
            raise typer.Exit(130) from None
        except Exception as exc:  # noqa: BLE001 - this is the one place that turns errors into lines
            if debug_enabled():
                raise
            message, code = describe_exception(exc)
            print_error(message)
            raise typer.Exit(code) from None

    return wrapper  # type: ignore[return-value]
