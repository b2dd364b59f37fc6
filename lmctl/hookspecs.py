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
    picked from the file extension (e.g. ``(".jsonl",)``), or from ``--format NAME`` (every
    input) or ``--format .EXT=NAME`` (files ending in ``.EXT``; repeatable, so one prepare mixes
    formats).  An extension that an earlier reader (a built-in, or a plugin loaded before) already
    claims stays with that reader: lmctl warns at load, naming both, and ``plugins check`` reports
    it; the new reader still reads such files through ``--format .EXT=NAME``.
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
def register_callbacks(register: Callable[..., None]) -> None:
    """Register training callbacks (loggers, trackers, custom checks) that users choose by name.

    Call ``register(callback, name=None)`` with an object that has any of these methods, each
    receiving a dict: ``on_train_begin(info)``, ``on_log(metrics)`` (one training log or eval
    event, the same dict written to ``metrics.jsonl``), ``on_save(info)`` (a checkpoint was
    written: ``{"step", "path", "out"}``) and ``on_train_end(info)`` (``{"steps", "interrupted",
    "out", "model", "final_eval", "final_train_loss"}``).  ``on_train_begin`` gets stable machine keys: ``out`` (the run
    directory, created), ``model`` (the ``torch.nn.Module`` being trained), ``tokenizer``,
    ``model_name``, ``family``, ``family_options``, ``block_size``, ``micro_batch``,
    ``grad_accum``, ``world_size``, ``global_batch``, ``tokens_per_step``, ``optimizer_steps``,
    ``start_step``, ``parameters``, ``precision``, ``device``, ``lr``, ``min_lr``, ``schedule``,
    ``warmup_steps``, ``eval_every``, ``save_every``, ``seed``, ``callbacks``, ``config`` (every
    ``lmctl train`` setting) and ``plan`` (the human-readable summary the dashboard shows).

    A callback runs only in the runs that ask for it: ``lmctl train --callback NAME``
    (repeatable, or ``callbacks = [...]`` in a config file), so a callback installed for one
    project never runs silently in another; ``run.json`` records which ran.  ``name`` defaults to
    the callback's ``name`` attribute, else the plugin's name; a name already taken is refused
    with a warning.  Callbacks run on the main process only.  An exception in a callback is
    reported once and the callback is disabled; training goes on.  (0.2: names, opt-in, the
    machine keys, ``out`` and ``model`` from the start.)

    :param register: ``register(callback: object, name: str | None = None) -> None``.

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
