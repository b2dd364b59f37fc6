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


# Set by ``lmctl train --num-processes N`` for its workers: the first failing worker writes its
# exit code and error line there (instead of to stderr), and the launching process reports it once.
ERROR_FILE_ENV = "LMCTL_ERROR_FILE"


def print_error(message: str, code: int = 1) -> None:
    """Print one plain ``error:`` line on stderr (never rich markup: messages carry user text).

    Under a multi-process launch only the first failing process reports (see :func:`claim_error_report`).
    """
    first_line = " ".join(str(message).split("\n")).strip()
    if not claim_error_report(first_line, code):
        return
    sys.stderr.write(f"error: {first_line}\n")
    sys.stderr.flush()


def claim_error_report(line: str, code: int) -> bool:
    """Whether this process should print its error line.

    A single process always does.  The workers of ``--num-processes`` hand their line to the
    launching process through ``$LMCTL_ERROR_FILE`` (the first to fail wins) and print nothing.
    Under an external launch (torchrun, ``accelerate launch``) the first failing worker of the
    machine prints and the others, which usually fail the same way, stay quiet.
    """
    path = os.environ.get(ERROR_FILE_ENV)
    handed_over = bool(path)
    if not path:
        if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1 or "RANK" not in os.environ:
            return True
        import tempfile

        # The workers of one launch on one machine share their parent (the launcher's agent) and port.
        key = f"{os.getppid()}-{os.environ.get('MASTER_PORT', '')}-{os.environ.get('TORCHELASTIC_RUN_ID', '')}"
        path = os.path.join(tempfile.gettempdir(), f"lmctl-error-{key}")
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False  # another worker failed first and reported
    except OSError:
        return True  # no way to coordinate: better twice than never
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(f"{code}\n{line}\n")
    return not handed_over


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
            print_error(message, code)
            raise typer.Exit(code) from None

    return wrapper  # type: ignore[return-value]
