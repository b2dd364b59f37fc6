"""The error contract, across commands, in one table: every bad input below goes through the real
CLI and must end with exit code 2 (usage) or 1 (failure), exactly one ``error:`` line on stderr
(the last one) naming the thing at fault, and no traceback.

Detailed tests of single cases stay next to their command (tests/test_prepare_errors.py,
tests/test_eval.py, tests/test_generate.py, tests/test_train.py); this table proves the contract
holds everywhere, and that nothing saved before (under the row's --out and prepare cache) is lost
or changed.  Faults that need real processes or a real full disk (two runs into one --out, a
killed run's lock, ENOSPC while saving checkpoints or prepared data, --num-processes errors):
tests/test_faults.py.
Untrusted files (pickles, remote code) and offline mode: tests/test_security.py.
"""

from __future__ import annotations

import builtins
import io
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmctl.cli.app import add_plugin_commands, app
from tests.conftest import REPO, corpus_text, train_tokenizer, write_prepared
from tests.fs_faults import assert_unchanged, read_only_dir, tree_hashes, unmount_all

add_plugin_commands(app)
HUB_ID = "nonexistent-model-xyz"


@dataclass
class World:
    """Good inputs, built once: bad inputs are made from them per row."""

    causal: Path  # tiny GPT-2 directory (64 positions, 320-token vocabulary)
    masked: Path  # tiny BERT directory
    permuted: Path  # tiny XLNet directory
    prepared: Path  # prepared with the causal model's tokenizer
    prepared_masked: Path  # prepared with the BERT tokenizer
    prepared_permuted: Path
    big_tokenizer: Path  # a 2000-token tokenizer: too big for the tiny models
    corpus: Path
    run: Path  # a training run with checkpoints/step-1 (made with TRAIN + ["--out", run])


def train_args(w: World, *extra: str) -> list[str]:
    """A tiny from-scratch training run; ``w.run`` was made with exactly these settings."""
    return ["train", "--quiet", "--model", "gpt2", "--from-scratch", "--preset", "tiny", "--train", str(w.prepared),
            "--max-steps", "2", "--batch-size", "2", "--block-size", "32", "--eval-every", "0", "--save-every", "1",
            *extra]  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_dir, tokenizer_for) -> World:
    root = tmp_path_factory.mktemp("cli-errors")
    text = corpus_text(20_000)
    cut = int(len(text) * 0.9)
    from lmctl.core.hub import load_tokenizer

    causal = tiny_model_dir("causal")
    w = World(
        causal=causal,
        masked=tiny_model_dir("masked"),
        permuted=tiny_model_dir("permuted"),
        prepared=write_prepared(root / "prepared", load_tokenizer(str(causal)), "causal", text[:cut], text[cut:]),
        prepared_masked=write_prepared(root / "prepared-masked", tokenizer_for("masked"), "masked", text[:cut], text[cut:]),
        prepared_permuted=write_prepared(root / "prepared-xlnet", tokenizer_for("permuted"), "permuted", text[:cut], text[cut:]),
        big_tokenizer=root / "big-tokenizer",
        corpus=root / "corpus.txt",
        run=root / "run",
    )
    train_tokenizer("causal", vocab_size=2000).save_pretrained(w.big_tokenizer)
    w.corpus.write_text(text, encoding="utf-8")
    made = CliRunner().invoke(app, train_args(w, "--out", str(w.run)))
    assert made.exit_code == 0, made.output
    assert (w.run / "checkpoints" / "step-1" / "trainer_state.json").is_file()
    return w


# --- bad inputs, made per row in the row's own temporary directory ------------------------------


def missing(tmp: Path) -> Path:
    return tmp / "nope.txt"


def empty(tmp: Path) -> Path:
    (tmp / "empty.txt").write_text("")
    return tmp / "empty.txt"


def binary(tmp: Path) -> Path:
    (tmp / "blob.txt").write_bytes(b"header line\n" + bytes(range(16)) * 16)
    return tmp / "blob.txt"


def latin1(tmp: Path) -> Path:
    (tmp / "latin1.txt").write_bytes("café au lait\n".encode("latin-1"))
    return tmp / "latin1.txt"


def unreadable(tmp: Path) -> Path:
    """chmod 000.  Root reads it anyway, so there the kernel's refusal is simulated (see below)."""
    path = tmp / "locked.txt"
    path.write_text("some perfectly good text\n" * 20)
    path.chmod(0)
    return path


