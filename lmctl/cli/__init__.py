"""The command line: the Typer app, one module per command, and the terminal widgets.

This is the only layer that talks to the terminal (rich, prompts, stdin); the workflows below it
report progress through callbacks.  Nothing here imports torch, transformers, datasets or
accelerate at module level, so ``lmctl --help`` stays instant.
"""


def main() -> None:
    """Console-script entry point (``lmctl``): the app is built in :mod:`lmctl.cli.app`."""
    from lmctl.cli.app import main as run

    run()
