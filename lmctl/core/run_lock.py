"""One writer per run directory: ``OUT/.lmctl.lock``.

A run (``lmctl train``, ``lmctl quickstart``) owns its ``--out`` for its whole lifetime: two
processes writing checkpoints, ``run.json`` and ``metrics.jsonl`` into one directory would leave
a mix of two runs that neither can resume.  The main process (global rank 0 under a multi-process
launch; the launching process under ``--num-processes``, on machine 0 under ``--num-machines``)
creates the lock file atomically (``O_CREAT | O_EXCL``) with its pid, host and start time, and
removes it when the run ends, whether it finishes, fails or is stopped by a signal that lmctl
handles.  The other machines of a ``--num-machines`` run take no lock: their ``--out`` holds no
run state (DDP: it stays empty, even after a SIGKILL), and machine 0's lock covers the run.

A process killed outright (SIGKILL, power loss) leaves its lock behind.  Such a lock is *stale*
when it names this host and a pid that no longer runs: the next run (``--resume auto``) takes it
over and says so in one line.  A lock of a live process, or of another host (whose processes we
cannot see), refuses the second writer with one line naming the holder and how to clear it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lmctl.core.disk import unwritable_directory_error
from lmctl.errors import LmctlError

LOCK_NAME = ".lmctl.lock"
# Set by the process that holds a lock for the processes it launches (``--num-processes``): they
# write into the same run and must not ask for the lock again.
HELD_ENV = "LMCTL_RUN_LOCK_HELD"

# A lock file without a readable owner line is being written (O_EXCL creates it empty) for this
# long; after that it is the remains of a crash and counts as stale.
TORN_GRACE_S = 5.0

_held: dict[Path, int] = {}  # lock path -> nesting depth in this process (quickstart -> train)


class RunLockedError(LmctlError):
    """Another live process (or another host) holds the run directory."""


def lock_path(out: str | os.PathLike) -> Path:
    return Path(out) / LOCK_NAME


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    except OSError:
        return False
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """A process that has ended but is not reaped yet (its parent died too and the container's
    init does not reap): it writes nothing any more.  Linux only; elsewhere False."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    fields = stat[stat.rfind(")") + 1 :].split()  # after "pid (command name)"
    return bool(fields) and fields[0] == "Z"


def _read(path: Path) -> dict[str, Any] | None:
    """The lock's owner, or None when the file is gone or unreadable (a torn write counts as stale)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def describe_owner(owner: dict[str, Any]) -> str:
    started = owner.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return f"{owner.get('command') or 'lmctl'}, pid {owner.get('pid', '?')} on host {owner.get('host', '?')}, started {when}"


_created: set[Path] = set()  # lock paths whose --out directory this process created


def acquire(out: str | os.PathLike, *, command: str = "lmctl", note: Callable[[str], None] | None = None) -> Path:
    """Create ``OUT/.lmctl.lock`` for this process (creating ``OUT``); see the module docstring.

    Re-entrant within one process.  Raises :class:`RunLockedError` when another run holds it,
    :class:`UsageError` when ``OUT`` is a file, read-only or not writable.
    """
    out = Path(out).expanduser()
    path = lock_path(out)
    key = path.absolute()
    if key in _held:
        _held[key] += 1
        return path
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise unwritable_directory_error(out, exc) from None
    if created:
        _created.add(key)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "command": command}
    deadline = time.monotonic() + TORN_GRACE_S + 5
    while time.monotonic() < deadline:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _read(path)
            if owner is None:
                continue  # released between our two looks: try again
            if not owner and _age(path) < TORN_GRACE_S:
                time.sleep(0.05)  # just created, its owner line not written yet: look again
                continue
            if not _stale(owner):
                raise RunLockedError(
                    f"{out} is in use by another run ({describe_owner(owner)}); wait for it to end or use "
                    f"another --out (if that run is gone, delete {path})"
                ) from None
            # Take the stale lock over only if it is still the one we judged (another process may
            # have taken it over meanwhile); the small window left is closed by O_EXCL below.
            if _read(path) == owner:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                if note is not None:
                    note(f"note: {out} was locked by a run that is gone ({describe_owner(owner)}); taking it over")
            continue
        except OSError as exc:
            raise unwritable_directory_error(out, exc) from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(json.dumps(me) + "\n")
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise unwritable_directory_error(out, exc) from None
        _held[key] = 1
        return path
    raise RunLockedError(f"could not lock {out}: other processes keep taking it; use another --out")


def refuse_if_held_elsewhere(out: str | os.PathLike, *, machine_rank: int = 0) -> None:
    """Refuse at once (before slow work) when another live run holds ``out``'s lock; the lock is
    taken for real by :func:`acquire` later, which settles any race.  ``machine_rank``: this
    machine's ``--machine-rank`` (only machine 0 takes the lock, see :func:`should_hold`)."""
    if not should_hold(machine_rank):
        return  # a launched worker, a rank other than 0 or a machine other than 0: machine 0's main process holds the lock
    out = Path(out).expanduser()
    path = lock_path(out)
    if path.absolute() in _held:
        return
    owner = _read(path)
    if owner and not _stale(owner) and owner.get("pid") != os.getpid():
        raise RunLockedError(
            f"{out} is in use by another run ({describe_owner(owner)}); wait for it to end or use "
            f"another --out (if that run is gone, delete {path})"
        )


