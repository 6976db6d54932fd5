"""Steerability (the paper's metric, arXiv 2504.08729) against an independent naive reference written here."""

from __future__ import annotations

import itertools
import json

import open_clip
import pytest
import torch
import torch.nn.functional as F
from sae_lens import StandardSAE, StandardSAEConfig

from sae_clip_plugin import HookedSAEViT, HookedViT
from sae_clip_plugin.analysis.steerability.controls import random_vision_model
from sae_clip_plugin.analysis.steerability.metric import select_features, steerability, steering_curves
from sae_clip_plugin.analysis.vocabulary import load_vocabulary
from tests.model.clips import tiny_open_clip

WORDS = ["cat", "dog", "car", "tree", "house", "red", "boat", "sky"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model() -> HookedSAEViT:
    clip = tiny_open_clip(layers=3)
    return HookedSAEViT.from_open_clip(clip, tokenizer=open_clip.get_tokenizer("ViT-B-32"))


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    return torch.randn(5, 3, 64, 64, generator=torch.Generator().manual_seed(3))


def make_sae(hook: str, norm: str = "none") -> StandardSAE:
    torch.manual_seed(1)
    sae = StandardSAE(StandardSAEConfig(d_in=64, d_sae=48, normalize_activations=norm))
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.5)
    sae.cfg.metadata.hook_name = hook
    return sae


@torch.no_grad()
def reference(model, pixels, words, edit_hooks, threshold):
    """delta_bar, S, P, top word, flag, polysemanticity straight from the paper's definitions (readout at the
    model's learned logit scale, the default: the paper's 100 is ViT-B/32's)."""
    t = F.normalize(model.encode_text(words), dim=-1)
    scale = model.text.logit_scale.exp()

    def probs(embedding):
        return torch.softmax(scale * F.normalize(embedding, dim=-1) @ t.T, dim=-1)

    clean = probs(model(pixels))
    rows = []
    for run in edit_hooks:
        delta = (probs(run()) - clean).mean(0).double()
        s = float((delta**2).sum())
        mean_dir = t.sum(0) / t.sum(0).norm()
        poly = float((delta.float() @ t - mean_dir).norm())
        rows.append((s, float(delta.max()), words[int(delta.argmax())], s > threshold, poly))
    return rows


def check_table(table, expected):
    assert len(table) == len(expected)
    for row, (s, p, top, flag, poly) in zip(table.itertuples(), expected, strict=True):
        assert pytest.approx(s, abs=2e-6) == row.S
        assert pytest.approx(p, abs=2e-6) == row.P
        assert row.top_concept == top and bool(row.steerable) == flag
        assert row.polysemanticity == pytest.approx(poly, abs=1e-5)


@pytest.mark.parametrize(
    "hook, tokens, norm",
    [
        ("blocks.1.hook_resid_post", "all", "none"),
        ("blocks.1.hook_resid_post", "cls", "layer_norm"),
        ("blocks.2.hook_mlp_out", [0, 4, 9], "none"),
        ("blocks.0.hook_resid_pre", "all", "none"),
        ("hook_pos_embed", "patches", "none"),
    ],
)
def test_sae_steerability_equals_naive_reference(model, pixels, hook, tokens, norm):
    sae = make_sae(hook, norm)
    features = [0, 5, 11, 17, 23, 31, 40, 47]
    strength = 6.0

    def clamp(j):
        def edit(acts, hook):  # sae_lens' own splice with the error term; clamp the selected tokens
            acts = acts.clone()
            n = acts.shape[1]
            named = {"all": list(range(n)), "cls": [0], "patches": list(range(1, n))}
            positions = named[tokens] if isinstance(tokens, str) else tokens
            acts[:, positions, j] = strength
            return acts

        return lambda: model.run_with_hooks_with_saes(
            pixels, saes=[sae], use_error_term=True, fwd_hooks=[(f"{hook}.hook_sae_acts_post", edit)]
        )

    with torch.no_grad():
        expected = reference(model, pixels, WORDS, [clamp(j) for j in features], 0.0)
    # a threshold in the widest gap between S values, so both flags occur and none sits on the edge
    ranked = sorted(r[0] for r in expected)
    gap, i = max((b - a, i) for i, (a, b) in enumerate(itertools.pairwise(ranked)))
    assert gap > 1e-3
    threshold = (ranked[i] + ranked[i + 1]) / 2
    expected = [(s, p, top, s > threshold, poly) for s, p, top, _, poly in expected]
    for method in ("fast", "naive"):
        result = steerability(
            model,
            sae,
            pixels,
            WORDS,
            features,
            strength,
            threshold,
            tokens=tokens,
            method=method,
            batch_size=12,
            image_batch_size=2,
        )
        check_table(result.table, expected)
        assert result.table["feature"].tolist() == features
        flags = result.table["steerable"]
        assert 0 < flags.sum() < len(features)
        steerable_tops = set(result.table.loc[flags, "top_concept"])
        assert result.summary["coverage"] == len(steerable_tops)
        assert result.summary["steerable_fraction"] == pytest.approx(flags.mean())


