"""The plugin system as a third party meets it: entry points, every hook, broken plugins, allow and
block lists, ``lmctl plugins list/install/uninstall/check``.

Installed plugins are simulated the way Python itself sees them: a directory on ``sys.path`` (or
``PYTHONPATH`` for subprocesses) holding the plugin module and a ``*.dist-info`` with
``entry_points.txt`` and ``METADATA``, exactly what ``pip install`` leaves behind.  Nothing is
installed into the environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import REPO, corpus_text, write_prepared

FIXTURE_SITE = REPO / "tests" / "plugins_fixtures" / "installed"
FIXTURE_PLUGINS = ("broken-import", "bad-signature", "duplicate-family", "command-clash")
BUILTIN_FAMILIES = {"causal", "masked", "permuted", "electra"}


# --- helpers ----------------------------------------------------------------------------------------


def write_distribution(site: Path, dist: str, version: str, entry_points: dict[str, str], modules: dict[str, str]) -> Path:
    """Write plugin modules and a ``DIST-VERSION.dist-info`` with ``[lmctl]`` entry points into ``site``."""
    site.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n", encoding="utf-8")
    lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[lmctl]\n{lines}", encoding="utf-8")
    return site


@pytest.fixture
def plugin_site(tmp_path, monkeypatch):
    """A fresh directory on sys.path for fake installed plugins; the registry is rebuilt around the test."""
    from lmctl.plugins.registry import reset_registry

    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("LMCTL_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("LMCTL_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("LMCTL_QUIET_PLUGIN_WARNINGS", raising=False)
    before = set(sys.modules)
    reset_registry()
    yield site
    reset_registry()
    for name in set(sys.modules) - before:
        if name.startswith("lmctl_") or name.startswith("toy_"):
            del sys.modules[name]


@pytest.fixture
def fixture_plugins(monkeypatch):
    """The broken plugins shipped in tests/plugins_fixtures/installed, on sys.path."""
    from lmctl.plugins.registry import reset_registry

    monkeypatch.syspath_prepend(str(FIXTURE_SITE))
    monkeypatch.delenv("LMCTL_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("LMCTL_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("LMCTL_QUIET_PLUGIN_WARNINGS", raising=False)
    reset_registry()
    yield FIXTURE_SITE
    reset_registry()
    for name in list(sys.modules):
        if name.startswith(("lmctl_broken", "lmctl_bad", "lmctl_duplicate", "lmctl_command")):
            del sys.modules[name]


@pytest.fixture
def scratch_root_app(monkeypatch):
    """lmctl's root app with its command lists copied, so plugin commands added in a test vanish after it."""
    from lmctl.cli.app import app

    monkeypatch.setattr(app, "registered_commands", list(app.registered_commands))
    monkeypatch.setattr(app, "registered_groups", list(app.registered_groups))
    monkeypatch.delattr(app, "_lmctl_plugin_registry", raising=False)
    return app


def run_lmctl(*args: str, pythonpath: Path | str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m lmctl ARGS`` in a fresh process (the real console entry: plugin commands included)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LMCTL_")}
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(pythonpath) if pythonpath else "", str(REPO)) if p)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "lmctl", *args], capture_output=True, text=True, env=full_env, cwd=REPO, timeout=120
    )


def warning_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning:")]


TOY_FAMILY = '''
    """A third-party family: causal LM with its own name, claiming a made-up architecture."""
    from lmctl.families.causal import CausalFamily
    from lmctl.hookspecs import hookimpl

    class ToyFamily(CausalFamily):
        name = "toy"
        aliases = ("toy-lm",)
        description = "A toy family registered by a test plugin."
        model_types = ("toy",)
        architectures = ("ToyForCausalLM",)
        architecture_suffixes = ()

    @hookimpl
    def register_families(register):
        register(ToyFamily())
'''


# --- one test per hook (tests/test_hooks_documented.py checks they exist) ---------------------------


