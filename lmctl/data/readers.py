"""Built-in data readers (a plugin, registered like any other): text, jsonl, json, csv, parquet, datasets.

Each reader turns one input into documents (``str``); ``lmctl prepare`` picks the reader from the
file extension or ``--format``:

* ``text`` (``.txt .text .md .raw``): streamed in 512 KiB chunks, UTF-8 (a BOM is skipped, CRLF
  becomes LF).  What a document is comes from ``--document-split``: ``blank-lines`` (default:
  paragraphs, i.e. maximal runs of non-blank lines joined with ``\\n``), ``lines`` (every non-blank
  line) or ``file`` (the whole file).  A blank line is one holding only ASCII whitespace.
* ``jsonl`` (``.jsonl .ndjson``), ``json`` (``.json``: a JSON array of records, or JSON lines),
  ``csv`` (``.csv .tsv``), ``parquet`` (``.parquet``): each record's ``--text-column`` value is one
  document (``--document-split lines|blank-lines`` splits it further).  Null values are skipped.
* ``datasets``: a directory written by ``datasets``' ``save_to_disk`` or the name of a dataset in
  the local ``datasets`` cache (``NAME``, ``NAME:CONFIG``; ``@SPLIT`` picks a split, else ``train``
  for ``--train`` and ``validation`` for ``--validation``).  Names are looked up offline only.

Documents longer than :data:`MAX_DOCUMENT_CHARS` are handed on in line-aligned pieces so memory
stays bounded; only there can the token stream differ from tokenizing the document whole.

Readers raise :class:`lmctl.errors.LmctlError` with one line naming the file (and byte offset or
record) at fault.  Plugin readers get the same keyword arguments: see
:func:`lmctl.hookspecs.register_data_readers`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from lmctl.errors import LmctlError, UsageError
from lmctl.hookspecs import hookimpl

CHUNK_BYTES = 1 << 19
"""Bytes read from a text file at a time."""

MAX_DOCUMENT_CHARS = 1 << 20
"""A document longer than this is passed on in line-aligned pieces (bounded memory)."""

DOCUMENT_SPLITS = ("lines", "blank-lines", "file")
ENCODING_ERRORS = ("strict", "replace", "ignore")
TEXT_EXTENSIONS = (".txt", ".text", ".md", ".raw")

BLANK_CHARS = " \t\r\f\v"  # what a "blank" line may hold (ASCII whitespace other than \n)
_BLANK_RUN = re.compile(r"\n(?:[ \t\r\f\v]*\n)+")  # the end of a paragraph and the blank lines after it
_LEADING_BLANK_LINES = re.compile(r"^(?:[ \t\r\f\v]*\n)+")
_TRAILING_BLANK = re.compile(r"(?:\n[ \t\r\f\v]*)+$")
_BOM = b"\xef\xbb\xbf"

DocumentBatch = tuple[list[str], bool]
"""``(texts, first_continues)``: documents in order; when ``first_continues`` the first text
continues the previous batch's last document (a piece of a very long document)."""


# --- text files -----------------------------------------------------------------------------------


def _utf8_cut(buf: bytes) -> int:
    """A cut position in ``buf`` that does not split a UTF-8 sequence."""
    j = len(buf) - 1
    while j > 0 and len(buf) - j < 4 and 0x80 <= buf[j] < 0xC0:
        j -= 1
    return j if buf[j] >= 0xC0 else len(buf)


def _decode(piece: bytes, path: str | os.PathLike, offset: int, errors: str) -> str:
    if errors == "strict":
        try:
            text = piece.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LmctlError(
                f"{path}: not UTF-8 text (invalid byte 0x{piece[exc.start]:02x} at byte offset {offset + exc.start}); "
                "convert it to UTF-8, or pass --encoding-errors replace to go on"
            ) from None
        nul = piece.find(b"\x00")
        if nul >= 0:
            raise LmctlError(
                f"{path}: looks like binary data (NUL byte at byte offset {offset + nul}); "
                "pass a text file, or --encoding-errors replace to go on"
            )
    else:
        text = piece.decode("utf-8", errors=errors)
        if "\x00" in text:
            text = text.replace("\x00", "\ufffd" if errors == "replace" else "")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    return text