def test_neuron_baseline_equals_naive_reference(model, pixels):
    hook, strength, neurons = "blocks.1.hook_resid_post", 4.0, [1, 9, 33, 60]

    def set_neuron(k):
        def edit(acts, hook):
            acts = acts.clone()
            acts[..., k] = strength
            return acts

        return lambda: model.run_with_hooks(pixels, fwd_hooks=[(hook, edit)])

    with torch.no_grad():
        expected = reference(model, pixels, WORDS, [set_neuron(k) for k in neurons], 0.05)
    result = steerability(model, None, pixels, WORDS, neurons, strength, 0.05, hook_name=hook)
    check_table(result.table, expected)
    assert result.summary["basis"] == "neurons" and result.summary["dictionary_size"] == 64


def test_directions_basis_add_equals_neurons_shift(model, pixels):
    """Adding alpha * e_k through the directions basis is adding alpha to neuron k."""
    hook = "blocks.1.hook_resid_post"
    eye = torch.eye(64)[[2, 7]]
    a = steerability(model, eye, pixels, WORDS, None, 3.0, hook_name=hook, mode="add")
    b = steerability(model, None, pixels, WORDS, [2, 7], 3.0, hook_name=hook, mode="add")
    assert torch.allclose(a.delta_bar, b.delta_bar, atol=1e-6)


def test_steering_curves_match_single_runs_and_start_at_zero_shift(model, pixels):
    sae = make_sae("blocks.1.hook_resid_post")
    curves = steering_curves(
        model, sae, pixels, WORDS, features=[3, 8], strengths=[0.0, 2.0, 6.0], threshold=0.05
    )
    assert curves[["feature", "strength"]].values.tolist() == [[3, 0], [3, 2], [3, 6], [8, 0], [8, 2], [8, 6]]
    single = steerability(model, sae, pixels, WORDS, [3, 8], 6.0, 0.05)
    at6 = curves[curves["strength"] == 6.0].reset_index(drop=True)
    assert at6["S"].tolist() == pytest.approx(single.table["S"].tolist(), abs=1e-7)


def test_random_model_keeps_text_and_config(model, pixels):
    rand = random_vision_model(model, seed=4)
    assert rand.text is model.text and type(rand) is type(model) and rand.cfg.d_model == model.cfg.d_model
    again = random_vision_model(model, seed=4)
    with torch.no_grad():
        out, out2, ref = rand(pixels), again(pixels), model(pixels)
    assert torch.equal(out, out2) and not torch.allclose(out, ref)
    assert torch.equal(rand.blocks[0].ln1.w, torch.ones(64)) and torch.equal(
        rand.blocks[0].attn.b_Q, torch.zeros(4, 16)
    )
    w_in = rand.blocks[0].mlp.W_in.detach()
    assert w_in.abs().max() <= 64**-0.5 and w_in.std() == pytest.approx(64**-0.5 / 3**0.5, rel=0.1)
    # the original is untouched
    assert not torch.equal(model.blocks[0].mlp.W_in, w_in)
    result = steerability(rand, None, pixels, WORDS, 4, 4.0, hook_name="blocks.1.hook_resid_post")
    assert len(result.table) == 4


def test_feature_selection():
    assert select_features(10) == list(range(10))
    assert len(select_features(100, 0.05)) == 5 and select_features(100, 0.05) == select_features(100, 0.05)
    assert select_features(100, 3, seed=1) != select_features(100, 3, seed=2)
    assert select_features(10, [4, 2]) == [4, 2]
    for bad in (0.0, 1.5, 11, [10], []):
        with pytest.raises(ValueError):
            select_features(10, bad)


