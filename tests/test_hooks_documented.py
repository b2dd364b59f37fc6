"""Keep the plugin reference honest (datasette's approach): every hookspec is documented in
docs/plugins.md with its exact signature and version, the generated reference is current, every
hook has a ``test_hook_<name>`` that implements it through a plugin, and the complete example
plugin printed in the docs really works."""

from __future__ import annotations

import ast
import re
import sys

import pytest

from lmctl.plugins.docs import BEGIN, END, hook_docs, hook_signature, main, update_text
from lmctl.plugins.registry import HOOK_NAMES
from tests.conftest import REPO

DOC = REPO / "docs" / "plugins.md"


def load_toml(text: str) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads(text)


def test_hooks_are_the_hookspecs():
    from lmctl import hookspecs

    specs = [name for name, fn in vars(hookspecs).items() if hasattr(fn, "lmctl_spec")]
    assert list(HOOK_NAMES) == specs
    assert {"register_families", "register_commands", "register_tokenizer_trainers", "register_data_readers", "register_callbacks"} <= set(specs)


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_every_hookspec_is_documented(name):
    text = DOC.read_text(encoding="utf-8")
    reference = text.split(BEGIN, 1)[1].split(END, 1)[0]
    doc = next(d for d in hook_docs() if d.name == name)
    assert f"#### {name}\n" in reference
    assert f"def {hook_signature(name)}: ..." in reference  # the exact signature, annotations included
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?", doc.version_added), doc.version_added
    assert f"| [`{name}`](#{name}) |" in reference and f"| {doc.version_added} |" in reference
    assert f"*Added in lmctl {doc.version_added}.*" in reference


def test_hook_reference_is_generated_and_current(tmp_path):
    text = DOC.read_text(encoding="utf-8")
    assert update_text(text) == text, "docs/plugins.md is stale: run `python -m lmctl.plugins.docs`"
    assert main(["--check", str(DOC)]) == 0
    stale = tmp_path / "plugins.md"
    stale.write_text(text.replace("*Added in lmctl", "*Added in lmctl?", 1), encoding="utf-8")
    assert main(["--check", str(stale)]) == 1
    assert main([str(stale)]) == 0
    assert stale.read_text(encoding="utf-8") == text


def _test_functions() -> dict[str, str]:
    """Every test function in tests/: name -> its source, plus the module-level string constants
    it uses (plugin sources written into fake installed distributions)."""
    found = {}
    for path in sorted((REPO / "tests").glob("test_*.py")):
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
        constants = {
            target.id: node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
                found[node.name] = "\n".join([ast.get_source_segment(source, node) or "", *(constants[u] for u in used & set(constants))])
    return found


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_every_hookspec_has_a_test(name):
    tests = _test_functions()
    test_name = f"test_hook_{name}"
    assert test_name in tests, f"no {test_name} in tests/: write one that implements {name} in a plugin"
    # It must exercise the hook as a plugin author would: an @hookimpl implementation of it.
    body = tests[test_name]
    assert "hookimpl" in body and re.search(rf"def {name}\(", body), f"{test_name} does not implement {name}"


def _doc_examples() -> dict[str, str]:
    """Files printed in docs/plugins.md as ``<!-- example: NAME -->`` followed by a fenced block."""
    text = DOC.read_text(encoding="utf-8")
    pattern = re.compile(r"<!-- example: (\S+) -->\n```\w*\n(.*?)\n```", re.DOTALL)
    return {name: body + "\n" for name, body in pattern.findall(text)}


def test_documented_example_plugin_works(tmp_path, monkeypatch):
    """Build the docs' complete minimal plugin from the page, 'install' it through its own
    entry-point table, and use it as lmctl would."""
    from lmctl.data.tokenizer_trainers import as_transformers_tokenizer
    from lmctl.plugins.check import check_plugins
    from lmctl.plugins.registry import get_registry, reset_registry

    files = _doc_examples()
    assert set(files) == {"pyproject.toml", "lmctl_words.py"}
    project = load_toml(files["pyproject.toml"])["project"]
    entry_points = project["entry-points"]["lmctl"]
    assert entry_points == {"words": "lmctl_words"}

    site = tmp_path / "site"
    site.mkdir()
    (site / "lmctl_words.py").write_text(files["lmctl_words.py"], encoding="utf-8")
    info = site / f"lmctl_words-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    (info / "entry_points.txt").write_text("[lmctl]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("LMCTL_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("LMCTL_DISABLE_PLUGINS", raising=False)
    reset_registry()
    try:
        registry = get_registry()
        plugin = registry.plugins["words"]
        assert (plugin.distribution, plugin.version, plugin.hooks) == ("lmctl-words", "0.1.0", ["register_tokenizer_trainers"])
        special = {"eos_token": "<eos>", "pad_token": "<pad>"}
        raw = registry.tokenizer_trainers["words"](iter(["to be or not to be", "that is the question"]), vocab_size=8, special_tokens=special)
        tokenizer = as_transformers_tokenizer(raw, special)
        # 3 special tokens + the 5 most frequent words (ties in order of appearance): to, be, or, not, that.
        ids = tokenizer("to be is the question", add_special_tokens=False)["input_ids"]
        assert tokenizer.convert_ids_to_tokens(ids) == ["to", "be", "<unk>", "<unk>", "<unk>"]
        assert len(tokenizer) == 8
        assert tokenizer.decode(tokenizer("to be", add_special_tokens=False)["input_ids"]) == "to be"
        assert check_plugins(["words"]).ok
    finally:
        reset_registry()
        sys.modules.pop("lmctl_words", None)


def test_docs_name_the_plugin_settings():
    text = DOC.read_text(encoding="utf-8")
    for needle in ("LMCTL_LOAD_PLUGINS", "LMCTL_DISABLE_PLUGINS", "LMCTL_INSTALLER", "[project.entry-points.lmctl]", "lmctl plugins check"):
        assert needle in text, needle
    # MkDocs (strict) only accepts relative links to pages that exist.
    for target in re.findall(r"\]\((?!https?://|#)([^)#]+)", text):
        assert (DOC.parent / target).exists(), target