def iter_text_chunks(
    path: str | os.PathLike,
    *,
    start: int = 0,
    end: int | None = None,
    encoding_errors: str = "strict",
    chunk_bytes: int | None = None,
    on_bytes: Callable[[bytes], None] | None = None,
) -> Iterator[str]:
    """Decoded text of bytes ``[start, end)`` of a file, in chunks of about ``chunk_bytes``.

    Chunks end at a line break (or at a space when a line is longer than a chunk), so no line or
    word is split between chunks and counting them chunk by chunk is exact.  ``on_bytes`` sees
    every raw byte read, in order (hashing, progress).  Invalid UTF-8 and NUL bytes raise an
    :class:`LmctlError` naming the file and byte offset unless ``encoding_errors`` says otherwise.
    """
    if encoding_errors not in ENCODING_ERRORS:
        raise UsageError(f"--encoding-errors must be one of {', '.join(ENCODING_ERRORS)}, got {encoding_errors!r}")
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    if end is None:
        end = os.path.getsize(path)
    remaining = end - start
    offset = start  # file offset of buf[0]
    buf = b""
    with open(path, "rb") as f:
        f.seek(start)
        while True:
            data = f.read(min(chunk_bytes, remaining)) if remaining > 0 else b""
            remaining -= len(data)
            if data and on_bytes is not None:
                on_bytes(data)
            buf = buf + data if buf else data
            if not buf:
                return
            last = remaining <= 0 or not data
            if last:
                cut = len(buf)
            else:
                cut = buf.rfind(b"\n") + 1 or max(buf.rfind(b" "), buf.rfind(b"\t")) + 1 or _utf8_cut(buf)
            piece, buf = buf[:cut], buf[cut:]
            skip = 3 if offset == 0 and piece.startswith(_BOM) else 0
            text = _decode(piece[skip:] if skip else piece, path, offset + skip, encoding_errors)
            offset += cut
            if text:
                yield text
            if last:
                return


def _is_blank(text: str) -> bool:
    return not text.strip(BLANK_CHARS + "\n")


def split_documents(chunks: Iterable[str], mode: str, *, max_chars: int | None = None) -> Iterator[DocumentBatch]:
    """Cut a stream of text chunks (one file, or one record) into documents.

    ``mode`` is ``lines`` (each non-blank line), ``blank-lines`` (each paragraph: a maximal run of
    non-blank lines, joined with ``\\n``) or ``file`` (everything).  Yields
    :data:`DocumentBatch` tuples, one or a few per chunk; whatever may continue into the next chunk
    is carried over, so chunk boundaries never change the documents (up to ``max_chars``,
    default :data:`MAX_DOCUMENT_CHARS`).
    """
    max_chars = max_chars or MAX_DOCUMENT_CHARS
    if mode == "lines":
        yield from _split_lines(chunks, max_chars)
    elif mode == "blank-lines":
        yield from _split_paragraphs(chunks, max_chars)
    elif mode == "file":
        yield from _split_file(chunks, max_chars)
    else:
        raise UsageError(f"--document-split must be one of {', '.join(DOCUMENT_SPLITS)}, got {mode!r}")


def _split_lines(chunks: Iterable[str], max_chars: int) -> Iterator[DocumentBatch]:
    carry, continues = "", False
    for chunk in chunks:
        lines = (carry + chunk if carry else chunk).split("\n")
        carry = lines.pop()
        if len(lines) > 0:
            first = lines[0]
            docs = [line for line in lines[1:] if line.strip(BLANK_CHARS)]
            if continues:
                yield [first], True
            elif first.strip(BLANK_CHARS):
                docs.insert(0, first)
            continues = False
            if docs:
                yield docs, False
        if len(carry) > max_chars:
            if continues or carry.strip(BLANK_CHARS):  # a blank run of that size starts nothing
                yield [carry], continues
                continues = True
            carry = ""
    if carry and (continues or carry.strip(BLANK_CHARS)):
        yield [carry], continues