def test_vocabulary_sources(tmp_path):
    (tmp_path / "v.txt").write_text("cat\n# a comment\n\ndog  # pet\ncat\n")
    (tmp_path / "v.json").write_text(json.dumps(["a", "b", "a"]))
    assert load_vocabulary(tmp_path / "v.txt") == ["cat", "dog"]
    assert load_vocabulary(str(tmp_path / "v.json")) == ["a", "b"]
    assert len(load_vocabulary()) >= 997 and "goldfish" in load_vocabulary("imagenet")
    toy = load_vocabulary("toy")
    assert {"circle", "red", "water"} <= set(toy)
    both = load_vocabulary("toy,imagenet")
    assert both[: len(toy)] == toy and len(both) == len(set(toy) | set(load_vocabulary("imagenet")))
    with pytest.raises(ValueError, match="unknown vocabulary"):
        load_vocabulary("nonsense-name")


def test_save_and_cli(model, pixels, tmp_path, monkeypatch, capsys):
    from sae_clip_plugin.cli import main
    from sae_clip_plugin.pretrained import save_sae

    sae = make_sae("blocks.1.hook_resid_post")
    save_sae(sae, tmp_path / "sae")
    plain = HookedViT.from_open_clip(tiny_open_clip(layers=3), tokenizer=open_clip.get_tokenizer("ViT-B-32"))
    monkeypatch.setattr(HookedViT, "from_pretrained", classmethod(lambda cls, spec, **kwargs: plain))
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (64, 64), (40 * i, 80, 200 - 30 * i)).save(images / f"{i}.png")
    vocab = tmp_path / "words.txt"
    vocab.write_text("\n".join(WORDS))
    out = tmp_path / "out"
    argv = ["steerability", "--model", "tiny", "--sae", str(tmp_path / "sae"), "--images", str(images)]
    argv += ["--vocabulary", str(vocab), "--features", "6", "--strength", "5", "--out", str(out)]
    argv += ["--strengths", "0,5"]
    assert main(argv) == 0
    summary = json.loads((out / "steerability_summary.json").read_text())
    line = capsys.readouterr().out.splitlines()[0]  # a human summary on stdout, the JSON in the file
    assert line == (
        f"steerable: {summary['n_steerable']} of 6 features ({100 * summary['steerable_fraction']:.1f}%; steerable "
        f"means S > 0.1 at strength 5.0 (absolute)), coverage {summary['coverage']} distinct top concepts, mean S "
        f"{summary['mean_S']:.4g}"
    )
    assert (
        summary["n_features"] == 6
        and summary["n_images"] == 3
        and summary["hook_name"] == "blocks.1.hook_resid_post"
    )
    import pandas as pd

    table = pd.read_csv(out / "steerability.csv")
    assert list(table.columns) == [
        "feature",
        "strength",
        "S",
        "P",
        "top_concept",
        "steerable",
        "polysemanticity",
        "finite",
    ]
    assert table["finite"].all()
    assert (out / "steerability_summary.md").read_text().startswith("# Steerability")
    assert (out / "steerability_curves.png").stat().st_size > 0
    assert len(pd.read_csv(out / "steerability_curves.csv")) == 8 * 2


def test_figures_draw_one_mark_per_feature(model, pixels):
    from sae_clip_plugin.viz.steering_figures import plot_steerability_scatter, plot_steering_curves

    sae = make_sae("blocks.1.hook_resid_post")
    curves = steering_curves(model, sae, pixels, WORDS, features=[1, 2, 3], strengths=[0.0, 3.0])
    fig = plot_steering_curves(curves, threshold=0.1)
    lines = fig.axes[0].get_lines()
    assert len(lines) == 4  # three features + the threshold line
    assert list(lines[0].get_xdata()) == [0.0, 3.0]
    table = steerability(model, sae, pixels, WORDS, [1, 2, 3], 3.0).table
    fig = plot_steerability_scatter({"SAE": table, "again": table})
    assert [len(c.get_offsets()) for c in fig.axes[0].collections] == [3, 3]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strength": float("nan")}, "strength must be a finite number"),
        ({"strength": float("inf")}, "strength must be a finite number"),
        ({"readout_scale": float("nan")}, "readout_scale must be a finite number"),
        ({"readout_scale": 0.0}, r"readout_scale must be in \(0"),
    ],
)
def test_non_finite_steering_inputs_are_refused(model, pixels, kwargs, message):
    sae = make_sae("blocks.1.hook_resid_post")
    with pytest.raises(ValueError, match=message):
        steerability(model, sae, pixels, WORDS, features=[0], **kwargs)
    with pytest.raises(ValueError, match="finite"):
        steering_curves(model, sae, pixels, WORDS, features=[0], strengths=(1.0, float("nan")))