def test_hook_register_families(plugin_site):
    """Issue 2: a fake family plugin, registered through the hook as a third party would, shows up in
    `lmctl plugins list` (in-process and in a fresh process) and in family resolution."""
    from lmctl.cli.app import app
    from lmctl.families.base import Family
    from lmctl.plugins.registry import family_for_config, get_family, get_registry, resolve_family

    write_distribution(plugin_site, "lmctl-toy", "1.2.3", {"toy": "toy_family"}, {"toy_family": TOY_FAMILY})

    family = get_family("toy")
    assert isinstance(family, Family) and family.name == "toy"
    assert get_family("toy-lm") is family
    assert family_for_config({"architectures": ["ToyForCausalLM"], "model_type": "toy"}) is family
    assert family_for_config({"model_type": "toy"}) is family
    assert resolve_family("toy", family="toy") is family
    # Built-ins are untouched and still resolve.
    assert family_for_config({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}).name == "causal"
    assert get_registry().family_plugin["toy"] == "toy"

    result = CliRunner().invoke(app, ["plugins", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["toy"]["families"] == ["toy"]
    assert rows["toy"]["version"] == "1.2.3" and rows["toy"]["distribution"] == "lmctl-toy"
    assert rows["toy"]["hooks"] == ["register_families"] and rows["toy"]["builtin"] is False
    # The four built-in families are plugins too and always listed.
    assert {f for row in rows.values() if row["builtin"] for f in row["families"]} == BUILTIN_FAMILIES

    table = CliRunner().invoke(app, ["plugins", "list"])
    assert table.exit_code == 0 and "toy" in table.stdout and "1.2.3" in table.stdout

    fresh = run_lmctl("plugins", "list", "--json", pythonpath=plugin_site)
    assert fresh.returncode == 0, fresh.stderr
    assert [row["families"] for row in json.loads(fresh.stdout) if row["name"] == "toy"] == [["toy"]]
    assert warning_lines(fresh.stderr) == []


def test_hook_register_commands(plugin_site, scratch_root_app):
    from lmctl.cli.app import add_plugin_commands
    from lmctl.plugins.registry import get_registry

    source = '''
        import typer
        from lmctl.hookspecs import hookimpl

        @hookimpl
        def register_commands(app):
            @app.command("hello")
            def hello(name: str = typer.Option("world", "--name")):
                """Say hello (a plugin command)."""
                typer.echo(f"hello {name}")

            sub = typer.Typer(help="A command group from a plugin.")

            @sub.command("ping")
            def ping():
                typer.echo("pong")

            app.add_typer(sub, name="toolbox")
            app.add_typer(typer.Typer(), name="plugins")  # a built-in group: must be refused
    '''
    write_distribution(plugin_site, "lmctl-hello", "0.1.0", {"hello": "lmctl_hello_cmds"}, {"lmctl_hello_cmds": source})
    add_plugin_commands(scratch_root_app)
    runner = CliRunner()
    assert runner.invoke(scratch_root_app, ["hello", "--name", "lmctl"]).stdout == "hello lmctl\n"
    assert runner.invoke(scratch_root_app, ["toolbox", "ping"]).stdout == "pong\n"
    assert get_registry().plugins["hello"].commands == ["hello", "toolbox"]
    assert get_registry().problems_by_plugin["hello"] == ["plugin 'hello' tried to replace the command 'plugins'; skipped"]
    listing = runner.invoke(scratch_root_app, ["plugins", "list"])  # the real `plugins` group survived
    assert listing.exit_code == 0 and "commands: hello, toolbox" in listing.stdout

    fresh = run_lmctl("hello", "--name", "subprocess", pythonpath=plugin_site)
    assert fresh.returncode == 0 and fresh.stdout == "hello subprocess\n"


def test_hook_register_tokenizer_trainers(plugin_site):
    """A trainer from a plugin is registered, attributed, listed, and produces a working tokenizer."""
    from lmctl.cli.app import app
    from lmctl.data.tokenizer_trainers import as_transformers_tokenizer
    from lmctl.plugins.registry import get_registry

    source = '''
        from lmctl.hookspecs import hookimpl

        def train_words(texts, *, vocab_size, special_tokens):
            """Word-level: the most frequent whitespace-separated words (NeMo's LM tutorial tokenizer)."""
            from collections import Counter
            from tokenizers import Tokenizer, decoders, models, pre_tokenizers

            counts = Counter(w for text in texts for w in text.split())
            unk = special_tokens.get("unk_token", "<unk>")
            vocab = {t: i for i, t in enumerate(dict.fromkeys([*special_tokens.values(), unk]))}
            for word, _ in counts.most_common(max(0, vocab_size - len(vocab))):
                vocab.setdefault(word, len(vocab))
            tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
            tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
            tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
            return tok

        @hookimpl
        def register_tokenizer_trainers(register):
            register("words", train_words)
    '''
    write_distribution(plugin_site, "lmctl-words", "0.2.0", {"words": "lmctl_words_trainer"}, {"lmctl_words_trainer": source})
    registry = get_registry()
    train_fn = registry.tokenizer_trainers["words"]
    assert registry.plugins["words"].tokenizer_trainers == ["words"]
    special = {"eos_token": "<eos>", "unk_token": "<unk>"}
    tokenizer = as_transformers_tokenizer(train_fn(iter(["the cat sat", "the dog sat on the cat"]), vocab_size=10, special_tokens=special), special)
    assert tokenizer.convert_ids_to_tokens(tokenizer("the cat", add_special_tokens=False)["input_ids"]) == ["the", "cat"]
    assert tokenizer("zebra", add_special_tokens=False)["input_ids"] == [tokenizer.unk_token_id]
    rows = json.loads(CliRunner().invoke(app, ["plugins", "list", "--json"]).stdout)
    assert [r["tokenizer_trainers"] for r in rows if r["name"] == "words"] == [["words"]]

    from lmctl.plugins.check import check_plugins

    assert check_plugins(["words"]).ok

    # Through the real command: `lmctl prepare --tokenizer words`.
    import numpy as np
    from transformers import AutoTokenizer

    corpus = plugin_site.parent / "corpus.txt"
    corpus.write_text("the cat sat on the mat\n\nthe dog sat on the log\n", encoding="utf-8")
    out = plugin_site.parent / "data"
    run = CliRunner().invoke(app, ["prepare", "--train", str(corpus), "--tokenizer", "words", "--vocab-size", "100", "--block-size", "4", "--out", str(out)])
    assert run.exit_code == 0, run.output
    saved = AutoTokenizer.from_pretrained(out / "tokenizer")
    ids = np.fromfile(out / "train.bin", dtype=json.loads((out / "manifest.json").read_text())["dtype"]).tolist()
    eos = saved.eos_token_id
    # Each paragraph after the separator, one token per word (an independent re-count).
    assert ids == [eos, *saved.convert_tokens_to_ids("the cat sat on the mat".split()), eos, *saved.convert_tokens_to_ids("the dog sat on the log".split())]
    assert saved.unk_token_id not in ids


def test_hook_register_data_readers(plugin_site, tmp_path):
    """A reader from a plugin is registered by format name with normalised extensions, and reads files."""
    from lmctl.plugins.registry import get_registry

    source = '''
        from lmctl.hookspecs import hookimpl

        def read_srt(path, *, text_column=None, encoding_errors="strict", document_split=None):
            """SubRip subtitles: one document per file, cue numbers and timings dropped."""
            lines = []
            with open(path, encoding="utf-8", errors=encoding_errors) as f:
                for line in f:
                    line = line.strip()
                    if line and not line.isdigit() and "-->" not in line:
                        lines.append(line)
            yield "\\n".join(lines)

        @hookimpl
        def register_data_readers(register):
            register("srt", ("srt",), read_srt)
    '''
    write_distribution(plugin_site, "lmctl-srt", "0.1.0", {"srt": "lmctl_srt_reader"}, {"lmctl_srt_reader": source})
    reader = get_registry().data_readers["srt"]
    assert reader.extensions == (".srt",) and reader.plugin == "srt"
    subtitle = tmp_path / "film.srt"
    subtitle.write_text("1\n00:00:01,000 --> 00:00:02,000\nHello there.\n\n2\n00:00:03,000 --> 00:00:04,000\nGeneral Kenobi!\n")
    docs = list(reader.read(str(subtitle), text_column="text", encoding_errors="strict", document_split="file"))
    assert docs == ["Hello there.\nGeneral Kenobi!"]

    from lmctl.plugins.check import check_plugins

    assert check_plugins(["srt"]).ok

    # Through the real command: `lmctl prepare film.srt` picks the reader from the extension.
    import numpy as np
    from transformers import AutoTokenizer

    from lmctl.cli.app import app

    out = tmp_path / "data"
    run = CliRunner().invoke(app, ["prepare", "--train", str(subtitle), "--tokenizer", "char", "--block-size", "8", "--out", str(out)])
    assert run.exit_code == 0, run.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["train"]["documents"] == 1
    saved = AutoTokenizer.from_pretrained(out / "tokenizer")
    ids = np.fromfile(out / "train.bin", dtype=manifest["dtype"]).tolist()
    assert ids[0] == saved.eos_token_id
    assert saved.decode(ids[1:]) == "Hello there.\nGeneral Kenobi!"  # no cue numbers, no timings


def test_hook_register_callbacks(plugin_site, tmp_path, tokenizer_for):
    """A callback registered through the hook runs only when the run chooses it by name, and
    receives the trainer's events as dicts: stable keys, the run directory and the model from the
    start (a tiny real run, through the CLI).  run.json records which callbacks ran."""
    from lmctl.cli.app import app
    from lmctl.plugins.registry import get_registry

    source = '''
        import os

        from lmctl.hookspecs import hookimpl

        class Recorder:
            events = []

            def on_train_begin(self, info):
                assert os.path.isdir(info["out"])  # the run directory exists from the start
                self.events.append(("begin", info))

            def on_log(self, metrics):
                self.events.append(("log", metrics))

            def on_save(self, info):
                self.events.append(("save", info))

            def on_train_end(self, info):
                self.events.append(("end", info))

        class Named:
            name = "named"

        @hookimpl
        def register_callbacks(register):
            register(Recorder())  # named after the plugin: "recorder"
            register(Named())  # its own name attribute
            register(Named(), name="named")  # taken: refused with a warning
    '''
    write_distribution(plugin_site, "lmctl-recorder", "0.1.0", {"recorder": "lmctl_recorder_cb"}, {"lmctl_recorder_cb": source})
    registry = get_registry()
    assert registry.plugins["recorder"].callbacks == ["recorder", "named"]
    assert any("callback 'named', which plugin 'recorder' already provides" in p for p in registry.problems)
    recorder = registry.callbacks["recorder"]
    prepared = write_prepared(tmp_path / "data", tokenizer_for("causal"), "causal", corpus_text(8_000))
    base = ["train", "--model", "gpt2", "--from-scratch", "--preset", "tiny", "--train", str(prepared), "--max-steps", "4",
            "--batch-size", "4", "--block-size", "32", "--log-every", "2", "--save-every", "2", "--eval-every", "0",
            "--dropout", "0", "--quiet"]  # fmt: skip

    # Not chosen: it does not run.
    unchosen = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "plain")])
    assert unchosen.exit_code == 0, unchosen.output
    assert recorder.events == []
    assert json.loads((tmp_path / "plain" / "run.json").read_text())["callbacks"] == []
    # An unknown name: one line, exit 2, nothing trained.
    unknown = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "bad"), "--callback", "nope"])
    assert unknown.exit_code == 2 and "unknown --callback 'nope'; installed callbacks: named, recorder" in unknown.output
    assert not (tmp_path / "bad").exists()

    run = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "run"), "--callback", "recorder"])
    assert run.exit_code == 0, run.output
    kinds = [kind for kind, _ in recorder.events]
    assert kinds[0] == "begin" and kinds[-1] == "end"
    assert all(isinstance(info, dict) for _, info in recorder.events)
    begin = recorder.events[0][1]
    assert begin["out"] == str(tmp_path / "run") and begin["family"] == "causal" and begin["model_name"] == "gpt2"
    assert (begin["block_size"], begin["micro_batch"], begin["grad_accum"], begin["world_size"]) == (32, 4, 1, 1)
    assert (begin["global_batch"], begin["optimizer_steps"], begin["tokens_per_step"]) == (4, 4, 128)
    assert begin["parameters"] == sum(p.numel() for p in begin["model"].parameters())
    assert begin["callbacks"] == ["recorder"] and begin["plan"]["block size"] == 32
    logs = [info for kind, info in recorder.events if kind == "log" and "train/loss" in info]
    assert [log["step"] for log in logs] == [2, 4]
    # The same events the trainer writes to metrics.jsonl.
    written = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [e for e in written if "train/loss" in e] == logs
    saves = [info for kind, info in recorder.events if kind == "save"]
    assert saves and all(Path(info["path"]).is_dir() and info["out"] == str(tmp_path / "run") for info in saves)
    end = recorder.events[-1][1]
    assert end["steps"] == 4 and end["out"] == str(tmp_path / "run") and end["model"] is begin["model"]
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["callbacks"] == ["recorder"] and record["callbacks_failed"] == {}
    assert record["config"]["callbacks"] == ["recorder"]


