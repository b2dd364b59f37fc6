"""The lmctl plugin reference: every hook a plugin can implement, in one place.

lmctl uses `pluggy <https://pluggy.readthedocs.io>`_.  A plugin is a module (or object) with
functions decorated by :data:`hookimpl` whose names match the specifications below.  Installed
plugins are found through the ``lmctl`` entry-point group::

    # pyproject.toml of a plugin distribution
    [project.entry-points.lmctl]
    my_family = "lmctl_my_family.plugin"

The built-in families (``causal``, ``masked``, ``permuted``, ``electra``) and the built-in
tokenizer trainers and data readers are plugins registered with exactly the same call, so they are
working examples of every hook.

Every hook receives a ``register`` callable (or the Typer app) and registers things with it; the
return value is ignored.  Hooks are called once per process, when the plugin manager is built.
Plugin modules must import quickly: import torch/transformers inside the functions that do work,
never at module level, so that ``lmctl --help`` stays instant.

Each spec says in which lmctl version it was added (``versionadded``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover - typing only
    import typer

    from lmctl.families.base import Family

PROJECT_NAME = "lmctl"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
"""Marks a function in this module as a hook specification."""

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
"""Marks a plugin function as a hook implementation: ``@hookimpl def register_families(register): ...``."""


# --- Models ---------------------------------------------------------------------------------------


@hookspec
def register_families(register: Callable[[Family], None]) -> None:
    """Register architecture families.

    A family is a named way of training a language model: its model loader, how to build a model
    from scratch, its data collator, training loss, evaluation metrics, what ``generate`` means
    for it and how it saves.  Call ``register(family)`` with an instance of a
    :class:`lmctl.families.base.Family` subclass for each family the plugin provides.

    A family name (or alias) that is already registered is refused with a warning naming the
    plugin; the first registration wins, and built-ins are registered first.

    :param register: ``register(family: Family) -> None``.

    versionadded: 0.1
    """


# --- Data -----------------------------------------------------------------------------------------


@hookspec
def register_tokenizer_trainers(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register tokenizer trainers usable as ``lmctl prepare --tokenizer NAME``.

    Call ``register(name, train_fn)``.  ``train_fn(texts, *, vocab_size, special_tokens)``
    receives an iterator over training documents (``str``), the requested vocabulary size and a
    dict of special tokens the family needs (e.g. ``{"eos_token": "<|endoftext|>"}``), and returns
    a trained :class:`tokenizers.Tokenizer`.  lmctl wraps it in a ``transformers`` fast tokenizer,
    pads the vocabulary to a multiple of 64 and saves it in the prepared directory.

    :param register: ``register(name: str, train_fn: Callable) -> None``.

    versionadded: 0.1
    """


@hookspec
def register_data_readers(register: Callable[[str, tuple[str, ...], Callable[..., Any]], None]) -> None:
    """Register readers for input file formats.

    Call ``register(format_name, extensions, read_fn)``.  ``read_fn(path, *, text_column,
    encoding_errors, document_split)`` yields documents (``str``) from one file.  The format is
    picked from the file extension (e.g. ``(".jsonl",)``) or from ``--format NAME``.
    ``text_column`` is ``--text-column`` (default ``"text"``), ``encoding_errors`` is ``strict``,
    ``replace`` or ``ignore``, and ``document_split`` is ``lines``, ``blank-lines``, ``file`` or
    ``None`` (the reader's natural unit, e.g. one record).  Raise
    :class:`lmctl.errors.LmctlError` with one line naming the file for bad data.  The built-in
    readers in :mod:`lmctl.data.readers` are examples.

    :param register: ``register(name: str, extensions: tuple[str, ...], read_fn: Callable) -> None``.

    versionadded: 0.1
    """


# --- Training -------------------------------------------------------------------------------------


@hookspec
def register_callbacks(register: Callable[[Any], None]) -> None:
    """Register training callbacks (loggers, trackers, custom checks).

    Call ``register(callback)`` with an object that has any of these methods, each receiving a
    dict: ``on_train_begin(info)`` (the plan: parameters, steps, ...), ``on_log(metrics)``
    (one training log or eval event, the same dict written to ``metrics.jsonl``),
    ``on_save(info)`` (a checkpoint was written: ``{"step", "path"}``) and ``on_train_end(info)``.
    Callbacks run on the main process only.  An exception in a callback is reported once and the
    callback is disabled; training goes on.

    :param register: ``register(callback: object) -> None``.

    versionadded: 0.1
    """


# --- Command line ---------------------------------------------------------------------------------


@hookspec
def register_commands(app: typer.Typer) -> None:
    """Add subcommands to the ``lmctl`` command line.

    Use ``@app.command()`` (or ``app.add_typer(group, name=...)``) as with any Typer app.  A
    command that would replace a built-in command (``prepare``, ``train``, ...) or one an earlier
    plugin added is skipped with a one-line warning.  Keep the command module light: import heavy
    libraries inside the command function, and decorate it with
    :func:`lmctl.errors.friendly_errors` so errors show as one line.

    :param app: the root :class:`typer.Typer` application.

    versionadded: 0.1
    """
