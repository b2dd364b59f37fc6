"""Terminal output for long jobs: a live rich dashboard on a terminal, plain lines otherwise.

Only the main process ever creates one.  User-provided strings are passed as ``rich.text.Text``
(never parsed as markup).
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 40) -> str:
    """A one-line chart of the last ``width`` values."""
    values = [v for v in values if math.isfinite(v)][-width:]
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = hi - lo or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, int((v - lo) / span * (len(SPARK) - 1) + 0.5))] for v in values)


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_number(value: Any, digits: int = 4) -> str:
    """``digits`` significant digits; thousands separated (43,043 tokens/s, not 4.304e+04);
    scientific notation only for the very small (learning rates) and the huge."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if abs(value) >= 1e7 or (value and abs(value) < 1e-3):
            return f"{value:.3e}"
        if abs(value) >= 1000:
            decimals = max(0, digits - 1 - int(math.log10(abs(value))))
            return f"{value:,.{decimals}f}"
        return f"{value:.{digits}g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def metric_cell(value: Any) -> str:
    """A loss or perplexity in a column: 4 significant digits, trailing zeros kept (41.20 above
    48.14, not 41.2), so the digits line up from one refresh to the next."""
    if isinstance(value, float) and math.isfinite(value) and 1e-3 <= abs(value) < 1000:
        return f"{value:#.4g}"
    return format_number(value)


def is_terminal(stream: Any = None) -> bool:
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)())