def a_directory(tmp: Path) -> Path:
    (tmp / "folder").mkdir()
    (tmp / "folder" / "image.png").write_bytes(b"\x89PNG\r\n")
    return tmp / "folder"


def model_copy(w: World, tmp: Path, change: Callable[[Path], None], source: str = "causal") -> Path:
    copy = tmp / f"model-{source}"
    shutil.copytree(getattr(w, source), copy)
    change(copy)
    return copy


def no_config(d: Path) -> None:
    (d / "config.json").unlink()


def no_weights(d: Path) -> None:
    (d / "model.safetensors").unlink()


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def run_copy(w: World, tmp: Path, damage: str | None = None) -> Path:
    """A copy of the training run, with one file of its checkpoint truncated or garbled."""
    copy = tmp / "run"
    shutil.copytree(w.run, copy)
    # As if interrupted after step 1: the finished run's last-step checkpoint and final model go
    # (a finished run resumes from its last step; these rows are about step-1).
    for extra in (copy / "checkpoints").iterdir():
        if extra.name != "step-1":
            shutil.rmtree(extra)
    if damage:
        target = copy / "checkpoints" / "step-1" / damage
        if damage.endswith(".json"):
            target.write_text("{not json")
        else:
            truncate(target)
    return copy


def a_file(tmp: Path) -> Path:
    (tmp / "afile").write_text("not a directory\n")
    return tmp / "afile"


def symlink_loop(tmp: Path) -> Path:
    (tmp / "loop.txt").symlink_to("loop.txt")
    return tmp / "loop.txt"


def read_only(tmp: Path) -> Path:
    """A directory nobody may write to (a read-only mount for root); the row is skipped without one."""
    directory = read_only_dir(tmp / "read-only")
    if directory is None:
        pytest.skip("no way to make a read-only directory here")
    return directory


def merge_without_its_token(w: World, tmp: Path) -> Path:
    """A copy of the causal tokenizer whose vocabulary lacks the token its first merge makes
    (tokenizers: "Token `Ġa` out of vocabulary")."""
    import json

    copy = tmp / "broken-tokenizer"
    copy.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (w.causal / name).is_file():
            shutil.copy(w.causal / name, copy / name)
    data = json.loads((copy / "tokenizer.json").read_text())
    first = data["model"]["merges"][0]
    left, right = first if isinstance(first, list) else first.split(" ")
    del data["model"]["vocab"][left + right]
    (copy / "tokenizer.json").write_text(json.dumps(data))
    return copy


def locked_by_another_host(w: World, tmp: Path) -> Path:
    import json

    copy = run_copy(w, tmp)
    (copy / ".lmctl.lock").write_text(json.dumps({"pid": 1, "host": "other-host", "started": 0, "command": "lmctl train"}))
    return copy


# --- the table ----------------------------------------------------------------------------------


@dataclass
class Row:
    id: str
    args: Callable[[World, Path], list[str]]
    code: int
    needles: tuple[str, ...]  # in the error line ({tmp} is the row's directory)
    absent: tuple[str, ...] = ()  # not in the error line
    subprocess: bool = False  # through `python -m lmctl` (a real process) instead of CliRunner
    prepares_nothing: bool = False  # found before the slow work: the prepare cache stays empty


def row(id, args, code, *needles, absent=(), subprocess=False, prepares_nothing=False) -> pytest.param:
    return pytest.param(Row(id, args, code, needles, absent, subprocess, prepares_nothing), id=id)


P = "prepare"
TOK = ["--block-size", "32"]  # the tiny models have 64 positions; prepare's default is 128

