"""The field's vision-SAE measures equal their reference implementations and hand-computed values.

References: the `visaebench` package's own metric classes (0.1.0) on the very same inputs (skipped when it is not
installed), sae-for-vlm's metric.py through the identity behind our O(N E F) "full" variant (a brute-force pairwise
sum written here from the paper's formula; docs/diagnostics/ms_vs_sae_for_vlm.py runs the repository's own file),
and tiny cases worked out by hand in the comments.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch

from sae_clip_plugin.analysis.metrics.localisation import localisation_scores, morans_i
from sae_clip_plugin.analysis.metrics.monosemanticity import image_codes, monosemanticity_scores, top_n_of
from sae_clip_plugin.analysis.metrics.sparse_probing import f_statistic, fit_logistic, sparse_probing_auc


def require_visaebench() -> None:
    for name in ("visaebench", "sklearn"):
        if importlib.util.find_spec(name) is None:
            pytest.skip(
                f"the {name} package is not installed here, so the measures cannot be compared with ViSAEBench's "
                "own code; install it with `pip install --no-deps visaebench==0.1.0 scikit-learn` (as .ci/run does)"
            )


class TinySAE(torch.nn.Module):
    """relu(x W + b): sparse enough (b < 0) that features have zeros, as an SAE's do."""

    def __init__(self, d: int, f: int, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W_enc = torch.nn.Parameter(torch.randn(d, f, generator=g))
        self.b_enc = torch.nn.Parameter(torch.full((f,), -1.0))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.W_enc + self.b_enc)


class LookupBackbone:
    """ViSAEBench's evaluator interface: 'images' are indices, the embedding is a fixed row (one 'patch')."""

    def __init__(self, embeddings: torch.Tensor) -> None:
        self.embeddings = embeddings

    def extract_activations(self, images, layer):
        return self.embeddings[torch.tensor(list(images))].unsqueeze(1)


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(0)
    n, p, d, f, e = 150, 16, 8, 24, 6
    acts = torch.randn(n, p, d, generator=g)
    return acts, torch.randn(n, e, generator=g), TinySAE(d, f, 1)


# ------------------------------------------------------------------------------------------------
# monosemanticity


def test_monosemanticity_top16_equals_visaebench(inputs):
    require_visaebench()
    from visaebench.metrics.concept_detection.monosemanticity import MonosemanticityScore

    acts, emb, sae = inputs
    ref = MonosemanticityScore(top_k_images=16, max_features=10_000).compute(
        sae, acts, device="cpu", images=list(range(len(acts))), evaluator_backbone=LookupBackbone(emb)
    )
    ours = monosemanticity_scores(image_codes(sae, acts), emb, "top16")
    scored = ours[~ours.isnan()]
    expected = torch.tensor(ref.metadata["ms_distribution"], dtype=torch.float64)
    assert len(scored) == len(expected) == ref.metadata["num_features_scored"] > 10
    assert (scored - expected).abs().max() <= 1e-5
    assert abs(float(scored.mean()) - ref.value) <= 1e-5


