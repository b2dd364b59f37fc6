"""Every `lmctl` command in README.md and docs/*.md code blocks runs as written, in page order, in a
scratch directory per page, unless it needs what a test cannot have (the network, the Hub, a
change to the installed packages), which it must say right above it.

What a page may ask the test for, in an HTML comment above a block (and, for readers, in words):

    <!-- docs-test: files corpus.txt valid.txt -->   small UTF-8 text files of those names
    <!-- docs-test: needs runs/bert -->              a path the page assumes (a model it does not
                                                     build): commands that use it are skipped
    <!-- docs-test: skip -->                         the next block cannot run here (the page says
                                                     why: a GPU, several machines)

Skipped, with the reason recorded (and asserted to be one of these):

* a `--model` that is neither a local directory nor built `--from-scratch`: a Hub download;
* a path that only a skipped command would have written (`runs/gpt2-ft` after a Hub fine-tune);
* `lmctl plugins install/uninstall` (they change the environment), `accelerate launch`, `torchrun`;
* placeholders (`...`, `PREPARED_DIR`), an interactive `generate` with no prompt, and commands
  shown as output (`$ lmctl --help` is run: it needs nothing).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, corpus_text

RUNNABLE_FENCES = ("bash", "console", "sh", "shell", "")  # not ```text: that is output shown


def shell_blocks(text: str) -> list[str]:
    """The page's runnable code blocks (a ```text block shows output, like the dashboard)."""
    blocks, lang, lines = [], None, []
    for raw in text.splitlines():
        if raw.lstrip().startswith("```"):
            if lang is None:
                lang, lines = raw.strip()[3:].strip(), []
            else:
                if lang in RUNNABLE_FENCES:
                    blocks.append("\n".join(lines))
                lang = None
        elif lang is not None:
            lines.append(raw)
    return blocks

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SKIP_PAGES = {"cli.md"}  # the generated reference: every command's --help, nothing to run
OUTPUT_OPTIONS = ("--out", "-o", "--png")
COMMANDS = {"prepare", "train", "eval", "generate", "quickstart", "export", "runs", "plot", "plugins", "infill"}
LOCAL_PREFIXES = ("runs/", "data/", "models/", "exported/", "./", "/", "~", "../")


def blocks_with_markers(text: str) -> list[tuple[list[str], list[str], str]]:
    """(files asked for, paths assumed, block text) for every shell block, in page order."""
    result, files, needs, skip_next = [], [], [], False
    pieces = re.split(r"(<!--\s*docs-test:.*?-->)", text, flags=re.S)
    for piece in pieces:
        marker = re.match(r"<!--\s*docs-test:\s*(files|needs|skip)\s*(.*?)\s*-->", piece, flags=re.S)
        if marker:
            if marker.group(1) == "skip":
                skip_next = True
            else:
                (files if marker.group(1) == "files" else needs).extend(marker.group(2).split())
            continue
        for index, block in enumerate(shell_blocks(piece)):
            if index == 0 and skip_next:
                skip_next = False
                continue  # the page says above the block why it cannot run here (a GPU, several machines)
            result.append((list(files), list(needs), block))
    return result


def commands_of(block: str) -> list[str]:
    found = []
    for line in block.replace("\\\n", " ").splitlines():
        line = line.strip()
        if line.startswith("$ "):
            line = line[2:]
        line = line.split(" #", 1)[0].strip()
        if line.startswith("#"):
            continue
        for part in re.split(r"&&|\|\||;|\|", line):
            part = part.strip()
            if re.match(r"lmctl(\s|$)", part):
                found.append(part)
    return found


def option_values(words: list[str], *names: str) -> list[str]:
    return [words[i + 1] for i, w in enumerate(words[:-1]) if w in names]


