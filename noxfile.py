"""nox sessions: tests, lint, docs, examples, bench.

Every session installs the pinned CPU torch wheel first: an unpinned torch in a fresh environment
pulls several GB of CUDA packages.  Set LMCTL_TORCH to pin another build.
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True

TORCH = os.environ.get("LMCTL_TORCH", "torch==2.13.0")


def install(session: nox.Session, extras: str = "dev") -> None:
    session.install(TORCH)
    session.install("-e", f".[{extras}]")


@nox.session
def tests(session: nox.Session) -> None:
    """The default test suite (markers slow, multiprocess and gpu are off; pass -m to select them)."""
    install(session)
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, and import-linter's layer contracts (pyproject.toml, docs/architecture.md)."""
    session.install("ruff>=0.5", "import-linter>=2.1")
    session.run("ruff", "check", "lmctl", "tests", "benchmarks", "noxfile.py")
    # lint-imports analyses the source tree it runs in (no install needed).
    session.run("lint-imports", "--no-cache", env={"PYTHONPATH": "."})


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site with MkDocs in strict mode (broken links fail)."""
    install(session)
    session.run("python", "docs/gen_cli_reference.py", "--check")
    session.run("mkdocs", "build", "--strict", "--site-dir", "site")


@nox.session
def examples(session: nox.Session) -> None:
    """Run every config in examples/ at tiny scale (the same tests the default suite runs)."""
    install(session)
    session.run("python", "-m", "pytest", "tests/test_examples.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Reproduce docs/benchmarks.md (long: several minutes; run on a quiet machine)."""
    install(session)
    session.run("python", "benchmarks/run.py", *session.posargs)
