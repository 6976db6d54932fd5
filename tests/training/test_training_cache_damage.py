"""A damaged activation cache is named with its folder, the rows and the fix (not an Arrow byte count or 'lower lr')."""

from __future__ import annotations

import numpy as np
import pytest

from sae_clip_plugin.training.cache import ActivationDiskCache, write_activation_cache
from sae_clip_plugin.training.sources import TensorSource

HOOK = "blocks.0.hook_resid_post"


def _cache(model, pixels, tmp_path):
    path = tmp_path / "cache"
    write_activation_cache(path, model, TensorSource(pixels), [HOOK], "all", shard_images=8, progress=False)
    return path


def test_a_truncated_shard_names_the_cache_and_the_fix(model, pixels, tmp_path):
    path = _cache(model, pixels, tmp_path)
    shard = sorted((path / HOOK).glob("*.arrow"))[-1]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(
        OSError, match=rf"activation cache at .*{HOOK} cannot be read.*delete the cache folder"
    ):
        cache = ActivationDiskCache(path)
        cache.read(HOOK, 0, cache.n_images)


def test_nan_bytes_in_a_shard_are_named_before_training(model, pixels, tmp_path):
    path = _cache(model, pixels, tmp_path)
    shard = sorted((path / HOOK).glob("*.arrow"))[0]
    data = bytearray(shard.read_bytes())
    nan = np.array([np.nan], dtype=np.float32).tobytes()
    middle = len(data) // 2 - len(data) // 2 % 4
    data[middle : middle + 4] = nan  # one value inside the activations
    shard.write_bytes(bytes(data))
    cache = ActivationDiskCache(path)
    with pytest.raises(
        ValueError, match=r"holds NaN/inf values \(first at image row \d+\).*delete the cache"
    ):
        cache.read(HOOK, 0, cache.n_images)