def _split_paragraphs(chunks: Iterable[str], max_chars: int) -> Iterator[DocumentBatch]:
    carry, continues, at_start = "", False, True
    for chunk in chunks:
        text = carry + chunk if carry else chunk
        if at_start:  # nothing of a paragraph seen yet: blank lines here separate nothing
            text = _LEADING_BLANK_LINES.sub("", text, count=1)
        parts = _BLANK_RUN.split(text)
        carry = parts.pop()
        if parts:
            rest = parts
            if continues:
                if parts[0]:
                    yield [parts[0]], True
                rest = parts[1:]
                continues = False
            # The greedy blank run leaves no blank part, except an empty one at a paragraph start.
            docs = rest[1:] if rest and not rest[0] else rest
            if docs:
                yield docs, False
        at_start = not continues and _is_blank(carry)
        if len(carry) > max_chars:
            # Pass on all but the last line break, so a blank run that starts there is still seen.
            cut = carry.rfind("\n")
            piece, carry = (carry[:cut], carry[cut:]) if cut > 0 else (carry, "")
            if continues or not _is_blank(piece):
                yield [piece], continues
                continues, at_start = True, False
    carry = _TRAILING_BLANK.sub("", carry, count=1)
    if carry and (continues or not _is_blank(carry)):
        yield [carry], continues


def _split_file(chunks: Iterable[str], max_chars: int) -> Iterator[DocumentBatch]:
    parts: list[str] = []
    size, continues = 0, False
    for chunk in chunks:
        parts.append(chunk)
        size += len(chunk)
        if size > max_chars:
            piece = "".join(parts)
            if continues or not _is_blank(piece):
                yield [piece], continues
                continues = True
            parts, size = [], 0
    piece = "".join(parts)
    if piece and (continues or not _is_blank(piece)):
        yield [piece], continues


def iter_text_documents(
    path: str | os.PathLike,
    *,
    document_split: str = "blank-lines",
    encoding_errors: str = "strict",
    start: int = 0,
    end: int | None = None,
    on_bytes: Callable[[bytes], None] | None = None,
    on_text: Callable[[str], None] | None = None,
) -> Iterator[DocumentBatch]:
    """Documents of a text file (or of the byte range ``[start, end)``) as :data:`DocumentBatch` es.

    ``on_text`` sees every decoded chunk (statistics); ``on_bytes`` every raw byte (hashing).
    """
    chunks = iter_text_chunks(path, start=start, end=end, encoding_errors=encoding_errors, on_bytes=on_bytes)
    if on_text is not None:
        chunks = _tap(chunks, on_text)
    return split_documents(chunks, document_split)


def _tap(chunks: Iterable[str], fn: Callable[[str], None]) -> Iterator[str]:
    for chunk in chunks:
        fn(chunk)
        yield chunk


def read_text(
    path: str, *, text_column: str = "text", encoding_errors: str = "strict", document_split: str | None = None
) -> Iterator[str]:
    """The ``text`` reader: documents of a UTF-8 text file (see the module docstring)."""
    for texts, _ in iter_text_documents(path, document_split=document_split or "blank-lines", encoding_errors=encoding_errors):
        yield from texts


# --- records --------------------------------------------------------------------------------------


