"""`random:<spec>`: the model with a freshly initialised image tower, from any command or HookedViT.from_pretrained."""

from __future__ import annotations

import pytest
import torch

from sae_clip_plugin import HookedViT
from sae_clip_plugin.model.random_init import random_vision_model
from sae_clip_plugin.model.specs import ModelSpec
from sae_clip_plugin.toy import WEIGHTS_PATH


def test_the_random_prefix_parses_and_prints_back():
    parsed = ModelSpec.parse("random:open_clip:ViT-B-32/openai")
    assert parsed.random and parsed.source == "open_clip" and parsed.pretrained == "openai"
    assert str(parsed) == "random:open_clip:ViT-B-32/openai"
    assert (
        str(ModelSpec.parse("random:hf:openai/clip-vit-base-patch32"))
        == "random:hf:openai/clip-vit-base-patch32"
    )
    with pytest.raises(ValueError, match="random: twice"):
        ModelSpec.parse("random:random:toy")


@pytest.mark.skipif(not WEIGHTS_PATH.is_file(), reason="the bundled toy CLIP weights are not built yet")
def test_a_random_spec_loads_random_vision_model_of_the_named_model():
    random = HookedViT.from_pretrained("random:toy", random_seed=3)
    trained = HookedViT.from_pretrained("toy")
    expected = random_vision_model(trained, seed=3)
    assert random.cfg.model_spec == "random:toy"
    for (name, value), (_, reference) in zip(
        random.state_dict().items(), expected.state_dict().items(), strict=True
    ):
        assert torch.equal(value, reference), name
    # the image tower is new, the text tower is the trained model's
    assert not torch.equal(random.blocks[0].attn.W_Q, trained.blocks[0].attn.W_Q)
    text = [n for n in random.state_dict() if n.startswith("text.")]
    assert text and all(torch.equal(random.state_dict()[n], trained.state_dict()[n]) for n in text)
