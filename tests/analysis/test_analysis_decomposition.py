"""The image-embedding decomposition: exact sums, agreement with transformer_lens' own decomposition,
TextSpan on hand-made data, and the typographic head effects.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from sae_clip_plugin import HookedViT
from sae_clip_plugin.analysis.decomposition import decompose_image_embedding, direct_logit_attribution
from sae_clip_plugin.analysis.decomposition.heads import head_totals_and_logits
from sae_clip_plugin.analysis.decomposition.textspan import text_span
from sae_clip_plugin.analysis.decomposition.typographic import (
    head_logit_margins,
    margins_from_head_logits,
    typographic_head_effects,
)
from tests.model.clips import small_open_clip, tiny_hf_clip, tiny_open_clip

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ["circle", "square", "triangle"]


def model_and_pixels(kind: str) -> tuple[HookedViT, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    if kind == "toy":
        return HookedViT.from_pretrained("toy"), torch.randn(3, 3, 64, 64, generator=g)
    if kind == "hf":
        return HookedViT.from_hf(tiny_hf_clip()), torch.randn(3, 3, 64, 64, generator=g)
    if kind == "avg_ln_after_pool":
        clip = tiny_open_clip(pool_type="avg", final_ln_after_pool=True)
        return HookedViT.from_open_clip(clip), torch.randn(3, 3, 64, 64, generator=g)
    name = {"vit_b_32": "ViT-B-32", "layer_scale": "ViT-M-16-alt"}[kind]
    model = HookedViT.from_open_clip(small_open_clip(name))
    size = model.cfg.image_size
    return model, torch.randn(2, 3, size, size, generator=g)


@pytest.mark.parametrize("kind", ["vit_b_32", "layer_scale", "hf", "toy", "avg_ln_after_pool"])
def test_contributions_sum_to_the_embedding_and_the_logits(kind: str) -> None:
    model, pixels = model_and_pixels(kind)
    if kind == "layer_scale":
        assert model.cfg.layer_scale_folded
    with torch.no_grad():
        embedding = model(pixels)
    parts = decompose_image_embedding(model, pixels)
    assert parts.heads.shape == (
        len(pixels),
        model.cfg.n_layers,
        model.cfg.n_heads,
        model.cfg.n_tokens,
        model.cfg.d_embed,
    )
    assert parts.neurons.shape == (len(pixels), model.cfg.n_layers, model.cfg.d_mlp, model.cfg.d_embed)
    assert (parts.total() - embedding.double()).abs().max() <= 1e-5
    weights = model.zero_shot_weights(CLASSES, ["a photo of a {}."])
    logits = model.zero_shot_logits(embedding, weights)
    attribution = direct_logit_attribution(model, pixels, weights)
    assert attribution.heads.shape[-1] == len(CLASSES)
    assert (attribution.total() - logits.double()).abs().max() <= 1e-5
    # the factorised neuron terms, materialised, sum to the MLP totals (biases aside)
    assert torch.allclose(parts.neurons.sum(2), parts.mlp_neuron_totals(), atol=1e-9)


@pytest.mark.parametrize("kind", ["vit_b_32", "hf"])
def test_head_and_neuron_terms_match_transformer_lens_decomposition(kind: str) -> None:
    """transformer_lens' get_full_resid_decomposition at the CLS token, through ln_post and W_proj, gives
    the same per-head and per-neuron terms (summed over source tokens / as they are)."""
    model, pixels = model_and_pixels(kind)
    with torch.no_grad():
        _, cache = model.run_with_cache(pixels)
    w = getattr(model.ln_post, "w", torch.ones(model.cfg.d_model))
    readout = (w[:, None] * model.W_proj).detach()
    tl, labels = cache.get_full_resid_decomposition(
        apply_ln=True, pos_slice=0, project_output_onto=readout, return_labels=True
    )
    n, h, d_mlp = model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_mlp
    ours = decompose_image_embedding(model, pixels)
    tl_heads = tl[: n * h].reshape(n, h, *tl.shape[1:]).permute(2, 0, 1, 3)
    assert torch.allclose(ours.head_totals(), tl_heads.double(), atol=1e-5)
    tl_neurons = tl[n * h : n * h + n * d_mlp].reshape(n, d_mlp, *tl.shape[1:]).permute(2, 0, 1, 3)
    assert torch.allclose(ours.neurons, tl_neurons.double(), atol=1e-5)
    assert labels[n * h + n * d_mlp] == "embed"
    assert torch.allclose(ours.embed, tl[n * h + n * d_mlp].double(), atol=1e-5)


def test_per_token_terms_are_attention_times_value_by_hand() -> None:
    model, pixels = model_and_pixels("toy")
    with torch.no_grad():
        _, cache = model.run_with_cache(pixels)
    layer, head, token = 3, 1, 17
    ours = decompose_image_embedding(model, pixels).heads[:, layer, head, token]
    a = cache[f"blocks.{layer}.attn.hook_pattern"][:, head, 0, token]  # CLS attends to the token
    moved = cache[f"blocks.{layer}.attn.hook_v"][:, token, head] @ model.blocks[layer].attn.W_O[head]
    moved = moved - moved.mean(-1, keepdim=True)
    scale = cache["ln_post.hook_scale"][:, 0]
    w = getattr(model.ln_post, "w", torch.ones(model.cfg.d_model))
    hand = (a[:, None] * moved / scale) @ (w[:, None] * model.W_proj)
    assert torch.allclose(ours, hand.double(), atol=1e-6)


def test_bad_inputs_are_named() -> None:
    model, pixels = model_and_pixels("hf")
    with pytest.raises(ValueError, match="embedding width first"):
        decompose_image_embedding(model, pixels, project_onto=torch.zeros(5, 2))
    clip = tiny_open_clip(pool_type="none")
    with pytest.raises(ValueError, match="pool_type 'tok' or 'avg'"):
        decompose_image_embedding(HookedViT.from_open_clip(clip), pixels)


def test_text_span_picks_the_dominant_directions_with_their_variance() -> None:
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))[0]  # orthonormal columns
    texts = [f"t{i}" for i in range(8)]
    text_embeddings = basis.T.clone()  # text i points along basis[:, i]
    coeff = torch.randn(200, 2, generator=g, dtype=torch.float64) * torch.tensor(
        [3.0, 1.0], dtype=torch.float64
    )
    data = coeff @ basis[:, [5, 2]].T + 7.0  # a constant offset: TextSpan centres first
    chosen = text_span(data, text_embeddings, texts, n_texts=3)
    assert [c.text for c in chosen] == ["t5", "t2", chosen[2].text]
    c = coeff - coeff.mean(0)
    total = float(c.pow(2).sum())
    assert chosen[0].variance_explained == pytest.approx(float(c[:, 0].pow(2).sum()) / total, rel=1e-9)
    assert chosen[1].variance_explained == pytest.approx(float(c[:, 1].pow(2).sum()) / total, rel=1e-9)
    assert chosen[2].variance_explained == pytest.approx(0.0, abs=1e-12)
    # a text that is not orthogonal to the first pick is credited only with what is left after it
    mixed = F.normalize(basis[:, 5] + basis[:, 2], dim=0)
    chosen = text_span(data, torch.stack([basis[:, 5], mixed]), ["a", "mix"], n_texts=2)
    assert chosen[0].text == "a" and chosen[1].variance_explained == pytest.approx(
        float(c[:, 1].pow(2).sum()) / total, rel=1e-9
    )
    with pytest.raises(ValueError, match="n_texts"):
        text_span(data, text_embeddings, texts, n_texts=9)


def test_textspan_text_lists_the_largest_share_first() -> None:
    from sae_clip_plugin.analysis.decomposition.heads import HeadReport
    from sae_clip_plugin.analysis.decomposition.textspan import TextSpanEntry

    greedy = [TextSpanEntry("a", 0.10), TextSpanEntry("b", 0.30), TextSpanEntry("c", 0.05)]  # Alg. 1's order
    report = HeadReport(torch.zeros(1, 1), torch.zeros(1, 1), {(0, 0): greedy})
    assert report.textspan_text(0, 0) == "b (30%); a (10%); c (5%)"


def test_typographic_head_effects_match_a_transformer_lens_computation() -> None:
    model, _ = model_and_pixels("toy")
    g = torch.Generator().manual_seed(1)
    clean, attacked = torch.randn(4, 3, 64, 64, generator=g), torch.randn(4, 3, 64, 64, generator=g)
    weights = model.zero_shot_weights(CLASSES, ["a photo of a {}."])
    written, true = torch.tensor([1, 2, 0, 1]), torch.tensor([0, 0, 2, 2])
    effects = typographic_head_effects(model, attacked, clean, written, true, weights, batch_size=3)

    def margins_tl(pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            embedding, cache = model.run_with_cache(pixels)
        w = getattr(model.ln_post, "w", torch.ones(model.cfg.d_model))
        heads = cache.stack_head_results(apply_ln=True, pos_slice=0)  # [n*h, b, d_model]
        logits = (
            heads
            @ (w[:, None] * model.W_proj)
            @ weights
            * model.logit_scale
            / embedding.norm(dim=-1)[:, None]
        )
        idx = torch.arange(len(pixels))
        margin = logits[:, idx, written] - logits[:, idx, true]  # [n*h, b]
        return margin.T.reshape(len(pixels), model.cfg.n_layers, model.cfg.n_heads)

    hand = (margins_tl(attacked) - margins_tl(clean)).mean(0)
    assert torch.allclose(effects, hand.double(), atol=1e-5)
    per_image = head_logit_margins(model, clean, written, true, weights, batch_size=2)
    assert torch.allclose(per_image, margins_tl(clean).double(), atol=1e-5)
    # the path `sae-clip decompose` takes: margins from the head table's own (unprojected) decomposition
    from_table = margins_from_head_logits(
        head_totals_and_logits(model, clean, weights, 2).logits, written, true
    )
    assert torch.allclose(from_table, margins_tl(clean).double(), atol=1e-5)


def test_decompose_command_writes_a_consistent_table_and_figures(tmp_path) -> None:
    import pandas as pd

    from sae_clip_plugin.cli import main

    out = tmp_path / "dec"
    assert main(["decompose", "--out", str(out), "--n-select", "12", "--batch-size", "8"]) == 0
    for name in ("heads.csv", "heads.md", "summary.json", "head_direct_effect.png", "head_typographic_effect.png",
                 "token_maps.png"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    table = pd.read_csv(out / "heads.csv")
    model = HookedViT.from_pretrained("toy")
    assert len(table) == model.cfg.n_layers * model.cfg.n_heads
    assert set(table.columns) >= {
        "layer",
        "head",
        "direct_effect",
        "variance_share",
        "typographic_effect",
        "textspan",
    }
    assert (table.variance_share >= 0).all() and table.variance_share.sum() < 1.5
    summary = json.loads((out / "summary.json").read_text())
    best = table.sort_values("typographic_effect", ascending=False).iloc[0]
    assert summary["top_heads"]["typographic_effect"][0] == f"L{best.layer}H{best['head']}"
    assert "typographic_effect" in (out / "heads.md").read_text()


def test_a_decoder_direction_read_out_directly_by_hand() -> None:
    from sae_lens import StandardSAE, StandardSAEConfig

    from sae_clip_plugin.analysis.dashboard import decoder_readouts
    from sae_clip_plugin.analysis.decomposition.direct_effects import direction_readout
    from sae_clip_plugin.analysis.vocabulary import text_embeddings

    model, _ = model_and_pixels("toy")
    torch.manual_seed(0)
    sae = StandardSAE(StandardSAEConfig(d_in=model.cfg.d_model, d_sae=16))
    sae.cfg.metadata.hook_name = "blocks.4.hook_resid_post"
    w = getattr(model.ln_post, "w", torch.ones(model.cfg.d_model))
    d = sae.W_dec[[3, 9]].double()
    hand = ((d - d.mean(-1, keepdim=True)) * w.double()) @ model.W_proj.double()
    assert torch.allclose(direction_readout(model, sae.W_dec[[3, 9]]), hand, atol=1e-10)
    words = ["circle", "square", "star", "red"]
    cosine = F.normalize(hand, dim=-1) @ text_embeddings(model, words).double().T
    readouts = decoder_readouts(model, sae, [3, 9], words, n_words=2)
    for got, row in zip(readouts, cosine, strict=True):
        best = torch.argsort(row, descending=True)[:2]
        assert [w for w, _ in got] == [words[int(i)] for i in best]
        assert [c for _, c in got] == pytest.approx(row[best].tolist(), abs=1e-6)
    sae.cfg.metadata.hook_name = "blocks.4.attn.hook_z"  # not a residual-stream write: nothing to read out
    assert decoder_readouts(model, sae, [3], words) == [[]]
