"""Decomposing the image embedding vs a plain forward, on the same batch of toy images (CPU).

Prints decompose_image_embedding / HookedViT forward (goal: about 2, "the time of two forward passes")
and direct_logit_attribution / forward, both with the per-neuron terms, measured in this run.

    python benchmarks/decomposition.py [--model toy] [--batch 64] [--repeats 5]
"""

from __future__ import annotations

import argparse

import torch
from timing import median_seconds  # benchmarks/timing.py (scripts run from their folder)

from sae_clip_plugin import HookedViT
from sae_clip_plugin.analysis.decomposition import decompose_image_embedding, direct_logit_attribution


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = HookedViT.from_pretrained(args.model).eval()
    x = torch.randn(args.batch, 3, model.cfg.image_size, model.cfg.image_size)
    weights = model.zero_shot_weights(
        ["circle", "square", "triangle", "star", "heart", "cross"], ["a photo of a {}."]
    )
    with torch.inference_mode():
        embedding = model(x)
        parts = decompose_image_embedding(model, x)
        assert (parts.total() - embedding.double()).abs().max() <= 1e-5
        forward = median_seconds(lambda: model(x), args.repeats)
        decompose = median_seconds(lambda: decompose_image_embedding(model, x), args.repeats)
        attribution = median_seconds(lambda: direct_logit_attribution(model, x, weights), args.repeats)
    print(f"model {args.model}, batch {args.batch}, threads {torch.get_num_threads()}, device cpu")
    print(f"HookedViT forward           : {forward * 1e3:8.1f} ms")
    print(
        f"decompose_image_embedding   : {decompose * 1e3:8.1f} ms  ratio {decompose / forward:5.2f} (goal about 2)"
    )
    print(f"direct_logit_attribution    : {attribution * 1e3:8.1f} ms  ratio {attribution / forward:5.2f}")


if __name__ == "__main__":
    main()
