"""Plan before spending: the harvest's bytes per hook are counted before any work, and a cache that does not fit
its disk is refused with the override flag named."""

from __future__ import annotations

import pytest

from sae_clip_plugin.training import TensorSource, plan, write_activation_cache

HOOKS = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]


def test_a_cache_larger_than_the_free_space_is_refused_before_any_work(model, pixels, tmp_path, monkeypatch):
    source = TensorSource(pixels[:10])
    # the bytes the cache really takes: Arrow values of both hooks (17 tokens x 64 d_in x float32 per image)
    full = write_activation_cache(tmp_path / "ref", model, source, HOOKS, shard_images=4, progress=False)
    on_disk = sum(p.stat().st_size for p in full.path.rglob("*.arrow"))
    planned = plan.plan_harvest(tmp_path, 10, full.context_size, {h: full.d_in(h) for h in HOOKS}, "float32")
    assert planned.total_bytes <= on_disk < 1.1 * planned.total_bytes
    monkeypatch.setattr(plan, "free_bytes", lambda path: planned.total_bytes - 1)
    with pytest.raises(plan.NotEnoughSpaceError, match="--ignore-free-space"):
        write_activation_cache(tmp_path / "c", model, source, HOOKS, shard_images=4, progress=False)
    assert not list((tmp_path / "c").rglob("*.arrow"))
    write_activation_cache(
        tmp_path / "c", model, source, HOOKS, shard_images=4, progress=False, ignore_free_space=True
    )