# --- broken plugins ------------------------------------------------------------------------------


def test_each_broken_plugin_is_one_warning_line_and_skipped(fixture_plugins, capsys):
    from lmctl.plugins.registry import get_family, get_registry

    registry = get_registry()
    stderr = capsys.readouterr().err
    lines = warning_lines(stderr)
    assert len(lines) == len(stderr.splitlines()) == 3  # command-clash is reported when commands are added
    by_plugin = {name: [line for line in lines if f"plugin '{name}'" in line] for name in FIXTURE_PLUGINS}
    assert "ModuleNotFoundError" in by_plugin["broken-import"][0] and "lmctl-broken-import" in by_plugin["broken-import"][0]
    assert "register_families() takes unknown argument(s) registr" in by_plugin["bad-signature"][0]
    assert "registers family 'causal'" in by_plugin["duplicate-family"][0]
    assert "lmctl.families.causal" in by_plugin["duplicate-family"][0]
    assert all(len(v) == 1 for k, v in by_plugin.items() if k != "command-clash")
    # Skipped: not loaded (import error, bad signature), or loaded without the taken family.
    assert "broken-import" not in registry.plugins and "bad-signature" not in registry.plugins
    assert registry.plugins["duplicate-family"].families == []
    assert type(get_family("causal")).__module__ == "lmctl.families.causal"
    assert set(registry.families) == BUILTIN_FAMILIES


