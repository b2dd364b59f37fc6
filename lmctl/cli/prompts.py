"""Prompts from files and stdin for ``lmctl generate`` (the terminal side of generation)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from lmctl.errors import LmctlError


def read_prompts_file(path: str | Path, *, stream: Any = None) -> list[str]:
    """Prompts from a file: one per line, or JSON lines with a ``prompt`` field.

    JSON lines are recognised by the ``.jsonl``/``.json`` extension or by every non-blank line
    starting with ``{``.  Blank lines are skipped.  ``path`` ``-`` reads ``stream`` (stdin).
    """
    name = str(path)
    if name == "-":
        raw = (stream if stream is not None else sys.stdin.buffer).read()
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        name = "<stdin>"
    else:
        p = Path(path).expanduser()
        if not p.exists():
            raise LmctlError(f"prompts file not found: {p}")
        if p.is_dir():
            raise LmctlError(f"--prompts-file {p} is a directory; give a text or JSONL file")
        try:
            raw = p.read_bytes()
        except OSError as exc:
            raise LmctlError(f"cannot read prompts file {p}: {exc.strerror or exc}") from None
    text = _decode_utf8(raw, name)
    lines = [line for line in text.splitlines() if line.strip()]
    is_jsonl = name.endswith((".jsonl", ".json")) or (
        lines and all(line.lstrip().startswith("{") for line in lines)
    )
    if not is_jsonl:
        return lines
    prompts = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LmctlError(
                f"{name} line {number} is not valid JSON ({exc.msg}); JSONL prompts need one object per line"
            ) from None
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
            raise LmctlError(
                f'{name} line {number} has no string "prompt" field; expected {{"prompt": "..."}}'
            )
        prompts.append(record["prompt"])
    return prompts


def _decode_utf8(raw: bytes, name: str) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LmctlError(
            f"{name} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "convert it first, e.g. iconv -f latin1 -t utf-8"
        ) from None
    return text.removeprefix("\ufeff")  # a BOM from Windows editors is not part of the first prompt


def read_stdin_prompt(stream: Any = None) -> str:
    """The whole of stdin as one prompt (``lmctl generate --model M -``); a final newline is dropped."""
    raw = (stream if stream is not None else sys.stdin.buffer).read()
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    text = _decode_utf8(raw, "<stdin>")
    return text[:-1] if text.endswith("\n") else text
