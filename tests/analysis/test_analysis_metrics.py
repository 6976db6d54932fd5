"""Every SAE metric against a hand computation: tiny hand-written batches, and SAEs whose output is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sae_clip_plugin.analysis.metrics.evaluate import evaluate_sae, hook_mean
from sae_clip_plugin.analysis.metrics.stats import (
    DownstreamStats,
    ReconstructionStats,
    SparsityStats,
    recovered,
)
from sae_clip_plugin.model.sae_splice import sae_token_positions
from tests.analysis.test_analysis_metrics_support import (
    D_MODEL,
    N_TOKENS,
    SIDE,
    constant_sae,
    hook_acts,
    identity_sae,
    images,
    tiny_model,
    topk_identity_sae,
    unit_columns,
)

HOOK0, HOOK1 = "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"
N_CLASSES = 3


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def pixels():
    return images(6)


@pytest.fixture(scope="module")
def labels():
    return torch.tensor([0, 1, 2, 0, 1, 2])


@pytest.fixture(scope="module")
def weights(model):
    return unit_columns(model.cfg.d_embed, N_CLASSES)


# ------------------------------------------------------------------------------------------------
# the accumulators, on numbers small enough to do by hand


def test_reconstruction_stats_by_hand() -> None:
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    x_hat = torch.tensor([[1.0, 0.0], [0.0, 0.0], [2.0, 2.0]])
    stats = ReconstructionStats(2)
    stats.add(x[:2], x_hat[:2])  # streamed in two batches
    stats.add(x[2:], x_hat[2:])
    r = stats.result("all")
    # mean = (2/3, 2/3); sum ||x - mean||^2 = 5/9 + 5/9 + 2/9 = 4/3; sse = 0 + 1 + 2 = 3
    assert r["fvu_all"] == pytest.approx(3 / (4 / 3))
    assert r["explained_variance_all"] == pytest.approx(1 - 9 / 4)
    assert r["mse_all"] == pytest.approx(3 / 3)  # summed over d_in, mean over tokens
    assert r["cos_sim_all"] == pytest.approx((1 + 0 + 1) / 3)  # a zero reconstruction has cosine 0
    assert r["l2_ratio_all"] == pytest.approx((1 + 0 + 2) / 3)
    empty = ReconstructionStats(2).result("cls")
    assert all(math.isnan(v) for v in empty.values())


def _sparsity_case() -> torch.Tensor:
    """2 images x 5 tokens (CLS + 2x2 patches) x 4 features."""
    img0 = [[1, 0, 0, 0], [2, 0, 3, 0], [0, 0, 0, 0], [1, 1, 1, 0], [0, 0, -2, 0]]
    img1 = [[0, 4, 0, 0], [1, 0, 0, 0], [0, 0, 5, 0], [1, 0, 0, 0], [0, 0, 1, 0]]
    return torch.tensor([img0, img1], dtype=torch.float32)


def test_sparsity_stats_by_hand() -> None:
    feats = _sparsity_case()
    stats = SparsityStats(positions=[0, 1, 2, 3, 4], n_tokens=5, d_sae=4)
    stats.add(feats[:1])
    stats.add(feats[1:])
    r = stats.result()
    # L0 per token: image 0 [1, 2, 0, 3, 1], image 1 [1, 1, 1, 1, 1]
    assert r["l0_cls"] == pytest.approx(1.0)
    assert r["l0_patches"] == pytest.approx((2 + 0 + 3 + 1 + 1 + 1 + 1 + 1) / 8)
    assert r["l0_all"] == pytest.approx(12 / 10)
    # L1 per token: image 0 [1, 5, 0, 3, 2], image 1 [4, 1, 5, 1, 1] (|-2| counts 2)
    assert r["l1_cls"] == pytest.approx(2.5)
    assert r["l1_patches"] == pytest.approx(18 / 8)
    assert r["l1_all"] == pytest.approx(23 / 10)
    np.testing.assert_allclose(r["l0_by_position"], [1, 1.5, 0.5, 2, 1])
    np.testing.assert_allclose(r["l0_patch_grid"], [[1.5, 0.5], [2, 1]])
    # firing counts over 10 tokens: f0 5, f1 2, f2 5, f3 0
    np.testing.assert_allclose(r["feature_density"], [0.5, 0.2, 0.5, 0.0])
    assert r["dead_fraction"] == pytest.approx(0.25)
    assert r["dense_fraction_10"] == pytest.approx(0.75)
    assert r["dense_fraction_50"] == 0.0  # "above 50%" is strict
    assert (r["dead_window_images"], r["dead_window_tokens"]) == (2, 10)


def test_sparsity_stats_on_patch_positions_only() -> None:
    feats = _sparsity_case()[:, 1:]
    stats = SparsityStats(positions=[1, 2, 3, 4], n_tokens=5, d_sae=4)
    stats.add(feats)
    r = stats.result()
    assert math.isnan(r["l0_cls"]) and math.isnan(r["l1_cls"])
    assert r["l0_patches"] == r["l0_all"] == pytest.approx(10 / 8)
    assert math.isnan(r["l0_by_position"][0])
    np.testing.assert_allclose(r["feature_density"], [4 / 8, 1 / 8, 5 / 8, 0])
    assert r["dense_fraction_50"] == pytest.approx(0.25)  # f2 fires on 62.5% of patch tokens


def test_recovered_by_hand() -> None:
    assert recovered(ablated=3.0, spliced=1.5, clean=1.0) == pytest.approx(0.75)
    assert recovered(ablated=0.2, spliced=0.6, clean=0.7, higher_is_better=True) == pytest.approx(
        0.8
    )  # accuracy
    assert math.isnan(recovered(1.0, 0.5, 1.0))  # ablating changes nothing: undefined
    # ablating made things better than clean (the -1.368 a user saw): no loss to recover, so no number
    assert math.isnan(recovered(ablated=1.0, spliced=1.5, clean=1.2))
    assert math.isnan(recovered(ablated=0.8, spliced=0.6, clean=0.7, higher_is_better=True))


def test_downstream_stats_by_hand() -> None:
    clean = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    embeds = {"clean": clean, "spliced": torch.tensor([[1.0, 1.0], [0.0, 2.0]])}
    embeds |= {"spliced_err": clean, "zero_abl": torch.tensor([[0.0, 1.0], [1.0, 0.0]]), "mean_abl": clean}
    logits = {k: torch.log(torch.tensor([[3.0, 1.0], [1.0, 1.0]])) for k in embeds}
    logits["spliced"] = torch.zeros(2, 2)
    stats = DownstreamStats()
    stats.add(embeds, logits, torch.tensor([0, 1]))
    r = stats.result()
    assert r["embed_cos_spliced"] == pytest.approx((1 / math.sqrt(2) + 1) / 2)
    assert r["embed_cos_zero_abl"] == pytest.approx(0.0)
    # clean p = [(.75, .25), (.5, .5)]; spliced q uniform: KL = (.75 ln 1.5 + .25 ln .5 + 0) / 2
    assert r["kl_spliced"] == pytest.approx((0.75 * math.log(1.5) + 0.25 * math.log(0.5)) / 2)
    assert r["kl_spliced_err"] == pytest.approx(0.0)
    assert r["ce_clean"] == pytest.approx((-math.log(0.75) - math.log(0.5)) / 2)
    assert r["ce_spliced"] == pytest.approx(math.log(2))
    # argmax of a tie is the first class, so image 1 (label 1) is missed by both
    assert r["top1_clean"] == pytest.approx(0.5) and r["top1_spliced"] == pytest.approx(0.5)
    assert math.isnan(r["top1_recovered_zero"])  # zero_abl has the clean logits: denominator 0


# ------------------------------------------------------------------------------------------------
# evaluate_sae on a tiny CLIP, against numbers computed from the hook's raw activations


def _group_slices() -> dict[str, slice]:
    return {"all": slice(0, N_TOKENS), "cls": slice(0, 1), "patches": slice(1, N_TOKENS)}


def _hand_recon(x: np.ndarray, x_hat: np.ndarray) -> dict[str, float]:
    """Textbook reconstruction metrics of token rows [n, d]."""
    sse = ((x - x_hat) ** 2).sum()
    total = ((x - x.mean(0)) ** 2).sum()
    nx, nh = np.linalg.norm(x, axis=1), np.linalg.norm(x_hat, axis=1)
    return {
        "fvu": sse / total,
        "explained_variance": 1 - sse / total,
        "mse": sse / len(x),
        "cos_sim": float(np.mean((x * x_hat).sum(1) / (nx * nh))),
        "l2_ratio": float(np.mean(nh / nx)),
    }


def _check_recon(result: dict, x: np.ndarray, x_hat: np.ndarray, rtol: float = 1e-5) -> None:
    for group, sl in _group_slices().items():
        xs, hs = x[:, sl].reshape(-1, x.shape[-1]), x_hat[:, sl].reshape(-1, x.shape[-1])
        for key, value in _hand_recon(xs, hs).items():
            assert result[f"{key}_{group}"] == pytest.approx(value, rel=rtol, abs=1e-6), (key, group)


def _hand_downstream(model, pixels, labels, weights, hook, replace) -> dict[str, np.ndarray]:
    """Embeddings of each variant through plain hooks (no SAE splicing), and their logits."""

    def run(fn):
        if fn is None:
            return model(pixels).double().numpy()
        return model.run_with_hooks(pixels, fwd_hooks=[(hook, lambda t, hook: fn(t))]).double().numpy()

    embeds = {k: run(fn) for k, fn in replace.items()}
    scale = float(model.logit_scale)
    w = weights.double().numpy()
    return {k: scale * (e / np.linalg.norm(e, axis=1, keepdims=True)) @ w for k, e in embeds.items()} | {
        f"embed_{k}": e for k, e in embeds.items()
    }


def _ce(logits: np.ndarray, labels: np.ndarray) -> float:
    m = logits.max(1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(1, keepdims=True)))[:, 0]
    return float(np.mean(lse - logits[np.arange(len(labels)), labels]))


def _kl(a: np.ndarray, b: np.ndarray) -> float:
    def logp(z):
        z = z - z.max(1, keepdims=True)
        return z - np.log(np.exp(z).sum(1, keepdims=True))

    return float(np.mean((np.exp(logp(a)) * (logp(a) - logp(b))).sum(1)))


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


@torch.no_grad()
def test_identity_sae_reconstructs_exactly(model, pixels, labels, weights) -> None:
    sae = identity_sae(HOOK0, extra=True)
    r = evaluate_sae(model, sae, (pixels, labels), weights=weights, batch_size=4)
    x = hook_acts(model, pixels, HOOK0)
    _check_recon(r, x, x)
    for group in ("all", "cls", "patches"):
        assert r[f"fvu_{group}"] == pytest.approx(0.0, abs=1e-10)
        assert r[f"explained_variance_{group}"] == pytest.approx(1.0)
    # sparsity: features are relu(x_i), relu(-x_i) and one always-on feature
    nonzero = (x != 0).sum(-1) + 1  # [images, tokens]
    l1 = np.abs(x).sum(-1) + 1.0
    for group, sl in _group_slices().items():
        assert r[f"l0_{group}"] == pytest.approx(nonzero[:, sl].mean())
        assert r[f"l1_{group}"] == pytest.approx(l1[:, sl].mean(), rel=1e-5)
    np.testing.assert_allclose(r["l0_by_position"], nonzero.mean(0))
    np.testing.assert_allclose(r["l0_patch_grid"], nonzero.mean(0)[1:].reshape(SIDE, SIDE))
    flat = x.reshape(-1, D_MODEL)
    density = np.concatenate([(flat > 0).mean(0), (flat < 0).mean(0), [1.0, 0.0]])
    np.testing.assert_allclose(r["feature_density"], density)
    assert r["dead_fraction"] == pytest.approx((density == 0).mean())
    assert r["dense_fraction_10"] == pytest.approx((density > 0.1).mean())
    assert r["dense_fraction_50"] == pytest.approx((density > 0.5).mean())
    assert (r["dead_window_images"], r["dead_window_tokens"], r["n_images"]) == (6, 6 * N_TOKENS, 6)
    # downstream: the spliced model is the clean model
    assert r["top1_spliced"] == r["top1_clean"]
    assert r["ce_spliced"] == pytest.approx(r["ce_clean"], rel=1e-5)
    assert r["kl_spliced"] == pytest.approx(0.0, abs=1e-8)
    assert r["embed_cos_spliced"] == pytest.approx(1.0)
    if r["ce_mean_abl"] > r["ce_clean"]:  # ablating hurts: the identity splice recovers all of it
        assert r["ce_recovered_mean"] == pytest.approx(1.0, abs=1e-4)
    else:  # this random model does as well with the hook mean-ablated: nothing to recover, no number
        assert math.isnan(r["ce_recovered_mean"])


@torch.no_grad()
def test_scaled_sae_against_hand_formulas(model, pixels, labels, weights) -> None:
    """x_hat = x / 2 (cos 1, L2 ratio 1/2, sse = sum ||x||^2 / 4); downstream vs plain-hook references."""
    sae = identity_sae(HOOK0, scale=0.5)
    r = evaluate_sae(model, sae, (pixels, labels), weights=weights, batch_size=4)
    x = hook_acts(model, pixels, HOOK0)
    _check_recon(r, x, x / 2)
    patches = x[:, 1:].reshape(-1, D_MODEL)
    by_hand = 0.25 * (patches**2).sum() / ((patches - patches.mean(0)) ** 2).sum()
    assert r["fvu_patches"] == pytest.approx(by_hand, rel=1e-6)
    assert r["l2_ratio_all"] == pytest.approx(0.5) and r["cos_sim_all"] == pytest.approx(1.0)

    mean = torch.from_numpy(x.mean(0)).float()  # per-position mean over the images
    ref = _hand_downstream(
        model,
        pixels,
        labels,
        weights,
        HOOK0,
        {
            "clean": None,
            "spliced": lambda t: t / 2,
            "zero_abl": torch.zeros_like,
            "mean_abl": lambda t: mean.expand_as(t).clone(),
        },
    )
    y = labels.numpy()
    for variant in ("clean", "spliced", "zero_abl", "mean_abl"):
        assert r[f"top1_{variant}"] == pytest.approx(float((ref[variant].argmax(1) == y).mean()))
        assert r[f"ce_{variant}"] == pytest.approx(_ce(ref[variant], y), rel=1e-4)
    assert r["ce_spliced_err"] == pytest.approx(_ce(ref["clean"], y), rel=1e-4)
    for variant in ("spliced", "zero_abl", "mean_abl"):
        assert r[f"kl_{variant}"] == pytest.approx(_kl(ref["clean"], ref[variant]), rel=1e-3, abs=1e-7)
        assert r[f"embed_cos_{variant}"] == pytest.approx(
            _cos(ref["embed_clean"], ref[f"embed_{variant}"]), rel=1e-5
        )
    assert r["kl_spliced_err"] == pytest.approx(0.0, abs=1e-8)
    assert r["embed_cos_spliced_err"] == pytest.approx(1.0)
    ce = {v: _ce(ref[v], y) for v in ("clean", "spliced", "zero_abl", "mean_abl")}
    for abl in ("zero", "mean"):
        if ce[f"{abl}_abl"] > ce["clean"]:
            expected = (ce[f"{abl}_abl"] - ce["spliced"]) / (ce[f"{abl}_abl"] - ce["clean"])
            assert r[f"ce_recovered_{abl}"] == pytest.approx(expected, rel=1e-3)
        else:  # ablation does not hurt CE on this random model: the recovered fraction is undefined
            assert math.isnan(r[f"ce_recovered_{abl}"])
    assert r["logit_scale"] == pytest.approx(float(model.logit_scale)) and r["n_classes"] == N_CLASSES


@torch.no_grad()
def test_layer_norm_sae_is_measured_in_model_units(model, pixels) -> None:
    """sae_lens' layer_norm SAEs normalise each token; x_hat = mu + c (x - mu) std / (std + 1e-5)."""
    sae = identity_sae(HOOK1, scale=0.5, normalize="layer_norm")
    r = evaluate_sae(model, sae, pixels, downstream=False, batch_size=4)
    x = hook_acts(model, pixels, HOOK1)
    mu, std = x.mean(-1, keepdims=True), x.std(-1, ddof=1, keepdims=True)
    _check_recon(r, x, mu + 0.5 * (x - mu) * std / (std + 1e-5), rtol=1e-4)