def test_misnamed_hook_and_raising_hook_are_reported(plugin_site, capsys):
    from lmctl.plugins.registry import get_registry

    write_distribution(plugin_site, "lmctl-typo", "0.1.0", {"typo": "lmctl_typo"}, {"lmctl_typo": '''
        from lmctl.hookspecs import hookimpl

        @hookimpl
        def register_familys(register):  # not a hook lmctl has
            pass
    '''})  # fmt: skip
    write_distribution(plugin_site, "lmctl-raises", "0.1.0", {"raises": "lmctl_raises"}, {"lmctl_raises": '''
        from lmctl.hookspecs import hookimpl

        @hookimpl
        def register_tokenizer_trainers(register):
            raise RuntimeError("boom\\nsecond line")
    '''})  # fmt: skip
    write_distribution(plugin_site, "lmctl-exits", "0.1.0", {"exits": "lmctl_exits"}, {"lmctl_exits": "import sys\nsys.exit(3)\n"})
    registry = get_registry()
    lines = warning_lines(capsys.readouterr().err)
    assert len(lines) == 3
    assert any("plugin 'typo'" in line and "register_familys" in line for line in lines)
    assert any("plugin 'raises' failed in register_tokenizer_trainers(): RuntimeError: boom second line" in line for line in lines)
    assert any("plugin 'exits'" in line and "SystemExit" in line for line in lines)
    assert "typo" not in registry.plugins and "exits" not in registry.plugins
    assert "raises" in registry.plugins and "bytelevel-bpe" in registry.tokenizer_trainers


