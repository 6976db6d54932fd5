"""Zero-shot classification equals an independent computation with open_clip's own model."""

from __future__ import annotations

import open_clip
import pytest
import torch
import torch.nn.functional as F

from sae_clip_plugin import HookedViT
from tests.model.clips import small_open_clip


def test_zero_shot_logits_match_open_clip() -> None:
    clip = small_open_clip("ViT-S-32", layers=2)
    tokenizer = open_clip.get_tokenizer("ViT-S-32")
    model = HookedViT.from_open_clip(clip, tokenizer=tokenizer)
    classnames = ["dog", "cat", "red square"]
    templates = ["a photo of a {}.", "a drawing of a {}."]
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        weights = model.zero_shot_weights(classnames, templates)
        logits = model.zero_shot_logits(model(x), weights)
        # independent: open_clip's encode_image/encode_text/logit_scale, averaged by hand
        img = F.normalize(clip.encode_image(x), dim=-1)
        cols = []
        for c in classnames:
            t = F.normalize(clip.encode_text(tokenizer([tpl.format(c) for tpl in templates])), dim=-1).mean(0)
            cols.append(t / t.norm())
        expected = clip.logit_scale.exp() * img @ torch.stack(cols, dim=1)
    assert weights.shape == (clip.visual.output_dim, 3)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(
        model.encode_text(["a dog"]), clip.encode_text(tokenizer(["a dog"])), atol=1e-5, rtol=0
    )


def test_default_classnames_are_imagenet() -> None:
    model = HookedViT.from_open_clip(small_open_clip("ViT-S-32", layers=1))
    weights = model.zero_shot_weights(templates=["a photo of a {}."])
    assert weights.shape[1] == 1000


def test_vision_only_model_says_why_there_is_no_text() -> None:
    model = HookedViT.from_open_clip(small_open_clip("ViT-S-32", layers=1).visual)
    with pytest.raises(RuntimeError, match="no text tower"):
        model.encode_text(["a dog"])


def test_template_without_placeholder_is_refused() -> None:
    model = HookedViT.from_open_clip(small_open_clip("ViT-S-32", layers=1))
    with pytest.raises(ValueError, match="placeholder"):
        model.zero_shot_weights(["dog"], ["a photo"])
