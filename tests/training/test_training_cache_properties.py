"""Property tests (hypothesis) of the activation cache's shard, resume and epoch-order arithmetic
(the invariants listed in docs/cache_format.md)."""

from __future__ import annotations

import json

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sae_clip_plugin.training.cache import FORMAT, MANIFEST, ActivationDiskCache, _shards
from sae_clip_plugin.training.provider import EpochOrder

SETTINGS = settings(max_examples=60, deadline=None)


class _IndexHarvester:
    """Yields each requested image's index as its 'activation', in batches of the drawn sizes."""

    hook_names = ("a", "b")

    def __init__(self, batch_sizes: list[int]) -> None:
        self.batch_sizes = batch_sizes

    def iter_batches(self, source, indices):
        position, i = 0, 0
        while position < len(indices):
            size = self.batch_sizes[i % len(self.batch_sizes)]
            chunk = torch.tensor(indices[position : position + size], dtype=torch.float32)
            yield {"a": chunk[:, None], "b": -chunk[:, None]}
            position, i = position + size, i + 1


@st.composite
def shard_plans(draw):
    n_images = draw(st.integers(1, 200))
    shard_images = draw(st.integers(1, 50))
    n_shards = -(-n_images // shard_images)
    todo = sorted(draw(st.sets(st.integers(0, n_shards - 1))))
    batch_sizes = draw(st.lists(st.integers(1, 17), min_size=1, max_size=5))
    return n_images, shard_images, todo, batch_sizes


@SETTINGS
@given(shard_plans())
def test_missing_shards_are_written_whole_in_order_and_each_image_once(plan):
    n_images, shard_images, todo, batch_sizes = plan
    got = list(_shards(_IndexHarvester(batch_sizes), None, todo, shard_images, n_images))
    assert [shard for shard, _ in got] == todo
    for shard, acts in got:
        expected = torch.arange(
            shard * shard_images, min(n_images, (shard + 1) * shard_images), dtype=torch.float32
        )
        assert torch.equal(acts["a"][:, 0], expected) and torch.equal(acts["b"][:, 0], -expected)
    # the shards partition the images: every image in exactly one shard
    n_shards = -(-n_images // shard_images)
    everything = dict(
        _shards(_IndexHarvester(batch_sizes), None, list(range(n_shards)), shard_images, n_images)
    )
    rows = torch.cat([everything[s]["a"][:, 0] for s in range(n_shards)])
    assert torch.equal(rows, torch.arange(n_images, dtype=torch.float32))


@SETTINGS
@given(st.integers(1, 300), st.integers(1, 64), st.data())
def test_readable_images_are_the_finished_prefix(tmp_path_factory, n_images, shard_images, data):
    n_shards = -(-n_images // shard_images)
    done = sorted(data.draw(st.sets(st.integers(0, n_shards - 1))))
    folder = tmp_path_factory.mktemp("cache")
    manifest = {"format": FORMAT, "config": {"n_images": n_images, "shard_images": shard_images, "hook_names": []},
                "geometry": {}, "completed_shards": done}  # fmt: skip
    (folder / MANIFEST).write_text(json.dumps(manifest))
    cache = ActivationDiskCache(folder)
    prefix = 0
    while prefix in done:
        prefix += 1
    assert cache.n_shards == n_shards
    assert cache.n_images == min(n_images, prefix * shard_images)
    assert cache.complete == (len(done) == n_shards)


@SETTINGS
@given(
    st.integers(1, 40), st.booleans(), st.integers(0, 5), st.lists(st.integers(1, 30), max_size=12), st.data()
)
def test_epoch_order_resumes_exactly_and_each_epoch_is_a_permutation(n_units, shuffle, seed, steps, data):
    order = EpochOrder(n_units, shuffle=shuffle, seed=seed)
    handed: list[int] = []
    for step in steps:  # hand out up to the end of the current epoch, as the provider does
        take = order.remaining()[:step]
        handed += take
        order.advance(len(take))
    saved = order.state_dict()
    more = data.draw(st.integers(0, 3 * n_units))

    def continue_from(stream: EpochOrder, n: int) -> list[int]:
        out: list[int] = []
        while len(out) < n:
            take = stream.remaining()[: n - len(out)]
            out += take
            stream.advance(len(take))
        return out

    original = continue_from(order, more)
    resumed = EpochOrder(n_units, shuffle=not shuffle, seed=seed + 1)  # the saved state wins
    resumed.load_state_dict(saved)
    assert continue_from(resumed, more) == original
    # every whole epoch of the full stream is a permutation of the units
    fresh = EpochOrder(n_units, shuffle=shuffle, seed=seed)
    stream = continue_from(fresh, 3 * n_units)
    for epoch in range(3):
        assert sorted(stream[epoch * n_units : (epoch + 1) * n_units]) == list(range(n_units))
