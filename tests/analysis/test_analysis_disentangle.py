"""Disentanglement: feature ranking by hand, suppression = subtracting decoder rows, group metrics, head ablation."""

from __future__ import annotations

import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig
from sae_lens.saes.sae import SAEMetadata
from scipy.stats import mannwhitneyu

from sae_clip_plugin.analysis.disentangle.baselines import (
    cls_text_attention,
    head_ablation_hooks,
    patch_mask_from_boxes,
    patch_mask_from_twins,
    random_features,
    top_heads,
)
from sae_clip_plugin.analysis.disentangle.evaluate import (
    DisentangleConfig,
    objective,
    split_metrics,
    typographic_success,
)
from sae_clip_plugin.analysis.disentangle.forward import ImageForwarder, first_layer
from sae_clip_plugin.analysis.disentangle.select import (
    auroc,
    image_feature_acts,
    mean_difference,
    separation_scores,
    top_k,
)
from sae_clip_plugin.analysis.disentangle.tasks import ImageSplit, disjoint_split
from sae_clip_plugin.analysis.disentangle.text import bar_text, headline
from sae_clip_plugin.analysis.steering.interventions import sae_feature_hook
from sae_clip_plugin.model.hooked_vit import HookedViT
from tests.model.clips import tiny_open_clip

HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def model() -> HookedViT:
    return HookedViT.from_open_clip(tiny_open_clip(layers=2)).eval()


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    return torch.randn(6, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def random_sae(d_in: int, d_sae: int = 32, hook: str = HOOK, seed: int = 0) -> StandardSAE:
    """Random weights with a negative-ish encoder bias, so some features fire and some do not."""
    sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae, metadata=SAEMetadata(hook_name=hook)))
    gen = torch.Generator().manual_seed(seed)
    sae.W_enc.copy_(torch.randn(d_in, d_sae, generator=gen) / d_in**0.5)
    sae.W_dec.copy_(torch.randn(d_sae, d_in, generator=gen) / d_sae**0.5)
    sae.b_enc.copy_(torch.randn(d_sae, generator=gen) * 0.3)
    sae.b_dec.copy_(torch.randn(d_in, generator=gen) * 0.1)
    return sae.eval()


# ------------------------------------------------------------------------------------------------
# ranking


def test_auroc_by_hand_and_against_mann_whitney() -> None:
    # pos (2, 1) vs neg (1, 0): pairs 2>1, 2>0, 1=1 (half), 1>0 -> 3.5 / 4
    assert float(auroc(torch.tensor([[2.0], [1.0]]), torch.tensor([[1.0], [0.0]]))) == pytest.approx(0.875)
    gen = torch.Generator().manual_seed(3)
    pos = torch.randint(0, 4, (23, 5), generator=gen).float()  # many ties, as sparse features have
    neg = torch.randint(0, 3, (17, 5), generator=gen).float()
    ours = auroc(pos, neg)
    for j in range(5):
        u = mannwhitneyu(pos[:, j].numpy(), neg[:, j].numpy(), alternative="two-sided").statistic
        assert float(ours[j]) == pytest.approx(u / (23 * 17))