def test_broken_plugins_do_not_break_the_cli():
    """The shipped broken plugins: --help, every command's --help and `plugins list` still work."""
    help_run = run_lmctl("--help", pythonpath=FIXTURE_SITE)
    assert help_run.returncode == 0, help_run.stderr
    assert "Traceback" not in help_run.stderr
    lines = warning_lines(help_run.stderr)
    assert len(lines) == len(help_run.stderr.splitlines()) == 4  # one line per broken plugin
    for name in FIXTURE_PLUGINS:
        assert sum(f"plugin '{name}'" in line for line in lines) == 1
    for command in ("prepare", "train", "eval", "generate", "plugins"):
        assert f" {command} " in help_run.stdout
    for command in ("prepare", "train", "eval", "generate", "plugins list"):
        run = run_lmctl(*command.split(), "--help", pythonpath=FIXTURE_SITE)
        assert run.returncode == 0, (command, run.stderr)
    listing = run_lmctl("plugins", "list", "--json", pythonpath=FIXTURE_SITE)
    assert listing.returncode == 0
    names = {row["name"] for row in json.loads(listing.stdout)}
    assert {"duplicate-family", "command-clash"} <= names and not {"broken-import", "bad-signature"} & names
    # A plugin cannot replace a built-in command: `train` is still lmctl's.
    train_help = run_lmctl("train", "--help", pythonpath=FIXTURE_SITE)
    assert "HIJACKED" not in train_help.stdout and "--max-steps" in train_help.stdout
    assert run_lmctl("clash-hello", pythonpath=FIXTURE_SITE).stdout == "hello from command-clash\n"


def test_plugin_cannot_replace_a_builtin_command(fixture_plugins, scratch_root_app, capsys, monkeypatch):
    from lmctl.plugins.commands import BUILTIN_COMMANDS, add_plugin_commands
    from lmctl.plugins.registry import get_registry, reset_registry

    monkeypatch.setenv("LMCTL_LOAD_PLUGINS", "command-clash")
    reset_registry()
    add_plugin_commands(scratch_root_app)
    lines = warning_lines(capsys.readouterr().err)
    assert lines == ["warning: plugin 'command-clash' tried to replace the command 'train'; skipped"]
    names = [c.name for c in scratch_root_app.registered_commands]
    assert names.count("train") == 1 and "clash-hello" in names
    train = next(c for c in scratch_root_app.registered_commands if c.name == "train")
    assert train.callback.__module__ == "lmctl.cli.train"
    assert get_registry().plugins["command-clash"].commands == ["clash-hello"]
    assert "train" in BUILTIN_COMMANDS


# --- allow and block lists -------------------------------------------------------------------------