ROWS = [
    # --- input files -------------------------------------------------------------------------
    row("prepare/missing-file", lambda w, t: [P, "--train", str(missing(t)), "--out", str(t / "o")], 2, "input not found", "nope.txt"),
    row("prepare/empty-file", lambda w, t: [P, "--train", str(empty(t)), "--tokenizer", str(w.causal), *TOK, "--out", str(t / "o")],
        1, "empty.txt is empty"),
    row("prepare/unreadable-file", lambda w, t: [P, "--train", str(unreadable(t)), "--tokenizer", str(w.causal), *TOK, "--out", str(t / "o")],
        1, "permission denied", "locked.txt"),
    row("prepare/binary-file", lambda w, t: [P, "--train", str(binary(t)), "--tokenizer", str(w.causal), *TOK, "--out", str(t / "o")],
        1, "blob.txt", "binary"),
    row("prepare/directory-without-text", lambda w, t: [P, "--train", str(a_directory(t)), "--out", str(t / "o")],
        2, "no input files in directory", "folder"),
    row("prepare/not-utf8", lambda w, t: [P, "--train", str(latin1(t)), "--tokenizer", str(w.causal), *TOK, "--out", str(t / "o")],
        1, "latin1.txt", "not UTF-8", "--encoding-errors replace"),
    row("train/missing-file", lambda w, t: ["train", "--train", str(missing(t)), "--out", str(t / "r")], 2, "input not found", "nope.txt"),
    row("train/empty-file", lambda w, t: ["train", "--train", str(empty(t)), "--model", "gpt2", "--from-scratch", "--out", str(t / "r")],
        1, "empty.txt is empty"),
    row("train/unreadable-file", lambda w, t: ["train", "--train", str(unreadable(t)), "--model", "gpt2", "--from-scratch", "--out", str(t / "r")],
        1, "permission denied", "locked.txt"),
    row("train/binary-file", lambda w, t: ["train", "--train", str(binary(t)), "--model", "gpt2", "--from-scratch", "--out", str(t / "r")],
        1, "blob.txt", "binary"),
    row("train/no-data", lambda w, t: ["train", "--model", "gpt2", "--out", str(t / "r")], 2, "--train"),
    row("generate/prompts-not-utf8", lambda w, t: ["generate", "--model", str(w.causal), "--prompts-file", str(latin1(t))],
        1, "latin1.txt", "not UTF-8"),
    row("generate/prompts-missing", lambda w, t: ["generate", "--model", str(w.causal), "--prompts-file", str(missing(t))],
        1, "prompts file not found", "nope.txt"),
    row("generate/prompts-unreadable", lambda w, t: ["generate", "--model", str(w.causal), "--prompts-file", str(unreadable(t))],
        1, "locked.txt", "Permission denied"),
    row("generate/prompts-is-a-directory", lambda w, t: ["generate", "--model", str(w.causal), "--prompts-file", str(a_directory(t))],
        1, "folder is a directory"),
    row("eval/data-missing", lambda w, t: ["eval", "--model", str(w.causal), "--data", str(missing(t))], 1, "data not found", "nope.txt"),
    # --- models ------------------------------------------------------------------------------
    # Offline, a hub id missing from the local cache is reported before anything is imported.
    row("train/unknown-model-offline", lambda w, t: ["train", "--train", str(w.prepared), "--model", HUB_ID, "--out", str(t / "r")],
        1, f"{HUB_ID}: not in the local Hugging Face cache", "offline mode is on", "local model directory", "--from-scratch"),
    row("eval/unknown-model-offline", lambda w, t: ["eval", "--model", HUB_ID, "--data", str(w.prepared)],
        1, f"{HUB_ID}: not in the local Hugging Face cache", "offline mode is on", "local model directory", absent=("--from-scratch",)),
    row("generate/unknown-model-offline", lambda w, t: ["generate", "--model", HUB_ID, "hello"],
        1, f"{HUB_ID}: not in the local Hugging Face cache", "offline mode is on", absent=("--from-scratch",)),
    row("generate/unknown-model-offline-process", lambda w, t: ["generate", "--model", HUB_ID, "hello"],
        1, f"{HUB_ID}: not in the local Hugging Face cache", "offline mode is on", absent=("--from-scratch",), subprocess=True),
    row("train/model-without-config", lambda w, t: ["train", "--train", str(w.prepared), "--model", str(model_copy(w, t, no_config)), "--out", str(t / "r")],
        1, "model-causal is not a model directory", "no config.json"),
    row("eval/model-without-config", lambda w, t: ["eval", "--model", str(model_copy(w, t, no_config)), "--data", str(w.prepared)],
        1, "model-causal is not a model directory", "no config.json"),
    row("generate/model-without-config", lambda w, t: ["generate", "--model", str(model_copy(w, t, no_config)), "hi"],
        1, "model-causal is not a model directory", "no config.json"),
    row("train/model-without-weights", lambda w, t: ["train", "--train", str(w.prepared), "--model", str(model_copy(w, t, no_weights)), "--out", str(t / "r")],
        1, "model-causal has a config.json but no weights"),
    row("eval/model-without-weights", lambda w, t: ["eval", "--model", str(model_copy(w, t, no_weights)), "--data", str(w.prepared)],
        1, "model-causal has a config.json but no weights"),
    row("generate/model-without-weights", lambda w, t: ["generate", "--model", str(model_copy(w, t, no_weights)), "hi"],
        1, "model-causal has a config.json but no weights"),
    row("eval/damaged-safetensors", lambda w, t: ["eval", "--model", str(model_copy(w, t, lambda d: truncate(d / "model.safetensors"))), "--data", str(w.prepared)],
        1, "weights in", "model-causal", "damaged"),
    row("generate/damaged-safetensors", lambda w, t: ["generate", "--model", str(model_copy(w, t, lambda d: truncate(d / "model.safetensors"))), "hi"],
        1, "weights in", "model-causal", "damaged"),
    row("generate/missing-model-directory", lambda w, t: ["generate", "--model", str(t / "no-such-model"), "hi"],
        1, "model directory not found", "no-such-model"),
    # --- tokenizer and model disagree ----------------------------------------------------------
    row("train/tokenizer-bigger-than-vocabulary",
        lambda w, t: ["train", "--train", str(w.corpus), "--model", str(w.causal), "--tokenizer", str(w.big_tokenizer), "--block-size", "32", "--out", str(t / "r")],
        2, "the tokenizer has", "the model's vocabulary has 320"),
    row("eval/data-from-another-tokenizer", lambda w, t: ["eval", "--model", str(w.causal), "--data", str(w.prepared_masked)],
        2, "prepared-masked was tokenized with a different tokenizer"),
    # --- block size ----------------------------------------------------------------------------
    row("train/block-size-beyond-positions", lambda w, t: ["train", "--train", str(w.prepared), "--model", str(w.causal), "--block-size", "128", "--out", str(t / "r")],
        2, "--block-size 128 is larger than the model allows (64 positions)"),
    row("eval/block-size-beyond-positions", lambda w, t: ["eval", "--model", str(w.causal), "--data", str(w.prepared), "--block-size", "128"],
        2, "--block-size 128 is larger than the model allows (64 positions)"),
    row("prepare/block-size-beyond-positions", lambda w, t: [P, "--train", str(w.corpus), "--tokenizer", str(w.causal), "--block-size", "128", "--out", str(t / "o")],
        2, "--block-size 128 is larger than the model allows (64 positions)"),
    row("train/xlnet-odd-block-size",
        lambda w, t: ["train", "--train", str(w.prepared_permuted), "--model", "xlnet", "--from-scratch", "--preset", "tiny", "--block-size", "33", "--out", str(t / "r")],
        2, "even --block-size", "33"),
    row("eval/xlnet-odd-block-size", lambda w, t: ["eval", "--model", str(w.permuted), "--data", str(w.prepared_permuted), "--block-size", "33"],
        2, "even --block-size", "33"),
    # --- numbers -------------------------------------------------------------------------------
    row("train/batch-size-zero", lambda w, t: train_args(w, "--batch-size", "0", "--out", str(t / "r")), 2, "--batch-size", "got 0"),
    row("train/batch-size-negative", lambda w, t: train_args(w, "--batch-size", "-4", "--out", str(t / "r")), 2, "--batch-size", "got -4"),
    row("train/learning-rate-zero", lambda w, t: train_args(w, "--lr", "0", "--out", str(t / "r")), 2, "--lr must be positive"),
    row("train/learning-rate-negative", lambda w, t: train_args(w, "--lr", "-0.001", "--out", str(t / "r")), 2, "--lr must be positive", "-0.001"),
    row("train/grad-accum-zero", lambda w, t: train_args(w, "--grad-accum", "0", "--out", str(t / "r")), 2, "--grad-accum"),
    row("train/batch-size-not-a-number", lambda w, t: ["train", "--batch-size", "many"], 2, "--batch-size", "lmctl train --help"),
    row("train/batch-size-not-a-number-process", lambda w, t: ["train", "--batch-size", "many"], 2, "--batch-size", "--help", subprocess=True),
    row("eval/batch-size-zero", lambda w, t: ["eval", "--model", str(w.causal), "--data", str(w.prepared), "--batch-size", "0"], 2, "--batch-size", "got 0"),
    row("generate/batch-size-zero", lambda w, t: ["generate", "--model", str(w.causal), "hi", "--batch-size", "0"], 2, "--batch-size", "got 0"),
    # --- resuming ------------------------------------------------------------------------------
    row("train/resume-auto-without-checkpoint", lambda w, t: train_args(w, "--resume", "auto", "--out", str(t / "fresh")),
        2, "--resume auto: no checkpoint in", "fresh"),
    row("train/resume-not-a-checkpoint", lambda w, t: train_args(w, "--resume", str(a_directory(t)), "--out", str(t / "r")),
        2, "folder: not a complete lmctl checkpoint"),
    row("train/resume-incompatible-config", lambda w, t: train_args(w, "--lr", "0.01", "--resume", "auto", "--out", str(run_copy(w, t))),
        2, "cannot resume from", "step-1", "config changed", "lr"),
    row("train/rerun-over-checkpoints", lambda w, t: train_args(w, "--out", str(run_copy(w, t))), 2, "already holds an earlier run", "--resume auto"),
    *[
        row(f"train/resume-damaged-{name}", lambda w, t, name=name: train_args(w, "--resume", "auto", "--out", str(run_copy(w, t, name))),
            1, "step-1 is damaged", f"{name} cannot be read", "train again without --resume")
        for name in ("model.safetensors", "optimizer.safetensors", "optimizer.json", "trainer_state.json", "rng-0.safetensors", "rng-0.json")
    ],
    # --- prompts -------------------------------------------------------------------------------
    row("generate/fill-mask-without-mask", lambda w, t: ["generate", "--model", str(w.masked), "no mask in this prompt"],
        2, "prompt 1 has no mask", "[MASK]"),
    # --- conflicting or missing flags ----------------------------------------------------------
    row("train/validation-and-validation-split",
        lambda w, t: ["train", "--train", str(w.corpus), "--validation", str(w.corpus), "--validation-split", "0.1", "--out", str(t / "r")],
        2, "--validation and --validation-split conflict"),
    row("train/preset-without-from-scratch", lambda w, t: ["train", "--train", str(w.prepared), "--model", str(w.causal), "--preset", "tiny", "--out", str(t / "r")],
        2, "--preset only applies with --from-scratch"),
    row("train/model-config-without-from-scratch",
        lambda w, t: ["train", "--train", str(w.prepared), "--model", str(w.causal), "--model-config", "n_layer=1", "--out", str(t / "r")],
        2, "--model-config only applies with --from-scratch"),
    row("train/validation-with-prepared-data", lambda w, t: train_args(w, "--validation", str(w.corpus), "--out", str(t / "r")),
        2, "--validation cannot be combined with a prepared --train directory"),
    row("train/on-nan-unknown", lambda w, t: train_args(w, "--on-nan", "ignore", "--out", str(t / "r")), 2, "--on-nan must be stop or skip"),
    row("prepare/validation-and-validation-split",
        lambda w, t: [P, "--train", str(w.corpus), "--validation", str(w.corpus), "--validation-split", "0.1", "--out", str(t / "o")],
        2, "--validation"),
    row("eval/missing-data-option", lambda w, t: ["eval", "--model", str(w.causal)], 2, "--data", "lmctl eval --help"),
    row("generate/text-and-fill-mask-models", lambda w, t: ["generate", "--model", str(w.causal), "--model", str(w.masked), "a [MASK]"],
        2, "one kind at a time"),
    row("generate/unknown-option", lambda w, t: ["generate", "--model", str(w.causal), "--temperatur", "0.5", "hi"],
        2, "--temperatur", "lmctl generate --help"),
    row("plugins/unknown-subcommand", lambda w, t: ["plugins", "enable", "x"], 2, "enable", "lmctl plugins --help"),
    # --- faults (issue 20): found before slow work, one line that says what to do ---------------
    row("train/model-config-not-buildable",
        lambda w, t: ["train", "--train", str(w.corpus), "--tokenizer", str(w.causal), "--model", "gpt2", "--from-scratch",
                      "--preset", "tiny", "--model-config", "n_embd=65", "--block-size", "32", "--out", str(t / "r")],
        2, "'gpt2' model cannot be built", "n_embd=65", "divisible", "change --model-config", prepares_nothing=True),
    row("train/read-only-out", lambda w, t: train_args(w, "--out", str(read_only(t) / "run")),
        2, "read-only/run", "choose a directory you can write to", absent=("Errno",)),
    row("prepare/read-only-out", lambda w, t: [P, "--train", str(w.corpus), "--tokenizer", str(w.causal), *TOK, "--out", str(read_only(t) / "o")],
        2, "read-only/o", "choose a directory you can write to", absent=("Errno",)),
    row("train/out-is-a-file", lambda w, t: train_args(w, "--out", str(a_file(t))), 2, "afile is a file", absent=("FileExistsError",)),
    row("prepare/out-is-a-file", lambda w, t: [P, "--train", str(w.corpus), "--tokenizer", str(w.causal), *TOK, "--out", str(a_file(t))],
        2, "afile is a file"),
    row("export/out-is-a-file", lambda w, t: ["export", str(w.run / "checkpoints" / "step-1"), "--out", str(a_file(t))], 2, "afile is a file"),
    row("prepare/tokenizer-merge-out-of-vocabulary",
        lambda w, t: [P, "--train", str(w.corpus), "--tokenizer", str(merge_without_its_token(w, t)), *TOK, "--out", str(t / "o")],
        1, "the tokenizer in", "broken-tokenizer", "out of vocabulary", "pass another --tokenizer", absent=("Exception",)),
    row("train/tokenizer-merge-out-of-vocabulary",
        lambda w, t: ["train", "--train", str(w.corpus), "--tokenizer", str(merge_without_its_token(w, t)), "--model", "gpt2",
                      "--from-scratch", "--preset", "tiny", *TOK, "--out", str(t / "r")],
        1, "the tokenizer in", "broken-tokenizer", "out of vocabulary", prepares_nothing=True),
    row("prepare/symlink-loop", lambda w, t: [P, "--train", str(symlink_loop(t)), "--out", str(t / "o")],
        2, "loop.txt", "too many levels of symbolic links", absent=("not found", "dataset")),
    row("train/symlink-loop", lambda w, t: ["train", "--train", str(symlink_loop(t)), "--model", "gpt2", "--from-scratch", "--out", str(t / "r")],
        2, "loop.txt", "too many levels of symbolic links", absent=("not found", "dataset", "ConnectionError")),
    row("prepare/vocab-size-below-byte-alphabet",
        lambda w, t: [P, "--train", str(w.corpus), "--tokenizer", "bytelevel-bpe", "--vocab-size", "10", *TOK, "--out", str(t / "o")],
        2, "--vocab-size 10 is smaller than bytelevel-bpe's alphabet of 256 bytes", "--vocab-size 257 or more"),
    row("train/vocab-size-below-byte-alphabet",
        lambda w, t: ["train", "--train", str(w.corpus), "--tokenizer", "bytelevel-bpe", "--vocab-size", "10", "--model", "gpt2",
                      "--from-scratch", "--preset", "tiny", *TOK, "--out", str(t / "r")],
        2, "--vocab-size 10 is smaller", prepares_nothing=True),
    row("train/out-locked-by-another-host", lambda w, t: train_args(w, "--resume", "auto", "--out", str(locked_by_another_host(w, t))),
        1, "in use by another run", "other-host", "delete", ".lmctl.lock"),
    row("export/truncated-weights",
        lambda w, t: ["export", str(run_copy(w, t, "model.safetensors") / "checkpoints" / "step-1"), "--out", str(t / "exported")],
        1, "model.safetensors is damaged", "truncated", "nothing was exported"),
    row("export/truncated-weights-into-existing-out",
        lambda w, t: ["export", str(run_copy(w, t, "model.safetensors") / "checkpoints" / "step-1"), "--out",
                      str(export_of(w, t)), "--force"],
        1, "model.safetensors is damaged", "nothing was exported"),
]  # fmt: skip


