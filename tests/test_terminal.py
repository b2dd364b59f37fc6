"""The terminal experience, checked in a real terminal: tmux runs lmctl in a pane of fixed size
(120 x 40), the test types the command (send-keys) and reads the screen (capture-pane).

* train: the live dashboard shows step/total, loss, perplexity, tokens/s and ETA while it runs,
  and the final summary after it exits (numbers cross-checked with metrics.jsonl);
* generate: the streamed text appears in the pane and equals the output of the same command
  with stdout not a terminal.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

WIDTH, HEIGHT = 120, 40
EXIT = re.compile(r"^LMCTL-EXIT-(\d+)$", re.M)


class Pane:
    """A detached tmux session on its own server socket (the user's tmux is never touched)."""

    def __init__(self, cwd: Path) -> None:
        self.socket = f"lmctl-test-{uuid.uuid4().hex[:8]}"
        self.cwd = cwd
        self.tmux(
            "new-session", "-d", "-s", "t", "-x", str(WIDTH), "-y", str(HEIGHT), "-c", str(cwd),
            "env PS1='$ ' bash --norc --noprofile",
        )  # fmt: skip
        self.tmux("set-option", "-t", "t", "history-limit", "5000")

    def tmux(self, *args: str) -> str:
        result = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def run(self, command: str, env: dict[str, str]) -> None:
        """Type ``command`` (through a script: the typed line stays short) and press Enter."""
        exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
        script = self.cwd / f"cmd-{uuid.uuid4().hex[:6]}.sh"
        script.write_text(f"{exports}echo LMCTL-BEGIN\n{command}\necho LMCTL-EXIT-$?\n")
        self.tmux("send-keys", "-t", "t", f"bash {script}", "Enter")

    def screen(self, joined: bool = False) -> str:
        """The visible screen plus scrollback; ``joined``: lines wrapped by the terminal rejoined."""
        return self.tmux("capture-pane", "-p", "-t", "t", "-S", "-2000", *(["-J"] if joined else []))

    def wait_exit(self, timeout: float, every: float = 0.1) -> tuple[int, list[str]]:
        """Poll until the command exits; returns its exit code and every screen seen meanwhile."""
        frames: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frames.append(self.screen())
            found = EXIT.search(frames[-1])
            if found:
                return int(found.group(1)), frames
            time.sleep(every)
        raise AssertionError("timed out; last screen:\n" + (frames[-1] if frames else ""))

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=30)


@pytest.fixture
def pane(tmp_path):
    p = Pane(tmp_path)
    yield p
    p.close()


def lmctl_env(tmp_path: Path) -> dict[str, str]:
    return {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "LMCTL_CACHE": str(tmp_path / "cache"),
        "LMCTL_LOAD_PLUGINS": "",  # third-party plugins installed here must not change the output
    }


def after_begin(screen: str) -> str:
    return screen.split("LMCTL-BEGIN\n", 1)[1] if "LMCTL-BEGIN\n" in screen else ""


