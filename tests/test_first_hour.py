"""Small things a new user meets: help that reads well, suggestions, quiet saves, honest plots."""

from __future__ import annotations

import json
import re

from typer.testing import CliRunner


def invoke(*args: str):
    from lmctl.cli.app import app

    return CliRunner().invoke(app, list(args), env={"COLUMNS": "160", "NO_COLOR": "1"})


def test_train_help_says_what_options_take_and_their_defaults():
    text = invoke("train", "--help").output
    assert not re.search(r"<(str|bool|int|float|list\[str\]|path)>", text.split("Show this message")[1]), text
    for option, default in (("--out", "runs/lmctl"), ("--batch-size", "16"), ("--seed", "0"), ("--keep-last", "2")):
        row = re.search(rf"│ {option}\b.*?(?=│ --|╰)", text, flags=re.S)
        assert row, option
        assert f"[default: {default}]" in " ".join(row.group(0).replace("│", " ").split()), (option, row.group(0))
    assert "[default: 0.15]" in " ".join(text.split())  # literal brackets in help texts survive rich markup
    assert "NAME|DIR" in text and "lines|blank-lines|file" in text


def test_a_mistyped_option_suggests_the_closest_first():
    result = invoke("train", "--modle", "x")
    assert result.exit_code == 2
    assert "did you mean --model?" in result.output


def test_saving_a_model_shows_no_progress_bar(tmp_path, capfd):
    import transformers
    from transformers.utils import logging as hf_logging

    from lmctl.core.quiet import quiet_libraries

    quiet_libraries()
    hf_logging.enable_progress_bar()  # as a Hub download on a terminal may leave it
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=64, n_positions=16))
    model.save_pretrained(tmp_path / "m")
    assert "Writing model shards" not in capfd.readouterr().err
    hf_logging.disable_progress_bar()


def test_plot_warns_when_objectives_differ(tmp_path):
    from lmctl.workflows.runs import objective_caveat

    runs = []
    for name, family in (("gpt", "causal"), ("bert", "masked")):
        run = tmp_path / name
        run.mkdir()
        (run / "run.json").write_text(json.dumps({"resolved": {"family": family}}))
        (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "train/loss": 5.0}) + "\n")
        runs.append(run)
    assert "different objectives (causal, masked)" in objective_caveat(runs)
    assert objective_caveat(runs[:1]) is None
    result = invoke("plot", str(runs[0]), str(runs[1]))
    assert result.exit_code == 0 and "different objectives" in result.stderr


def test_cpu_threads_sleep_unless_the_user_chose():
    from lmctl.core.threads import configure_cpu_threads

    env: dict[str, str] = {}
    configure_cpu_threads(env)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    chosen = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert configure_cpu_threads(chosen) is False and chosen == {"OMP_WAIT_POLICY": "ACTIVE"}
    spin = {"GOMP_SPINCOUNT": "1000"}
    configure_cpu_threads(spin)
    assert "OMP_WAIT_POLICY" not in spin


def test_a_wait_over_the_delay_shows_what_it_waits_for_and_only_on_a_terminal():
    import io
    import time

    from lmctl.cli.waiting import Waiting

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    def shown(screen, text: str) -> bool:
        """Wait (up to 30 s: the spinner's thread may be starved on a busy machine) for ``text``."""
        deadline = time.monotonic() + 30
        while text not in screen.getvalue() and time.monotonic() < deadline:
            time.sleep(0.02)
        return text in screen.getvalue()

    screen = Terminal()
    with Waiting("loading gpt2", delay=0.05, stream=screen) as wait:
        assert shown(screen, "loading gpt2")
        wait("measuring precision")
        assert shown(screen, "measuring precision")

    quick = Terminal()
    with Waiting("loading gpt2", delay=5, stream=quick):
        pass  # done before the delay: nothing shown
    assert quick.getvalue() == ""

    pipe = io.StringIO()
    with Waiting("loading gpt2", delay=0.0, stream=pipe):
        time.sleep(0.2)
    assert pipe.getvalue() == ""