def _pairwise_ms(codes: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """sae-for-vlm's metric.py as the paper writes it: every pair i < j, a loop over pairs."""
    x = codes.double()
    a = (x - x.min(0).values) / (x.max(0).values - x.min(0).values)
    u = emb.double() / emb.double().norm(dim=1, keepdim=True)
    num = torch.zeros(x.shape[1], dtype=torch.float64)
    den = torch.zeros_like(num)
    for i in range(len(x)):
        w = a[i] * a[i + 1 :]  # [N - i - 1, F]
        num += (w * (u[i + 1 :] @ u[i])[:, None]).sum(0)
        den += w.sum(0)
    return torch.where(den != 0, num / den, torch.nan)


def test_monosemanticity_full_equals_the_pairwise_sum(inputs):
    acts, emb, sae = inputs
    codes = image_codes(sae, acts)
    ours = monosemanticity_scores(codes.split(37), emb.split(37), "full")  # streamed in uneven chunks
    ref = _pairwise_ms(codes, emb)
    assert torch.equal(ours.isnan(), ref.isnan())
    assert (ours - ref).nan_to_num(0).abs().max() <= 1e-10


def test_monosemanticity_by_hand():
    # feature 0 over 3 images: 0, 1, 2 -> a = 0, 0.5, 1; embeddings e0 = (1,0), e1 = (1,0), e2 = (0,1).
    # pairs: (0,1) weight 0, (0,2) weight 0, (1,2) weight 0.5 with cos 0 -> full MS = 0 / 0.5 = 0.
    # feature 1: 2, 2, 0 -> a = 1, 1, 0: only pair (0,1) has weight 1, cos 1 -> MS = 1.
    # feature 2: constant -> undefined (NaN).
    # top2 keeps feature 0's images 2, 1 (a = 1, 0.5, cos 0 -> 0) and feature 1's images 0, 1 (cos 1 -> 1): the same.
    codes = torch.tensor([[0.0, 2.0, 3.0], [1.0, 2.0, 3.0], [2.0, 0.0, 3.0]])
    emb = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 5.0]])
    for variant in ("full", "top16", "top2"):
        ms = monosemanticity_scores(codes, emb, variant)
        assert ms[0].item() == pytest.approx(0.0, abs=1e-12)
        assert ms[1].item() == pytest.approx(1.0, abs=1e-12)
        assert math.isnan(ms[2].item())


def test_monosemanticity_variant_names():
    assert top_n_of("full") is None and top_n_of("top16") == 16
    with pytest.raises(ValueError, match="'full' \\(sae-for-vlm\\) or 'top16'"):
        top_n_of("pairs")


# ------------------------------------------------------------------------------------------------
# localisation


def test_localisation_equals_visaebench(inputs):
    require_visaebench()
    from visaebench.metrics.spatial_coherence.localization import FeatureLocalization

    acts, _, sae = inputs
    rules = {"min_active_patches": 3, "min_images_per_feature": 10, "max_images_per_feature": 40}
    # image_batch_size=1: ViSAEBench's cap on images per feature is then exact, as ours always is
    ref = FeatureLocalization(grid_size=(4, 4), image_batch_size=1, max_features=10_000, **rules).compute(
        sae, acts, device="cpu"
    )
    with torch.no_grad():
        maps = sae.encode(acts)
    ours = localisation_scores(maps, (4, 4), min_active=3, min_images=10, max_images=40)
    expected = torch.tensor([math.nan if v is None else v for v in ref.metadata["per_feature_scores"]])
    assert torch.equal(ours.isnan(), expected.isnan()) and (~ours.isnan()).sum() > 10
    assert (ours - expected.double()).nan_to_num(0).abs().max() <= 1e-5
    assert abs(float(ours[~ours.isnan()].mean()) - ref.value) <= 1e-5


def test_morans_i_by_hand():
    # 2 x 2 grid, queen contiguity: every cell touches the other three, so S = 12 and P / S = 1 / 3.
    # x = (1, 0, 0, 0): x_c = (3, -1, -1, -1) / 4, x_c . x_c = 12 / 16;
    # sum_{p != q} x_c,p x_c,q = (sum x_c)^2 - x_c . x_c = -12 / 16, so I = (1/3) * (-12/16) / (12/16) = -1/3.
    x = torch.tensor([1.0, 0.0, 0.0, 0.0]).reshape(1, 4, 1)
    assert morans_i(x)[0].item() == pytest.approx(-1 / 3, abs=1e-12)
    # 1 x 3 strip (rook = queen here), x = (1, 0, -1): x_c = x, W pairs (0,1), (1,2) both ways, S = 4;
    # x_c^T W x_c = 2 * (1*0 + 0*(-1)) = 0 -> I = 0.  x = (1, 1, -2): mean 0, x_c^T W x_c = 2 * (1 - 2) = -2,
    # x_c . x_c = 6 -> I = (3/4) * (-2/6) = -1/4.
    strip = torch.tensor([[1.0, 0.0, -1.0], [1.0, 1.0, -2.0]]).reshape(2, 3, 1)
    values = morans_i(strip, grid=(1, 3))[0].reshape(-1)
    assert values.tolist() == pytest.approx([0.0, -0.25], abs=1e-12)


