"""Bad input to ``lmctl prepare``: a non-zero exit code and one clear ``error:`` line, never a
traceback.  Plus a property test: random text and random bytes either prepare or fail cleanly."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from lmctl.cli.app import app
from lmctl.core.prepared import PreparedData
from lmctl.errors import LmctlError
from lmctl.workflows.prepare import PrepareConfig, prepare

runner = CliRunner()


@pytest.fixture(scope="session")
def tok(tokenizer_for, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("tok-causal")
    tokenizer_for("causal").save_pretrained(path)
    return str(path)


def fails(args: list[str], code: int, *needles: str) -> str:
    """Run ``lmctl prepare ARGS``; check the exit code and that stderr is one error line with ``needles``."""
    result = runner.invoke(app, ["prepare", *args])
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def test_missing_file(tmp_path, tok):
    fails(["--train", str(tmp_path / "nope.txt"), "--tokenizer", tok, "--out", str(tmp_path / "o")], 2, "input not found", "nope.txt")
    fails(["--train", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o")], 2, "input not found")
    # A bare name could be a dataset in the local datasets cache: looked up offline, then refused.
    fails(["--train", "no_such_corpus_here", "--tokenizer", tok, "--out", str(tmp_path / "o")], 2,
          "input not found: no_such_corpus_here", "datasets cache")
    assert not (tmp_path / "o").exists()


def test_empty_file(tmp_path, tok):
    (tmp_path / "empty.txt").write_text("")
    fails(["--train", str(tmp_path / "empty.txt"), "--tokenizer", tok, "--out", str(tmp_path / "o")], 1, "empty.txt is empty")


def test_blank_text_has_no_documents(tmp_path, tok):
    (tmp_path / "blank.txt").write_text("\n   \n\t\n\n")
    fails(["--train", str(tmp_path / "blank.txt"), "--tokenizer", tok, "--out", str(tmp_path / "o")], 1, "train split has no text", "blank.txt")


def test_directory_or_glob_with_no_matching_files(tmp_path, tok):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "image.png").write_bytes(b"\x89PNG")
    fails(["--train", str(tmp_path / "d"), "--tokenizer", tok, "--out", str(tmp_path / "o")], 2, "no input files in directory", str(tmp_path / "d"), ".txt")
    fails(["--train", str(tmp_path / "d" / "*.txt"), "--tokenizer", tok, "--out", str(tmp_path / "o")], 2, "no files match", "*.txt")
    fails(["--train", str(tmp_path / "d" / "image.png"), "--tokenizer", tok, "--out", str(tmp_path / "o")], 2, "cannot tell the format", "--format")


def test_non_utf8_names_file_and_offset_and_replace_goes_on(tmp_path, tok, monkeypatch):
    import lmctl.data.readers

    monkeypatch.setattr(lmctl.data.readers, "CHUNK_BYTES", 64)  # the bad byte is several chunks in
    path = tmp_path / "latin1.txt"
    good = ("plain ascii line\n" * 20).encode()
    path.write_bytes(good + "café au lait\n".encode("latin-1"))
    offset = len(good) + 3
    fails(["--train", str(path), "--tokenizer", tok, "--out", str(tmp_path / "o")], 1,
          str(path), "not UTF-8", "0xe9", f"byte offset {offset}", "--encoding-errors replace")
    result = runner.invoke(app, ["prepare", "--train", str(path), "--tokenizer", tok, "--out", str(tmp_path / "o"),
                                 "--encoding-errors", "replace", "--json"])
    assert result.exit_code == 0, result.output
    from transformers import AutoTokenizer

    tokens = PreparedData(tmp_path / "o").split("train").tokens
    assert "caf\ufffd au lait" in AutoTokenizer.from_pretrained(tok).decode(tokens)


def test_binary_file(tmp_path, tok):
    path = tmp_path / "blob.txt"
    path.write_bytes(b"header text\n" + bytes(range(0, 10)) * 3)
    fails(["--train", str(path), "--tokenizer", tok, "--out", str(tmp_path / "o")], 1, str(path), "binary", "byte offset 12")


def test_block_size_larger_than_the_model_allows(tmp_path, tiny_model_dir, corpus_file):
    model = tiny_model_dir("causal", 64)
    fails(["--train", str(corpus_file), "--tokenizer", str(model), "--block-size", "128", "--out", str(tmp_path / "o")],
          2, "--block-size 128 is larger than the model allows (64 positions)")
    fails(["--train", str(corpus_file), "--family", "permuted", "--block-size", "33", "--out", str(tmp_path / "o")], 2, "even --block-size")
    fails(["--train", str(corpus_file), "--block-size", "1", "--out", str(tmp_path / "o")], 2, "at least 2")


def test_validation_split_that_leaves_no_validation_data(tmp_path, tok):
    one_line = tmp_path / "one.txt"
    one_line.write_text("a single long line of text without any line break after it")
    fails(["--train", str(one_line), "--validation-split", "0.1", "--tokenizer", tok, "--out", str(tmp_path / "o")],
          2, "--validation-split 0.1 leaves no validation data")
    blank_tail = tmp_path / "tail.txt"
    blank_tail.write_text("some words on the first line\n" + "\n" * 20)
    fails(["--train", str(blank_tail), "--validation-split", "0.2", "--tokenizer", tok, "--out", str(tmp_path / "o")],
          2, "--validation-split 0.2 leaves no validation text")
    fails(["--train", str(one_line), "--validation-split", "1.5", "--out", str(tmp_path / "o")], 2, "between 0 and 1")
    fails(["--train", str(one_line), "--validation", str(one_line), "--validation-split", "0.1", "--out", str(tmp_path / "o")],
          2, "either --validation")


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json", "parquet"])
def test_records_without_the_text_column(tmp_path, tok, fmt):
    path = tmp_path / f"data.{fmt}"
    rows = [{"body": "hello", "id": 1}, {"body": "world", "id": 2}]
    if fmt == "csv":
        path.write_text("body,id\nhello,1\nworld,2\n")
    elif fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in rows))
    elif fmt == "json":
        path.write_text(json.dumps(rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    fails(["--train", str(path), "--tokenizer", tok, "--out", str(tmp_path / "o")], 1, str(path), "'text'", "body, id", "--text-column")
    ok = runner.invoke(app, ["prepare", "--train", str(path), "--tokenizer", tok, "--out", str(tmp_path / "o"), "--text-column", "body"])
    assert ok.exit_code == 0, ok.output


def test_broken_records(tmp_path, tok):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n{"text": oops}\n')
    fails(["--train", str(path), "--tokenizer", tok, "--out", str(tmp_path / "o")], 1, str(path), "line 2", "not valid JSON")
    path.write_text('{"text": "fine"}\n{"text": 42}\n')
    fails(["--train", str(path), "--tokenizer", tok, "--out", str(tmp_path / "o")], 1, "line 2", "int, not text")
    csv = tmp_path / "bad.csv"
    csv.write_bytes(b"text\n\xff\xfe broken\n")
    fails(["--train", str(csv), "--tokenizer", tok, "--out", str(tmp_path / "o")], 1, str(csv))


def test_bad_tokenizer_and_family(tmp_path, corpus_file):
    out = ["--out", str(tmp_path / "o")]
    fails(["--train", str(corpus_file), "--tokenizer", str(tmp_path / "missing-tok"), *out], 2, "no such directory", "bytelevel-bpe")
    (tmp_path / "empty-dir").mkdir()
    fails(["--train", str(corpus_file), "--tokenizer", str(tmp_path / "empty-dir"), *out], 1, "has no tokenizer files")
    fails(["--train", str(corpus_file), "--tokenizer", "no-such-org/no-such-tokenizer", *out], 1, "no-such-org/no-such-tokenizer")
    fails(["--train", str(corpus_file), "--family", "telepathic", *out], 2, "unknown family 'telepathic'")
    fails(["--train", str(corpus_file), "--format", "docx", *out], 2, "unknown --format 'docx'")


def test_missing_or_conflicting_options(tmp_path, corpus_file):
    fails(["--out", str(tmp_path / "o")], 2, "--train is required")
    fails(["--train", str(corpus_file)], 2, "--out is required")
    fails(["--train", str(corpus_file), "--line-by-line", "--document-split", "file", "--out", str(tmp_path / "o")], 2, "--line-by-line")
    fails(["--train", str(corpus_file), str(corpus_file), "--validation", str(corpus_file), "--out", str(tmp_path / "o")], 2, "unexpected argument")
    (tmp_path / "file").write_text("x")
    fails(["--train", str(corpus_file), "--out", str(tmp_path / "file")], 2, "is a file")


# --- property: random input never escapes as a traceback -------------------------------------------


def _prepare_or_clean_error(path: Path, out: Path, tok: str, **options) -> None:
    try:
        report = prepare(PrepareConfig(train=[str(path)], out=out, tokenizer=tok, progress="none", force=True, **options))
    except LmctlError as exc:
        message = str(exc)
        assert message and "\n" not in message and exc.exit_code in (1, 2)
        assert not out.exists() or PreparedData.is_prepared(out)
        return
    split = PreparedData(report.out).split("train")
    assert split.num_tokens == report.manifest["splits"]["train"]["tokens"] > 0


FAST = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(
    text=st.text(st.characters(codec="utf-8"), max_size=300),
    mode=st.sampled_from(["lines", "blank-lines", "file"]),
    validation_split=st.sampled_from([None, 0.3]),
    line_by_line=st.booleans(),
)
def test_random_unicode_prepares_or_fails_cleanly(tok, text, mode, validation_split, line_by_line):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "random.txt"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        _prepare_or_clean_error(path, Path(tmp) / "out", tok, validation_split=validation_split,
                                document_split=None if line_by_line else mode, line_by_line=line_by_line, block_size=8)


@FAST
@given(data=st.binary(max_size=300), errors=st.sampled_from(["strict", "replace", "ignore"]))
def test_random_bytes_prepare_or_fail_cleanly(tok, data, errors):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "random.txt"
        path.write_bytes(data)
        _prepare_or_clean_error(path, Path(tmp) / "out", tok, encoding_errors=errors, block_size=8)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_random_input_through_the_cli(tok, data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "random.txt"
        path.write_bytes(data)
        result = runner.invoke(app, ["prepare", "--train", str(path), "--tokenizer", tok, "--out", str(Path(tmp) / "o"), "--json"])
        assert result.exit_code in (0, 1, 2), result.output
        assert "Traceback" not in result.output
        if result.exit_code:
            lines = result.stderr.strip().splitlines()  # progress lines may come first; one error line, last
            assert lines[-1].startswith("error: ") and sum(line.startswith("error: ") for line in lines) == 1
        else:
            assert json.loads(result.stdout)["splits"]["train"]["tokens"] > 0