def _record_documents(text: Any, document_split: str | None, column: str, path: str, where: str, number: int) -> Iterator[str]:
    """Documents of one record's text; ``path``, ``where`` ("line"/"record") and ``number`` name it in errors."""
    if text is None:
        return
    if not isinstance(text, str):
        raise LmctlError(f"{path} {where} {number}: column '{column}' holds {type(text).__name__}, not text; pass --text-column")
    if document_split in (None, "file"):
        if not _is_blank(text):
            yield text
        return
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    for texts, _ in split_documents([text], document_split, max_chars=len(text) + 1):
        yield from texts


def _missing_column(path: str, column: str, columns: Iterable[str], what: str = "column") -> LmctlError:
    have = ", ".join(sorted(str(c) for c in columns)) or "none"
    return LmctlError(f"{path} has no {what} '{column}' (it has: {have}); pass --text-column NAME")


def read_jsonl(
    path: str, *, text_column: str = "text", encoding_errors: str = "strict", document_split: str | None = None
) -> Iterator[str]:
    """The ``jsonl`` reader: one JSON object per line; the ``text_column`` field is a document."""
    import json

    with open(path, "rb") as f:
        offset = 0
        for number, raw in enumerate(f, start=1):
            line = _decode(raw, path, offset, encoding_errors)
            offset += len(raw)
            if _is_blank(line):
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LmctlError(f"{path} line {number}: not valid JSON ({exc.msg}); is it JSON lines?") from None
            if not isinstance(record, dict):
                raise LmctlError(f"{path} line {number}: expected a JSON object with a '{text_column}' field")
            if text_column not in record:
                raise _missing_column(f"{path} line {number}", text_column, record, "field")
            yield from _record_documents(record[text_column], document_split, text_column, path, "line", number)


def read_json(
    path: str, *, text_column: str = "text", encoding_errors: str = "strict", document_split: str | None = None
) -> Iterator[str]:
    """The ``json`` reader: a JSON array of objects (read whole), or JSON lines."""
    import json

    with open(path, "rb") as f:
        head = f.read(4096).lstrip(_BOM).lstrip()
    if not head.startswith(b"["):
        yield from read_jsonl(path, text_column=text_column, encoding_errors=encoding_errors, document_split=document_split)
        return
    raw = Path(path).read_bytes()
    text = _decode(raw[3:] if raw.startswith(_BOM) else raw, path, 0, encoding_errors)
    try:
        records = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LmctlError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    del text, raw
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise LmctlError(f"{path} record {number}: expected a JSON object with a '{text_column}' field")
        if text_column not in record:
            raise _missing_column(f"{path} record {number}", text_column, record, "field")
        yield from _record_documents(record[text_column], document_split, text_column, path, "record", number)


def _iter_arrow_column(batches: Iterable[Any], path: str, column: str, document_split: str | None) -> Iterator[str]:
    number = 0
    for batch in batches:
        for value in batch.column(column).to_pylist():
            number += 1
            yield from _record_documents(value, document_split, column, path, "record", number)


def read_csv(
    path: str, *, text_column: str = "text", encoding_errors: str = "strict", document_split: str | None = None
) -> Iterator[str]:
    """The ``csv`` reader (``.tsv``: tab-separated), streamed in blocks with pyarrow."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    delimiter = "\t" if str(path).lower().endswith(".tsv") else ","
    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=CHUNK_BYTES),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(column_types={text_column: pa.string()}, strings_can_be_null=True),
        )
    except pa.ArrowInvalid as exc:
        message = str(exc).splitlines()[0]
        if "UTF8" in message or "utf8" in message.lower():
            raise LmctlError(f"{path}: not UTF-8 text ({message}); convert it to UTF-8") from None
        raise LmctlError(f"{path}: cannot read it as CSV ({message})") from None
    names = reader.schema.names
    if text_column not in names:
        raise _missing_column(path, text_column, names)
    try:
        yield from _iter_arrow_column(reader, path, text_column, document_split)
    except pa.ArrowInvalid as exc:
        raise LmctlError(f"{path}: cannot read it as CSV ({str(exc).splitlines()[0]})") from None


def read_parquet(
    path: str, *, text_column: str = "text", encoding_errors: str = "strict", document_split: str | None = None
) -> Iterator[str]:
    """The ``parquet`` reader: the text column only, in row batches."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise LmctlError(f"{path}: not a Parquet file ({str(exc).splitlines()[0]})") from None
    names = pf.schema_arrow.names
    if text_column not in names:
        raise _missing_column(path, text_column, names)
    yield from _iter_arrow_column(pf.iter_batches(batch_size=1024, columns=[text_column]), path, text_column, document_split)


