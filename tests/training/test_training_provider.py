"""The activation provider's batches are exactly the activations run_with_cache gives, token-selected."""

from __future__ import annotations

import pytest
import torch

from sae_clip_plugin.training import (
    TOKEN_SELECTIONS,
    ActivationHarvester,
    ActivationProvider,
    EpochOrder,
    TensorSource,
    stop_at_layer_for,
    write_activation_cache,
)

HOOK = "blocks.1.hook_resid_post"
CONTEXT = {"all": 17, "cls": 1, "patches": 16}


def direct(model, pixels, hook, selection):
    """Reference: one run_with_cache over all images, then plain indexing (CLS = token 0)."""
    _, cache = model.run_with_cache(pixels, names_filter=[hook])
    acts = cache[hook]
    acts = acts.reshape(acts.shape[0], acts.shape[1], -1)
    picked = {"all": acts, "cls": acts[:, [0]], "patches": acts[:, 1:]}[selection]
    return picked.reshape(-1, picked.shape[-1])


def assert_rows_among(rows, reference, atol=1e-5):
    """Every row of `rows` is (numerically) one of the rows of `reference`."""
    dist = torch.cdist(rows.double(), reference.double()).min(dim=1).values
    assert float(dist.max()) < atol


@pytest.mark.parametrize("selection", TOKEN_SELECTIONS)
def test_batches_equal_direct_activations_in_order(model, pixels, selection):
    batch = 8 if selection == "cls" else 32
    harvester = ActivationHarvester(model, [HOOK], selection, batch_size=7)
    provider = ActivationProvider.from_harvester(
        harvester,
        TensorSource(pixels),
        train_batch_size_tokens=batch,
        buffer_tokens=batch,
        mix_fraction=0.0,
        shuffle=False,
    )
    n_batches = len(pixels) * CONTEXT[selection] // batch
    batches = [next(provider) for _ in range(n_batches)]
    assert all(tuple(b.shape) == (batch, 64) for b in batches)
    expected = direct(model, pixels, HOOK, selection)
    torch.testing.assert_close(torch.cat(batches), expected[: n_batches * batch], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("selection", TOKEN_SELECTIONS)
def test_shuffled_epoch_is_the_same_multiset(model, pixels, selection):
    ctx = CONTEXT[selection]
    harvester = ActivationHarvester(model, [HOOK], selection, batch_size=16)
    provider = ActivationProvider.from_harvester(
        harvester,
        TensorSource(pixels),
        train_batch_size_tokens=ctx * 8,
        buffer_tokens=ctx * 8,
        mix_fraction=0.0,
        shuffle=True,
        seed=3,
    )
    epoch = torch.cat([next(provider) for _ in range(len(pixels) // 8)])
    expected = direct(model, pixels, HOOK, selection)
    assert not torch.allclose(epoch, expected)  # the order did change
    key = lambda t: t[torch.argsort(t[:, 0] * 1e3 + t[:, 1])]  # noqa: E731
    torch.testing.assert_close(key(epoch), key(expected), rtol=1e-5, atol=1e-5)


def test_mixing_buffer_keeps_hooks_aligned(model, pixels):
    hooks = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z"]
    harvester = ActivationHarvester(model, hooks, "all", batch_size=8)
    provider = ActivationProvider.from_harvester(
        harvester,
        TensorSource(pixels),
        train_batch_size_tokens=50,
        buffer_tokens=200,
        mix_fraction=0.5,
        seed=1,
    )
    reference = torch.cat([direct(model, pixels, h, "all") for h in hooks], dim=1)  # row pairs of one token
    for _ in range(30):  # crosses an epoch boundary (680 tokens per epoch)
        batch = next(provider)
        assert set(batch) == set(hooks)
        assert batch[hooks[0]].shape == (50, 64) and batch[hooks[1]].shape == (50, 64)
        assert_rows_among(torch.cat([batch[h] for h in hooks], dim=1), reference)


def test_cached_provider_gives_the_live_batches(model, pixels, tmp_path):
    harvester = ActivationHarvester(model, [HOOK], "patches", batch_size=8)
    cache = write_activation_cache(
        tmp_path / "c",
        model,
        TensorSource(pixels),
        [HOOK],
        "patches",
        shard_images=16,
        harvester=harvester,
        progress=False,
    )
    kwargs = dict(train_batch_size_tokens=64, buffer_tokens=64, mix_fraction=0.0, shuffle=False)
    live = ActivationProvider.from_harvester(harvester, TensorSource(pixels), **kwargs)
    cached = ActivationProvider.from_cache(cache, chunk_images=6, **kwargs)
    for _ in range(15):  # 1.5 epochs
        torch.testing.assert_close(next(cached), next(live))


def test_provider_position_resumes_the_image_stream(model, pixels):
    harvester = ActivationHarvester(model, [HOOK], "cls", batch_size=4)
    kwargs = dict(
        train_batch_size_tokens=4, buffer_tokens=4, mix_fraction=0.0, shuffle=True, seed=5, chunk_images=1
    )
    first = ActivationProvider.from_harvester(harvester, TensorSource(pixels), **kwargs)
    for _ in range(13):  # 52 images: into the second epoch
        next(first)
    state = first.state_dict()
    assert state["epoch"] == 1 and state["position"] == 12
    resumed = ActivationProvider.from_harvester(harvester, TensorSource(pixels), **kwargs)
    resumed.load_state_dict(state)
    for _ in range(5):
        torch.testing.assert_close(next(resumed), next(first))


def test_a_position_inside_a_chunk_resumes_exactly(model, pixels):
    """Live batches (4 images) end inside chunks (12 images): the position keeps the images already handed out."""
    harvester = ActivationHarvester(model, [HOOK], "cls", batch_size=4)
    kwargs = dict(
        train_batch_size_tokens=4, buffer_tokens=4, mix_fraction=0.0, shuffle=True, seed=5, chunk_images=12
    )
    first = ActivationProvider.from_harvester(harvester, TensorSource(pixels), **kwargs)
    for _ in range(5):  # 20 images: whole chunks and part of the next
        next(first)
    state = first.state_dict()
    assert state["partial"] > 0 and state["position"] >= 1
    resumed = ActivationProvider.from_harvester(harvester, TensorSource(pixels), **kwargs)
    resumed.load_state_dict(state)
    for _ in range(12):  # across the epoch boundary
        torch.testing.assert_close(next(resumed), next(first))


def test_epoch_order_permutes_each_epoch_and_restores():
    order = EpochOrder(10, shuffle=True, seed=0)
    a, b = order.order(0), order.order(1)
    assert sorted(a) == sorted(b) == list(range(10)) and a != b
    order.advance(7)
    other = EpochOrder(10, shuffle=True, seed=0)
    other.load_state_dict(order.state_dict())
    assert other.remaining() == a[7:]
    with pytest.raises(ValueError, match="same dataset"):
        EpochOrder(11).load_state_dict(order.state_dict())


def test_forward_stops_after_the_deepest_hook(model, pixels):
    assert stop_at_layer_for(["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"]) == 2
    assert stop_at_layer_for(["hook_embed", "ln_pre.hook_normalized"]) == 0
    assert stop_at_layer_for(["blocks.0.hook_resid_post", "ln_post.hook_normalized"]) is None
    calls = []
    handle = model.blocks[1].register_forward_hook(lambda *_: calls.append(1))
    try:
        harvester = ActivationHarvester(model, ["blocks.0.hook_mlp_out"], "all", batch_size=8)
        calls.clear()
        next(harvester.iter_batches(TensorSource(pixels)))
    finally:
        handle.remove()
    assert calls == []


def test_dataloader_workers_decode_the_same_images(model, tmp_path):
    from PIL import Image

    from sae_clip_plugin.training import image_source
    from tests.training.conftest import write_images

    paths = sorted(write_images(tmp_path / "imgs", 10, classes=2))
    source = image_source(str(tmp_path / "imgs"))
    pixels = torch.stack([model.preprocess(Image.open(p).convert("RGB")) for p in paths])
    expected = direct(model, pixels, HOOK, "all")
    for workers in (0, 2):
        harvester = ActivationHarvester(model, [HOOK], "all", batch_size=3, num_workers=workers)
        got = torch.cat([b[HOOK] for b in harvester.iter_batches(source.with_transform(model.preprocess))])
        torch.testing.assert_close(got.reshape(-1, 64), expected, rtol=1e-5, atol=1e-5)
