"""Shell completion (Typer's) suggests commands and options, and never imports torch: it runs on
every Tab press, so it must be as fast as `lmctl --help`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

HEAVY = ("torch", "transformers", "datasets", "accelerate")


def lmctl_script() -> str | None:
    """The installed `lmctl` console script of this interpreter (what a shell runs)."""
    return shutil.which("lmctl", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))


def complete(env: dict[str, str]) -> tuple[list[str], set[str]]:
    """Run the completion entry point; returns the suggestions and the heavy modules imported."""
    script = lmctl_script()
    # -X importtime lists every module the process imports (on stderr).
    if script is not None:
        command = [sys.executable, "-X", "importtime", script]
    else:  # not installed as a script: the same entry point, named as the script names itself
        command = [sys.executable, "-X", "importtime", "-c", "import sys; sys.argv[0] = 'lmctl'; from lmctl.cli.app import main; main()"]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env}, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {m.group(1) for m in re.finditer(r"^import time:.*\|\s*(\S+)\s*$", result.stderr, re.M)}
    assert "typer" in imported  # the import log was read
    heavy = {name for name in imported if name.split(".")[0] in HEAVY}
    return result.stdout.split(), heavy


def test_bash_completion_suggests_the_command_without_importing_torch():
    words, heavy = complete({"_LMCTL_COMPLETE": "complete_bash", "COMP_WORDS": "lmctl tr", "COMP_CWORD": "1"})
    assert words == ["train"]
    assert heavy == set()


def test_completion_of_options_and_subcommands():
    words, heavy = complete({"_LMCTL_COMPLETE": "complete_bash", "COMP_WORDS": "lmctl train --max", "COMP_CWORD": "2"})
    assert set(words) == {"--max-steps", "--max-span-length"}
    words, _ = complete({"_LMCTL_COMPLETE": "complete_bash", "COMP_WORDS": "lmctl plugins l", "COMP_CWORD": "2"})
    assert words == ["list"]
    words, _ = complete({"_LMCTL_COMPLETE": "complete_bash", "COMP_WORDS": "lmctl ", "COMP_CWORD": "1"})
    assert {"prepare", "train", "eval", "generate", "plugins", "plot", "runs", "quickstart"} <= set(words)
    assert heavy == set()


def test_zsh_completion_describes_the_command():
    script = lmctl_script()
    if script is None:
        pytest.skip("the lmctl console script is not installed")
    env = {**os.environ, "_LMCTL_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "lmctl gen"}
    result = subprocess.run([script], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0
    assert '"generate":"Sample text from a model' in result.stdout


@pytest.mark.skipif(shutil.which("tmux") is None or shutil.which("bash") is None, reason="needs tmux and bash")
def test_tab_completes_in_a_real_bash(tmp_path):
    """What a user sees: the script from `lmctl --show-completion bash`, then Tab in bash."""
    script = lmctl_script()
    if script is None:
        pytest.skip("the lmctl console script is not installed")
    socket = f"lmctl-test-{uuid.uuid4().hex[:8]}"

    def tmux(*args: str) -> str:
        return subprocess.run(["tmux", "-L", socket, *args], capture_output=True, text=True, timeout=30, check=True).stdout

    path = os.pathsep.join([str(Path(script).parent), os.environ.get("PATH", "")])
    tmux("new-session", "-d", "-s", "t", "-x", "120", "-y", "20", "-c", str(tmp_path),
         f"env PATH={path} PS1='$ ' bash --norc --noprofile")  # fmt: skip
    try:
        tmux("send-keys", "-t", "t", "source <(lmctl --show-completion bash) && clear", "Enter")
        for typed, expected in (("lmctl tr", "$ lmctl train "), ("lmctl train --max-st", "$ lmctl train --max-steps ")):
            tmux("send-keys", "-t", "t", typed, "Tab")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                screen = tmux("capture-pane", "-p", "-t", "t")
                if expected.rstrip() in screen:
                    break
                time.sleep(0.1)
            assert expected.rstrip() in screen, screen
            tmux("send-keys", "-t", "t", "C-u")
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, timeout=30)
