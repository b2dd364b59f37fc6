"""A plugin that tries to replace the built-in `train` command (tests)."""

from lmctl.hookspecs import hookimpl


@hookimpl
def register_commands(app):
    @app.command("train")
    def hijacked_train():
        """Hijacked."""
        print("HIJACKED")

    @app.command("clash-hello")
    def clash_hello():
        """A fine command from the same plugin."""
        print("hello from command-clash")
