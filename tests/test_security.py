"""Untrusted files and inputs: nothing a model directory, a checkpoint, a file name or a prompt holds
can run code, reach the network when told not to, or be read as markup or shell.

* Weights load from safetensors; a ``pytorch_model.bin`` is only ever unpickled by torch's
  ``weights_only`` loader, which refuses anything but tensors (one error line, nothing executed).
* Checkpoints hold optimizer and RNG state as safetensors + JSON; lmctl's own code never calls
  ``pickle``/``torch.load``/``eval``/``exec``, nor a shell (checked on the source below).
* A model directory's own Python code (``auto_map`` in config.json) runs only with
  ``--trust-remote-code``.
* ``--offline`` / ``HF_HUB_OFFLINE=1``: no connection is even attempted.
* Plugins load only from installed entry points and honour ``LMCTL_LOAD_PLUGINS`` /
  ``LMCTL_DISABLE_PLUGINS``: tests/test_plugins.py::test_load_and_disable_lists and
  ::test_load_list_in_a_fresh_process.
* Prompts, file names, model names and text containing rich markup are printed literally.
"""

from __future__ import annotations

import ast
import json
import os
import pty
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmctl.cli.app import app
from tests.conftest import REPO, corpus_text, write_prepared
from tests.test_plugins import plugin_site, write_distribution  # noqa: F401 - plugin_site is a fixture

SOURCES = sorted((REPO / "lmctl").rglob("*.py"))
runner = CliRunner()


def error_line(result) -> str:
    """The one ``error:`` line of a failed command (and no traceback)."""
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    return errors[0]


# --- the source: no unpickling, no shell, no eval, safe loader arguments ----------------------------


def calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return "?"


def keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


UNPICKLERS = {"dill", "cloudpickle", "marshal", "shelve", "joblib"}


def test_source_never_unpickles_runs_a_shell_or_evals():
    problems = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        where = path.relative_to(REPO)
        for node in ast.walk(tree):
            # pickle itself may be imported for its exception classes (to report a refused file).
            if isinstance(node, ast.Import) and any(a.name.split(".")[0] in UNPICKLERS for a in node.names):
                problems.append(f"{where}:{node.lineno}: imports {[a.name for a in node.names]}")
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNPICKLERS | {"pickle"}:
                if any(not a.name.endswith("Error") for a in node.names):
                    problems.append(f"{where}:{node.lineno}: imports {[a.name for a in node.names]} from {node.module}")
        for call in calls(tree):
            name = dotted(call.func)
            line = f"{where}:{call.lineno}: {name}"
            if name in ("eval", "exec", "os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"):
                problems.append(line)
            if name in ("pickle.load", "pickle.loads", "pickle.Unpickler"):
                problems.append(line)
            if name == "torch.load":
                weights_only = keyword(call, "weights_only")
                if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                    problems.append(f"{line} without weights_only=True")
            shell = keyword(call, "shell")
            if shell is not None and not (isinstance(shell, ast.Constant) and shell.value is False):
                problems.append(f"{line} with shell=")
            if name.split(".")[-1] in ("run", "Popen", "call", "check_call", "check_output") and name.startswith("subprocess"):
                if call.args and isinstance(call.args[0], (ast.Constant, ast.JoinedStr, ast.BinOp)):
                    problems.append(f"{line} with a command string (a shell would parse it)")
            if name.endswith("from_pretrained"):
                for arg, unsafe in (("trust_remote_code", True), ("use_safetensors", False), ("weights_only", False)):
                    value = keyword(call, arg)
                    if isinstance(value, ast.Constant) and value.value is unsafe:
                        problems.append(f"{line} with {arg}={unsafe}")
    assert problems == []


