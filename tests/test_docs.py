"""The documentation site builds in strict mode, its CLI reference is the real ``--help``, and the
commands the pages show use options that exist."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

DOCS = REPO / "docs"
SHELL_FENCES = ("bash", "console", "sh", "shell", "text", "")


def test_cli_reference_is_current():
    """docs/cli.md is what `python docs/gen_cli_reference.py` writes from the real --help."""
    result = subprocess.run(
        [sys.executable, str(DOCS / "gen_cli_reference.py"), "--check"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr + "\n(run: python docs/gen_cli_reference.py)"


def test_cli_reference_check_fails_when_stale(tmp_path, monkeypatch):
    """The check really compares (in-process, with a fake --help so it is instant)."""
    spec = importlib.util.spec_from_file_location("gen_cli_reference", DOCS / "gen_cli_reference.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    monkeypatch.setattr(generator, "DOC", tmp_path / "cli.md")
    monkeypatch.setattr(generator, "commands", lambda: [[], ["train"]])
    monkeypatch.setattr(generator, "help_text", lambda args: f"Usage: lmctl {' '.join(args)} --max-steps")
    monkeypatch.setattr(sys, "argv", ["gen_cli_reference.py"])
    assert generator.main() == 0
    assert "## `lmctl train`" in (tmp_path / "cli.md").read_text()
    monkeypatch.setattr(sys, "argv", ["gen_cli_reference.py", "--check"])
    assert generator.main() == 0
    (tmp_path / "cli.md").write_text((tmp_path / "cli.md").read_text().replace("--max-steps", "--max-stepz"))
    assert generator.main() == 1


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs is not installed (pip install -e '.[dev]')")
def test_mkdocs_build_strict(tmp_path):
    if not (DOCS / "benchmarks.md").is_file():
        pytest.skip("docs/benchmarks.md is not assembled (python benchmarks/run.py --assemble)")
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (site / "index.html").is_file() and (site / "cli" / "index.html").is_file()
    assert "60-second tour" in (site / "index.html").read_text(encoding="utf-8")


def nav_pages() -> list[str]:
    import yaml

    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    pages: list[str] = []

    def walk(items):
        for item in items:
            if isinstance(item, str):
                pages.append(item)
            elif isinstance(item, dict):
                for value in item.values():
                    walk(value if isinstance(value, list) else [value])

    walk(config["nav"])
    return pages


def test_every_page_is_in_the_nav():
    pages = nav_pages()
    assert pages[0] == "index.md"
    assert sorted(pages) == sorted(p.name for p in DOCS.glob("*.md"))


def test_readme_links_point_to_files():
    text = (REPO / "README.md").read_text()
    targets = [t.split("#", 1)[0] for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t]
    assert targets, "the README links to the docs"
    missing = [t for t in targets if t and not (REPO / t).exists()]
    assert not missing, f"README links to missing files: {missing}"
    linked_pages = {Path(t).name for t in targets if t.startswith("docs/")}
    assert {"index.md", "concepts.md", "cli.md", "troubleshooting.md"} <= linked_pages


# --- the commands shown in the docs use real options ---------------------------------------------


def reference_options() -> dict[str, set[str]]:
    """Command -> its options, read from the generated reference (the real --help)."""
    text = (DOCS / "cli.md").read_text()
    sections = re.finditer(r"^## `lmctl ?(.*?)`\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    return {m.group(1): set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", m.group(2))) for m in sections}


def plugin_commands() -> set[str]:
    """Commands added by the example plugins in plugins/ (the plugin guide shows them)."""
    names: set[str] = set()
    for path in (REPO / "plugins").glob("*/src/**/*.py"):
        names |= set(re.findall(r"\.command\(\s*\"([a-z][a-z0-9-]*)\"", path.read_text(encoding="utf-8")))
    return names


def shell_blocks(text: str) -> list[str]:
    blocks, lang, lines = [], None, []
    for raw in text.splitlines():
        if raw.lstrip().startswith("```"):
            if lang is None:
                lang, lines = raw.strip()[3:].strip(), []
            else:
                if lang in SHELL_FENCES:
                    blocks.append("\n".join(lines))
                lang = None
        elif lang is not None:
            lines.append(raw)
    return blocks


def shown_commands(text: str) -> list[tuple[str, list[str]]]:
    """(line, words after `lmctl`) for every lmctl command in the page's shell blocks."""
    found = []
    for block in shell_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0]
            for part in re.split(r"&&|\|\||;|\|", line):
                match = re.search(r"(?:^|\s)lmctl\s+(\S.*)", part)
                if match:
                    found.append((line.strip(), match.group(1).split()))
    return found


def command_problems(words: list[str], options: dict[str, set[str]], extra_commands: set[str] = frozenset()) -> list[str]:
    """What is wrong with `lmctl WORDS...`: an unknown command, or options the command lacks."""
    command = words[0]
    if command.startswith("-") or command in extra_commands or command in ("COMMAND", "..."):
        return []
    key = f"plugins {words[1]}" if command == "plugins" and len(words) > 1 and f"plugins {words[1]}" in options else command
    if key not in options:
        return [f"unknown command {command!r}"]
    flags = [w.split("=", 1)[0] for w in words[1:] if re.fullmatch(r"--[a-z][a-z0-9-]*", w.split("=", 1)[0])]
    return [f"lmctl {key} has no {flag}" for flag in flags if flag not in options[key] and flag not in options[""]]


def test_commands_in_the_docs_use_real_options():
    options = reference_options()
    assert {"prepare", "train", "eval", "generate", "plugins list", "plot"} <= set(options)
    extra_commands = plugin_commands()
    problems, flags = [], 0
    for page in [REPO / "README.md", *sorted(DOCS.glob("*.md"))]:
        if page.name == "cli.md":
            continue
        for line, words in shown_commands(page.read_text(encoding="utf-8")):
            flags += sum(1 for w in words if w.startswith("--"))
            problems += [f"{page.name}: {problem}: {line}" for problem in command_problems(words, options, extra_commands)]
    assert flags > 50  # the pages really show commands (the parser found them)
    assert not problems, "\n".join(problems)


def test_option_check_catches_a_wrong_option():
    options = reference_options()
    [(line, words)] = shown_commands("```bash\nlmctl train --model gpt2 --max-stepz 3   # typo\n```\n")
    assert command_problems(words, options) == ["lmctl train has no --max-stepz"]
    assert command_problems(["plugins", "list", "--all"], options) == []
    assert command_problems(["plugins", "list", "--every"], options) == ["lmctl plugins list has no --every"]
    assert command_problems(["trian", "--model", "x"], options) == ["unknown command 'trian'"]