def _two_plugins(site: Path) -> None:
    for letter in "ab":
        write_distribution(site, f"lmctl-{letter}", "1.0", {f"plugin-{letter}": f"lmctl_plug_{letter}"}, {f"lmctl_plug_{letter}": '''
            from lmctl.hookspecs import hookimpl

            @hookimpl
            def register_callbacks(register):
                register(object())
        '''})  # fmt: skip


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, {"plugin-a", "plugin-b"}),
        ({"LMCTL_LOAD_PLUGINS": "plugin-a"}, {"plugin-a"}),
        ({"LMCTL_LOAD_PLUGINS": "LMCTL_B"}, {"plugin-b"}),  # distribution name, normalised
        ({"LMCTL_LOAD_PLUGINS": ""}, set()),
        ({"LMCTL_DISABLE_PLUGINS": "lmctl-a"}, {"plugin-b"}),
        ({"LMCTL_DISABLE_PLUGINS": "plugin-a, plugin-b"}, set()),
        ({"LMCTL_LOAD_PLUGINS": "plugin-a,plugin-b", "LMCTL_DISABLE_PLUGINS": "plugin-b"}, {"plugin-a"}),
    ],
)
def test_load_and_disable_lists(plugin_site, monkeypatch, env, expected):
    from lmctl.plugins.registry import get_registry

    _two_plugins(plugin_site)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    registry = get_registry()
    installed = {name for name, info in registry.plugins.items() if not info.builtin}
    assert installed == expected
    assert BUILTIN_FAMILIES <= set(registry.families)  # built-ins always load
    assert set(registry.callbacks) == expected  # each named after its plugin


def test_load_list_in_a_fresh_process():
    run = run_lmctl("plugins", "list", "--json", pythonpath=FIXTURE_SITE, env={"LMCTL_LOAD_PLUGINS": "duplicate-family"})
    assert run.returncode == 0
    assert [line for line in warning_lines(run.stderr)] == [
        "warning: plugin 'duplicate-family' registers family 'causal', which plugin 'lmctl.families.causal' already provides; skipped"
    ]
    disabled = run_lmctl("--help", pythonpath=FIXTURE_SITE, env={"LMCTL_DISABLE_PLUGINS": ",".join(FIXTURE_PLUGINS)})
    assert disabled.returncode == 0 and disabled.stderr == ""


# --- family recorded in config.json -----------------------------------------------------------------


def test_recorded_family_wins_and_falls_back_with_a_warning(plugin_site, capsys):
    from lmctl.plugins.registry import family_for_config

    write_distribution(plugin_site, "lmctl-toy", "1.2.3", {"toy": "toy_family"}, {"toy_family": TOY_FAMILY})
    gpt2 = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}
    assert family_for_config({**gpt2, "lmctl_family": "toy"}).name == "toy"
    assert family_for_config({**gpt2, "lmctl_family": "toy-lm"}).name == "toy"
    assert family_for_config({**gpt2, "lmctl_family": "gone"}).name == "causal"
    assert "family 'gone', which is not installed" in capsys.readouterr().err


def test_register_plugin_refuses_bad_signature_and_duplicates():
    from lmctl.errors import UsageError
    from lmctl.hookspecs import hookimpl
    from lmctl.plugins.registry import register_plugin, reset_registry

    class Bad:
        @hookimpl
        def register_families(self, registr):
            pass

    class Good:
        @hookimpl
        def register_callbacks(self, register):
            pass

    reset_registry()
    try:
        with pytest.raises(UsageError, match="unknown argument"):
            register_plugin(Bad(), "bad")
        register_plugin(Good(), "good")
        with pytest.raises(UsageError, match="already registered"):
            register_plugin(Good(), "good")
    finally:
        reset_registry()


# --- plugins check ---------------------------------------------------------------------------------


def test_plugins_check_reports_broken_plugins_one_line_each(fixture_plugins, scratch_root_app):
    result = CliRunner().invoke(scratch_root_app, ["plugins", "check"])
    assert result.exit_code == 1
    problems = [line for line in result.stdout.splitlines() if line.startswith("problem:")]
    assert len(problems) == 4
    for name in FIXTURE_PLUGINS:
        assert sum(f"plugin '{name}'" in line for line in problems) == 1
    assert "4 plugin(s) checked, 4 problem(s)" in result.stdout


