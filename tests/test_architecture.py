"""The package's structure: layers (import-linter), no import cycles, no dynamic imports of lmctl.

docs/architecture.md explains the layers; pyproject.toml holds the contracts.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "lmctl"


def test_layers_contracts_hold():
    """`lint-imports` (import-linter) keeps the contracts in pyproject.toml."""
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(exe).exists():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    result = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout


def test_no_import_cycle_inside_lmctl():
    """No chain of imports leads from a module of lmctl back to itself (function-level imports count)."""
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("lmctl", cache_dir=None)
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if imported != module and graph.chain_exists(importer=imported, imported=module):
                cycles.append(" -> ".join(graph.find_shortest_chain(importer=imported, imported=module) or ()) + f" -> {imported}")
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles))[:20])


def test_grimp_sees_imports_made_inside_functions():
    """The cycle test above would be worthless if function-level imports were invisible to it."""
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("lmctl", cache_dir=None)
    # lmctl.cli.train imports the trainer inside train_command only.
    assert "lmctl.workflows.train.trainer" in graph.find_modules_directly_imported_by("lmctl.cli.train")


def _dynamic_imports(path: Path) -> list[str]:
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name not in ("import_module", "__import__"):
            continue
        first = node.args[0] if node.args else None
        # A literal naming another package (an entry point's module is chosen by the user) is fine;
        # anything that could name lmctl itself is not.
        if isinstance(first, ast.Constant) and isinstance(first.value, str) and not first.value.startswith("lmctl"):
            continue
        found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_no_lmctl_module_is_loaded_dynamically():
    """Every import of an lmctl module is a plain import statement (grimp and import-linter see it)."""
    offenders = [hit for path in sorted(PACKAGE.rglob("*.py")) for hit in _dynamic_imports(path)]
    assert not offenders, offenders


def test_dynamic_import_detector_finds_one(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import importlib\nimportlib.import_module('lmctl.families.causal')\n__import__(name)\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert len(_dynamic_imports(sample)) == 2
    finally:
        ROOT = saved


def test_help_imports_no_numeric_library():
    """`lmctl --help` builds the plugin registry (the families' modules) but imports neither torch
    nor numpy: heavy modules load inside the functions that use them (start-up stays instant)."""
    code = (
        "import sys\n"
        "sys.argv = ['lmctl', '--help']\n"
        "from lmctl.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('numpy', 'torch', 'transformers', 'datasets', 'accelerate', 'peft') if m in sys.modules]\n"
        "sys.stderr.write('HEAVY=' + ','.join(heavy) + '\\n')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "HEAVY=\n" in result.stderr, result.stderr[-2000:]


HELP_PAGES = [["--help"], ["train", "--help"], ["train", "-h"], ["prepare", "--help"], ["eval", "--help"],
              ["generate", "--help"], ["quickstart", "--help"], ["export", "--help"], ["runs", "--help"],
              ["plot", "--help"], ["plugins", "--help"], ["plugins", "list", "--help"]]  # fmt: skip


@pytest.mark.parametrize("args", HELP_PAGES, ids=" ".join)
def test_help_printed_directly_is_the_page_typer_prints(args):
    """``lmctl CMD --help`` prints the page from the command definitions without parsing (no
    pydantic import, no plugin loading for a built-in command); with an option before it
    (``--debug``) Typer parses and prints the page itself.  Both must be the same bytes."""
    env = {**os.environ, "COLUMNS": "100", "TERM": "dumb"}
    direct = subprocess.run([sys.executable, "-m", "lmctl", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    parsed = subprocess.run([sys.executable, "-m", "lmctl", "--debug", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert direct.returncode == parsed.returncode == 0, direct.stderr + parsed.stderr
    assert direct.stdout == parsed.stdout and direct.stderr == parsed.stderr
    assert "Usage: python -m lmctl" in direct.stdout


def test_built_in_help_imports_neither_pydantic_nor_plugins():
    code = (
        "import sys\n"
        "sys.argv = ['lmctl', 'train', '--help']\n"
        "from lmctl.cli import main\n"
        "main()\n"
        "loaded = [m for m in ('pydantic', 'lmctl.families.causal', 'lmctl.plugins.registry') if m in sys.modules]\n"
        "sys.stderr.write('LOADED=' + ','.join(loaded) + '\\n')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--max-steps" in result.stdout
    assert "LOADED=lmctl.plugins.registry\n" in result.stderr or "LOADED=\n" in result.stderr, result.stderr[-500:]
    assert "pydantic" not in result.stderr.split("LOADED=")[1] and "families" not in result.stderr.split("LOADED=")[1]
