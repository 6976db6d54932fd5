"""Our monosemanticity score vs ViSAEBench's MonosemanticityScore on the same inputs (CPU).

Both encode the same activations with the same SAE, max-pool over tokens, take each feature's top-16 images and
score them; ViSAEBench loops over features in Python, ours scores them in batched matrix products. Prints the
largest difference per feature and ours / ViSAEBench's time, measured in this run. Also times our exact "full"
variant (every pair of images, the sae-for-vlm definition) on the same inputs.

    python benchmarks/monosemanticity.py [--images 2000] [--features 2048] [--repeats 3]

Needs `pip install --no-deps visaebench==0.1.0 scikit-learn`.
"""

from __future__ import annotations

import argparse

import torch
from timing import median_seconds  # benchmarks/timing.py (scripts run from their folder)

from sae_clip_plugin.analysis.metrics.monosemanticity import image_codes, monosemanticity_scores


class ReluSAE(torch.nn.Module):
    def __init__(self, d: int, f: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.W_enc = torch.nn.Parameter(torch.randn(d, f, generator=g) / d**0.5)
        self.b_enc = torch.nn.Parameter(torch.full((f,), -1.0))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.W_enc + self.b_enc)


class LookupBackbone:
    """ViSAEBench's evaluator interface over precomputed embeddings (images are indices)."""

    def __init__(self, embeddings: torch.Tensor) -> None:
        self.embeddings = embeddings

    def extract_activations(self, images, layer):
        return self.embeddings[torch.tensor(list(images))].unsqueeze(1)


def main() -> None:
    from visaebench.metrics.concept_detection.monosemanticity import MonosemanticityScore

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--features", type=int, default=2048)
    parser.add_argument("--embed-dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    g = torch.Generator().manual_seed(0)
    acts = torch.randn(args.images, args.tokens, args.dim, generator=g)
    emb = torch.randn(args.images, args.embed_dim, generator=g)
    sae = ReluSAE(args.dim, args.features)
    metric = MonosemanticityScore(top_k_images=16, max_features=args.features)
    backbone = LookupBackbone(emb)

    def reference():
        return metric.compute(
            sae, acts, device="cpu", images=list(range(args.images)), evaluator_backbone=backbone
        )

    def ours(variant: str = "top16"):
        return monosemanticity_scores(image_codes(sae, acts), emb, variant)

    with torch.no_grad():
        ref, got = reference(), ours()
        scored = got[~got.isnan()]
        expected = torch.tensor(ref.metadata["ms_distribution"], dtype=torch.float64)
        assert len(scored) == len(expected), (len(scored), len(expected))
        diff = float((scored - expected).abs().max())
        t_ref = median_seconds(reference, args.repeats)
        t_ours = median_seconds(ours, args.repeats)
        t_full = median_seconds(lambda: ours("full"), args.repeats)
    print(f"{args.images} images x {args.tokens} tokens, d_in {args.dim}, {args.features} features, "
          f"embeddings of {args.embed_dim}, threads {torch.get_num_threads()}, device cpu")  # fmt: skip
    print(f"max |ours - ViSAEBench| over {len(scored)} features: {diff:.3g}")
    print(f"ViSAEBench MonosemanticityScore (top16): {t_ref:8.3f} s")
    print(f"ours, top16                            : {t_ours:8.3f} s  ratio {t_ours / t_ref:6.3f}")
    print(
        f"ours, full (all {args.images * (args.images - 1) // 2} pairs)   : {t_full:8.3f} s  ratio {t_full / t_ref:6.3f}"
    )


if __name__ == "__main__":
    main()