def test_localisation_rules_by_hand():
    # a 3 x 3 grid, one feature: image 0 fires on the left column (3 patches), image 1 on all 9 (background,
    # > 0.9 * 9 = 8.1 -> int 8), image 2 on one patch (< min_active 2). Only image 0 counts.
    # Image 0, x = column of ones: x_c = 2/3 on the left column, -1/3 elsewhere; x_c . x_c = 3*4/9 + 6/9 = 2.
    # Queen weights on 3 x 3: S = 4 corners * 3 + 4 edges * 5 + 1 centre * 8 = 40.
    # x_c^T W x_c = sum over ordered neighbour pairs: left-left pairs (edges (0,3),(3,6)) 4 * (4/9);
    # left-other pairs: cell 0 has 2 non-left neighbours, 3 has 3, 6 has 2 -> 7, both ways 14 * (-2/9);
    # other-other pairs: 20 undirected - 2 - 7 = 11, both ways 22 * (1/9). Total (16 - 28 + 22) / 9 = 10/9.
    # I = (9/40) * (10/9) / 2 = 1/8.
    maps = torch.zeros(3, 9, 1)
    maps[0, [0, 3, 6], 0] = 1.0
    maps[1, :, 0] = torch.arange(1.0, 10.0)
    maps[2, 4, 0] = 1.0
    got = localisation_scores(maps, min_active=2, min_images=1, max_images=10)
    assert got.item() == pytest.approx(1 / 8, abs=1e-12)
    assert localisation_scores(maps, min_active=2, min_images=2).isnan().all()  # one valid image < 2


# ------------------------------------------------------------------------------------------------
# sparse probing


def test_sparse_probing_equals_visaebench(inputs):
    require_visaebench()
    from sklearn.model_selection import train_test_split
    from visaebench.metrics.concept_detection.sparse_probing import SparseProbing

    acts, _, sae = inputs
    codes = image_codes(sae, acts)
    # labels that some features predict: the class of each image is the argmax of three of its codes, plus noise
    rng = np.random.RandomState(0)
    labels = (codes[:, :3].numpy() + rng.rand(len(codes), 3)).argmax(1)
    # k <= 16: ViSAEBench's scikit-learn probe works in float32 and stops at its tolerance (tol 1e-4), ours at the
    # exact optimum (gradient 1e-10); past ~20 features a test image within that gap of the boundary can flip
    ks = [1, 2, 5, 10, 16]
    for n_classes in (2, 3):
        y = labels % n_classes if n_classes == 2 else labels
        ref = SparseProbing(k_values=ks).compute(sae, acts, device="cpu", labels=y)
        # the very split ViSAEBench draws (scikit-learn's, seed 42), so that the probes see the same images
        train, test = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=42)
        auc, accs = sparse_probing_auc(codes, torch.as_tensor(y), ks, split=(train, test))
        assert accs == pytest.approx(ref.metadata["k_accuracies"], abs=1e-5)
        assert auc == pytest.approx(ref.value, abs=1e-5)
        assert max(accs.values()) > 0.6  # the probe reads the planted signal (chance: 1 / n_classes)


