"""``lmctl quickstart``: the whole pipeline on built-in defaults, with no data and no network.

It writes the Python documentation topics that ship with every CPython (``pydoc_data``, about
460 KB of English) to a text file, trains a small GPT-2 on it from scratch with a byte-level BPE
tokenizer trained on the same text (about a minute on two CPU cores), evaluates it on the
held-out last 5%, samples a continuation, and prints what to try next.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

CORPUS_NAME = "pydoc_topics.txt"


def write_corpus(directory: Path) -> Path:
    """The pydoc topics as one text file, a blank line between topics (documents)."""
    import pydoc_data.topics as topics

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CORPUS_NAME
    text = "\n\n".join(topics.topics[key].strip() for key in sorted(topics.topics)) + "\n"
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path


@dataclass
class QuickstartResult:
    out: Path
    train: Any
    sample: str | None
    prompt: str = "The for statement"


def quickstart(
    out: str | Path = "runs/quickstart",
    *,
    max_steps: int = 300,
    prompt: str = "The for statement",
    quiet: bool = False,
    display: Any = None,
    status: Any = None,
) -> QuickstartResult:
    """Train, evaluate and sample; ``result.sample`` is None when training did not finish
    (``result.train.interrupted`` says why): nothing is sampled then."""
    from lmctl.core.run_lock import run_lock

    out = Path(out)
    # The run owns --out from the resume decision to the sample (train() holds it again inside).
    with run_lock(out, command="lmctl quickstart"):
        return _quickstart(out, max_steps=max_steps, prompt=prompt, quiet=quiet, display=display, status=status)


def _quickstart(out: Path, *, max_steps: int, prompt: str, quiet: bool, display: Any, status: Any) -> QuickstartResult:
    from lmctl.core.run_dir import final_model_present, has_earlier_run, has_unfinished_checkpoints
    from lmctl.workflows.generate import GenerationSettings, generate_text
    from lmctl.workflows.train.config import TrainConfig
    from lmctl.workflows.train.trainer import train

    corpus = write_corpus(out.parent / "quickstart-data")
    # The quickstart owns its directory: an interrupted quickstart is continued, a finished one
    # (or anything else lmctl trained there) is replaced, so every quickstart ends consistent.
    resume = "auto" if has_unfinished_checkpoints(out) else None
    overwrite = resume is None and has_earlier_run(out)
    config = TrainConfig(
        model="gpt2",
        from_scratch=True,
        preset="small",
        train=[str(corpus)],
        validation_split=0.05,
        tokenizer="bytelevel-bpe",
        vocab_size=2048,
        block_size=128,
        batch_size=16,
        max_steps=max_steps,
        lr=2e-3,
        dropout=0.0,
        eval_every=max(1, max_steps // 5),
        save_every=0,
        out=str(out),
        resume=resume,
        overwrite=overwrite,
    )
    result = train(config, quiet=quiet, display=display, status=status)
    if result.interrupted is not None or not final_model_present(out):
        # Interrupted (Ctrl-C, SIGTERM, NaN): no final model was written by this run; never sample
        # from whatever an earlier run left behind.
        return QuickstartResult(out=out, train=result, sample=None, prompt=prompt)

    from lmctl.workflows.generate import load_model

    loaded = load_model(str(out))
    settings = GenerationSettings(max_new_tokens=60, seed=0, temperature=0.8, top_k=40)
    sample = generate_text(loaded.model, loaded.tokenizer, [prompt], settings)[0].text
    return QuickstartResult(out=out, train=result, sample=sample, prompt=prompt)


def next_steps(out: Path) -> str:
    return "\n".join(
        [
            "Next, try:",
            f"  lmctl generate --model {out} \"The with statement\" --max-new-tokens 80 --seed 1",
            f"  lmctl eval --model {out} --data {out.parent / 'quickstart-data' / CORPUS_NAME}",
            f"  lmctl plot {out}            (or --png curves.png)",
            "  lmctl train --model gpt2 --train your.txt --validation-split 0.1 --out runs/mine   (fine-tune, online)",
            "  lmctl train --model gpt2 --from-scratch --preset small --train your.txt --out runs/mine",
            "  lmctl plugins list --all",
        ]
    )