def skip_reason(words: list[str], cwd: Path, skipped_outputs: set[str]) -> str | None:
    if "..." in words or any(re.fullmatch(r"[A-Z][A-Z_]{3,}", w) for w in words):
        return "placeholder"
    if words[1:3] and words[1] == "plugins" and words[2] in ("install", "uninstall"):
        return "changes the installed packages"
    command = words[1] if len(words) > 1 else ""
    paths = option_values(words, "--model", "-m", "--train", "-t", "--data", "-d", "--validation", "--resume", "--tokenizer")
    if command in ("runs", "plot", "export"):
        paths += [w for w in words[2:] if not w.startswith("-") and w not in option_values(words, *OUTPUT_OPTIONS)]
    for path in paths:
        clean = path.rstrip("/")
        if any(clean == out or clean.startswith(out + "/") for out in skipped_outputs):
            return f"needs {path}, which the page does not build here (or a skipped command writes)"
    if command in ("train", "eval", "generate") and "--from-scratch" not in words:
        for model in option_values(words, "--model", "-m"):
            if not (cwd / model).exists() and not model.startswith(LOCAL_PREFIXES):
                return f"downloads {model} from the Hugging Face Hub"
    if command == "train" and "--config" in words and "--from-scratch" not in words:
        config = (cwd / option_values(words, "--config")[0]).read_text(encoding="utf-8")
        if not re.search(r"^\s*from_scratch\s*=\s*true", config, flags=re.M) and "--model" not in words:
            return "downloads the config's model from the Hugging Face Hub"
    if command == "generate":
        positional = [w for i, w in enumerate(words[2:], start=2) if not w.startswith("-") and not words[i - 1].startswith("-")]
        if not positional and "--prompts-file" not in words and "-f" not in words:
            return "interactive prompt loop"
    return None


def run_page(page: Path, tmp_path: Path) -> tuple[list[str], list[str], list[str]]:
    """(ran, skipped with reasons, failures) for one page."""
    cwd = tmp_path / "work"
    cwd.mkdir()
    shutil.copytree(REPO / "examples", cwd / "examples")
    env = {
        **os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1", "HF_HUB_OFFLINE": "1",
        "LMCTL_CACHE": str(tmp_path / "cache"), "HF_HOME": str(tmp_path / "hf"),
    }  # fmt: skip
    ran, skipped, failures = [], [], []
    skipped_outputs: set[str] = set()
    text = corpus_text(20_000)
    for files, needs, block in blocks_with_markers(page.read_text(encoding="utf-8")):
        skipped_outputs.update(path.rstrip("/") for path in needs)
        for name in files:
            target = cwd / name
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                if name.endswith(".jsonl"):
                    records = [{"text": para, "body": para} for para in text.split("\n\n") if para.strip()]
                    target.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
                else:
                    target.write_text(text if "valid" not in name else text[-4000:], encoding="utf-8")
        for line in commands_of(block):
            words = shlex.split(line)
            if len(words) > 1 and not words[1].startswith("-") and words[1] not in COMMANDS:
                continue  # output shown in a text block (the dashboard), not a command
            reason = skip_reason(words, cwd, skipped_outputs)
            if reason:
                skipped.append(f"{line}  [{reason}]")
                skipped_outputs.update(v.rstrip("/") for v in option_values(words, *OUTPUT_OPTIONS))
                continue
            proc = subprocess.run(
                [sys.executable, "-m", "lmctl", *words[1:]], cwd=cwd, env=env, capture_output=True, text=True,
                timeout=1800, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            ran.append(line)
            if proc.returncode != 0:
                failures.append(f"{page.name}: `{line}` exited {proc.returncode}: {proc.stderr.strip()[-400:]}")
                skipped_outputs.update(v.rstrip("/") for v in option_values(words, *OUTPUT_OPTIONS))
    return ran, skipped, failures


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if p.name not in SKIP_PAGES], ids=lambda p: p.name)
def test_every_command_on_the_page_runs(page, tmp_path):
    ran, skipped, failures = run_page(page, tmp_path)
    print(f"\n{page.name}: ran {len(ran)}, skipped {len(skipped)}")
    for line in skipped:
        print("  skipped:", line)
    assert not failures, "\n".join(failures)


def test_skip_rules():
    from pathlib import Path as P

    cwd = P("/nonexistent")
    assert skip_reason(shlex.split("lmctl train --model gpt2 --train c.txt"), cwd, set()).startswith("downloads gpt2")
    assert skip_reason(shlex.split("lmctl train --model gpt2 --from-scratch --train c.txt"), cwd, set()) is None
    assert "skipped command" in skip_reason(shlex.split("lmctl eval --model runs/ft --data v.txt"), cwd, {"runs/ft"})
    assert skip_reason(shlex.split("lmctl train ... --resume auto"), cwd, set()) == "placeholder"
    assert skip_reason(shlex.split("lmctl generate --model runs/x"), cwd, set()) == "interactive prompt loop"
    assert skip_reason(shlex.split('lmctl generate --model runs/x "hi"'), cwd, set()) is None
