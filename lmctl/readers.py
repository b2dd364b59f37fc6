"""Built-in data readers (plugin): text, jsonl/json, csv, parquet."""

from typing import Any

from lmctl.hookspecs import hookimpl


@hookimpl
def register_data_readers(register: Any) -> None:
    pass
