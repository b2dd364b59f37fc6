"""``python -m lmctl``: the same CLI, needed by ``accelerate launch -m lmctl train ...``."""

from lmctl.cli.app import main

if __name__ == "__main__":
    main()
