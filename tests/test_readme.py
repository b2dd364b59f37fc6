"""The README's set-up commands are the ones CI runs, and the CLI starts without torch."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import REPO


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    setup = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", setup, flags=re.S)


def test_ci_runs_the_readme_commands():
    install_and_run, test_command = readme_commands()
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    install = install_and_run.removesuffix(" && lmctl quickstart")
    assert install_and_run.endswith("&& lmctl quickstart")
    assert install in ci
    assert test_command in ci


def test_importing_the_cli_does_not_import_torch():
    code = "import sys, lmctl.cli.app; print([m for m in ('torch', 'transformers', 'datasets', 'accelerate') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_help_and_plugins_list_do_not_import_torch():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from lmctl.cli.app import app, add_plugin_commands\n"
        "add_plugin_commands(app)\n"
        "for args in (['--help'], ['train', '--help'], ['plugins', 'list'], ['generate', '--help']):\n"
        "    r = CliRunner().invoke(app, args)\n"
        "    assert r.exit_code == 0, (args, r.output)\n"
        "print([m for m in ('torch', 'transformers', 'datasets', 'accelerate') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