def test_overflowing_strength_is_flagged_not_reported_as_a_concept(model, pixels):
    sae = make_sae("blocks.1.hook_resid_post")
    with pytest.warns(UserWarning, match="not finite"):
        table = steerability(model, sae, pixels, WORDS, features=[0, 1], strength=1e38).table
    assert not table["finite"].any()
    assert table["top_concept"].isna().all() and not table["steerable"].any()


def test_relative_strength_gives_the_papers_150_on_a_layer_normalised_vit_b_32_sae():
    """A layer-normalised SAE on ViT-B/32's 768-wide stream with unit decoder rows: r = 5.41 is s = 150."""
    from sae_clip_plugin.analysis.steering.bases import make_basis
    from sae_clip_plugin.analysis.steering.strength import PAPER_RELATIVE_STRENGTH, absolute_strengths
    from tests.model.clips import small_open_clip

    vit = HookedViT.from_open_clip(small_open_clip("ViT-B-32"))
    sae = StandardSAE(StandardSAEConfig(d_in=768, d_sae=32, normalize_activations="layer_norm"))
    with torch.no_grad():
        sae.W_dec.copy_(F.normalize(torch.randn(32, 768, generator=torch.Generator().manual_seed(0)), dim=-1))
    sae.cfg.metadata.hook_name = "blocks.1.hook_resid_post"
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    values, norm = absolute_strengths(vit, make_basis(sae, None), images, [0, 5], PAPER_RELATIVE_STRENGTH)
    # sae_lens' layer norm divides by the unbiased std: the norm is sqrt(767), 0.07% under sqrt(768)
    assert norm == pytest.approx(767**0.5, rel=1e-4)
    assert values == pytest.approx([150.0, 150.0], rel=1e-3)


def test_relative_strength_by_hand_for_neurons_and_sae_features(model, pixels):
    from sae_clip_plugin.analysis.steering.bases import make_basis
    from sae_clip_plugin.analysis.steering.strength import absolute_strengths

    hook = "blocks.1.hook_resid_post"
    with torch.no_grad():
        _, cache = model.run_with_cache(pixels, names_filter=[hook])
    x = cache[hook].double()
    cls_rms = float(x[:, 0].norm(dim=-1).pow(2).mean().sqrt())
    values, norm = absolute_strengths(model, make_basis(None, hook, 64), pixels, [3, 4], 2.0, tokens="cls")
    assert norm == pytest.approx(cls_rms, rel=1e-6) and values == pytest.approx([2 * cls_rms] * 2, rel=1e-6)
    sae = make_sae(hook)
    with torch.no_grad():
        sae.W_dec[7] *= 3.0
    rms = float(x.norm(dim=-1).pow(2).mean().sqrt())
    values, _ = absolute_strengths(model, make_basis(sae, None), pixels, [6, 7], 2.0)
    lengths = sae.W_dec[[6, 7]].double().norm(dim=-1)
    assert values == pytest.approx((2 * rms / lengths).tolist(), rel=1e-6)
    # steerability uses it by default and reports both numbers; an absolute strength still works
    result = steerability(model, sae, pixels, WORDS, [6, 7], relative_strength=2.0)
    assert result.table["strength"].tolist() == pytest.approx(values, rel=1e-6)
    assert result.summary["relative_strength"] == 2.0 and result.summary["strength"] is None
    assert "relative strength 2" in result.to_markdown()
    default = steerability(model, sae, pixels, WORDS, [6])
    assert default.summary["relative_strength"] == pytest.approx(150 / 768**0.5)
    absolute = steerability(model, sae, pixels, WORDS, [6], 9.0)
    assert absolute.table["strength"].tolist() == [9.0] and "relative_strength" not in absolute.table
    with pytest.raises(ValueError, match="not both"):
        steerability(model, sae, pixels, WORDS, [6], 9.0, relative_strength=2.0)