def test_f_statistic_and_probe_by_hand():
    # one feature, classes {0, 0, 1, 1} with values (0, 2, 4, 6): grand mean 3, class means 1 and 5;
    # between: 2 * (1-3)^2 + 2 * (5-3)^2 = 16 over 1 df; within: 1 + 1 + 1 + 1 = 4 over 2 df -> F = 16 / 2 = 8.
    x = torch.tensor([[0.0], [2.0], [4.0], [6.0]])
    y = torch.tensor([0, 0, 1, 1])
    assert f_statistic(x, y).item() == pytest.approx(8.0, abs=1e-12)
    # the probe minimises 0.5 w^2 + sum_i log(1 + exp(-s_i (w x_i + b))) (s_i = +-1); on x = (-1, 1), y = (0, 1)
    # symmetry gives b = 0 and dL/dw = w - 2 / (1 + e^w) = 0; bisection by hand: at 0.67, 0.67 - 2/2.9542 = -0.007;
    # at 0.675, 0.675 - 2/2.9640 = +0.0002 -> w = 0.6748 to four places.
    w, b = fit_logistic(torch.tensor([[-1.0], [1.0]]), torch.tensor([0, 1]), 2)
    assert w.item() == pytest.approx(0.6748, abs=2e-4) and b.item() == pytest.approx(0.0, abs=1e-8)
    # ranking and AUC: feature 1 separates the classes exactly (within-class spread 0: F = inf), feature 0 does not
    # (F finite), so k = 1 probes feature 1 alone: accuracy 1; k = 2 too. AUC = trapezoid (1 + 1) / 2 over width
    # 1 = 1. With feature 0 alone (k_values (1,) and feature 1 removed) the best rule labels (0,1) as class 1 and
    # (1,0) / (1,1) as ... class 0 on 3 of 4 patterns -> 0.75.
    codes = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]] * 4)
    labels = torch.tensor([0, 0, 1, 1] * 4)
    split = (list(range(8)), list(range(8, 16)))
    assert f_statistic(codes, labels)[1].item() == math.inf
    assert sparse_probing_auc(codes, labels, (1, 2), split=split) == (1.0, {1: 1.0, 2: 1.0})
    assert sparse_probing_auc(codes[:, :1], labels, (1,), split=split) == (0.75, {1: 0.75})


# ------------------------------------------------------------------------------------------------
# controls: intervals, planted features, the oracle second encoder


def test_best_auroc_equals_scikit_learn():
    require_visaebench()
    from sklearn.metrics import roc_auc_score

    from sae_clip_plugin.analysis.metrics.discrimination import best_auroc

    rng = np.random.default_rng(0)
    codes = rng.integers(0, 4, (60, 7)).astype(float)  # many ties, as max-pooled sparse codes have
    labels = [None if i % 10 == 0 else ("red", "blue", "green")[i % 3] for i in range(60)]
    found = best_auroc(codes, labels)
    for value in ("blue", "green", "red"):
        y = np.array([v == value for v in labels])
        assert abs(found[value] - max(roc_auc_score(y, codes[:, j]) for j in range(7))) <= 1e-12


def test_mean_difference_interval_covers_by_hand():
    from sae_clip_plugin.analysis.metrics.discrimination import mean_difference

    # a: one run [1, 2, 3] (mean 2); b: two seeds [0, 0] and [1, nan] -> [1] (means 0 and 1 -> 0.5); NaN dropped
    d = mean_difference([np.array([1.0, 2.0, 3.0])], [np.array([0.0, 0.0]), np.array([1.0, np.nan])], seed=1)
    assert (d.a, d.b, d.diff) == (2.0, 0.5, 1.5)
    # extremes of the bootstrap: a's mean in [1, 3], b's in [0, 1] -> the difference in [0, 3]
    assert 0.0 <= d.lo < d.diff < d.hi <= 3.0
    same = mean_difference([np.ones(50)], [np.ones(50), np.ones(50)])
    assert (same.lo, same.hi, same.separates) == (0.0, 0.0, False)


def test_attribute_embeddings_by_hand():
    from sae_clip_plugin.analysis.metrics.second_encoder import attribute_embeddings

    metas = [
        {"shape": "star", "colour": "red", "background": "land", "word": None},
        {"shape": "star", "colour": "blue", "background": "land", "word": "cat"},
        {"shape": None, "colour": None, "background": "water", "word": "cat"},
    ]
    e = attribute_embeddings(metas)  # columns: star | blue red | land water | cat
    assert e.tolist() == [[1, 0, 1, 1, 0, 0], [1, 1, 0, 1, 0, 1], [0, 0, 0, 0, 1, 1]]
    u = e / e.norm(dim=1, keepdim=True)
    # images 0 and 1 share 2 of 3 and 2 of 4 attributes: cos = 2 / sqrt(3 * 4)
    assert abs(float(u[0] @ u[1]) - 2 / math.sqrt(12)) <= 1e-6


