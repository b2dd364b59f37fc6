"""Disk space: recognising a full disk whatever the writer, and sizing checkpoints.

Every writer reports a full disk differently: Python's ``open``/``json``/``shutil`` raise
``OSError(ENOSPC)``; safetensors wraps it in ``SafetensorError("... No space left on device
(os error 28)")``; numpy's ``tofile`` raises ``OSError("N requested and M written")`` with no
errno; ``torch.save`` a ``RuntimeError("... unexpected pos ...")``.  A file-size limit
(``RLIMIT_FSIZE``, EFBIG) and a quota (EDQUOT) are the same situation for the user.
:func:`is_out_of_space` recognises them all, checking the free space itself where the message
says nothing.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path

from lmctl.errors import LmctlError, UsageError

SPACE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
# "(os error 28)" (Rust, as safetensors and tokenizers report it) and the strerror texts.
_SPACE_CODES = "|".join(str(n) for n in sorted(SPACE_ERRNOS))
SPACE_TEXT = re.compile(
    rf"os error ({_SPACE_CODES})\b|No space left on device|File too large|Disk quota exceeded"
    r"|requested and \d+ written|unexpected pos"
)


def is_out_of_space(exc: BaseException, where: str | os.PathLike | None = None, *, needed: int = 0) -> bool:
    """Whether ``exc`` (from any writer) means the disk, a quota or a file-size limit ran out.

    With ``where`` and ``needed``, an error whose text says nothing also counts when less than
    ``needed`` bytes are free there (a short write that a library reported in its own words).
    """
    for error in _chain(exc):
        if isinstance(error, OSError) and error.errno in SPACE_ERRNOS:
            return True
        if SPACE_TEXT.search(str(error)):
            return True
    if where is not None and needed > 0:
        free = free_bytes(where)
        return free is not None and free < needed
    return False


def space_reason(exc: BaseException) -> str:
    """What ran out, in words: a file-size limit (``ulimit -f``), a quota, or the disk."""
    text = " ".join(str(e) for e in _chain(exc))
    codes = {getattr(e, "errno", None) for e in _chain(exc)}
    if errno.EFBIG in codes or "os error 27" in text or "File too large" in text:
        return "the file-size limit (ulimit -f) was reached"
    if errno.EDQUOT in codes or "os error 122" in text or "quota" in text.lower():
        return "the disk quota is exceeded"
    if errno.ENOSPC not in codes and "os error 28" not in text and "No space left" not in text and _file_size_limited():
        return "the file-size limit (ulimit -f) was reached, or the disk is full"  # a short write, no errno
    return "no space left on device"


def _file_size_limited() -> bool:
    import resource

    return resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return seen


def free_bytes(path: str | os.PathLike) -> int | None:
    """Free bytes on the file system of ``path`` (its nearest existing parent); None if unknown."""
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def tree_bytes(path: str | os.PathLike) -> int:
    """Total size of the files under ``path`` (0 when it is gone)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def checkpoint_bytes_estimate(parameters: int, weight_bytes: int = 4) -> int:
    """Bytes of one checkpoint of a model with ``parameters`` parameters trained with AdamW: the
    weights in their dtype, two fp32 moments, and ~256 KB for tokenizer, config and RNG state."""
    return parameters * (weight_bytes + 8) + (256 << 10)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


class OutOfSpaceError(LmctlError):
    """A write failed because the disk (or a quota, or a file-size limit) ran out."""


def unwritable_directory_error(out: Path, exc: OSError, flag: str = "--out") -> LmctlError:
    """A directory lmctl must write cannot be created or written: one line that names it and says
    what to do (a file in the way, a read-only file system, no permission, no space)."""
    code = exc.errno
    if code in (errno.EEXIST, errno.ENOTDIR) or (out.exists() and not out.is_dir()):
        return UsageError(f"{flag} {out} is a file, or has a file in its path; choose a directory path")
    if code == errno.EROFS:
        return UsageError(f"{flag} {out} is on a read-only file system; choose a directory you can write to")
    if code in (errno.EACCES, errno.EPERM):
        return UsageError(f"{flag} {out} is not writable (permission denied); choose a directory you can write to")
    if code == errno.ELOOP:
        return UsageError(f"{flag} {out}: too many levels of symbolic links (a symlink loop); choose another path")
    if code in SPACE_ERRNOS:
        return OutOfSpaceError(f"{flag} {out}: no space left on device; free some disk space and retry")
    return LmctlError(f"{flag} {out} cannot be written ({exc.strerror or exc}); choose another directory")
