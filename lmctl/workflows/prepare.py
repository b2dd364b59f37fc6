"""``lmctl prepare`` as a library: raw text in, tokenized, memory-mappable training data out.

Public API::

    from lmctl.workflows.prepare import PrepareConfig, prepare, prepare_cached

    report = prepare(PrepareConfig(train=["corpus.txt"], validation_split=0.1, out="data/"))
    report.manifest["splits"]["train"]["tokens"]

    # what `train`/`eval` do when handed raw files: prepare once, reuse while inputs and options match
    data_dir = prepare_cached(PrepareConfig(train=["corpus.txt"], tokenizer="char", block_size=256))

* :class:`PrepareConfig`: every option of ``lmctl prepare`` (same names, with underscores).
* :func:`prepare` writes ``config.out`` atomically (a hidden temp directory renamed at the end:
  an interrupted run never leaves a directory that looks complete) and returns a
  :class:`PrepareReport` (the manifest plus timings).
* :func:`prepare_cached` prepares into ``cache_root()/prepared/<key>`` (``$LMCTL_CACHE``, else
  ``$XDG_CACHE_HOME/lmctl``, else ``~/.cache/lmctl``) where ``key`` hashes the inputs' contents
  and every option that changes the output; a later call with the same key returns the cached
  directory at once.  Returns the directory (read it with :class:`lmctl.core.prepared.PreparedData`).

The output layout is described in :mod:`lmctl.core.prepared`.  How it is made:

* Inputs are streamed (text in 512 KiB chunks that end at line breaks; records in batches) and cut
  into documents (:mod:`lmctl.data.readers`).  Batches of about :data:`BATCH_CHARS` characters of whole
  documents go to the Rust tokenizer's ``encode_batch_fast``, one batch per CPU at a time in
  worker threads (GIL released), so a chunk boundary never changes the token stream.  Token ids
  are written to the split file in order as they come; memory does not grow with the corpus.
* Packed data: each document is preceded by the family's separator
  (:meth:`lmctl.families.base.Family.document_separator`) and tokenized without special tokens.
  Line-by-line data: each non-blank line is an example ``prefix + line + suffix`` (the
  tokenizer's own special tokens, e.g. ``[CLS] ... [SEP]``, else the separator first), truncated
  to the block size, with ``n + 1`` uint64 start offsets.
* ``validation_split=F`` keeps the last fraction ``F`` of the training text for validation,
  contiguous and cut at a line boundary (at a record boundary for record formats), as nanoGPT's
  shakespeare_char does.  A trained tokenizer sees the training part only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from lmctl.core.files import cache_root
from lmctl.core.prepared import FORMAT_NAME, FORMAT_VERSION, MANIFEST
from lmctl.core.quiet import quiet_libraries
from lmctl.data.readers import DOCUMENT_SPLITS, ENCODING_ERRORS, DocumentBatch
from lmctl.errors import LmctlError, UsageError

BATCH_CHARS = 1 << 18
"""Whole documents are gathered until they hold this many characters, then sent to the tokenizer
(in practice one text chunk per ``encode_batch_fast`` call): this is what bounds memory."""

DEFAULT_VOCAB_SIZE = 8192
BYTE_ALPHABET = 256
DEFAULT_BLOCK_SIZE = 128
PROGRESS_MODES = ("auto", "rich", "plain", "none")

# Files of a saved tokenizer (copied from a tokenizer or model directory; weights are not).
TOKENIZER_FILE_PREFIXES = (
    "tokenizer", "special_tokens_map", "added_tokens", "vocab", "merges", "spiece", "sentencepiece", "chat_template",
)  # fmt: skip


@dataclass
class PrepareConfig:
    """Everything ``lmctl prepare`` takes.  Paths may be ``str`` or ``Path``."""

    train: list[str]
    """Training inputs: files, globs, directories, ``save_to_disk`` directories, cached dataset names."""
    out: str | os.PathLike | None = None
    """Output directory (required by :func:`prepare`; :func:`prepare_cached` picks its own)."""
    validation: list[str] | None = None
    """Validation inputs (as ``train``); exclusive with ``validation_split``."""
    validation_split: float | None = None
    """Keep the last fraction of the training text (0 < F < 1) for validation."""
    tokenizer: str | None = None
    """A trainer name (bpe, bytelevel-bpe, wordpiece, unigram, char, word, or a plugin's), a tokenizer or
    model directory, or a Hub id.  None: the family's ``tokenizer_kind``."""
    vocab_size: int = DEFAULT_VOCAB_SIZE
    """Vocabulary size for a trained tokenizer (an upper bound for ``char`` and ``word``)."""
    family: str | None = None
    """Family name or alias.  None: the family of a model directory given as ``tokenizer``, else causal."""
    block_size: int = DEFAULT_BLOCK_SIZE
    """Tokens per training example (packed blocks; line-by-line truncation)."""
    document_split: str | None = None
    """lines | blank-lines | file.  None: blank-lines for text, one record per document otherwise."""
    line_by_line: bool = False
    """One example per non-blank line instead of packed blocks (masked families)."""
    text_column: str = "text"
    format: str | list[str] | None = None
    """Which reader reads which input (text, jsonl, json, csv, parquet, datasets, or a plugin's):
    ``NAME`` for every input, or a list of entries, each ``NAME`` (inputs no other entry covers) or
    ``.EXT=NAME`` (files ending in ``.EXT``), so one prepare can mix formats.  None: from each
    file's extension (see :func:`parse_formats`)."""
    encoding_errors: str = "strict"
    """strict | replace | ignore: what to do with bytes that are not UTF-8 (and NUL bytes)."""
    force: bool = False
    """Replace ``out`` if it exists (only an empty or prepared-data directory is replaced)."""
    progress: str = "auto"
    """auto (a rich bar on a terminal, plain lines otherwise) | rich | plain | none."""

    def __post_init__(self) -> None:
        # Accept a single path or a tuple where a list is meant (the train engineer's callers do).
        if isinstance(self.train, (str, os.PathLike)):
            self.train = [self.train]
        self.train = [os.fspath(p) for p in self.train]
        if isinstance(self.validation, (str, os.PathLike)):
            self.validation = [self.validation]
        self.validation = [os.fspath(p) for p in self.validation or []]


@dataclass
class PrepareReport:
    """What :func:`prepare` did: the output directory, its manifest and the time it took."""

    out: Path
    manifest: dict[str, Any]
    seconds: float

    def split_summary(self, name: str) -> dict[str, Any]:
        """One split's counts plus the derived figures the report shows."""
        info = dict(self.manifest["splits"][name])
        tokens = info["tokens"]
        info["bytes_per_token"] = round(info["bytes"] / tokens, 4) if tokens else None
        info["unknown_rate"] = round(info["unknown_tokens"] / tokens, 6) if tokens else None
        return info

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` object."""
        m = self.manifest
        return {
            "out": str(self.out),
            "seconds": round(self.seconds, 3),
            "family": m["family"],
            "tokenizer": m["tokenizer"],
            "vocab_size": m["vocab_size"],
            "dtype": m["dtype"],
            "block_size": m["block_size"],
            "line_by_line": m["line_by_line"],
            "document_split": m["document_split"],
            "splits": {name: self.split_summary(name) for name in m["splits"]},
        }


# --- statistics -----------------------------------------------------------------------------------


class SplitStats:
    """Counts for one split, computed from the decoded text as it streams past."""

    def __init__(self) -> None:
        self.bytes = 0
        self.words = 0
        self.longest_line = 0
        self._line_so_far = 0  # length of the line still open at the end of the last chunk
        self._in_word = False

    def end_input(self) -> None:
        """An input (file or record) ended: lines and words do not run on into the next."""
        self._line_so_far = 0
        self._in_word = False

    def observe_text(self, text: str) -> None:
        import numpy as np

        data = text.encode("utf-8")
        self.bytes += len(data)
        if not data:
            return
        codes = np.frombuffer(data, dtype=np.uint8)
        # Words: runs of non-whitespace bytes, as bytes.split() counts them, without making them.
        in_word = ~_ASCII_SPACE[codes]
        starts = int(np.count_nonzero(in_word[1:] & ~in_word[:-1]))
        if in_word[0] and not self._in_word:
            starts += 1
        self.words += starts
        self._in_word = bool(in_word[-1])
        # Longest line in characters (bytes are characters when the text is ASCII: no list of lines).
        if len(data) == len(text):
            breaks = np.flatnonzero(codes == 10)
            if breaks.size == 0:
                self._line_so_far += len(text)
                self.longest_line = max(self.longest_line, self._line_so_far)
                return
            first = self._line_so_far + int(breaks[0])
            inner = int(np.diff(breaks).max()) - 1 if breaks.size > 1 else 0
            self.longest_line = max(self.longest_line, first, inner)
            self._line_so_far = len(text) - int(breaks[-1]) - 1
            self.longest_line = max(self.longest_line, self._line_so_far)
            return
        lines = text.split("\n")
        if len(lines) == 1:
            self._line_so_far += len(text)
            self.longest_line = max(self.longest_line, self._line_so_far)
        else:
            longest = max(self._line_so_far + len(lines[0]), max(map(len, lines[1:])))
            self.longest_line = max(self.longest_line, longest)
            self._line_so_far = len(lines[-1])

    def observe_document(self, text: str) -> None:
        self.end_input()
        self.observe_text(text)
        self.end_input()


def _space_table() -> Any:
    import numpy as np

    table = np.zeros(256, dtype=bool)
    table[[9, 10, 11, 12, 13, 32]] = True
    return table


class _LazyTable:
    def __init__(self) -> None:
        self._table: Any = None

    def __getitem__(self, index: Any) -> Any:
        if self._table is None:
            self._table = _space_table()
        return self._table[index]


_ASCII_SPACE = _LazyTable()


# --- inputs ---------------------------------------------------------------------------------------


@dataclass
class InputFile:
    """One resolved input: a file (or a dataset) and the reader that reads it."""

    path: str  # absolute path, or a dataset name
    reader: str
    size: int  # bytes on disk (0 for dataset names)

    @property
    def is_file(self) -> bool:
        return Path(self.path).is_file()


@dataclass
class _Part:
    input: InputFile
    start: int = 0
    end: int | None = None  # a byte range of a text file; None: to the end


@dataclass
class _SplitPlan:
    name: str
    parts: list[_Part]
    char_window: tuple[float, float] | None = None  # record formats + validation_split: the documents taken
    dataset_split: str = "train"


def _registry() -> Any:
    from lmctl.plugins.registry import get_registry

    return get_registry()


def parse_formats(value: str | list[str] | tuple[str, ...] | None, readers: dict[str, Any]) -> tuple[str | None, dict[str, str]]:
    """``--format`` values as (reader for every input not mapped, {".ext": reader}).

    ``NAME`` applies to every input; ``.EXT=NAME`` (or ``EXT=NAME``) to files ending in ``.EXT``,
    and wins over ``NAME`` and over the readers' own extensions.  Unknown readers are refused.
    """
    items = [value] if isinstance(value, str) else list(value or [])
    default: str | None = None
    by_extension: dict[str, str] = {}
    for item in items:
        ext, sep, name = str(item).strip().rpartition("=")
        name = name.strip()
        if name not in readers:
            raise UsageError(f"unknown --format '{name}'; installed data readers: {', '.join(readers)}")
        if sep:
            ext = ext.strip().lower()
            if not ext.lstrip("."):
                raise UsageError(f"--format {item}: expected .EXT=READER, e.g. .md={name}")
            by_extension[ext if ext.startswith(".") else f".{ext}"] = name
        elif default is not None and default != name:
            raise UsageError(f"--format {default} and --format {name} both claim every input: map extensions with --format .EXT={name}")
        else:
            default = name
    return default, by_extension


def _longest_match(lower: str, table: list[tuple[str, str]]) -> str | None:
    best, best_len = None, 0
    for ext, name in table:
        if lower.endswith(ext.lower()) and len(ext) > best_len:
            best, best_len = name, len(ext)
    return best


def _reader_for(path: str, fmt: str | None, readers: dict[str, Any], by_extension: dict[str, str] | None = None) -> str:
    lower = path.lower()
    mapped = _longest_match(lower, list((by_extension or {}).items()))
    if mapped is not None:
        return mapped
    if fmt is not None:
        return fmt
    # The first reader registered for an extension keeps it (built-ins first; a later plugin claiming
    # it is warned about at load and reads such files only through --format).
    table = [(ext, name) for name, reader in readers.items() for ext in reader.extensions]
    best = _longest_match(lower, table)
    if best is None:
        known = sorted({ext for r in readers.values() for ext in r.extensions})
        raise UsageError(
            f"cannot tell the format of {path} from its extension (known: {' '.join(known)}); "
            f"pass --format {'|'.join(readers)} (or --format .EXT=READER)"
        )
    return best


def _has_glob(spec: str) -> bool:
    return any(ch in spec for ch in "*?[")


def resolve_inputs(
    specs: list[str], fmt: str | list[str] | tuple[str, ...] | None = None, *, role: str = "--train"
) -> list[InputFile]:
    """Expand files, globs and directories into :class:`InputFile` s (sorted, de-duplicated), each
    with its reader (``fmt``: the ``--format`` values, see :func:`parse_formats`).

    Errors name the input: missing files, globs or directories that match nothing, empty files,
    unknown formats.
    """
    import glob

    from lmctl.core.hub import looks_like_path
    from lmctl.data.readers import is_dataset_dir, split_dataset_spec

    readers = _registry().data_readers
    fmt, by_extension = parse_formats(fmt, readers)
    found: list[InputFile] = []

    def add_file(path: Path, *, explicit: bool) -> None:
        reader = _reader_for(str(path), fmt, readers, by_extension)
        size = path.stat().st_size
        if size == 0:
            if explicit:
                raise LmctlError(f"{path} is empty; pass a file with text in it")
            return
        found.append(InputFile(str(path.resolve()), reader, size))

    def matching(path: Path) -> bool:
        if any(path.name.lower().endswith(e) for e in by_extension):
            return True
        if fmt is not None:
            exts = readers[fmt].extensions
            return not exts or any(path.name.lower().endswith(e.lower()) for e in exts)
        return any(path.name.lower().endswith(e.lower()) for r in readers.values() for e in r.extensions)

    known_exts = tuple(e.lower() for r in readers.values() for e in r.extensions)
    for spec in specs:
        path = Path(spec).expanduser()
        try:
            os.stat(path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # not "not found": no dataset lookup for a broken path
                raise UsageError(
                    f"{role} {spec}: too many levels of symbolic links (a symlink loop); point it at a real file or directory"
                ) from None
        dataset_source, dataset_split = split_dataset_spec(spec)
        if is_dataset_dir(dataset_source):
            base = Path(dataset_source).resolve()
            size = sum(f.stat().st_size for f in base.rglob("*") if f.is_file())
            found.append(InputFile(str(base) + (f"@{dataset_split}" if dataset_split else ""), "datasets", size))
        elif fmt == "datasets" and not path.exists():
            found.append(InputFile(spec, "datasets", 0))
        elif path.is_file():
            add_file(path, explicit=True)
        elif path.is_dir():
            before = len(found)
            for root, dirs, files in os.walk(path):
                # Hidden directories and prepared data (its tokenizer.json is no input) are skipped.
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (Path(root) / d / MANIFEST).is_file())
                for name in sorted(files):
                    candidate = Path(root) / name
                    if not name.startswith(".") and matching(candidate):
                        add_file(candidate, explicit=False)
            if len(found) == before:
                exts = readers[fmt].extensions if fmt else sorted({e for r in readers.values() for e in r.extensions})
                raise UsageError(f"no input files in directory {path} (looked for {' '.join(exts)} files with text in them)")
        elif _has_glob(spec):
            matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(spec), recursive=True))
            files = [m for m in matches if m.is_file()]
            if not files:
                raise UsageError(f"no files match {spec}")
            before = len(found)
            for m in files:
                add_file(m, explicit=False)
            if len(found) == before:
                raise LmctlError(f"every file matching {spec} is empty")
        elif "datasets" in readers and not looks_like_path(spec) and not spec.lower().endswith(known_exts):
            # Not a path: try it as the name of a dataset in the local datasets cache.
            found.append(InputFile(spec, "datasets", 0))
        else:
            raise UsageError(f"{role}: input not found: {spec}")
    unique: list[InputFile] = []
    seen: set[str] = set()
    for item in found:
        if item.path not in seen:
            seen.add(item.path)
            unique.append(item)
    return unique


def _next_line_start(path: str, pos: int, size: int) -> int:
    """The first line start at or after byte ``pos`` (``size`` when there is none)."""
    if pos <= 0:
        return 0
    with open(path, "rb") as f:
        f.seek(pos - 1)
        if f.read(1) == b"\n":
            return pos
        offset = pos
        while True:
            block = f.read(1 << 16)
            if not block:
                return size
            i = block.find(b"\n")
            if i >= 0:
                return offset + i + 1
            offset += len(block)


def _text_validation_cut(inputs: list[InputFile], fraction: float) -> tuple[list[_Part], list[_Part]]:
    """Train and validation byte ranges: the last ``fraction`` of the text, cut at a line start."""
    total = sum(i.size for i in inputs)
    target = int(total * (1 - fraction))
    index, acc = 0, 0  # the file holding the target byte, and where that file starts
    while index < len(inputs) - 1 and target >= acc + inputs[index].size:
        acc += inputs[index].size
        index += 1
    cut = _next_line_start(inputs[index].path, min(target - acc, inputs[index].size), inputs[index].size)
    if cut >= inputs[index].size:  # no line start left in this file: the next file starts one
        index, cut = index + 1, 0
    if index >= len(inputs):
        raise UsageError(
            f"--validation-split {fraction} leaves no validation data (the last {fraction:.0%} of the text is "
            "part of its final line); use a larger fraction or --validation FILE"
        )
    train = [_Part(i) for i in inputs[:index]] + ([_Part(inputs[index], 0, cut)] if cut > 0 else [])
    validation = [_Part(inputs[index], cut, None)] + [_Part(i) for i in inputs[index + 1 :]]
    if not train:
        raise UsageError(f"--validation-split {fraction} leaves no training data; use a smaller fraction")
    return train, validation


# --- tokenizer ------------------------------------------------------------------------------------


class TokenizerHandle:
    """The tokenizer as prepare uses it, read from a saved transformers tokenizer directory.

    ``backend`` is the Rust :class:`tokenizers.Tokenizer`; special tokens come from
    ``tokenizer_config.json`` / ``special_tokens_map.json``.  ``eos_token_id`` and the other
    ``*_token_id`` attributes behave like a transformers tokenizer's, so
    :meth:`Family.document_separator` works on it, without importing transformers (seconds and
    ~100 MB saved per run).
    """

    SPECIAL = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self.backend = load_tokenizer_json(self.directory / "tokenizer.json")
        self.special: dict[str, str] = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            path = self.directory / name
            if path.is_file():
                try:
                    data = json.loads(path.read_text(encoding="utf-8"))
                except (json.JSONDecodeError, UnicodeDecodeError):
                    raise LmctlError(f"{path} is not valid JSON; the tokenizer is damaged") from None
                for key in self.SPECIAL:
                    value = data.get(key)
                    if isinstance(value, dict):
                        value = value.get("content")
                    if isinstance(value, str):
                        self.special[key] = value

    def __getattr__(self, name: str) -> Any:
        if name.endswith("_token_id") and name[: -len("_id")] in self.SPECIAL:
            token = self.special.get(name[: -len("_id")])
            return None if token is None else self.backend.token_to_id(token)
        if name in self.SPECIAL:
            return self.special.get(name)
        raise AttributeError(name)

    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def unknown_id(self) -> int | None:
        """The id unknown text maps to (None for byte-level tokenizers, which have none)."""
        token = self.special.get("unk_token") or getattr(self.backend.model, "unk_token", None)
        if token:
            return self.backend.token_to_id(token)
        return getattr(self.backend.model, "unk_id", None)

    def special_affixes(self) -> tuple[list[int], list[int]]:
        """The special ids the tokenizer's post-processor puts before and after one text."""
        probe = self.backend.encode("a", add_special_tokens=True)
        mask = probe.special_tokens_mask
        n = len(mask)
        head = next((i for i in range(n) if not mask[i]), n)
        tail = next((i for i in range(n - 1, -1, -1) if not mask[i]), -1) + 1
        return list(probe.ids[:head]), list(probe.ids[tail:])


def load_tokenizer_json(path: Path, shown: Path | None = None) -> Any:
    """A ``tokenizers.Tokenizer`` from ``tokenizer.json``; one line naming the directory when the
    file is inconsistent (e.g. a merge whose token is missing from the vocabulary: "Token `ow`
    out of vocabulary") instead of the library's bare exception."""
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - tokenizers raises plain Exception for every defect
        detail = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise LmctlError(
            f"the tokenizer in {shown or path.parent} cannot be loaded: its tokenizer.json is damaged or inconsistent "
            f"({detail}); re-create it or pass another --tokenizer"
        ) from None


def tokenizer_sha256(directory: str | os.PathLike) -> str:
    """A hash over a tokenizer directory's files (names and contents, in name order)."""
    digest = hashlib.sha256()
    for path in sorted(Path(directory).iterdir()):
        if path.is_file():
            digest.update(path.name.encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()


@dataclass
class _TokenizerSource:
    kind: str  # "train" | "dir" | "hub"
    spec: str
    path: Path | None = None
    model_config: dict[str, Any] | None = None


def _resolve_tokenizer(spec: str, trainers: dict[str, Any]) -> _TokenizerSource:
    from lmctl.core.hub import looks_like_path, read_config_json

    if spec in trainers:
        return _TokenizerSource("train", spec)
    path = Path(spec).expanduser()
    if path.is_file() and path.name == "tokenizer.json":
        path = path.parent
    if (path / MANIFEST).is_file() and (path / "tokenizer").is_dir():
        path = path / "tokenizer"  # a prepared data directory: reuse its tokenizer
    if path.is_dir():
        names = {p.name for p in path.iterdir()}
        if not any(n.startswith(TOKENIZER_FILE_PREFIXES) for n in names):
            raise LmctlError(
                f"{path} has no tokenizer files (tokenizer.json); pass a tokenizer or model directory, "
                f"or a trainer name: {', '.join(trainers)}"
            )
        config = read_config_json(path) if "config.json" in names else None
        if "tokenizer.json" in names:
            load_tokenizer_json(path / "tokenizer.json", shown=path)  # a broken one fails now, not after reading the data
        return _TokenizerSource("dir", spec, path.resolve(), config)
    if looks_like_path(spec) or path.suffix:
        raise UsageError(
            f"--tokenizer {spec}: no such directory; pass a tokenizer or model directory, a Hub id, "
            f"or a trainer name: {', '.join(trainers)}"
        )
    return _TokenizerSource("hub", spec)


def _save_transformers_tokenizer(name_or_path: str, out: Path, trainers: dict[str, Any]) -> None:
    """Load a tokenizer with transformers (slow formats, Hub ids) and save it as tokenizer.json + config."""
    from lmctl.core.hub import load_tokenizer

    quiet_libraries()
    try:
        tokenizer = load_tokenizer(name_or_path)
    except LmctlError as exc:
        if Path(name_or_path).expanduser().exists():
            raise
        raise LmctlError(f"{exc} (or train a tokenizer: --tokenizer {'|'.join(trainers)})") from None
    if not getattr(tokenizer, "is_fast", False):
        raise LmctlError(f"the tokenizer {name_or_path} has no fast (Rust) version, which prepare needs")
    tokenizer.save_pretrained(out)


def _copy_tokenizer(source: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.iterdir()):
        if path.is_file() and path.name.startswith(TOKENIZER_FILE_PREFIXES):
            shutil.copyfile(path, out / path.name)


# --- progress -------------------------------------------------------------------------------------


class SilentProgress:
    """What prepare reports progress to: ``start(name, total_bytes)``, ``advance(n_bytes)``,
    ``finish()``.  This one shows nothing; the CLI passes its bar (:class:`lmctl.cli.display.PrepareProgress`)."""

    def start(self, name: str, total: int) -> None: ...
    def advance(self, n: int) -> None: ...
    def finish(self) -> None: ...


# --- writing a split ------------------------------------------------------------------------------

_OFF = ("", "0", "false", "f", "off", "no", "n")


def encode_workers() -> int:
    """How many batches to tokenize at once: the usable CPUs, or 1 with ``TOKENIZERS_PARALLELISM=false``."""
    if os.environ.get("TOKENIZERS_PARALLELISM", "true").strip().lower() in _OFF:
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    limit = os.environ.get("RAYON_NUM_THREADS", "")
    return max(1, min(cpus, int(limit))) if limit.isdigit() and int(limit) > 0 else max(1, cpus)


@contextlib.contextmanager
def tokenizer_threads(parallel: bool) -> Iterator[None]:
    """Tell the Rust tokenizer (it reads ``TOKENIZERS_PARALLELISM`` at every call) whether to fan
    a batch out over its own thread pool.

    prepare runs one single-threaded call per worker thread instead: the same parallelism without
    rayon's spinning idle threads, which cost CPU time that a busy machine does not have.  The
    variable is restored afterwards.
    """
    saved = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if parallel else "false"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = saved



class SplitWriter:
    """Tokenizes document batches and appends the ids to ``<name>.bin`` (plus offsets, line-by-line).

    Batches are tokenized by ``workers`` threads at once (the Rust tokenizer releases the GIL),
    each call single-threaded (see :func:`tokenizer_threads`), while this thread reads the next
    batch and writes finished ones in order.  At most ``workers + 1`` batches are in flight.
    """

    def __init__(
        self,
        directory: Path,
        name: str,
        *,
        tokenizer: TokenizerHandle,
        dtype: str,
        prefix: list[int],
        suffix: list[int],
        line_by_line: bool,
        block_size: int,
        workers: int = 1,
    ) -> None:
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        import numpy as np

        self.name = name
        self.file_name = f"{name}.bin"
        self.offsets_name = f"{name}.offsets.bin" if line_by_line else None
        self._encode = tokenizer.backend.encode_batch_fast
        self._dtype = np.dtype(dtype)
        self._prefix, self._suffix = prefix, suffix
        self._line_by_line = line_by_line
        self._room = block_size - len(prefix) - len(suffix)
        if line_by_line and self._room < 1:
            raise UsageError(f"--block-size {block_size} leaves no room for text between the special tokens")
        self._unknown_id = tokenizer.unknown_id
        self._file = open(directory / self.file_name, "wb")
        self._offsets = open(directory / self.offsets_name, "wb") if self.offsets_name else None
        if self._offsets is not None:
            np.zeros(1, dtype=np.uint64).tofile(self._offsets)
        self._workers = max(1, workers)
        self._executor = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="lmctl-encode")
        self._in_flight: deque[tuple[Any, set[int]]] = deque()
        self._texts: list[str] = []
        self._continues: set[int] = set()  # indices in _texts that continue the previous document
        self._chars = 0
        self.tokens = 0
        self.documents = 0
        self.unknown_tokens = 0
        self.truncated_tokens = 0
        self.longest_example = 0

    def add(self, batch: DocumentBatch) -> None:
        texts, first_continues = batch
        if not texts:
            return
        if first_continues:
            self._continues.add(len(self._texts))
        self._texts.extend(texts)
        self._chars += sum(map(len, texts))
        if self._chars >= BATCH_CHARS:
            self.flush()

    def flush(self, *, drain: bool = False) -> None:
        """Send the gathered texts to a worker; write finished batches, oldest first."""
        if self._texts:
            texts, continues = self._texts, self._continues
            self._texts, self._continues, self._chars = [], set(), 0
            self.documents += len(texts) - len(continues)
            self._in_flight.append((self._executor.submit(self._encode, texts, add_special_tokens=False), continues))
        while self._in_flight and (drain or len(self._in_flight) > self._workers):
            future, continues = self._in_flight.popleft()
            self._write(future.result(), continues)

    def _write(self, encodings: list[Any], continues: set[int]) -> None:
        import numpy as np

        if self._line_by_line:
            ids = self._line_examples(encodings, continues)
        else:
            ids = []
            extend, prefix = ids.extend, self._prefix
            for i, encoding in enumerate(encodings):
                if i not in continues:
                    extend(prefix)
                extend(encoding.ids)
        del encodings
        array = np.fromiter(ids, dtype=self._dtype, count=len(ids))
        del ids
        if self._unknown_id is not None:
            self.unknown_tokens += int(np.count_nonzero(array == self._unknown_id))
        array.tofile(self._file)
        self.tokens += int(array.shape[0])

    def _line_examples(self, encodings: list[Any], continues: set[int]) -> list[int]:
        import numpy as np

        ids: list[int] = []
        lengths: list[int] = []
        prefix, suffix, room = self._prefix, self._suffix, self._room
        for i, encoding in enumerate(encodings):
            content = encoding.ids
            if i in continues:  # the rest of a line longer than a chunk: past the truncation anyway
                self.truncated_tokens += len(content)
                continue
            self.longest_example = max(self.longest_example, len(prefix) + len(content) + len(suffix))
            if len(content) > room:
                self.truncated_tokens += len(content) - room
                content = content[:room]
            ids += prefix
            ids += content
            ids += suffix
            lengths.append(len(prefix) + len(content) + len(suffix))
        offsets = np.cumsum(np.array(lengths, dtype=np.uint64), dtype=np.uint64) + np.uint64(self.tokens)
        assert self._offsets is not None
        offsets.tofile(self._offsets)
        return ids

    def close(self) -> None:
        """Write everything still pending and close the files."""
        self.flush(drain=True)
        self._executor.shutdown(wait=True)
        self._file.close()
        if self._offsets is not None:
            self._offsets.close()

    def abort(self) -> None:
        self._in_flight.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._file.close()
        if self._offsets is not None:
            self._offsets.close()


# --- output directory -----------------------------------------------------------------------------


class _OutputDir:
    """A hidden temp directory beside ``out`` that becomes ``out`` by rename when complete."""

    def __init__(self, out: Path, force: bool) -> None:
        self.out = out
        if out.exists() or out.is_symlink():
            if not out.is_dir():
                raise UsageError(f"--out {out} is a file; choose a directory path")
            if not force:
                raise UsageError(f"--out {out} already exists; pass --force to replace it")
            if any(out.iterdir()) and not (out / MANIFEST).is_file():
                raise UsageError(
                    f"--out {out} is a directory that is not lmctl prepared data; refusing to replace it "
                    "(choose another --out)"
                )
        from lmctl.core.disk import unwritable_directory_error

        self.tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale_temps(out)
            self.tmp.mkdir()
        except OSError as exc:
            raise unwritable_directory_error(out, exc) from None

    def commit(self) -> None:
        trash = None
        if self.out.exists():
            trash = self.out.parent / f".{self.out.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.replace(self.out, trash)
        os.replace(self.tmp, self.out)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def _remove_stale_temps(out: Path) -> None:
    """Temp directories left by killed runs (their process is gone) are removed."""
    for path in out.parent.glob(f".{out.name}.tmp-*"):
        try:
            pid = int(path.name.rsplit(".tmp-", 1)[1].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except (ValueError, IndexError, PermissionError, OSError):
            continue


# --- the run --------------------------------------------------------------------------------------


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _dataset_sha256(path: str) -> str | None:
    from lmctl.data.readers import split_dataset_spec

    base = Path(split_dataset_spec(path)[0])
    if not base.is_dir():
        return None
    digest = hashlib.sha256()
    for file in sorted(p for p in base.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(base)).encode() + b"\0")
        with open(file, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def input_sha256(item: InputFile) -> str | None:
    """Content hash of one input (None for a dataset known only by name)."""
    if item.reader == "datasets":
        return _dataset_sha256(item.path)
    return _file_sha256(item.path)


class PrepareRun:
    """One prepare run: resolved options, plans per split, and the work."""

    def __init__(self, config: PrepareConfig) -> None:
        from lmctl.plugins.registry import default_family, family_for_config, get_family

        self.config = config
        _check_options(config)
        self.registry = _registry()
        trainers = self.registry.tokenizer_trainers
        explicit_tokenizer = config.tokenizer
        self.source = _resolve_tokenizer(explicit_tokenizer, trainers) if explicit_tokenizer else None
        if config.family:
            self.family = get_family(config.family)
        elif self.source is not None and self.source.model_config is not None:
            self.family = family_for_config(self.source.model_config)
        else:
            self.family = default_family()
        if self.source is None:
            self.source = _resolve_tokenizer(self.family.tokenizer_kind, trainers)
        model = None
        if self.source.model_config is not None:
            model = SimpleNamespace(config=SimpleNamespace(**self.source.model_config))
        self.family.check_block_size(config.block_size, model)
        if self.source.kind == "train" and self.source.spec == "bytelevel-bpe":
            # Byte-level BPE starts from all 256 bytes: a smaller vocabulary cannot be built.
            floor = BYTE_ALPHABET + len(set(self.family.special_tokens().values()))
            if config.vocab_size < floor:
                raise UsageError(
                    f"--vocab-size {config.vocab_size} is smaller than bytelevel-bpe's alphabet of 256 bytes plus "
                    f"{floor - BYTE_ALPHABET} special token(s); use --vocab-size {floor} or more (merges come on top)"
                )

        self.train_inputs = resolve_inputs(config.train, config.format, role="--train")
        self.validation_inputs = resolve_inputs(config.validation, config.format, role="--validation") if config.validation else []
        self.hashes: dict[str, str | None] = {}
        self._hashers: dict[str, list[Any]] = {}  # path -> [sha256, bytes seen]

    # planning

    def _fast_text(self, item: InputFile) -> bool:
        """Built-in text files are streamed by byte range (exact line cuts, hashing on the way)."""
        reader = self.registry.data_readers.get(item.reader)
        return item.reader == "text" and reader is not None and reader.plugin == "lmctl.data.readers" and item.is_file

    @cached_property
    def plans(self) -> list[_SplitPlan]:
        """The splits to write and what each reads (record formats + validation_split: one pass first)."""
        config = self.config
        if not self.train_inputs:
            raise UsageError("--train: no input files")
        if config.validation_split is None:
            plans = [_SplitPlan("train", [_Part(i) for i in self.train_inputs])]
            if self.validation_inputs:
                plans.append(_SplitPlan("validation", [_Part(i) for i in self.validation_inputs], dataset_split="validation"))
            return plans
        fraction = config.validation_split
        if all(self._fast_text(i) for i in self.train_inputs):
            train, validation = _text_validation_cut(self.train_inputs, fraction)
            return [_SplitPlan("train", train), _SplitPlan("validation", validation)]
        # Record formats: a first pass measures the text, then documents are routed by position.
        total = 0
        for texts, _ in self._documents(_SplitPlan("train", [_Part(i) for i in self.train_inputs])):
            total += sum(map(len, texts))
        threshold = total * (1 - fraction)
        parts = [_Part(i) for i in self.train_inputs]
        return [
            _SplitPlan("train", parts, char_window=(0.0, threshold)),
            _SplitPlan("validation", parts, char_window=(threshold, float("inf"))),
        ]

    @property
    def document_split(self) -> str | None:
        """What readers are told a document is (line-by-line data: always lines)."""
        return "lines" if self.config.line_by_line else self.config.document_split

    @property
    def document_split_for_text(self) -> str:
        return self.document_split or "blank-lines"

    # reading

    def _documents(
        self, plan: _SplitPlan, *, stats: SplitStats | None = None, progress: Any = None, hashing: bool = False
    ) -> Iterator[DocumentBatch]:
        from lmctl.data.readers import iter_text_documents

        config = self.config
        position = 0.0  # characters of documents seen so far (char_window routing)
        for part in plan.parts:
            item = part.input
            if self._fast_text(item):
                on_bytes = self._byte_observer(part, progress, hashing)
                yield from iter_text_documents(
                    item.path,
                    document_split=self.document_split_for_text,
                    encoding_errors=config.encoding_errors,
                    start=part.start,
                    end=part.end,
                    on_bytes=on_bytes,
                    on_text=stats.observe_text if stats is not None else None,
                )
                if stats is not None:
                    stats.end_input()
                continue
            reader = self.registry.data_readers[item.reader]
            kwargs: dict[str, Any] = {
                "text_column": config.text_column,
                "encoding_errors": config.encoding_errors,
                "document_split": self.document_split,
            }
            if item.reader == "datasets" and reader.plugin == "lmctl.data.readers":
                kwargs["split"] = plan.dataset_split
            batch: list[str] = []
            chars = 0
            for doc in reader.read(item.path, **kwargs):
                if not isinstance(doc, str):
                    raise LmctlError(f"data reader '{item.reader}' gave {type(doc).__name__} for {item.path}, not text")
                if plan.char_window is not None:
                    before = position
                    position += len(doc)
                    if not plan.char_window[0] <= before < plan.char_window[1]:
                        continue
                if stats is not None:
                    stats.observe_document(doc)
                batch.append(doc)
                chars += len(doc)
                if chars >= BATCH_CHARS:
                    yield batch, False
                    batch, chars = [], 0
            if batch:
                yield batch, False
            if progress is not None:
                progress.advance(item.size)

    def _byte_observer(self, part: _Part, progress: Any, hashing: bool) -> Callable[[bytes], None] | None:
        item = part.input
        hasher = None
        if hashing and item.path not in self.hashes:
            state = self._hashers.get(item.path)
            if state is None and part.start == 0:
                state = self._hashers[item.path] = [hashlib.sha256(), 0]
            if state is not None and state[1] == part.start:
                hasher = state
        if hasher is None and progress is None:
            return None

        def observe(data: bytes) -> None:
            if hasher is not None:
                hasher[0].update(data)
                hasher[1] += len(data)
                if hasher[1] == item.size:
                    self.hashes[item.path] = hasher[0].hexdigest()
            if progress is not None:
                progress.advance(len(data))

        return observe

    def _plan_bytes(self, plan: _SplitPlan) -> int:
        return sum((p.end if p.end is not None else p.input.size) - p.start for p in plan.parts)

    # tokenizer

    def materialize_tokenizer(self, directory: Path, progress: Any) -> dict[str, Any]:
        source = self.source
        assert source is not None
        trainers = self.registry.tokenizer_trainers
        if source.kind == "train":
            self._train_tokenizer(source.spec, directory, progress)
        elif source.kind == "dir" and (source.path / "tokenizer.json").is_file():
            _copy_tokenizer(source.path, directory)
        else:
            _save_transformers_tokenizer(str(source.path or source.spec), directory, trainers)
        return {
            "dir": directory.name,
            "sha256": tokenizer_sha256(directory),
            "source": str(source.path) if source.path else source.spec,
            "trained": source.kind == "train",
        }

    def _train_tokenizer(self, name: str, directory: Path, progress: Any) -> None:
        from lmctl.data.tokenizer_trainers import as_transformers_tokenizer

        train_fn = self.registry.tokenizer_trainers[name]
        special = self.family.special_tokens()
        plan = self.plans[0]
        progress.start(f"tokenizer ({name})", self._plan_bytes(plan))

        def texts() -> Iterator[str]:
            for batch, _ in self._documents(plan, progress=progress):
                yield from batch

        try:
            trained = train_fn(texts(), vocab_size=self.config.vocab_size, special_tokens=special)
        except LmctlError:
            raise
        except Exception as exc:  # noqa: BLE001 - a trainer (maybe a plugin's) failed: one line, named
            raise LmctlError(f"training the '{name}' tokenizer failed: {type(exc).__name__}: {exc}") from None
        progress.finish()
        built = trained.get_vocab_size(with_added_tokens=True)
        if built <= len(set(special.values())):
            raise LmctlError("the training text is too small to train a tokenizer on; pass more text")
        if built > self.config.vocab_size:  # never a silently bigger vocabulary than asked for
            raise UsageError(
                f"--vocab-size {self.config.vocab_size} is below the smallest vocabulary the '{name}' trainer builds "
                f"on this text ({built} tokens: its alphabet and special tokens); use --vocab-size {built} or more"
            )
        quiet_libraries()
        as_transformers_tokenizer(trained, special).save_pretrained(directory)

    def separator(self, handle: TokenizerHandle) -> list[int]:
        try:
            ids = list(self.family.document_separator(handle))
        except AttributeError:
            ids = []
        if not ids:
            # Tokenizers whose special tokens only transformers can work out (old formats).
            from lmctl.core.hub import load_tokenizer

            quiet_libraries()
            ids = list(self.family.document_separator(load_tokenizer(str(handle.directory))))
        if not ids:
            raise LmctlError(
                f"the tokenizer ({self.source.spec if self.source else '?'}) has no end-of-text or separator token "
                f"(eos_token/sep_token) to put between documents; use one that has, or train one with --tokenizer"
            )
        return ids


def _check_options(config: PrepareConfig) -> None:
    if not config.train:
        raise UsageError("--train is required: pass at least one training file")
    if config.validation and config.validation_split is not None:
        raise UsageError("pass either --validation FILE or --validation-split FRACTION, not both")
    if config.validation_split is not None and not 0 < config.validation_split < 1:
        raise UsageError(f"--validation-split must be between 0 and 1 (e.g. 0.1), got {config.validation_split}")
    if config.line_by_line and config.document_split not in (None, "lines"):
        raise UsageError("--line-by-line makes every line an example; leave out --document-split (or use lines)")
    if config.document_split is not None and config.document_split not in DOCUMENT_SPLITS:
        raise UsageError(f"--document-split must be one of {', '.join(DOCUMENT_SPLITS)}, got {config.document_split!r}")
    if config.encoding_errors not in ENCODING_ERRORS:
        raise UsageError(f"--encoding-errors must be one of {', '.join(ENCODING_ERRORS)}, got {config.encoding_errors!r}")
    if config.vocab_size < 1:
        raise UsageError(f"--vocab-size must be positive, got {config.vocab_size}")
    if config.block_size < 2:
        raise UsageError(f"--block-size must be at least 2, got {config.block_size}")
    if config.progress not in PROGRESS_MODES:
        raise UsageError(f"progress must be one of {', '.join(PROGRESS_MODES)}, got {config.progress!r}")


def _input_entry(item: InputFile, part: _Part, sha: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"path": item.path, "format": item.reader, "bytes": item.size, "sha256": sha}
    if part.start or part.end is not None:
        entry["range"] = [part.start, part.end if part.end is not None else item.size]
    return entry


def prepare(config: PrepareConfig, *, progress: Any = None) -> PrepareReport:
    """Tokenize ``config.train`` (and validation data) into ``config.out``; see the module docstring.

    ``progress`` receives the work done (see :class:`SilentProgress`; the CLI passes its bar)."""
    t0 = time.perf_counter()
    if config.out is None:
        raise UsageError("--out is required: the directory to write the prepared data to")
    out = Path(config.out).expanduser()
    run = PrepareRun(config)
    output = _OutputDir(out, config.force)
    committed = False
    writer: SplitWriter | None = None
    try:
        progress = progress if progress is not None else SilentProgress()
        tokenizer_info = run.materialize_tokenizer(output.tmp / "tokenizer", progress)
        handle = TokenizerHandle(output.tmp / "tokenizer")
        vocab_size = len(handle)
        dtype = "uint16" if vocab_size <= 1 << 16 else "uint32"
        separator = run.separator(handle)
        if config.line_by_line:
            prefix, suffix = handle.special_affixes()
            if not prefix and not suffix:
                prefix = separator
        else:
            prefix, suffix = separator, []

        splits: dict[str, dict[str, Any]] = {}
        workers = encode_workers()
        for plan in run.plans:
            stats = SplitStats()
            writer = SplitWriter(
                output.tmp,
                plan.name,
                tokenizer=handle,
                dtype=dtype,
                prefix=prefix,
                suffix=suffix,
                line_by_line=config.line_by_line,
                block_size=config.block_size,
                workers=workers,
            )
            progress.start(plan.name, run._plan_bytes(plan))
            with tokenizer_threads(parallel=False):
                for batch in run._documents(plan, stats=stats, progress=progress, hashing=True):
                    writer.add(batch)
                writer.close()
            if writer.tokens == 0 and plan.name == "validation" and config.validation_split is not None:
                fraction = config.validation_split
                raise UsageError(
                    f"--validation-split {fraction} leaves no validation text (the last {fraction:.0%} of the "
                    "training text is blank); use a larger fraction or --validation FILE"
                )
            if writer.tokens == 0:
                where = ", ".join(p.input.path for p in plan.parts)
                raise LmctlError(f"the {plan.name} split has no text (inputs: {where}); check the files and --text-column")
            progress.finish()
            splits[plan.name] = _split_info(writer, stats, config)
            writer = None

        inputs: dict[str, list[dict[str, Any]]] = {}
        for plan in run.plans:
            entries = []
            for part in plan.parts:
                item = part.input
                if item.path not in run.hashes:
                    run.hashes[item.path] = input_sha256(item)
                entries.append(_input_entry(item, part, run.hashes[item.path]))
            inputs[plan.name] = entries

        from lmctl import __version__
        from lmctl.families.base import padded_vocab_size

        manifest = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "family": run.family.name,
            "block_size": config.block_size,
            "line_by_line": config.line_by_line,
            "dtype": dtype,
            "vocab_size": vocab_size,
            "padded_vocab_size": padded_vocab_size(vocab_size),
            "tokenizer": tokenizer_info,
            "document_split": run.document_split or "auto",
            "separator": separator,
            "inputs": inputs,
            "splits": splits,
            "options": _options(config, run),
            "lmctl_version": __version__,
        }
        (output.tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        output.commit()
        committed = True
    except Exception as exc:
        from lmctl.core.disk import (
            OutOfSpaceError,
            free_bytes,
            human_bytes,
            is_out_of_space,
            space_reason,
            tree_bytes,
        )

        if isinstance(exc, LmctlError) or not is_out_of_space(exc):
            raise
        written = tree_bytes(output.tmp)
        output.discard()  # the partial output holds the very space that ran out
        free = free_bytes(out.parent)
        raise OutOfSpaceError(
            f"could not write the prepared data in {out.parent}: {space_reason(exc)} ({human_bytes(written)} written, "
            f"{human_bytes(free or 0)} free); the partial output is removed and nothing earlier was changed: "
            "free space and run it again"
        ) from None
    finally:
        if writer is not None:
            writer.abort()
        if not committed:
            output.discard()
    return PrepareReport(out=out, manifest=manifest, seconds=time.perf_counter() - t0)


def _split_info(writer: SplitWriter, stats: SplitStats, config: PrepareConfig) -> dict[str, Any]:
    info: dict[str, Any] = {
        "file": writer.file_name,
        "tokens": writer.tokens,
        "documents": writer.documents,
        "bytes": stats.bytes,
        "words": stats.words,
        "unknown_tokens": writer.unknown_tokens,
        "longest_line": stats.longest_line,
    }
    if config.line_by_line:
        info["blocks"] = writer.documents
        info["dropped_tokens"] = writer.truncated_tokens
        info["longest_example_tokens"] = writer.longest_example
        info["offsets_file"] = writer.offsets_name
    else:
        info["blocks"] = writer.tokens // config.block_size
        info["dropped_tokens"] = writer.tokens % config.block_size
    return info


def _options(config: PrepareConfig, run: PrepareRun) -> dict[str, Any]:
    return {
        "tokenizer": run.source.spec if run.source else None,
        "vocab_size": config.vocab_size,
        "validation_split": config.validation_split,
        "document_split": config.document_split,
        "text_column": config.text_column,
        "format": config.format,
        "encoding_errors": config.encoding_errors,
    }


# --- the cache for implicit prepare ---------------------------------------------------------------


def cache_key(config: PrepareConfig) -> str:
    """The cache key of a config: input contents, tokenizer identity and every output-changing option."""
    run = PrepareRun(config)
    source = run.source
    assert source is not None
    if source.kind == "dir":
        tokenizer_id: Any = {"dir": tokenizer_sha256_of_source(source.path)}
    elif source.kind == "train":
        tokenizer_id = {"train": source.spec, "vocab_size": config.vocab_size}
    else:
        tokenizer_id = {"hub": source.spec}

    def fingerprint(items: list[InputFile]) -> list[Any]:
        return [[item.reader, item.size, input_sha256(item) or item.path] for item in items]

    payload = {
        "format_version": FORMAT_VERSION,
        "train": fingerprint(run.train_inputs),
        "validation": fingerprint(run.validation_inputs),
        "validation_split": config.validation_split,
        "tokenizer": tokenizer_id,
        "family": run.family.name,
        "block_size": config.block_size,
        "document_split": config.document_split,
        "line_by_line": config.line_by_line,
        "text_column": config.text_column,
        "format": config.format,
        "encoding_errors": config.encoding_errors,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def tokenizer_sha256_of_source(path: Path | None) -> str:
    """Hash of the tokenizer files of a tokenizer/model directory (weights are not hashed)."""
    assert path is not None
    digest = hashlib.sha256()
    for file in sorted(path.iterdir()):
        if file.is_file() and file.name.startswith(TOKENIZER_FILE_PREFIXES):
            digest.update(file.name.encode() + b"\0")
            digest.update(file.read_bytes())
    return digest.hexdigest()


def prepare_cached(config: PrepareConfig, cache_dir: str | os.PathLike | None = None, *, progress: Any = None) -> Path:
    """Prepare into the cache (or reuse an earlier run with the same key); returns the directory.

    ``config.out`` and ``config.force`` are ignored.  ``cache_dir`` overrides
    ``cache_root()/"prepared"``.
    """
    from lmctl.core.prepared import PreparedData

    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root() / "prepared"
    target = root / cache_key(config)
    if PreparedData.is_prepared(target):
        try:
            PreparedData(target)
            return target
        except LmctlError:
            pass  # damaged or from another format version: prepare it again
    from lmctl.core.disk import OutOfSpaceError

    try:
        prepare(dataclasses.replace(config, out=target, force=True), progress=progress)
    except OutOfSpaceError as exc:
        raise OutOfSpaceError(f"{exc} (or set LMCTL_CACHE to a disk with room; this is lmctl's cache)") from None
    return target


__all__ = [
    "BATCH_CHARS",
    "InputFile",
    "PrepareConfig",
    "PrepareReport",
    "SplitStats",
    "TokenizerHandle",
    "cache_key",
    "cache_root",
    "prepare",
    "prepare_cached",
    "resolve_inputs",
]
