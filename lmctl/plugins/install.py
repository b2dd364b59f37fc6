"""Installing and removing plugins in lmctl's own environment (``lmctl plugins install/uninstall``).

Like ``llm install``, this runs the installer of the Python environment lmctl runs in
(``sys.executable``), so a plugin lands where lmctl can import it, whatever shell environment is
active.  The installer is pip (``python -m pip``), or ``uv pip --python sys.executable`` when lmctl
runs in an environment created by uv (``uv tool install``, ``uv run``) or the environment has no
pip.  ``LMCTL_INSTALLER=pip|uv`` forces a choice.  pip's own settings apply as usual
(``PIP_INDEX_URL``, ``PIP_NO_INDEX``, ``PIP_NO_BUILD_ISOLATION``, pip.conf, ...).

After an install, a fresh ``python -m lmctl plugins list --json`` run reports what the new
distributions provide: a new process is needed because an editable install only becomes importable
through a ``.pth`` file, which the running interpreter has already read.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmctl.errors import LmctlError, UsageError
from lmctl.plugins.registry import _entry_points, entry_point_distribution, normalize_name


@dataclass
class Installer:
    """How to run the package installer of lmctl's environment."""

    name: str  # "pip" or "uv"
    argv: list[str]  # the command up to (and without) "install"/"uninstall"

    def install_args(self, *, upgrade: bool = False, force_reinstall: bool = False, no_deps: bool = False) -> list[str]:
        args = [*self.argv, "install"]
        if self.name == "uv":
            args += ["--python", sys.executable]
        if upgrade:
            args.append("--upgrade")
        if force_reinstall:
            args.append("--reinstall" if self.name == "uv" else "--force-reinstall")
        if no_deps:
            args.append("--no-deps")
        return args

    def uninstall_args(self) -> list[str]:
        if self.name == "uv":
            return [*self.argv, "uninstall", "--python", sys.executable]
        return [*self.argv, "uninstall", "--yes"]


def _created_by_uv(prefix: str = sys.prefix) -> bool:
    """uv writes a ``uv = VERSION`` line into the pyvenv.cfg of environments it creates."""
    cfg = Path(prefix) / "pyvenv.cfg"
    try:
        lines = cfg.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return False
    return any(line.split("=", 1)[0].strip().lower() == "uv" for line in lines if "=" in line)


def _find_uv() -> list[str] | None:
    """The uv executable: $UV (set by ``uv run``), then PATH, then the ``uv`` Python package."""
    candidate = os.environ.get("UV")
    if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
        return [candidate]
    found = shutil.which("uv")
    if found:
        return [found]
    if importlib.util.find_spec("uv") is not None:
        return [sys.executable, "-m", "uv"]
    return None


def _has_pip() -> bool:
    return importlib.util.find_spec("pip") is not None


def choose_installer() -> Installer:
    """pip, or uv when lmctl runs under uv (see the module docstring); ``LMCTL_INSTALLER`` overrides."""
    forced = os.environ.get("LMCTL_INSTALLER", "").strip().lower()
    if forced not in ("", "auto", "pip", "uv"):
        raise UsageError(f"LMCTL_INSTALLER must be pip, uv or auto, not {forced!r}")
    uv = _find_uv() if forced in ("", "auto", "uv") else None
    if forced == "uv":
        if uv is None:
            raise UsageError("LMCTL_INSTALLER=uv but no uv executable was found (install uv or unset LMCTL_INSTALLER)")
        return Installer("uv", [*uv, "pip"])
    if forced == "pip":
        if not _has_pip():
            raise LmctlError(f"LMCTL_INSTALLER=pip but the environment of {sys.executable} has no pip")
        return Installer("pip", [sys.executable, "-m", "pip"])
    if uv is not None and (_created_by_uv() or not _has_pip()):
        return Installer("uv", [*uv, "pip"])
    if _has_pip():
        return Installer("pip", [sys.executable, "-m", "pip"])
    raise LmctlError(
        f"the environment of {sys.executable} has neither pip nor uv: install one of them "
        f"(e.g. `{sys.executable} -m ensurepip`)"
    )


