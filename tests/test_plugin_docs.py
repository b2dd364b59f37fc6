"""Every Python example in docs/plugins.md runs (extracted from the page, never copied here).

Each fenced ``python`` block outside the generated hook reference runs in a fresh process, in a
temporary directory holding the files the page shows as ``<!-- example: NAME -->`` blocks (so
the testing example can ``import lmctl_words``).  A block preceded by ``<!-- not run: REASON -->``
is skipped; the page says so.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

from lmctl.plugins.docs import BEGIN, END
from tests.conftest import REPO

DOC = REPO / "docs" / "plugins.md"
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>\w*)[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.DOTALL | re.MULTILINE)


def blocks(text: str) -> list[tuple[str, str, str, str]]:
    """(language, code, the marker line before it or "", where) for every fenced block."""
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        line = text[: match.start()].count("\n") + 1
        body = textwrap.dedent(match["body"])
        found.append((match["lang"], body, before if before.startswith("<!--") else "", f"docs/plugins.md:{line}"))
    return found


def runnable() -> list[tuple[str, str]]:
    text = DOC.read_text(encoding="utf-8")
    outside_reference = text.split(BEGIN, 1)[0] + text.split(END, 1)[1]
    return [(where, code) for lang, code, marker, where in blocks(outside_reference)
            if lang == "python" and not marker.startswith("<!-- example:") and not marker.startswith("<!-- not run")]  # fmt: skip


def example_files() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    return {marker.split()[2]: code for _, code, marker, _ in blocks(text) if marker.startswith("<!-- example:")}


def test_the_page_has_python_examples_and_the_extraction_finds_them():
    examples = runnable()
    assert len(examples) >= 4
    codes = "\n".join(code for _, code in examples)
    assert "check_plugins([\"words\"])" in codes and "row_seeded" in codes and "parse_options" in codes
    # The extraction sees indented blocks (inside list items) and skips marked ones.
    sample = "<!-- not run: needs a GPU -->\n```python\nraise SystemExit(1)\n```\n\n- item\n\n    ```python\n    x = 1\n    ```\n"
    found = [(lang, code, marker) for lang, code, marker, _ in blocks(sample)]
    assert found == [("python", "raise SystemExit(1)\n", "<!-- not run: needs a GPU -->"), ("python", "x = 1\n", "")]


@pytest.mark.parametrize(("where", "code"), runnable(), ids=[where for where, _ in runnable()])
def test_python_example_runs(where, code, tmp_path):
    for name, body in example_files().items():
        (tmp_path / name).write_text(body, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMCTL_")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO)])
    env["LMCTL_QUIET_PLUGIN_WARNINGS"] = "1"
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"the example at {where} failed:\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