@torch.no_grad()
def test_topk_sae_keeps_k_largest(model, pixels) -> None:
    k = 5
    r = evaluate_sae(model, topk_identity_sae(k, HOOK1), pixels, downstream=False, batch_size=4)
    x = hook_acts(model, pixels, HOOK1)
    order = np.argsort(-np.abs(x), axis=-1)
    keep = np.zeros_like(x, dtype=bool)
    np.put_along_axis(keep, order[..., :k], True, axis=-1)
    _check_recon(r, x, np.where(keep, x, 0.0), rtol=1e-4)
    assert r["l0_all"] == r["l0_cls"] == r["l0_patches"] == k
    np.testing.assert_allclose(r["l0_by_position"], np.full(N_TOKENS, k))
    assert r["architecture"] == "topk" and r["k"] == k and r["layer"] == 1
    assert "top1_clean" not in r


@torch.no_grad()
def test_cls_only_sae_that_outputs_the_mean(model, pixels, labels, weights) -> None:
    """A CLS SAE whose output is the CLS mean: FVU 1 exactly, and splicing it is mean-ablation."""
    x = hook_acts(model, pixels, HOOK0)
    sae = constant_sae(torch.from_numpy(x[:, 0].mean(0)).float(), HOOK0, "cls")
    assert sae_token_positions(sae, N_TOKENS) == [0]
    r = evaluate_sae(model, sae, (pixels, labels), weights=weights, batch_size=4)
    assert r["fvu_cls"] == pytest.approx(1.0, rel=1e-5) and r["fvu_all"] == pytest.approx(1.0, rel=1e-5)
    assert r["explained_variance_cls"] == pytest.approx(0.0, abs=1e-5)
    assert math.isnan(r["fvu_patches"]) and math.isnan(r["l0_patches"])
    assert r["l0_cls"] == 0 and r["dead_fraction"] == 1.0
    assert np.isnan(r["l0_by_position"][1:]).all() and r["l0_by_position"][0] == 0
    assert r["top1_spliced"] == r["top1_mean_abl"]
    assert r["ce_spliced"] == pytest.approx(r["ce_mean_abl"], rel=1e-5)
    assert r["ce_recovered_mean"] == pytest.approx(0.0, abs=1e-4)


