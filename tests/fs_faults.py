"""Real file-system faults for tests: a full disk (a small tmpfs, mounted when running as root),
a file-size limit (``RLIMIT_FSIZE`` set in a child process: the kernel makes the real writer fail
with EFBIG), and a read-only directory (a read-only mount for root, ``chmod 555`` otherwise).

Nothing here raises an error inside lmctl: every failure comes from the kernel.
"""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import subprocess
from pathlib import Path

MOUNTS: list[Path] = []  # unmounted by tests that use them (see ``unmount_all``)


def is_root() -> bool:
    return os.geteuid() == 0


def mount_tmpfs(path: Path, size: int, *, read_only: bool = False) -> bool:
    """Mount a tmpfs of ``size`` bytes at ``path`` (root only); False when that is not possible."""
    if not is_root():
        return False
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        return False
    MOUNTS.append(path)
    return True


def unmount_all() -> None:
    while MOUNTS:
        path = MOUNTS.pop()
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(directory: Path, leave: int) -> Path:
    """Write a filler file so that only about ``leave`` bytes stay free on ``directory``'s file system."""
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    filler = directory / "filler.bin"
    size = max(0, free - leave)
    with open(filler, "wb") as handle:
        chunk = b"\0" * (1 << 20)
        while size > 0:
            size -= handle.write(chunk[: min(size, len(chunk))])
    return filler


def file_size_limit(limit: int):
    """A ``preexec_fn``: the child may write no file larger than ``limit`` bytes.  SIGXFSZ is
    ignored so that the write fails with EFBIG (as on a full disk) instead of killing the process."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def read_only_dir(path: Path) -> Path | None:
    """An existing, empty directory nobody can write to: a read-only tmpfs for root (root ignores
    permission bits), ``chmod 555`` for anyone else; None when neither works here."""
    if is_root():
        return path if mount_tmpfs(path, 1 << 20, read_only=True) else None
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o555)
    return path


def tree_hashes(*roots: Path) -> dict[str, str]:
    """sha256 of every file under ``roots`` (unreadable files are recorded as such)."""
    hashes: dict[str, str] = {}
    for root in roots:
        if not root.exists():
            continue
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                path = Path(dirpath) / name
                if path.is_symlink():
                    hashes[str(path)] = "link:" + os.readlink(path)
                    continue
                try:
                    if path.stat().st_mode & 0o777 == 0:
                        hashes[str(path)] = "unreadable"
                        continue
                    hashes[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
                except OSError:
                    hashes[str(path)] = "unreadable"
    return hashes


def assert_unchanged(before: dict[str, str], after: dict[str, str], ignore: tuple[str, ...] = ()) -> None:
    """Every file there before is still there with the same contents (new files may appear)."""
    lost = [p for p in before if p not in after and not p.endswith(ignore)]
    changed = [p for p in before if p in after and before[p] != after[p] and not p.endswith(ignore)]
    assert not lost and not changed, f"lost {lost[:5]}, changed {changed[:5]}"
