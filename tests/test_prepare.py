"""``lmctl prepare``: exact token accounting against an independent tokenization, the manifest,
readers, tokenizer trainers, validation splits, the implicit-prepare cache and atomic output."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from lmctl.cli.app import app
from lmctl.core.prepared import PreparedData
from lmctl.workflows.prepare import PrepareConfig, prepare, prepare_cached
from tests.conftest import shared_data

BLANK = " \t\r\f\v"
runner = CliRunner()


# --- independent reference implementations ---------------------------------------------------------


def ref_documents(text: str, mode: str) -> list[str]:
    """What a document is, written as plainly as possible (line by line)."""
    if mode == "lines":
        return [line for line in text.split("\n") if line.strip(BLANK)]
    if mode == "file":
        return [text] if text.strip(BLANK + "\n") else []
    docs, group = [], []
    for line in text.split("\n"):
        if line.strip(BLANK):
            group.append(line)
        elif group:
            docs.append("\n".join(group))
            group = []
    if group:
        docs.append("\n".join(group))
    return docs


def ref_stream(tokenizer, docs: list[str], separator: list[int]) -> list[int]:
    """Separator + tokens of each document, tokenized one by one by transformers."""
    out: list[int] = []
    for doc in docs:
        out += separator
        out += tokenizer(doc, add_special_tokens=False)["input_ids"]
    return out


@pytest.fixture(scope="session")
def tokenizer_dir(tokenizer_for, tmp_path_factory):
    """tokenizer_dir(family) -> a saved transformers tokenizer directory (trained on a few KB)."""
    cache = {}

    def get(family: str, kind: str | None = None) -> Path:
        key = (family, kind)
        if key not in cache:
            path = tmp_path_factory.mktemp(f"tok-{family}-{kind}")
            tokenizer_for(family, kind).save_pretrained(path)
            cache[key] = path
        return cache[key]

    return get


@pytest.fixture
def small_chunks(monkeypatch):
    """Many chunk and batch boundaries in a small corpus, tokenized by three threads at once:
    neither boundaries nor the order batches finish in may change the tokens."""
    import lmctl.data.readers
    import lmctl.workflows.prepare

    monkeypatch.setattr(lmctl.data.readers, "CHUNK_BYTES", 997)
    monkeypatch.setattr(lmctl.workflows.prepare, "BATCH_CHARS", 2999)
    monkeypatch.setattr(lmctl.workflows.prepare, "encode_workers", lambda: 3)


def invoke(*args: str):
    return runner.invoke(app, ["prepare", *args])


# --- packed data: exact accounting ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["blank-lines", "lines", "file"])
def test_blocks_reproduce_the_whole_tokenization(mode, corpus, tmp_path, tokenizer_dir, tokenizer_for, small_chunks):
    text = corpus + "\n\n  \n\n  indented paragraph\nsecond line  \n\n\n"
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    block = 64
    report = prepare(
        PrepareConfig(train=[str(path)], out=tmp_path / "out", tokenizer=str(tokenizer_dir("causal")),
                      block_size=block, document_split=mode, progress="none")
    )
    tokenizer = tokenizer_for("causal")
    docs = ref_documents(text, mode)
    reference = ref_stream(tokenizer, docs, [tokenizer.eos_token_id])

    data = PreparedData(report.out)
    train = data.split("train")
    assert train.tokens.dtype == np.uint16 and data.block_size == block and data.family == "causal"
    blocks = train.blocks(block)
    assert blocks.shape == (len(reference) // block, block)
    assert blocks.reshape(-1).tolist() == reference[: blocks.size]
    assert train.tokens.tolist() == reference  # the file keeps the partial block; only training drops it
    info = train.info
    assert info["tokens"] == len(reference)
    assert info["dropped_tokens"] == len(reference) % block
    assert info["blocks"] == len(reference) // block
    assert info["documents"] == len(docs)
    assert info["bytes"] == len(text.encode())
    assert info["words"] == len(text.encode().split())
    assert info["longest_line"] == max(len(line) for line in text.split("\n"))
    assert info["unknown_tokens"] == 0
    # Line breaks are text: decoding the stream gives back the documents.
    assert tokenizer.decode(train.tokens[1 : 1 + len(tokenizer(docs[0], add_special_tokens=False)["input_ids"])]) == docs[0]


def test_manifest_records_inputs_tokenizer_and_options(corpus_file, tmp_path, tokenizer_dir):
    report = prepare(PrepareConfig(train=[str(corpus_file)], out=tmp_path / "out", tokenizer=str(tokenizer_dir("causal")), progress="none"))
    manifest = json.loads((report.out / "manifest.json").read_text())
    assert manifest["format"] == "lmctl.prepared" and manifest["version"] == 1
    entry = manifest["inputs"]["train"][0]
    assert entry["path"] == str(corpus_file.resolve())
    assert entry["bytes"] == corpus_file.stat().st_size
    assert entry["sha256"] == hashlib.sha256(corpus_file.read_bytes()).hexdigest()
    tok = manifest["tokenizer"]
    assert tok["dir"] == "tokenizer" and not tok["trained"]
    digest = hashlib.sha256()
    for f in sorted((report.out / "tokenizer").iterdir()):
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    assert tok["sha256"] == digest.hexdigest()
    assert (report.out / "tokenizer" / "tokenizer.json").read_bytes() == (tokenizer_dir("causal") / "tokenizer.json").read_bytes()
    assert manifest["vocab_size"] == len(json.loads((report.out / "tokenizer" / "tokenizer.json").read_text())["model"]["vocab"])
    assert manifest["dtype"] == "uint16" and manifest["padded_vocab_size"] % 64 == 0
    assert manifest["options"]["encoding_errors"] == "strict"
    assert set(manifest["splits"]) == {"train"}
    assert not list(tmp_path.glob(".out.tmp-*"))


def test_crlf_and_bom_are_normalised(tmp_path, tokenizer_dir, tokenizer_for):
    text = "first line\nsecond line\n\nnext paragraph\n"
    path = tmp_path / "dos.txt"
    path.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    report = prepare(PrepareConfig(train=[str(path)], out=tmp_path / "out", tokenizer=str(tokenizer_dir("causal")), progress="none"))
    tokenizer = tokenizer_for("causal")
    got = PreparedData(report.out).split("train").tokens.tolist()
    assert got == ref_stream(tokenizer, ref_documents(text, "blank-lines"), [tokenizer.eos_token_id])


# --- line by line ----------------------------------------------------------------------------------


def test_line_by_line_masked_matches_transformers_truncation(corpus, tmp_path, tokenizer_dir, tokenizer_for, small_chunks):
    path = tmp_path / "lines.txt"
    path.write_text(corpus, encoding="utf-8")
    block = 24
    result = invoke("--train", str(path), "--out", str(tmp_path / "out"), "--family", "masked",
                    "--tokenizer", str(tokenizer_dir("masked")), "--line-by-line", "--block-size", str(block), "--json")
    assert result.exit_code == 0, result.output
    tokenizer = tokenizer_for("masked")
    lines = ref_documents(corpus, "lines")
    expected = [tokenizer(line, truncation=True, max_length=block)["input_ids"] for line in lines]
    data = PreparedData(tmp_path / "out")
    split = data.split("train")
    assert data.line_by_line and split.num_blocks(block) == len(lines)
    assert split.offsets.dtype == np.uint64 and split.offsets[0] == 0 and int(split.offsets[-1]) == split.num_tokens
    for i in (0, 1, len(lines) // 2, len(lines) - 1):
        assert split.example(i, block).tolist() == expected[i]
    assert all(split.example(i, block)[0] == tokenizer.cls_token_id for i in range(len(lines)))
    full = [len(tokenizer(line)["input_ids"]) for line in lines]
    report = json.loads(result.stdout)["splits"]["train"]
    assert report["dropped_tokens"] == sum(max(0, n - block) for n in full)
    assert report["longest_example_tokens"] == max(full)
    assert report["blocks"] == len(lines)


def test_line_by_line_causal_puts_the_separator_first(tmp_path, tokenizer_dir, tokenizer_for):
    path = tmp_path / "lines.txt"
    path.write_text("one line here\n\ntwo\n  \nthree lines of text here now\n", encoding="utf-8")
    report = prepare(PrepareConfig(train=[str(path)], out=tmp_path / "out", tokenizer=str(tokenizer_dir("causal")),
                                   line_by_line=True, block_size=4, progress="none"))
    tokenizer = tokenizer_for("causal")
    split = PreparedData(report.out).split("train")
    eos = tokenizer.eos_token_id
    for i, line in enumerate(["one line here", "two", "three lines of text here now"]):
        assert split.example(i, 4).tolist() == ([eos] + tokenizer(line, add_special_tokens=False)["input_ids"])[:4]


# --- validation ------------------------------------------------------------------------------------


def test_validation_split_is_the_last_fraction_cut_at_a_line(corpus, tmp_path, tokenizer_dir, tokenizer_for):
    path = tmp_path / "corpus.txt"
    path.write_text(corpus, encoding="utf-8")
    raw = path.read_bytes()
    report = prepare(PrepareConfig(train=[str(path)], validation_split=0.1, out=tmp_path / "out",
                                   tokenizer=str(tokenizer_dir("causal")), progress="none"))
    manifest = report.manifest
    cut = manifest["inputs"]["train"][0]["range"][1]
    assert manifest["inputs"]["validation"][0]["range"] == [cut, len(raw)]
    target = int(len(raw) * 0.9)
    assert raw[cut - 1 : cut] == b"\n" and b"\n" not in raw[target : cut - 1]  # the first line start at or after 90%
    tokenizer = tokenizer_for("causal")
    eos = [tokenizer.eos_token_id]
    train_text, val_text = raw[:cut].decode(), raw[cut:].decode()
    data = PreparedData(report.out)
    assert data.split("train").tokens.tolist() == ref_stream(tokenizer, ref_documents(train_text, "blank-lines"), eos)
    assert data.split("validation").tokens.tolist() == ref_stream(tokenizer, ref_documents(val_text, "blank-lines"), eos)
    assert manifest["splits"]["validation"]["bytes"] == len(raw) - cut


def test_validation_split_spans_files(tmp_path, tokenizer_dir):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("alpha line\n" * 50)
    b.write_text("beta line\n" * 5)
    report = prepare(PrepareConfig(train=[str(a), str(b)], validation_split=0.3, out=tmp_path / "out",
                                   tokenizer=str(tokenizer_dir("causal")), document_split="lines", progress="none"))
    inputs = report.manifest["inputs"]
    total = a.stat().st_size + b.stat().st_size
    assert [e["path"] for e in inputs["validation"]] == [str(a.resolve()), str(b.resolve())]
    start = inputs["validation"][0]["range"][0]
    assert start % len("alpha line\n") == 0 and start >= int(total * 0.7)
    assert report.manifest["splits"]["validation"]["documents"] == (a.stat().st_size - start) // 11 + 5


def test_validation_files_and_jsonl_records(tmp_path, tokenizer_dir, tokenizer_for):
    train = tmp_path / "train.jsonl"
    records = [{"text": f"record number {i}\n\nwith a second paragraph", "id": i} for i in range(30)] + [{"text": None}]
    train.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    valid = tmp_path / "valid.txt"
    valid.write_text("held out text\n")
    report = prepare(PrepareConfig(train=[str(train)], validation=[str(valid)], out=tmp_path / "out",
                                   tokenizer=str(tokenizer_dir("causal")), progress="none"))
    tokenizer = tokenizer_for("causal")
    eos = [tokenizer.eos_token_id]
    data = PreparedData(report.out)
    assert data.split("train").tokens.tolist() == ref_stream(tokenizer, [r["text"] for r in records[:-1]], eos)
    assert data.split("validation").tokens.tolist() == ref_stream(tokenizer, ["held out text"], eos)
    assert report.manifest["splits"]["train"]["documents"] == 30


def test_record_formats_and_validation_split_by_records(tmp_path, tokenizer_dir, tokenizer_for):
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [f"document {i:02d} says hello, world" for i in range(40)]
    pq.write_table(pa.table({"body": texts, "n": list(range(40))}), tmp_path / "data.parquet")
    with open(tmp_path / "data.csv", "w", encoding="utf-8") as f:
        f.write("n,body\n" + "".join(f'{i},"{t}\nsecond line"\n' for i, t in enumerate(texts)))
    (tmp_path / "data.json").write_text(json.dumps([{"body": t} for t in texts]))
    tokenizer = tokenizer_for("causal")
    eos = [tokenizer.eos_token_id]
    for name, expected in [("data.parquet", texts), ("data.csv", [t + "\nsecond line" for t in texts]), ("data.json", texts)]:
        report = prepare(PrepareConfig(train=[str(tmp_path / name)], out=tmp_path / f"out-{name}", text_column="body",
                                       tokenizer=str(tokenizer_dir("causal")), validation_split=0.25, progress="none"))
        data = PreparedData(report.out)
        both = data.split("train").tokens.tolist() + data.split("validation").tokens.tolist()
        assert both == ref_stream(tokenizer, expected, eos), name
        assert report.manifest["splits"]["validation"]["documents"] == 10, name  # equal lengths: the last quarter


def test_datasets_directories_and_names(tmp_path, tokenizer_dir, tokenizer_for, monkeypatch):
    import datasets

    texts = [f"saved dataset row {i}" for i in range(12)]
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({"text": texts}), "validation": datasets.Dataset.from_dict({"text": ["val row"]})}
    ).save_to_disk(tmp_path / "dsdict")
    tokenizer = tokenizer_for("causal")
    eos = [tokenizer.eos_token_id]
    report = prepare(PrepareConfig(train=[str(tmp_path / "dsdict")], validation=[str(tmp_path / "dsdict")],
                                   out=tmp_path / "out", tokenizer=str(tokenizer_dir("causal")), progress="none"))
    data = PreparedData(report.out)
    assert data.split("train").tokens.tolist() == ref_stream(tokenizer, texts, eos)
    assert data.split("validation").tokens.tolist() == ref_stream(tokenizer, ["val row"], eos)
    assert report.manifest["inputs"]["train"][0]["sha256"]

    # A dataset name is looked up in the local datasets cache only (offline).
    seen = {}

    def fake_load_dataset(name, config=None, **kwargs):
        seen["offline"] = datasets.config.HF_DATASETS_OFFLINE
        seen["args"] = (name, config)
        return datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": texts[:3]})})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    report = prepare(PrepareConfig(train=["some_corpus:small"], out=tmp_path / "named", tokenizer=str(tokenizer_dir("causal")), progress="none"))
    assert seen == {"offline": True, "args": ("some_corpus", "small")}
    assert PreparedData(report.out).split("train").tokens.tolist() == ref_stream(tokenizer, texts[:3], eos)


def test_directories_globs_and_positional_files(tmp_path, tokenizer_dir):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a.txt").write_text("file a\n")
    (tmp_path / "d" / "sub" / "b.txt").write_text("file b\n")
    (tmp_path / "d" / "notes.bin").write_bytes(b"\x00\x01")
    (tmp_path / "d" / ".hidden.txt").write_text("hidden\n")
    (tmp_path / "d" / "empty.txt").write_text("")
    tok = str(tokenizer_dir("causal"))
    report = prepare(PrepareConfig(train=[str(tmp_path / "d")], out=tmp_path / "o1", tokenizer=tok, progress="none"))
    assert [Path(e["path"]).name for e in report.manifest["inputs"]["train"]] == ["a.txt", "b.txt"]
    report = prepare(PrepareConfig(train=[str(tmp_path / "d" / "**" / "*.txt")], out=tmp_path / "o2", tokenizer=tok, progress="none"))
    assert report.manifest["splits"]["train"]["documents"] == 2
    result = invoke("--train", str(tmp_path / "d" / "a.txt"), str(tmp_path / "d" / "sub" / "b.txt"), "--tokenizer", tok, "--out", str(tmp_path / "o3"), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["splits"]["train"]["documents"] == 2
    # A prepared directory given as --tokenizer lends its tokenizer; inside an input directory it is skipped.
    report = prepare(PrepareConfig(train=[str(tmp_path / "d")], out=tmp_path / "d" / "o4", tokenizer=str(tmp_path / "o3"), progress="none"))
    report = prepare(PrepareConfig(train=[str(tmp_path / "d")], out=tmp_path / "d" / "o4", tokenizer=str(tmp_path / "o3"), force=True, progress="none"))
    assert [Path(e["path"]).name for e in report.manifest["inputs"]["train"]] == ["a.txt", "b.txt"]
    assert report.manifest["tokenizer"]["sha256"] == json.loads((tmp_path / "o3" / "manifest.json").read_text())["tokenizer"]["sha256"]


# --- tokenizers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "family,kind", [("causal", "bytelevel-bpe"), ("causal", "char"), ("causal", "bpe"), ("masked", "wordpiece"), ("permuted", "unigram")]
)
def test_trained_tokenizers_load_in_transformers(family, kind, corpus, tmp_path):
    from transformers import AutoTokenizer

    path = tmp_path / "corpus.txt"
    path.write_text(corpus[:20_000], encoding="utf-8")
    result = invoke("--train", str(path), "--out", str(tmp_path / "out"), "--family", family, "--tokenizer", kind,
                    "--vocab-size", "300", "--validation-split", "0.2", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["tokenizer"]["trained"] and report["tokenizer"]["source"] == kind
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out" / "tokenizer")
    assert len(tokenizer) == report["vocab_size"] <= 300
    data = PreparedData(tmp_path / "out")
    separator = {"causal": tokenizer.eos_token_id, "masked": tokenizer.sep_token_id, "permuted": tokenizer.eos_token_id}[family]
    assert data.split("train").tokens[0] == separator and data.manifest["separator"] == [separator]
    sample = "def f(x):\n    return x"
    ids = tokenizer(sample, add_special_tokens=False)["input_ids"]
    if kind in ("bytelevel-bpe", "char", "bpe"):
        assert tokenizer.decode(ids) == sample  # newlines and indentation survive
    for name, value in tokenizer.special_tokens_map.items():
        if isinstance(value, str):
            assert tokenizer.convert_tokens_to_ids(value) != tokenizer.unk_token_id or name == "unk_token"


def test_char_tokenizer_on_shakespeare_like_nanogpt(tmp_path):
    path = shared_data("tinyshakespeare.txt")
    result = invoke("--train", str(path), "--validation-split", "0.1", "--tokenizer", "char", "--out", str(tmp_path / "out"), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    text = path.read_text()
    assert report["vocab_size"] == len(set(text)) + 2  # 65 characters + <|endoftext|> + <unk>
    assert report["splits"]["train"]["bytes"] + report["splits"]["validation"]["bytes"] == len(text.encode())
    assert report["splits"]["train"]["unknown_tokens"] == 0


def test_unknown_tokens_are_counted(tmp_path, tokenizer_dir, tokenizer_for):
    path = tmp_path / "odd.txt"
    text = "plain words here\n\nsnowman ☃ and 漢字 glyphs ☃\n"
    path.write_text(text, encoding="utf-8")
    report = prepare(PrepareConfig(train=[str(path)], out=tmp_path / "out", family="masked",
                                   tokenizer=str(tokenizer_dir("masked")), progress="none"))
    tokenizer = tokenizer_for("masked")
    reference = ref_stream(tokenizer, ref_documents(text, "blank-lines"), [tokenizer.sep_token_id])
    assert PreparedData(report.out).split("train").tokens.tolist() == reference
    unknown = reference.count(tokenizer.unk_token_id)
    assert unknown > 0 and report.manifest["splits"]["train"]["unknown_tokens"] == unknown
    assert report.split_summary("train")["unknown_rate"] == round(unknown / len(reference), 6)


def test_model_directory_as_tokenizer_picks_family_and_checks_block_size(tmp_path, tiny_model_dir, corpus_file, tokenizer_for):
    model = tiny_model_dir("masked", 64)
    result = invoke("--train", str(corpus_file), "--tokenizer", str(model), "--out", str(tmp_path / "out"), "--block-size", "64", "--json")
    assert result.exit_code == 0, result.output
    data = PreparedData(tmp_path / "out")
    assert data.family == "masked"
    assert data.split("train").tokens[0] == tokenizer_for("masked").sep_token_id
    assert not (tmp_path / "out" / "tokenizer" / "model.safetensors").exists()
    assert not (tmp_path / "out" / "tokenizer" / "config.json").exists()


# --- cache for implicit prepare --------------------------------------------------------------------


def test_prepare_cached_reuses_and_invalidates(tmp_path, monkeypatch, tokenizer_dir):
    import lmctl.workflows.prepare

    monkeypatch.setenv("LMCTL_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "c.txt"
    path.write_text("some text to cache\n\nand more\n")
    config = PrepareConfig(train=[str(path)], tokenizer=str(tokenizer_dir("causal")), block_size=8, progress="none")
    first = prepare_cached(config)
    assert first.parent == tmp_path / "cache" / "prepared" and PreparedData(first).block_size == 8
    calls = []
    real = lmctl.workflows.prepare.prepare
    monkeypatch.setattr(lmctl.workflows.prepare, "prepare", lambda c, **kw: calls.append(c) or real(c, **kw))
    assert prepare_cached(config) == first and calls == []
    assert prepare_cached(PrepareConfig(train=str(path), tokenizer=str(tokenizer_dir("causal")), block_size=8)) == first
    other = prepare_cached(PrepareConfig(train=[str(path)], tokenizer=str(tokenizer_dir("causal")), block_size=16, progress="none"))
    assert other != first and len(calls) == 1
    path.write_text("changed text\n")
    changed = prepare_cached(config)
    assert changed not in (first, other) and len(calls) == 2
    assert PreparedData(changed).split("train").info["documents"] == 1
    (changed / "manifest.json").write_text("{damaged")
    assert prepare_cached(config) == changed and len(calls) == 3 and PreparedData(changed).block_size == 8


# --- atomic output, --force ------------------------------------------------------------------------


def test_interrupted_prepare_leaves_nothing_that_looks_complete(corpus_file, tmp_path, tokenizer_dir, monkeypatch, small_chunks):
    import lmctl.workflows.prepare

    real_write = lmctl.workflows.prepare.SplitWriter._write
    calls = []

    def failing_write(self, *args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_write(self, *args)

    monkeypatch.setattr(lmctl.workflows.prepare.SplitWriter, "_write", failing_write)
    out = tmp_path / "out"
    result = invoke("--train", str(corpus_file), "--tokenizer", str(tokenizer_dir("causal")), "--out", str(out))
    assert result.exit_code == 130 and result.stderr.strip() == "error: interrupted"
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["corpus.txt"]

    # An existing prepared DIR survives a failed --force run untouched.
    monkeypatch.setattr(lmctl.workflows.prepare.SplitWriter, "_write", real_write)
    prepare(PrepareConfig(train=[str(corpus_file)], out=out, tokenizer=str(tokenizer_dir("causal")), progress="none"))
    before = (out / "manifest.json").read_bytes()
    calls.clear()
    monkeypatch.setattr(lmctl.workflows.prepare.SplitWriter, "_write", failing_write)
    with pytest.raises(KeyboardInterrupt):
        prepare(PrepareConfig(train=[str(corpus_file)], out=out, tokenizer=str(tokenizer_dir("causal")), force=True, progress="none"))
    assert (out / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "out"]


def test_force_replaces_only_prepared_directories(corpus_file, tmp_path, tokenizer_dir):
    out = tmp_path / "out"
    args = ["--train", str(corpus_file), "--tokenizer", str(tokenizer_dir("causal")), "--out", str(out), "--json"]
    assert invoke(*args).exit_code == 0
    again = invoke(*args)
    assert again.exit_code == 2 and "already exists; pass --force" in again.stderr
    assert invoke(*args, "--force", "--block-size", "32").exit_code == 0
    assert PreparedData(out).block_size == 32
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not delete")
    refused = invoke("--train", str(corpus_file), "--tokenizer", str(tokenizer_dir("causal")), "--out", str(precious), "--force")
    assert refused.exit_code == 2 and "not lmctl prepared data" in refused.stderr
    assert (precious / "thesis.tex").read_text() == "do not delete"


# --- report and progress ---------------------------------------------------------------------------


def test_report_table_and_plain_progress_lines(corpus_file, tmp_path, tokenizer_dir):
    result = invoke("--train", str(corpus_file), "--tokenizer", str(tokenizer_dir("causal")), "--out", str(tmp_path / "out"),
                    "--validation-split", "0.2")
    assert result.exit_code == 0, result.output
    for label in ("documents", "tokens", "bytes per token", "unknown tokens", "tokens dropped", "longest line"):
        assert label in result.stdout
    assert "validation" in result.stdout
    # Not a terminal: plain progress lines on stderr, no ANSI codes anywhere.
    lines = result.stderr.strip().splitlines()
    assert lines[-2].startswith("prepare: train: ") and lines[-1].startswith("prepare: validation: ")
    assert "\x1b[" not in result.stdout + result.stderr


def test_cli_help_is_fast_and_light():
    import subprocess
    import sys

    code = "import sys, lmctl.cli.app; print(any(m in sys.modules for m in ('torch', 'transformers', 'datasets', 'lmctl.workflows.prepare')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
    result = invoke("--help")
    assert result.exit_code == 0 and "--validation-split" in result.stdout and "--encoding-errors" in result.stdout


# --- the streaming pieces against plain Python ------------------------------------------------------

_pieces = st.lists(st.sampled_from(["a", "b", " ", "\t", "\n", "\n\n", "  \n", "é", "☃"]), max_size=50).map("".join)


def _chunked(text: str, cuts: list[int]) -> list[str]:
    chunks, pos = [], 0
    for cut in cuts:
        chunks.append(text[pos : pos + cut])
        pos += cut
    chunks.append(text[pos:])
    return [c for c in chunks if c]


@settings(max_examples=300, deadline=None)
@given(text=_pieces, cuts=st.lists(st.integers(1, 9), max_size=12), mode=st.sampled_from(["lines", "blank-lines", "file"]))
def test_document_splitting_ignores_chunk_boundaries(text, cuts, mode):
    from lmctl.data.readers import split_documents

    got = []
    for texts, continues in split_documents(_chunked(text, cuts), mode):
        assert not continues  # no document here is longer than MAX_DOCUMENT_CHARS
        got += texts
    assert got == ref_documents(text, mode)


@settings(max_examples=300, deadline=None)
@given(text=_pieces, cuts=st.lists(st.integers(1, 9), max_size=12))
def test_split_statistics_ignore_chunk_boundaries(text, cuts):
    from lmctl.workflows.prepare import SplitStats

    stats = SplitStats()
    for chunk in _chunked(text, cuts):
        stats.observe_text(chunk)
    assert stats.bytes == len(text.encode())
    assert stats.words == len(text.encode().split())
    assert stats.longest_line == max(len(line) for line in text.split("\n"))


def test_encode_workers_and_tokenizer_threads(monkeypatch):
    import os

    from lmctl.workflows.prepare import encode_workers, tokenizer_threads

    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    assert encode_workers() == 1
    monkeypatch.delenv("TOKENIZERS_PARALLELISM")
    monkeypatch.setenv("RAYON_NUM_THREADS", "1")
    assert encode_workers() == 1
    monkeypatch.delenv("RAYON_NUM_THREADS")
    assert encode_workers() == len(os.sched_getaffinity(0))
    with tokenizer_threads(parallel=False):
        assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
    assert "TOKENIZERS_PARALLELISM" not in os.environ