@torch.no_grad()
def test_patch_only_sae_and_streaming(model, pixels) -> None:
    sae = identity_sae(HOOK1, tokens="patches", scale=0.5)
    r1 = evaluate_sae(model, sae, pixels, batch_size=1, downstream=False)
    r4 = evaluate_sae(model, sae, pixels, batch_size=4, downstream=False)
    x = hook_acts(model, pixels, HOOK1)
    patches = x[:, 1:].reshape(-1, D_MODEL)
    assert r1["fvu_all"] == pytest.approx(
        0.25 * (patches**2).sum() / ((patches - patches.mean(0)) ** 2).sum(), rel=1e-6
    )
    assert math.isnan(r1["fvu_cls"]) and math.isnan(r1["l0_cls"])
    for key, value in r1.items():
        if isinstance(value, float):
            assert r4[key] == pytest.approx(value, rel=1e-9, nan_ok=True), key
    cut = evaluate_sae(model, sae, pixels, batch_size=4, downstream=False, max_images=3)
    assert cut["n_images"] == 3
    xs = x[:3, 1:].reshape(-1, D_MODEL)
    assert cut["fvu_all"] == pytest.approx(0.25 * (xs**2).sum() / ((xs - xs.mean(0)) ** 2).sum(), rel=1e-6)


