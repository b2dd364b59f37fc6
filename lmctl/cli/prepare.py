"""``lmctl prepare``: a thin layer over :func:`lmctl.workflows.prepare.prepare` (imported when run)."""

from __future__ import annotations

import json
from enum import Enum
from typing import Any

import typer

from lmctl.errors import UsageError, friendly_errors

HELP = "Tokenize raw text into packed, memory-mappable training data (training a tokenizer if asked)."


class DocumentSplit(str, Enum):
    lines = "lines"
    blank_lines = "blank-lines"
    file = "file"


class EncodingErrors(str, Enum):
    strict = "strict"
    replace = "replace"
    ignore = "ignore"


@friendly_errors
def prepare_command(
    train: list[str] = typer.Option(
        None, "--train", "-t", metavar="FILE",
        help="Training text: files, quoted globs ('data/*.txt'), directories, save_to_disk directories or "
        "cached datasets names. Repeat the option, or list several files after it.",
    ),
    more_train: list[str] = typer.Argument(None, metavar="[FILE]...", help="More training files (so --train *.txt works).", show_default=False),
    out: str = typer.Option(None, "--out", "-o", metavar="DIR", help="Output directory (written atomically)."),
    validation: list[str] = typer.Option(None, "--validation", metavar="FILE", help="Validation text (repeatable)."),
    validation_split: float = typer.Option(
        None, "--validation-split", metavar="FRACTION",
        help="Use the last FRACTION of the training text (cut at a line boundary) for validation, e.g. 0.1.",
    ),
    tokenizer: str = typer.Option(
        None, "--tokenizer", metavar="PATH_OR_NAME",
        help="Train one: bpe, bytelevel-bpe, wordpiece, unigram, char, word (or a plugin's); or reuse a tokenizer "
        "or model directory, or a Hub id. Default: the family's usual trainer.",
    ),
    vocab_size: int = typer.Option(8192, "--vocab-size", help="Vocabulary size of a trained tokenizer (an upper bound for char and word)."),
    family: str = typer.Option(
        None, "--family", help="causal, masked, permuted, electra (or a plugin's): picks special tokens and the "
        "document separator. Default: the model's family when --tokenizer is a model directory, else causal.",
    ),
    block_size: int = typer.Option(128, "--block-size", help="Tokens per training example (checked against the model when --tokenizer is a model directory)."),
    document_split: DocumentSplit = typer.Option(
        None, "--document-split",
        help="What a document is: each line, each paragraph (blank-lines; the default for text) or the whole "
        "file. Records (jsonl/csv/parquet) are one document each unless this is given.",
    ),
    line_by_line: bool = typer.Option(False, "--line-by-line", help="One example per non-blank line, truncated to --block-size (masked families)."),
    text_column: str = typer.Option("text", "--text-column", help="Column/field holding the text in jsonl, json, csv, parquet and datasets inputs."),
    data_format: list[str] = typer.Option(
        None, "--format", metavar="FORMAT", help="Reader for every input: text, jsonl, json, csv, parquet, datasets (or a plugin's); or .EXT=READER for the files ending in .EXT (repeatable, so one prepare mixes formats). Default: from the extension.",
    ),
    encoding_errors: EncodingErrors = typer.Option(
        EncodingErrors.strict, "--encoding-errors", help="What to do with bytes that are not UTF-8 text: stop with an error, replace them, or drop them.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the data report as one JSON object."),
    force: bool = typer.Option(False, "--force", help="Replace DIR if it holds prepared data already."),
    offline: bool = typer.Option(False, "--offline", help="Never contact the Hugging Face Hub (HF_HUB_OFFLINE=1): Hub tokenizers and datasets come from the local cache only."),
) -> None:
    """Tokenize raw text into packed, memory-mappable training data.

    Writes DIR/manifest.json, DIR/train.bin (and validation.bin), and the tokenizer in
    DIR/tokenizer/, then prints a data report. `lmctl train --data DIR` reads it.

    Example: lmctl prepare --train input.txt --validation-split 0.1 --tokenizer char --out data/shakespeare
    """
    _run(dict(locals()))


def _run(options: dict[str, Any]) -> None:
    from lmctl.core.hub import apply_offline
    from lmctl.workflows.prepare import PrepareConfig, prepare

    apply_offline(options["offline"])

    train = list(options["train"] or [])
    extra = list(options["more_train"] or [])
    if extra:
        if options["validation"]:
            raise UsageError(
                f"unexpected argument {extra[0]!r}: with --validation, repeat --train/--validation for each file "
                "(or quote a glob: --train 'data/*.txt')"
            )
        train += extra
    if not train:
        raise UsageError("--train is required: pass at least one training file")
    if not options["out"]:
        raise UsageError("--out is required: the directory to write the prepared data to")
    config = PrepareConfig(
        train=train,
        out=options["out"],
        validation=list(options["validation"] or []),
        validation_split=options["validation_split"],
        tokenizer=options["tokenizer"],
        vocab_size=options["vocab_size"],
        family=options["family"],
        block_size=options["block_size"],
        document_split=options["document_split"].value if options["document_split"] else None,
        line_by_line=options["line_by_line"],
        text_column=options["text_column"],
        format=(options["data_format"][0] if len(options["data_format"]) == 1 else list(options["data_format"])) if options["data_format"] else None,
        encoding_errors=options["encoding_errors"].value,
        force=options["force"],
    )
    from lmctl.cli.display import PrepareProgress

    with PrepareProgress(config.progress) as progress:
        report = prepare(config, progress=progress)
    if options["as_json"]:
        typer.echo(json.dumps(report.as_dict()))
    else:
        print_report(report)


def print_report(report: Any) -> None:
    """The data report as a rich table (plain text when stdout is not a terminal)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    data = report.as_dict()
    splits = data["splits"]
    table = Table(title=Text(f"prepared {data['out']} in {data['seconds']:.1f} s"), title_justify="left")
    table.add_column("")
    for name in splits:
        table.add_column(name, justify="right")

    def row(label: str, fmt: Any) -> None:
        table.add_row(label, *[fmt(info) for info in splits.values()])

    row("documents", lambda i: f"{i['documents']:,}")
    row("tokens", lambda i: f"{i['tokens']:,}")
    row("text bytes", lambda i: f"{i['bytes']:,}")
    row("words", lambda i: f"{i['words']:,}")
    row("bytes per token", lambda i: f"{i['bytes_per_token']:.2f}")
    row("unknown tokens", lambda i: f"{i['unknown_tokens']:,} ({i['unknown_rate']:.2%})")
    row("blocks" if not data["line_by_line"] else "examples", lambda i: f"{i['blocks']:,}")
    row("tokens dropped" if not data["line_by_line"] else "tokens truncated", lambda i: f"{i['dropped_tokens']:,}")
    row("longest line (chars)", lambda i: f"{i['longest_line']:,}")
    console = Console()
    console.print(table)
    tok = data["tokenizer"]
    how = "trained" if tok["trained"] else "from"
    console.print(
        Text(
            f"family {data['family']}, block size {data['block_size']}, tokenizer {how} {tok['source']} "
            f"(vocabulary {data['vocab_size']}, {data['dtype']})"
        )
    )