def test_newton_step_on_a_singular_hessian():
    from sae_clip_plugin.analysis.metrics.sparse_probing import _newton_step

    # the free intercepts of a 3-class softmax: H 1 = 0, the gradient orthogonal to 1
    h = torch.tensor([[2.0, -1.0, -1.0], [-1.0, 2.0, -1.0], [-1.0, -1.0, 2.0]], dtype=torch.float64)
    g = torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64)
    step = _newton_step(h, g)
    assert torch.allclose(h @ step, g) and abs(float(step.sum())) < 1e-12  # the least-norm solution


def test_sparse_probing_tells_a_trained_sae_from_random_ones_on_the_toy(tmp_path):
    """ViSAEBench's sparse-probing AUC of the toy's shapes: a TopK SAE trained on 64 toy images (the topk preset,
    about 15 s) beats random SAEs of the same shape (2 seeds) with the 95% interval of the difference above 0, on
    256 other images of the toy world. (Monosemanticity and Moran's I do not separate trained from random SAEs on
    the toy, so they have no such test: docs/toy_results.md, "Vision-SAE measures against their controls".)"""
    from sae_clip_plugin import VisionSAERunnerConfig, VisionSAETrainingRunner
    from sae_clip_plugin.analysis.metrics.controls import random_sae_like
    from sae_clip_plugin.analysis.metrics.discrimination import mean_difference
    from sae_clip_plugin.model.hooked_vit import HookedViT
    from sae_clip_plugin.pretrained import load_sae
    from sae_clip_plugin.toy.datasets import train_dataset

    hook = "blocks.3.hook_resid_post"
    cfg = VisionSAERunnerConfig.from_preset("topk", model_name="toy", dataset_path="toy", max_images=64,
                                            hook_name=hook, output_path=str(tmp_path / "sae"), checkpoint_path=None,
                                            seed=0, device="cpu", num_workers=0)  # fmt: skip
    VisionSAETrainingRunner(cfg).run()
    model = HookedViT.from_pretrained("toy").eval()
    sae = load_sae(str(tmp_path / "sae"), "cpu")
    data = train_dataset(256, seed=7)  # the toy world's training stream, with each image's planted attributes
    keep = [i for i in range(len(data)) if data.meta(i)["shape"] is not None]
    shapes = sorted({data.meta(i)["shape"] for i in keep})
    labels = torch.tensor([shapes.index(data.meta(i)["shape"]) for i in keep])
    pixels = torch.stack([model.preprocess(data[i][0]) for i in keep])
    with torch.no_grad():
        _, cache = model.run_with_cache(pixels, names_filter=[hook], stop_at_layer=4)

    def aucs(encoder) -> np.ndarray:  # one AUC per probe split
        codes = image_codes(encoder, cache[hook].float())
        return np.array([sparse_probing_auc(codes, labels, seed=s)[0] for s in (42, 43)])

    difference = mean_difference([aucs(sae)], [aucs(random_sae_like(sae, s)) for s in (0, 1)])
    assert difference.lo > 0, difference


def test_the_mean_interval_over_features_by_hand():
    from sae_clip_plugin.analysis.metrics.discrimination import mean_interval

    assert mean_interval(np.full(10, 0.3)) == pytest.approx((0.3, 0.3))  # no spread, no interval
    assert all(math.isnan(v) for v in mean_interval(np.array([np.nan, np.nan])))
    lo, hi = mean_interval(np.r_[np.zeros(200), np.ones(200), np.nan])  # NaN dropped: mean 0.5, se 0.025
    assert lo == pytest.approx(0.5 - 1.96 * 0.025, abs=0.01) and hi == pytest.approx(
        0.5 + 1.96 * 0.025, abs=0.01
    )