def _error_line(lines: Sequence[str]) -> str | None:
    """The most telling error line of pip's or uv's output (pip: the last ``ERROR:`` line)."""
    for prefix in ("ERROR:", "error:"):
        found = [line[len(prefix) :].strip() for line in lines if line.startswith(prefix)]
        found = [line for line in found if line]
        if found:
            # pip's last ERROR line is the conclusion ("No matching distribution found for x");
            # uv's first error line is the summary, the rest are causes.
            return found[-1] if prefix == "ERROR:" else found[0]
    return None


def run_installer(argv: list[str], *, echo: Callable[[str], None] | None = None) -> None:
    """Run pip/uv, passing its output through line by line; a failure becomes one ``LmctlError`` line."""
    echo = echo or (lambda line: sys.stdout.write(line + "\n"))
    env = dict(os.environ)
    env.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")  # its upgrade nag is not the user's concern here
    try:
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", env=env
        )
    except OSError as exc:
        raise LmctlError(f"could not run {argv[0]}: {exc.strerror or exc}") from None
    captured: list[str] = []
    assert process.stdout is not None
    for raw in process.stdout:
        line = raw.rstrip("\n")
        captured.append(line)
        # Error lines are summarised in our own one-line error instead of being printed twice.
        if not line.startswith(("ERROR:", "error:")):
            echo(line)
    code = process.wait()
    if code != 0:
        tool = "uv pip" if "uv" in Path(argv[0]).name or argv[1:3] == ["-m", "uv"] else "pip"
        action = "install" if "install" in argv and "uninstall" not in argv else "uninstall"
        reason = _error_line(captured) or f"it exited with status {code} (see its output above)"
        raise LmctlError(f"{tool} {action} failed: {reason}")


def _plugin_snapshot() -> dict[tuple[str, str | None], str | None]:
    """Installed plugins: (entry-point name, distribution) -> version."""
    import importlib

    importlib.invalidate_caches()
    snapshot = {}
    for ep in _entry_points():
        dist, version = entry_point_distribution(ep)
        snapshot[(ep.name, dist)] = version
    return snapshot


def _requirement_name(spec: str) -> str:
    """The project name a spec most likely installs: ``lmctl-x>=1`` and ``plugins/lmctl-x`` -> ``lmctl-x``."""
    match = re.match(r"[A-Za-z0-9._-]*[A-Za-z0-9]", Path(spec.rstrip("/")).name)
    return normalize_name(match.group()) if match else ""


@dataclass
class InstallResult:
    """What an install changed: the plugins now provided by new or updated distributions."""

    plugins: list[dict[str, Any]] = field(default_factory=list)  # `lmctl plugins list --json` rows
    problems: list[str] = field(default_factory=list)  # load warnings about those plugins
    unchanged: bool = False  # nothing new or updated among lmctl plugins

    @property
    def failed(self) -> list[str]:
        """The warnings that mean a plugin (or part of it) did not load; the others are advice
        (e.g. a data reader whose extension another reader keeps)."""
        return [w for w in self.problems if re.search(r"\bskipped\b|\bfailed\b", w)]


def _fresh_listing() -> tuple[list[dict[str, Any]], list[str]]:
    """``python -m lmctl plugins list --json`` in a new process: (rows, warning lines)."""
    env = dict(os.environ)
    env.pop("LMCTL_QUIET_PLUGIN_WARNINGS", None)
    # This process's import path (plus whatever .pth files the install added, which the new
    # process reads): the plugins are looked for where this lmctl looks for them.
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    result = subprocess.run(
        [sys.executable, "-m", "lmctl", "plugins", "list", "--json"],
        capture_output=True,
        text=True,
        errors="replace",
        env=env,
    )
    warnings = [line[len("warning:") :].strip() for line in result.stderr.splitlines() if line.startswith("warning:")]
    if result.returncode != 0:
        last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit status {result.returncode}"
        raise LmctlError(f"the install finished, but lmctl no longer starts: {last}")
    try:
        rows = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise LmctlError("the install finished, but `lmctl plugins list --json` printed no JSON") from None
    return rows, warnings


