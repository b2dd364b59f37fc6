"""Each built-in family: build a tiny model from scratch, one forward/backward on a collated batch,
save, reload with the matching transformers Auto class."""

from __future__ import annotations

import pytest

from tests.conftest import FAMILY_SETUP


@pytest.mark.parametrize("family_name", sorted(FAMILY_SETUP))
def test_family_round_trip(family_name, tokenizer_for, tmp_path):
    import torch
    import transformers

    from lmctl.core.presets import preset_overrides
    from lmctl.plugins.registry import get_family

    torch.manual_seed(0)
    family = get_family(family_name)
    arch = FAMILY_SETUP[family_name][0]
    tokenizer = tokenizer_for(family_name)
    model = family.build_from_scratch(arch, tokenizer=tokenizer, block_size=32, overrides=preset_overrides(arch, "tiny"))
    assert model.config.vocab_size % 64 == 0 and model.config.vocab_size >= len(tokenizer)
    options = family.default_options()
    collate = family.make_collator(tokenizer, options)
    ids = tokenizer("The quick brown fox jumps over the lazy dog. " * 8, add_special_tokens=False)["input_ids"]
    input_ids = torch.tensor([ids[:32], ids[32:64]])
    batch = collate(input_ids, None, torch.Generator().manual_seed(0))
    out = family.compute_loss(model, batch, options)
    assert torch.isfinite(out.loss) and out.loss.item() > 0
    assert int(out.tokens) > 0
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)

    family.save(model, tokenizer, tmp_path / "saved")
    auto = getattr(transformers, family.auto_class)
    reloaded = auto.from_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "model.safetensors").is_file()
    reference = model.discriminator if family_name == "electra" else model
    reloaded_state = reloaded.state_dict()
    assert reference.state_dict().keys() == reloaded_state.keys()
    for name, a in reference.state_dict().items():
        assert torch.equal(a, reloaded_state[name]), name
    if family_name == "electra":
        gen = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "saved" / "generator")
        assert gen.config.hidden_size < reloaded.config.hidden_size
    transformers.AutoTokenizer.from_pretrained(tmp_path / "saved")


def test_family_resolution_from_config(tiny_model_dir):
    from lmctl.plugins.registry import resolve_family

    for family_name in FAMILY_SETUP:
        assert resolve_family(str(tiny_model_dir(family_name))).name == family_name
    assert resolve_family("electra", from_scratch=True).name == "electra"
    assert resolve_family("roberta", from_scratch=True).name == "masked"
    assert resolve_family("gpt2", family="mlm").name == "masked"


def test_mask_tokens_is_seeded_and_skips_specials(tokenizer_for):
    import torch

    from lmctl.families.base import mask_tokens

    tok = tokenizer_for("masked")
    ids = torch.randint(5, len(tok), (4, 64), generator=torch.Generator().manual_seed(1))
    ids[:, 0] = tok.cls_token_id
    kwargs = dict(probability=0.15, mask_token_id=tok.mask_token_id, vocab_size=len(tok), special_ids=tok.all_special_ids)
    a = mask_tokens(ids, generator=torch.Generator().manual_seed(0), **kwargs)
    b = mask_tokens(ids, generator=torch.Generator().manual_seed(0), **kwargs)
    c = mask_tokens(ids, generator=torch.Generator().manual_seed(1), **kwargs)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    assert (a[1][:, 0] == -100).all()  # [CLS] is never a target
    rate = (a[1] != -100).float().mean().item()
    assert 0.08 < rate < 0.25
