"""A spinner for waits: after ``delay`` seconds of one phase (importing torch, loading a model,
measuring precision), a rich status line on stderr says what lmctl is waiting for.

Only on a terminal (stderr a tty): pipes and logs get nothing, so piped output stays clean.
Workflows report phases through a plain callable (``status(text)``; ``status(None)`` ends the
wait), so they never touch the terminal themselves.
"""

from __future__ import annotations

import sys
import threading
from typing import Any


class Waiting:
    """``with Waiting("importing torch") as wait: ...; wait("loading gpt2"); ...``."""

    def __init__(self, text: str | None = None, *, delay: float = 2.0, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.delay = delay
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.text: str | None = text
        self._status: Any = None
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> Waiting:
        self(self.text)
        return self

    def __exit__(self, *exc: Any) -> None:
        self(None)

    def __call__(self, text: str | None) -> None:
        """Now waiting for ``text`` (None: not waiting any more; the spinner goes)."""
        with self._lock:
            self.text = text
            if not self.enabled:
                return
            if text is None:
                self._cancel()
                self._stop()
            elif self._status is not None:
                self._status.update(f"{text}…")
            elif self._timer is None:
                self._timer = threading.Timer(self.delay, self._show)
                self._timer.daemon = True
                self._timer.start()

    def _show(self) -> None:
        with self._lock:
            self._timer = None
            if self.text is None or self._status is not None:
                return
            from rich.console import Console

            self._status = Console(file=self.stream).status(f"{self.text}…", spinner="dots")
            self._status.start()

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