def test_plugins_check_passes_a_good_family_and_catches_a_bad_one(plugin_site):
    from lmctl.cli.app import app

    write_distribution(plugin_site, "lmctl-toy", "1.2.3", {"toy": "toy_family"}, {"toy_family": TOY_FAMILY})
    write_distribution(plugin_site, "lmctl-nan", "0.1", {"nan": "lmctl_nan_family"}, {"lmctl_nan_family": '''
        import torch  # at module level: slows every lmctl command, which check reports
        from lmctl.families.base import LossOutput
        from lmctl.families.causal import CausalFamily
        from lmctl.hookspecs import hookimpl

        class NanFamily(CausalFamily):
            name = "nan-lm"
            aliases = ()
            model_types = ()
            architectures = ()
            architecture_suffixes = ()

            def compute_loss(self, model, batch, options):
                return LossOutput(loss=torch.tensor(float("nan")), tokens=1)

        @hookimpl
        def register_families(register):
            register(NanFamily())

        def register_commands(app):  # forgot @hookimpl
            pass
    '''})  # fmt: skip
    result = CliRunner().invoke(app, ["plugins", "check", "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False and set(report["checked"]) == {"toy", "nan"}
    problems = report["problems"]
    assert not any("plugin 'toy'" in p for p in problems), problems
    assert any("family 'nan-lm'" in p and "not a finite scalar" in p for p in problems)
    assert any("register_commands() is not marked with @hookimpl" in p for p in problems)
    assert any("imports torch" in p for p in problems)
    # A saved nan-lm model is plain GPT-2 without lmctl_family: check says it resolves elsewhere.
    assert sum("plugin 'nan'" in p for p in problems) == len(problems)

    only_toy = CliRunner().invoke(app, ["plugins", "check", "lmctl-toy"])
    assert only_toy.exit_code == 0, only_toy.output
    assert "plugin 'toy': ok (families toy)" in only_toy.stdout
    unknown = CliRunner().invoke(app, ["plugins", "check", "nope"])
    assert unknown.exit_code == 2 and "no plugin named nope" in unknown.stderr


# --- install / uninstall ----------------------------------------------------------------------------


@pytest.fixture
def fake_installer(tmp_path, monkeypatch):
    """Replace pip by a script that records its arguments and prints what pip would."""
    import lmctl.plugins.install as plugin_install

    log = tmp_path / "installer-args.json"
    script = tmp_path / "fake_pip.py"
    script.write_text(textwrap.dedent(f'''
        import json, os, sys
        json.dump(sys.argv[1:], open({str(log)!r}, "w"))
        if "nope" in sys.argv:
            print("Collecting nope")
            print("ERROR: Could not find a version that satisfies the requirement nope (from versions: none)")
            print("ERROR: No matching distribution found for nope")
            sys.exit(1)
        print("Successfully did", " ".join(sys.argv[1:3]))
    '''))
    monkeypatch.setattr(plugin_install, "choose_installer", lambda: plugin_install.Installer("pip", [sys.executable, str(script)]))
    return log


def test_install_runs_the_installer_and_reports_errors_in_one_line(fake_installer, plugin_site, tmp_path):
    from lmctl.cli.app import app

    project = tmp_path / "lmctl-thing"
    project.mkdir()
    ok = CliRunner().invoke(app, ["plugins", "install", "lmctl-x>=1", "-U", "-e", str(project), "--no-deps"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(fake_installer.read_text()) == ["install", "--upgrade", "--no-deps", "--editable", str(project), "lmctl-x>=1"]
    assert "Successfully did install --upgrade" in ok.stdout
    assert "no lmctl plugin was added or updated" in ok.stdout

    bad = CliRunner().invoke(app, ["plugins", "install", "nope"])
    assert bad.exit_code == 1
    assert bad.stderr == "error: pip install failed: No matching distribution found for nope\n"
    assert "Collecting nope" in bad.stdout and "ERROR" not in bad.stdout

    missing = CliRunner().invoke(app, ["plugins", "install", "-e", str(tmp_path / "absent")])
    assert missing.exit_code == 2 and "no such directory" in missing.stderr
    nothing = CliRunner().invoke(app, ["plugins", "install"])
    assert nothing.exit_code == 2 and "at least one package" in nothing.stderr


def test_install_reports_what_new_plugins_provide_and_fails_on_a_broken_one(tmp_path, plugin_site, monkeypatch):
    """The installer 'installs' by writing a dist-info (as pip would); lmctl then lists the new
    plugins from a fresh process, and exits 1 when one of them cannot load."""
    import lmctl.plugins.install as plugin_install
    from lmctl.cli.app import app

    script = tmp_path / "fake_pip.py"
    script.write_text(textwrap.dedent(f'''
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from tests.test_plugins import TOY_FAMILY, write_distribution
        from pathlib import Path
        site = Path({str(plugin_site)!r})
        if "lmctl-toy" in sys.argv:
            write_distribution(site, "lmctl-toy", "1.2.3", {{"toy": "toy_family"}}, {{"toy_family": TOY_FAMILY}})
        if "lmctl-broken" in sys.argv:
            write_distribution(site, "lmctl-broken", "0.1", {{"broken": "lmctl_broken_mod"}}, {{"lmctl_broken_mod": "raise ImportError('no')"}})
        print("Successfully installed")
    '''))
    monkeypatch.setattr(plugin_install, "choose_installer", lambda: plugin_install.Installer("pip", [sys.executable, str(script)]))
    ok = CliRunner().invoke(app, ["plugins", "install", "lmctl-toy"])
    assert ok.exit_code == 0, ok.output
    assert "installed plugin 'toy' (lmctl-toy 1.2.3): families: toy" in ok.stdout
    again = CliRunner().invoke(app, ["plugins", "install", "lmctl-toy"])  # same version: still reported
    assert "installed plugin 'toy' (lmctl-toy 1.2.3)" in again.stdout
    broken = CliRunner().invoke(app, ["plugins", "install", "lmctl-broken"])
    assert broken.exit_code == 1
    assert broken.stderr.splitlines() == [
        "warning: plugin 'broken' (lmctl-broken) failed to load and was skipped: ImportError: no"
    ]


def test_uninstall_maps_plugins_to_distributions_and_refuses_others(fake_installer, plugin_site):
    from lmctl.cli.app import app

    write_distribution(plugin_site, "lmctl-toy", "1.2.3", {"toy": "toy_family"}, {"toy_family": TOY_FAMILY})
    runner = CliRunner()
    by_plugin = runner.invoke(app, ["plugins", "uninstall", "toy"])
    assert by_plugin.exit_code == 0, by_plugin.output
    assert json.loads(fake_installer.read_text()) == ["uninstall", "--yes", "lmctl-toy"]
    assert "uninstalled lmctl-toy (plugins: toy)" in by_plugin.stdout
    assert runner.invoke(app, ["plugins", "uninstall", "LMCTL_TOY"]).exit_code == 0

    not_plugin = runner.invoke(app, ["plugins", "uninstall", "pluggy"])
    assert not_plugin.exit_code == 2 and "is not an lmctl plugin" in not_plugin.stderr
    itself = runner.invoke(app, ["plugins", "uninstall", "lmctl"])
    assert itself.exit_code == 2 and "cannot uninstall itself" in itself.stderr
    absent = runner.invoke(app, ["plugins", "uninstall", "lmctl-absent"])
    assert absent.exit_code == 2 and "no installed plugin 'lmctl-absent'" in absent.stderr
    assert "lmctl-toy" in absent.stderr  # names what is installed


def test_installer_choice(monkeypatch, tmp_path):
    import lmctl.plugins.install as pi
    from lmctl.errors import UsageError

    monkeypatch.delenv("LMCTL_INSTALLER", raising=False)
    monkeypatch.setattr(pi, "_find_uv", lambda: ["/opt/uv"])
    monkeypatch.setattr(pi, "_has_pip", lambda: True)
    monkeypatch.setattr(pi, "_created_by_uv", lambda prefix=None: False)
    assert pi.choose_installer().argv == [sys.executable, "-m", "pip"]
    monkeypatch.setattr(pi, "_created_by_uv", lambda prefix=None: True)
    uv = pi.choose_installer()
    assert uv.argv == ["/opt/uv", "pip"]
    assert uv.install_args(upgrade=True) == ["/opt/uv", "pip", "install", "--python", sys.executable, "--upgrade"]
    assert uv.uninstall_args() == ["/opt/uv", "pip", "uninstall", "--python", sys.executable]
    monkeypatch.setenv("LMCTL_INSTALLER", "pip")
    assert pi.choose_installer().name == "pip"
    monkeypatch.setenv("LMCTL_INSTALLER", "uv")
    monkeypatch.setattr(pi, "_find_uv", lambda: None)
    with pytest.raises(UsageError, match="no uv executable"):
        pi.choose_installer()
    # uv writes "uv = VERSION" into pyvenv.cfg; python -m venv does not.
    (tmp_path / "pyvenv.cfg").write_text("home = /usr/bin\nuv = 0.8.0\nversion_info = 3.11\n")
    monkeypatch.undo()
    assert pi._created_by_uv(str(tmp_path)) is True
    (tmp_path / "pyvenv.cfg").write_text("home = /usr/bin\ninclude-system-site-packages = false\n")
    assert pi._created_by_uv(str(tmp_path)) is False


def test_plugins_commands_do_not_import_torch():
    code = (
        "import sys; from typer.testing import CliRunner; from lmctl.cli.app import app; "
        "r = CliRunner().invoke(app, ['plugins', 'list', '--all']); assert r.exit_code == 0, r.output; "
        "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'accelerate') if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


# --- the example plugin distributions ----------------------------------------------------------------


@pytest.mark.parametrize("plugin_dir", sorted(p.name for p in (REPO / "plugins").iterdir() if (p / "pyproject.toml").is_file()))
def test_example_plugin_distribution(plugin_dir):
    """Each distribution in plugins/ is complete (pyproject with an lmctl entry point, README,
    tests) and its own test suite passes from the checkout."""
    from tests.test_hooks_documented import load_toml

    root = REPO / "plugins" / plugin_dir
    project = load_toml((root / "pyproject.toml").read_text())["project"]
    assert project["name"] == plugin_dir and plugin_dir.startswith("lmctl-")
    assert project["entry-points"]["lmctl"], "no [project.entry-points.lmctl]"
    assert (root / "README.md").read_text().strip()
    assert list((root / "tests").glob("test_*.py"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMCTL_")}
    env["PYTHONPATH"] = str(REPO)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x"], cwd=root, capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in run.stdout