def test_train_dashboard_in_a_terminal(pane, tmp_path, corpus_file):
    steps = 60
    out = tmp_path / "run"
    command = (
        f"{shlex.quote(sys.executable)} -m lmctl train --model gpt2 --from-scratch --preset tiny "
        f"--train {corpus_file} --validation-split 0.1 --vocab-size 300 --block-size 128 --batch-size 16 "
        f"--max-steps {steps} --log-every 2 --eval-every 20 --eval-batches 4 --save-every 0 "
        f"--precision fp32 --out {out}"
    )
    pane.run(command, lmctl_env(tmp_path))
    code, frames = pane.wait_exit(timeout=240)
    final = pane.screen()
    assert code == 0, final

    # While it runs: a dashboard frame with the step counter below the total and every figure.
    live = [f for f in frames if re.search(rf"step (\d+)/{steps} ", f) and "saved to" not in f]
    running = [f for f in live if int(re.search(rf"step (\d+)/{steps} ", f).group(1)) < steps]
    assert running, "no dashboard frame caught while training ran; last frames:\n" + "\n---\n".join(frames[-3:])
    frame = after_begin(running[-1])
    header = re.search(r"lmctl train  step (\d+)/(\d+)  epoch \S+  elapsed \d+:\d\d  eta (\d+:\d\d|-)", frame)
    assert header, frame
    assert re.search(r"^\s+loss\s+perplexity\s*$", frame, re.M), frame  # the column headings
    train_row = re.search(r"^train\s+(\d+\.\d+)\s+(\d[\d,.]*)\s*$", frame, re.M)
    assert train_row, frame
    assert re.search(r"^tokens/s\s+\d[\d,]*\s", frame, re.M), frame
    assert re.search(r"\d+%", frame)
    # Once a log event has arrived, the ETA is a time, not "-".
    assert any(re.search(r"eta \d+:\d\d", after_begin(f)) for f in running if re.search(r"^train\s+\d", after_begin(f), re.M))
    # The frames' step counters never go backwards, and more than one was seen or the run ended.
    counters = [int(re.search(rf"step (\d+)/{steps} ", f).group(1)) for f in live]
    assert counters == sorted(counters)

    # After exit: the final frame (100%, the full evaluation) and the one-line summary.
    text = after_begin(final)
    assert f"step {steps}/{steps} " in text and "100%" in text
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    final_eval = next(e for e in events if e.get("final"))
    last_log = [e for e in events if "train/loss" in e][-1]
    summary = re.search(rf"saved to {re.escape(str(out))} after {steps} steps; eval loss (\S+), perplexity (\S+)", pane.screen(joined=True))
    assert summary, text
    assert float(summary.group(1)) == pytest.approx(final_eval["eval/loss"], abs=1e-4)
    assert float(summary.group(2).rstrip(",")) == pytest.approx(final_eval["eval/perplexity"], rel=1e-4)
    full_row = re.search(r"^eval \(full\)\s+(\S+)\s+(\S+)\s*$", text, re.M)
    assert full_row, text
    assert float(full_row.group(1)) == pytest.approx(final_eval["eval/loss"], rel=1e-3)
    train_final = re.search(r"^train\s+(\S+)\s+(\S+)\s*$", text, re.M)
    assert float(train_final.group(1)) == pytest.approx(last_log["train/loss"], rel=1e-3)
    assert float(train_final.group(2).replace(",", "")) == pytest.approx(last_log["train/perplexity"], rel=1e-3)
    # No library warnings or tracebacks on the screen.
    assert "Traceback" not in text and "Warning" not in text and "warn" not in text.lower(), text


def test_generate_streams_the_same_text_as_a_pipe(pane, tmp_path, tiny_model_dir):
    model = tiny_model_dir("causal")
    args = ["generate", "--model", str(model), "The for statement", "--seed", "0", "--max-new-tokens", "40"]
    env = lmctl_env(tmp_path)
    piped = subprocess.run(
        [sys.executable, "-m", "lmctl", *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=120
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.strip(), "the tiny model generated nothing"

    pane.run(" ".join(shlex.quote(a) for a in [sys.executable, "-m", "lmctl", *args]), env)
    code, _ = pane.wait_exit(timeout=120)
    assert code == 0, pane.screen()
    shown = after_begin(pane.screen(joined=True))
    stats = re.search(r"^.*: 1 result\(s\), \d+ tokens in .*$", shown, re.M)
    assert stats, shown  # statistics go to stderr, shown in the terminal after the text
    streamed = shown[: stats.start()]
    # The terminal shows exactly the text a pipe receives (tmux drops trailing blanks per line).
    lines = [line.rstrip() for line in piped.stdout.splitlines()]
    assert [line.rstrip() for line in streamed.splitlines()] == lines
    assert "Traceback" not in shown and "warning" not in shown.lower()