class PlainTrainLog:
    """One line per logging interval: for logs, CI and pipes."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stdout

    def start(self, plan: dict[str, Any]) -> None:
        self.stream.write("plan: " + ", ".join(f"{k} {format_number(v)}" for k, v in plan.items()) + "\n")
        self.stream.flush()

    def update(self, event: dict[str, Any]) -> None:
        if event.get("initial"):
            return  # where the run starts; the plan line said it
        keys = ("train/loss", "train/perplexity", "eval/loss", "eval/perplexity", "lr", "grad_norm", "tokens_per_s")
        parts = [f"step {event['step']}/{event.get('total_steps', '?')}"]
        parts += [f"{k} {format_number(event[k])}" for k in keys if k in event]
        parts += [f"{k} {format_number(v)}" for k, v in event.items() if k.startswith("train/") and k not in keys]
        if "eta_s" in event:
            parts.append(f"eta {format_duration(event['eta_s'])}")
        self.stream.write(" | ".join(parts) + "\n")
        self.stream.flush()

    def progress(self, step: int) -> None:
        pass  # one line per logging interval only

    def message(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        pass


class RichTrainDashboard:
    """Live dashboard: progress, losses, perplexities, learning rate, throughput, ETA, sparkline.

    Rendered by rich's refresh thread (``get_renderable``) four times a second, so elapsed time
    and ETA tick between log events; ``update``/``progress`` only store numbers (cheap enough to
    call every optimizer step).
    """

    def __init__(self, title: str = "lmctl train", console: Any = None) -> None:
        from rich.console import Console

        self.console = console or Console()
        self.title = title
        self.state: dict[str, Any] = {}
        self.losses: list[float] = []
        self.live: Any = None
        self.started = time.perf_counter()
        self.eta_at: float | None = None  # perf_counter() time the run is expected to end
        self.best_step: int | None = None
        self.final_eval = False

    def start(self, plan: dict[str, Any]) -> None:
        from rich.live import Live
        from rich.table import Table
        from rich.text import Text

        table = Table(title="plan", title_justify="left", title_style="bold", show_header=False, box=None)
        for key, value in plan.items():
            table.add_row(Text(str(key), style="bold"), Text(format_number(value)))
        self.console.print(table)
        self.live = Live(console=self.console, refresh_per_second=4, transient=False, get_renderable=self._render)
        self.live.start()

    def _eta(self) -> float | None:
        if self.state.get("step", 0) >= self.state.get("total_steps", 0) > 0:
            return 0.0
        return None if self.eta_at is None else max(0.0, self.eta_at - time.perf_counter())

    def _render(self) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        s = dict(self.state)  # a copy: update() runs in the training thread meanwhile
        step, total = s.get("step", 0), s.get("total_steps", 0) or 1
        header = Text.assemble(
            (f"{self.title}  ", "bold"),
            f"step {step:,}/{total:,}  epoch {format_number(s.get('epoch'), 3)}  ",
            f"elapsed {format_duration(time.perf_counter() - self.started)}  eta {format_duration(self._eta())}",
        )
        bar = Table.grid(padding=(0, 1))
        bar.add_row(ProgressBar(total=total, completed=step, width=60), Text(f"{100 * step / total:3.0f}%"))
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        table.add_column("", justify="left")
        for col in ("loss", "perplexity"):
            table.add_column(col, justify="right", min_width=10)
        table.add_row("train", metric_cell(s.get("train/loss")), metric_cell(s.get("train/perplexity")))
        eval_label = "eval (full)" if self.final_eval else "eval"
        table.add_row(eval_label, metric_cell(s.get("eval/loss")), metric_cell(s.get("eval/perplexity")))
        stats = Table(show_header=False, box=None, pad_edge=False)
        best = metric_cell(s.get("best_eval_loss"))
        if s.get("best_eval_loss") is not None and self.best_step is not None:
            best += f" (step {self.best_step:,})"
        stats.add_row("lr", format_number(s.get("lr")), "grad norm", format_number(s.get("grad_norm")))
        stats.add_row("tokens/s", format_number(s.get("tokens_per_s")), "best eval", best)
        # Family extras (ELECTRA: generator loss, discriminator loss and accuracy), two per row
        # in a table of their own so long names do not widen the columns above.
        extras = [(k, v) for k, v in s.items() if k.startswith("train/") and k not in ("train/loss", "train/perplexity")]
        family_stats = Table(show_header=False, box=None, pad_edge=False)
        for start in range(0, len(extras), 2):
            cells: list[str] = []
            for key, value in extras[start : start + 2]:
                cells += [key.removeprefix("train/").replace("_", " "), format_number(value)]
            family_stats.add_row(*cells)
        spark = Text(f"loss {sparkline(self.losses)}", style="cyan")
        return Group(header, bar, table, stats, *([family_stats] if extras else []), spark)

    def progress(self, step: int) -> None:
        """The optimizer step just finished (called every step; no host sync, no drawing)."""
        self.state["step"] = step

    def update(self, event: dict[str, Any]) -> None:
        if event.get("initial"):
            # Where the run stands before its first step: the total (so the counter never reads
            # "step 3/1"), and after a resume the whole run's best evaluation and elapsed time.
            if event.get("best_eval_step") is not None:
                self.best_step = event["best_eval_step"]
            if event.get("elapsed_s"):
                self.started = time.perf_counter() - float(event["elapsed_s"])
            self.state.update({k: v for k, v in event.items() if k in ("step", "total_steps", "best_eval_loss")})
            return
        if "eval/loss" in event:
            self.final_eval = bool(event.get("final"))
            best = event.get("best_eval_loss")
            if not self.final_eval and best is not None and event["eval/loss"] == best:
                self.best_step = event.get("step")
        if "eta_s" in event:
            self.eta_at = time.perf_counter() + event["eta_s"]
        self.state.update(event)
        if "train/loss" in event:
            self.losses.append(event["train/loss"])

    def message(self, text: str) -> None:
        from rich.text import Text

        self.console.print(Text(text))

    def close(self) -> None:
        if self.live is not None:
            self.live.refresh()
            self.live.stop()
            self.live = None


class NullTrainLog:
    """Non-main processes, and library use with ``quiet=True``."""

    def start(self, plan: dict[str, Any]) -> None: ...
    def update(self, event: dict[str, Any]) -> None: ...
    def progress(self, step: int) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


def make_train_display(main_process: bool, quiet: bool = False) -> Any:
    if not main_process or quiet:
        return NullTrainLog()
    return RichTrainDashboard() if is_terminal() else PlainTrainLog()


# --- prepare --------------------------------------------------------------------------------------


class PrepareProgress:
    """A rich bar (bytes/s, ETA) on a terminal, a plain line every few seconds otherwise."""

    PLAIN_EVERY_S = 5.0

    def __init__(self, mode: str) -> None:
        if mode not in ("auto", "rich", "plain", "none"):
            raise ValueError(f"progress must be auto, rich, plain or none, got {mode!r}")
        if mode == "auto":
            mode = "rich" if sys.stderr.isatty() else "plain"
        self.mode = mode
        self._rich: Any = None
        self._task: Any = None
        self.name, self.total, self.done = "", 0, 0
        self._t0 = self._last = 0.0
        self._started_here = False

    def __enter__(self) -> PrepareProgress:
        if self.mode == "rich":
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._rich = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                # The pass's average rate, as the plain lines give it (rich's own speed column shows
                # "?" for a pass that reads its input in one piece, as a small validation split does).
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self._rich.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._rich is not None:
            self._rich.stop()

    def start(self, name: str, total: int) -> None:
        if self.mode == "rich" and self._rich is None:  # used without `with`: a bar per pass
            self.__enter__()
            self._started_here = True
        self.name, self.total, self.done = name, total, 0
        self._t0 = self._last = time.perf_counter()
        if self._rich is not None:
            from rich.text import Text

            self._task = self._rich.add_task(Text(name).markup, total=total or None, rate="")

    def advance(self, n: int) -> None:
        self.done += n
        if self._rich is not None:
            self._rich.update(self._task, completed=self.done, rate=self._rate())
        elif self.mode == "plain":
            now = time.perf_counter()
            if now - self._last >= self.PLAIN_EVERY_S:
                self._last = now
                self._line(now)

    def finish(self) -> None:
        if self._rich is not None:
            self._rich.update(
                self._task, completed=self.total or self.done, total=self.total or self.done, rate=self._rate()
            )
            if self._started_here:
                self._rich.stop()
                self._rich, self._started_here = None, False
        elif self.mode == "plain":
            elapsed = time.perf_counter() - self._t0
            rate = self.done / elapsed / 1e6 if elapsed > 0 else 0.0
            _eprint(f"prepare: {self.name}: {self.done / 1e6:.1f} MB in {elapsed:.1f} s ({rate:.1f} MB/s)")

    def _rate(self) -> str:
        elapsed = time.perf_counter() - self._t0
        return f"{self.done / elapsed / 1e6:.1f} MB/s" if elapsed > 0 and self.done else ""

    def _line(self, now: float) -> None:
        elapsed = now - self._t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        pct = f" ({self.done / self.total:.0%})" if self.total else ""
        eta = f", ETA {(self.total - self.done) / rate:.0f} s" if rate and self.total else ""
        _eprint(f"prepare: {self.name}: {self.done / 1e6:.1f}/{self.total / 1e6:.1f} MB{pct}, {rate / 1e6:.1f} MB/s{eta}")


def _eprint(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def print_plan(plan: dict[str, Any], *, warning: str | None = None) -> None:
    """``lmctl train --dry-run``: the plan as ``key: value`` lines on stdout, the warning on stderr."""
    width = max(len(str(key)) for key in plan)
    for key, value in plan.items():
        sys.stdout.write(f"{str(key) + ':':<{width + 1}} {format_number(value)}\n")
    sys.stdout.flush()
    if warning:
        _eprint(warning)