def test_trust_remote_code_is_off_unless_asked_for():
    from lmctl.workflows.evaluate import EvalConfig
    from lmctl.workflows.generate import GenerateConfig
    from lmctl.workflows.train.config import TrainConfig

    assert TrainConfig().trust_remote_code is False
    assert EvalConfig(models=["m"], data=["d"]).trust_remote_code is False
    assert GenerateConfig(models=["m"]).trust_remote_code is False
    for command in ("train", "eval", "generate"):
        help_text = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"}).stdout
        assert "--trust-remote-code" in help_text


# --- pickled weights --------------------------------------------------------------------------------


class RunsCode:
    """A pickle payload: unpickling it creates a file (what a malicious checkpoint would do, harmlessly)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def bin_only_copy(source: Path, target: Path) -> Path:
    """The model with its weights as pytorch_model.bin (a legitimate pickle of tensors) instead of safetensors."""
    import torch
    from safetensors.torch import load_file

    shutil.copytree(source, target)
    state = load_file(target / "model.safetensors")
    (target / "model.safetensors").unlink()
    torch.save(state, target / "pytorch_model.bin")
    return target


def greedy_text(model: Path) -> str:
    result = runner.invoke(app, ["generate", "--model", str(model), "The", "-n", "8", "--greedy", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["text"]


def test_pytorch_bin_is_read_by_the_weights_only_unpickler(tiny_model_dir, tmp_path, monkeypatch):
    import torch

    source = tiny_model_dir("causal")
    legacy = bin_only_copy(source, tmp_path / "legacy")
    seen = []
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    assert greedy_text(legacy) == greedy_text(source)  # the same weights, loaded
    assert seen and all(flag is True for flag in seen), seen


@pytest.mark.parametrize("container", ["zip", "legacy-pickle"])
def test_a_pickle_that_runs_code_is_refused(tiny_model_dir, tmp_path, container):
    import pickle

    import torch

    marker = tmp_path / "code-ran"
    evil = bin_only_copy(tiny_model_dir("causal"), tmp_path / "evil")
    payload = {"transformer.wte.weight": RunsCode(marker)}
    if container == "zip":
        torch.save(payload, evil / "pytorch_model.bin")
    else:
        (evil / "pytorch_model.bin").write_bytes(pickle.dumps(payload))
    assert not marker.exists()
    data = write_prepared(tmp_path / "data", tiny_model_dir_tokenizer(evil), "causal", corpus_text(5_000))
    for args in (["generate", "--model", str(evil), "hi"], ["eval", "--model", str(evil), "--data", str(data)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1
        line = error_line(result)
        assert f"refused to load the weights of {evil}" in line and "pytorch_model.bin" in line and "safetensors" in line
        assert "warning" not in result.stderr.lower()  # torch's own unpickler warning is not shown
    assert not marker.exists()


def tiny_model_dir_tokenizer(model: Path):
    from lmctl.core.hub import load_tokenizer

    return load_tokenizer(str(model))


def test_safetensors_is_preferred_to_a_pickle_next_to_it(tiny_model_dir, tmp_path):
    import torch

    source = tiny_model_dir("causal")
    both = tmp_path / "both"
    shutil.copytree(source, both)
    marker = tmp_path / "code-ran"
    torch.save({"x": RunsCode(marker)}, both / "pytorch_model.bin")
    assert greedy_text(both) == greedy_text(source)
    assert not marker.exists()


# --- code in a model directory (auto_map) -----------------------------------------------------------


def remote_code_model(source: Path, target: Path, marker: Path, model_type: str) -> Path:
    """A model directory whose config.json points at its own Python file, which leaves ``marker``
    behind when imported."""
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    config["model_type"] = model_type
    config["auto_map"] = {"AutoConfig": "custom_code.CustomConfig", "AutoModelForCausalLM": "custom_code.CustomModel"}
    (target / "config.json").write_text(json.dumps(config))
    (target / "custom_code.py").write_text(
        textwrap.dedent(f"""
            import pathlib
            pathlib.Path({str(marker)!r}).write_text("the model's own code ran")

            from transformers import GPT2Config, GPT2LMHeadModel

            class CustomConfig(GPT2Config):
                model_type = {model_type!r}

            class CustomModel(GPT2LMHeadModel):
                config_class = CustomConfig
        """)
    )
    return target


def test_model_code_never_runs_without_trust_remote_code(tiny_model_dir, tmp_path):
    marker = tmp_path / "code-ran"
    model = remote_code_model(tiny_model_dir("causal"), tmp_path / "custom", marker, "custom-lm")
    data = write_prepared(tmp_path / "data", tiny_model_dir_tokenizer(model), "causal", corpus_text(5_000))
    commands = [
        ["generate", "--model", str(model), "hi"],
        ["eval", "--model", str(model), "--data", str(data)],
        ["train", "--model", str(model), "--train", str(data), "--out", str(tmp_path / "run"), "--max-steps", "1", "--quiet"],
    ]
    for args in commands:
        result = runner.invoke(app, args, env={"LMCTL_CACHE": str(tmp_path / "cache")})
        assert result.exit_code == 2, (args[0], result.output)
        line = error_line(result)
        assert str(model) in line and "--trust-remote-code" in line and "auto_map" in line
    assert not marker.exists()

    # A model of a type transformers knows loads with its built-in class: the file is never imported.
    known = remote_code_model(tiny_model_dir("causal"), tmp_path / "known", marker, "gpt2")
    assert greedy_text(known) == greedy_text(tiny_model_dir("causal"))
    assert not marker.exists()


def test_trust_remote_code_is_what_lets_it_run(tiny_model_dir, tmp_path):
    """The flag is the gate: with it, the same directory's code runs (in a fresh process, with the
    Hugging Face module cache in a temporary directory)."""
    marker = tmp_path / "code-ran"
    model = remote_code_model(tiny_model_dir("causal"), tmp_path / "custom", marker, "custom-lm")
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "lmctl", "generate", "--model", str(model), "hi", "-n", "3", "--trust-remote-code"],
                          capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert marker.read_text() == "the model's own code ran"


# --- offline means no network -----------------------------------------------------------------------

NETWORK_GUARD = """
import socket, sys
def refuse(*args, **kwargs):
    with open(sys.argv[1], "a") as log:
        log.write(repr(args[1:2]) + "\\n")
    raise OSError(101, "network access in an offline test")
socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse
sys.argv = ["lmctl", *sys.argv[2:]]
from lmctl.cli.app import main
main()
"""


@pytest.fixture(scope="module")
def offline_world(tmp_path_factory, tokenizer_for):
    root = tmp_path_factory.mktemp("offline")
    (root / "corpus.txt").write_text(corpus_text(5_000))
    write_prepared(root / "prepared", tokenizer_for("causal"), "causal", corpus_text(5_000))
    return root


@pytest.mark.parametrize(
    ("how", "args"),
    [
        ("flag", ["generate", "--model", "some-org/some-model", "hello", "--offline"]),
        ("flag", ["eval", "--model", "some-org/some-model", "--data", "{root}/prepared", "--offline"]),
        ("flag", ["train", "--model", "some-org/some-model", "--train", "{root}/prepared", "--out", "{tmp}/run", "--offline"]),
        ("flag", ["prepare", "--train", "{root}/corpus.txt", "--tokenizer", "some-org/some-tokenizer", "--out", "{tmp}/o", "--offline"]),
        ("env", ["generate", "--model", "some-org/some-model", "hello"]),
        ("env", ["train", "--model", "gpt2", "--train", "{root}/prepared", "--out", "{tmp}/run"]),
    ],
    ids=["generate", "eval", "train", "prepare", "generate-env", "train-env"],
)
def test_offline_attempts_no_connection(offline_world, tmp_path, how, args):
    """Every socket connection and DNS lookup is refused and logged: offline, the log stays empty
    and the error is the one clean offline line."""
    connections = tmp_path / "connections.log"
    args = [a.format(root=offline_world, tmp=tmp_path) for a in args]
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")}
    env.update(PYTHONPATH=str(REPO), HF_HOME=str(tmp_path / "hf"), LMCTL_CACHE=str(tmp_path / "cache"))
    if how == "env":
        env["HF_HUB_OFFLINE"] = "1"
    done = subprocess.run([sys.executable, "-c", NETWORK_GUARD, str(connections), *args],
                          capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert not connections.exists(), connections.read_text()
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: ") and sum(line.startswith("error: ") for line in lines) == 1, done.stderr
    assert "offline mode is on" in lines[-1] and "Traceback" not in done.stderr


def test_offline_switch_reaches_an_already_imported_hub_client(monkeypatch):
    """Library use: huggingface_hub reads HF_HUB_OFFLINE once, at import; apply_offline(True) must
    still switch it on afterwards."""
    import huggingface_hub.constants as hub_constants

    from lmctl.core.hub import apply_offline

    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(key, "0")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    assert not hub_constants.is_offline_mode()
    apply_offline(True)
    assert hub_constants.is_offline_mode() and os.environ["HF_HUB_OFFLINE"] == "1"


# --- user text is data: never markup, never shell ---------------------------------------------------

MARKUP = "[bold red]x[/]"


def test_error_lines_print_file_names_literally(tmp_path):
    name = "[bold red]nope[/].txt"
    result = runner.invoke(app, ["prepare", "--train", str(tmp_path / name), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and name in error_line(result)


def test_prepare_report_prints_names_literally(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = Path("[link=https:evil.example]corpus.txt")
    source.write_text(corpus_text(5_000))
    out = "[bold red]prepared"
    result = runner.invoke(app, ["prepare", "--train", str(source), "--tokenizer", str(tiny_model_dir("causal")),
                                 "--block-size", "32", "--out", out], env={"COLUMNS": "200"})  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"prepared {out} in" in result.stdout


def test_eval_table_prints_model_names_literally(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = "[bold red]m"
    shutil.copytree(tiny_model_dir("causal"), model)
    data = write_prepared(tmp_path / "d", tiny_model_dir_tokenizer(Path(model)), "causal", corpus_text(3_000))
    result = runner.invoke(app, ["eval", "--model", model, "--data", str(data), "--max-batches", "1"])
    assert result.exit_code == 0, result.output
    assert model in result.stdout and f"evaluated {model}:" in result.stderr


def test_plugins_list_prints_plugin_names_literally(plugin_site):  # noqa: F811 - the fixture
    name = "evil[bold red]plugin"
    write_distribution(plugin_site, "lmctl-evil", "1.0", {name: "evil_plugin"}, {"evil_plugin": "VALUE = 1\n"})
    result = runner.invoke(app, ["plugins", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert name in result.stdout


def run_on_a_terminal(args: list[str], cwd: Path) -> tuple[int, str]:
    """``python -m lmctl ARGS`` with stdout on a pseudo-terminal (rich tables are for terminals only)."""
    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lmctl", *args], stdout=slave, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, env=env, cwd=cwd)  # fmt: skip
    os.close(slave)
    out = b""
    try:
        while chunk := os.read(master, 65536):
            out += chunk
    except OSError:  # EIO: the process closed the terminal
        pass
    finally:
        os.close(master)
    code = proc.wait(timeout=300)
    return code, re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.decode("utf-8", "replace"))


def test_generate_table_on_a_terminal_prints_prompts_and_names_literally(tiny_model_dir, tmp_path):
    for name in ("[bold red]model-a", "[link=https:evil.example]model-b"):
        shutil.copytree(tiny_model_dir("causal"), tmp_path / name)
    code, shown = run_on_a_terminal(
        ["generate", "--model", "[bold red]model-a", "--model", "[link=https:evil.example]model-b", MARKUP, "-n", "3", "--greedy"],
        tmp_path,
    )
    assert code == 0, shown
    assert "┃ [bold red]model-a" in shown and "[link=https:evil.example]model-b ┃" in shown
    assert f"│ {MARKUP}" in shown
