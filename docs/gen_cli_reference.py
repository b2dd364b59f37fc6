"""Generate docs/cli.md from the real ``--help`` output of every lmctl command.

    python docs/gen_cli_reference.py          # rewrite docs/cli.md
    python docs/gen_cli_reference.py --check  # exit 1 when docs/cli.md is stale (CI, nox -s docs)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent / "cli.md"
HEADER = """# CLI reference

Generated from the real `--help` output by `python docs/gen_cli_reference.py`; a test fails when
this page is stale.  Run `lmctl COMMAND --help` for the same text in your terminal.
"""


def commands() -> list[list[str]]:
    from lmctl.cli.plugins import app as plugins_app
    from lmctl.plugins.commands import BUILTIN_COMMANDS

    out: list[list[str]] = [[]]
    for name in BUILTIN_COMMANDS:
        out.append([name])
        if name == "plugins":
            out += [["plugins", c.name or c.callback.__name__] for c in plugins_app.registered_commands]
    return out


def help_text(args: list[str]) -> str:
    env = {
        **os.environ,
        "TERMINAL_WIDTH": "100",
        "NO_COLOR": "1",
        "_TYPER_FORCE_DISABLE_TERMINAL": "1",
        "LMCTL_LOAD_PLUGINS": "",  # installed third-party plugins must not change the reference
    }
    # Run the CLI as the `lmctl` console script names itself (with `python -m lmctl` the usage
    # lines would read "python -m lmctl ..."), without depending on the script being on PATH.
    entry = "import sys; sys.argv[0] = 'lmctl'; from lmctl.cli.app import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", entry, *args, "--help"], capture_output=True, text=True, env=env, check=True
    )
    return "\n".join(line.rstrip() for line in result.stdout.strip("\n").splitlines())


def render() -> str:
    parts = [HEADER]
    for args in commands():
        title = " ".join(["lmctl", *args])
        parts.append(f"## `{title}`\n\n```text\n{help_text(args)}\n```\n")
    return "\n".join(parts)


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if not DOC.is_file() or DOC.read_text() != text:
            print(f"{DOC} is stale: run python docs/gen_cli_reference.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
