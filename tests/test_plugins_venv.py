"""Issue 7's end-to-end check, as a user would do it (marker ``slow``: about a minute).

A fresh virtual environment (``--system-site-packages``, so torch and friends are reused, never
downloaded) gets lmctl from this checkout, then the example plugins from ``plugins/`` through
``lmctl plugins install``; prepare, train, eval and generate run on the plugin's family and
tokenizer with a tiny model; ``lmctl plugins uninstall`` removes them and they are gone.

pip runs with ``PIP_NO_INDEX`` (nothing is fetched) and without build isolation (setuptools comes
from the system site-packages), so the test needs no network.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from tests.conftest import REPO, corpus_text

pytestmark = pytest.mark.slow


def run(argv: list[str], *, cwd: Path, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(argv)} exited {result.returncode}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}")
    return result


def fresh_venv(tmp_path: Path) -> tuple[Path, Path, list[str], dict[str, str], Path]:
    """A fresh virtual environment with lmctl from this checkout (editable, no dependencies: torch
    and friends come from the parent environment, never downloaded): (python, bindir, lmctl, env, work)."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(env_dir)
    bindir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / "python"
    # When the tests themselves run in a virtual environment (CI's .venv), its packages are not the
    # "system" ones: make them visible too, after the new environment's own packages.
    new_site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    parent_site = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(new_site) / "_parent_environment.pth").write_text("\n".join(sorted(parent_site)) + "\n")
    lmctl = [str(bindir / "lmctl")]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LMCTL_", "PYTHON", "PIP_", "VIRTUAL_ENV"))}
    env.update(
        PIP_NO_INDEX="1",  # never reach an index: everything needed is local or already installed
        PIP_NO_BUILD_ISOLATION="0",  # pip reads this as --no-build-isolation
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    work = tmp_path / "work"
    work.mkdir()

    # Python < 3.12 seeds venvs with an old setuptools that cannot build wheels without `wheel`;
    # drop it so the system's (recent) setuptools builds lmctl and the plugins.
    run([str(python), "-m", "pip", "uninstall", "--yes", "setuptools"], cwd=work, env=env, check=False)
    # lmctl itself, editable from this checkout; its dependencies come from the system site-packages.
    run([str(python), "-m", "pip", "install", "--no-deps", "-e", str(REPO)], cwd=work, env=env)
    where = run([str(python), "-c", "import lmctl, sys; print(lmctl.__file__); print(sys.prefix)"], cwd=work, env=env)
    assert where.stdout.splitlines()[1] == str(env_dir)

    return python, bindir, lmctl, env, work


def test_install_use_and_uninstall_example_plugins_in_a_fresh_venv(tmp_path):
    python, bindir, lmctl, env, work = fresh_venv(tmp_path)
    # The plugins, through lmctl's own installer command (pip of the venv, not of the shell).
    # Copies, because setuptools builds in the source tree (build/, *.egg-info).
    sources = []
    for name in ("lmctl-byte", "lmctl-fim"):
        shutil.copytree(REPO / "plugins" / name, tmp_path / name, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        sources.append(str(tmp_path / name))
    installed = run([*lmctl, "plugins", "install", *sources], cwd=work, env=env)
    assert "installed plugin 'byte' (lmctl-byte 0.1.0): tokenizers: byte" in installed.stdout
    assert "installed plugin 'fim' (lmctl-fim 0.1.0): families: fim; commands: infill" in installed.stdout
    listing = json.loads(run([*lmctl, "plugins", "list", "--json"], cwd=work, env=env).stdout)
    rows = {row["name"]: row for row in listing}
    assert rows["fim"]["families"] == ["fim"] and rows["fim"]["version"] == "0.1.0"
    assert rows["byte"]["tokenizer_trainers"] == ["byte"]
    check = run([*lmctl, "plugins", "check"], cwd=work, env=env)
    assert "2 plugin(s) checked, 0 problem(s)" in check.stdout
    # The plugins' own test suites, against the installed plugins (pytest from the parent env).
    suites = [str(tmp_path / name / "tests") for name in ("lmctl-byte", "lmctl-fim")]
    own_tests = run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *suites], cwd=work, env=env)
    assert " passed" in own_tests.stdout and "failed" not in own_tests.stdout
    # Installed in the venv only: the interpreter running the tests does not see them.
    outside = subprocess.run([sys.executable, "-m", "lmctl", "plugins", "list", "--json"], capture_output=True, text=True, cwd=REPO)
    assert "fim" not in {row["name"] for row in json.loads(outside.stdout)}

    # prepare -> train -> eval -> generate with the plugins' tokenizer and family.
    corpus = work / "corpus.txt"
    corpus.write_text(corpus_text(60_000), encoding="utf-8")
    run([*lmctl, "prepare", "--train", str(corpus), "--validation-split", "0.1", "--tokenizer", "byte",
         "--family", "fim", "--block-size", "64", "--out", "data"], cwd=work, env=env)  # fmt: skip
    manifest = json.loads((work / "data" / "manifest.json").read_text())
    assert manifest["family"] == "fim"
    tokenizer = json.loads((work / "data" / "tokenizer" / "tokenizer.json").read_text())
    added = {t["content"] for t in tokenizer["added_tokens"]}
    assert {"<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|endoftext|>"} <= added
    assert len(tokenizer["model"]["vocab"]) == 256 + 4  # bytes + the family's special tokens

    run([*lmctl, "train", "--model", "gpt2", "--from-scratch", "--family", "fim", "--preset", "tiny", "--train", "data",
         "--out", "run", "--max-steps", "60", "--batch-size", "8", "--lr", "3e-3", "--eval-every", "30", "--seed", "0"],
        cwd=work, env=env)  # fmt: skip
    config = json.loads((work / "run" / "config.json").read_text())
    assert config["lmctl_family"] == "fim" and config["model_type"] == "gpt2"
    events = [json.loads(line) for line in (work / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [e["train/loss"] for e in events if "train/loss" in e]
    assert losses[-1] < losses[0]  # it learns

    evaluated = run([*lmctl, "eval", "--model", "run", "--data", "data", "--json"], cwd=work, env=env)
    result = json.loads(evaluated.stdout.splitlines()[0])
    assert result["tokens"] > 0 and 1.0 < result["perplexity"] < 300  # bytes: ln(260) ~ 5.6 nats at chance
    assert result["perplexity"] < 256

    first = run([*lmctl, "generate", "--model", "run", "The ", "--seed", "0", "--max-new-tokens", "20"], cwd=work, env=env)
    second = run([*lmctl, "generate", "--model", "run", "The ", "--seed", "0", "--max-new-tokens", "20"], cwd=work, env=env)
    assert first.stdout and first.stdout == second.stdout
    infill = run([*lmctl, "infill", "--model", "run", "--prefix", "The ", "--suffix", " of the", "--greedy",
                  "--max-new-tokens", "8"], cwd=work, env=env)  # fmt: skip
    assert infill.returncode == 0

    # Uninstall: gone from the listing and the CLI; the model still loads as a causal model.
    removed = run([*lmctl, "plugins", "uninstall", "fim", "lmctl-byte"], cwd=work, env=env)
    assert "uninstalled lmctl-fim (plugins: fim)" in removed.stdout and "uninstalled lmctl-byte" in removed.stdout
    names = {row["name"] for row in json.loads(run([*lmctl, "plugins", "list", "--json"], cwd=work, env=env).stdout)}
    assert not {"fim", "byte"} & names
    gone = run([*lmctl, "infill", "--model", "run", "--prefix", "a"], cwd=work, env=env, check=False)
    assert gone.returncode == 2 and "infill" in gone.stderr
    fallback = run([*lmctl, "generate", "--model", "run", "The ", "--seed", "0", "--max-new-tokens", "5"], cwd=work, env=env)
    assert "family 'fim', which is not installed" in fallback.stderr
    pip_list = run([str(python), "-m", "pip", "list", "--format", "json"], cwd=work, env=env)
    assert not {"lmctl-fim", "lmctl-byte"} & {p["name"].lower() for p in json.loads(pip_list.stdout)}


def test_install_use_and_uninstall_the_prefixlm_test_plugin_in_a_fresh_venv(tmp_path):
    """tests/plugins_fixtures/lmctl-prefixlm as users get it: installed with `lmctl plugins install`,
    then prepare (mixing its .md reader with the built-in text reader), train with its family option
    and its callback, eval, generate through its own Family.generate, check, list, uninstall."""
    python, bindir, lmctl, env, work = fresh_venv(tmp_path)
    source = tmp_path / "lmctl-prefixlm"
    shutil.copytree(REPO / "tests" / "plugins_fixtures" / "lmctl-prefixlm", source,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))  # fmt: skip
    installed = run([*lmctl, "plugins", "install", str(source)], cwd=work, env=env)
    assert "installed plugin 'prefixlm' (lmctl-prefixlm 0.1.0): families: prefixlm; readers: notes (.md); callbacks: prefixlm-log" in installed.stdout
    conflict = ("plugin 'prefixlm' registers data reader 'notes' for .md files, which data reader 'text' of plugin "
                "'lmctl.data.readers' already reads")  # fmt: skip
    listed = run([*lmctl, "plugins", "list", "--json"], cwd=work, env=env)
    assert conflict in listed.stderr  # one warning line at load
    row = next(r for r in json.loads(listed.stdout) if r["name"] == "prefixlm")
    assert row["reader_extensions"] == {"notes": [".md"]} and row["callbacks"] == ["prefixlm-log"]
    assert {o["name"]: o["default"] for o in row["family_options"]["prefixlm"]} == {"label_smoothing": 0.0, "prefix_fraction": 0.25}
    check = run([*lmctl, "plugins", "check"], cwd=work, env=env, check=False)
    assert check.returncode == 1 and conflict in check.stdout + check.stderr

    notes = work / "notes.md"
    notes.write_text("# Notes\n\n" + corpus_text(20_000), encoding="utf-8")
    plain = work / "plain.txt"
    plain.write_text(corpus_text(40_000)[20_000:], encoding="utf-8")
    run([*lmctl, "prepare", "--train", str(notes), "--train", str(plain), "--format", ".md=notes", "--validation-split", "0.1",
         "--tokenizer", "char", "--family", "prefixlm", "--block-size", "64", "--out", "data"], cwd=work, env=env)  # fmt: skip
    manifest = json.loads((work / "data" / "manifest.json").read_text())
    assert [f["format"] for f in manifest["inputs"]["train"]] == ["notes", "text"]

    run([*lmctl, "train", "--model", "gpt2", "--from-scratch", "--family", "prefixlm", "--preset", "tiny", "--train", "data",
         "--family-option", "prefix_fraction=0.5", "--callback", "prefixlm-log", "--out", "run", "--max-steps", "40",
         "--batch-size", "8", "--lr", "3e-3", "--eval-every", "20", "--seed", "0"], cwd=work, env=env)  # fmt: skip
    record = json.loads((work / "run" / "run.json").read_text())
    assert record["callbacks"] == ["prefixlm-log"] and record["resolved"]["family_options"]["prefix_fraction"] == 0.5
    log = [json.loads(line) for line in (work / "run" / "prefixlm-log.jsonl").read_text().splitlines()]
    assert log[0]["event"] == "begin" and log[0]["optimizer_steps"] == 40 and log[-1]["event"] == "end"
    losses = [e["loss"] for e in log if e["event"] == "log"]
    assert losses[-1] < losses[0]  # it learns
    refused = run([*lmctl, "train", "--model", "gpt2", "--from-scratch", "--family", "prefixlm", "--train", "data",
                   "--generator-config", "num_hidden_layers=1", "--out", "x"], cwd=work, env=env, check=False)  # fmt: skip
    assert refused.returncode == 2 and "the 'prefixlm' family has no option 'generator_config'" in refused.stderr

    evaluated = run([*lmctl, "eval", "--model", "run", "--data", "data", "--json"], cwd=work, env=env)
    assert json.loads(evaluated.stdout.splitlines()[0])["tokens"] > 0
    first = run([*lmctl, "generate", "--model", "run", "The ", "--seed", "0", "--max-new-tokens", "12"], cwd=work, env=env)
    second = run([*lmctl, "generate", "--model", "run", "The ", "--seed", "0", "--max-new-tokens", "12"], cwd=work, env=env)
    assert first.stdout and first.stdout == second.stdout

    removed = run([*lmctl, "plugins", "uninstall", "prefixlm"], cwd=work, env=env)
    assert "uninstalled lmctl-prefixlm (plugins: prefixlm)" in removed.stdout
    names = {r["name"] for r in json.loads(run([*lmctl, "plugins", "list", "--json"], cwd=work, env=env).stdout)}
    assert "prefixlm" not in names
    gone = run([*lmctl, "train", "--model", "gpt2", "--from-scratch", "--train", "data", "--callback", "prefixlm-log",
                "--out", "y"], cwd=work, env=env, check=False)  # fmt: skip
    assert gone.returncode == 2 and "unknown --callback 'prefixlm-log'" in gone.stderr
