"""Zero-shot helpers by hand (logits with the logit scale, top-1, CE, KL, groups) and against open_clip itself."""

from __future__ import annotations

import math

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, TensorDataset

from sae_clip_plugin.analysis.zero_shot import (
    ZeroShotAccumulator,
    embed_images,
    evaluate_zero_shot,
    group_accuracy,
    iter_image_batches,
    kl_divergence,
    materialize_images,
    zero_shot_logits,
    zero_shot_metrics,
)
from sae_clip_plugin.model.hooked_vit import HookedViT
from tests.model.clips import tiny_open_clip


def test_logits_apply_the_scale_to_cosines() -> None:
    embeds = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    logits = zero_shot_logits(embeds, torch.eye(2), logit_scale=10.0)
    torch.testing.assert_close(logits, torch.tensor([[6.0, 8.0], [0.0, 10.0]]))
    with pytest.raises(ValueError, match="d_embed, n_classes"):
        zero_shot_logits(embeds, torch.eye(3), 1.0)


def test_top1_ce_and_groups_by_hand() -> None:
    logits = torch.tensor([[6.0, 8.0], [0.0, 10.0], [1.0, 0.0]])
    labels = torch.tensor([1, 0, 0])
    groups = torch.tensor([0, 1, 1])
    r = zero_shot_metrics(logits, labels, groups)
    assert r["top1"] == pytest.approx(2 / 3)
    # CE: -log softmax at the label: log(1 + e^-2), log(1 + e^10), log(1 + e^-1)
    ce = (math.log1p(math.exp(-2)) + math.log1p(math.exp(10)) + math.log1p(math.exp(-1))) / 3
    assert r["ce"] == pytest.approx(ce)
    assert r["group_acc_0"] == 1.0 and r["group_acc_1"] == 0.5
    assert r["worst_group_acc"] == 0.5 and r["mean_group_acc"] == 0.75
    assert group_accuracy(logits.argmax(-1) == labels, groups) == {0: 1.0, 1: 0.5}
    streamed = ZeroShotAccumulator()
    for i in range(3):
        streamed.add(logits[i : i + 1], labels[i : i + 1], groups[i : i + 1])
    assert streamed.result() == pytest.approx(r)
    with pytest.raises(ValueError, match="labels must lie"):
        zero_shot_metrics(logits, torch.tensor([0, 1, 2]))


def test_kl_by_hand() -> None:
    # p = (1/2, 1/2), q = (3/4, 1/4): KL(p || q) = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3)
    kl = kl_divergence(torch.zeros(1, 2), torch.tensor([[math.log(3.0), 0.0]]))
    assert float(kl) == pytest.approx(0.5 * math.log(4 / 3))
    assert float(kl_divergence(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 2.0]]))) == 0.0


class _Items(Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_image_sources() -> None:
    px = torch.arange(5 * 3 * 2 * 2, dtype=torch.float32).reshape(5, 3, 2, 2)
    y = torch.tensor([0, 1, 0, 1, 1])
    batches = list(iter_image_batches(px, batch_size=2))
    assert [len(b) for b in batches] == [2, 2, 1] and batches[0].labels is None
    torch.testing.assert_close(torch.cat([b.pixels for b in batches]), px)
    tup = list(iter_image_batches((px, y), batch_size=3, max_images=4))
    assert [len(b) for b in tup] == [3, 1] and tup[1].labels.tolist() == [1]
    loader = list(iter_image_batches(DataLoader(TensorDataset(px, y), batch_size=4)))
    assert loader[0].labels.tolist() == [0, 1, 0, 1]
    ds = list(iter_image_batches(_Items([(px[i], int(y[i]), 7) for i in range(5)]), batch_size=5))
    assert ds[0].labels.tolist() == y.tolist() and ds[0].groups.tolist() == [7] * 5
    pil = Image.new("RGB", (2, 2), (255, 0, 0))
    metas = [(pil, {"label": 2, "group": name}) for name in ("a", "b", "a")]
    out = next(iter_image_batches(_Items(metas), transform=lambda im: torch.ones(3, 2, 2)))
    assert out.labels.tolist() == [2, 2, 2] and out.groups.tolist() == [0, 1, 0]
    mat = materialize_images(_Items(metas), transform=lambda im: torch.ones(3, 2, 2), max_images=2)
    assert [t.shape[0] for t in mat] == [2, 2, 2] and mat[2].tolist() == [0, 1]
    assert len(materialize_images(px, batch_size=2)) == 1
    with pytest.raises(TypeError, match=r"transform=model\.preprocess"):
        next(iter_image_batches(_Items(metas)))
    with pytest.raises(TypeError, match="dataset item"):
        next(iter_image_batches(_Items(["not an image"])))


@pytest.fixture(scope="module")
def pair():
    clip = tiny_open_clip(layers=2)
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    return clip, tokenizer, HookedViT.from_open_clip(clip, tokenizer=tokenizer)


@torch.no_grad()
def test_evaluate_zero_shot_matches_open_clip(pair) -> None:
    """Top-1 / CE / group accuracy equal those computed with open_clip's own encoders."""
    clip, tokenizer, model = pair
    names, templates = ["cat", "dog", "car"], ["a photo of a {}.", "a {}."]
    px = torch.randn(5, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    y, g = torch.tensor([0, 1, 2, 1, 0]), torch.tensor([0, 0, 1, 1, 1])
    r = evaluate_zero_shot(model, (px, y, g), classnames=names, templates=templates, batch_size=2)
    text = torch.stack(
        [
            F.normalize(
                clip.encode_text(tokenizer([t.format(n) for t in templates]), normalize=True).mean(0), dim=-1
            )
            for n in names
        ]
    )
    logits = clip.logit_scale.exp() * clip.encode_image(px, normalize=True) @ text.T
    hits = (logits.argmax(-1) == y).double().numpy()
    assert r["top1"] == pytest.approx(hits.mean())
    assert r["ce"] == pytest.approx(float(F.cross_entropy(logits.double(), y)), rel=1e-4)
    assert r["group_acc_1"] == pytest.approx(hits[2:].mean()) and r["n_images"] == 5
    emb = embed_images(model, (px, y), batch_size=3)
    np.testing.assert_allclose(emb.embeds.numpy(), clip.encode_image(px).numpy(), rtol=1e-4, atol=1e-5)
    assert emb.groups is None and emb.labels.tolist() == y.tolist()