def test_mean_difference_and_scores_by_hand() -> None:
    acts = torch.tensor(
        [  # f0 fires on text, f1 only on the word "2", f2 on clean images, f3 never
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 3.0, 0.0],
            [2.0, 0.0, 0.0, 0.0],
            [4.0, 5.0, 0.0, 0.0],
        ]
    )
    spurious = torch.tensor([-1, -1, 1, 2])  # -1 = no text (reference); 1, 2 = written words
    torch.testing.assert_close(
        mean_difference(acts[2:], acts[:2]), torch.tensor([3.0, 2.5, -2.0, 0.0], dtype=torch.float64)
    )
    md = separation_scores(acts, spurious, method="mean_diff", reference=-1)
    # word 1 vs clean: (2, 0, -2, 0); word 2 vs clean: (4, 5, -2, 0); best per feature
    torch.testing.assert_close(md, torch.tensor([4.0, 5.0, -2.0, 0.0], dtype=torch.float64))
    au = separation_scores(acts, spurious, method="auroc", reference=-1)
    # f0: 1 vs clean 1.0 (both wins), f1: word 2 vs clean 1.0, f2: 0.0, f3: all ties 0.5 -> minus 0.5
    torch.testing.assert_close(au, torch.tensor([0.5, 0.5, -0.5, 0.0], dtype=torch.float64))
    # no reference (binary attribute): each value against the rest, best of the two directions
    two = separation_scores(acts, torch.tensor([0, 0, 1, 1]), method="mean_diff")
    torch.testing.assert_close(two, torch.tensor([3.0, 2.5, 2.0, 0.0], dtype=torch.float64))
    assert top_k(au, 2) == [0, 1]  # tie broken by the lower index
    assert top_k(md, 2, exclude=[1]) == [0, 3]
    with pytest.raises(ValueError, match="only the value"):
        separation_scores(acts, torch.zeros(4, dtype=torch.long))


def test_image_feature_acts_pool_by_hand(model: HookedViT, pixels: torch.Tensor) -> None:
    sae = random_sae(model.cfg.d_model)
    _, cache = model.run_with_cache(pixels, names_filter=[HOOK])
    f = sae.encode(cache[HOOK])  # [N, tokens, d_sae]
    torch.testing.assert_close(image_feature_acts(model, sae, pixels, tokens="cls"), f[:, 0])
    torch.testing.assert_close(image_feature_acts(model, sae, pixels, tokens="all", batch_size=4), f.mean(1))
    torch.testing.assert_close(
        image_feature_acts(model, sae, pixels, tokens="patches", pool="max"), f[:, 1:].amax(1)
    )


# ------------------------------------------------------------------------------------------------
# suppression


@pytest.mark.parametrize("tokens", ["all", "cls"])
def test_suppression_subtracts_the_features_decoder_contributions(model, pixels, tokens) -> None:
    sae = random_sae(model.cfg.d_model)
    features = [1, 5, 7, 20]

    def by_hand(x: torch.Tensor, hook) -> torch.Tensor:
        f = torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc)  # sae_lens' standard encoder, by hand
        delta = f[..., features] @ sae.W_dec[features]
        if tokens == "cls":
            delta[:, 1:] = 0
        return x - delta

    expected = model.run_with_hooks(pixels, fwd_hooks=[(HOOK, by_hand)])
    hook = sae_feature_hook(sae, features, mode="zero", tokens=tokens)
    torch.testing.assert_close(model.run_with_hooks(pixels, fwd_hooks=[hook]), expected, atol=1e-5, rtol=1e-5)
    # the forwarder restarting from the cached residual stream gives the same embeddings
    fw = ImageForwarder(model, pixels, batch_size=4)
    torch.testing.assert_close(fw.embeds([hook]), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fw.embeds(), model(pixels), atol=1e-5, rtol=1e-5)
    assert first_layer([hook[0]], 2) == 0 and first_layer(["blocks.1.attn.hook_z"], 2) == 1


# ------------------------------------------------------------------------------------------------
# metrics


