"""Workflows never special-case a family: each built-in family's class, registered again under a
new name (as a plugin would), trains, evaluates and generates exactly as the original does."""

from __future__ import annotations

import json

import pytest

from tests.conftest import FAMILY_SETUP


def _renamed_plugin(original):
    from lmctl.hookspecs import hookimpl

    cls = type(original)
    renamed = type(
        f"Renamed{cls.__name__}",
        (cls,),
        {
            "name": f"re-{original.name}",
            "aliases": (),
            # Claim nothing: the saved config.json names the family (lmctl_family), as for plugins.
            "model_types": (),
            "architectures": (),
            "architecture_suffixes": (),
        },
    )

    class Plugin:
        @hookimpl
        def register_families(self, register):
            register(renamed())

    return Plugin()


@pytest.fixture
def renamed_families():
    from lmctl.plugins.registry import get_family, register_plugin, reset_registry

    reset_registry()
    for name in FAMILY_SETUP:
        register_plugin(_renamed_plugin(get_family(name)), f"renamed-{name}")
    yield
    reset_registry()


def _run(family_name, arch, tokenizer_dir, corpus_file, out, eval_file):
    from lmctl.workflows.evaluate import EvalConfig, evaluate
    from lmctl.workflows.generate import GenerateConfig, GenerationSettings, generate
    from lmctl.workflows.train.config import TrainConfig
    from lmctl.workflows.train.trainer import train

    result = train(
        TrainConfig(
            model=arch, from_scratch=True, preset="tiny", family=family_name, train=[str(corpus_file)],
            validation_split=0.1, tokenizer=str(tokenizer_dir), block_size=32, batch_size=4, max_steps=4,
            eval_every=2, precision="fp32", out=str(out), seed=3,
        ),  # fmt: skip
        quiet=True,
    )
    evaluated = evaluate(EvalConfig(models=[str(out)], data=[str(eval_file)], block_size=32, precision="fp32"))[0]
    mask = "[MASK]" if family_name.endswith(("masked", "electra")) else ""
    prompt = f"The {mask} statement" if mask else "The for statement"
    generated = generate(
        GenerateConfig(models=[str(out)], prompts=[prompt], settings=GenerationSettings(max_new_tokens=8, seed=0))
    )
    saved_family = json.loads((out / "config.json").read_text())["lmctl_family"]
    return result, evaluated, generated, saved_family


@pytest.mark.parametrize("family_name", sorted(FAMILY_SETUP))
def test_renamed_family_gives_the_same_results(family_name, renamed_families, tokenizer_for, corpus_file, tmp_path):
    arch = FAMILY_SETUP[family_name][0]
    tokenizer_dir = tmp_path / "tokenizer"
    tokenizer_for(family_name).save_pretrained(tokenizer_dir)
    eval_file = tmp_path / "held_out.txt"
    eval_file.write_text(corpus_file.read_text(encoding="utf-8")[-6000:], encoding="utf-8")

    original = _run(family_name, arch, tokenizer_dir, corpus_file, tmp_path / "original", eval_file)
    renamed = _run(f"re-{family_name}", arch, tokenizer_dir, corpus_file, tmp_path / "renamed", eval_file)

    assert original[3] == family_name and renamed[3] == f"re-{family_name}"
    assert renamed[1]["family"] == f"re-{family_name}"  # evaluation resolved the renamed family
    assert renamed[0].final_train_loss == original[0].final_train_loss
    assert renamed[0].final_eval["loss"] == original[0].final_eval["loss"]
    for key in ("loss", "tokens", "perplexity", "bits_per_byte"):
        assert renamed[1].get(key) == original[1].get(key), key
    assert _outputs(renamed[2]) == _outputs(original[2]) and _outputs(original[2])


def _outputs(results):
    """What was generated, without the model path or timings."""
    drop = ("model", "tokens_per_s")
    return [{k: v for k, v in r.as_dict().items() if k not in drop} for r in results]
