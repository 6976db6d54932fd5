"""Same command, same SAE: the activation cache is transparent (no cache, building it, reusing it)."""

from __future__ import annotations

import pytest
import torch

from sae_clip_plugin.training import VisionSAETrainingRunner
from sae_clip_plugin.training.sources import image_source
from tests.training.conftest import write_images
from tests.training.test_training_runner import config


def _weights(tmp_path, model, source, name: str, **overrides) -> dict[str, torch.Tensor]:
    cfg = config(
        tmp_path,
        output_path=str(tmp_path / name),
        checkpoint_path=None,
        training_tokens=4096,
        train_batch_size_tokens=128,
        cache_chunk_images=4,
        **overrides,
    )
    runner = VisionSAETrainingRunner(cfg, override_model=model, override_source=source)
    runner.run()
    return {k: v.detach().clone() for k, v in next(iter(runner.saes.values())).state_dict().items()}


@pytest.mark.parametrize("architecture", ["standard", "topk"])
def test_weights_are_bit_equal_without_while_building_and_reusing_the_cache(
    model, pixels, tmp_path, architecture
):
    arch = {"architecture": architecture, "sae": {"k": 8}} if architecture == "topk" else {}
    cache = str(tmp_path / "cache")
    plain = _weights(tmp_path, model, pixels, "plain", **arch)
    building = _weights(tmp_path, model, pixels, "building", cached_activations_path=cache, **arch)
    reusing = _weights(tmp_path, model, pixels, "reusing", cached_activations_path=cache, **arch)
    for key in plain:
        assert torch.equal(building[key], reusing[key]), f"{key}: building vs reusing the cache"
        assert torch.equal(plain[key], building[key]), f"{key}: no cache vs cache"


@pytest.mark.parametrize("workers", [0, 2])
def test_an_image_folder_through_data_loader_workers_is_transparent_too(model, tmp_path, workers):
    """Decoded images go through a DataLoader, whose worker seeds used to come from the global RNG."""
    folder = tmp_path / "images"
    write_images(folder, 24)
    source = image_source(str(folder))
    cache = str(tmp_path / "cache")
    plain = _weights(tmp_path, model, source, "plain", num_workers=workers)
    cached = _weights(tmp_path, model, source, "cached", num_workers=workers, cached_activations_path=cache)
    for key in plain:
        assert torch.equal(plain[key], cached[key]), key