def test_group_metrics_by_hand() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [1.0, 2.0], [0.0, 5.0]])
    labels = torch.tensor([0, 0, 0, 1, 0])
    groups = torch.tensor([0, 0, 1, 1, 1])
    m = split_metrics(logits, labels, groups, ["clean", "attacked"], "typographic")
    # clean: hit, miss -> 1/2; attacked: hit, hit, miss -> 2/3
    assert m["clean_acc"] == pytest.approx(0.5) and m["attacked_acc"] == pytest.approx(2 / 3)
    assert m["acc[clean]"] == pytest.approx(0.5) and m["acc[attacked]"] == pytest.approx(2 / 3)
    assert m["worst_group_acc"] == pytest.approx(0.5)
    assert m["mean_group_acc"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert m["top1"] == pytest.approx(3 / 5)
    g = split_metrics(logits, labels, torch.tensor([0, 1, 2, 3, 3]), ["a/x", "a/y", "b/x", "b/y"], "groups")
    assert [g[f"acc[{n}]"] for n in ("a/x", "a/y", "b/x", "b/y")] == [1.0, 0.0, 1.0, 0.5]
    assert g["worst_group_acc"] == 0.0 and g["mean_group_acc"] == pytest.approx(0.625)
    assert "attacked_acc" not in g


def test_success_bar_and_objective_by_hand() -> None:
    before = {"clean_acc": 0.90, "attacked_acc": 0.30}  # the attack drops 60 points: half is 30
    assert typographic_success(before, {"clean_acc": 0.88, "attacked_acc": 0.60})  # +30 points, -2 clean
    assert typographic_success(before, {"clean_acc": 0.90, "attacked_acc": 0.50}) is False  # +20 < 30
    assert typographic_success(before, {"clean_acc": 0.85, "attacked_acc": 0.80}) is False  # -5 clean
    small_drop = {"clean_acc": 0.90, "attacked_acc": 0.80}  # drop 10: half of it is enough
    assert typographic_success(small_drop, {"clean_acc": 0.90, "attacked_acc": 0.85})
    no_drop = {"clean_acc": 0.20, "attacked_acc": 0.23}  # no attack effect: nothing to recover
    assert typographic_success(no_drop, {"clean_acc": 0.20, "attacked_acc": 0.22}) is False
    uncertain = {"clean_acc": 0.90, "attacked_acc": 0.70, "delta_attacked_acc_lo": -0.01}
    assert typographic_success(before, uncertain) is False  # the gain's interval reaches 0
    keep = objective({"clean_acc": 0.89, "attacked_acc": 0.5}, before, "typographic", 0.03)
    lose = objective({"clean_acc": 0.80, "attacked_acc": 0.9}, before, "typographic", 0.03)
    assert keep > lose  # a setting within the clean budget beats a better-attacked one outside it


def test_default_clean_budget_is_two_points_and_the_bar_prints_it() -> None:
    before = {"clean_acc": 0.90, "attacked_acc": 0.30}
    assert typographic_success(before, {"clean_acc": 0.88, "attacked_acc": 0.60})  # -2 clean: within
    assert not typographic_success(before, {"clean_acc": 0.875, "attacked_acc": 0.60})  # -2.5: outside
    assert DisentangleConfig().max_clean_drop == 0.02
    assert "losing at most 2 points of clean accuracy" in bar_text("typographic", 0.02)
    assert "losing at most 5 points of clean accuracy" in bar_text("typographic", 0.05)


def test_the_headline_is_one_short_sentence_with_the_verdicts() -> None:
    summary = {
        "none": {"clean_acc": 0.9, "attacked_acc": 0.3},
        "sae": {"layer": 2, "k": 64, "clean_acc": 0.89, "attacked_acc": 0.7, "delta_attacked_acc": 0.4,
                "delta_attacked_acc_lo": 0.35, "delta_attacked_acc_hi": 0.45, "vs_random": 0.38,
                "vs_random_lo": 0.33, "vs_random_hi": 0.43, "meets_bar": True},
        "random": {"layer": 2, "k": 64, "clean_acc": 0.9, "attacked_acc": 0.32, "meets_bar": False},
    }  # fmt: skip
    text = headline(summary, "typographic")
    assert text.startswith(
        "SAE suppression (layer 2, k=64) meets the bar: attacked 30.0% -> 70.0% (+40.0 [+35.0, +45.0]"
    )
    assert "+38.0 [+33.0, +43.0] vs random" in text and text.endswith("random features: does not.")
    assert len(text.split()) <= 35


# ------------------------------------------------------------------------------------------------
# baselines


def test_head_ablation_zeroes_exactly_the_chosen_heads_at_cls(model, pixels) -> None:
    layer, heads = 1, [0, 2]
    name = f"blocks.{layer}.attn.hook_z"
    seen: dict[str, torch.Tensor] = {}

    def grab(key: str):
        def fn(t, hook):
            seen[key] = t.detach().clone()

        return fn

    model.run_with_hooks(
        pixels, fwd_hooks=[(name, grab("z")), (f"blocks.{layer}.hook_attn_out", grab("out"))]
    )
    hooks = head_ablation_hooks([(layer, h) for h in heads])
    assert [h[0] for h in hooks] == [name]
    model.run_with_hooks(
        pixels, fwd_hooks=[*hooks, (name, grab("z_abl")), (f"blocks.{layer}.hook_attn_out", grab("out_abl"))]
    )
    z, z_abl = seen["z"], seen["z_abl"]
    expected = z.clone()
    expected[:, 0, heads] = 0
    torch.testing.assert_close(z_abl, expected, rtol=0, atol=0)
    # the CLS output loses exactly those heads' z @ W_O; other tokens are untouched
    w_o = model.blocks[layer].attn.W_O  # [head, d_head, d_model]
    removed = torch.einsum("bhd,hdm->bm", z[:, 0, heads], w_o[heads])
    torch.testing.assert_close(seen["out_abl"][:, 0], seen["out"][:, 0] - removed, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(seen["out_abl"][:, 1:], seen["out"][:, 1:])


def test_text_patch_masks_by_hand() -> None:
    # 32 px image, 16 px patches: grid 2x2; a box over the top-right patch and a sliver of the bottom-right
    m = patch_mask_from_boxes([(18, 2, 30, 18), None], image_size=32, patch_size=16, min_overlap=0.1)
    assert m.tolist() == [[False, True, False, False], [False, False, False, False]]
    clean = torch.zeros(1, 3, 32, 32)
    attacked = clean.clone()
    attacked[0, :, 20:24, 2:6] = 1.0  # bottom-left patch: 16 of 256 pixels changed by 1 -> mean 0.0625
    assert patch_mask_from_twins(attacked, clean, 16, threshold=0.05).tolist() == [
        [False, False, True, False]
    ]


def test_cls_text_attention_and_top_heads(model, pixels) -> None:
    mask = torch.zeros(6, model.cfg.n_patches, dtype=torch.bool)
    mask[:, [0, 3]] = True
    scores = cls_text_attention(model, pixels, mask, batch_size=4)
    _, cache = model.run_with_cache(pixels, names_filter=lambda n: n.endswith("hook_pattern"))
    for layer in range(model.cfg.n_layers):
        pat = cache[f"blocks.{layer}.attn.hook_pattern"]  # [b, head, q, k]
        by_hand = (pat[:, :, 0, 1] + pat[:, :, 0, 4]).mean(0)
        torch.testing.assert_close(scores[layer].float(), by_hand, atol=1e-6, rtol=1e-5)
    assert cls_text_attention(model, pixels, mask, clean=pixels).abs().max() < 1e-12
    ranked = top_heads(torch.tensor([[0.1, 0.9], [0.5, 0.2]]), 2)
    assert ranked == [(0, 1), (1, 0)]
    assert top_heads(torch.tensor([[0.1, 0.9], [0.5, 0.2]]), 1, layers=[1]) == [(1, 0)]


def test_random_features_and_disjoint_split() -> None:
    a = random_features(100, 5, seed=1, candidates=range(10, 40))
    assert a == random_features(100, 5, seed=1, candidates=range(10, 40)) and len(set(a)) == 5
    assert all(10 <= f < 40 for f in a) and a != random_features(100, 5, seed=2, candidates=range(10, 40))
    with pytest.raises(ValueError, match="cannot draw"):
        random_features(10, 5, 0, candidates=[1, 2])
    groups = torch.tensor([0, 1] * 20)
    pairs = torch.arange(40) // 2  # twins: a clean and an attacked image per pair
    sel, ev = disjoint_split(groups, 0.5, seed=0, pair_ids=pairs)
    assert not set(sel) & set(ev) and sorted(sel + ev) == list(range(40))
    assert not {int(pairs[i]) for i in sel} & {int(pairs[i]) for i in ev}  # no pair on both sides
    assert len(sel) == 20


def test_image_split_twins() -> None:
    split = ImageSplit(
        torch.zeros(4, 3, 2, 2), torch.zeros(4, dtype=torch.long), torch.tensor([0, 1, 1, 0]),
        torch.tensor([-1, 2, 3, -1]), pair_ids=torch.tensor([7, 7, 9, 9]),
    )  # fmt: skip
    att, cln = split.twins()
    assert att.tolist() == [1, 2] and cln.tolist() == [0, 3]


# ------------------------------------------------------------------------------------------------
# the whole run on a tiny synthetic task, and the CLI outputs


def _synthetic_split(model: HookedViT, n_pairs: int, seed: int) -> ImageSplit:
    """Clean/attacked twins: the attacked image has a bright square over patch 0 (the 'word')."""
    gen = torch.Generator().manual_seed(seed)
    clean = torch.randn(n_pairs, 3, 64, 64, generator=gen)
    attacked = clean.clone()
    attacked[:, :, :16, :16] = 3.0
    labels = torch.randint(0, 3, (n_pairs,), generator=gen)
    text = torch.zeros(2 * n_pairs, model.cfg.n_patches, dtype=torch.bool)
    text[1::2, 0] = True
    return ImageSplit(
        torch.stack([clean, attacked], 1).reshape(-1, 3, 64, 64), labels.repeat_interleave(2),
        torch.tensor([0, 1] * n_pairs), torch.tensor([-1, 1] * n_pairs), torch.arange(n_pairs).repeat_interleave(2),
        text,
    )  # fmt: skip


def test_run_disentangle_end_to_end_without_leakage(model, tmp_path) -> None:
    from sae_clip_plugin.analysis.disentangle.evaluate import DisentangleConfig, run_disentangle
    from sae_clip_plugin.analysis.disentangle.tasks import SpuriousTask
    from sae_clip_plugin.cli.disentangle import register_commands
    from sae_clip_plugin.viz.disentangle_report import summary_line, write_disentangle_outputs

    saes = [random_sae(model.cfg.d_model, hook=f"blocks.{L}.hook_resid_post", seed=L) for L in range(2)]
    cfg = DisentangleConfig(ks=(2, 4), n_random=2, n_heads=(1, 2), batch_size=16)

    def task(eval_seed: int) -> SpuriousTask:
        return SpuriousTask("tiny-typo", "typographic", ["cat", "dog", "car"], ["a photo of a {}."],
                            ["clean", "attacked"], _synthetic_split(model, 6, 0), _synthetic_split(model, 5, eval_seed),
                            reference=-1)  # fmt: skip

    result = run_disentangle(model, saes, task(1), cfg, progress=False)
    conditions = {(r["split"], r["condition"]) for r in result.rows}
    assert conditions == {("select", "none"), ("eval", "none"), ("select", "sae"), ("eval", "sae"),
                          ("eval", "random"), ("select", "heads"), ("eval", "heads")}  # fmt: skip
    assert (
        len([r for r in result.rows if r["condition"] == "sae" and r["split"] == "eval"]) == 4
    )  # 2 layers x 2 k
    assert result.best["sae"]["layer"] in (0, 1) and result.best["sae"]["k"] in (2, 4)
    assert set(result.summary) >= {"none", "sae", "random", "heads"}
    none = next(r for r in result.rows if r["condition"] == "none" and r["split"] == "eval")
    assert none["delta_attacked_acc"] == 0.0 and 0.0 <= none["attacked_acc"] <= 1.0
    # every accuracy and difference carries its 95% interval, around the value
    for row in result.rows:
        for key in ("clean_acc", "attacked_acc", "worst_group_acc") + (
            ("delta_attacked_acc",) if row is not none else ()
        ):
            if row["condition"] != "none" or not key.startswith("delta"):
                assert row[f"{key}_lo"] - 1e-9 <= row[key] <= row[f"{key}_hi"] + 1e-9, (row["condition"], key)
    sae_eval = result.summary["sae"]
    assert sae_eval["vs_random_lo"] <= sae_eval["vs_random"] <= sae_eval["vs_random_hi"]
    assert sae_eval["beats_random"] == (sae_eval["vs_random_lo"] > 0)
    # another evaluation split changes the numbers but no choice (features, layer, k, heads)
    other = run_disentangle(model, saes, task(2), cfg, progress=False)
    assert other.best == result.best
    line, best = summary_line(result), result.summary["sae"]
    assert line.startswith("tiny-typo (clean % / attacked %): none: ")
    assert line.endswith(f"SAE suppression {'meets' if best['meets_bar'] else 'does not meet'} the bar")
    assert (
        f"sae L{best['layer']} k={best['k']}: {100 * best['clean_acc']:.1f} / {100 * best['attacked_acc']:.1f}"
        in line
    )
    too_many = DisentangleConfig(ks=(2, saes[0].cfg.d_sae + 1), n_random=1, n_heads=(1,), batch_size=16)
    with pytest.raises(ValueError, match=r"k=\d+ features to suppress exceeds the dictionary size"):
        run_disentangle(model, saes, task(1), too_many, progress=False)

    import argparse

    parser = argparse.ArgumentParser()
    register_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["disentangle", "--sae", "x", "--sae", "R:id", "--task", "toy-typographic", "--out", "o",
                              "--n-suppressed", "3"])  # fmt: skip
    assert (
        args.n_suppressed == [3]
        and args.sae == ["x", "R:id"]
        and args.device == "auto"
        and callable(args.func)
    )
    # the previous spelling --k still works for one release (it was easy to mistake for TopK's k)
    old = parser.parse_args(
        ["disentangle", "--sae", "x", "--task", "toy-typographic", "--out", "o", "--k", "3", "5"]
    )
    assert old.n_suppressed == [3, 5]
    written = write_disentangle_outputs([(result, task(1))], tmp_path, "sae-clip disentangle ...")
    assert {p.name for p in written} == {"disentangle.csv", "disentangle.md", "summary.json",
                                         "accuracy_by_layer_tiny-typo.png"}  # fmt: skip
    md = (tmp_path / "disentangle.md").read_text()
    assert "SAE features suppressed" in md and "random features" in md and "head ablation" in md
    assert "95% intervals" in md and " [" in md and "| clean % | attacked % |" in md
    assert md.count("Typographic bar:") == 1 and "**SAE suppression (layer " in md  # the bar once, a headline
    assert (tmp_path / "accuracy_by_layer_tiny-typo.png").read_bytes()[:4] == b"\x89PNG"


@torch.no_grad()
def test_steering_scores_by_hand(model, pixels) -> None:
    import torch.nn.functional as F

    from sae_clip_plugin.analysis.disentangle.select import steering_scores

    sae = random_sae(model.cfg.d_model)
    gen = torch.Generator().manual_seed(5)
    class_w = F.normalize(torch.randn(model.cfg.d_embed, 3, generator=gen), dim=0)
    spur_w = F.normalize(torch.randn(model.cfg.d_embed, 2, generator=gen), dim=0)
    got = steering_scores(model, sae, pixels, spur_w, class_w, [3, 9], values=[4.0, 2.0], batch_size=4)
    scale = float(model.logit_scale)

    def mass(embeds: torch.Tensor) -> torch.Tensor:
        logits = scale * F.normalize(embeds, dim=-1) @ torch.cat([class_w, spur_w], 1)
        return logits.softmax(-1)[:, 3:].sum(-1)

    clean = mass(model(pixels))
    for score, (feature, value) in zip(got, [(3, 4.0), (9, 2.0)], strict=True):

        def clamp(x, hook, feature=feature, value=value):  # x + decode(f') - decode(f), by hand
            f = torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc)
            return x + (value - f[..., feature : feature + 1]) * sae.W_dec[feature]

        steered = mass(model.run_with_hooks(pixels, fwd_hooks=[(HOOK, clamp)]))
        assert float(score) == pytest.approx(float((steered - clean).mean()), abs=1e-5)


