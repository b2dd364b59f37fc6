"""Files: lmctl's cache location and atomic writes.

Every file lmctl writes for a user is written beside its destination under a hidden temporary
name and renamed into place, so a crash, a full disk or a second reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def cache_root() -> Path:
    """lmctl's cache directory: ``$LMCTL_CACHE``, else ``$XDG_CACHE_HOME/lmctl``, else ``~/.cache/lmctl``."""
    if os.environ.get("LMCTL_CACHE"):
        return Path(os.environ["LMCTL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lmctl"


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same directory, then rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # only left when the write or the rename failed
    return target


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """:func:`write_bytes_atomic` for UTF-8 text."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, data: Any, *, indent: int | None = 2) -> Path:
    """:func:`write_bytes_atomic` for JSON (objects it cannot encode are written with ``str``)."""
    return write_text_atomic(path, json.dumps(data, indent=indent, sort_keys=False, default=str) + "\n")