def _stale(owner: dict[str, Any]) -> bool:
    """A lock that no running process holds: torn, or this host's and its pid is gone (or is us,
    reused after a restart: this process never took it)."""
    pid = owner.get("pid")
    if not isinstance(pid, int) or not owner.get("host"):
        return True
    if owner["host"] != socket.gethostname():
        return False  # another machine: its processes cannot be checked from here
    return pid == os.getpid() or not _pid_alive(pid)


def release(out: str | os.PathLike) -> None:
    """Remove this process's lock (when the outermost holder lets go); never someone else's."""
    path = lock_path(Path(out).expanduser())
    key = path.absolute()
    depth = _held.get(key, 0)
    if depth > 1:
        _held[key] = depth - 1
        return
    _held.pop(key, None)
    if depth and (_read(path) or {}).get("pid") == os.getpid():
        with contextlib.suppress(OSError):
            os.unlink(path)
    if key in _created:
        # A run refused before it wrote anything leaves no empty --out behind.
        _created.discard(key)
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # only when empty


@contextlib.contextmanager
def run_lock(
    out: str | os.PathLike,
    *,
    command: str = "lmctl",
    note: Callable[[str], None] | None = None,
    machine_rank: int = 0,
) -> Iterator[None]:
    """Hold the run lock of ``out`` for the ``with`` block, unless this process need not hold it:
    a non-zero rank of a multi-process launch, the launching process of a machine other than 0
    (``machine_rank``, its ``--machine-rank``), or a process launched by the lock's holder."""
    if not should_hold(machine_rank):
        yield
        return
    acquire(out, command=command, note=note)
    previous = _exit_on_sigterm()
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        release(out)


def _exit_on_sigterm() -> Any:
    """SIGTERM by default ends the process at once, leaving the lock behind; while the lock is
    held it unwinds instead (``finally`` blocks run: partial outputs removed, lock released).  The
    trainer installs its own handler for the loop (save a checkpoint, then stop)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return None

    def unwind(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, unwind)


def should_hold(machine_rank: int = 0) -> bool:
    """Only global rank 0 holds the lock, and nobody whose launcher already holds it.

    Under ``--num-machines`` the launching process of each machine runs no rank itself: machine 0's
    holds the lock for the run, and the others (``machine_rank`` > 0) hold none, so a machine's
    ``--out`` that receives no files stays empty (a lock left there by a SIGKILL would not)."""
    if os.environ.get(HELD_ENV) or machine_rank != 0:
        return False
    return int(os.environ.get("RANK", "0") or 0) == 0