def test_task_from_a_generated_typographic_set(model) -> None:
    from PIL import Image

    from sae_clip_plugin.analysis.disentangle.tasks import task_from_dataset
    from sae_clip_plugin.data import TypographicConfig, make_typographic_dataset

    gen = torch.Generator().manual_seed(0)
    images = [
        (Image.fromarray((torch.rand(64, 64, 3, generator=gen) * 60 + 100).byte().numpy()), i % 3)
        for i in range(12)
    ]
    ds = make_typographic_dataset(
        images, TypographicConfig(size=64, fonts=("default",), seed=1), classnames=["cat", "dog", "car"]
    )
    task = task_from_dataset(model, ds, kind="typographic", fraction=0.5, seed=0)
    for split in (task.select, task.evaluate):
        att, cln = split.twins()
        assert (
            len(att) == len(split) // 2 and (split.groups[att] == 1).all() and (split.groups[cln] == 0).all()
        )
        assert (split.spurious[cln] == -1).all() and (split.spurious[att] >= 0).all()
        assert split.text_patches[att].any(1).all() and not split.text_patches[cln].any()
    assert task.reference == -1 and len(task.select) + len(task.evaluate) == 24
    # no image of the selection split (nor its twin) is in the evaluation split
    assert not {tuple(p.flatten()[:50].tolist()) for p in task.select.pixels} & {
        tuple(p.flatten()[:50].tolist()) for p in task.evaluate.pixels
    }


