"""The shared streaming statistics: a case small enough to do by hand, and the checkpoint evaluation
(training) and `sae-clip eval` (analysis) giving the same numbers on the same batches (issue #29)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig

from sae_clip_plugin.analysis.metrics.stats import ReconstructionStats, SparsityStats, token_groups
from sae_clip_plugin.streaming_stats import FeatureStats
from sae_clip_plugin.training import evaluate_on_activations


def test_three_tokens_by_hand() -> None:
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    x_hat = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    feats = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [2.0, -1.0, 0.0]])
    recon, features = ReconstructionStats(2), FeatureStats(3)
    for rows in (slice(0, 2), slice(2, 3)):  # streamed in two batches
        recon.add(x[rows], x_hat[rows])
        features.add(feats[rows])
    r, f = recon.metrics(), features.metrics()
    # mean (2/3, 2/3): sum ||x - mean||^2 = 5/9 + 5/9 + 2/9 = 4/3; SSE = 0 + 0 + (1/4 + 1/4) = 1/2
    assert r["fvu"] == pytest.approx(3 / 8, abs=1e-12)
    assert r["explained_variance"] == pytest.approx(5 / 8, abs=1e-12)
    assert r["mse"] == pytest.approx(1 / 6, abs=1e-12)  # SSE summed over d_in, mean over 3 tokens
    assert r["cos_sim"] == pytest.approx(1.0, abs=1e-12)
    assert r["l2_ratio"] == pytest.approx((1 + 1 + 0.5) / 3, abs=1e-12)
    # non-zero features per token 1, 0, 2; |f| sums 1, 0, 3; feature 2 never fires
    assert f["l0"] == pytest.approx(1.0, abs=1e-12)
    assert f["l1"] == pytest.approx(4 / 3, abs=1e-12)
    np.testing.assert_allclose(features.density(), [2 / 3, 1 / 3, 0.0], atol=1e-12)
    assert features.dead_fraction() == pytest.approx(1 / 3, abs=1e-12)
    assert recon.result("cls")["explained_variance_cls"] == r["explained_variance"]
    assert all(
        math.isnan(v)
        for v in [*ReconstructionStats(2).metrics().values(), *FeatureStats(3).metrics().values()]
    )


def test_training_and_analysis_agree_on_the_same_batches() -> None:
    torch.manual_seed(0)
    sae = StandardSAE(StandardSAEConfig(d_in=6, d_sae=10))
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
        sae.b_enc -= 1.0  # some features off
        sae.b_enc[3] = -100.0  # never fires
    acts = torch.randn(7, 5, 6)  # 7 images, CLS + 4 patches
    training = evaluate_on_activations(sae, acts, ["cls", "patch", "patch", "patch", "patch"], batch_images=3)

    positions = list(range(5))
    recon = {g: ReconstructionStats(6) for g in token_groups(positions)}
    sparsity = SparsityStats(positions, n_tokens=5, d_sae=10)
    with torch.no_grad():
        for start in range(0, 7, 3):  # the batches the training evaluation encodes
            x = acts[start : start + 3]
            feats = sae.encode(x.reshape(-1, 6))
            x_hat = sae.decode(feats).reshape(x.shape)
            for g, idx in token_groups(positions).items():
                recon[g].add(x[:, idx].reshape(-1, 6), x_hat[:, idx].reshape(-1, 6))
            sparsity.add(feats.reshape(x.shape[0], 5, 10))
    analysis = {k: v for g, stats in recon.items() for k, v in stats.result(g).items()}
    analysis.update(sparsity.result())

    for train_suffix, group in (("", "all"), ("_cls", "cls"), ("_patches", "patches")):
        for key in ("explained_variance", "mse", "l0"):
            assert training[key + train_suffix] == pytest.approx(analysis[f"{key}_{group}"], rel=0, abs=1e-12)
    assert training["dead_fraction_eval"] == pytest.approx(analysis["dead_fraction"], rel=0, abs=1e-12)
    assert training["dead_fraction_eval"] >= 0.1
    assert training["dead_window_eval_tokens"] == analysis["dead_window_tokens"] == 35