# --- datasets -------------------------------------------------------------------------------------


def is_dataset_dir(path: str | os.PathLike) -> bool:
    """A directory written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``."""
    p = Path(path)
    return p.is_dir() and ((p / "state.json").is_file() or (p / "dataset_dict.json").is_file())


def split_dataset_spec(spec: str) -> tuple[str, str | None]:
    """``NAME[:CONFIG]@SPLIT`` -> (``NAME[:CONFIG]``, ``SPLIT``)."""
    if "@" in spec and not Path(spec).exists():
        name, split = spec.rsplit("@", 1)
        return name, split or None
    return spec, None


def load_dataset_split(spec: str, default_split: str = "train") -> Any:
    """A ``datasets.Dataset`` from a ``save_to_disk`` directory or a locally cached dataset name."""
    import datasets

    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()  # prepare shows its own progress
    source, split = split_dataset_spec(spec)
    if is_dataset_dir(source):
        loaded = datasets.load_from_disk(source)
    else:
        name, _, config = source.partition(":")
        # Only what is already on this machine: no download (and no slow retries when offline).
        import huggingface_hub.constants as hub_constants

        saved = datasets.config.HF_DATASETS_OFFLINE, hub_constants.HF_HUB_OFFLINE
        datasets.config.HF_DATASETS_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
        try:
            loaded = datasets.load_dataset(name, config or None)
        except Exception as exc:  # noqa: BLE001 - datasets raises many kinds; all mean "not available"
            raise UsageError(
                f"input not found: {spec} (no such file or directory, and no dataset of that name in the local "
                f"datasets cache: {type(exc).__name__})"
            ) from None
        finally:
            datasets.config.HF_DATASETS_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved
    if isinstance(loaded, (datasets.DatasetDict, dict)):
        want = split or default_split
        if want not in loaded:
            raise LmctlError(f"{spec} has no '{want}' split (it has: {', '.join(loaded)}); name one with {source}@SPLIT")
        return loaded[want]
    if split not in (None, "train") and not is_dataset_dir(source):
        raise LmctlError(f"{spec}: the dataset has a single split")
    return loaded


def read_datasets(
    path: str,
    *,
    text_column: str = "text",
    encoding_errors: str = "strict",
    document_split: str | None = None,
    split: str = "train",
) -> Iterator[str]:
    """The ``datasets`` reader: the text column of a saved or locally cached dataset, in batches."""
    dataset = load_dataset_split(path, split)
    if text_column not in dataset.column_names:
        raise _missing_column(path, text_column, dataset.column_names)
    table = dataset.with_format("arrow")
    number = 0
    for start in range(0, len(dataset), 1024):
        for value in table[start : start + 1024][text_column].to_pylist():
            number += 1
            yield from _record_documents(value, document_split, text_column, path, "record", number)


READERS: dict[str, tuple[tuple[str, ...], Callable[..., Iterator[str]]]] = {
    "text": (TEXT_EXTENSIONS, read_text),
    "jsonl": ((".jsonl", ".ndjson"), read_jsonl),
    "json": ((".json",), read_json),
    "csv": ((".csv", ".tsv"), read_csv),
    "parquet": ((".parquet",), read_parquet),
    "datasets": ((), read_datasets),
}


@hookimpl
def register_data_readers(register: Any) -> None:
    for name, (extensions, read_fn) in READERS.items():
        register(name, extensions, read_fn)