def test_token_selections_default_to_the_tokens_each_sae_was_trained_on(model) -> None:
    from sae_clip_plugin.analysis.disentangle.evaluate import DisentangleConfig, run_disentangle
    from sae_clip_plugin.analysis.disentangle.tasks import SpuriousTask

    hook = "blocks.1.hook_resid_post"
    cls_sae = random_sae(model.cfg.d_model, hook=hook, seed=5)
    cls_sae.cfg.metadata.token_selection, cls_sae.cfg.metadata.context_size = "cls", 1
    plain = random_sae(model.cfg.d_model, seed=6)  # no token metadata: all tokens
    cfg = DisentangleConfig(ks=(2,), n_random=1, n_heads=(), batch_size=16)
    assert cfg.tokens_for(model, cls_sae, hook) == ("cls", "cls")
    assert cfg.tokens_for(model, plain, HOOK) == ("all", "all")
    explicit = DisentangleConfig(ks=(2,), n_random=1, n_heads=(), batch_size=16, select_tokens="patches")
    assert explicit.tokens_for(model, cls_sae, hook) == ("patches", "cls")
    with pytest.raises(ValueError, match="suppress_tokens must be one of"):
        DisentangleConfig(suppress_tokens="text")

    task = SpuriousTask("tiny-typo", "typographic", ["cat", "dog", "car"], ["a photo of a {}."],
                        ["clean", "attacked"], _synthetic_split(model, 6, 0), _synthetic_split(model, 5, 1),
                        reference=-1)  # fmt: skip
    default = run_disentangle(model, [cls_sae], task, cfg, progress=False)
    by_hand = DisentangleConfig(ks=(2,), n_random=1, n_heads=(), batch_size=16, select_tokens="cls",
                                suppress_tokens="cls")  # fmt: skip
    assert run_disentangle(model, [cls_sae], task, by_hand, progress=False).rows == default.rows
    everywhere = DisentangleConfig(ks=(2,), n_random=1, n_heads=(), batch_size=16, select_tokens="all",
                                   suppress_tokens="all")  # fmt: skip
    assert run_disentangle(model, [cls_sae], task, everywhere, progress=False).rows != default.rows