def export_of(w: World, tmp: Path) -> Path:
    """A good export made before the row runs: a failed export over it must leave it as it was."""
    from lmctl.workflows.export import export_checkpoint

    return export_checkpoint(w.run / "checkpoints" / "step-1", tmp / "exported-before")


@pytest.fixture
def unmount_after():
    yield
    unmount_all()


@pytest.fixture
def kernel_refuses_unreadable(monkeypatch):
    """chmod 000 files are refused by the kernel, except to root: simulate that refusal for root."""
    if os.geteuid() != 0:
        return
    real_open, real_os_open = builtins.open, os.open

    def locked(path: object) -> bool:
        """What the kernel refuses to a normal user: a file with no permission bits at all."""
        if not isinstance(path, (str, os.PathLike)):
            return False  # a file descriptor
        try:
            return os.stat(path).st_mode & 0o777 == 0
        except OSError:
            return False

    def guarded_open(file, *args, **kwargs):
        if locked(file):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    def guarded_os_open(path, *args, **kwargs):
        if locked(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_os_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(io, "open", guarded_open)
    monkeypatch.setattr(os, "open", guarded_os_open)


def run_row(r: Row, world: World, tmp: Path) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the row's command; every file saved before it (under the
    row's directory, which holds its --out and the prepare cache, and the shared run and data) is
    checked to be there, unchanged, afterwards."""
    args = r.args(world, tmp)
    before = tree_hashes(tmp, world.run, world.prepared)
    code, stdout, stderr = _run_row(r, args, tmp)
    assert_unchanged(before, tree_hashes(tmp, world.run, world.prepared))
    if r.prepares_nothing:
        prepared = tmp / "cache" / "prepared"
        assert not prepared.exists() or not any(prepared.iterdir()), list(prepared.iterdir())
    return code, stdout, stderr


def _run_row(r: Row, args: list[str], tmp: Path) -> tuple[int, str, str]:
    env = {"HF_HUB_OFFLINE": "1", "LMCTL_CACHE": str(tmp / "cache"), "LMCTL_DEBUG": ""}
    if r.subprocess:
        done = subprocess.run([sys.executable, "-m", "lmctl", *args], capture_output=True, text=True, timeout=300,
                              env={**os.environ, **env, "PYTHONPATH": str(REPO)}, cwd=tmp)  # fmt: skip
        return done.returncode, done.stdout, done.stderr
    result = CliRunner().invoke(app, args, env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("r", ROWS)
def test_bad_input_gives_one_clean_error_line(r: Row, world: World, tmp_path: Path, kernel_refuses_unreadable, unmount_after) -> None:
    code, stdout, stderr = run_row(r, world, tmp_path)
    assert code == r.code, (code, stderr)
    assert "Traceback" not in stdout + stderr
    lines = stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr  # other lines (progress) may come first
    assert "error:" not in stdout
    line = errors[0]
    for needle in r.needles:
        assert needle in line, (needle, line)
    for word in r.absent:
        assert word not in line, (word, line)


def test_the_table_covers_every_command():
    commands = {row.values[0].id.split("/")[0] for row in ROWS}
    assert commands == {"prepare", "train", "eval", "generate", "plugins", "export"}


def test_debug_shows_the_traceback(world, tmp_path):
    """--debug (or LMCTL_DEBUG=1) is the way to the traceback the table says is hidden."""
    args = ["--debug", "generate", "--model", str(tmp_path / "no-such-model"), "hi"]
    done = subprocess.run([sys.executable, "-m", "lmctl", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "LmctlError: model directory not found" in done.stderr


WORKER_SCRIPT = """
import atexit, sys
from lmctl.cli.endings import run_worker_and_exit

atexit.register(lambda: print("atexit ran", flush=True))

class Teardown:
    def __del__(self):
        print("interpreter teardown ran", flush=True)

kept = Teardown()  # a module global: only the interpreter's teardown would delete it

def command():
    print("command ran")  # left in stdout's buffer: the exit must flush it
    code = sys.argv[1]
    sys.exit(int(code) if code.isdigit() else code)

run_worker_and_exit(command)
"""


@pytest.mark.parametrize(("code", "expected"), [("0", 0), ("3", 3), ("bad news", 1)])
def test_a_launched_worker_keeps_its_exit_code_and_skips_the_interpreter_teardown(code, expected):
    """Workers end through os._exit after atexit: a gloo thread releasing tensors during the
    interpreter's teardown aborts a finished run (exit 134).  The exit code, atexit handlers and
    buffered output survive; the teardown does not run."""
    proc = subprocess.run([sys.executable, "-c", WORKER_SCRIPT, code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == expected, proc.stderr
    assert proc.stdout.splitlines() == ["command ran", "atexit ran"]
    if expected == 1:
        assert proc.stderr.strip() == "bad news"


def test_a_usage_error_in_a_launched_worker_is_still_one_line_and_exit_2(tmp_path):
    env = {**os.environ, "LOCAL_RANK": "0", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "lmctl", "train", "--train", str(tmp_path / "missing.txt")],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error:") and "missing.txt" in lines[-1] and "Traceback" not in proc.stderr