@torch.no_grad()
def test_labels_and_classifier_are_optional(model, pixels, labels, weights) -> None:
    sae = identity_sae(HOOK0, scale=0.5)
    pixels, labels = pixels[:3], labels[:3]
    no_labels = evaluate_sae(model, sae, pixels, weights=weights)
    given = evaluate_sae(model, sae, pixels, weights=weights, labels=labels.tolist())
    from_source = evaluate_sae(model, sae, (pixels, labels), weights=weights)
    assert math.isnan(no_labels["top1_clean"]) and math.isfinite(no_labels["kl_spliced"])
    assert given["ce_spliced"] == pytest.approx(from_source["ce_spliced"])
    no_classifier = evaluate_sae(model, sae, (pixels, labels))
    assert math.isnan(no_classifier["kl_spliced"]) and math.isfinite(no_classifier["embed_cos_spliced"])
    with pytest.raises(ValueError, match="one label per image"):
        evaluate_sae(model, sae, pixels, weights=weights, labels=[0, 1])


@torch.no_grad()
def test_hook_mean_and_errors(model, pixels) -> None:
    mean = hook_mean(model, HOOK0, pixels, batch_size=4)
    np.testing.assert_allclose(mean.numpy(), hook_acts(model, pixels, HOOK0).mean(0), rtol=1e-6)
    sae = identity_sae(HOOK0)
    with pytest.raises(TypeError, match="one-shot iterator"):
        evaluate_sae(model, sae, (p for p in [pixels]))
    sae.cfg.metadata.hook_name = None
    with pytest.raises(ValueError, match="hook_name"):
        evaluate_sae(model, sae, pixels)