def install_plugins(
    specs: Sequence[str] = (),
    *,
    editable: Sequence[str] = (),
    upgrade: bool = False,
    force_reinstall: bool = False,
    no_deps: bool = False,
    echo: Callable[[str], None] | None = None,
) -> InstallResult:
    """Install plugin distributions (PyPI names, paths, URLs; ``editable`` paths with ``-e``)."""
    specs = [s for s in specs if s.strip()]
    if not specs and not editable:
        raise UsageError("give at least one package to install (a name, path or URL), or -e PATH")
    for path in editable:
        if not Path(path).expanduser().exists():
            raise UsageError(f"-e {path}: no such directory (an editable install needs a local project)")
    installer = choose_installer()
    argv = installer.install_args(upgrade=upgrade, force_reinstall=force_reinstall, no_deps=no_deps)
    for path in editable:
        argv += ["--editable", str(Path(path).expanduser())]
    argv += list(specs)
    before = _plugin_snapshot()
    run_installer(argv, echo=echo)
    after = _plugin_snapshot()
    changed = {key for key, version in after.items() if before.get(key, object()) != version}
    if force_reinstall or not changed:
        # A reinstall keeps the version; report the plugins of the distributions named on the line.
        named = {_requirement_name(s) for s in [*specs, *editable]}
        changed |= {key for key in after if key[1] and normalize_name(key[1]) in named}
    result = InstallResult(unchanged=not changed)
    if not changed:
        return result
    rows, warnings = _fresh_listing()
    names = {name for name, _ in changed}
    result.plugins = [row for row in rows if row.get("name") in names]
    result.problems = [w for w in warnings if any(f"plugin '{name}'" in w for name in names)]
    return result


@dataclass
class UninstallTarget:
    distribution: str
    plugins: list[str]


def find_plugin_distributions(names: Sequence[str]) -> list[UninstallTarget]:
    """Map plugin or distribution names to the installed distributions that provide lmctl plugins."""
    from importlib.metadata import PackageNotFoundError, distribution

    by_dist: dict[str, UninstallTarget] = {}
    index: dict[str, str] = {}  # normalized plugin or distribution name -> distribution
    for ep in _entry_points():
        dist, _ = entry_point_distribution(ep)
        if not dist:
            continue
        target = by_dist.setdefault(normalize_name(dist), UninstallTarget(dist, []))
        target.plugins.append(ep.name)
        index[normalize_name(dist)] = normalize_name(dist)
        index.setdefault(normalize_name(ep.name), normalize_name(dist))
    chosen: list[UninstallTarget] = []
    for name in names:
        key = index.get(normalize_name(name))
        if key is None:
            if normalize_name(name) == "lmctl":
                raise UsageError("lmctl cannot uninstall itself; use `pip uninstall lmctl`")
            try:
                distribution(name)
            except PackageNotFoundError:
                installed = ", ".join(sorted(t.distribution for t in by_dist.values())) or "none"
                raise UsageError(f"no installed plugin '{name}' (installed plugin distributions: {installed})") from None
            raise UsageError(
                f"'{name}' is installed but is not an lmctl plugin (it has no 'lmctl' entry points); "
                "remove it with pip if you mean to"
            )
        if by_dist[key] not in chosen:
            chosen.append(by_dist[key])
    return chosen


def uninstall_plugins(names: Sequence[str], *, echo: Callable[[str], None] | None = None) -> list[UninstallTarget]:
    """Uninstall the distributions that provide the named plugins; returns what was removed."""
    names = [n for n in names if n.strip()]
    if not names:
        raise UsageError("give at least one plugin or distribution name to uninstall")
    targets = find_plugin_distributions(names)
    installer = choose_installer()
    run_installer([*installer.uninstall_args(), *[t.distribution for t in targets]], echo=echo)
    return targets
