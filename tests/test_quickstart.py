"""`lmctl quickstart`: the whole pipeline on built-in text, no data and no network (run here with a
few steps; the README's set-up command runs it with the default 300)."""

from __future__ import annotations

import json
import re

from typer.testing import CliRunner

from tests.conftest import REPO


def test_quickstart_trains_evaluates_samples_and_suggests_next_steps(tmp_path):
    import pydoc_data.topics

    from lmctl.cli.app import app
    from tests.test_docs import command_problems, reference_options, shown_commands

    out = tmp_path / "runs" / "quickstart"
    result = CliRunner().invoke(app, ["quickstart", "--max-steps", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = result.output

    # The corpus is the standard library's pydoc topics, written next to the run.
    corpus = tmp_path / "runs" / "quickstart-data" / "pydoc_topics.txt"
    topics = pydoc_data.topics.topics
    assert corpus.read_text(encoding="utf-8") == "\n\n".join(topics[k].strip() for k in sorted(topics)) + "\n"

    # A model directory with its records; the printed validation figures are the final evaluation.
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    final = next(e for e in events if e.get("final"))
    summary = re.search(r"Trained .* in \d+ s: validation loss (\S+), perplexity (\S+)\n", text)
    assert summary, text
    assert float(summary.group(1)) == round(final["eval/loss"], 3)
    assert float(summary.group(2)) == round(final["eval/perplexity"], 1)

    # A sample that continues the prompt, then what to try next, with options that exist.
    assert "Sample (prompt 'The for statement'):\nThe for statement" in text
    assert "Next, try:" in text and f"lmctl generate --model {out}" in text
    suggestions = text.split("Next, try:", 1)[1]
    options = reference_options()
    shown = shown_commands("```bash\n" + suggestions.replace("   (", "   # (") + "\n```\n")
    assert len(shown) >= 5
    for line, words in shown:
        assert command_problems(words, options) == [], line
    assert (REPO / "README.md").read_text().count("lmctl quickstart") >= 1
